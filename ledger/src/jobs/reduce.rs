//! Reduce jobs (`results = "reduce"`): every chunk's result is combined, on the nodes, with the
//! payload's `dispy_combine` into one result, adjacent ranges only and left before right.
//!
//! Once a reduce job's input is complete its `n` chunks are the leaves of a fixed binary
//! [`Tree`]; each of its `n - 1` inner nodes is a *combine task*, a chunk of the job beyond the
//! input chunks (index `n + t`, numbered in post-order so children come before parents), whose
//! input is the two results it joins and which a node runs with `dispy_combine` instead of
//! `dispy_run`. The scheduler knows combines as chunks *held* until both their inputs are stored
//! ([`crate::scheduler::Scheduler::handle_chunks_held`]); a result made *durable* (journaled)
//! releases its parent when its sibling is durable too, so combining proceeds tree-wise as
//! ranges complete and the root's result, the job's output, is stored moments after the last
//! chunk's (a batch holding a reduce job's results commits as promptly as one a client waits
//! for). Waiting for durability costs a commit per tree level and buys simple restarts: a
//! combine a node still runs after a dispatcher restart always has durable inputs, so the
//! restarted dispatcher adopts it when the node claims it, and nothing is combined twice. Placement, retries,
//! timeouts, speculation, node loss and the one-accepted-result rule are the scheduler's, as for
//! any chunk: each result is combined exactly once. A combine's result is journaled as the
//! result of its chunk index (the journal's result rows need no change), so a restarted
//! dispatcher restores every stored partial, reruns nothing stored and holds again the combines
//! whose inputs are not both stored. The tree depends only on `n`, so a chunk index means the
//! same work in every lifetime of the dispatcher, and a node's claim of a combine attempt after
//! a restart adopts the right work. Partials a combine consumed stay in the spool until the job
//! is released (they are small next to the inputs, and keeping them makes restarts trivially
//! safe). Combining starts when the input is complete, since the tree needs `n`.

use std::collections::BTreeSet;

use crate::record::Batch;

use wire::proto::{ChunkIndex, JobFailure, JobId, ResultMode};

use super::entries::JobEntry;
use super::{Ledger, Time};
use crate::record::Extent;

/// The fixed combine tree of a reduce job with `leaves` chunks.
#[derive(Debug)]
pub(super) struct Tree {
    leaves: u64,
    /// For combine `t` (chunk `leaves + t`): its two inputs (chunks or combines) and the range
    /// of chunks it covers.
    combines: Vec<Combine>,
    /// The combine each chunk or combine feeds, by chunk index; `u64::MAX` for the root.
    parent: Vec<ChunkIndex>,
}

#[derive(Debug, Clone, Copy)]
struct Combine {
    left: ChunkIndex,
    right: ChunkIndex,
    first: u64,
    end: u64,
}

const NO_PARENT: ChunkIndex = ChunkIndex::MAX;

impl Tree {
    /// The tree over `leaves` chunks: each range splits at its middle.
    pub(super) fn new(leaves: u64) -> Self {
        let tasks = if leaves == 0 { 0 } else { 2 * leaves - 1 };
        let mut tree = Self {
            leaves,
            combines: Vec::with_capacity(leaves.saturating_sub(1) as usize),
            parent: vec![NO_PARENT; tasks as usize],
        };
        if leaves > 0 {
            tree.build(0, leaves);
        }
        tree
    }

    /// Builds the subtree over chunks `[first, end)`; returns its task.
    fn build(&mut self, first: u64, end: u64) -> ChunkIndex {
        if end - first == 1 {
            return first;
        }
        let mid = first + (end - first) / 2;
        let left = self.build(first, mid);
        let right = self.build(mid, end);
        let task = self.leaves + self.combines.len() as u64;
        self.combines.push(Combine { left, right, first, end });
        self.parent[left as usize] = task;
        self.parent[right as usize] = task;
        task
    }

