//! Scheduler tests: exact action traces for direct calls, scenarios through the virtual-time
//! [`Sim`] harness, and a property test over random cluster histories.

use std::time::{Duration, Instant};

use common::proto::{AttemptId, FailureKind, JobFailure, JobId};
use proptest::prelude::*;

use super::sim::{failure, render, req, Behavior, NodeSpec, Sim, GIB};
use super::{Action, JobRequirements, NodeId, NodeResources, Scheduler, SchedulerConfig};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const J1: JobId = JobId(1);

fn resources(name: &str, slots: u32) -> NodeResources {
    NodeResources {
        name: name.to_owned(),
        slots,
        memory_total: 16 * GIB,
        memory_available: 16 * GIB,
    }
}

fn config(pipeline_depth: u32) -> SchedulerConfig {
    SchedulerConfig { pipeline_depth, ..SchedulerConfig::default() }
}

/// Lines of `text` with indentation and blank lines removed.
fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// Drains the scheduler's actions and compares them, one per line, with `expect`.
#[track_caller]
fn check_actions(s: &mut Scheduler, expect: &str) {
    let got: Vec<String> = std::iter::from_fn(|| s.poll_action()).map(|a| render(&a)).collect();
    assert_eq!(got.join("\n"), lines(expect).join("\n"));
}

/// Compares the sim's actions since the last trace, one `[time] action` per line, with `expect`.
#[track_caller]
fn check_trace(sim: &mut Sim, expect: &str) {
    let got = sim.take_trace();
    assert_eq!(lines(&got).join("\n"), lines(expect).join("\n"));
}

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
fn results_in_any_order_are_accepted_exactly_once() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.handle_node_joined(now, N1, resources("n1", 4));
    s.handle_job_submitted(now, J1, req());
    s.handle_chunks_added(now, J1, 4);
    s.handle_input_complete(now, J1);
    check_actions(
        &mut s,
        "start-job n1 j1
         assign n1 j1 c0 a1
         assign n1 j1 c1 a2
         assign n1 j1 c2 a3
         assign n1 j1 c3 a4",
    );
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

#[test]
fn retry_goes_to_another_node() {
    let mut sim = Sim::new();
    sim.add_node(2);
    sim.add_node(2);
    let job = sim.submit_chunks(req(), 1);
    sim.fail_next(job, 0, &[FailureKind::Trap]);
    sim.drive();
    check_trace(
        &mut sim,
        "[0ms] start-job n1 j1
         [0ms] assign n1 j1 c0 a1
         [11ms] start-job n2 j1
         [11ms] assign n2 j1 c0 a2
         [22ms] end-job n1 j1
         [22ms] end-job n2 j1
         [22ms] succeeded j1",
    );
    sim.check_final();
}

#[test]
fn retry_stays_on_the_only_node() {
    let mut sim = Sim::new();
    sim.add_node(1);
    let job = sim.submit_chunks(req(), 1);
    sim.fail_next(job, 0, &[FailureKind::Node]);
    sim.drive();
    check_trace(
        &mut sim,
        "[0ms] start-job n1 j1
         [0ms] assign n1 j1 c0 a1
         [11ms] assign n1 j1 c0 a2
         [21ms] end-job n1 j1
         [21ms] succeeded j1",
    );
}

#[test]
fn retry_waits_for_a_busy_node_it_has_not_failed_on() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_node_joined(now, N2, resources("n2", 1));
    s.handle_job_submitted(now, J1, req());
    s.handle_chunks_added(now, J1, 3);
    s.handle_input_complete(now, J1);
    check_actions(
        &mut s,
        "start-job n1 j1
         assign n1 j1 c0 a1
         start-job n2 j1
         assign n2 j1 c1 a2",
    );
    // Chunk 0 is held back for n2, so n1 takes the next fresh chunk instead.
    s.handle_chunk_failed(now, N1, AttemptId(1), failure(FailureKind::Trap));
    check_actions(&mut s, "assign n1 j1 c2 a3");
    assert_eq!(s.progress(J1).map(|p| p.retries), Some(1));
    assert_eq!(s.handle_chunk_succeeded(now, N2, AttemptId(2)), Some((J1, 1)));
    check_actions(&mut s, "assign n2 j1 c0 a4");
    // With n2 gone, the node it failed on is the only one left, so it gets it back.
    s.handle_node_lost(now, N2);
    check_actions(&mut s, "");
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(3)), Some((J1, 2)));
    check_actions(&mut s, "assign n1 j1 c0 a5");
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(5)), Some((J1, 0)));
    check_actions(&mut s, "end-job n1 j1\nsucceeded j1");
}

