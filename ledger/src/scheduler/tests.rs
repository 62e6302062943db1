//! Scheduler tests: exact action traces for direct calls, scenarios through the virtual-time
//! [`Sim`] harness, and property tests over random cluster histories.

use std::time::{Duration, Instant};

use wire::proto::{AttemptId, FailureKind, JobFailure, JobId};
use proptest::prelude::*;

use super::sim::{failure, render, req, Behavior, NodeSpec, Sim, GIB};
use super::{
    Action, JobRequirements, NodeId, NodeResources, NodeState, Scheduler, SchedulerConfig,
};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);
const J1: JobId = JobId(1);

fn resources(name: &str, slots: u32) -> NodeResources {
    NodeResources {
        name: name.to_owned(),
        slots,
        memory_total: 16 * GIB,
        memory_available: 16 * GIB,
        os: "linux".to_owned(),
        arch: "x86_64".to_owned(),
    }
}

fn config(pipeline_depth: u32) -> SchedulerConfig {
    SchedulerConfig { pipeline_depth, ..SchedulerConfig::default() }
}

/// The default configuration with speculative copies turned off.
fn no_speculation(pipeline_depth: u32) -> SchedulerConfig {
    SchedulerConfig { speculation_multiplier: f64::INFINITY, ..config(pipeline_depth) }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
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
    submit_whole_job(&mut s, now, 3);
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
    // Without speculation, the frozen node's chunks wait for its timeout.
    let mut sim = Sim::with_config(no_speculation(2));
    let (a, b) = (sim.add_node(2), sim.add_node(2));
    sim.freeze(a);
    let job = sim.submit_chunks(req(), 12);
    sim.drive();
    assert_eq!(sim.outcome(job), Some(&Ok(())));
    let trace = sim.take_trace();
    let drops: Vec<&str> =
        trace.lines().filter(|l| l.contains("drop") || l.contains("suspect")).collect();
    assert_eq!(
        drops,
        ["[2500ms] suspect n1: silent 2.5s", "[5000ms] drop n1: no heartbeat for 5s"]
    );
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
    submit_whole_job(&mut s, now, 1);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    // n2 keeps heartbeating; n1 falls silent, is suspect halfway and dropped at its deadline.
    s.handle_heartbeat(now + Duration::from_secs(2), N2, 16 * GIB);
    assert_eq!(s.poll_timeout(), Some(now + ms(2500)));
    s.handle_timeout(now + ms(2500));
    check_actions(&mut s, "suspect n1: silent 2.5s");
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
    s.handle_chunk_failed(deadline, N1, AttemptId(1), failure(FailureKind::Trap));
    s.handle_node_lost(deadline, N1);
    check_actions(&mut s, "");
    assert_eq!(s.handle_chunk_succeeded(deadline, N1, AttemptId(2)), None, "wrong node");
    assert_eq!(s.handle_chunk_succeeded(deadline, N2, AttemptId(2)), Some((J1, 0)));
    check_actions(&mut s, "end-job n2 j1\nsucceeded j1");
    assert_eq!(s.handle_chunk_succeeded(deadline, N1, AttemptId(1)), None, "the chunk is done");
    assert_eq!(s.poll_timeout(), Some(now + ms(5500)));
}

#[test]
fn reports_are_signs_of_life_when_heartbeats_are_late() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_job_submitted(now, J1, req());
    s.handle_chunks_added(now, J1, 1);
    s.handle_chunks_added(now, J1, 1);
    s.handle_input_complete(now, J1);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1\nassign n1 j1 c1 a2");
    // No heartbeat, but a result at 2 s: the timer at 2.5 s moves to 2 s + 2.5 s instead.
    assert_eq!(s.handle_chunk_succeeded(now + ms(2000), N1, AttemptId(1)), Some((J1, 0)));
    s.handle_timeout(now + ms(2500));
    check_actions(&mut s, "");
    assert_eq!(s.poll_timeout(), Some(now + ms(4500)));
    // Silent from then on: suspect, then dropped, counted from the last report.
    s.handle_timeout(now + ms(4500));
    check_actions(&mut s, "suspect n1: silent 2.5s");
    s.handle_timeout(now + ms(7000));
    check_actions(&mut s, "drop n1: no heartbeat for 5s");
}

