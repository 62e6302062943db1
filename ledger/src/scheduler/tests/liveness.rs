//! Liveness tests: lost and silent nodes (suspect, then dropped), signs of life, results resent
//! after a reconnect, and quarantine of nodes whose failures succeed elsewhere.

use std::time::{Duration, Instant};

use wire::proto::{AttemptId, FailureKind};

use super::super::sim::{failure, req, Behavior, NodeSpec, Sim, GIB};
use super::super::{JobRequirements, NodeHold, NodeState, Scheduler, SchedulerConfig};
use super::{N1, N2, N3, J1, resources, config, no_speculation, ms, check_actions, check_trace, submit_whole_job};

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
    assert_eq!(sim.sched.node_state(bad), Some(NodeState::Quarantined { reason: reason.clone() }));
    assert_eq!(sim.sched.hold("n1").and_then(|h| h.quarantine.clone()), Some(reason), "held by name");
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
fn holds_belong_to_the_node_name_and_apply_to_its_next_sessions() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    s.handle_drain(now, N1);
    assert_eq!(s.hold("n1"), Some(&NodeHold { drained: true, quarantine: None }));
    // The session ends and the node comes back under a new id: still drained, given nothing.
    s.handle_node_lost(now, N1);
    s.handle_node_joined(now, N2, resources("n1", 1));
    submit_whole_job(&mut s, now, 2);
    check_actions(&mut s, "");
    assert_eq!(s.node_state(N2), Some(NodeState::Drained));
    // A quarantine joins the drain on the name, and a restored hold applies before any work.
    let quarantined = NodeHold { drained: true, quarantine: Some("bad disk".into()) };
    s.handle_hold(now, "n1", quarantined.clone());
    assert_eq!(s.node_state(N2), Some(NodeState::Quarantined { reason: "bad disk".into() }));
    let mut restarted = Scheduler::new(config(0));
    restarted.restore_hold("n1", quarantined);
    restarted.handle_node_joined(now, N3, resources("n1", 1));
    submit_whole_job(&mut restarted, now, 1);
    check_actions(&mut restarted, "");
    // Released by name, the connected session takes the waiting work at once.
    s.handle_hold(now, "n1", NodeHold::default());
    assert_eq!(s.hold("n1"), None);
    check_actions(&mut s, "start-job n2 j1\nassign n2 j1 c0 a1");
    assert_eq!(restarted.holds().count(), 1);
}
