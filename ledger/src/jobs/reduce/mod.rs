//! Reduce jobs (`results = "reduce"`): every chunk's result is combined, on the nodes, with the
//! payload's `dispy_combine` into one result, adjacent ranges only and left before right.
//!
//! A reduce job's combines form a [`Forest`] that grows as its chunks arrive: a combine joins
//! both halves of an aligned power-of-two block of chunks as soon as they have arrived, and once
//! the input is complete the remaining peaks (at most `log2 n + 1`) are joined left before
//! right (see `forest`). Each combine is a *combine task*, a chunk of the job with an index
//! beyond any input chunk's ([`COMBINE_BASE`]` + c`, numbered in the order combines become
//! known) whose input is the two results it joins and which a node runs with `dispy_combine`
//! instead of `dispy_run`. The scheduler knows combines as chunks *held* until both their inputs
//! are stored ([`crate::scheduler::Scheduler::handle_chunks_held`]); a result made *durable*
//! (journaled) releases its parent when its sibling is durable too, so combining proceeds
//! tree-wise as ranges complete, while the input is still arriving, and the root's result, the
//! job's output, is stored moments after the last chunk's (once the input is complete, a batch
//! holding a reduce job's results commits as promptly as one a client waits for). Waiting for durability costs a
//! commit per level and buys simple restarts: a combine a node still runs after a dispatcher
//! restart always has durable inputs, so the restarted dispatcher adopts it when the node claims
//! it, and nothing is combined twice. Placement, retries, timeouts, speculation, node loss and
//! the one-accepted-result rule are the scheduler's, as for any chunk: each result is combined
//! exactly once. A combine's result is journaled as the result of its task index (the journal's
//! result rows need no change), so a restarted dispatcher restores every stored partial, reruns
//! nothing stored and holds again the combines whose inputs are not both stored. The forest
//! depends only on the number of chunks journaled and whether the input is complete, so a task
//! index means the same work in every lifetime of the dispatcher (an upload resumed after a
//! restart grows the same forest), and a node's claim of a combine attempt after a restart
//! adopts the right work. Partials a combine consumed stay in the spool until the job is
//! released (they are small next to the inputs, and keeping them makes restarts trivially safe).
//! A node that ran both chunks of a smallest block may report them pre-combined, as the block
//! combine's result (see `precombined`).

use std::collections::{BTreeMap, HashSet};

use wire::proto::{ChunkIndex, JobFailure, JobId, ResultMode};

use super::entries::JobEntry;
use super::{Ledger, Time};
use crate::record::{Batch, Extent};
use crate::scheduler::ExtraChunk;

mod forest;
mod precombined;

pub(crate) use forest::Forest;
pub use forest::{reduce_output_task, COMBINE_BASE};

impl JobEntry {
    /// Whether the job reduces its results.
    pub(super) fn reduces(&self) -> bool {
        self.record.submission.results == ResultMode::Reduce
    }

    /// Where the result of `task` (a chunk, or a reduce job's combine) is spooled, if stored.
    pub(super) fn result_of(&self, task: ChunkIndex) -> Option<Extent> {
        match task.checked_sub(COMBINE_BASE) {
            Some(c) => self.partials.get(c as usize).copied().flatten(),
            None => self.results.get(task as usize).copied().flatten(),
        }
    }

    /// The slot of the result of `task`; `None` for a task the job does not have.
    pub(super) fn result_slot(&mut self, task: ChunkIndex) -> Option<&mut Option<Extent>> {
        match task.checked_sub(COMBINE_BASE) {
            Some(c) => self.partials.get_mut(c as usize),
            None => self.results.get_mut(task as usize),
        }
    }

    /// Every stored result, chunks' and combines'.
    pub(super) fn stored_results(&self) -> impl Iterator<Item = &Extent> {
        self.results.iter().chain(&self.partials).flatten()
    }

    /// The result at position `index` of the job's output stream: the chunk's result, or for a
    /// reduce job only the root's at position 0 (once the input is complete and it is stored).
    pub(super) fn output_at(&self, index: u64) -> Option<Extent> {
        if !self.reduces() {
            return self.results.get(index as usize).copied().flatten();
        }
        let root = self.forest.as_ref()?.root()?;
        if index != 0 {
            return None;
        }
        self.result_of(root)
    }

