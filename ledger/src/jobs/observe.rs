//! Observability: attempt logs and `explain`.
//!
//! Every report's log (what the attempt wrote through `dispy.log`, WASI stderr or a native
//! payload's stdout and stderr, bounded by the node) goes to the driver as [`Effect::StoreLog`],
//! before the report's acknowledgement is promised, so the driver appends it to the job's `logs`
//! spool file ahead of the commit that lets the node forget the report. Logs stay until the job is
//! forgotten at the end of its retention ([`Effect::ForgetSpool`]); fetching the output or the
//! job failing removes only its input and results ([`Effect::RemoveSpool`]). A failed attempt's
//! last lines also ride its [`wire::proto::AttemptFailure`].
//!
//! `logs` is answered with a [`LogQuery`] the driver serves from the spool; `explain` at once from
//! the ledger's state: the job, the scheduler's per-node reasons why it waits (with a node that
//! refuses native payloads named as such) and every failed attempt of its chunks. Both go through
//! [`Ledger::visible`], so another tenant's job answers as an unknown one.

use std::collections::HashMap;

use bytes::Bytes;
use wire::observe::{tail, ChunkAttempts, Explanation, NodeReason, NodeWait, TAIL_LINES};
use wire::proto::{AttemptId, ChunkIndex, JobFailure, JobId, JobState, PayloadKind};

use super::{Answer, Caller, Effect, Ledger, Refusal, RequestId};
use crate::scheduler::NodeId;

/// The most attempt-log bytes one job keeps (per dispatcher lifetime); they also count in its
/// owner's spool quota while the job holds its files.
pub(crate) const MAX_JOB_LOG_BYTES: u64 = 64 << 20;

/// One attempt's log for the driver to append to its job's `logs` spool file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The job.
    pub job: JobId,
    /// The chunk the attempt ran.
    pub chunk: ChunkIndex,
    /// The attempt.
    pub attempt: AttemptId,
    /// The node that ran it.
    pub node: String,
    /// Whether the attempt failed.
    pub failed: bool,
    /// The log bytes, as the node bounded them.
    pub log: Bytes,
}

/// A `logs` request the ledger allowed, for the driver to serve from the job's `logs` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuery {
    /// The job.
    pub job: JobId,
    /// Only this chunk's attempts.
    pub chunk: Option<ChunkIndex>,
    /// The cursor to read from (0: the start).
    pub from: u64,
    /// Whether the job had ended when asked (then every log it will have is stored).
    pub finished: bool,
}

impl Ledger {
    /// Hands a reported attempt's log to the driver (nothing for an empty log or an attempt the
    /// scheduler no longer knows, such as one resent after a restart). Returns the log's tail for
    /// the attempt's failure.
    pub(super) fn store_log(&mut self, node: NodeId, attempt: AttemptId, failed: bool, log: Bytes) -> Vec<String> {
        if log.is_empty() {
            return Vec::new();
        }
        let log_tail = if failed { tail(&log, TAIL_LINES) } else { Vec::new() };
        let Some((job, chunk)) = self.scheduler.attempt_chunk(attempt) else { return log_tail };
        let node = self.node_name(node);
        let Some(entry) = self.jobs.get_mut(&job) else { return log_tail };
        // A job of many chunks that all print could fill the disk 64 KiB at a time: past its
        // bound, the job's first attempt over it leaves a note instead, and later ones nothing.
        if entry.log_bytes >= MAX_JOB_LOG_BYTES {
            return log_tail;
        }
        let log = if entry.log_bytes + log.len() as u64 > MAX_JOB_LOG_BYTES {
            entry.log_bytes = MAX_JOB_LOG_BYTES;
            let bound = wire::units::format_size(MAX_JOB_LOG_BYTES);
            Bytes::from(format!("[dispy: this job's logs reached {bound}; later attempts' logs are not kept]\n"))
        } else {
            entry.log_bytes += log.len() as u64;
            log
        };
        let bytes = log.len() as u64;
        self.charge_spool_anyway(job, bytes);
        self.effects.push_back(Effect::StoreLog(LogRecord { job, chunk, attempt, node, failed, log }));
        log_tail
    }