#[test]
fn held_back_retry_returns_when_the_other_node_loses_memory() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_node_joined(now, N2, resources("n2", 1));
    s.handle_job_submitted(now, J1, req());
    s.handle_chunks_added(now, J1, 2);
    check_actions(
        &mut s,
        "start-job n1 j1
         assign n1 j1 c0 a1
         start-job n2 j1
         assign n2 j1 c1 a2",
    );
    s.handle_chunk_failed(now, N1, AttemptId(1), failure(FailureKind::Trap));
    check_actions(&mut s, "");
    s.handle_heartbeat(now, N2, 0);
    check_actions(&mut s, "assign n1 j1 c0 a3");
}

#[test]
fn exhausted_attempts_fail_the_job_with_every_attempt() {
    let mut sim = Sim::new();
    sim.add_node(2);
    sim.add_node(2);
    let job = sim.submit_chunks(req(), 1);
    sim.fail_next(job, 0, &[FailureKind::Trap, FailureKind::Timeout, FailureKind::Trap]);
    sim.drive();
    check_trace(
        &mut sim,
        "[0ms] start-job n1 j1
         [0ms] assign n1 j1 c0 a1
         [11ms] start-job n2 j1
         [11ms] assign n2 j1 c0 a2
         [22ms] assign n2 j1 c0 a3
         [32ms] end-job n1 j1
         [32ms] end-job n2 j1
         [32ms] failed j1: chunk 0 failed after 3 attempt(s); on node n1: trap; \
                on node n2: chunk timed out; on node n2: trap",
    );
    let Some(Err(JobFailure::Chunk { chunk: 0, attempts })) = sim.outcome(job) else {
        panic!("unexpected outcome {:?}", sim.outcome(job));
    };
    let nodes: Vec<&str> = attempts.iter().map(|a| a.node.as_str()).collect();
    assert_eq!(nodes, ["n1", "n2", "n2"]);
    assert_eq!(attempts[1].failure, failure(FailureKind::Timeout));
    sim.check_final();
}

#[test]
fn payload_error_is_not_retried_and_cancels_the_rest() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(2));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_job_submitted(now, J1, req());
    s.handle_chunks_added(now, J1, 3);
    check_actions(
        &mut s,
        "start-job n1 j1
         assign n1 j1 c0 a1
         assign n1 j1 c1 a2
         assign n1 j1 c2 a3",
    );
    s.handle_chunk_failed(now, N1, AttemptId(1), failure(FailureKind::PayloadError(7)));
    check_actions(
        &mut s,
        "cancel n1 a2
         cancel n1 a3
         end-job n1 j1
         failed j1: chunk 0 failed after 1 attempt(s); on node n1: payload error 7",
    );
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(2)), None);
    s.handle_chunk_failed(now, N1, AttemptId(3), failure(FailureKind::Trap));
    s.handle_chunks_added(now, J1, 1);
    check_actions(&mut s, "");
}

#[test]
fn node_loss_requeues_without_counting_attempts() {
    let mut sim = Sim::new();
    let (a, b) = (sim.add_node(2), sim.add_node(2));
    let job = sim.submit_chunks(JobRequirements { max_attempts: 1, ..req() }, 12);
    sim.run_for(Duration::from_millis(5));
    sim.kill(a);
    let progress = sim.sched.progress(job).map(|p| (p.done, p.running, p.retries));
    assert_eq!(progress, Some((0, 6, 0)));
    sim.drive();
    assert_eq!(sim.outcome(job), Some(&Ok(())));
    let mut on_b: Vec<u64> = sim.assigned(b).iter().map(|&(_, c)| c).collect();
    on_b.sort_unstable();
    assert_eq!(on_b, (0..12).collect::<Vec<_>>());
    sim.check_final();
}

#[test]
fn heartbeat_timeout_drops_the_node_and_requeues() {
    let mut sim = Sim::new();
    let (a, b) = (sim.add_node(2), sim.add_node(2));
    sim.freeze(a);
    let job = sim.submit_chunks(req(), 12);
    sim.drive();
    assert_eq!(sim.outcome(job), Some(&Ok(())));
    let trace = sim.take_trace();
    let drops: Vec<&str> = trace.lines().filter(|l| l.contains("drop")).collect();
    assert_eq!(drops, ["[5000ms] drop n1: no heartbeat for 5s"]);
    assert_eq!(sim.assigned(b).len(), 12);
    assert_eq!(sim.node_ids(), [b]);
    sim.check_final();
}