#[test]
fn a_frame_seen_by_the_connection_keeps_a_node_alive() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.handle_node_joined(now, N1, resources("n1", 1));
    // The core learns at 2.5 s, behind its queue, that a frame arrived at 2.4 s.
    s.handle_sign_of_life(now + ms(2400), N1);
    s.handle_sign_of_life(now + ms(100), N1);
    s.handle_timeout(now + ms(2500));
    check_actions(&mut s, "");
    assert_eq!(s.poll_timeout(), Some(now + ms(4900)), "counted from the latest sign");
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
fn restored_job_runs_only_the_chunks_without_a_result() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
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

#[test]
fn result_resent_by_a_dropped_node_completes_the_chunk_and_cancels_the_rerun() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_node_joined(now, N2, resources("n2", 1));
    submit_whole_job(&mut s, now, 1);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    s.handle_node_lost(now, N1);
    check_actions(&mut s, "start-job n2 j1\nassign n2 j1 c0 a2");
    assert_eq!(s.progress(J1).map(|p| (p.done, p.running)), Some((0, 1)));
    // n1's result was on its way when its connection closed; n1 sends it again after
    // reconnecting (as a new session), while n2 still runs the chunk: the result completes the
    // chunk and n2's rerun is cancelled. Either result is accepted at most once.
    s.handle_node_joined(now, N3, resources("n1", 1));
    assert_eq!(s.handle_chunk_succeeded(now, N3, AttemptId(1)), Some((J1, 0)));
    check_actions(&mut s, "cancel n2 a2\nend-job n2 j1\nsucceeded j1");
    assert_eq!(s.handle_chunk_succeeded(now, N2, AttemptId(2)), None);
    assert_eq!(s.handle_chunk_succeeded(now, N3, AttemptId(1)), None);
}

/// Node n1 with `slots` slots and a 4-chunk job J1, all of it placed on n1 at once (the config
/// must leave room for four); returns the scheduler with its actions checked and drained.
fn four_chunks_on_n1(now: Instant, config: SchedulerConfig, slots: u32) -> Scheduler {
    let mut s = Scheduler::new(config);
    s.handle_node_joined(now, N1, resources("n1", slots));
    submit_whole_job(&mut s, now, 4);
    check_actions(
        &mut s,
        "start-job n1 j1
         assign n1 j1 c0 a1
         assign n1 j1 c1 a2
         assign n1 j1 c2 a3
         assign n1 j1 c3 a4",
    );
    s
}

/// Two one-slot nodes n1 and n2, then `submit` (job J1 with more than four chunks): each node
/// gets one running and one queued (the config must allow exactly that). Returns the scheduler
/// with those actions checked and drained.
fn two_chunks_on_each_of_two_nodes(now: Instant, config: SchedulerConfig, submit: impl FnOnce(&mut Scheduler)) -> Scheduler {
    let mut s = Scheduler::new(config);
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_node_joined(now, N2, resources("n2", 1));
    submit(&mut s);
    check_actions(
        &mut s,
        "start-job n1 j1
         assign n1 j1 c0 a1
         start-job n2 j1
         assign n2 j1 c1 a2
         assign n1 j1 c2 a3
         assign n2 j1 c3 a4",
    );
    s
}

/// Speculation after one sample and with no age floor.
fn eager_speculation(pipeline_depth: u32) -> SchedulerConfig {
    SchedulerConfig { speculation_min_samples: 1, speculation_min_age: Duration::ZERO, ..config(pipeline_depth) }
}

