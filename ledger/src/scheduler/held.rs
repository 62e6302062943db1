//! Held chunks: chunks a job knows but that are not ready to run, a reduce job's combines
//! waiting for their two inputs (see `crate::jobs`). They count toward the job's total, so it is
//! not over before they are done, but nothing places them until they are released; a released
//! chunk is placed like a requeued one.

use std::collections::BTreeMap;
use std::time::Instant;

use wire::proto::{AttemptId, ChunkIndex, JobId};

use super::job::Job;
use super::outcome::Verdict;
use super::{Action, JobRequirements, Scheduler};

/// Where a restored job's chunk beyond its input chunks (a reduce job's combine) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraChunk {
    /// Its result is stored.
    Done,
    /// Its inputs are not ready: it waits for [`Scheduler::handle_chunk_released`].
    Held,
    /// Its inputs are ready: it runs (or is claimed by the node still running it).
    Ready,
}

impl Scheduler {
    /// Like [`Scheduler::handle_job_restored`] (or, if `input_complete` is false,
    /// [`Scheduler::handle_job_restored_incomplete`]) for a job that also has the chunks
    /// `extra` beyond its input chunks, a reduce job's combines: those held wait, as after
    /// [`Scheduler::handle_chunks_held`], for [`Scheduler::handle_chunk_released`].
    pub fn handle_job_restored_held(
        &mut self,
        now: Instant,
        job: JobId,
        req: JobRequirements,
        done: &[bool],
        extra: &BTreeMap<ChunkIndex, ExtraChunk>,
        input_complete: bool,
    ) {
        if !self.restore_job(now, job, req, done, extra) {
            return;
        }
        if input_complete {
            self.handle_input_complete(now, job);
        } else {
            self.settle(now);
        }
    }

    /// More chunks whose inputs are not ready yet (a reduce job's combines), with indices of
    /// the caller's choosing beyond the input chunks': known, so the job is not over before
    /// they are done, but placed only once each is released with
    /// [`Scheduler::handle_chunk_released`]. Ignored for unknown jobs and after input completion.
    pub fn handle_chunks_held(&mut self, _now: Instant, job: JobId, chunks: &[ChunkIndex]) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if j.input_complete {
            return;
        }
        let before = j.held.len();
        j.held.extend(chunks.iter().copied().filter(|&c| c >= j.fresh_end));
        j.total += (j.held.len() - before) as u64;
        self.sync_pending(job);
    }

    /// A chunk's result arrived another way, a node's pre-combine of a reduce job's combine
    /// from its two inputs (`wire::proto::ChunkReport::combined_with`): it counts as done
    /// wherever it stood, held, pending, unclaimed or running (its attempts are cancelled).
    /// Returns false, changing nothing, when it is done already or unknown: the caller then
    /// drops the result.
    pub fn handle_chunk_covered(&mut self, now: Instant, job: JobId, chunk: ChunkIndex) -> bool {
        let Some(j) = self.jobs.get_mut(&job) else { return false };
        let queued = j.requeued.len();
        j.requeued.retain(|&c| c != chunk);
        let waited = j.held.remove(&chunk) | j.unclaimed.remove(&chunk) | (j.requeued.len() != queued);
        if j.requeued.len() != queued && j.requeued.len() >= super::placement::REQUEUE_SCAN {
            self.window_moved.push(job);
        }
        let running: Vec<AttemptId> =
            self.attempts.iter().filter(|(_, a)| a.job == job && a.chunk == chunk).map(|(&id, _)| id).collect();
        if !waited && running.is_empty() {
            return false;
        }
        for attempt in running {
            if let Some(a) = self.release_attempt(now, attempt) {
                self.out.act(Action::CancelAttempt { node: a.node, attempt });
                self.fill_node(now, a.node);
            }
        }
        let Some(j) = self.jobs.get_mut(&job) else { return false };
        j.done += 1;
        j.failures.remove(&chunk);
        j.crashes.remove(&chunk);
        self.sync_pending(job);
        if self.jobs.get(&job).is_some_and(Job::is_finished) {
            self.end_job(now, job, Some(Verdict::Succeeded));
        } else {
            self.mark_spec(job);
            self.refresh_clock(now, job);
        }
        self.settle(now);
        true
    }

    /// A held chunk's inputs are ready: it is placed like a requeued chunk. Ignored for unknown
    /// jobs and chunks not held.
    pub fn handle_chunk_released(&mut self, now: Instant, job: JobId, chunk: ChunkIndex) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if !j.held.remove(&chunk) {
            return;
        }
        j.requeued.push_back(chunk);
        self.sync_pending(job);
        self.mark_spec(job);
        self.fill_job(now, job);
        self.refresh_clock(now, job);
        self.settle(now);
    }
}
