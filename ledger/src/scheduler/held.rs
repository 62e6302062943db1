//! Held chunks: chunks a job knows but that are not ready to run, a reduce job's combines
//! waiting for their two inputs (see `crate::jobs`). They count toward the job's total, so it is
//! not over before they are done, but nothing places them until they are released; a released
//! chunk is placed like a requeued one.

use std::collections::BTreeSet;
use std::time::Instant;

use wire::proto::{ChunkIndex, JobId};

use super::{JobRequirements, Scheduler};

impl Scheduler {
    /// Like [`Scheduler::handle_job_restored`] for a job with all its chunks known, of which
    /// those in `held` (not done) are not ready to run: they wait, as after
    /// [`Scheduler::handle_chunks_held`], for [`Scheduler::handle_chunk_released`]. A reduce
    /// job's combines whose inputs are not both stored are restored so.
    pub fn handle_job_restored_held(
        &mut self,
        now: Instant,
        job: JobId,
        req: JobRequirements,
        done: &[bool],
        held: &BTreeSet<ChunkIndex>,
    ) {
        if self.restore_job(now, job, req, done, held) {
            self.handle_input_complete(now, job);
        }
    }

    /// `count` more chunks whose inputs are not ready yet (a reduce job's combines): known, so
    /// the job is not over before they are done, but placed only once each is released with
    /// [`Scheduler::handle_chunk_released`]. Their indices continue from the chunks so far.
    /// Ignored for unknown jobs and after input completion.
    pub fn handle_chunks_held(&mut self, _now: Instant, job: JobId, count: u64) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.input_complete || count == 0 {
            return;
        }
        // Only fresh chunks come after `next_fresh`: held ones are taken out of that range.
        let first = j.total;
        if j.next_fresh < first {
            // Fresh chunks remain: held chunks must not look fresh, so they stay out of `total`
            // until the fresh ones are out of the way; simplest is to move the fresh ones to the
            // requeued queue first, in order.
            let fresh: Vec<ChunkIndex> = (j.next_fresh..first).collect();
            j.requeued.extend(fresh);
        }
        j.total = first.saturating_add(count);
        j.next_fresh = j.total;
        j.held.extend(first..j.total);
        self.sync_pending(job);
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
