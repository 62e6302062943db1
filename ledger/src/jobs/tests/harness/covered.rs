//! What a restart must not redo beyond the stored results: the chunks and combines under a
//! durable combine of a reduce job, which a node's pre-combine leaves without results of their
//! own (see `crate::jobs::reduce`).

use std::collections::HashSet;

use wire::proto::{ChunkIndex, JobId, ResultMode};

use super::super::super::reduce::Forest;
use super::World;

impl World {
    /// The tasks under a durable combine of a reduce job, from what the journal holds.
    pub(super) fn covered_by_durable_combines(&self) -> HashSet<(JobId, ChunkIndex)> {
        let mut covered = HashSet::new();
        for (&job, record) in &self.durable.jobs {
            if record.submission.results != ResultMode::Reduce {
                continue;
            }
            let forest = Forest::over(record.chunks, record.input_complete);
            // Children come before their parents: walking down reaches every covered task.
            for task in forest.combine_tasks().rev() {
                if self.durable.results.contains_key(&(job, task)) || covered.contains(&(job, task)) {
                    let (left, right) = forest.children(task).expect("a combine has two inputs");
                    covered.extend([(job, left), (job, right)]);
                }
            }
        }
        covered
    }
}
