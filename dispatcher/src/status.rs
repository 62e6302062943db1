//! What the status page shows: a [`StatusSnapshot`] the core builds once a second on its
//! progress tick and publishes through a `watch` channel, so `GET /api/status` only clones the
//! latest one and never waits on the core.
//!
//! The [`StatusBook`] keeps, in the core, what a snapshot needs beyond the ledger's tables: a
//! ring of chunks completed per second over the last ten minutes (the throughput chart), the
//! last [`RECENT_FAILURES`] failed attempts with their messages, and each job's recent progress,
//! from which its throughput and ETA are estimated. Operators see every tenant's jobs here:
//! the address is theirs (loopback, or a token).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ledger::jobs::{FailedAttempt, JobView, Observation};
use serde::Serialize;
use wire::proto::{JobId, JobState, NodeStatus};

/// Samples in the throughput chart: one per second, ten minutes.
pub const THROUGHPUT_SAMPLES: usize = 600;
/// Failed attempts the page lists, newest first.
pub const RECENT_FAILURES: usize = 50;
/// The window over which a job's throughput is measured.
const JOB_RATE_WINDOW: Duration = Duration::from_secs(30);

/// Everything the status page shows, as JSON (`GET /api/status`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusSnapshot {
    /// When it was taken, milliseconds since the Unix epoch (0: none taken yet).
    pub taken_unix_ms: u64,
    /// The dispatcher's QUIC address.
    pub listen: String,
    /// When the dispatcher's certificate in use ends, seconds since the Unix epoch (0: unknown);
    /// filled in when served.
    pub cert_expires_unix: u64,
    /// The nodes table, as `dispy-submit nodes` shows it.
    pub nodes: Vec<NodeStatus>,
    /// Every job the dispatcher keeps, newest first, and finished jobs whose results were fetched
    /// until their retention passes.
    pub jobs: Vec<JobRow>,
    /// The most recent failed attempts, newest first.
    pub failures: Vec<FailureRow>,
    /// Chunks completed in each of the last seconds, oldest first (at most
    /// [`THROUGHPUT_SAMPLES`]).
    pub throughput: Vec<u64>,
    /// Chunks completed since the dispatcher started.
    pub completed: u64,
}

/// A job on the status page.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// The job's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Who submitted it.
    pub owner: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: &'static str,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// Chunks with an accepted result.
    pub done: u64,
    /// Chunks known so far.
    pub total: u64,
    /// Whether all input has arrived (`total` is final).
    pub input_complete: bool,
    /// Attempts in flight on nodes.
    pub running: u64,
    /// Failed attempts that were run again.
    pub retries: u64,
    /// When it was submitted, milliseconds since the Unix epoch.
    pub submitted_unix_ms: u64,
    /// When it ended, milliseconds since the Unix epoch.
    pub finished_unix_ms: Option<u64>,
    /// Why it waits, when no node can take its chunks now (the scheduler's `Blocked`).
    pub waiting: Option<String>,
    /// Chunks completed per second over the last 30 s (0 when nothing completed).
    pub chunks_per_second: f64,
    /// Seconds until it is done at that rate; `None` when unknown (no rate, input still
    /// arriving, or finished).
    pub eta_seconds: Option<f64>,
}

/// A failed attempt on the status page.
#[derive(Debug, Clone, Serialize)]
pub struct FailureRow {
    /// The job's id.
    pub job: u64,
    /// The chunk.
    pub chunk: u64,
    /// The node it failed on.
    pub node: String,
    /// The job's owner.
    pub owner: String,
    /// What went wrong.
    pub message: String,
    /// When, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Whether the chunk runs again.
    pub retried: bool,
}

/// What the core keeps for the status page between snapshots.
#[derive(Debug)]
pub(crate) struct StatusBook {
    /// Chunks completed per second, oldest first; the last one is the second being counted.
    throughput: VecDeque<u64>,
    completed: u64,
    failures: VecDeque<FailedAttempt>,
    /// Each live job's recent (when, done) samples.
    progress: HashMap<JobId, VecDeque<(Instant, u64)>>,
    listen: String,
}

