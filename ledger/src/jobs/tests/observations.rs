//! Observations in virtual time: every chunk with an accepted, stored result is observed
//! completed once, every chunk's first placement and input once, and the failures observed as
//! retried are the retries each job's progress counts; a released job leaves as it last was.

use std::time::Duration;

use super::harness::{Rng, World};
use crate::jobs::Observation;

#[test]
fn observations_count_each_chunk_once_and_every_retry() {
    let (mut failures, mut retried) = (0, 0);
    for seed in 0..24 {
        let mut rng = Rng::new(seed);
        let mut world = World::new(2);
        world.submit(5, true);
        world.submit(3, false);
        let mut seen = Vec::new();
        for _ in 0..5_000 {
            if world.all_finished() && !world.committing() {
                break;
            }
            world.finish_commit(true);
            world.run_one(&mut rng);
            world.wait(Duration::from_millis(10));
            while let Some(observation) = world.ledger.poll_observation() {
                seen.push(observation);
            }
        }
        assert!(world.all_finished(), "seed {seed}: a job never ended");
        let views = world.ledger.job_views();
        assert_eq!(views.len(), 2, "finished jobs stay listed for the retention");
        let count = |pick: fn(&Observation) -> bool| seen.iter().filter(|o| pick(o)).count() as u64;
        let done: u64 = views.iter().map(|v| v.summary.progress.done).sum();
        assert_eq!(count(|o| matches!(o, Observation::ChunkCompleted { .. })), done, "seed {seed}");
        assert_eq!(count(|o| matches!(o, Observation::InputStored { bytes: 4 })), 8, "seed {seed}");
        assert_eq!(count(|o| matches!(o, Observation::Placed { .. })), 8, "seed {seed}: every chunk placed once");
        for view in &views {
            assert!(view.finished_unix_ms.is_some(), "seed {seed}: job {} ended", view.summary.job);
            let job = view.summary.job;
            let retries = seen
                .iter()
                .filter(|o| matches!(o, Observation::AttemptFailed(f) if f.job == job && f.retried))
                .count() as u64;
            assert_eq!(retries, view.summary.progress.retries, "seed {seed}: job {job}");
        }
        failures += count(|o| matches!(o, Observation::AttemptFailed(f) if f.message == "trapped" && f.node.starts_with("node-")));
        // Released (their results fetched), the jobs stay listed, record and logs, until they expire.
        for view in &views {
            world.ledger.handle_release(&super::harness::owner(), view.summary.job);
        }
        assert_eq!(world.ledger.job_views().len(), 2, "seed {seed}: released jobs stay for the retention");
        retried += views.iter().map(|v| v.summary.progress.retries).sum::<u64>();
    }
    assert!(failures > 5 && retried > 5, "the histories reach failures ({failures}) and retries ({retried})");
}
