//! Reduce jobs in virtual time: the one output is every chunk's result combined in order (the
//! harness's combine is concatenation, which notices any chunk combined twice, missed or out of
//! order, and the harness fails a run that accepts any task's result twice), combines run on the
//! nodes as ranges complete, while the input is still arriving, and restart without redoing what
//! was stored, a straggling combine is copied and only one copy counts, and a combine that keeps
//! failing fails the job with a report naming its chunks.

use std::time::Duration;

use wire::proto::{JobFailure, JobState};

use super::harness::{owner, Rng, World};
use super::{history, settle};
use crate::jobs::{Caller, ClientId, Resumed, COMBINE_BASE};

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
    // n - 1 combines, each run as a task or pre-combined by a node (the world's traps are
    // retried); the harness checked each was accepted once.
    let (run, precombined) = (world.combines_run.len(), world.precombined as usize);
    assert!(run <= chunks.saturating_sub(1) && run + precombined >= chunks.saturating_sub(1), "{run} + {precombined} combines for {chunks} chunks");
}

#[test]
fn a_reduce_job_combines_every_result_once_and_in_order() {
    for chunks in [0, 1, 2, 3, 5, 8, 13] {
        check(chunks);
    }
}

#[test]
fn a_restart_in_the_middle_of_a_reduce_redoes_no_chunk_and_no_combine() {
    let (mut stored_combines, mut precombined) = (0, 0);
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
        stored_combines += world.stored_at_restart.iter().filter(|(j, c)| *j == job && *c >= COMBINE_BASE).count();
        drain(&mut world, &mut rng);
        precombined += world.precombined;
        assert_eq!(world.summary(job).expect("known").state, JobState::Succeeded, "seed {seed}");
        assert!(world.verdicts >= 1, "the reattached client heard the verdict (seed {seed})");
    }
    assert!(stored_combines > 20, "only {stored_combines} combines were durable at a restart");
    // Some of them pre-combined by a node: the chunks under them count as done after the restart.
    assert!(precombined > 5, "only {precombined} reports were pre-combined");
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
    let (mut combines, mut restarts, mut again, mut early, mut precombined) = (0, 0, 0, 0, 0);
    for seed in 100..164 {
        let world = history(seed, true);
        combines += world.combines_run.len();
        restarts += world.restarts;
        again += world.combines_assigned.values().filter(|&&n| n > 1).count();
        early += world.early_combines;
        precombined += world.precombined;
    }
    assert!(combines > 50, "only {combines} combines ran");
    assert!(precombined > 10, "only {precombined} reports were pre-combined by a node");
    assert!(early > 20, "only {early} combines were assigned while their job's input was arriving");
    // Retried (traps), copied or rerun combines, each still combined once into the output.
    assert!(again > 10, "only {again} combines were assigned more than once");
    assert!(restarts > 10, "only {restarts} restarts");
}


#[test]
fn combining_starts_before_the_input_is_complete() {
    let mut rng = Rng::new(5);
    let mut world = World::new(2);
    let job = world.submit_streaming(16, true);
    while world.summary(job).is_some_and(|s| !s.progress.input_complete) {
        world.upload_some(&mut rng);
        // Everything sent so far runs, and the blocks it completes combine.
        for _ in 0..60 {
            world.run_one(&mut rng);
            world.wait(Duration::from_millis(20));
            world.finish_commit(true);
        }
    }
    drain(&mut world, &mut rng);
    assert_eq!(world.summary(job).expect("known").state, JobState::Succeeded);
    assert!(world.combines_run.len() + world.precombined as usize >= 15, "a combine per block of 16 chunks");
    // The last upload sends at most 3 chunks: the 10 block combines within the first 13 chunks
    // at least were assigned before the input was complete.
    assert!(world.early_combines >= 10, "only {} combines were assigned early", world.early_combines);
}

#[test]
fn a_restart_during_a_reduce_upload_resumes_it_and_redoes_nothing() {
    let (mut early_durable, mut resumed) = (0, 0);
    for seed in 0..30 {
        let mut rng = Rng::new(seed);
        let mut world = World::with_grace(2, Duration::from_secs(60));
        let inputs: Vec<Vec<u8>> = (0..11u8).map(|c| vec![c, 1, c ^ 0x33]).collect();
        let (job, _) = world.begin_upload_as(inputs, true);
        let cut = 3 + rng.below(8) as usize;
        world.upload(job, 0..cut, false);
        world.wait(Duration::from_millis(60));
        world.finish_commit(true);
        for _ in 0..rng.below(40) {
            world.run_one(&mut rng);
            if rng.chance(50) {
                world.wait(Duration::from_millis(60));
                world.finish_commit(true);
            }
        }
        // The harness fails the run if anything in `stored_at_restart` is assigned again.
        world.restart();
        early_durable += world.stored_at_restart.iter().filter(|(j, c)| *j == job && *c >= COMBINE_BASE).count();
        let caller = Caller { name: owner().name, operator: false };
        let Some(Ok(Resumed { stored, complete: false })) = resume_upload(&mut world, job, &caller) else {
            panic!("the upload of job {job} did not resume (seed {seed})");
        };
        resumed += 1;
        // The resumed upload grows the same forest: the combines already known keep their work.
        world.upload(job, stored as usize..11, true);
        drain(&mut world, &mut rng);
        assert_eq!(world.summary(job).expect("known").state, JobState::Succeeded, "seed {seed}");
    }
    assert_eq!(resumed, 30);
    assert!(early_durable > 10, "only {early_durable} combines were durable at a restart mid-upload");
}