/// Submits job J1 with `chunks` chunks and its input complete.
fn submit_whole_job(s: &mut Scheduler, now: Instant, chunks: u64) {
    s.handle_job_submitted(now, J1, req());
    s.handle_chunks_added(now, J1, chunks);
    s.handle_input_complete(now, J1);
}

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

/// Runs a one-chunk job needing `limit_gib` and `platform` on these nodes, checks the failure
/// reason, and that `eligible_summary` gives the same one at submission.
#[track_caller]
fn check_no_eligible_on(
    nodes: &[NodeSpec],
    limit_gib: u64,
    platform: Option<(&str, &str)>,
    expect: &str,
) {
    let mut sim = Sim::new();
    for spec in nodes {
        sim.add_node_with(spec.clone());
    }
    let req = JobRequirements {
        memory_limit: limit_gib * GIB,
        placement_timeout: Duration::from_secs(10),
        platform: platform.map(|(os, arch)| (os.to_owned(), arch.to_owned())),
        ..req()
    };
    // Rejections only show once a node has tried the job.
    let rejecting = nodes.iter().any(|n| matches!(n.behavior, Behavior::Rejecting(_)));
    if !rejecting {
        assert_eq!(sim.sched.eligible_summary(&req), Err(expect.to_owned()));
    }
    let job = sim.submit_chunks(req, 1);
    if !rejecting {
        assert_eq!(sim.sched.blocked_reason(job).as_deref(), Some(expect));
    }
    sim.drive();
    let expect = JobFailure::NoEligibleNode { reason: expect.to_owned() };
    assert_eq!(sim.outcome(job), Some(&Err(expect)));
    sim.check_final();
}

#[track_caller]
fn check_no_eligible(nodes: &[NodeSpec], limit_gib: u64, expect: &str) {
    check_no_eligible_on(nodes, limit_gib, None, expect);
}

#[test]
fn platform_must_match() {
    let on = |os, arch| NodeSpec { os, arch, ..NodeSpec::new(2) };
    let aarch64 = Some(("linux", "aarch64"));
    check_no_eligible_on(
        &[on("linux", "x86_64"), on("linux", "x86_64")],
        1,
        aarch64,
        "2 connected, 2 are linux/x86_64 but the payload needs linux/aarch64, 0 eligible",
    );
    let small_arm = NodeSpec { memory_available: GIB, ..on("linux", "aarch64") };
    check_no_eligible_on(
        &[on("macos", "aarch64"), on("linux", "x86_64"), small_arm, on("linux", "x86_64")],
        4,
        aarch64,
        "4 connected, 2 are linux/x86_64 and 1 is macos/aarch64 but the payload needs \
         linux/aarch64, 1 lacks 4.0 GiB free memory, 0 eligible",
    );

    // A native job runs only where it can; WebAssembly runs anywhere.
    let mut sim = Sim::new();
    let x86 = sim.add_node(2);
    let arm = sim.add_node_with(on("linux", "aarch64"));
    assert!(sim.sched.platform_available("linux", "aarch64"));
    assert!(!sim.sched.platform_available("windows", "x86_64"));
    let native = JobRequirements { platform: Some(("linux".into(), "aarch64".into())), ..req() };
    assert_eq!(sim.sched.eligible_summary(&native), Ok(()));
    sim.submit_chunks(native, 10);
    sim.drive();
    assert_eq!((sim.assigned(x86).len(), sim.assigned(arm).len()), (0, 10));
    sim.submit_chunks(req(), 12);
    sim.drive();
    assert_eq!((sim.assigned(x86).len(), sim.assigned(arm).len()), (6, 16));
    sim.check_final();
}

