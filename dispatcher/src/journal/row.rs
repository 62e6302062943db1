//! The journal's on-disk job row, versioned where it lives and separate from the wire types: a
//! change to a protocol message never changes what a journal holds, and a journal written by an
//! older dispatcher still opens.
//!
//! Version 1 is MessagePack with structs as arrays, field for field the layout the job record had
//! when it was still a wire type, so journals written before the row had its own type read as
//! version 1. Version 2 adds the job's owner around a version 1 row; a journal of version 1 is
//! rewritten as version 2 when it is opened, its jobs owned by nobody (only operators see them).
//! Version 3 keeps version 2's layout and adds the `Reduce` results mode (a reduce job's
//! combines' results are ordinary result rows, keyed by chunk indices beyond its input chunks);
//! older journals are rewritten as version 3 when opened, unchanged but for the version.
//! Version 4 keeps the layout and keys a reduce job's combines' results by its combine forest
//! (`ledger::jobs::COMBINE_BASE + c`); older journals are rewritten as version 4 when opened,
//! reduce jobs' results moved as `super::migrate` says. Version 5 keeps the layout and keeps
//! chunks' extents in runs (`super::extents`); older journals' per-chunk extent rows are
//! converted when opened.
//!
//! A job without a `placement_timeout` (it waits for a node as long as it takes) stores
//! [`NO_PLACEMENT_TIMEOUT`] there, so the layout did not change; rows from before that existed
//! all carry the timeout their submitter had (30 s by default then).

use serde::{Deserialize, Serialize};
use wire::proto::{
    AttemptFailure, ChunkFailure, FailureKind, JobFailure, JobState, JobSubmission, PayloadHash, PayloadKind,
    ResultMode,
};

use super::{JobRecord, NodeHold};

/// The row version this dispatcher writes.
pub(super) const CURRENT_VERSION: u64 = 5;

/// `placement_timeout_ms` of a job that waits for a node as long as it takes.
pub(super) const NO_PLACEMENT_TIMEOUT: u64 = u64::MAX;

/// Encodes a record as a current-version row.
pub(super) fn encode(record: &JobRecord) -> Vec<u8> {
    let row = JobRowV2 { owner: record.owner.clone(), job: JobRowV1::from(record) };
    // Encoding a row cannot fail: every field is a plain value.
    rmp_serde::to_vec(&row).unwrap_or_default()
}

/// Decodes a row of `version`.
pub(super) fn decode(version: u64, bytes: &[u8]) -> Result<JobRecord, String> {
    match version {
        1 => rmp_serde::from_slice::<JobRowV1>(bytes).map(JobRecord::from).map_err(|e| e.to_string()),
        // Versions 3 to 5 have version 2's layout; only `results` may now say `Reduce`.
        2..=5 => rmp_serde::from_slice::<JobRowV2>(bytes).map(JobRecord::from).map_err(|e| e.to_string()),
        other => Err(format!("row version {other} is newer than this dispatcher understands ({CURRENT_VERSION})")),
    }
}

/// A node name's hold, as the `node_holds` table keeps it: MessagePack of [`HoldRowV1`], a
/// version number first so the row can change without a journal-wide migration.
pub(super) fn encode_hold(hold: &NodeHold) -> Vec<u8> {
    let row = HoldRowV1 { version: 1, drained: hold.drained, quarantine: hold.quarantine.clone() };
    // Encoding a row cannot fail: every field is a plain value.
    rmp_serde::to_vec(&row).unwrap_or_default()
}

/// Decodes a `node_holds` row.
pub(super) fn decode_hold(bytes: &[u8]) -> Result<NodeHold, String> {
    let row: HoldRowV1 = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
    if row.version != 1 {
        return Err(format!("hold row version {} is newer than this dispatcher understands (1)", row.version));
    }
    Ok(NodeHold { drained: row.drained, quarantine: row.quarantine })
}

#[derive(Serialize, Deserialize)]
struct HoldRowV1 {
    version: u32,
    drained: bool,
    quarantine: Option<String>,
}

/// Version 2: the owner, then the version 1 row.
#[derive(Serialize, Deserialize)]
struct JobRowV2 {
    owner: String,
    job: JobRowV1,
}