/// Resumes `job`'s upload, letting the journal commit until the answer comes.
fn resume_upload(world: &mut World, job: wire::proto::JobId, caller: &Caller) -> Option<Result<Resumed, String>> {
    let early = world.resume(job, ClientId(9_999), caller);
    let request = world.last_request();
    early.or_else(|| {
        for _ in 0..3 {
            world.wait(Duration::from_millis(60));
            world.finish_commit(true);
        }
        world.resume_answer(request)
    })
}

#[test]
fn a_straggling_combine_is_copied_and_only_one_copy_counts() {
    let mut copied = 0;
    for seed in 0..10 {
        let mut rng = Rng::new(seed);
        let mut world = World::new(2);
        // No chance traps: a copy that failed would not be copied again on the only other node.
        world.random_traps = false;
        let job = world.submit_as(8, true, true);
        // Both nodes run until node 0 holds a combine; then node 0 stalls (it still beats).
        let mut straggler = None;
        for _ in 0..2_000 {
            straggler = world.queued(0).into_iter().find(|&(_, j, task)| j == job && task >= COMBINE_BASE);
            if straggler.is_some() {
                break;
            }
            world.run_one(&mut rng);
            world.wait(Duration::from_millis(10));
            world.finish_commit(true);
        }
        let (_, _, combine) = straggler.expect("node 0 was assigned a combine");
        for _ in 0..400 {
            if world.all_finished() && !world.committing() {
                break;
            }
            world.run_on(1, &mut rng);
            world.wait(Duration::from_millis(50));
            world.finish_commit(true);
        }
        assert_eq!(world.summary(job).expect("known").state, JobState::Succeeded, "seed {seed}");
        assert!(world.queued(0).is_empty(), "node 0's straggling attempts were cancelled once the copies won");
        copied += usize::from(world.combines_assigned[&(job, combine)] >= 2);
        // The harness checked the output against the serial reference and that no task's
        // result was accepted twice.
        assert_eq!(world.verdicts, 1);
    }
    assert_eq!(copied, 10, "the straggling combine was copied on node 1 every time");
}

#[test]
fn a_pre_combined_report_counts_each_chunk_and_its_combine_once() {
    let mut rng = Rng::new(2);
    let mut world = World::new(2);
    world.random_traps = false;
    let job = world.submit_as(12, true, true);
    // Pairs are placed together: node 0 holds chunks 0 and 1.
    let attempt = |world: &World, chunk| world.queued(0).iter().find(|&&(_, j, c)| j == job && c == chunk).map(|&(a, ..)| a);
    let (Some(a0), Some(a1)) = (attempt(&world, 0), attempt(&world, 1)) else {
        panic!("chunks 0 and 1 are not both on node 0: {:?}", world.queued(0));
    };
    world.report_precombined(0, job, 0, (a0, a1));
    assert_eq!(world.summary(job).expect("known").progress.done, 2, "both chunks are done");
    // The same report again (its acknowledgement was lost): dropped, as the harness checks.
    world.report_precombined(0, job, 0, (a0, a1));
    assert_eq!(world.summary(job).expect("known").progress.done, 2);
    drain(&mut world, &mut rng);
    assert_eq!(world.summary(job).expect("known").state, JobState::Succeeded);
    assert!(!world.combines_run.contains_key(&(job, COMBINE_BASE)), "the pre-combined block was combined again");
}

#[test]
fn a_pre_combined_report_after_a_copy_won_counts_each_chunk_once() {
    for seed in 0..6 {
        let mut rng = Rng::new(seed);
        let mut world = World::new(2);
        // Node 1 reports each copy on its own, so chunk 0's copy can win alone.
        (world.random_traps, world.node_precombines) = (false, false);
        let job = world.submit_as(12, true, true);
        let held = |world: &World, n: usize, chunk| world.queued(n).iter().find(|&&(_, j, c)| j == job && c == chunk).map(|&(a, ..)| a);
        let (Some(left), Some(right)) = (held(&world, 0, 0), held(&world, 0, 1)) else {
            panic!("chunks 0 and 1 are not both on node 0: {:?}", world.queued(0));
        };
        // Node 0 stalls (it still beats): its chunks are copied to node 1, which runs them,
        // except a copy of chunk 1 left waiting, until its copy of chunk 0 has won.
        for _ in 0..400 {
            if held(&world, 0, 0).is_none() {
                break;
            }
            if world.queued(1).first().map(|&(_, _, c)| c) != Some(1) {
                world.run_on(1, &mut rng);
            }
            world.wait(Duration::from_millis(50));
            world.finish_commit(true);
        }
        assert!(held(&world, 0, 0).is_none() && held(&world, 0, 1).is_some(), "seed {seed}: chunk 0's copy never won alone: node 0 {:?}, node 1 {:?}", world.queued(0), world.queued(1));
        // Node 0 had run both before it heard of the cancel, and pre-combined them: chunk 1 is
        // done once, by this report, and the block's combine is its result.
        world.report_precombined(0, job, 0, (left, right));
        drain(&mut world, &mut rng);
        let summary = world.summary(job).expect("known");
        assert_eq!((summary.state, summary.progress.done), (JobState::Succeeded, 12), "seed {seed}");
        assert!(!world.combines_run.contains_key(&(job, COMBINE_BASE)), "seed {seed}: the pre-combined block was combined again");
    }
}
