//! Tenant tests: fair share between tenants (alternation, weights, priority kept within a
//! tenant), the slot share cap and its [`Blocked`](super::super::Blocked) words, and the issue's
//! scenario of a small job arriving behind a huge one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wire::proto::{AttemptId, JobId};

use super::super::sim::{req, Sim};
use super::super::{JobRequirements, Scheduler, SchedulerConfig, TenantShare, TenantShares};
use super::{check_actions, config, ms, no_speculation, resources, N1, N2, N3};

/// Requirements of a job of `tenant` at `priority`.
fn owned(tenant: &str, priority: i32) -> JobRequirements {
    JobRequirements { tenant: tenant.to_owned(), priority, ..req() }
}

/// Shares giving these tenants these weights and slot shares; others get the default.
fn shares(named: &[(&str, u32, f64)]) -> TenantShares {
    let by_name: HashMap<String, TenantShare> = named
        .iter()
        .map(|&(name, weight, max_slot_share)| (name.to_owned(), TenantShare { weight, max_slot_share }))
        .collect();
    TenantShares { by_name, ..TenantShares::default() }
}

/// Submits a job with `chunks` chunks and its input complete.
fn submit(s: &mut Scheduler, now: Instant, job: JobId, req: JobRequirements, chunks: u64) {
    s.handle_job_submitted(now, job, req);
    s.handle_chunks_added(now, job, chunks);
    s.handle_input_complete(now, job);
}

/// Finishes attempts on n1 in order, checking what each finish makes the scheduler do.
#[track_caller]
fn finish_in_turn(s: &mut Scheduler, now: Instant, steps: &[(u64, &str)]) {
    for &(attempt, expect) in steps {
        assert!(s.handle_chunk_succeeded(now, N1, AttemptId(attempt)).is_some(), "a{attempt}");
        check_actions(s, expect);
    }
}

/// A freed slot alternates between two equal tenants, however many jobs each has: alice's two
/// jobs together get what bob's one gets.
#[test]
fn equal_tenants_alternate_on_a_freed_slot() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    submit(&mut s, now, JobId(1), owned("alice", 0), 2);
    submit(&mut s, now, JobId(2), owned("alice", 0), 2);
    submit(&mut s, now, JobId(3), owned("bob", 0), 3);
    s.handle_node_joined(now, N1, resources("n1", 1));
    check_actions(&mut s, "start-job n1 j1\nassign n1 j1 c0 a1");
    finish_in_turn(
        &mut s,
        now,
        &[
            (1, "start-job n1 j3\nassign n1 j3 c0 a2"),
            (2, "start-job n1 j2\nassign n1 j2 c0 a3"),
            (3, "assign n1 j3 c1 a4"),
            (4, "assign n1 j1 c1 a5"),
            (5, "end-job n1 j1\nsucceeded j1\nassign n1 j3 c2 a6"),
            (6, "end-job n1 j3\nsucceeded j3\nassign n1 j2 c1 a7"),
            (7, "end-job n1 j2\nsucceeded j2"),
        ],
    );
}

/// Priority orders alice's own jobs, but her high-priority job does not take bob's turns.
#[test]
fn priority_orders_a_tenants_jobs_but_not_other_tenants() {
    let now = Instant::now();
    let mut s = Scheduler::new(config(0));
    submit(&mut s, now, JobId(1), owned("alice", 0), 1);
    submit(&mut s, now, JobId(2), owned("alice", 9), 2);
    submit(&mut s, now, JobId(3), owned("bob", 0), 2);
    s.handle_node_joined(now, N1, resources("n1", 1));
    check_actions(&mut s, "start-job n1 j2\nassign n1 j2 c0 a1");
    finish_in_turn(
        &mut s,
        now,
        &[
            (1, "start-job n1 j3\nassign n1 j3 c0 a2"),
            (2, "assign n1 j2 c1 a3"),
            (3, "end-job n1 j2\nsucceeded j2\nassign n1 j3 c1 a4"),
            (4, "end-job n1 j3\nsucceeded j3\nstart-job n1 j1\nassign n1 j1 c0 a5"),
            (5, "end-job n1 j1\nsucceeded j1"),
        ],
    );
}

