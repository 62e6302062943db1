//! Scheduler tests: exact action traces for direct calls, scenarios through the virtual-time
//! [`Sim`] harness, and property tests over random cluster histories, one file per concern. This
//! file holds the helpers they share.

use std::time::{Duration, Instant};

use wire::proto::JobId;

use super::sim::{render, req, Sim, GIB};
use super::{NodeId, NodeResources, Scheduler, SchedulerConfig};

mod eligibility;
mod failures;
mod held;
mod liveness;
mod placement;
mod properties;
mod reattach;
mod speculation;
mod tenants;

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

/// Drains the scheduler's actions and notices and compares them, one per line in the order they
/// were emitted, with `expect`.
#[track_caller]
fn check_actions(s: &mut Scheduler, expect: &str) {
    let got: Vec<String> = std::iter::from_fn(|| s.poll_output()).map(|o| render(&o)).collect();
    assert_eq!(got.join("\n"), lines(expect).join("\n"));
}

/// Compares the sim's actions since the last trace, one `[time] action` per line, with `expect`.
#[track_caller]
fn check_trace(sim: &mut Sim, expect: &str) {
    let got = sim.take_trace();
    assert_eq!(lines(&got).join("\n"), lines(expect).join("\n"));
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
