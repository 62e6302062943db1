//! Placement tests: pipelined slots, eager placement of streaming chunks, memory limits, priority
//! and round-robin between jobs, restored jobs, and pipeline depths that follow measured run
//! times.

use std::time::{Duration, Instant};

use wire::proto::{AttemptId, JobId};

use super::super::sim::{req, Sim, GIB};
use super::super::{Action, JobRequirements, NodeResources, Scheduler, SchedulerConfig};
use super::{N1, N2, J1, resources, config, no_speculation, ms, check_actions, four_chunks_on_n1, two_chunks_on_each_of_two_nodes, submit_whole_job};

#[test]
fn two_nodes_share_work_and_every_slot_is_pipelined() {
    let mut sim = Sim::new();
    let (a, b) = (sim.add_node(2), sim.add_node(2));
    let job = sim.submit_chunks(req(), 20);
    // slots * (1 + pipeline_depth) = 6 attempts each, handed out alternately.
    let chunks = |sim: &Sim, node| sim.assigned(node).iter().map(|&(_, c)| c).collect::<Vec<_>>();
    assert_eq!(chunks(&sim, a), [0, 2, 4, 6, 8, 10]);
    assert_eq!(chunks(&sim, b), [1, 3, 5, 7, 9, 11]);
    sim.run_for(Duration::from_millis(1));
    assert_eq!((sim.running(a), sim.running(b)), (2, 2));
    assert_eq!((sim.in_flight(a), sim.in_flight(b)), (6, 6));
    // Each finished chunk is replaced at once, so the queues stay full while work remains.
    sim.run_for(Duration::from_millis(10));
    assert_eq!((sim.in_flight(a), sim.in_flight(b)), (6, 6));
    sim.drive();
    assert_eq!(sim.outcome(job), Some(&Ok(())));
    assert_eq!(sim.assigned(a).len() + sim.assigned(b).len(), 20);
    sim.check_final();
}

#[test]
fn a_paired_jobs_chunks_go_to_nodes_two_by_two() {
    let mut sim = Sim::new();
    let (a, b) = (sim.add_node(2), sim.add_node(2));
    // A reduce job: each node gets both halves of the smallest blocks, to pre-combine them.
    let job = sim.submit_chunks(JobRequirements { paired: true, ..req() }, 20);
    let chunks = |sim: &Sim, node| sim.assigned(node).iter().map(|&(_, c)| c).collect::<Vec<_>>();
    assert_eq!(chunks(&sim, a), [0, 1, 4, 5, 8, 9]);
    assert_eq!(chunks(&sim, b), [2, 3, 6, 7, 10, 11]);
    sim.drive();
    assert_eq!(sim.outcome(job), Some(&Ok(())));
    let mut pairs_apart = 0;
    for k in 0..10 {
        let on = |c| [a, b].into_iter().find(|&n| chunks(&sim, n).contains(&c));
        pairs_apart += usize::from(on(2 * k) != on(2 * k + 1));
    }
    assert_eq!(pairs_apart, 0, "a pair of chunks was split between the nodes");
    sim.check_final();
}

#[test]
fn results_in_any_order_are_accepted_exactly_once() {
    let now = Instant::now();
    let mut s = four_chunks_on_n1(now, SchedulerConfig::default(), 4);
    for (attempt, chunk) in [(3, 2), (1, 0), (4, 3)] {
        assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(attempt)), Some((J1, chunk)));
    }
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(3)), None, "duplicate");
    assert_eq!(s.handle_chunk_succeeded(now, N2, AttemptId(2)), None, "unknown node");
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(99)), None, "unknown attempt");
    let progress = s.progress(J1).map(|p| (p.done, p.total, p.running));
    assert_eq!(progress, Some((3, 4, 1)));
    check_actions(&mut s, "");
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(2)), Some((J1, 1)));
    check_actions(&mut s, "end-job n1 j1\nsucceeded j1");
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(2)), None, "after the job ended");
    assert_eq!(s.progress(J1), None, "ended jobs are forgotten");
}

#[test]
fn chunks_streaming_in_are_placed_eagerly() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(2));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_job_submitted(now, J1, req());
    check_actions(&mut s, "");
    s.handle_chunks_added(now, J1, 1);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    s.handle_chunks_added(now, J1, 5);
    check_actions(&mut s, "assign n1 j1 c1 a2\nassign n1 j1 c2 a3");
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(1)), Some((J1, 0)));
    check_actions(&mut s, "assign n1 j1 c3 a4");
    s.handle_input_complete(now, J1);
    check_actions(&mut s, "");
}

