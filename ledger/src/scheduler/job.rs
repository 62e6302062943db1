//! A job and its attempts as the scheduler tracks them: the pending queue (requeued and fresh
//! chunks), live attempts and speculative pairs, failed attempts per chunk, and the statistics
//! reported with the verdict ([`JobStats`]).

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use wire::proto::{AttemptFailure, AttemptId, ChunkIndex, JobId};

use super::model::Median;
use super::placement::JobKey;
use super::tenant::TenantId;
use super::{JobRequirements, NodeId};

/// Scheduling statistics of a job, beyond [`Progress`](super::Progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobStats {
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Attempts started, speculative copies and reruns included.
    pub attempts: u64,
    /// Speculative copies launched.
    pub speculative: u64,
    /// Speculative copies whose result was accepted (they beat the original).
    pub speculative_wins: u64,
    /// The median time from `Assign` to accepted result over the job's chunks so far (sampled
    /// beyond 65,536 chunks); `None` before the first.
    pub median_chunk_time: Option<Duration>,
}

/// A live job.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) req: JobRequirements,
    /// The tenant of `req.tenant`.
    pub(super) tenant: TenantId,
    /// Its key in its tenant's `pending`; renewed at every placement for round-robin.
    pub(super) key: JobKey,
    /// Chunks known so far, held ones included.
    pub(super) total: u64,
    /// Fresh chunks (input chunks never placed) are `next_fresh..fresh_end`; held chunks may
    /// have indices beyond them.
    pub(super) next_fresh: ChunkIndex,
    pub(super) fresh_end: ChunkIndex,
    pub(super) input_complete: bool,
    /// Chunks with an accepted result.
    pub(super) done: u64,
    /// Chunks to place again (failed, or on a lost or rejecting node), served before fresh ones.
    pub(super) requeued: VecDeque<ChunkIndex>,
    /// Chunks of a job restored after a dispatcher restart that wait, during the reattach grace,
    /// for a reconnecting node to claim the attempt it still holds; requeued when it ends. Not
    /// pending: nothing places them meanwhile.
    pub(super) unclaimed: BTreeSet<ChunkIndex>,
    /// Chunks known but not ready to run (a reduce job's combines whose two inputs are not
    /// stored yet): not pending, nothing places them until [`Scheduler::handle_chunk_released`].
    ///
    /// [`Scheduler::handle_chunk_released`]: super::Scheduler::handle_chunk_released
    pub(super) held: BTreeSet<ChunkIndex>,
    /// Live attempts, speculative copies included.
    pub(super) in_flight: u64,
    /// Live original-and-copy pairs: `in_flight - pairs` chunks are in flight.
    pub(super) pairs: u64,
    pub(super) retries: u64,
    /// Attempts started, speculative copies and reruns included.
    pub(super) attempts: u64,
    pub(super) speculative: u64,
    pub(super) speculative_wins: u64,
    /// Failed attempts of chunks not yet done, oldest first; only chunks that failed appear.
    pub(super) failures: FxHashMap<ChunkIndex, Vec<FailedAttempt>>,
    /// Nodes lost while running an attempt of a chunk not yet done, by chunk; only chunks that
    /// lost one appear.
    pub(super) crashes: FxHashMap<ChunkIndex, Vec<String>>,
    /// Connected nodes that got `StartJob`.
    pub(super) started_on: FxHashSet<NodeId>,
    /// Connected nodes that rejected the job.
    pub(super) rejected_live: usize,
    /// The rejections so far, one per node and `; `-separated (each error names its node, as
    /// the ledger words it), so a job every node refused says who refused and why.
    pub(super) last_rejection: Option<String>,
    /// When the job fails for want of an eligible node, as registered in `Scheduler::timers`.
    pub(super) placement_deadline: Option<Instant>,
    /// Whether the job is in its tenant's `pending`.
    pub(super) in_pending: bool,
    /// Live attempts that may still get a speculative copy, by start time.
    pub(super) candidates: BTreeSet<(Instant, AttemptId)>,
    /// Durations of chunks with an accepted result.
    pub(super) durations: Median,
    /// The run time of the job's first measured chunk, under `pipeline_budget`: where its shares
    /// of nodes that have measured nothing yet start.
    pub(super) first_run: Option<Duration>,
    /// The job's `Timer::Speculate`, if set.
    pub(super) spec_deadline: Option<Instant>,
    /// Whether the job is in `Scheduler::spec_waiting`.
    pub(super) spec_waiting: bool,
    /// Whether the job is in `Scheduler::spec_dirty`.
    pub(super) spec_dirty: bool,
    /// For a paired job, the node that took fresh chunk `2k` before `2k + 1` arrived: that one
    /// goes there too when the node has room.
    pub(super) pair_node: Option<NodeId>,
}

