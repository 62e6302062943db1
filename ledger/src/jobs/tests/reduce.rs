//! Reduce jobs in virtual time: the one output is every chunk's result combined in order (the
//! harness's combine is concatenation, which notices any chunk combined twice, missed or out of
//! order), combines run on the nodes as ranges complete and restart without redoing what was
//! stored, and a combine that keeps failing fails the job with a report naming its chunks.

use std::time::Duration;

use wire::proto::{JobFailure, JobState};

use super::harness::{owner, Rng, World};
use super::{history, settle};

/// Runs the world until nothing is left, with no faults.
fn drain(world: &mut World, rng: &mut Rng) {
    settle(world, rng);
    assert!(world.all_finished(), "a reduce job never ended");
}

#[track_caller]
fn check(chunks: usize) {
    let mut rng = Rng::new(chunks as u64 + 1);
    let mut world = World::new(2);
    let job = world.submit_as(chunks, true, true);
    drain(&mut world, &mut rng);
    let summary = world.summary(job).expect("the job is known");
    assert_eq!(summary.state, JobState::Succeeded, "{chunks} chunks");
    assert_eq!(world.verdicts, 1);
    // One combine per inner node of the tree, each accepted once (the world's traps are retried).
    let combines: u32 = world.combines_run.iter().filter(|((j, _), _)| *j == job).map(|(_, n)| *n).sum();
    assert!(combines as usize >= chunks.saturating_sub(1), "{combines} combines for {chunks} chunks");
    assert_eq!(world.combines_run.len(), chunks.saturating_sub(1), "every combine of the tree ran");
}

#[test]
fn a_reduce_job_combines_every_result_once_and_in_order() {
    for chunks in [0, 1, 2, 3, 5, 8, 13] {
        check(chunks);
    }
}

#[test]
fn a_restart_in_the_middle_of_a_reduce_redoes_no_chunk_and_no_combine() {
    let mut stored_combines = 0;
    for seed in 0..40 {
        let mut rng = Rng::new(seed);
        let mut world = World::new(2);
        let job = world.submit_as(9, true, true);
        world.finish_commit(true);
        for _ in 0..10 + rng.below(20) {
            world.run_one(&mut rng);
            if rng.chance(40) {
                world.wait(Duration::from_millis(60));
                world.finish_commit(true);
            }
        }
        world.wait(Duration::from_millis(60));
        world.finish_commit(true);
        // The harness fails the run if anything in `stored_at_restart` is assigned again.
        world.restart();
        stored_combines += world.stored_at_restart.iter().filter(|(j, c)| *j == job && *c >= 9).count();
        drain(&mut world, &mut rng);
        assert_eq!(world.summary(job).expect("known").state, JobState::Succeeded, "seed {seed}");
        assert!(world.verdicts >= 1, "the reattached client heard the verdict (seed {seed})");
    }
    assert!(stored_combines > 20, "only {stored_combines} combines were durable at a restart");
}

#[test]
fn a_trapping_combine_fails_the_job_with_its_chunks_named() {
    let mut rng = Rng::new(3);
    let mut world = World::new(2);
    world.combine_traps = true;
    let job = world.submit_as(4, true, true);
    drain(&mut world, &mut rng);
    let summary = world.ledger.summary(&owner(), job).expect("known");
    let JobState::Failed(JobFailure::Other { message }) = &summary.state else {
        panic!("the job did not fail as expected: {:?}", summary.state);
    };
    assert!(message.starts_with("dispy_combine of the results of chunks "), "{message}");
    assert!(message.contains("failed after 4 attempt(s)") && message.contains("trapped"), "{message}");
}

#[test]
fn random_histories_reach_reduce_jobs_with_restarts() {
    let (mut combines, mut restarts, mut again) = (0, 0, 0);
    for seed in 100..164 {
        let world = history(seed, true);
        combines += world.combines_run.len();
        restarts += world.restarts;
        again += world.combines_assigned.values().filter(|&&n| n > 1).count();
    }
    assert!(combines > 50, "only {combines} combines ran");
    // Retried (traps), copied or rerun combines, each still combined once into the output.
    assert!(again > 10, "only {again} combines were assigned more than once");
    assert!(restarts > 10, "only {restarts} restarts");
}

