//! Held chunks (a reduce job's combines): known, so the job is not over without them, but placed
//! only once released, in release order; restored held after a restart.

use std::collections::BTreeMap;
use std::time::Instant;

use wire::proto::AttemptId;

use super::super::sim::req;
use super::super::{ExtraChunk, Scheduler, SchedulerConfig};
use super::{check_actions, config, resources, J1, N1};

/// Node n1 with one slot and job J1 with `chunks` chunks so far, its input still arriving: the
/// first chunk is assigned, and those actions are checked and drained.
fn uploading_on_one_slot(now: Instant, chunks: u64) -> Scheduler {
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_job_submitted(now, J1, req());
    s.handle_chunks_added(now, J1, chunks);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    s
}

#[test]
fn held_chunks_wait_for_their_release_and_the_job_for_them() {
    let now = Instant::now();
    let mut s = uploading_on_one_slot(now, 2);
    // A held chunk's index is the caller's: beyond the fresh ones, which it does not disturb.
    s.handle_chunks_held(now, J1, &[100]);
    s.handle_input_complete(now, J1);
    check_actions(&mut s, "");
    s.handle_chunk_succeeded(now, N1, AttemptId(1));
    check_actions(&mut s, "assign n1 j1 c1 a2");
    s.handle_chunk_succeeded(now, N1, AttemptId(2));
    // Both inputs done, the held chunk not released: nothing to place, and the job goes on.
    check_actions(&mut s, "");
    assert!(s.progress(J1).is_some(), "the job ended with a held chunk");
    s.handle_chunk_released(now, J1, 100);
    check_actions(&mut s, "assign n1 j1 c100 a3");
    // Releasing it again, or a chunk never held, changes nothing.
    s.handle_chunk_released(now, J1, 100);
    s.handle_chunk_released(now, J1, 0);
    check_actions(&mut s, "");
    s.handle_chunk_succeeded(now, N1, AttemptId(3));
    check_actions(&mut s, "end-job n1 j1\nsucceeded j1");
}

#[test]
fn chunks_keep_arriving_fresh_around_held_ones() {
    let now = Instant::now();
    let mut s = uploading_on_one_slot(now, 2);
    // A reduce job's combine of chunks 0 and 1 is known while its input still arrives.
    s.handle_chunks_held(now, J1, &[1_000]);
    s.handle_chunks_added(now, J1, 1);
    s.handle_chunk_succeeded(now, N1, AttemptId(1));
    check_actions(&mut s, "assign n1 j1 c1 a2");
    s.handle_chunk_succeeded(now, N1, AttemptId(2));
    check_actions(&mut s, "assign n1 j1 c2 a3");
    s.handle_chunk_released(now, J1, 1_000);
    s.handle_input_complete(now, J1);
    s.handle_chunk_succeeded(now, N1, AttemptId(3));
    check_actions(&mut s, "assign n1 j1 c1000 a4");
    assert_eq!(s.progress(J1).map(|p| (p.done, p.total)), Some((3, 4)));
    s.handle_chunk_succeeded(now, N1, AttemptId(4));
    check_actions(&mut s, "end-job n1 j1\nsucceeded j1");
}

#[test]
fn a_covered_chunk_is_done_wherever_it_stood_and_only_once() {
    let now = Instant::now();
    let mut s = uploading_on_one_slot(now, 1);
    s.handle_chunks_held(now, J1, &[100, 101, 102]);
    // Held: done at once.
    assert!(s.handle_chunk_covered(now, J1, 100));
    // Released behind the busy slot (pending): taken out of the queue.
    s.handle_chunk_released(now, J1, 101);
    assert!(s.handle_chunk_covered(now, J1, 101));
    check_actions(&mut s, "");
    // Running: its attempt is cancelled.
    s.handle_chunk_succeeded(now, N1, AttemptId(1));
    s.handle_chunk_released(now, J1, 102);
    check_actions(&mut s, "assign n1 j1 c102 a2");
    s.handle_input_complete(now, J1);
    assert!(s.handle_chunk_covered(now, J1, 102));
    check_actions(&mut s, "cancel n1 a2\nend-job n1 j1\nsucceeded j1");
    // Done already (the job too): nothing changes.
    assert!(!s.handle_chunk_covered(now, J1, 102));
}

#[test]
fn a_restored_job_keeps_its_held_chunks_held() {
    let now = Instant::now();
    // No reattach grace: chunks not done and not held are placed at once.
    let config = SchedulerConfig { reattach_grace: std::time::Duration::ZERO, ..super::no_speculation(0) };
    let mut s = Scheduler::new(config);
    s.handle_node_joined(now, N1, resources("n1", 3));
    // Chunks 0 and 1 done, 2 to run; beyond them 10 done, 11 held (it needs 2), 12 ready (its
    // inputs are stored) and 13 held (it needs 11).
    let extra: BTreeMap<u64, ExtraChunk> =
        [(10, ExtraChunk::Done), (11, ExtraChunk::Held), (12, ExtraChunk::Ready), (13, ExtraChunk::Held)].into();
    s.handle_job_restored_held(now, J1, req(), &[true, true, false], &extra, true);
    let got: Vec<String> = std::iter::from_fn(|| s.poll_output()).map(|o| super::super::sim::render(&o)).collect();
    assert!(got.iter().any(|l| l.contains("assign n1 j1 c2 ")), "{got:?}");
    assert!(got.iter().any(|l| l.contains("assign n1 j1 c12 ")), "{got:?}");
    assert!(!got.iter().any(|l| l.contains("c11 ") || l.contains("c13 ")), "a held chunk was placed: {got:?}");
    s.handle_chunk_released(now, J1, 11);
    let got: Vec<String> = std::iter::from_fn(|| s.poll_output()).map(|o| super::super::sim::render(&o)).collect();
    assert!(got.iter().any(|l| l.contains("assign n1 j1 c11 ")), "{got:?}");
    assert_eq!(s.progress(J1).map(|p| (p.done, p.total)), Some((3, 7)), "chunks 0, 1 and 10 are done of 7");
}