#[test]
fn drained_node_finishes_its_work_and_takes_no_more() {
    let now = Instant::now();
    let mut s = two_chunks_on_each_of_two_nodes(now, config(1), |s| {
        s.handle_job_submitted(now, J1, req());
        s.handle_chunks_added(now, J1, 8);
    });
    s.handle_drain(now, N1);
    check_actions(&mut s, "");
    assert_eq!(s.node_state(N1), Some(NodeState::Draining));
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(1)), Some((J1, 0)));
    check_actions(&mut s, "");
    assert_eq!(s.handle_chunk_succeeded(now, N2, AttemptId(2)), Some((J1, 1)));
    check_actions(&mut s, "assign n2 j1 c4 a5");
    assert_eq!(s.handle_chunk_succeeded(now, N1, AttemptId(3)), Some((J1, 2)));
    check_actions(&mut s, "");
    assert_eq!(s.node_state(N1), Some(NodeState::Drained));
    assert_eq!(s.node_state(N2), Some(NodeState::Busy));
    s.handle_undrain(now, N1);
    check_actions(&mut s, "assign n1 j1 c5 a6\nassign n1 j1 c6 a7");
    assert_eq!(s.node_state(N1), Some(NodeState::Busy));
}

#[test]
fn blocked_jobs_say_why() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    let small = NodeResources { memory_available: 2 * GIB, ..resources("n2", 1) };
    s.handle_node_joined(now, N2, small);
    s.handle_drain(now, N1);
    let big = JobRequirements { memory_limit: 4 * GIB, ..req() };
    s.handle_job_submitted(now, J1, big);
    assert_eq!(s.blocked_reason(J1), None, "nothing to place yet");
    s.handle_chunks_added(now, J1, 2);
    check_actions(&mut s, "");
    let reason = "2 connected, 1 drained, 1 lacks 4.0 GiB free memory, 0 eligible";
    assert_eq!(s.blocked_reason(J1).as_deref(), Some(reason));
    // The placement clock started with the job stuck; undraining stops it.
    assert_eq!(s.poll_timeout(), Some(now + ms(2500)));
    s.handle_undrain(now, N1);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    assert_eq!(s.blocked_reason(J1), None, "running");
    // Busy eligible nodes are reported as such when a job waits behind another.
    s.handle_node_lost(now, N2);
    let tiny = NodeResources { memory_available: GIB / 2, ..resources("n3", 1) };
    s.handle_node_joined(now, NodeId(3), tiny);
    s.handle_job_submitted(now, JobId(2), req());
    s.handle_chunks_added(now, JobId(2), 1);
    check_actions(&mut s, "");
    let reason = "2 connected, 1 lacks 1.0 GiB free memory, 1 eligible, all busy";
    assert_eq!(s.blocked_reason(JobId(2)).as_deref(), Some(reason));

    // With every node drained, the job fails once its placement timeout runs out.
    let mut sim = Sim::new();
    let node = sim.add_node(1);
    sim.drain(node);
    let job = sim.submit_chunks(JobRequirements { placement_timeout: ms(10_000), ..req() }, 1);
    sim.drive();
    let reason = "1 connected, 1 drained, 0 eligible".to_owned();
    assert_eq!(sim.outcome(job), Some(&Err(JobFailure::NoEligibleNode { reason })));
    assert!(sim.assigned(node).is_empty());
    sim.check_final();
}