    /// Derives a restored reduce job's forest from its chunks and whether its input is
    /// complete, sizing the slots of its combines' results.
    pub(super) fn regrow_forest(&mut self) {
        let forest = Forest::over(self.record.chunks, self.record.input_complete);
        self.partials = vec![None; forest.combine_count() as usize];
        self.forest = Some(forest);
    }

    /// Whether combine `task`'s two inputs are durable.
    fn inputs_durable(&self, task: ChunkIndex) -> bool {
        let Some(forest) = &self.forest else { return false };
        forest.children(task).is_some_and(|(l, r)| self.durable.contains(&l) && self.durable.contains(&r))
    }

    /// The tasks under a stored combine of a reduce job: done, though a node's pre-combine
    /// (see `precombined`) left the chunks it covered without a result of their own.
    pub(super) fn covered_tasks(&self) -> HashSet<ChunkIndex> {
        let Some(forest) = &self.forest else { return HashSet::new() };
        let mut covered = HashSet::new();
        // Children come before their parents: walking down from the last combine reaches every
        // task under a stored one.
        for task in forest.combine_tasks().rev() {
            if self.result_of(task).is_some() || covered.contains(&task) {
                covered.extend(forest.children(task).map(<[ChunkIndex; 2]>::from).into_iter().flatten());
            }
        }
        covered
    }

    /// Where each combine of a restored reduce job stands: done (stored or covered), ready (its
    /// inputs are durable) or held.
    pub(super) fn restored_combines(&self, covered: &HashSet<ChunkIndex>) -> BTreeMap<ChunkIndex, ExtraChunk> {
        let Some(forest) = &self.forest else { return BTreeMap::new() };
        let state = |task: ChunkIndex| {
            if self.result_of(task).is_some() || covered.contains(&task) {
                ExtraChunk::Done
            } else if self.inputs_durable(task) {
                ExtraChunk::Ready
            } else {
                ExtraChunk::Held
            }
        };
        forest.combine_tasks().map(|t| (t, state(t))).collect()
    }
}

/// Reduce jobs' results between their store and their release of a combine.
#[derive(Debug, Default)]
pub(super) struct Partials {
    /// Results of reduce jobs in the batch being committed.
    in_flight: Vec<(JobId, ChunkIndex)>,
    /// Results of reduce jobs made durable since the last turn ended: each may release its
    /// parent combine.
    durable: Vec<(JobId, ChunkIndex)>,
    /// How many of the gathering batch's results [`Ledger::partials_waiting`] has looked at, and
    /// whether one of them lets a combine wait for it: each result is looked at once, not at
    /// every turn (a batch of a fast job holds thousands).
    checked: usize,
    waiting: bool,
}

impl Ledger {
    /// The batch about to be committed: its results of reduce jobs are remembered, to release
    /// combines once it is durable.
    pub(super) fn partials_sent(&mut self, batch: &Batch) {
        self.partials.checked = 0;
        self.partials.waiting = false;
        let jobs = &self.jobs;
        self.partials.in_flight = batch
            .results
            .iter()
            .filter(|(job, _, _)| jobs.get(job).is_some_and(JobEntry::reduces))
            .map(|(job, chunk, _)| (*job, *chunk))
            .collect();
    }

    /// The batch being committed is durable (`true`) or failed (its jobs fail).
    pub(super) fn partials_committed(&mut self, durable: bool) {
        let in_flight = std::mem::take(&mut self.partials.in_flight);
        if durable {
            for &(job, chunk) in &in_flight {
                if let Some(entry) = self.jobs.get_mut(&job) {
                    entry.durable.insert(chunk);
                }
            }
            self.partials.durable.extend(in_flight);
        }
    }