/// Weights 3:1 split contended positions 3:1, at the first fill and as chunks finish.
#[test]
fn weights_split_positions_under_contention() {
    let config = SchedulerConfig { tenants: shares(&[("alice", 3, 1.0), ("bob", 1, 1.0)]), ..config(0) };
    let mut sim = Sim::with_config(config);
    let alice = sim.submit_chunks(owned("alice", 0), 400);
    let bob = sim.submit_chunks(owned("bob", 0), 400);
    sim.add_node(8);
    let running = |sim: &Sim| {
        let of = |job| sim.sched.progress(job).map_or(0, |p| p.running);
        (of(alice), of(bob))
    };
    assert_eq!(running(&sim), (6, 2));
    for _ in 0..20 {
        sim.run_for(ms(7));
        assert_eq!(running(&sim), (6, 2));
    }
    let placed = |job| sim.assigned(sim.node_ids()[0]).iter().filter(|&&(j, _)| j == job).count();
    let (a, b) = (placed(alice), placed(bob));
    assert!(a == 3 * b, "alice placed {a}, bob {b}");
}

/// A capped tenant holds at most its share of the slots of the nodes taking work; a job of hers
/// that waits only for the cap says so; a node joining raises the cap and places it at once.
#[test]
fn slot_share_caps_a_tenant_and_frees_as_nodes_join() {
    let now = Instant::now();
    let config = SchedulerConfig { tenants: shares(&[("alice", 1, 0.5)]), ..no_speculation(0) };
    let mut s = Scheduler::new(config);
    s.handle_node_joined(now, N1, resources("n1", 4));
    s.handle_node_joined(now, N2, resources("n2", 4));
    submit(&mut s, now, JobId(1), owned("alice", 0), 100);
    submit(&mut s, now, JobId(2), owned("alice", 5), 100);
    submit(&mut s, now, JobId(3), owned("bob", 0), 100);
    let running = |s: &Scheduler, job| s.progress(JobId(job)).map_or(0, |p| p.running);
    // Half of 8 slots for alice, all of it taken by her first job; bob takes the rest.
    assert_eq!((running(&s, 1), running(&s, 2), running(&s, 3)), (4, 0, 4));
    let words = "2 connected, 2 eligible, tenant alice is at its slot share: 4 of 8 slots \
                 (max_slot_share 0.5)";
    assert_eq!(s.blocked_reason(JobId(2)).map(|b| b.to_string()).as_deref(), Some(words));
    assert_eq!(s.blocked_reason(JobId(2)).and_then(|b| b.slot_share).map(|c| c.cap), Some(4));
    // A freed slot of alice's goes to her higher-priority job; the cap still holds.
    let alices = (1..=4).find(|&a| s.handle_chunk_succeeded(now, N1, AttemptId(a)) == Some((JobId(1), 0)));
    assert!(alices.is_some());
    assert_eq!((running(&s, 1), running(&s, 2), running(&s, 3)), (3, 1, 4));
    // 12 slots: alice may hold 6; the new node's room goes to her at once.
    s.handle_node_joined(now, N3, resources("n3", 4));
    assert_eq!(running(&s, 1) + running(&s, 2), 6);
    assert_eq!(running(&s, 3), 6, "bob has the rest");
    assert_eq!(s.blocked_reason(JobId(2)), None);
    s.check_invariants(now);
}

/// The scenario: alice's 10,000-chunk job fills the cluster when bob submits 10 chunks.
/// Bob's chunks take the next positions that free up (his usage is 0), so his first chunk starts
/// once a position frees and the chunk queued ahead of his there has run: within two chunk
/// durations with one queued chunk per slot (what `pipeline_budget` gives long chunks). His job
/// ends a few chunk durations later (his 10 chunks on 8 slots are two rounds, each behind one
/// queued chunk of hers), while hers runs on for seconds.
#[test]
fn a_small_job_is_not_stuck_behind_another_tenants_huge_one() {
    let config = SchedulerConfig { pipeline_budget: Some(ms(2)), ..config(2) };
    let mut sim = Sim::with_config(config);
    for _ in 0..4 {
        sim.add_node(2);
    }
    let alice = sim.submit_chunks(owned("alice", 0), 10_000);
    sim.run_for(Duration::from_millis(1_003));
    let submitted = sim.now;
    let bob = sim.submit_chunks(owned("bob", 0), 10);
    let chunk = sim.run_time;
    sim.drive();
    assert_eq!((sim.outcome(alice), sim.outcome(bob)), (Some(&Ok(())), Some(&Ok(()))));
    let first = sim.first_started(bob).map(|at| at - submitted);
    assert!(first.is_some_and(|wait| wait <= 2 * chunk), "bob's first chunk waited {first:?}");
    let bob_done = sim.ended_at(bob).map(|at| at - submitted);
    assert!(bob_done.is_some_and(|took| took <= 5 * chunk), "bob's job took {bob_done:?}");
    let alice_left = sim.ended_at(alice).map(|at| at - submitted);
    assert!(alice_left.is_some_and(|left| left > Duration::from_secs(10)), "{alice_left:?}");
    sim.check_final();
}
