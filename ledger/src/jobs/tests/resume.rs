//! Cut-off uploads in virtual time: a job whose input was still arriving when the dispatcher
//! restarted (or its submitter's connection dropped) keeps its durable chunks and waits for its
//! owner to resume the upload from the last of them, then runs to the end with every result in
//! order; nobody else may resume it, nor two connections at once; unresumed, it fails after the
//! input grace with the reason.

use std::time::Duration;

use wire::proto::{JobFailure, JobState};

use super::harness::{owner, Rng, World};
use super::settle;
use crate::jobs::{Caller, ClientId, Resumed};

const GRACE: Duration = Duration::from_secs(60);

fn inputs(chunks: u8) -> Vec<Vec<u8>> {
    (0..chunks).map(|c| vec![c, 3, c ^ 0x55]).collect()
}

/// Lets every gathered change become durable.
fn commit_all(world: &mut World) {
    for _ in 0..3 {
        world.wait(Duration::from_millis(60));
        world.finish_commit(true);
    }
}

/// Resumes `job`'s upload and returns the answer, letting the journal commit until it comes.
fn resume(world: &mut World, job: wire::proto::JobId, client: u64, caller: &Caller) -> Option<Result<Resumed, String>> {
    let early = world.resume(job, ClientId(client), caller);
    let request = world.last_request();
    early.or_else(|| {
        commit_all(world);
        world.resume_answer(request)
    })
}

#[track_caller]
fn check_resumed(answer: Option<Result<Resumed, String>>, stored: u64) {
    assert_eq!(answer, Some(Ok(Resumed { stored, complete: false })));
}

#[test]
fn an_upload_cut_by_a_restart_resumes_after_the_last_durable_chunk() {
    let mut rng = Rng::new(3);
    let mut world = World::with_grace(2, GRACE);
    let (job, _) = world.begin_upload(inputs(8));
    world.upload(job, 0..5, false);
    commit_all(&mut world);
    // Two more chunks arrive, but the dispatcher dies before they are durable.
    world.upload(job, 5..7, false);
    world.restart();

    let summary = world.summary(job).expect("the job survives the restart");
    assert_eq!(summary.state, JobState::Running);
    assert_eq!((summary.progress.total, summary.progress.stored, summary.progress.input_complete), (5, 5, false));
    assert!(summary.progress.attempts >= summary.progress.done, "{summary:?}");

    // Someone else cannot take the upload over; its owner resumes from chunk 5.
    let mallory = Caller { name: "mallory".into(), operator: false };
    let refused = world.resume(job, ClientId(900), &mallory);
    assert!(matches!(&refused, Some(Err(e)) if e.contains("no job")), "{refused:?}");
    check_resumed(world.resume(job, ClientId(901), &owner()), 5);
    // A second connection cannot resume it while the first uploads.
    let busy = world.resume(job, ClientId(902), &owner());
    assert!(matches!(&busy, Some(Err(e)) if e.contains("still being received")), "{busy:?}");

    world.upload(job, 5..8, true);
    settle(&mut world, &mut rng);
    let summary = world.summary(job).expect("the job is remembered until fetched");
    assert_eq!(summary.state, JobState::Succeeded, "{summary:?}");
    assert_eq!(summary.progress.done, 8);
    assert!(summary.progress.attempts >= 8, "{summary:?}");
    assert!(world.verdicts >= 1, "the reattached follower got every result in order and the verdict");
}

#[test]
fn an_upload_cut_by_a_lost_connection_resumes_once_what_arrived_is_durable() {
    let mut rng = Rng::new(5);
    let mut world = World::with_grace(2, GRACE);
    let (job, _) = world.begin_upload(inputs(6));
    world.upload(job, 0..3, false);
    world.cut_upload(job);
    // The answer waits for the commit that makes the three chunks durable.
    let answer = resume(&mut world, job, 903, &owner());
    check_resumed(answer, 3);
    world.upload(job, 3..6, true);
    settle(&mut world, &mut rng);
    assert_eq!(world.summary(job).map(|s| s.state), Some(JobState::Succeeded));
}

#[test]
fn an_upload_not_resumed_within_the_grace_fails_the_job_with_the_reason() {
    let mut world = World::with_grace(2, GRACE);
    let (job, _) = world.begin_upload(inputs(6));
    world.upload(job, 0..2, false);
    commit_all(&mut world);
    world.restart();
    world.wait(GRACE - Duration::from_secs(1));
    assert_eq!(world.summary(job).map(|s| s.state), Some(JobState::Running), "failed before the grace ended");
    world.wait(Duration::from_secs(2));
    let Some(JobState::Failed(JobFailure::Other { message })) = world.summary(job).map(|s| s.state) else {
        panic!("the job did not fail after the grace: {:?}", world.summary(job));
    };
    assert!(message.contains("restarted before the job's input was complete"), "{message}");
}

#[test]
fn a_finished_job_answers_a_resume_with_no_more_input_wanted() {
    let mut rng = Rng::new(9);
    let mut world = World::with_grace(2, GRACE);
    let (job, _) = world.begin_upload(inputs(3));
    world.upload(job, 0..3, true);
    settle(&mut world, &mut rng);
    let answer = resume(&mut world, job, 904, &owner());
    assert_eq!(answer, Some(Ok(Resumed { stored: 3, complete: true })));
}