impl From<JobRowV2> for JobRecord {
    fn from(row: JobRowV2) -> Self {
        Self { owner: row.owner, ..JobRecord::from(row.job) }
    }
}

#[derive(Serialize, Deserialize)]
struct JobRowV1 {
    submission: SubmissionV1,
    state: StateV1,
    chunks: u64,
    input_complete: bool,
    submitted_unix_ms: u64,
    finished_unix_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct SubmissionV1 {
    name: String,
    payload: [u8; 32],
    payload_len: u64,
    kind: KindV1,
    #[serde(with = "serde_bytes")]
    args: Vec<u8>,
    max_attempts: u32,
    chunk_timeout_ms: u64,
    memory_limit: u64,
    priority: i32,
    placement_timeout_ms: u64,
    output: String,
    results: ResultsV1,
    shared_input: bool,
}

#[derive(Serialize, Deserialize)]
enum KindV1 {
    Wasm,
    Native { os: String, arch: String },
}

#[derive(Serialize, Deserialize)]
enum ResultsV1 {
    Concat,
    Files,
    /// Version 3 on: `results = "reduce"`. A dispatcher that knows only version 2 refuses the
    /// journal (its version) instead of misreading a reduce job.
    Reduce,
}

#[derive(Serialize, Deserialize)]
enum StateV1 {
    Running,
    Succeeded,
    Failed(FailureV1),
    Cancelled,
}

#[derive(Serialize, Deserialize)]
enum FailureV1 {
    Chunk { chunk: u64, attempts: Vec<AttemptV1> },
    NoEligibleNode { reason: String },
    Rejected { error: String },
    Other { message: String },
}

#[derive(Serialize, Deserialize)]
struct AttemptV1 {
    node: String,
    failure: ChunkFailureV1,
    /// Added after v1 shipped: rows written before lack it and read as no lines.
    #[serde(default)]
    log_tail: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct ChunkFailureV1 {
    kind: FailureKindV1,
    message: String,
}

#[derive(Serialize, Deserialize)]
enum FailureKindV1 {
    PayloadError(i32),
    Trap,
    Crash,
    Timeout,
    MemoryLimit,
    Setup,
    Node,
}

impl From<&JobRecord> for JobRowV1 {
    fn from(record: &JobRecord) -> Self {
        let s = &record.submission;
        Self {
            submission: SubmissionV1 {
                name: s.name.clone(),
                payload: s.payload.0,
                payload_len: s.payload_len,
                kind: match &s.kind {
                    PayloadKind::Wasm => KindV1::Wasm,
                    PayloadKind::Native { os, arch } => KindV1::Native { os: os.clone(), arch: arch.clone() },
                },
                args: s.args.clone(),
                max_attempts: s.max_attempts,
                chunk_timeout_ms: s.chunk_timeout_ms,
                memory_limit: s.memory_limit,
                priority: s.priority,
                placement_timeout_ms: s.placement_timeout_ms.unwrap_or(NO_PLACEMENT_TIMEOUT),
                output: s.output.clone(),
                results: match s.results {
                    ResultMode::Concat => ResultsV1::Concat,
                    ResultMode::Files => ResultsV1::Files,
                    ResultMode::Reduce => ResultsV1::Reduce,
                },
                shared_input: s.shared_input,
            },
            state: match &record.state {
                JobState::Running => StateV1::Running,
                JobState::Succeeded => StateV1::Succeeded,
                JobState::Failed(failure) => StateV1::Failed(FailureV1::from(failure)),
                JobState::Cancelled => StateV1::Cancelled,
            },
            chunks: record.chunks,
            input_complete: record.input_complete,
            submitted_unix_ms: record.submitted_unix_ms,
            finished_unix_ms: record.finished_unix_ms,
        }
    }
}

impl From<JobRowV1> for JobRecord {
    fn from(row: JobRowV1) -> Self {
        let s = row.submission;
        Self {
            owner: String::new(),
            submission: JobSubmission {
                name: s.name,
                payload: PayloadHash(s.payload),
                payload_len: s.payload_len,
                kind: match s.kind {
                    KindV1::Wasm => PayloadKind::Wasm,
                    KindV1::Native { os, arch } => PayloadKind::Native { os, arch },
                },
                args: s.args,
                max_attempts: s.max_attempts,
                chunk_timeout_ms: s.chunk_timeout_ms,
                memory_limit: s.memory_limit,
                priority: s.priority,
                placement_timeout_ms: Some(s.placement_timeout_ms).filter(|&t| t != NO_PLACEMENT_TIMEOUT),
                output: s.output,
                results: match s.results {
                    ResultsV1::Concat => ResultMode::Concat,
                    ResultsV1::Files => ResultMode::Files,
                    ResultsV1::Reduce => ResultMode::Reduce,
                },
                shared_input: s.shared_input,
            },
            state: match row.state {
                StateV1::Running => JobState::Running,
                StateV1::Succeeded => JobState::Succeeded,
                StateV1::Failed(failure) => JobState::Failed(failure.into()),
                StateV1::Cancelled => JobState::Cancelled,
            },
            chunks: row.chunks,
            input_complete: row.input_complete,
            submitted_unix_ms: row.submitted_unix_ms,
            finished_unix_ms: row.finished_unix_ms,
        }
    }
}

impl From<&JobFailure> for FailureV1 {
    fn from(failure: &JobFailure) -> Self {
        match failure {
            JobFailure::Chunk { chunk, attempts } => FailureV1::Chunk {
                chunk: *chunk,
                attempts: attempts
                    .iter()
                    .map(|a| AttemptV1 {
                        node: a.node.clone(),
                        failure: ChunkFailureV1 {
                            kind: FailureKindV1::from(&a.failure.kind),
                            message: a.failure.message.clone(),
                        },
                        log_tail: a.log_tail.clone(),
                    })
                    .collect(),
            },
            JobFailure::NoEligibleNode { reason } => FailureV1::NoEligibleNode { reason: reason.clone() },
            JobFailure::Rejected { error } => FailureV1::Rejected { error: error.clone() },
            JobFailure::Other { message } => FailureV1::Other { message: message.clone() },
        }
    }
}

impl From<FailureV1> for JobFailure {
    fn from(failure: FailureV1) -> Self {
        match failure {
            FailureV1::Chunk { chunk, attempts } => JobFailure::Chunk {
                chunk,
                attempts: attempts
                    .into_iter()
                    .map(|a| AttemptFailure {
                        node: a.node,
                        failure: ChunkFailure { kind: a.failure.kind.into(), message: a.failure.message },
                        log_tail: a.log_tail,
                    })
                    .collect(),
            },
            FailureV1::NoEligibleNode { reason } => JobFailure::NoEligibleNode { reason },
            FailureV1::Rejected { error } => JobFailure::Rejected { error },
            FailureV1::Other { message } => JobFailure::Other { message },
        }
    }
}

impl From<&FailureKind> for FailureKindV1 {
    fn from(kind: &FailureKind) -> Self {
        match kind {
            FailureKind::PayloadError(code) => FailureKindV1::PayloadError(*code),
            FailureKind::Trap => FailureKindV1::Trap,
            FailureKind::Crash => FailureKindV1::Crash,
            FailureKind::Timeout => FailureKindV1::Timeout,
            FailureKind::MemoryLimit => FailureKindV1::MemoryLimit,
            FailureKind::Setup => FailureKindV1::Setup,
            FailureKind::Node => FailureKindV1::Node,
        }
    }
}

impl From<FailureKindV1> for FailureKind {
    fn from(kind: FailureKindV1) -> Self {
        match kind {
            FailureKindV1::PayloadError(code) => FailureKind::PayloadError(code),
            FailureKindV1::Trap => FailureKind::Trap,
            FailureKindV1::Crash => FailureKind::Crash,
            FailureKindV1::Timeout => FailureKind::Timeout,
            FailureKindV1::MemoryLimit => FailureKind::MemoryLimit,
            FailureKindV1::Setup => FailureKind::Setup,
            FailureKindV1::Node => FailureKind::Node,
        }
    }
}
