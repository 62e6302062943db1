//! Eligibility tests: why a job cannot place ([`Blocked`](super::super::Blocked) and its words),
//! the placement clock, platforms, and drained nodes.

use std::time::{Duration, Instant};

use wire::proto::{AttemptId, JobFailure, JobId};

use super::super::sim::{req, Behavior, NodeSpec, Sim, GIB};
use super::super::{Blocked, JobRequirements, NodeId, NodeResources, NodeState, Scheduler};
use super::{N1, N2, N3, J1, resources, config, ms, check_actions, two_chunks_on_each_of_two_nodes};

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
        placement_timeout: Some(Duration::from_secs(10)),
        platform: platform.map(|(os, arch)| (os.to_owned(), arch.to_owned())),
        ..req()
    };
    // Rejections only show once a node has tried the job.
    let rejecting = nodes.iter().any(|n| matches!(n.behavior, Behavior::Rejecting(_)));
    if !rejecting {
        assert_eq!(sim.sched.eligible_summary(&req).map_err(|b| b.to_string()), Err(expect.to_owned()));
    }
    let job = sim.submit_chunks(req, 1);
    if !rejecting {
        assert_eq!(sim.sched.blocked_reason(job).map(|b| b.to_string()).as_deref(), Some(expect));
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
fn placement_clock_runs_only_while_no_node_is_eligible() {
    let req = JobRequirements { placement_timeout: Some(Duration::from_secs(10)), ..req() };
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
        sim.submit_chunks(JobRequirements { placement_timeout: Some(Duration::from_secs(1)), ..req }, 1);
    sim.drive();
    assert_eq!((sim.outcome(first), sim.outcome(second)), (Some(&Ok(())), Some(&Ok(()))));
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
    assert_eq!(s.blocked_reason(J1).map(|b| b.to_string()).as_deref(), Some(reason));
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
    assert_eq!(s.blocked_reason(JobId(2)).map(|b| b.to_string()).as_deref(), Some(reason));

    // With every node drained, the job fails once its placement timeout runs out.
    let mut sim = Sim::new();
    let node = sim.add_node(1);
    sim.drain(node);
    let job = sim.submit_chunks(JobRequirements { placement_timeout: Some(ms(10_000)), ..req() }, 1);
    sim.drive();
    let reason = "1 connected, 1 drained, 0 eligible".to_owned();
    assert_eq!(sim.outcome(job), Some(&Err(JobFailure::NoEligibleNode { reason })));
    assert!(sim.assigned(node).is_empty());
    sim.check_final();
}

/// The reason is a value: counts per reason, each node under the first that applies; the words
/// are only its rendering.
#[test]
fn blocked_counts_each_node_under_its_first_reason() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    s.handle_node_joined(now, N1, resources("n1", 1));
    let small = NodeResources { memory_available: 2 * GIB, ..resources("n2", 1) };
    s.handle_node_joined(now, N2, small);
    let arm = NodeResources { arch: "aarch64".to_owned(), ..resources("n3", 1) };
    s.handle_node_joined(now, N3, arm);
    s.handle_drain(now, N1);
    let x86 = Some(("linux".to_owned(), "x86_64".to_owned()));
    let req = JobRequirements { memory_limit: 4 * GIB, platform: x86.clone(), ..req() };
    let Err(blocked) = s.eligible_summary(&req) else { panic!("no node is eligible") };
    let expect = Blocked {
        connected: 3,
        platform: x86,
        wrong_platform: vec![(("linux".to_owned(), "aarch64".to_owned()), 1)],
        rejected: 0,
        rejection: None,
        no_slots: 0,
        memory_limit: 4 * GIB,
        too_small: 0,
        quarantined: 0,
        drained: 1,
        short_of_memory: 1,
        eligible: 0,
        slot_share: None,
    };
    assert_eq!(*blocked, expect);
    let words = "3 connected, 1 is linux/aarch64 but the payload needs linux/x86_64, 1 drained, \
                 1 lacks 4.0 GiB free memory, 0 eligible";
    assert_eq!(blocked.to_string(), words);
}