#[test]
fn node_whose_failures_succeed_elsewhere_is_quarantined_until_undrained() {
    let mut sim = Sim::with_config(config(0));
    let trap = NodeSpec { behavior: Behavior::Failing(FailureKind::Trap), ..NodeSpec::new(1) };
    let bad = sim.add_node_with(trap);
    let good = sim.add_node(1);
    let job = sim.submit_chunks(req(), 6);
    sim.drive();
    assert_eq!(sim.outcome(job), Some(&Ok(())));
    // Each chunk n1 trapped on succeeds on n2; the third such chunk quarantines n1, which still
    // reports the chunk it already held.
    let reason = "3 attempts failed here that then succeeded on other nodes (last: job 1 chunk \
                  3: trap)";
    check_trace(
        &mut sim,
        &format!(
            "[0ms] start-job n1 j1
             [0ms] assign n1 j1 c0 a1
             [0ms] start-job n2 j1
             [0ms] assign n2 j1 c1 a2
             [11ms] assign n1 j1 c2 a3
             [11ms] assign n2 j1 c0 a4
             [21ms] assign n1 j1 c3 a5
             [21ms] assign n2 j1 c2 a6
             [31ms] assign n1 j1 c4 a7
             [31ms] assign n2 j1 c3 a8
             [41ms] assign n1 j1 c5 a9
             [41ms] quarantined n1: {reason}
             [41ms] assign n2 j1 c4 a10
             [51ms] assign n2 j1 c5 a11
             [61ms] end-job n1 j1
             [61ms] end-job n2 j1
             [61ms] succeeded j1"
        ),
    );
    let reason = reason.to_owned();
    assert_eq!(sim.sched.node_state(bad), Some(NodeState::Quarantined { reason }));
    let job = sim.submit_chunks(req(), 4);
    sim.drive();
    assert_eq!((sim.assigned(bad).len(), sim.assigned(good).len()), (5, 10));
    // Released by an operator, the repaired node takes work again.
    sim.set_behavior(bad, Behavior::Healthy);
    sim.undrain(bad);
    assert_eq!(sim.sched.node_state(bad), Some(NodeState::Ready));
    let job2 = sim.submit_chunks(req(), 4);
    sim.drive();
    assert_eq!((sim.outcome(job), sim.outcome(job2)), (Some(&Ok(())), Some(&Ok(()))));
    assert_eq!((sim.assigned(bad).len(), sim.assigned(good).len()), (7, 12));
    sim.check_final();
}

#[test]
fn one_chunk_that_fails_on_a_node_is_not_enough_to_quarantine_it() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_job_submitted(now, J1, JobRequirements { max_attempts: 5, ..req() });
    s.handle_chunks_added(now, J1, 1);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    for attempt in 1..=3 {
        s.handle_chunk_failed(now, N1, AttemptId(attempt), failure(FailureKind::Timeout));
    }
    check_actions(&mut s, "assign n1 j1 c0 a2\nassign n1 j1 c0 a3\nassign n1 j1 c0 a4");
    s.handle_node_joined(now, N2, resources("n2", 1));
    s.handle_chunks_added(now, J1, 1);
    check_actions(&mut s, "start-job n2 j1\nassign n2 j1 c1 a5");
    s.handle_chunk_failed(now, N1, AttemptId(4), failure(FailureKind::Timeout));
    // Held back from n1 for n2, where it then succeeds: four failures, but of one chunk.
    check_actions(&mut s, "");
    assert!(s.handle_chunk_succeeded(now, N2, AttemptId(5)).is_some());
    check_actions(&mut s, "assign n2 j1 c0 a6");
    assert!(s.handle_chunk_succeeded(now, N2, AttemptId(6)).is_some());
    check_actions(&mut s, "");
    assert_eq!(s.node_state(N1), Some(NodeState::Ready));
}

#[test]
fn suspect_node_takes_no_work_until_it_heartbeats() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_node_joined(now, N2, resources("n2", 1));
    s.handle_heartbeat(now + ms(2000), N2, 16 * GIB);
    s.handle_timeout(now + ms(2500));
    check_actions(&mut s, "suspect n1: silent 2.5s");
    assert_eq!(s.node_state(N1), Some(NodeState::Suspect));
    s.handle_job_submitted(now + ms(2600), J1, req());
    s.handle_chunks_added(now + ms(2600), J1, 3);
    check_actions(&mut s, "start-job n2 j1\nassign n2 j1 c0 a1");
    s.handle_heartbeat(now + ms(3000), N1, 16 * GIB);
    check_actions(&mut s, "recovered n1\nstart-job n1 j1\nassign n1 j1 c1 a2");
    assert_eq!(s.node_state(N1), Some(NodeState::Busy));
    // Silent again: suspect half a timeout after its last heartbeat, dropped a full one after.
    s.handle_heartbeat(now + ms(4000), N2, 16 * GIB);
    s.handle_heartbeat(now + ms(5000), N2, 16 * GIB);
    s.handle_timeout(now + ms(5500));
    check_actions(&mut s, "suspect n1: silent 2.5s");
    s.handle_heartbeat(now + ms(6000), N2, 16 * GIB);
    s.handle_heartbeat(now + ms(7000), N2, 16 * GIB);
    s.handle_timeout(now + ms(8000));
    check_actions(&mut s, "drop n1: no heartbeat for 5s");
    assert_eq!(s.node_state(N1), None);
}

