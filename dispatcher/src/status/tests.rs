//! The status book: the throughput ring, the bounded list of recent failures, and a job's rate
//! and ETA from its recent progress.

use std::time::{Duration, Instant};

use ledger::jobs::{FailedAttempt, JobView, Observation};
use wire::proto::{JobId, JobProgress, JobState, JobSummary, ResultMode};

use super::{StatusBook, RECENT_FAILURES, THROUGHPUT_SAMPLES};


fn job(done: u64, total: u64, state: JobState) -> JobView {
    JobView {
        summary: JobSummary {
            job: JobId(7),
            name: "render".into(),
            owner: "alice".into(),
            state,
            progress: JobProgress { done, total, input_complete: true, ..JobProgress::default() },
            submitted_unix_ms: 1,
            blocked: None,
            output: "out".into(),
            results: ResultMode::Concat,
        },
        finished_unix_ms: None,
    }
}

fn completed() -> Observation {
    Observation::ChunkCompleted { tenant: "alice".into(), run: Duration::ZERO, bytes: 1 }
}

#[test]
fn throughput_is_counted_per_second_over_ten_minutes() {
    let mut book = StatusBook::new("127.0.0.1:7870".into());
    let start = Instant::now();
    for second in 0..THROUGHPUT_SAMPLES as u64 + 5 {
        for _ in 0..second % 3 {
            book.observe(&completed());
        }
        let snapshot = book.snapshot(start + Duration::from_secs(second), 0, Vec::new(), &[]);
        assert_eq!(snapshot.throughput.last(), Some(&(second % 3)));
        assert!(snapshot.throughput.len() <= THROUGHPUT_SAMPLES);
    }
    let snapshot = book.snapshot(start, 0, Vec::new(), &[]);
    assert_eq!(snapshot.throughput.len(), THROUGHPUT_SAMPLES);
    assert_eq!(snapshot.completed, (0..THROUGHPUT_SAMPLES as u64 + 5).map(|s| s % 3).sum::<u64>());
}

#[test]
fn recent_failures_are_bounded_and_newest_first() {
    let mut book = StatusBook::new(String::new());
    for chunk in 0..RECENT_FAILURES as u64 + 10 {
        book.observe(&Observation::AttemptFailed(FailedAttempt {
            job: JobId(1),
            chunk,
            tenant: "bob".into(),
            node: "n1".into(),
            message: format!("trap {chunk}"),
            unix_ms: chunk,
            retried: true,
        }));
    }
    let snapshot = book.snapshot(Instant::now(), 0, Vec::new(), &[]);
    assert_eq!(snapshot.failures.len(), RECENT_FAILURES);
    assert_eq!(snapshot.failures[0].message, format!("trap {}", RECENT_FAILURES + 9));
}

#[test]
fn a_running_job_gets_a_rate_and_an_eta() {
    let mut book = StatusBook::new(String::new());
    let start = Instant::now();
    let first = book.snapshot(start, 0, Vec::new(), &[job(10, 100, JobState::Running)]);
    assert_eq!(first.jobs[0].eta_seconds, None, "no rate from one sample");
    let later = book.snapshot(start + Duration::from_secs(10), 0, Vec::new(), &[job(30, 100, JobState::Running)]);
    let row = &later.jobs[0];
    assert!((row.chunks_per_second - 2.0).abs() < 1e-9, "{row:?}");
    assert!((row.eta_seconds.expect("an eta") - 35.0).abs() < 1e-9, "{row:?}");
    let done = book.snapshot(start + Duration::from_secs(20), 0, Vec::new(), &[job(100, 100, JobState::Succeeded)]);
    assert_eq!(done.jobs[0].state, "succeeded");
    assert_eq!(done.jobs[0].eta_seconds, None);
}
