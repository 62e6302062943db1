//! Starting from what the journal kept: unfinished jobs resume and rerun only chunks without a
//! stored result; a job whose input was still arriving also waits (for the input grace) for its
//! submitter to resume the upload from the last durable chunk, then fails; finished jobs wait
//! to be fetched or to expire.

use tracing::{info, warn};
use wire::proto::{ChunkIndex, JobFailure, JobId, JobState};

use super::entries::JobEntry;
use super::reduce::COMBINE_BASE;
use super::{requirements, Ledger, Time, LOG_TARGET};
use crate::record::{Extent, JobRecord};

/// Where a resumed upload goes on ([`Ledger::handle_resume_input`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// Chunks whose input is durable; the upload goes on with this chunk index.
    pub stored: u64,
    /// Whether no more input is wanted (all of it is stored, or the job ended): the client
    /// sends nothing and follows the job.
    pub complete: bool,
}

/// A failure to read what the journal holds of a job.
pub type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// What the journal held when the dispatcher started.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The next job id to hand out.
    pub next_job: u64,
    /// How many times the journal has been opened, this time included; it keeps attempt ids of
    /// different dispatcher lifetimes apart.
    pub incarnation: u64,
    /// Every remembered job.
    pub jobs: Vec<RestoredJob>,
    /// Node names an operator drained or that were quarantined, held until released.
    pub holds: Vec<(String, crate::record::NodeHold)>,
}

/// One remembered job, with the extents [`RestoredJob::reads`] said to read.
#[derive(Debug)]
pub struct RestoredJob {
    /// The job.
    pub job: JobId,
    /// Its record.
    pub record: JobRecord,
    /// Where its chunks' inputs are spooled, in chunk order (empty if not read).
    pub inputs: Result<Vec<Extent>, ReadError>,
    /// Where its stored results are (empty if not read).
    pub results: Result<Vec<(ChunkIndex, Extent)>, ReadError>,
}

impl RestoredJob {
    /// Which of a job's extents the restore needs: `(inputs, results)`. A running job needs
    /// both (with its input complete or not); a succeeded one its results; any other neither.
    pub fn reads(record: &JobRecord) -> (bool, bool) {
        match record.state {
            JobState::Running => (true, true),
            JobState::Succeeded => (false, true),
            JobState::Failed(_) | JobState::Cancelled => (false, false),
        }
    }
}

impl Ledger {
    pub(super) fn restore(&mut self, now: Time, restored: RestoredJob) {
        let RestoredJob { job, record, inputs, results } = restored;
        let mut entry = JobEntry::new(record);
        if entry.record.state != JobState::Running {
            if entry.record.state == JobState::Succeeded {
                // Its results wait to be fetched: `wait` streams them from the spool.
                match results {
                    Ok(results) => {
                        // A succeeded job without results had its output fetched (released).
                        entry.released = results.is_empty() && entry.record.chunks > 0;
                        if !entry.released {
                            entry.results = vec![None; entry.record.chunks as usize];
                            if entry.reduces() {
                                entry.regrow_forest();
                            }
                            fill(&mut entry, results);
                        }
                        entry.done = entry.record.chunks;
                    }
                    Err(e) => warn!(target: LOG_TARGET, %job, error = %e, "cannot read a finished job's results"),
                }
            }
            let bytes = entry.stored_results().map(|r| r.len).sum();
            self.jobs.insert(job, entry);
            self.charge_spool_anyway(job, bytes);
            return;
        }
        let (inputs, results) = match (inputs, results) {
            (Ok(inputs), Ok(results)) => (inputs, results),
            (Err(e), _) | (_, Err(e)) => {
                self.jobs.insert(job, entry);
                self.finish(now, job, JobState::Failed(JobFailure::Other { message: format!("cannot resume: {e}") }));
                return;
            }
        };
        entry.inputs = inputs;
        entry.results = vec![None; entry.inputs.len()];
        entry.record.chunks = entry.inputs.len() as u64;
        let complete = entry.record.input_complete;
        if entry.reduces() {
            // Its combines' results (partials) are keyed beyond its chunks (see `super::reduce`).
            entry.regrow_forest();
        }
        fill(&mut entry, results);
        // A chunk under a stored combine (a node's pre-combine) is done without a result.
        let covered = entry.covered_tasks();
        let done: Vec<bool> = (0..).zip(&entry.results).map(|(c, r)| r.is_some() || covered.contains(&c)).collect();
        entry.done = done.iter().filter(|d| **d).count() as u64;
        // Everything restored is journaled: durable, for a reduce job's combines.
        let stored_tasks = (0..).zip(&entry.results).chain((COMBINE_BASE..).zip(&entry.partials));
        entry.durable = stored_tasks.filter(|(_, r)| r.is_some()).map(|(c, _)| c).collect();
        entry.stored = entry.record.chunks;
        // The attempts of earlier lifetimes are not journaled: each chunk done counts as one.
        entry.attempts_base = entry.done;
        let requirements = requirements(&entry.record.owner, &entry.record.submission);
        // An incomplete input waits for its submitter to resume the upload.
        info!(target: LOG_TARGET, %job, chunks = entry.record.chunks, done = entry.done, input_complete = complete, "resuming job");
        if entry.forest.is_some() {
            // Combines whose inputs are not both stored wait for them; the rest run (or are
            // claimed by the node still running them: a task index means the same combine in
            // every lifetime).
            let combines = entry.restored_combines(&covered);
            self.scheduler.handle_job_restored_held(now.at, job, requirements, &done, &combines, complete);
        } else if complete {
            self.scheduler.handle_job_restored(now.at, job, requirements, &done);
        } else {
            self.scheduler.handle_job_restored_incomplete(now.at, job, requirements, &done);
        }
        let bytes = entry.inputs.iter().chain(entry.stored_results()).map(|e| e.len).sum();
        self.jobs.insert(job, entry);
        self.charge_spool_anyway(job, bytes);
        self.touched.insert(job);
        if !complete {
            self.await_resume(now, job, "the dispatcher restarted before the job's input was complete; submit it again");
        }
    }
}

/// Puts each stored result in its task's slot (a result the job has no task for is ignored).
fn fill(entry: &mut JobEntry, results: Vec<(ChunkIndex, Extent)>) {
    for (task, extent) in results {
        if let Some(slot) = entry.result_slot(task) {
            *slot = Some(extent);
        }
    }
}