/// One step of a random cluster history; indices pick among existing nodes or jobs.
#[derive(Debug, Clone)]
enum Op {
    AddNode {
        slots: u32,
        memory_gib: u64,
        behavior: u8,
        platform: u8,
    },
    Kill(usize),
    Freeze(usize),
    Thaw(usize),
    SetMemory(usize, u64),
    Drain(usize),
    Undrain(usize),
    Submit {
        chunks: u64,
        max_attempts: u32,
        priority: i32,
        memory_gib: u64,
        timeout_s: u64,
        platform: u8,
    },
    AddChunks(usize, u64),
    Complete(usize),
    Cancel(usize),
    FailNext {
        job: usize,
        chunk: u64,
        kind: u8,
    },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let index = 0..8usize;
    prop_oneof![
        3 => (0..4u32, 0..8u64, 0..12u8, 0..8u8).prop_map(
            |(slots, memory_gib, behavior, platform)| Op::AddNode {
                slots, memory_gib, behavior, platform,
            }
        ),
        1 => index.clone().prop_map(Op::Kill),
        1 => index.clone().prop_map(Op::Freeze),
        1 => index.clone().prop_map(Op::Thaw),
        1 => (index.clone(), 0..8u64).prop_map(|(n, gib)| Op::SetMemory(n, gib)),
        1 => index.clone().prop_map(Op::Drain),
        1 => index.clone().prop_map(Op::Undrain),
        3 => (0..12u64, 0..4u32, -1..2i32, 0..4u64, 1..12u64, 0..8u8).prop_map(
            |(chunks, max_attempts, priority, memory_gib, timeout_s, platform)| Op::Submit {
                chunks, max_attempts, priority, memory_gib, timeout_s, platform,
            }
        ),
        2 => (index.clone(), 0..12u64).prop_map(|(j, n)| Op::AddChunks(j, n)),
        1 => index.clone().prop_map(Op::Complete),
        1 => index.clone().prop_map(Op::Cancel),
        2 => (index, 0..12u64, 0..4u8)
            .prop_map(|(job, chunk, kind)| Op::FailNext { job, chunk, kind }),
        4 => (0..3000u64).prop_map(Op::Advance),
    ]
}

/// Speculation and quarantine settings that make both happen often in short histories.
fn random_config() -> impl Strategy<Value = SchedulerConfig> {
    (0..4u32, 1..6u32, 0..3u8, 0..3u8, 0..4u32, 0..3u8).prop_map(
        |(depth, samples, age, multiplier, quarantine, budget)| SchedulerConfig {
            // With the sim's 10 ms chunks: depth 1, the maximum, or something between.
            pipeline_budget: [None, Some(ms(1)), Some(ms(25))][usize::from(budget)],
            speculation_min_samples: samples,
            speculation_min_age: [Duration::ZERO, ms(50), ms(1000)][usize::from(age)],
            speculation_multiplier: [1.5, 3.0, f64::INFINITY][usize::from(multiplier)],
            quarantine_threshold: quarantine,
            ..config(depth)
        },
    )
}

/// A healthy node able to run any job the property test submits, except on other platforms.
fn big_node() -> NodeSpec {
    NodeSpec { memory_total: 64 * GIB, memory_available: 64 * GIB, ..NodeSpec::new(2) }
}

fn pick<T: Copy>(items: &[T], i: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[i % items.len()])
}

