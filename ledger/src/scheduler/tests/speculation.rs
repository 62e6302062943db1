//! Speculation tests: copies of stragglers, which attempt wins, pairs that lose a member, and
//! attempts aging from when they reach a slot.

use std::time::Instant;

use wire::proto::{AttemptId, FailureKind};

use super::super::sim::{failure, req, NodeSpec, Sim};
use super::super::{Action, Scheduler};
use super::{N1, N2, J1, resources, config, ms, check_actions, check_trace, four_chunks_on_n1, eager_speculation, submit_whole_job};

/// Two 1-slot nodes and a 3-chunk job whose chunk 1 (attempt 2, on n2) straggles: with
/// speculation after one sample and no age floor, n1 gets a copy of it at 30 ms, three times
/// the 10 ms median. Returns the scheduler with its actions drained.
fn straggler_copied_at_30ms(now: Instant) -> Scheduler {
    let mut s = Scheduler::new(eager_speculation(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_node_joined(now, N2, resources("n2", 1));
    submit_whole_job(&mut s, now, 3);
    check_actions(
        &mut s,
        "start-job n1 j1
         assign n1 j1 c0 a1
         start-job n2 j1
         assign n2 j1 c1 a2",
    );
    assert_eq!(s.handle_chunk_succeeded(now + ms(10), N1, AttemptId(1)), Some((J1, 0)));
    check_actions(&mut s, "assign n1 j1 c2 a3");
    // The queue is empty now: the oldest attempt turns straggler at 3 x 10 ms.
    assert_eq!(s.poll_timeout(), Some(now + ms(30)));
    assert_eq!(s.handle_chunk_succeeded(now + ms(20), N1, AttemptId(3)), Some((J1, 2)));
    check_actions(&mut s, "");
    s.handle_timeout(now + ms(29));
    check_actions(&mut s, "");
    s.handle_timeout(now + ms(30));
    check_actions(&mut s, "copy n1 j1 c1 a4");
    let stats = s.stats(J1).map(|s| (s.speculative, s.speculative_wins, s.median_chunk_time));
    assert_eq!(stats, Some((1, 0, Some(ms(10)))));
    assert_eq!(s.progress(J1).map(|p| (p.done, p.running)), Some((2, 2)));
    s
}

#[test]
fn straggler_is_overtaken_by_its_copy_and_cancelled() {
    let now = Instant::now();
    let mut s = straggler_copied_at_30ms(now);
    assert_eq!(s.handle_chunk_succeeded(now + ms(40), N1, AttemptId(4)), Some((J1, 1)));
    check_actions(
        &mut s,
        "cancel n2 a2
         end-job n1 j1
         end-job n2 j1
         succeeded j1",
    );
    // The straggler's result crossed the cancel: discarded.
    assert_eq!(s.handle_chunk_succeeded(now + ms(41), N2, AttemptId(2)), None);
}

#[test]
fn copy_that_loses_is_cancelled() {
    let now = Instant::now();
    let mut s = straggler_copied_at_30ms(now);
    assert_eq!(s.handle_chunk_succeeded(now + ms(35), N2, AttemptId(2)), Some((J1, 1)));
    check_actions(&mut s, "cancel n1 a4\nend-job n1 j1\nend-job n2 j1\nsucceeded j1");
    assert_eq!(s.handle_chunk_succeeded(now + ms(40), N1, AttemptId(4)), None);
}

#[test]
fn copy_carries_on_alone_when_the_original_fails_or_is_lost() {
    let now = Instant::now();
    // A failed original is not retried while its copy runs, and is blamed once the copy wins.
    let mut s = straggler_copied_at_30ms(now);
    s.handle_chunk_failed(now + ms(35), N2, AttemptId(2), failure(FailureKind::Trap));
    check_actions(&mut s, "");
    assert_eq!(s.progress(J1).map(|p| (p.running, p.retries)), Some((1, 0)));
    // The survivor is never copied again, however long it runs: only heartbeats are due.
    assert_eq!(s.poll_timeout(), Some(now + ms(2500)));
    assert_eq!(s.handle_chunk_succeeded(now + ms(1000), N1, AttemptId(4)), Some((J1, 1)));
    check_actions(&mut s, "end-job n1 j1\nend-job n2 j1\nsucceeded j1");

    // A lost original leaves the copy as the chunk's only attempt.
    let mut s = straggler_copied_at_30ms(now);
    s.handle_node_lost(now + ms(35), N2);
    check_actions(&mut s, "");
    assert_eq!(s.handle_chunk_succeeded(now + ms(40), N1, AttemptId(4)), Some((J1, 1)));
    check_actions(&mut s, "end-job n1 j1\nsucceeded j1");

    // A cancelled job forgets its pair and its wake-ups.
    let mut s = straggler_copied_at_30ms(now);
    s.handle_cancel(now + ms(35), J1);
    check_actions(&mut s, "cancel n2 a2\ncancel n1 a4\nend-job n1 j1\nend-job n2 j1");
    assert!(s.is_empty_of_jobs());
    s.check_invariants(now + ms(35));
}

/// With a deep pipeline a node holds attempts queued behind its running ones; their age counts
/// from when they could start, so a queue that empties does not turn them all into stragglers.
#[test]
fn attempts_age_from_when_they_reach_a_slot() {
    let now = Instant::now();
    let mut s = four_chunks_on_n1(now, eager_speculation(3), 1);
    // An idle node that could take copies.
    s.handle_node_joined(now, N2, resources("n2", 1));
    check_actions(&mut s, "");
    // Each chunk runs 10 ms in turn. Counted from the assignment, a3 and a4 would be 30 ms old,
    // three medians, at 30 ms and be copied; counted from their slot, none ever straggles.
    for (k, attempt) in [1, 2, 3].into_iter().enumerate() {
        let at = now + ms(10 * (k as u64 + 1));
        s.handle_timeout(at);
        check_actions(&mut s, "");
        assert_eq!(s.handle_chunk_succeeded(at, N1, AttemptId(attempt)), Some((J1, k as u64)));
    }
    // a4 reached the slot at 30 ms: it straggles at 30 + 3 x 10 ms.
    assert_eq!(s.poll_timeout(), Some(now + ms(60)));
    s.handle_timeout(now + ms(59));
    check_actions(&mut s, "");
    s.handle_timeout(now + ms(60));
    check_actions(&mut s, "start-job n2 j1\ncopy n2 j1 c3 a5");
    s.check_invariants(now + ms(60));
}

#[test]
fn slow_node_is_overtaken_by_speculative_copies() {
    let mut sim = Sim::with_config(config(0));
    sim.run_time = ms(100);
    let fast = sim.add_node(1);
    let slow = sim.add_node_with(NodeSpec { slowdown: 50, ..NodeSpec::new(1) });
    let job = sim.submit_chunks(req(), 7);
    sim.drive();
    // Six chunks took about 100 ms on n1, so chunk 1 is a straggler at the 1 s floor.
    check_trace(
        &mut sim,
        "[0ms] start-job n1 j1
         [0ms] assign n1 j1 c0 a1
         [0ms] start-job n2 j1
         [0ms] assign n2 j1 c1 a2
         [101ms] assign n1 j1 c2 a3
         [201ms] assign n1 j1 c3 a4
         [301ms] assign n1 j1 c4 a5
         [401ms] assign n1 j1 c5 a6
         [501ms] assign n1 j1 c6 a7
         [1000ms] copy n1 j1 c1 a8
         [1100ms] cancel n2 a2
         [1100ms] end-job n1 j1
         [1100ms] end-job n2 j1
         [1100ms] succeeded j1",
    );
    assert_eq!(sim.outcome(job), Some(&Ok(())));
    assert_eq!(sim.copies(), [(fast, job, 1)]);
    let stats = sim.actions().find_map(|a| match a {
        Action::JobSucceeded { stats, .. } => Some(*stats),
        _ => None,
    });
    assert_eq!(stats.map(|s| (s.speculative, s.speculative_wins)), Some((1, 1)));
    assert!(sim.assigned(slow).len() == 1);
    sim.check_final();
}

#[test]
fn frozen_node_is_outrun_by_copies_before_its_timeout() {
    let mut sim = Sim::new();
    let (a, b) = (sim.add_node(2), sim.add_node(2));
    sim.freeze(a);
    let job = sim.submit_chunks(req(), 12);
    sim.drive();
    assert_eq!(sim.outcome(job), Some(&Ok(())));
    // a's six attempts are copied to b once they are a second old.
    let copies: Vec<_> = sim.copies().iter().map(|&(node, _, chunk)| (node, chunk)).collect();
    assert_eq!(copies, [(b, 0), (b, 2), (b, 4), (b, 6), (b, 8), (b, 10)]);
    assert!(sim.take_trace().lines().all(|l| !l.contains("drop")));
    sim.check_final();
}