#[test]
fn late_results_are_discarded() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_node_joined(now, N2, resources("n2", 1));
    s.handle_job_submitted(now, J1, req());
    s.handle_chunks_added(now, J1, 1);
    s.handle_input_complete(now, J1);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    // n2 keeps heartbeating; n1 falls silent and is dropped at its deadline.
    s.handle_heartbeat(now + Duration::from_secs(3), N2, 16 * GIB);
    let deadline = now + Duration::from_secs(5);
    assert_eq!(s.poll_timeout(), Some(deadline));
    s.handle_timeout(deadline - Duration::from_millis(1));
    check_actions(&mut s, "");
    s.handle_timeout(deadline);
    check_actions(
        &mut s,
        "drop n1: no heartbeat for 5s
         start-job n2 j1
         assign n2 j1 c0 a2",
    );
    assert_eq!(s.handle_chunk_succeeded(deadline, N1, AttemptId(1)), None, "superseded");
    s.handle_chunk_failed(deadline, N1, AttemptId(1), failure(FailureKind::Trap));
    s.handle_node_lost(deadline, N1);
    check_actions(&mut s, "");
    assert_eq!(s.handle_chunk_succeeded(deadline, N1, AttemptId(2)), None, "wrong node");
    assert_eq!(s.handle_chunk_succeeded(deadline, N2, AttemptId(2)), Some((J1, 0)));
    check_actions(&mut s, "end-job n2 j1\nsucceeded j1");
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(8)));
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

/// Runs a one-chunk job needing `limit_gib` on these nodes and checks the failure reason.
#[track_caller]
fn check_no_eligible(nodes: &[NodeSpec], limit_gib: u64, expect: &str) {
    let mut sim = Sim::new();
    for spec in nodes {
        sim.add_node_with(spec.clone());
    }
    let req = JobRequirements {
        memory_limit: limit_gib * GIB,
        placement_timeout: Duration::from_secs(10),
        ..req()
    };
    let job = sim.submit_chunks(req, 1);
    sim.drive();
    let expect = JobFailure::NoEligibleNode { reason: expect.to_owned() };
    assert_eq!(sim.outcome(job), Some(&Err(expect)));
    sim.check_final();
}

#[test]
fn no_eligible_node_reasons() {
    let small = |available_gib, total_gib| NodeSpec {
        memory_available: available_gib * GIB,
        memory_total: total_gib * GIB,
        ..NodeSpec::new(2)
    };
    let rejecting = NodeSpec {
        behavior: Behavior::Rejecting("missing export dispy_run".to_owned()),
        ..NodeSpec::new(2)
    };
    check_no_eligible(&[], 4, "0 nodes connected");
    check_no_eligible(
        &[small(2, 16), small(2, 16)],
        4,
        "2 connected, 2 lack 4.0 GiB free memory, 0 eligible",
    );
    check_no_eligible(
        &[NodeSpec::new(0), small(2, 2)],
        4,
        "2 connected, 1 has no slots, 1 has less than 4.0 GiB of memory, 0 eligible",
    );
    check_no_eligible(
        &[rejecting, small(1, 16)],
        4,
        "2 connected, 1 rejected the job (missing export dispy_run), \
         1 lacks 4.0 GiB free memory, 0 eligible",
    );
}

