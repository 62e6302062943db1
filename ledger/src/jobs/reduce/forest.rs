//! The combine forest of a reduce job: which combines exist, which two results each joins and
//! which chunks it covers, derived from nothing but how many chunks arrived and whether the
//! input is complete, so a task index means the same work in every lifetime of the dispatcher.
//!
//! Chunk `i` is task `i`. Combines are numbered in the order they become known and are tasks
//! [`COMBINE_BASE`]` + c`, beyond any input chunk:
//! - *Block combines*, known as chunks arrive: once both halves of an aligned block
//!   `[k * 2^j, (k + 1) * 2^j)` (`j >= 1`) have arrived, the block's combine joins them. The
//!   blocks not yet inside a bigger one are the *peaks*, at most one per size, biggest first
//!   (a Merkle mountain range); combine numbering follows its post-order, so `m` chunks always
//!   make the same `m - popcount(m)` combines.
//! - *Closing combines*, known once the input is complete: the peaks (at most `log2 n + 1`)
//!   are joined left before right, `((P1 + P2) + P3) + ...`, so the biggest, finished long
//!   ago, are joined while the last chunks still run.
//!
//! `n` chunks make `n - 1` combines in all, and the last one (or the one chunk) is the root.

use wire::proto::ChunkIndex;

/// The task index of a reduce job's first combine: combine `c` is task `COMBINE_BASE + c`,
/// beyond any input chunk's index (a job has fewer chunks than this) whatever the chunk count.
pub const COMBINE_BASE: ChunkIndex = 1_000_000_000_000_000;

const NO_PARENT: ChunkIndex = ChunkIndex::MAX;