    /// Chunks and combines: `2n - 1`, or 0 without chunks.
    pub(super) fn tasks(&self) -> u64 {
        self.parent.len() as u64
    }

    /// The task whose result is the job's output; `None` without chunks.
    pub(super) fn root(&self) -> Option<ChunkIndex> {
        self.tasks().checked_sub(1)
    }

    /// The combine `task` feeds.
    pub(super) fn parent(&self, task: ChunkIndex) -> Option<ChunkIndex> {
        self.parent.get(task as usize).copied().filter(|&p| p != NO_PARENT)
    }

    /// The two inputs of combine `task`, left first; `None` for an input chunk.
    pub(super) fn children(&self, task: ChunkIndex) -> Option<(ChunkIndex, ChunkIndex)> {
        let combine = self.combines.get(task.checked_sub(self.leaves)? as usize)?;
        Some((combine.left, combine.right))
    }

    /// The chunks `[first, end)` combine `task` covers.
    pub(super) fn range(&self, task: ChunkIndex) -> Option<(u64, u64)> {
        let combine = self.combines.get(task.checked_sub(self.leaves)? as usize)?;
        Some((combine.first, combine.end))
    }

    /// The combines in index order.
    pub(super) fn combine_tasks(&self) -> std::ops::Range<ChunkIndex> {
        self.leaves..self.tasks().max(self.leaves)
    }
}

impl JobEntry {
    /// Whether the job reduces its results.
    pub(super) fn reduces(&self) -> bool {
        self.record.submission.results == ResultMode::Reduce
    }

    /// The result at position `index` of the job's output stream: the chunk's result, or for a
    /// reduce job only the root's at position 0 (once the tree exists and the root is stored).
    pub(super) fn output_at(&self, index: u64) -> Option<Extent> {
        if !self.reduces() {
            return self.results.get(index as usize).copied().flatten();
        }
        let root = self.tree.as_ref()?.root()?;
        if index != 0 {
            return None;
        }
        self.results.get(root as usize).copied().flatten()
    }

    /// Builds the tree of a reduce job whose input is complete, sizing its result slots for the
    /// combines; returns how many combines it has.
    pub(super) fn plant_tree(&mut self) -> u64 {
        let tree = Tree::new(self.record.chunks);
        self.results.resize(tree.tasks() as usize, None);
        let combines = tree.tasks().saturating_sub(tree.leaves);
        self.tree = Some(tree);
        combines
    }

    /// The combines whose two inputs are durable and whose own result is not stored.
    pub(super) fn ready_combines(&self) -> Vec<ChunkIndex> {
        let Some(tree) = &self.tree else { return Vec::new() };
        let stored = |task: ChunkIndex| self.results.get(task as usize).is_some_and(Option::is_some);
        let durable = |task: ChunkIndex| self.durable.contains(&task);
        tree.combine_tasks()
            .filter(|&t| !stored(t) && tree.children(t).is_some_and(|(l, r)| durable(l) && durable(r)))
            .collect()
    }