/// Places a 100-chunk job on one node and checks how many attempts it got.
#[track_caller]
fn check_memory(slots: u32, available_gib: u64, limit_gib: u64, expect: usize) {
    let now = Instant::now();
    let mut s = Scheduler::new(config(2));
    let node = NodeResources { memory_available: available_gib * GIB, ..resources("n1", slots) };
    s.handle_node_joined(now, N1, node);
    s.handle_job_submitted(now, J1, JobRequirements { memory_limit: limit_gib * GIB, ..req() });
    s.handle_chunks_added(now, J1, 100);
    let assigned = std::iter::from_fn(|| s.poll_action())
        .filter(|a| matches!(a, Action::Assign { .. }))
        .count();
    assert_eq!(assigned, expect, "{slots} slots, {available_gib} GiB free, {limit_gib} GiB each");
}

#[test]
fn memory_limits_placement() {
    // The running positions share the memory; queued ones only need the job's own limit.
    check_memory(2, 4, 2, 6);
    check_memory(2, 4, 3, 1);
    check_memory(2, 4, 5, 0);
    check_memory(2, 4, 0, 6);
    check_memory(4, 3, 1, 3);
    check_memory(4, 4, 1, 12);
}

#[test]
fn heartbeat_with_more_memory_takes_more_work() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(2));
    let node = NodeResources { memory_available: 4 * GIB, ..resources("n1", 2) };
    s.handle_node_joined(now, N1, node);
    s.handle_job_submitted(now, J1, JobRequirements { memory_limit: 3 * GIB, ..req() });
    s.handle_chunks_added(now, J1, 100);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    s.handle_heartbeat(now, N1, 4 * GIB);
    check_actions(&mut s, "");
    s.handle_heartbeat(now, N1, 8 * GIB);
    let assigned = std::iter::from_fn(|| s.poll_action()).count();
    assert_eq!(assigned, 5);
}

#[test]
fn zero_chunks_succeed_at_once() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.handle_node_joined(now, N1, resources("n1", 2));
    s.handle_job_submitted(now, J1, req());
    s.handle_chunks_added(now, J1, 0);
    check_actions(&mut s, "");
    s.handle_input_complete(now, J1);
    check_actions(&mut s, "succeeded j1");
    assert_eq!(s.progress(J1), None);
}

#[test]
fn jobs_are_served_by_priority_then_in_turns() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    let jobs = [(JobId(1), 0, 2), (JobId(2), 5, 2), (JobId(3), 0, 1)];
    for (job, priority, chunks) in jobs {
        s.handle_job_submitted(now, job, JobRequirements { priority, ..req() });
        s.handle_chunks_added(now, job, chunks);
        s.handle_input_complete(now, job);
    }
    s.handle_node_joined(now, N1, resources("n1", 1));
    check_actions(&mut s, "start-job n1 j2\nassign n1 j2 c0 a1");
    let mut finish = |attempt, expect: &str| {
        assert!(s.handle_chunk_succeeded(now, N1, AttemptId(attempt)).is_some());
        check_actions(&mut s, expect);
    };
    finish(1, "assign n1 j2 c1 a2");
    finish(2, "end-job n1 j2\nsucceeded j2\nstart-job n1 j1\nassign n1 j1 c0 a3");
    // j1 and j3 share priority 0, so they take turns.
    finish(3, "start-job n1 j3\nassign n1 j3 c0 a4");
    finish(4, "end-job n1 j3\nsucceeded j3\nassign n1 j1 c1 a5");
    finish(5, "end-job n1 j1\nsucceeded j1");
}

#[test]
fn equal_jobs_share_one_node_in_turns() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    for job in [J1, JobId(2)] {
        s.handle_job_submitted(now, job, req());
        s.handle_chunks_added(now, job, 3);
        s.handle_input_complete(now, job);
    }
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    let mut finish = |attempt, expect: &str| {
        assert!(s.handle_chunk_succeeded(now, N1, AttemptId(attempt)).is_some());
        check_actions(&mut s, expect);
    };
    finish(1, "start-job n1 j2\nassign n1 j2 c0 a2");
    finish(2, "assign n1 j1 c1 a3");
    finish(3, "assign n1 j2 c1 a4");
    finish(4, "assign n1 j1 c2 a5");
    finish(5, "end-job n1 j1\nsucceeded j1\nassign n1 j2 c2 a6");
}

