//! Reattachment tests: a restarted scheduler adopts the attempts reconnecting nodes claim during
//! the reattach grace and requeues the rest after it; a node whose connection drops keeps its
//! attempts until it registers again or `node_timeout` passes; claims the scheduler does not want
//! are refused; each chunk's result is accepted once.

use std::time::{Duration, Instant};

use wire::proto::{AttemptId, ChunkIndex, Claim, JobId};

use super::super::sim::{req, GIB};
use super::super::Scheduler;
use super::{check_actions, no_speculation, resources, submit_whole_job, J1, N1, N2, N3};

/// What the restarted scheduler's journal incarnation makes its first attempt id.
const BASE: u64 = 1 << 40;

fn claim(job: JobId, chunk: ChunkIndex, attempt: u64) -> Claim {
    Claim { job, chunk, attempt: AttemptId(attempt) }
}

/// A scheduler just restarted with J1 restored: chunk 0 has a stored result, 1..=3 do not.
fn restarted(now: Instant) -> Scheduler {
    let mut s = Scheduler::new(no_speculation(2));
    s.set_attempt_base(BASE);
    s.handle_job_restored(now, J1, req(), &[true, false, false, false]);
    s
}

/// Nodes n1 and n2 with one slot each (no pipeline, no speculation), running chunks 0 and 1 of
/// a three-chunk job.
fn a_chunk_on_each_of_two_nodes(now: Instant) -> Scheduler {
    let mut s = Scheduler::new(no_speculation(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_node_joined(now, N2, resources("n2", 1));
    submit_whole_job(&mut s, now, 3);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1\nstart-job n2 j1\nassign n2 j1 c1 a2");
    s
}

#[test]
fn restored_chunks_wait_for_their_claims_during_the_grace_and_are_adopted() {
    let now = Instant::now();
    let mut s = restarted(now);
    // Nothing is placed while the chunks await their claims, even with a node to place them on.
    check_actions(&mut s, "");
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(10)));
    s.handle_node_rejoined(now + Duration::from_secs(1), N1, resources("n1", 2), &[claim(J1, 1, 7), claim(J1, 2, 8)]);
    // Adopted under their own ids, not assigned again; the node hears the job is still wanted.
    check_actions(&mut s, "start-job n1 j1");
    let progress = s.progress(J1).map(|p| (p.done, p.total, p.running));
    assert_eq!(progress, Some((1, 4, 2)));
    // Each adopted attempt's result completes its chunk, once.
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(2), N1, AttemptId(7)), Some((J1, 1)));
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(2), N1, AttemptId(7)), None);
    check_actions(&mut s, "");
    for at in [3, 6, 9] {
        s.handle_heartbeat(now + Duration::from_secs(at), N1, 16 * GIB);
    }
    // The grace ends: the chunk nobody claimed runs again, under a new id.
    s.handle_timeout(now + Duration::from_secs(10));
    check_actions(&mut s, &format!("assign n1 j1 c3 a{BASE}"));
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(11), N1, AttemptId(8)), Some((J1, 2)));
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(11), N1, AttemptId(BASE)), Some((J1, 3)));
    check_actions(&mut s, "end-job n1 j1\nsucceeded j1");
}

#[test]
fn claims_the_scheduler_does_not_want_are_refused() {
    let now = Instant::now();
    let mut s = restarted(now);
    let claims = [
        claim(J1, 1, 7),
        claim(J1, 1, 7),          // the same claim twice: adopted once, nothing said
        claim(J1, 0, 9),          // a chunk with a stored result
        claim(J1, 9, 10),         // a chunk the job does not have
        claim(JobId(5), 0, 11),   // a job the scheduler does not know (finished, or never)
        claim(J1, 2, BASE + 100), // an id nobody handed out
    ];
    s.handle_node_rejoined(now, N1, resources("n1", 4), &claims);
    let expect = format!("start-job n1 j1\ncancel n1 a9\ncancel n1 a10\ncancel n1 a11\ncancel n1 a{}", BASE + 100);
    check_actions(&mut s, &expect);
    // A second node claiming the same attempt, or another attempt of an adopted chunk, is refused:
    // a chunk is adopted once.
    s.handle_node_rejoined(now, N2, resources("n2", 4), &[claim(J1, 1, 7), claim(J1, 1, 12), claim(J1, 2, 13)]);
    check_actions(&mut s, "cancel n2 a7\ncancel n2 a12\nstart-job n2 j1");
    assert_eq!(s.handle_chunk_succeeded(now, N2, AttemptId(7)), None, "n2's claim of a7 was refused");
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(7)), Some((J1, 1)));
    assert_eq!(s.handle_chunk_succeeded(now, N2, AttemptId(13)), Some((J1, 2)));
    // After the grace a claim finds nothing awaiting it: chunk 3 is placed anew.
    for at in [3, 6, 9] {
        s.handle_heartbeat(now + Duration::from_secs(at), N1, 16 * GIB);
        s.handle_heartbeat(now + Duration::from_secs(at), N2, 16 * GIB);
    }
    s.handle_timeout(now + Duration::from_secs(10));
    let first = BASE;
    check_actions(&mut s, &format!("assign n1 j1 c3 a{first}"));
    s.handle_node_rejoined(now + Duration::from_secs(10), N3, resources("n3", 1), &[claim(J1, 3, 14)]);
    check_actions(&mut s, "cancel n3 a14");
}