    /// The combines not done whose inputs are not both durable: restored as held.
    pub(super) fn unready_combines(&self) -> BTreeSet<ChunkIndex> {
        let Some(tree) = &self.tree else { return BTreeSet::new() };
        let ready: BTreeSet<ChunkIndex> = self.ready_combines().into_iter().collect();
        let stored = |task: ChunkIndex| self.results.get(task as usize).is_some_and(Option::is_some);
        tree.combine_tasks().filter(|t| !stored(*t) && !ready.contains(t)).collect()
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
    /// tree is planted and whose sibling is stored too (the job's results before the input is
    /// complete, or whose sibling is still running, can wait for the usual spacing).
    pub(super) fn partials_waiting(&mut self) -> bool {
        let fresh = self.batch.results.get(self.partials.checked..).unwrap_or_default();
        let jobs = &self.jobs;
        let waits = fresh.iter().any(|(job, task, _)| {
            let Some(entry) = jobs.get(job) else { return false };
            let Some(tree) = &entry.tree else { return false };
            let Some((left, right)) = tree.parent(*task).and_then(|p| tree.children(p)) else { return false };
            let sibling = if left == *task { right } else { left };
            entry.results.get(sibling as usize).is_some_and(Option::is_some)
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

    /// A reduce job's input is complete: its tree is planted, its combines are known to the
    /// scheduler (held), and those whose inputs are already stored are released. Call before the
    /// scheduler hears the input is complete.
    pub(super) fn reduce_input_end(&mut self, now: Time, job: JobId) {
        let Some(entry) = self.jobs.get_mut(&job).filter(|e| e.reduces()) else { return };
        let combines = entry.plant_tree();
        self.scheduler.handle_chunks_held(now.at, job, combines);
        for task in entry.ready_combines() {
            self.scheduler.handle_chunk_released(now.at, job, task);
        }
    }

    /// A reduce job's result of `task` is durable: the combine it feeds runs once its sibling's
    /// is durable too.
    fn reduce_stored(&mut self, now: Time, job: JobId, task: ChunkIndex) {
        let Some(entry) = self.jobs.get(&job).filter(|e| e.record.state == wire::proto::JobState::Running) else { return };
        let Some(tree) = &entry.tree else { return };
        let Some(parent) = tree.parent(task) else { return };
        if tree.children(parent).is_some_and(|(l, r)| entry.durable.contains(&l) && entry.durable.contains(&r)) {
            self.scheduler.handle_chunk_released(now.at, job, parent);
        }
    }

    /// Where the two inputs of combine `task` of `job` are spooled, left first; `None` when
    /// `task` is no combine of a reduce job or an input is not stored.
    pub(super) fn combine_inputs(&self, job: JobId, task: ChunkIndex) -> Option<(Extent, Extent)> {
        let entry = self.jobs.get(&job)?;
        let (left, right) = entry.tree.as_ref()?.children(task)?;
        Some((entry.results.get(left as usize).copied()??, entry.results.get(right as usize).copied()??))
    }

    /// A failure of a reduce job's combine, reworded to name the chunks it combined instead of
    /// a chunk index beyond the input; any other failure as it is.
    pub(super) fn reword_failure(&self, job: JobId, failure: JobFailure) -> JobFailure {
        let JobFailure::Chunk { chunk, .. } = &failure else { return failure };
        let Some((first, end)) = self.jobs.get(&job).and_then(|e| e.tree.as_ref()).and_then(|t| t.range(*chunk)) else {
            return failure;
        };
        let text = failure.to_string();
        let rest = text.strip_prefix(&format!("chunk {chunk} ")).unwrap_or(&text);
        JobFailure::Other { message: format!("dispy_combine of the results of chunks {first}..{end} {rest}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combine covers the union of its children's adjacent ranges, left before right, and
    /// every chunk is under the root exactly once.
    #[track_caller]
    fn check(leaves: u64) {
        let tree = Tree::new(leaves);
        assert_eq!(tree.tasks(), if leaves == 0 { 0 } else { 2 * leaves - 1 });
        let range = |t: ChunkIndex| if t < leaves { (t, t + 1) } else { tree.range(t).expect("combine") };
        for t in tree.combine_tasks() {
            let (l, r) = tree.children(t).expect("children");
            assert!(l < t && r < t, "children before parents");
            assert_eq!(range(l).1, range(r).0, "adjacent");
            assert_eq!((range(l).0, range(r).1), range(t));
            assert_eq!((tree.parent(l), tree.parent(r)), (Some(t), Some(t)));
        }
        match tree.root() {
            None => assert_eq!(leaves, 0),
            Some(root) => {
                assert_eq!(range(root), (0, leaves));
                assert_eq!(tree.parent(root), None);
            }
        }
    }

    #[test]
    fn trees_cover_their_chunks_in_order() {
        for leaves in [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 64, 100] {
            check(leaves);
        }
    }
}