#[test]
fn placement_clock_runs_only_while_no_node_is_eligible() {
    let req = JobRequirements { placement_timeout: Duration::from_secs(10), ..req() };
    // The clock starts with the first pending chunk and a capable node stops it.
    let mut sim = Sim::new();
    let job = sim.submit(req.clone());
    sim.run_for(Duration::from_secs(20));
    sim.add_chunks(job, 1);
    sim.complete_input(job);
    sim.run_for(Duration::from_secs(9));
    sim.add_node_with(NodeSpec { memory_available: GIB / 2, ..NodeSpec::new(1) });
    sim.run_for(Duration::from_millis(500));
    sim.add_node(1);
    sim.drive();
    assert_eq!(sim.outcome(job), Some(&Ok(())));

    // Waiting for an eligible node that is busy with other work is not a placement failure.
    let mut sim = Sim::with_config(config(0));
    sim.run_time = Duration::from_secs(5);
    sim.add_node(1);
    let first = sim.submit_chunks(req.clone(), 3);
    let second =
        sim.submit_chunks(JobRequirements { placement_timeout: Duration::from_secs(1), ..req }, 1);
    sim.drive();
    assert_eq!((sim.outcome(first), sim.outcome(second)), (Some(&Ok(())), Some(&Ok(()))));
    sim.check_final();
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
fn cancel_stops_everything_for_the_job() {
    let mut sim = Sim::new();
    let (a, b) = (sim.add_node(2), sim.add_node(2));
    let job = sim.submit_chunks(req(), 40);
    sim.run_for(Duration::from_millis(15));
    sim.take_trace();
    let held = sim.in_flight(a) + sim.in_flight(b);
    assert_eq!(held, 12);
    sim.cancel(job);
    let trace = sim.take_trace();
    let kinds: Vec<&str> = trace.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    let cancels = kinds.iter().filter(|&&k| k == "cancel").count();
    assert_eq!((cancels, kinds.len()), (12, 14), "{trace}");
    assert!(trace.ends_with("[15ms] end-job n1 j1\n[15ms] end-job n2 j1\n"), "{trace}");
    // A result that was already on its way is discarded.
    let cancelled = sim.actions().find_map(|a| match a {
        Action::CancelAttempt { node, attempt } => Some((*node, *attempt)),
        _ => None,
    });
    let Some((node, attempt)) = cancelled else { panic!("no cancel in {trace}") };
    assert_eq!(sim.sched.handle_chunk_succeeded(sim.now, node, attempt), None);
    sim.sched.handle_cancel(sim.now, job);
    assert_eq!(sim.sched.poll_action(), None);
    sim.drive();
    check_trace(&mut sim, "");
    sim.check_final();
}

#[test]
fn rejecting_node_never_gets_the_job_again() {
    let mut sim = Sim::new();
    let rejecting = NodeSpec {
        behavior: Behavior::Rejecting("missing export dispy_run".to_owned()),
        ..NodeSpec::new(2)
    };
    let (a, b) = (sim.add_node_with(rejecting), sim.add_node(2));
    let job = sim.submit_chunks(req(), 10);
    sim.drive();
    assert_eq!(sim.outcome(job), Some(&Ok(())));
    assert_eq!(sim.assigned(a).len(), 5, "only before it answered");
    assert_eq!(sim.assigned(b).len(), 10);
    let trace = sim.take_trace();
    assert!(trace.lines().all(|l| !l.contains("assign n1") || l.starts_with("[0ms]")), "{trace}");
    assert!(trace.contains("end-job n1 j1"), "{trace}");
    sim.check_final();
}

#[test]
fn rejected_by_every_node_fails_the_job() {
    let rejecting = NodeSpec {
        behavior: Behavior::Rejecting("missing export dispy_run".to_owned()),
        ..NodeSpec::new(1)
    };
    let mut sim = Sim::new();
    sim.add_node_with(rejecting.clone());
    sim.add_node_with(rejecting.clone());
    sim.submit_chunks(req(), 2);
    sim.drive();
    check_trace(
        &mut sim,
        "[0ms] start-job n1 j1
         [0ms] assign n1 j1 c0 a1
         [0ms] start-job n2 j1
         [0ms] assign n2 j1 c1 a2
         [1ms] assign n2 j1 c0 a3
         [1ms] end-job n1 j1
         [1ms] end-job n2 j1
         [1ms] failed j1: payload rejected: missing export dispy_run",
    );

    // Losing the last node that accepted the job leaves only nodes that rejected it.
    let mut sim = Sim::new();
    sim.run_time = Duration::from_secs(60);
    sim.add_node_with(rejecting);
    let healthy = sim.add_node(1);
    sim.submit_chunks(req(), 2);
    sim.run_for(Duration::from_millis(5));
    sim.take_trace();
    sim.kill(healthy);
    check_trace(
        &mut sim,
        "[5ms] end-job n1 j1
         [5ms] failed j1: payload rejected: missing export dispy_run",
    );
    sim.check_final();
}

#[test]
fn jobs_are_served_by_priority_then_submission_order() {
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
    finish(3, "assign n1 j1 c1 a4");
    finish(4, "end-job n1 j1\nsucceeded j1\nstart-job n1 j3\nassign n1 j3 c0 a5");
    finish(5, "end-job n1 j3\nsucceeded j3");
}

/// One step of a random cluster history; indices pick among existing nodes or jobs.
#[derive(Debug, Clone)]
enum Op {
    AddNode { slots: u32, memory_gib: u64, behavior: u8 },
    Kill(usize),
    Freeze(usize),
    SetMemory(usize, u64),
    Submit { chunks: u64, max_attempts: u32, priority: i32, memory_gib: u64, timeout_s: u64 },
    AddChunks(usize, u64),
    Complete(usize),
    Cancel(usize),
    FailNext { job: usize, chunk: u64, kind: u8 },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let index = 0..8usize;
    prop_oneof![
        3 => (0..4u32, 0..8u64, 0..10u8)
            .prop_map(|(slots, memory_gib, behavior)| Op::AddNode { slots, memory_gib, behavior }),
        1 => index.clone().prop_map(Op::Kill),
        1 => index.clone().prop_map(Op::Freeze),
        1 => (index.clone(), 0..8u64).prop_map(|(n, gib)| Op::SetMemory(n, gib)),
        3 => (0..12u64, 0..4u32, -1..2i32, 0..4u64, 1..12u64).prop_map(
            |(chunks, max_attempts, priority, memory_gib, timeout_s)| Op::Submit {
                chunks, max_attempts, priority, memory_gib, timeout_s,
            }
        ),
        2 => (index.clone(), 0..12u64).prop_map(|(j, n)| Op::AddChunks(j, n)),
        1 => index.clone().prop_map(Op::Complete),
        1 => index.clone().prop_map(Op::Cancel),
        2 => (index, 0..12u64, 0..3u8)
            .prop_map(|(job, chunk, kind)| Op::FailNext { job, chunk, kind }),
        4 => (0..3000u64).prop_map(Op::Advance),
    ]
}

/// A healthy node able to run any job the property test submits.
fn big_node() -> NodeSpec {
    NodeSpec { memory_total: 64 * GIB, memory_available: 64 * GIB, ..NodeSpec::new(2) }
}

fn pick<T: Copy>(items: &[T], i: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[i % items.len()])
}