#[test]
fn a_disconnected_node_keeps_its_attempts_and_takes_them_back_when_it_registers_again() {
    let now = Instant::now();
    let mut s = Scheduler::new(no_speculation(1));
    s.handle_node_joined(now, N1, resources("n1", 1));
    submit_whole_job(&mut s, now, 4);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1\nassign n1 j1 c1 a2");
    s.handle_node_disconnected(now + Duration::from_millis(100), N1);
    // Nothing requeued, nothing new placed on it.
    check_actions(&mut s, "");
    assert_eq!(s.progress(J1).map(|p| p.running), Some(2));
    // Back on a new connection within node_timeout, claiming both (one finished meanwhile).
    s.handle_node_rejoined(now + Duration::from_secs(3), N2, resources("n1", 1), &[claim(J1, 0, 1), claim(J1, 1, 2)]);
    check_actions(&mut s, "start-job n2 j1");
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(3), N2, AttemptId(1)), Some((J1, 0)));
    check_actions(&mut s, "assign n2 j1 c2 a3");
    // The old session is gone: its late reports are discarded.
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(3), N1, AttemptId(2)), None);
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(3), N2, AttemptId(2)), Some((J1, 1)));
    check_actions(&mut s, "assign n2 j1 c3 a4");
    // Its heartbeat timer went with it.
    s.handle_heartbeat(now + Duration::from_secs(4), N2, 16 * GIB);
    s.handle_timeout(now + Duration::from_secs(6));
    check_actions(&mut s, "");
}

#[test]
fn a_disconnected_node_silent_past_node_timeout_is_dropped_and_its_attempts_requeued() {
    let now = Instant::now();
    let mut s = a_chunk_on_each_of_two_nodes(now);
    s.handle_node_disconnected(now, N1);
    s.handle_heartbeat(now + Duration::from_secs(2), N2, 16 * GIB);
    s.handle_heartbeat(now + Duration::from_secs(4), N2, 16 * GIB);
    s.handle_timeout(now + Duration::from_millis(2500));
    check_actions(&mut s, "suspect n1: silent 2.5s");
    s.handle_timeout(now + Duration::from_secs(5));
    check_actions(&mut s, "drop n1: no heartbeat for 5s");
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(5), N2, AttemptId(2)), Some((J1, 1)));
    // The requeued chunk goes before the fresh one.
    check_actions(&mut s, "assign n2 j1 c0 a3");
    // The node comes back too late: its claim is refused (the chunk runs again elsewhere), but the
    // result it held still completes the chunk once, and the rerun is cancelled.
    s.handle_node_rejoined(now + Duration::from_secs(6), N3, resources("n1", 1), &[claim(J1, 0, 1)]);
    check_actions(&mut s, "cancel n3 a1\nstart-job n3 j1\nassign n3 j1 c2 a4");
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(6), N3, AttemptId(1)), Some((J1, 0)));
    check_actions(&mut s, "cancel n2 a3");
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(6), N2, AttemptId(3)), None);
}

#[test]
fn a_node_written_off_takes_back_a_requeued_chunk_not_yet_placed_again() {
    let now = Instant::now();
    let mut s = a_chunk_on_each_of_two_nodes(now);
    s.handle_node_disconnected(now, N1);
    s.handle_heartbeat(now + Duration::from_secs(4), N2, 16 * GIB);
    s.handle_timeout(now + Duration::from_secs(5));
    check_actions(&mut s, "drop n1: no heartbeat for 5s");
    // Chunk 0 waits in the queue (n2 is full) when n1 returns holding it: it is adopted, not rerun.
    s.handle_node_rejoined(now + Duration::from_secs(6), N3, resources("n1", 1), &[claim(J1, 0, 1)]);
    check_actions(&mut s, "start-job n3 j1");
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(6), N3, AttemptId(1)), Some((J1, 0)));
    check_actions(&mut s, "assign n3 j1 c2 a3");
}

#[test]
fn a_node_that_restarts_supersedes_its_old_session_and_only_its_own_chunks_run_again() {
    let now = Instant::now();
    let mut s = a_chunk_on_each_of_two_nodes(now);
    // n1 was killed and restarted before its old connection timed out: it claims nothing.
    s.handle_node_rejoined(now + Duration::from_secs(1), N3, resources("n1", 1), &[]);
    check_actions(&mut s, "drop n1: the node registered again on a new connection\nstart-job n3 j1\nassign n3 j1 c0 a3");
    assert_eq!(s.progress(J1).map(|p| (p.running, p.retries)), Some((2, 0)));
    // n2's chunk was never touched.
    assert_eq!(s.handle_chunk_succeeded(now + Duration::from_secs(1), N2, AttemptId(2)), Some((J1, 1)));
}