/// Mostly linux/x86_64, sometimes something else.
fn platform(choice: u8) -> (&'static str, &'static str) {
    match choice {
        0 => ("linux", "aarch64"),
        1 => ("macos", "aarch64"),
        _ => ("linux", "x86_64"),
    }
}

fn apply(sim: &mut Sim, op: &Op) {
    let nodes = sim.node_ids();
    let jobs = sim.job_ids();
    match *op {
        Op::AddNode { slots, memory_gib, behavior, platform: choice } => {
            let (behavior, slowdown) = match behavior {
                0 => (Behavior::Failing(FailureKind::Trap), 1),
                1 => (Behavior::Rejecting("bad module".to_owned()), 1),
                2..=4 => (Behavior::Healthy, 30),
                _ => (Behavior::Healthy, 1),
            };
            let memory = memory_gib * GIB;
            let (os, arch) = platform(choice);
            let spec = NodeSpec {
                memory_available: memory,
                memory_total: memory,
                behavior,
                slots,
                os,
                arch,
                slowdown,
            };
            sim.add_node_with(spec);
        }
        Op::Kill(i) => pick(&nodes, i).into_iter().for_each(|n| sim.kill(n)),
        Op::Freeze(i) => pick(&nodes, i).into_iter().for_each(|n| sim.freeze(n)),
        Op::Thaw(i) => pick(&nodes, i).into_iter().for_each(|n| sim.thaw(n)),
        Op::SetMemory(i, gib) => {
            pick(&nodes, i).into_iter().for_each(|n| sim.set_memory(n, gib * GIB))
        }
        Op::Drain(i) => pick(&nodes, i).into_iter().for_each(|n| sim.drain(n)),
        Op::Undrain(i) => pick(&nodes, i).into_iter().for_each(|n| sim.undrain(n)),
        Op::Submit { chunks, max_attempts, priority, memory_gib, timeout_s, platform: choice } => {
            let native = choice < 3;
            let req = JobRequirements {
                memory_limit: memory_gib * GIB,
                max_attempts,
                priority,
                placement_timeout: Duration::from_secs(timeout_s),
                platform: native.then(|| {
                    let (os, arch) = platform(choice);
                    (os.to_owned(), arch.to_owned())
                }),
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
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever happens to the cluster, every job ends once a capable node is around; results
    /// are accepted once; at most two attempts of a chunk are live, and only as a speculative
    /// pair; drained, quarantined and suspect nodes get no new work; capacity, cancellation and
    /// bookkeeping hold throughout (the sim and `check_invariants` assert them after every call).
    #[test]
    fn random_histories_keep_the_promises(
        config in random_config(),
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let mut sim = Sim::with_config(config);
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

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Two jobs of equal priority on one node take turns: after the first fill, no job gets two
    /// placements in a row while the other still has chunks to place.
    #[test]
    fn equal_priorities_both_make_progress(
        slots in 1..4u32,
        depth in 0..3u32,
        first in 1..40u64,
        second in 1..40u64,
    ) {
        let mut sim = Sim::with_config(config(depth));
        let node = sim.add_node(slots);
        let jobs = [sim.submit_chunks(req(), first), sim.submit_chunks(req(), second)];
        sim.drive();
        let outcomes = (sim.outcome(jobs[0]), sim.outcome(jobs[1]));
        prop_assert_eq!(outcomes, (Some(&Ok(())), Some(&Ok(()))));
        let totals = [first, second];
        let capacity = (slots * (1 + depth)) as usize;
        let log = sim.assigned(node);
        let mut placed = [0u64; 2];
        for (i, &(job, _)) in log.iter().enumerate() {
            let k = usize::from(job != jobs[0]);
            if i >= capacity && log[i - 1].0 == job {
                prop_assert_eq!(placed[1 - k], totals[1 - k], "placement {} starves a job", i);
            }
            placed[k] += 1;
        }
        sim.check_final();
    }
}