fn apply(sim: &mut Sim, op: &Op) {
    let nodes = sim.node_ids();
    let jobs = sim.job_ids();
    match *op {
        Op::AddNode { slots, memory_gib, behavior } => {
            let behavior = match behavior {
                0 => Behavior::Failing(FailureKind::Trap),
                1 => Behavior::Rejecting("bad module".to_owned()),
                _ => Behavior::Healthy,
            };
            let memory = memory_gib * GIB;
            let spec = NodeSpec { memory_available: memory, memory_total: memory, behavior, slots };
            sim.add_node_with(spec);
        }
        Op::Kill(i) => pick(&nodes, i).into_iter().for_each(|n| sim.kill(n)),
        Op::Freeze(i) => pick(&nodes, i).into_iter().for_each(|n| sim.freeze(n)),
        Op::SetMemory(i, gib) => {
            pick(&nodes, i).into_iter().for_each(|n| sim.set_memory(n, gib * GIB))
        }
        Op::Submit { chunks, max_attempts, priority, memory_gib, timeout_s } => {
            let req = JobRequirements {
                memory_limit: memory_gib * GIB,
                max_attempts,
                priority,
                placement_timeout: Duration::from_secs(timeout_s),
            };
            let job = sim.submit(req);
            sim.add_chunks(job, chunks);
        }
        Op::AddChunks(i, n) => pick(&jobs, i).into_iter().for_each(|j| sim.add_chunks(j, n)),
        Op::Complete(i) => pick(&jobs, i).into_iter().for_each(|j| sim.complete_input(j)),
        Op::Cancel(i) => pick(&jobs, i).into_iter().for_each(|j| sim.cancel(j)),
        Op::FailNext { job, chunk, kind } => {
            let kind = match kind {
                0 => FailureKind::PayloadError(1),
                1 => FailureKind::Timeout,
                _ => FailureKind::Trap,
            };
            if let Some(job) = pick(&jobs, job) {
                sim.fail_next(job, chunk, &[kind]);
            }
        }
        Op::Advance(ms) => sim.run_for(Duration::from_millis(ms)),
    }
}

proptest! {
    // Failures print the minimal history; nothing is written next to the sources.
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever happens to the cluster, every job ends once a capable node is around; results
    /// are accepted once; capacity, cancellation and bookkeeping hold throughout (the sim and
    /// `check_invariants` assert them after every call).
    #[test]
    fn random_histories_keep_the_promises(
        depth in 0..3u32,
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let mut sim = Sim::with_config(config(depth));
        for op in &ops {
            apply(&mut sim, op);
        }
        sim.add_node_with(big_node());
        for job in sim.job_ids() {
            sim.complete_input(job);
        }
        prop_assert!(sim.drive_bounded(Duration::from_secs(3600)), "jobs never ended");
        sim.check_final();
    }
}