    /// Whether a combine waits for the gathering batch: it holds a result of a reduce job whose
    /// input is complete and whose sibling is stored too. A result whose sibling has not arrived
    /// or still runs can wait for the usual spacing, and so can the results of a job whose input
    /// still arrives: its early combines are not what its output waits for, and committing at
    /// the short spacing all along its upload would cost many more syncs.
    pub(super) fn partials_waiting(&mut self) -> bool {
        let fresh = self.batch.results.get(self.partials.checked..).unwrap_or_default();
        let jobs = &self.jobs;
        let waits = fresh.iter().any(|(job, task, _)| {
            let Some(entry) = jobs.get(job).filter(|e| e.record.input_complete) else { return false };
            let Some(forest) = &entry.forest else { return false };
            let Some((left, right)) = forest.parent(*task).and_then(|p| forest.children(p)) else { return false };
            let sibling = if left == *task { right } else { left };
            entry.result_of(sibling).is_some()
        });
        self.partials.checked = self.batch.results.len();
        self.partials.waiting |= waits;
        self.partials.waiting
    }

    /// Releases the combines whose inputs became durable.
    pub(super) fn release_combines(&mut self, now: Time) {
        for (job, task) in std::mem::take(&mut self.partials.durable) {
            self.reduce_stored(now, job, task);
        }
    }

    /// A reduce job's chunk arrived (the scheduler knows it): the block combines it completes
    /// are known to the scheduler, held until their inputs are durable.
    pub(super) fn reduce_input(&mut self, now: Time, job: JobId) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let Some(forest) = entry.forest.as_mut() else { return };
        if entry.record.chunks > COMBINE_BASE {
            // Its chunk indices would run into its combines' (10^15 chunks: never in practice).
            self.fail(now, job, format!("job input failed: a reduce job has at most {COMBINE_BASE} chunks"));
            return;
        }
        let combines = forest.push_leaf();
        entry.partials.resize(forest.combine_count() as usize, None);
        self.scheduler.handle_chunks_held(now.at, job, &combines);
    }

    /// A reduce job's input is complete: the closing combines that join its peaks are known to
    /// the scheduler (held), and those whose inputs are already durable are released. Call
    /// before the scheduler hears the input is complete.
    pub(super) fn reduce_input_end(&mut self, now: Time, job: JobId) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let Some(forest) = entry.forest.as_mut() else { return };
        let combines = forest.close();
        entry.partials.resize(forest.combine_count() as usize, None);
        // Its results gathering now may be what a combine waits for: they are looked at again.
        self.partials.checked = 0;
        self.scheduler.handle_chunks_held(now.at, job, &combines);
        for task in combines {
            if entry.inputs_durable(task) {
                self.scheduler.handle_chunk_released(now.at, job, task);
            }
        }
    }

    /// A reduce job's result of `task` is durable: the combine it feeds runs once its sibling's
    /// is durable too.
    fn reduce_stored(&mut self, now: Time, job: JobId, task: ChunkIndex) {
        let Some(entry) = self.jobs.get(&job).filter(|e| e.record.state == wire::proto::JobState::Running) else { return };
        let Some(parent) = entry.forest.as_ref().and_then(|f| f.parent(task)) else { return };
        if entry.inputs_durable(parent) {
            self.scheduler.handle_chunk_released(now.at, job, parent);
        }
    }

    /// Where the two inputs of combine `task` of `job` are spooled, left first; `None` when
    /// `task` is no combine of a reduce job or an input is not stored.
    pub(super) fn combine_inputs(&self, job: JobId, task: ChunkIndex) -> Option<(Extent, Extent)> {
        let entry = self.jobs.get(&job)?;
        let (left, right) = entry.forest.as_ref()?.children(task)?;
        Some((entry.result_of(left)?, entry.result_of(right)?))
    }

    /// A failure of a reduce job's combine, reworded to name the chunks it combined instead of
    /// its task index; any other failure as it is.
    pub(super) fn reword_failure(&self, job: JobId, failure: JobFailure) -> JobFailure {
        let JobFailure::Chunk { chunk, .. } = &failure else { return failure };
        let range = self.jobs.get(&job).and_then(|e| e.forest.as_ref()).and_then(|f| f.combined_range(*chunk));
        let Some((first, end)) = range else { return failure };
        let text = failure.to_string();
        let rest = text.strip_prefix(&format!("chunk {chunk} ")).unwrap_or(&text);
        JobFailure::Other { message: format!("dispy_combine of the results of chunks {first}..{end} {rest}") }
    }
}
