//! What the ledger asks the journal to keep: each job's record, where its chunks' inputs and
//! results are spooled, and the operator's holds on node names (drain, quarantine), gathered
//! into one [`Batch`] per commit. The journal turns these into its own versioned rows at the
//! edge.

use wire::proto::{ChunkIndex, JobId, JobState, JobSubmission};

pub use crate::scheduler::NodeHold;

/// Where a chunk's bytes are in a spool file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A job as the journal records it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The certificate name that submitted it; empty for jobs journaled before jobs had owners,
    /// which only operators see.
    pub owner: String,
    /// What was submitted.
    pub submission: JobSubmission,
    /// Where it is.
    pub state: JobState,
    /// Chunks whose input is stored.
    pub chunks: u64,
    /// Whether all input is stored (`chunks` is final).
    pub input_complete: bool,
    /// When it was submitted, milliseconds since the Unix epoch.
    pub submitted_unix_ms: u64,
    /// When it finished, milliseconds since the Unix epoch.
    pub finished_unix_ms: Option<u64>,
}

/// Changes to commit together.
#[derive(Debug, Default)]
pub struct Batch {
    /// The next job id to hand out, if it changed.
    pub next_job: Option<u64>,
    /// Jobs whose record changed, with the new record.
    pub jobs: Vec<(JobId, JobRecord)>,
    /// Where chunks' inputs are spooled.
    pub inputs: Vec<(JobId, ChunkIndex, Extent)>,
    /// Where chunks' accepted results are spooled.
    pub results: Vec<(JobId, ChunkIndex, Extent)>,
    /// Jobs to forget entirely.
    pub deleted: Vec<JobId>,
    /// Finished jobs whose output was fetched: their input and result extents go, their record
    /// stays (with their logs) until they expire.
    pub released: Vec<JobId>,
    /// Node names whose hold changed, in order: `Some` holds the name, `None` releases it.
    pub holds: Vec<(String, Option<NodeHold>)>,
}

impl Batch {
    /// Records the next job id to hand out.
    pub fn set_next_job(&mut self, next: u64) {
        self.next_job = Some(next);
    }

    /// Records a job's (new) record.
    pub fn put_job(&mut self, job: JobId, record: JobRecord) {
        self.jobs.push((job, record));
    }

    /// Records where a chunk's input is spooled.
    pub fn put_input(&mut self, job: JobId, chunk: ChunkIndex, extent: Extent) {
        self.inputs.push((job, chunk, extent));
    }

    /// Records where a chunk's accepted result is spooled.
    pub fn put_result(&mut self, job: JobId, chunk: ChunkIndex, extent: Extent) {
        self.results.push((job, chunk, extent));
    }

    /// Forgets a job entirely.
    pub fn delete_job(&mut self, job: JobId) {
        self.deleted.push(job);
    }

    /// Records a node name's hold, or with `None` (or a hold that holds nothing) its release.
    pub fn put_hold(&mut self, name: &str, hold: Option<NodeHold>) {
        self.holds.push((name.to_owned(), hold.filter(NodeHold::is_held)));
    }

    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.next_job.is_none()
            && self.jobs.is_empty()
            && self.inputs.is_empty()
            && self.results.is_empty()
            && self.deleted.is_empty()
            && self.released.is_empty()
            && self.holds.is_empty()
    }

    /// Jobs this batch touches, so a failed commit can be charged to them.
    pub fn touched_jobs(&self) -> Vec<JobId> {
        let mut jobs: Vec<JobId> = self
            .jobs
            .iter()
            .map(|(j, _)| *j)
            .chain(self.inputs.iter().map(|(j, _, _)| *j))
            .chain(self.results.iter().map(|(j, _, _)| *j))
            .collect();
        jobs.sort_unstable();
        jobs.dedup();
        jobs
    }
}