/// The combines of a reduce job over the chunks so far (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Forest {
    leaves: u64,
    complete: bool,
    /// Combine `c`, task `COMBINE_BASE + c`.
    combines: Vec<Combine>,
    /// The combine each chunk feeds, by chunk index; [`NO_PARENT`] until it is known.
    leaf_parent: Vec<ChunkIndex>,
    /// The roots of the blocks not yet inside a bigger one, left to right, with their sizes.
    peaks: Vec<(ChunkIndex, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Combine {
    left: ChunkIndex,
    right: ChunkIndex,
    first: u64,
    end: u64,
    parent: ChunkIndex,
}

impl Forest {
    /// The forest of `leaves` chunks, closed if `complete`: what any lifetime of the dispatcher
    /// derives from the same journal.
    pub(crate) fn over(leaves: u64, complete: bool) -> Self {
        let mut forest = Self::default();
        for _ in 0..leaves {
            forest.push_leaf();
        }
        if complete {
            forest.close();
        }
        forest
    }

    /// One more chunk arrived; returns the block combines it completes, smallest first.
    /// Ignored once closed.
    pub(crate) fn push_leaf(&mut self) -> Vec<ChunkIndex> {
        if self.complete {
            return Vec::new();
        }
        let leaf = self.leaves;
        self.leaves += 1;
        self.leaf_parent.push(NO_PARENT);
        self.peaks.push((leaf, 1));
        let mut made = Vec::new();
        while let [.., (left, left_size), (right, right_size)] = self.peaks[..] {
            if left_size != right_size {
                break;
            }
            self.peaks.truncate(self.peaks.len() - 2);
            let task = self.join(left, right);
            self.peaks.push((task, left_size * 2));
            made.push(task);
        }
        made
    }

    /// The input is complete: returns the closing combines that join the peaks, left first.
    /// Ignored once closed.
    pub(crate) fn close(&mut self) -> Vec<ChunkIndex> {
        if std::mem::replace(&mut self.complete, true) {
            return Vec::new();
        }
        let mut peaks = std::mem::take(&mut self.peaks).into_iter();
        let Some(first) = peaks.next() else { return Vec::new() };
        let mut made = Vec::new();
        let mut joined = first;
        for (peak, size) in peaks {
            let task = self.join(joined.0, peak);
            joined = (task, joined.1 + size);
            made.push(task);
        }
        self.peaks = vec![joined];
        made
    }

    /// Adds the combine of `left` and `right` (adjacent, left first); returns its task.
    fn join(&mut self, left: ChunkIndex, right: ChunkIndex) -> ChunkIndex {
        let task = COMBINE_BASE + self.combines.len() as u64;
        let (first, _) = self.range(left);
        let (_, end) = self.range(right);
        self.combines.push(Combine { left, right, first, end, parent: NO_PARENT });
        for child in [left, right] {
            if let Some(slot) = self.parent_slot(child) {
                *slot = task;
            }
        }
        task
    }

    fn parent_slot(&mut self, task: ChunkIndex) -> Option<&mut ChunkIndex> {
        match task.checked_sub(COMBINE_BASE) {
            Some(c) => self.combines.get_mut(c as usize).map(|c| &mut c.parent),
            None => self.leaf_parent.get_mut(task as usize),
        }
    }

    fn combine(&self, task: ChunkIndex) -> Option<&Combine> {
        self.combines.get(task.checked_sub(COMBINE_BASE)? as usize)
    }

    /// The combines known so far.
    pub(crate) fn combine_count(&self) -> u64 {
        self.combines.len() as u64
    }

    /// The combines known so far, in index order.
    pub(crate) fn combine_tasks(&self) -> std::ops::Range<ChunkIndex> {
        COMBINE_BASE..COMBINE_BASE + self.combine_count()
    }

    /// The task whose result is the job's output, once the input is complete; `None` before,
    /// and without chunks.
    pub(crate) fn root(&self) -> Option<ChunkIndex> {
        self.complete.then(|| self.peaks.first().map(|(task, _)| *task)).flatten()
    }

    /// The combine `task` feeds, once it is known.
    pub(crate) fn parent(&self, task: ChunkIndex) -> Option<ChunkIndex> {
        let parent = match task.checked_sub(COMBINE_BASE) {
            Some(_) => self.combine(task)?.parent,
            None => *self.leaf_parent.get(task as usize)?,
        };
        (parent != NO_PARENT).then_some(parent)
    }

    /// The two inputs of combine `task`, left first; `None` for a chunk or an unknown combine.
    pub(crate) fn children(&self, task: ChunkIndex) -> Option<(ChunkIndex, ChunkIndex)> {
        self.combine(task).map(|c| (c.left, c.right))
    }

    /// The chunks `[first, end)` combine `task` covers; `None` for a chunk or unknown combine.
    pub(crate) fn combined_range(&self, task: ChunkIndex) -> Option<(u64, u64)> {
        self.combine(task).map(|c| (c.first, c.end))
    }

    /// The chunks a task covers: its own for a chunk.
    fn range(&self, task: ChunkIndex) -> (u64, u64) {
        self.combined_range(task).unwrap_or((task, task + 1))
    }
}

/// The task whose result is the output of a reduce job of `chunks` chunks whose input is
/// complete; `None` without chunks.
pub fn reduce_output_task(chunks: u64) -> Option<ChunkIndex> {
    Forest::over(chunks, true).root()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combine joins two adjacent ranges, left before right, its children known before
    /// it; the root covers every chunk once; and the forest of `m` chunks is a prefix of the
    /// forest of any more (a combine index means the same work as more chunks arrive).
    #[track_caller]
    fn check(leaves: u64) {
        let open = Forest::over(leaves, false);
        let forest = Forest::over(leaves, true);
        assert_eq!(forest.combine_count(), leaves.saturating_sub(1));
        assert_eq!(open.combine_count(), leaves - u64::from(leaves.count_ones()), "block combines");
        for t in forest.combine_tasks() {
            let (l, r) = forest.children(t).expect("children");
            assert!(l < t && r < t, "children before parents");
            assert_eq!(forest.range(l).1, forest.range(r).0, "adjacent");
            assert_eq!((forest.range(l).0, forest.range(r).1), forest.range(t));
            assert_eq!((forest.parent(l), forest.parent(r)), (Some(t), Some(t)));
            if let Some(c) = open.combine(t) {
                assert_eq!((c.left, c.right, c.first, c.end), (l, r, forest.range(t).0, forest.range(t).1));
            }
        }
        for fewer in 0..leaves {
            let prefix = Forest::over(fewer, false);
            for t in prefix.combine_tasks() {
                assert_eq!(prefix.children(t), forest.children(t), "{fewer} of {leaves} chunks");
            }
        }
        match forest.root() {
            None => assert_eq!(leaves, 0),
            Some(root) => {
                assert_eq!(forest.range(root), (0, leaves));
                assert_eq!(forest.parent(root), None);
                assert_eq!(reduce_output_task(leaves), Some(root));
            }
        }
        assert_eq!(open.root(), None, "no output before the input is complete");
    }

    #[test]
    fn forests_cover_their_chunks_in_order_whatever_arrives_later() {
        for leaves in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 31, 64, 100] {
            check(leaves);
        }
    }

    #[test]
    fn blocks_combine_as_soon_as_both_halves_arrive() {
        let mut forest = Forest::default();
        assert_eq!(forest.push_leaf(), vec![]);
        assert_eq!(forest.push_leaf(), vec![COMBINE_BASE]);
        assert_eq!(forest.push_leaf(), vec![]);
        // Chunk 3 completes [2, 4), then [0, 4).
        assert_eq!(forest.push_leaf(), vec![COMBINE_BASE + 1, COMBINE_BASE + 2]);
        assert_eq!(forest.combined_range(COMBINE_BASE + 2), Some((0, 4)));
        assert_eq!(forest.push_leaf(), vec![]);
        // Five chunks: [0, 4) and chunk 4 are the peaks, joined once the input is complete.
        assert_eq!(forest.close(), vec![COMBINE_BASE + 3]);
        assert_eq!(forest.children(COMBINE_BASE + 3), Some((COMBINE_BASE + 2, 4)));
        assert_eq!(forest.root(), Some(COMBINE_BASE + 3));
        assert_eq!(forest.close(), vec![], "closed once");
        assert_eq!(forest.push_leaf(), vec![], "no chunk after the input is complete");
    }
}
