//! What the ledger saw happen, as [`Observation`]s for the driver's metrics and status page, and
//! the operator's view of every job ([`JobView`]). Observations decide nothing: they are news,
//! like the scheduler's `Notice`s, queued as the ledger handles inputs and drained by the driver
//! with [`Ledger::poll_observation`] after every turn.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use wire::proto::{AttemptId, ChunkFailure, ChunkIndex, JobId, JobSummary};

use super::{Ledger, Time};
use crate::scheduler::NodeId;

/// The most observations queued; a driver that drains after every turn never comes near it,
/// and one that never drains (a test) costs bounded memory: the oldest go first.
const MAX_QUEUED: usize = 1 << 16;

/// Something that happened, for counting; never an instruction.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Observation {
    /// A chunk's accepted result is stored: the chunk is complete. Counted once per chunk.
    ChunkCompleted {
        /// The job's owner.
        tenant: String,
        /// How long the accepted attempt ran on its node.
        run: Duration,
        /// The result's size.
        bytes: u64,
    },
    /// An attempt failed on a node.
    AttemptFailed(FailedAttempt),
    /// A speculative copy of a straggling chunk was assigned.
    Speculated {
        /// The job's owner.
        tenant: String,
    },
    /// A chunk was assigned for the first time, `wait` after its input was stored.
    Placed {
        /// The time between its input being stored and its first assignment.
        wait: Duration,
    },
    /// A chunk's input was stored.
    InputStored {
        /// Its size.
        bytes: u64,
    },
}

/// One failed attempt, for the status page's recent failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    /// The job.
    pub job: JobId,
    /// The chunk.
    pub chunk: ChunkIndex,
    /// The job's owner.
    pub tenant: String,
    /// The node's name.
    pub node: String,
    /// What the node said went wrong.
    pub message: String,
    /// When, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Whether the chunk runs again (the job's retries grew); otherwise the failure ended the
    /// job, or was a speculative copy's whose original still runs.
    pub retried: bool,
}

/// A job as the operator's status page shows it: what `status` says, and when it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    /// The job as `status` shows it to its owner.
    pub summary: JobSummary,
    /// When it ended, milliseconds since the Unix epoch; `None` while it runs.
    pub finished_unix_ms: Option<u64>,
}

/// The queue of observations, bounded by `MAX_QUEUED`.
#[derive(Debug, Default)]
pub(super) struct Observations(VecDeque<Observation>);

impl Observations {
    pub(super) fn push(&mut self, observation: Observation) {
        if self.0.len() >= MAX_QUEUED {
            self.0.pop_front();
        }
        self.0.push_back(observation);
    }
}

impl Ledger {
    /// The next observation, oldest first.
    pub fn poll_observation(&mut self) -> Option<Observation> {
        self.observations.0.pop_front()
    }

    /// Every job the ledger keeps (running, and finished within the retention), by id, whoever
    /// owns it: for operators only.
    pub fn job_views(&self) -> Vec<JobView> {
        let mut ids: Vec<JobId> = self.jobs.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|job| self.job_view(job)).collect()
    }

    /// One job as operators see it; `None` for an unknown one.
    fn job_view(&self, job: JobId) -> Option<JobView> {
        let entry = self.jobs.get(&job)?;
        let summary = self.summary(&super::Caller { name: entry.record.owner.clone(), operator: true }, job).ok()?;
        Some(JobView { summary, finished_unix_ms: entry.record.finished_unix_ms })
    }

    pub(super) fn observe(&mut self, observation: Observation) {
        self.observations.push(observation);
    }

    /// A chunk of `job` got input at `at`: its wait for a node starts.
    pub(super) fn observe_queued(&mut self, job: JobId, chunk: ChunkIndex, at: Instant) {
        if let Some(entry) = self.jobs.get_mut(&job) {
            entry.queued_at.insert(chunk, at);
        }
    }

    /// A chunk of `job` was assigned: its first assignment ends its wait.
    pub(super) fn observe_assigned(&mut self, now: Time, job: JobId, chunk: ChunkIndex, speculative: bool) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        if speculative {
            let tenant = entry.record.owner.clone();
            self.observe(Observation::Speculated { tenant });
        } else if let Some(since) = entry.queued_at.remove(&chunk) {
            self.observe(Observation::Placed { wait: now.at.saturating_duration_since(since) });
        }
    }

    /// Hands a failed attempt to the scheduler, observing it with whether its chunk runs again
    /// (the job's retries grew); a report to discard is not observed.
    pub(super) fn chunk_failed_observed(
        &mut self,
        now: Time,
        node: NodeId,
        attempt: AttemptId,
        failure: ChunkFailure,
        log_tail: Vec<String>,
    ) {
        let at = self.scheduler.attempt_chunk(attempt);
        let retries_before = at.and_then(|(job, _)| self.scheduler.progress(job)).map_or(0, |p| p.retries);
        let message = failure.message.clone();
        self.scheduler.handle_chunk_failed_logged(now.at, node, attempt, failure, log_tail);
        let Some((job, chunk)) = at else { return };
        let retried = self.scheduler.progress(job).is_some_and(|p| p.retries > retries_before);
        let tenant = self.jobs.get(&job).map(|e| e.record.owner.clone()).unwrap_or_default();
        let node = self.node_name(node);
        let failed = FailedAttempt { job, chunk, tenant, node, message, unix_ms: now.unix_ms, retried };
        self.observe(Observation::AttemptFailed(failed));
    }
}
