//! Held chunks (a reduce job's combines): known, so the job is not over without them, but placed
//! only once released, in release order; restored held after a restart.

use std::collections::BTreeSet;
use std::time::Instant;

use wire::proto::AttemptId;

use super::super::sim::req;
use super::super::{Scheduler, SchedulerConfig};
use super::{check_actions, config, resources, J1, N1};

#[test]
fn held_chunks_wait_for_their_release_and_the_job_for_them() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_job_submitted(now, J1, req());
    s.handle_chunks_added(now, J1, 2);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    // Chunk 1 is still fresh: the held chunk (2) goes after it.
    s.handle_chunks_held(now, J1, 1);
    s.handle_input_complete(now, J1);
    check_actions(&mut s, "");
    s.handle_chunk_succeeded(now, N1, AttemptId(1));
    check_actions(&mut s, "assign n1 j1 c1 a2");
    s.handle_chunk_succeeded(now, N1, AttemptId(2));
    // Both inputs done, the held chunk not released: nothing to place, and the job goes on.
    check_actions(&mut s, "");
    assert!(s.progress(J1).is_some(), "the job ended with a held chunk");
    s.handle_chunk_released(now, J1, 2);
    check_actions(&mut s, "assign n1 j1 c2 a3");
    // Releasing it again, or a chunk never held, changes nothing.
    s.handle_chunk_released(now, J1, 2);
    s.handle_chunk_released(now, J1, 0);
    check_actions(&mut s, "");
    s.handle_chunk_succeeded(now, N1, AttemptId(3));
    check_actions(&mut s, "end-job n1 j1\nsucceeded j1");
}

#[test]
fn a_restored_job_keeps_its_held_chunks_held() {
    let now = Instant::now();
    // No reattach grace: chunks not done and not held are placed at once.
    let config = SchedulerConfig { reattach_grace: std::time::Duration::ZERO, ..super::no_speculation(0) };
    let mut s = Scheduler::new(config);
    s.handle_node_joined(now, N1, resources("n1", 2));
    // Chunks 0 and 1 done, 2 to run, 3 held (it needs 2); 4 held (it needs 3).
    let held: BTreeSet<u64> = [3, 4].into();
    s.handle_job_restored_held(now, J1, req(), &[true, true, false, false, false], &held);
    let got: Vec<String> = std::iter::from_fn(|| s.poll_output()).map(|o| super::super::sim::render(&o)).collect();
    assert!(got.iter().any(|l| l.contains("assign n1 j1 c2")), "{got:?}");
    assert!(!got.iter().any(|l| l.contains("c3") || l.contains("c4")), "a held chunk was placed: {got:?}");
    s.handle_chunk_released(now, J1, 3);
    let got: Vec<String> = std::iter::from_fn(|| s.poll_output()).map(|o| super::super::sim::render(&o)).collect();
    assert!(got.iter().any(|l| l.contains("assign n1 j1 c3")), "{got:?}");
}