#[test]
fn restored_job_runs_only_the_chunks_without_a_result() {
    let now = Instant::now();
    // No reattach grace: the chunks without a result are requeued at once.
    let mut s = Scheduler::new(SchedulerConfig { reattach_grace: Duration::ZERO, ..SchedulerConfig::default() });
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_job_restored(now, J1, req(), &[true, false, true, false]);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c1 a1\nassign n1 j1 c3 a2");
    assert_eq!(s.progress(J1).map(|p| (p.done, p.total, p.input_complete)), Some((2, 4, true)));
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(1)), Some((J1, 1)));
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(2)), Some((J1, 3)));
    check_actions(&mut s, "end-job n1 j1\nsucceeded j1");
    // Everything already done: it succeeds at once.
    s.handle_job_restored(now, JobId(2), req(), &[true, true]);
    check_actions(&mut s, "succeeded j2");
}

/// Under a pipeline budget a job's queue on a node follows its chunks' run time there: one queued
/// chunk until something is measured, deep for tiny chunks, shallow again once they turn long
/// (what is queued stays; no more is added until the queue is below the new depth). A job that
/// starts on the node later starts from one queued chunk, however tiny the first job's were.
#[test]
fn pipeline_depth_follows_the_measured_run_time_of_each_job() {
    let now = Instant::now();
    let config = SchedulerConfig { pipeline_budget: Some(ms(2)), ..no_speculation(4) };
    let mut s = Scheduler::new(config);
    s.handle_node_joined(now, N1, resources("n1", 1));
    submit_whole_job(&mut s, now, 20);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1\nassign n1 j1 c1 a2");
    // 100 µs chunks: 2 ms of them is 20, capped at 4 queued behind the running one.
    s.handle_run_time(now, N1, AttemptId(1), Duration::from_micros(100));
    check_actions(&mut s, "assign n1 j1 c2 a3\nassign n1 j1 c3 a4\nassign n1 j1 c4 a5");
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(1)), Some((J1, 0)));
    check_actions(&mut s, "assign n1 j1 c5 a6");
    // A 50 ms chunk lifts the average to ~6.3 ms: depth 1, while 5 attempts are on the node.
    s.handle_run_time(now, N1, AttemptId(2), ms(50));
    check_actions(&mut s, "");
    for attempt in 2..=4 {
        assert!(s.handle_chunk_succeeded(now, N1, AttemptId(attempt)).is_some());
        check_actions(&mut s, "");
    }
    // Down to one running and none queued: the node takes one more.
    assert!(s.handle_chunk_succeeded(now, N1, AttemptId(5)).is_some());
    check_actions(&mut s, "assign n1 j1 c6 a7");
    s.check_invariants(now);

    // Back to tiny chunks for J1, then J2 arrives: it gets one running and one queued position
    // next to J1's, not J1's depth.
    s.handle_run_time(now, N1, AttemptId(6), Duration::ZERO);
    for _ in 0..20 {
        s.handle_run_time(now, N1, AttemptId(6), Duration::from_micros(1));
    }
    check_actions(&mut s, "assign n1 j1 c7 a8\nassign n1 j1 c8 a9\nassign n1 j1 c9 a10");
    assert!(s.handle_chunk_succeeded(now, N1, AttemptId(6)).is_some());
    check_actions(&mut s, "assign n1 j1 c10 a11");
    s.handle_cancel(now, J1);
    check_actions(&mut s, "cancel n1 a7\ncancel n1 a8\ncancel n1 a9\ncancel n1 a10\ncancel n1 a11\nend-job n1 j1");
    let j2 = JobId(2);
    s.handle_job_submitted(now, j2, req());
    s.handle_chunks_added(now, j2, 10);
    check_actions(&mut s, "start-job n1 j2\nassign n1 j2 c0 a12\nassign n1 j2 c1 a13");
    s.check_invariants(now);
}

/// A job's first measured chunk sets the depth of its shares everywhere nothing was measured yet:
/// tiny chunks fill every node's pipeline at once, not node by node as each reports.
#[test]
fn first_measured_chunk_deepens_every_unmeasured_share() {
    let now = Instant::now();
    let config = SchedulerConfig { pipeline_budget: Some(ms(2)), ..no_speculation(4) };
    let mut s = two_chunks_on_each_of_two_nodes(now, config, |s| submit_whole_job(s, now, 40));
    s.handle_run_time(now, N1, AttemptId(1), Duration::from_micros(100));
    check_actions(
        &mut s,
        "assign n1 j1 c4 a5
         assign n2 j1 c5 a6
         assign n1 j1 c6 a7
         assign n2 j1 c7 a8
         assign n1 j1 c8 a9
         assign n2 j1 c9 a10",
    );
    s.check_invariants(now);
}
