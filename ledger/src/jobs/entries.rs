//! What the ledger keeps per node and per job.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use wire::proto::{ChunkIndex, JobProgress, JobSubmission, NodeInfo, PayloadHash, PayloadKind};

use crate::scheduler::{JobRequirements, Progress};

use super::{AttachId, ClientId};
use crate::record::{Extent, JobRecord};

/// A connected node.
#[derive(Debug)]
pub(super) struct NodeEntry {
    pub(super) info: NodeInfo,
    pub(super) address: String,
    /// Payloads it has, so each is shipped once.
    pub(super) payloads: HashSet<PayloadHash>,
    pub(super) last_heartbeat: Instant,
    pub(super) busy: u32,
    pub(super) load: f32,
    pub(super) memory_available: u64,
}

impl NodeEntry {
    pub(super) fn new(info: NodeInfo, address: String, now: Instant) -> Self {
        Self {
            payloads: info.cached_payloads.iter().copied().collect(),
            memory_available: info.memory_available,
            info,
            address,
            last_heartbeat: now,
            busy: 0,
            load: 0.0,
        }
    }
}

/// A client following a job.
#[derive(Debug)]
pub(super) struct Attacher {
    pub(super) attach: AttachId,
    /// The attaching connection, to tell a submitter that follows its own job.
    pub(super) client: ClientId,
    /// The next chunk whose result this client has not been sent.
    pub(super) next: ChunkIndex,
}

/// A job the ledger knows: running, or finished and not yet fetched or expired.
#[derive(Debug)]
pub(super) struct JobEntry {
    /// When each chunk not yet assigned got its input, for the queue-wait observation.
    pub(super) queued_at: FxHashMap<ChunkIndex, Instant>,
    pub(super) record: JobRecord,
    /// Where each chunk's input is spooled, by chunk index.
    pub(super) inputs: Vec<Extent>,
    /// Where each chunk's accepted result is spooled (committed or about to be).
    pub(super) results: Vec<Option<Extent>>,
    pub(super) done: u64,
    pub(super) retries: u64,
    /// Attempts the scheduler started, as last seen (it forgets an ended job).
    pub(super) attempts: u64,
    /// Chunks done before a dispatcher restart, counted as one attempt each: the attempts of
    /// earlier lifetimes are not journaled.
    pub(super) attempts_base: u64,
    /// Chunks whose input is durable (journaled, its spool bytes synced).
    pub(super) stored: u64,
    /// Whether a connection is uploading its input now.
    pub(super) uploading: bool,
    /// While its input is incomplete and no connection uploads it: until when its submitter may
    /// resume the upload, and what the job fails with after that.
    pub(super) resume: Option<(Instant, String)>,
    /// Node run time of the results accepted since this dispatcher started.
    pub(super) run_nanos: u64,
    /// Accepted results on their way to the spool.
    pub(super) unstored: u64,
    /// Bytes of its inputs and results in the spool, counted in its owner's quota.
    pub(super) spool_bytes: u64,
    /// Bytes of attempt logs stored since this dispatcher started, held under
    /// `MAX_JOB_LOG_BYTES` (they count in `spool_bytes` too).
    pub(super) log_bytes: u64,
    /// The job succeeded but results are still being stored: it finishes when they are.
    pub(super) succeeded: bool,
    /// The connection that submitted it, until it hears `InputStored` or the verdict.
    pub(super) submitter: Option<ClientId>,
    pub(super) attachers: Vec<Attacher>,
    pub(super) last_progress: Option<JobProgress>,
    /// Why the job last could not place its chunks, so a changed reason is sent once.
    pub(super) last_blocked: Option<String>,
    /// Its output was fetched: input and results are gone, record and logs stay until it expires.
    pub(super) released: bool,
    /// A reduce job's combines (see `super::reduce`), growing as its chunks arrive.
    pub(super) forest: Option<super::reduce::Forest>,
    /// Where each of a reduce job's combines' results is spooled, by combine number.
    pub(super) partials: Vec<Option<Extent>>,
    /// A reduce job's chunks and combines whose result is journaled: a combine runs once both
    /// its inputs are (see `super::reduce`).
    pub(super) durable: FxHashSet<ChunkIndex>,
}

impl JobEntry {
    pub(super) fn new(record: JobRecord) -> Self {
        let reduces = record.submission.results == wire::proto::ResultMode::Reduce;
        Self {
            forest: reduces.then(super::reduce::Forest::default),
            partials: Vec::new(),
            record,
            inputs: Vec::new(),
            results: Vec::new(),
            done: 0,
            retries: 0,
            attempts: 0,
            attempts_base: 0,
            stored: 0,
            uploading: false,
            resume: None,
            run_nanos: 0,
            unstored: 0,
            spool_bytes: 0,
            log_bytes: 0,
            succeeded: false,
            submitter: None,
            attachers: Vec::new(),
            last_progress: None,
            last_blocked: None,
            released: false,
            durable: FxHashSet::default(),
            queued_at: FxHashMap::default(),
        }
    }

    /// Whether every chunk received so far has its result while more input is to come.
    pub(super) fn awaits_input(&self) -> bool {
        !self.record.input_complete && self.done == self.record.chunks
    }

    /// The job's counts, with the scheduler's live ones when it still knows the job.
    pub(super) fn progress(&self, scheduled: Option<Progress>) -> JobProgress {
        JobProgress {
            done: self.done,
            total: self.record.chunks,
            input_complete: self.record.input_complete,
            running: scheduled.map_or(0, |p| p.running),
            retries: self.retries,
            run_nanos: self.run_nanos,
            attempts: self.attempts_base + scheduled.map_or(self.attempts, |p| p.attempts),
            stored: self.stored,
        }
    }
}

/// What the scheduler needs of a job of `owner`.
pub(super) fn requirements(owner: &str, submission: &JobSubmission) -> JobRequirements {
    JobRequirements {
        memory_limit: submission.memory_limit,
        max_attempts: submission.max_attempts,
        priority: submission.priority,
        placement_timeout: submission.placement_timeout_ms.map(Duration::from_millis),
        platform: match &submission.kind {
            PayloadKind::Wasm => None,
            PayloadKind::Native { os, arch } => Some((os.clone(), arch.clone())),
        },
        tenant: owner.to_owned(),
        paired: submission.results == wire::proto::ResultMode::Reduce,
    }
}