    /// `logs`: the attempts' logs of `job` (or of one chunk) stored after cursor `from`. Answered
    /// at once with a [`LogQuery`] the driver serves, or [`Refusal::UnknownJob`], also for another
    /// tenant's job.
    pub fn handle_logs(&mut self, request: RequestId, caller: &Caller, job: JobId, chunk: Option<ChunkIndex>, from: u64) {
        let query = self
            .visible(caller, job)
            .map(|entry| LogQuery { job, chunk, from, finished: entry.record.state.is_finished() });
        self.effects.push_back(Effect::Answer { request, answer: Answer::Logs(query) });
    }

    /// `explain`: why `job` waits and how its chunks failed, answered at once.
    pub fn handle_explain(&mut self, request: RequestId, caller: &Caller, job: JobId) {
        let explanation = self.explain(caller, job).map(Box::new);
        self.effects.push_back(Effect::Answer { request, answer: Answer::Explain(explanation) });
    }

    /// What `explain` says of `job`.
    ///
    /// # Errors
    /// [`Refusal::UnknownJob`], also for another tenant's job.
    pub fn explain(&self, caller: &Caller, job: JobId) -> Result<Explanation, Refusal> {
        let summary = self.summary(caller, job)?;
        let entry = self.visible(caller, job)?;
        let running = entry.record.state == JobState::Running;
        let blocked = if running { self.scheduler.blocked_reason(job) } else { None };
        let native = matches!(entry.record.submission.kind, PayloadKind::Native { .. });
        let confinement: HashMap<&str, wire::proto::Confinement> =
            self.nodes.values().map(|n| (n.info.name.as_str(), n.info.confinement)).collect();
        let nodes = if running {
            self.scheduler
                .node_reasons(job)
                .into_iter()
                .map(|(node, reason)| {
                    let refuses = confinement.get(node.as_str()).filter(|c| native && !c.runs_native());
                    let reason = match (reason, refuses) {
                        (NodeReason::Rejected | NodeReason::Eligible | NodeReason::Busy { .. }, Some(c)) => {
                            NodeReason::NativeRefused { confinement: c.to_string() }
                        }
                        (reason, _) => reason,
                    };
                    NodeWait { node, reason }
                })
                .collect()
        } else {
            Vec::new()
        };
        let failed_chunks = match &entry.record.state {
            JobState::Running => self
                .scheduler
                .failed_attempts(job)
                .into_iter()
                .map(|(chunk, attempts)| ChunkAttempts { chunk, attempts })
                .collect(),
            JobState::Failed(JobFailure::Chunk { chunk, attempts }) => {
                vec![ChunkAttempts { chunk: *chunk, attempts: attempts.clone() }]
            }
            _ => Vec::new(),
        };
        Ok(Explanation {
            summary,
            waiting: blocked.is_some(),
            blocked: blocked.map(|b| b.to_string()),
            nodes,
            failed_chunks,
        })
    }

    /// A client has a finished job's whole output: its input and results go, its record and logs
    /// stay until it expires (the release is journaled, so a restart keeps it released).
    pub fn handle_release(&mut self, caller: &Caller, job: JobId) {
        if !self.visible(caller, job).is_ok_and(|e| e.record.state.is_finished()) {
            return;
        }
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        if entry.released {
            return;
        }
        tracing::debug!(target: super::LOG_TARGET, %job, "job released by its client");
        entry.released = true;
        // Kept until the job expires, so it keeps only what `status`, `logs` and `explain` need.
        entry.results = Vec::new();
        entry.partials = Vec::new();
        entry.inputs = Vec::new();
        self.discharge_spool(job);
        self.batch.released.push(job);
        self.promises.releases.push(job);
    }
}