impl Job {
    /// A job of the tenant just submitted, with no chunks yet, at `key` in the service order.
    pub(super) fn new(req: JobRequirements, key: JobKey, tenant: TenantId) -> Self {
        Self {
            req,
            tenant,
            key,
            total: 0,
            next_fresh: 0,
            fresh_end: 0,
            input_complete: false,
            done: 0,
            requeued: VecDeque::new(),
            unclaimed: BTreeSet::new(),
            held: BTreeSet::new(),
            in_flight: 0,
            pairs: 0,
            retries: 0,
            attempts: 0,
            speculative: 0,
            speculative_wins: 0,
            failures: FxHashMap::default(),
            crashes: FxHashMap::default(),
            started_on: FxHashSet::default(),
            rejected_live: 0,
            last_rejection: None,
            placement_deadline: None,
            in_pending: false,
            candidates: BTreeSet::new(),
            durations: Median::default(),
            first_run: None,
            spec_deadline: None,
            spec_waiting: false,
            spec_dirty: false,
            pair_node: None,
        }
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.requeued.is_empty() || self.next_fresh < self.fresh_end
    }

    pub(super) fn is_finished(&self) -> bool {
        self.input_complete && self.done == self.total
    }

    pub(super) fn failed_on(&self, chunk: ChunkIndex, node: NodeId) -> bool {
        self.failures.get(&chunk).is_some_and(|f| f.iter().any(|a| a.node == node))
    }

    pub(super) fn stats(&self) -> JobStats {
        JobStats {
            retries: self.retries,
            attempts: self.attempts,
            speculative: self.speculative,
            speculative_wins: self.speculative_wins,
            median_chunk_time: self.durations.median(),
        }
    }
}

/// A failed attempt of a chunk that is not done yet.
#[derive(Debug)]
pub(super) struct FailedAttempt {
    pub(super) node: NodeId,
    pub(super) report: AttemptFailure,
}

/// An attempt that was in flight on a node when the node was lost.
#[derive(Debug)]
pub(super) struct LostAttempt {
    pub(super) attempt: AttemptId,
    pub(super) job: JobId,
    pub(super) chunk: ChunkIndex,
    /// The certificate name of the node it ran on; only that node may complete it later.
    pub(super) node_name: String,
}

/// An attempt placed on a node and not yet finished, cancelled or requeued.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempt {
    pub(super) job: JobId,
    pub(super) chunk: ChunkIndex,
    pub(super) node: NodeId,
    /// The job's memory limit, charged to the node while the attempt is in flight.
    pub(super) memory: u64,
    /// Since when it is presumed running: its assignment, or the moment an attempt ahead of it
    /// left its node's first `slots` positions; `None` while it waits queued behind them.
    pub(super) running_since: Option<Instant>,
    /// Whether it is a speculative copy.
    pub(super) speculative: bool,
    /// The other live attempt of the same chunk, when one of the two is a copy.
    pub(super) twin: Option<AttemptId>,
    /// Whether it is in `Job::candidates`.
    pub(super) candidate: bool,
}
