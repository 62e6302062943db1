//! The job ledger's promises in virtual time, over random histories: nothing is promised before
//! it is durable; every accepted result reaches every attached client once and in chunk order; a
//! failed commit fails the jobs it carried; a restart from any journal state resumes without
//! rerunning stored chunks; a reduce job's one result combines every chunk's, once each and in
//! order, and nothing stored (chunk or combine) is done again after a restart. The [`harness`] checks each promise as the ledger keeps it.

use std::time::Duration;

use proptest::prelude::*;

mod desk;
mod harness;
mod holds;
mod observations;
mod observe;
mod payloads;
mod reduce;
mod resume;
mod tenants;

use harness::{Rng, World};

/// One random history from `seed`: jobs arrive, nodes run chunks (some fail), commits finish
/// late or fail, clients ask, time passes, the dispatcher crashes and restarts; then the world
/// settles with no more faults and every job must end.
fn history(seed: u64, faults: bool) -> World {
    let mut rng = Rng::new(seed);
    let mut world = World::new(2 + rng.below(2) as usize);
    for _ in 0..1 + rng.below(3) {
        world.submit_as(1 + rng.below(6) as usize, rng.chance(70), rng.chance(30));
    }
    // An upload that takes its time: a reduce job's combines start before its input is complete.
    if rng.chance(50) {
        world.submit_streaming(2 + rng.below(12) as usize, rng.chance(70));
    }
    for _ in 0..300 {
        match rng.below(100) {
            0..=39 => world.run_one(&mut rng),
            40..=64 => {
                let durable = !faults || !rng.chance(10);
                world.finish_commit(durable);
            }
            65..=79 => world.wait(Duration::from_millis(rng.below(60))),
            80..=87 => world.ask(rng.next()),
            88..=91 => {
                world.submit_as(rng.below(5) as usize, rng.chance(50), rng.chance(30));
            }
            92 if faults && world.restarts < 3 => world.restart(),
            93..=94 => world.release(rng.next()),
            95..=97 => world.upload_some(&mut rng),
            _ => world.wait(Duration::from_millis(5)),
        }
    }
    settle(&mut world, &mut rng);
    assert!(world.all_finished(), "a job never ended (seed {seed})");
    world
}

/// No more faults: commits succeed, every chunk runs, time passes until every job has ended
/// (or a bound passes, for the caller to notice).
fn settle(world: &mut World, rng: &mut Rng) {
    for _ in 0..5_000 {
        if world.all_finished() && !world.committing() {
            break;
        }
        world.upload_some(rng);
        world.finish_commit(true);
        world.run_one(rng);
        world.wait(Duration::from_millis(10));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_histories_keep_the_ledger_promises(seed in any::<u64>()) {
        history(seed, true);
    }
}

#[test]
fn a_quiet_history_ends_every_job_with_every_result() {
    for seed in 1..20 {
        let world = history(seed, false);
        assert_eq!(world.restarts, 0);
    }
}

#[test]
fn a_restart_keeps_what_was_stored_and_runs_only_the_rest() {
    let mut rng = Rng::new(7);
    let mut world = World::new(2);
    world.submit(6, true);
    world.finish_commit(true);
    for _ in 0..4 {
        world.run_one(&mut rng);
    }
    // Results nobody waits for are held back a while before they are committed.
    world.wait(Duration::from_millis(60));
    world.finish_commit(true);
    world.restart();
    assert!(!world.stored_at_restart.is_empty(), "some results were durable before the crash");
    settle(&mut world, &mut rng);
    assert!(world.all_finished());
    assert!(world.verdicts >= 1, "the reattached client heard the verdict");
}

#[test]
fn histories_reach_the_cases_they_are_meant_to_check() {
    let (mut restarts, mut verdicts, mut stored, mut released, mut logged) = (0, 0, 0, 0, 0);
    for seed in 0..64 {
        let world = history(seed, true);
        restarts += world.restarts;
        verdicts += world.verdicts;
        stored += world.stored_at_restart.len();
        released += world.released_count();
        logged += world.logs.values().map(Vec::len).sum::<usize>();
    }
    assert!(released > 10, "only {released} jobs were released");
    assert!(logged > 100, "only {logged} attempt logs were stored");
    assert!(restarts > 10, "only {restarts} restarts");
    assert!(verdicts > 50, "only {verdicts} verdicts reached followers");
    assert!(stored > 10, "only {stored} chunks were durable at a restart");
}
