//! A node's pre-combined report (`ChunkReport::combined_with`): a node that ran both chunks
//! `2k` and `2k + 1` of a reduce job combined their results itself and reports the combination,
//! the result of the block combine over them, for both attempts at once.
//!
//! The report counts as the two chunks' results and the block combine's, each exactly once:
//! each chunk whose attempt is still live is accepted as done (its own result is never stored:
//! the combine's covers it), and the block combine is accepted with the report's result unless
//! it is done already (`Scheduler::handle_chunk_covered`; a copy of it that runs is cancelled).
//! Under speculation and retries a chunk may already have been done by another attempt, whose
//! result then sits stored beside the combine's and is never used: combining it again would
//! give the same bytes. When neither attempt is live, or the combine is done, the result is
//! dropped. A restarted dispatcher counts chunks under a stored combine as done (see
//! `restore`).

use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, warn};
use wire::proto::{AttemptId, ChunkFailure, ChunkIndex, FailureKind, JobId};

use super::super::{Effect, Ledger, Observation, StoreTicket, Time, LOG_TARGET};
use crate::scheduler::NodeId;

impl Ledger {
    /// `node` reports `left`'s and `right`'s attempts (chunks `2k` and `2k + 1` of a reduce
    /// job) with `output`, their results already combined. See the module doc.
    pub(in super::super) fn handle_precombined(
        &mut self,
        now: Time,
        node: NodeId,
        (left, right): (AttemptId, AttemptId),
        run_nanos: u64,
        output: Bytes,
    ) {
        let live = [left, right].map(|attempt| self.scheduler.attempt_chunk(attempt).is_some());
        if live == [false, false] {
            debug!(target: LOG_TARGET, %left, %right, "late or duplicate pre-combined result discarded");
            self.promises.ack(node, left);
            self.promises.ack(node, right);
            return;
        }
        let Some((job, first, combine)) = self.precombined_target(left, right) else {
            warn!(target: LOG_TARGET, node = %self.node_name(node), %left, %right, "malformed pre-combined report; its chunks run again");
            for attempt in [left, right] {
                self.promises.ack(node, attempt);
                let failure = ChunkFailure { kind: FailureKind::Node, message: "malformed pre-combined report".into() };
                self.scheduler.handle_chunk_failed(now.at, node, attempt, failure);
            }
            return;
        };
        // Only live attempts count: a lost one's chunk runs again and its result goes unused.
        let mut accepted = 0;
        for (attempt, live) in [left, right].into_iter().zip(live) {
            accepted += u64::from(live && self.scheduler.handle_chunk_succeeded(now.at, node, attempt).is_some());
        }
        self.promises.ack(node, right);
        if accepted == 0 || !self.scheduler.handle_chunk_covered(now.at, job, combine) {
            debug!(target: LOG_TARGET, %job, chunk = first, "late or duplicate pre-combined result discarded");
            self.promises.ack(node, left);
            return;
        }
        let Some(entry) = self.jobs.get_mut(&job) else {
            self.promises.ack(node, left);
            return;
        };
        debug!(target: LOG_TARGET, %job, chunk = first, combine, "pre-combined results accepted");
        entry.done += accepted;
        entry.run_nanos = entry.run_nanos.saturating_add(run_nanos);
        entry.unstored += 1;
        let tenant = entry.record.owner.clone();
        let run = Duration::from_nanos(run_nanos / accepted);
        for _ in 0..accepted {
            self.observations.push(Observation::ChunkCompleted { tenant: tenant.clone(), run, bytes: 0 });
        }
        let ticket = StoreTicket { job, chunk: combine, node, attempt: left, run_nanos: 0 };
        self.effects.push_back(Effect::StoreResult { ticket, output });
    }

    /// The job, first chunk and block combine of a pre-combined report, from whichever of its
    /// attempts is live; `None` when they are not chunks `2k` and `2k + 1` of one reduce job.
    fn precombined_target(&self, left: AttemptId, right: AttemptId) -> Option<(JobId, ChunkIndex, ChunkIndex)> {
        let (job, first) = match (self.scheduler.attempt_chunk(left), self.scheduler.attempt_chunk(right)) {
            (Some((job, a)), Some((other, b))) => (job == other && b == a.checked_add(1)?).then_some((job, a))?,
            (Some((job, a)), None) => (job, a),
            (None, Some((job, b))) => (job, b.checked_sub(1)?),
            (None, None) => return None,
        };
        let forest = self.jobs.get(&job)?.forest.as_ref()?;
        let combine = forest.parent(first).filter(|&p| first.is_multiple_of(2) && forest.parent(first + 1) == Some(p))?;
        Some((job, first, combine))
    }
}
