//! The dispatcher's promise ledger and group-commit policy: what may be told to peers once the
//! journal batch gathering now is durable, and when that batch goes to the journal.
//!
//! Nothing is promised before it is durable: acknowledgements to nodes (which then forget their
//! reports), `InputStored` to submitters (who then may disconnect), answers to clients, and the
//! deletion of a forgotten job's files are all held in the [`Promises`] of the batch that makes
//! them true, and released only when that batch's commit is reported durable. One commit is in
//! flight at a time; the next batch gathers behind it.
//!
//! Each commit syncs files, and each sync interrupts the cores that run chunks, so batches are
//! spaced: a batch a client waits for goes at most every [`MIN_COMMIT_INTERVAL`], one that only
//! nodes' acknowledgements wait for every [`BACKGROUND_COMMIT_INTERVAL`] (a crash before it costs
//! reruns, never a broken promise), unless [`MAX_HELD_ACKS`] acknowledgements are held.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wire::proto::{AttemptId, JobId};

use crate::scheduler::NodeId;

/// Shortest time between the starts of two commits. Under load the journal would otherwise
/// commit (and `fdatasync`) after every few chunks, and in a VM each sync costs CPU.
pub const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(4);
/// Shortest time between the starts of two commits that no client waits for.
pub const BACKGROUND_COMMIT_INTERVAL: Duration = Duration::from_millis(50);
/// Held acknowledgements that make a commit urgent: well below the 10,000 unacknowledged reports
/// a node keeps before it drops the oldest.
pub const MAX_HELD_ACKS: usize = 4096;

/// What may be told or done once a batch is durable; `A` is an answer to a client's question.
#[derive(Debug)]
pub struct Promises<A> {
    /// Reports to acknowledge, per node.
    pub acks: HashMap<NodeId, Vec<AttemptId>>,
    /// Jobs whose input is now completely stored.
    pub stored: Vec<JobId>,
    /// Answers describing state that is durable once this batch is.
    pub answers: Vec<A>,
    /// Forgotten jobs whose spooled data may go once the journal no longer points at it.
    pub removals: Vec<JobId>,
    /// Released jobs (their output fetched) whose input and results may go once the journal
    /// records the release: before that, a restart would find the job without its files.
    pub releases: Vec<JobId>,
    /// Reports in `acks`, all nodes together.
    held_acks: usize,
}

impl<A> Default for Promises<A> {
    fn default() -> Self {
        Self {
            acks: HashMap::new(),
            stored: Vec::new(),
            answers: Vec::new(),
            removals: Vec::new(),
            releases: Vec::new(),
            held_acks: 0,
        }
    }
}

impl<A> Promises<A> {
    /// Whether nothing is promised.
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
            && self.stored.is_empty()
            && self.answers.is_empty()
            && self.removals.is_empty()
            && self.releases.is_empty()
    }

    /// Whether a client is waiting on them. Nodes' acknowledgements can wait, until a fast
    /// node's unacknowledged reports near the number it keeps.
    pub fn awaited(&self) -> bool {
        !self.stored.is_empty() || !self.answers.is_empty() || self.held_acks >= MAX_HELD_ACKS
    }

    /// Takes over the promises of a batch that failed to commit: acknowledgements, `InputStored`
    /// and answers wait for the next batch instead (which records the failed jobs' end). Spool
    /// removals and releases are dropped: the journal may still point at those files.
    pub fn absorb(&mut self, failed: Promises<A>) {
        for (node, attempts) in failed.acks {
            self.acks.entry(node).or_default().extend(attempts);
        }
        self.held_acks += failed.held_acks;
        self.stored.extend(failed.stored);
        self.answers.extend(failed.answers);
    }

    /// Promises to acknowledge `attempt`'s report to `node`.
    pub fn ack(&mut self, node: NodeId, attempt: AttemptId) {
        self.acks.entry(node).or_default().push(attempt);
        self.held_acks += 1;
    }
}

/// When the gathering batch goes to the journal: a sans-IO state machine fed the time.
#[derive(Debug, Default)]
pub struct CommitPolicy {
    in_flight: bool,
    /// When the last commit started.
    last_start: Option<Instant>,
    /// When a held-back batch is due.
    due: Option<Instant>,
}

impl CommitPolicy {
    /// Decides at the end of a turn whether the gathering batch starts its commit now. `pending`
    /// says whether there is anything to commit, `awaited` whether a client waits for it. When
    /// the answer is no but a batch waits, [`CommitPolicy::poll_timeout`] says when to ask again.
    pub fn poll_commit(&mut self, now: Instant, pending: bool, awaited: bool) -> bool {
        self.due = None;
        if self.in_flight || !pending {
            return false;
        }
        let spacing = if awaited { MIN_COMMIT_INTERVAL } else { BACKGROUND_COMMIT_INTERVAL };
        match self.last_start.map(|last| last + spacing) {
            Some(earliest) if now < earliest => {
                self.due = Some(earliest);
                false
            }
            _ => {
                self.start(now);
                true
            }
        }
    }

    /// Starts a commit regardless of spacing (a graceful stop), unless one is in flight.
    pub fn force(&mut self, now: Instant) -> bool {
        if self.in_flight {
            return false;
        }
        self.start(now);
        true
    }

    /// The commit in flight ended (durable or failed).
    pub fn handle_committed(&mut self) {
        self.in_flight = false;
    }

    /// Whether a commit is in flight.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// When a held-back batch should be looked at again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }

    fn start(&mut self, now: Instant) {
        self.in_flight = true;
        self.last_start = Some(now);
        self.due = None;
    }
}

#[cfg(test)]
mod tests;