impl StatusBook {
    /// An empty book for a dispatcher listening on `listen`.
    pub(crate) fn new(listen: String) -> Self {
        Self {
            throughput: VecDeque::from([0]),
            completed: 0,
            failures: VecDeque::new(),
            progress: HashMap::new(),
            listen,
        }
    }

    /// Notes what the ledger observed.
    pub(crate) fn observe(&mut self, observation: &Observation) {
        match observation {
            Observation::ChunkCompleted { .. } => {
                self.completed += 1;
                if let Some(last) = self.throughput.back_mut() {
                    *last += 1;
                }
            }
            Observation::AttemptFailed(failed) => {
                if self.failures.len() == RECENT_FAILURES {
                    self.failures.pop_front();
                }
                self.failures.push_back(failed.clone());
            }
            _ => {}
        }
    }

    /// Closes the current second of the throughput chart, measures the jobs' progress at `now`
    /// and returns the snapshot.
    pub(crate) fn snapshot(&mut self, now: Instant, unix_ms: u64, nodes: Vec<NodeStatus>, jobs: &[JobView]) -> StatusSnapshot {
        let throughput: Vec<u64> = self.throughput.iter().copied().collect();
        if self.throughput.len() == THROUGHPUT_SAMPLES {
            self.throughput.pop_front();
        }
        self.throughput.push_back(0);
        self.progress.retain(|job, _| jobs.iter().any(|j| j.summary.job == *job && j.summary.state == JobState::Running));
        let mut rows: Vec<JobRow> = jobs.iter().map(|view| self.job_row(now, view)).collect();
        rows.sort_unstable_by_key(|row| std::cmp::Reverse(row.id));
        StatusSnapshot {
            taken_unix_ms: unix_ms,
            listen: self.listen.clone(),
            cert_expires_unix: 0,
            nodes,
            jobs: rows,
            failures: self.failures.iter().rev().map(failure_row).collect(),
            throughput,
            completed: self.completed,
        }
    }

    fn job_row(&mut self, now: Instant, view: &JobView) -> JobRow {
        let s = &view.summary;
        let p = s.progress;
        let (rate, eta) = if s.state == JobState::Running {
            let samples = self.progress.entry(s.job).or_default();
            samples.push_back((now, p.done));
            while samples.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > JOB_RATE_WINDOW) {
                samples.pop_front();
            }
            let rate = rate_of(samples);
            let eta = (p.input_complete && rate > 0.0).then(|| p.total.saturating_sub(p.done) as f64 / rate);
            (rate, eta)
        } else {
            (0.0, None)
        };
        JobRow {
            id: s.job.0,
            name: s.name.clone(),
            owner: s.owner.clone(),
            state: s.state.name(),
            failure: match &s.state {
                JobState::Failed(failure) => Some(failure.to_string()),
                _ => None,
            },
            done: p.done,
            total: p.total,
            input_complete: p.input_complete,
            running: p.running,
            retries: p.retries,
            submitted_unix_ms: s.submitted_unix_ms,
            finished_unix_ms: view.finished_unix_ms,
            waiting: s.blocked.clone(),
            chunks_per_second: rate,
            eta_seconds: eta,
        }
    }
}

/// Chunks per second between the oldest and newest sample.
fn rate_of(samples: &VecDeque<(Instant, u64)>) -> f64 {
    let (Some((first_at, first)), Some((last_at, last))) = (samples.front(), samples.back()) else { return 0.0 };
    let span = last_at.saturating_duration_since(*first_at).as_secs_f64();
    if span < 0.5 {
        return 0.0;
    }
    last.saturating_sub(*first) as f64 / span
}

fn failure_row(failed: &FailedAttempt) -> FailureRow {
    FailureRow {
        job: failed.job.0,
        chunk: failed.chunk,
        node: failed.node.clone(),
        owner: failed.tenant.clone(),
        message: failed.message.clone(),
        unix_ms: failed.unix_ms,
        retried: failed.retried,
    }
}

#[cfg(test)]
mod tests;
