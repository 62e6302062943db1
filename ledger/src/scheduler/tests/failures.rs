//! Failure tests: retries away from the node a chunk failed on, exhausted attempts, payload errors,
//! cancellation, and nodes that reject a job.

use std::time::{Duration, Instant};

use wire::proto::{AttemptId, FailureKind, JobFailure};

use super::super::sim::{failure, req, Behavior, NodeSpec, Sim};
use super::super::{Action, NodeId, Scheduler};
use super::{N1, N2, N3, J1, resources, config, check_actions, check_trace, submit_whole_job};

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

/// The verdict among the pending actions, if any.
fn verdict(s: &mut Scheduler) -> Option<Action> {
    std::iter::from_fn(|| s.poll_action()).find(|a| matches!(a, Action::JobFailed { .. } | Action::JobSucceeded { .. }))
}

#[test]
fn a_chunk_running_on_every_node_lost_under_it_fails_its_job_at_the_crash_limit() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    for (id, name) in [(N1, "n1"), (N2, "n2"), (N3, "n3"), (NodeId(4), "n4")] {
        s.handle_node_joined(now, id, resources(name, 1));
    }
    submit_whole_job(&mut s, now, 1);
    let mut lost = Vec::new();
    for node in [N1, N2, N3] {
        // The chunk runs on the node with the lowest id among those left.
        assert_eq!(verdict(&mut s), None, "the job ended after {lost:?} were lost");
        s.handle_node_lost(now, node);
        lost.push(node);
    }
    let Some(Action::JobFailed { failure: JobFailure::Chunk { chunk: 0, attempts }, .. }) = verdict(&mut s) else {
        panic!("three crashes did not fail the job");
    };
    let nodes: Vec<&str> = attempts.iter().map(|a| a.node.as_str()).collect();
    assert_eq!(nodes, ["n1", "n2", "n3"], "{attempts:?}");
    assert!(attempts.iter().all(|a| a.failure.kind == FailureKind::Node && a.failure.message.contains("lost")));
}

#[test]
fn crashes_below_the_limit_only_requeue_and_a_success_clears_them() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_node_joined(now, N2, resources("n2", 1));
    s.handle_node_joined(now, N3, resources("n3", 1));
    submit_whole_job(&mut s, now, 1);
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    s.handle_node_lost(now, N1);
    check_actions(&mut s, "start-job n2 j1\nassign n2 j1 c0 a2");
    s.handle_node_lost(now, N2);
    check_actions(&mut s, "start-job n3 j1\nassign n3 j1 c0 a3");
    assert_eq!(s.handle_chunk_succeeded(now, N3, AttemptId(3)), Some((J1, 0)));
    assert!(matches!(verdict(&mut s), Some(Action::JobSucceeded { .. })), "two crashes are under the limit of 3");
}
