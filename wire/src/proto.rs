//! The dispy wire protocol, version 1: every message that crosses a QUIC stream.
//!
//! A connection has one bidirectional control stream, opened by the dialer, whose first message
//! is a [`Hello`] answered by a [`HelloReply`]. After that the control stream carries the
//! role-specific enums below. Bulk bytes never ride the control stream: each unidirectional
//! stream starts with a [`StreamHeader`] frame saying what follows.
//!
//! These are the only `Serialize` types in the workspace; the daemons convert them at the edge.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

mod enroll;
mod ids;

pub use enroll::{EnrollReply, EnrollRequest, RenewRequest};
pub use ids::{AttemptId, ChunkIndex, JobId, PayloadHash};

/// The protocol version carried in [`Hello`]; a peer with another version is refused. Version 5
/// added attempt logs ([`ChunkReport::log`], `Logs`, `Explain`; see [`crate::observe`]) and the
/// nodes' platform, cores and version to [`NodeStatus`]. Version 6 added the nodes' resolved
/// `shared_input_roots` and host identity to [`NodeInfo`] and [`NodeStatus`] (so submitters
/// decide whether nodes read a job's input in place) and file fingerprints to shared-input
/// chunk references ([`crate::chunk::Segment::fingerprint`]).
pub const PROTOCOL_VERSION: u32 = 6;

/// The TLS application protocol name negotiated by every dispy connection.
pub const ALPN: &[u8] = b"dispy/1";

/// Who a peer is. The dispatcher takes it from the peer's certificate, never from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The `dispy-dispatcher` daemon.
    Dispatcher,
    /// A `dispy-node` worker daemon.
    Node,
    /// A user tool such as `dispy-submit`: sees and changes only its own jobs.
    Client,
    /// A user tool with an operator's certificate (`pki issue-admin`): sees and cancels every
    /// job and drains, undrains and releases nodes.
    Operator,
}

impl Role {
    /// The lowercase name used in certificates and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Dispatcher => "dispatcher",
            Role::Node => "node",
            Role::Client => "client",
            Role::Operator => "operator",
        }
    }

    /// Parses [`Role::as_str`] output.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "dispatcher" => Some(Role::Dispatcher),
            "node" => Some(Role::Node),
            "client" => Some(Role::Client),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first message on a control stream, sent by the dialer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The role the dialer believes it has; only used to explain a refusal, the certificate decides.
    pub role: Role,
    /// Software name and version, for logs.
    pub software: String,
}

/// The dispatcher's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The connection may proceed.
    Welcome {
        /// The dispatcher's protocol version.
        protocol_version: u32,
        /// The certificate name the dispatcher saw, so a peer can tell which identity it used.
        peer_name: String,
    },
    /// The connection is refused; the dispatcher closes it after sending this.
    Refused {
        /// Human-readable reason, shown to the user as is.
        reason: String,
    },
}

/// What a node tells the dispatcher about itself right after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Stable node name (the certificate name).
    pub name: String,
    /// Host name of the machine.
    pub hostname: String,
    /// Operating system, as Rust's `std::env::consts::OS`.
    pub os: String,
    /// CPU architecture, as Rust's `std::env::consts::ARCH`.
    pub arch: String,
    /// Chunk slots this node runs at once (its cores unless configured lower).
    pub slots: u32,
    /// Logical cores of the machine.
    pub cores: u32,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Available memory in bytes at registration.
    pub memory_available: u64,
    /// `dispy-node` version.
    pub version: String,
    /// Payloads already in the node's cache, so the dispatcher does not ship them again.
    pub cached_payloads: Vec<PayloadHash>,
    /// How this node runs native payloads, shown by `dispy-submit nodes`.
    pub confinement: Confinement,
    /// The attempts this node holds from an earlier session: queued, running, or finished with
    /// a report not yet acknowledged. The dispatcher adopts each it still wants (the node keeps
    /// running it and its result counts) and answers [`DispatcherToNode::CancelAttempt`] for the
    /// rest; empty on a node's first registration.
    pub claims: Vec<Claim>,
    /// The object-store buckets (and `https://` URL prefixes) its operator lets it read
    /// (`object_store_buckets`), so submitters learn before a job runs which nodes can read an
    /// object input.
    #[serde(default)]
    pub object_store_buckets: Vec<String>,
    /// Its `shared_input_roots` as it resolved them (links and `..` resolved, missing ones left
    /// out), so a submitter can tell whether the node reads an input file in place.
    #[serde(default)]
    pub shared_input_roots: Vec<String>,
    /// Which machine (boot of a kernel) the node runs on, as `node::shared_input::host_id`
    /// computes it; a submitter on the same host computes the same. Empty when unknown.
    #[serde(default)]
    pub host_id: String,
}

/// An attempt a reconnecting node holds, as [`NodeInfo::claims`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The job.
    pub job: JobId,
    /// The chunk.
    pub chunk: ChunkIndex,
    /// The attempt the dispatcher assigned it under.
    pub attempt: AttemptId,
}

/// How a node runs native (`.so`) payloads: confined, unconfined by its operator's choice, or
/// not at all. WebAssembly payloads are sandboxed the same way on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Confinement {
    /// Native workers run under Landlock and `no_new_privs` (as `payload_user` when the node
    /// runs as root).
    Landlock,
    /// The node cannot confine, and its operator set `allow_unconfined_native = true`.
    Unconfined,
    /// The node cannot confine, so it refuses native payloads.
    Refused,
    /// The operator set `allow_native = false`: native payloads are refused outright.
    Disabled,
}

impl Confinement {
    /// Whether a node in this state runs native payloads.
    pub fn runs_native(self) -> bool {
        matches!(self, Confinement::Landlock | Confinement::Unconfined)
    }
}

impl std::fmt::Display for Confinement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Confinement::Landlock => "landlock",
            Confinement::Unconfined => "unconfined (allowed)",
            Confinement::Refused => "none: native refused",
            Confinement::Disabled => "native disabled",
        })
    }
}

/// A node's periodic health report; its arrival is also the liveness signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// One-minute load average.
    pub load: f32,
    /// Available memory in bytes.
    pub memory_available: u64,
    /// Slots currently running a chunk.
    pub busy_slots: u32,
}

/// What kind of code a payload is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayloadKind {
    /// A WebAssembly module, binary or WAT text: either the dispy ABI v1 exports or a WASI
    /// command (`_start`) run as a stdin-to-stdout filter. The node tells them apart.
    Wasm,
    /// A native shared library exporting the dispy C ABI v1, runnable only on nodes whose
    /// operating system and architecture match.
    Native {
        /// Operating system, as Rust's `std::env::consts::OS` ("linux").
        os: String,
        /// CPU architecture, as Rust's `std::env::consts::ARCH` ("x86_64", "aarch64", ...).
        arch: String,
    },
}

/// Everything a node needs to run the chunks of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job.
    pub job: JobId,
    /// The payload's content hash; the bytes arrive on a [`StreamHeader::Payload`] stream unless
    /// the node already has them.
    pub payload: PayloadHash,
    /// How to run the payload.
    pub kind: PayloadKind,
    /// Argument bytes passed to `dispy_setup` and every `dispy_run`.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// Memory limit per worker, in bytes.
    pub memory_limit: u64,
    /// Wall-clock limit per chunk, in milliseconds.
    pub chunk_timeout_ms: u64,
    /// Chunk inputs are `ChunkRef`s (`crate::chunk`) for the node to read, not bytes.
    pub shared_input: bool,
    /// The job reduces its results (`--results reduce`): the node refuses it when the payload
    /// lacks `dispy_combine`.
    #[serde(default)]
    pub reduce: bool,
}

/// Dispatcher to node, in order on the work stream ([`StreamHeader::Work`]). Everything about
/// jobs travels on this one stream so a node sees a job's start before its chunks and its end
/// after them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DispatcherToNode {
    /// Prepare to run chunks of a job: fetch the payload from the cache or the coming payload
    /// stream, compile it, then answer [`NodeToDispatcher::JobReady`] or `JobRejected`. Chunks
    /// that follow before it is ready wait on the node.
    StartJob(JobSpec),
    /// Run one chunk.
    Assign(Assignment),
    /// The job is over on this node (done, failed or cancelled): stop its chunks, free its workers.
    EndJob {
        /// The job.
        job: JobId,
    },
    /// Stop one attempt (superseded or no longer needed) and report nothing for it.
    CancelAttempt {
        /// The attempt.
        attempt: AttemptId,
    },
    /// These attempts' reports are durably stored; the node may forget them. Until then a node
    /// keeps every report it sent and sends it again on its next connection.
    Ack {
        /// The attempts.
        attempts: Vec<AttemptId>,
    },
}

/// Node to dispatcher, on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeToDispatcher {
    /// Sent once, right after the handshake (boxed: it is by far the largest message).
    Register(Box<NodeInfo>),
    /// Sent every heartbeat interval.
    Heartbeat(Heartbeat),
    /// The job's payload is compiled and its chunks can run.
    JobReady {
        /// The job.
        job: JobId,
    },
    /// The job cannot run on this node (invalid module, missing export, ...).
    JobRejected {
        /// The job.
        job: JobId,
        /// Why, in words for the user.
        error: String,
    },
    /// The node's cached copy of a payload no longer matches its hash (a damaged disk, a
    /// tampered file) and was removed: send it again on a [`StreamHeader::Payload`] stream.
    NeedPayload {
        /// The payload.
        hash: PayloadHash,
    },
    /// The node's cache deleted these payloads to stay within its bound; the dispatcher ships one
    /// again when a job on the node needs it.
    PayloadsEvicted {
        /// The payloads, none of them used by a job on the node.
        payloads: Vec<PayloadHash>,
    },
    /// The node is stopping (SIGTERM): give it no new work. It finishes the attempts it holds
    /// (up to its `stop_timeout`), waits for their acknowledgements and then closes its
    /// connection on purpose, whereupon whatever it still held is requeued at once.
    Leaving,
}

/// One chunk to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The job, started on this node by an earlier [`DispatcherToNode::StartJob`].
    pub job: JobId,
    /// The chunk's position, for logs.
    pub chunk: ChunkIndex,
    /// The attempt this run belongs to.
    pub attempt: AttemptId,
    /// The chunk's input bytes; for a combine, two results packed by [`crate::abi::combine_input`].
    pub input: Bytes,
    /// Run `dispy_combine` on the two results in `input` instead of `dispy_run` (a reduce job's
    /// combine task, whose chunk index is beyond the job's input chunks).
    #[serde(default)]
    pub combine: bool,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The payload returned this non-zero code: a deliberate error, not retried.
    PayloadError(i32),
    /// The WebAssembly guest trapped (unreachable, out-of-bounds access, ...).
    Trap,
    /// A native payload's worker process crashed (a signal such as SIGSEGV or SIGABRT) or exited
    /// on its own (the payload called `exit`).
    Crash,
    /// The chunk ran longer than the job's chunk timeout.
    Timeout,
    /// The payload tried to use more memory than the job's memory limit.
    MemoryLimit,
    /// The job's worker could not be set up (`dispy_setup` failed, instantiation failed).
    Setup,
    /// The node itself failed (a bug or a resource problem), not the payload.
    Node,
}

impl FailureKind {
    /// Whether another attempt could succeed; a payload's own error code is taken at its word.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, FailureKind::PayloadError(_))
    }
}

/// A failed attempt, as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkFailure {
    /// The class of failure.
    pub kind: FailureKind,
    /// A one-line explanation for the user.
    pub message: String,
}

impl std::fmt::Display for ChunkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The outcome of one attempt, on the node's report stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkReport {
    /// The attempt.
    pub attempt: AttemptId,
    /// The result bytes, or why there are none.
    pub outcome: Result<Bytes, ChunkFailure>,
    /// How long the chunk ran on its slot, setup excluded; 0 for a failure. Sizes `auto` chunks.
    pub run_nanos: u64,
    /// What the attempt logged (`dispy.log`, WASI stderr, native stdout and stderr), at most
    /// [`crate::observe::ATTEMPT_LOG_MAX`] bytes plus a truncation marker; empty if nothing.
    pub log: Bytes,
}

/// How results are written on the submitter's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ResultMode {
    /// All outputs concatenated in chunk order into one file.
    #[default]
    Concat,
    /// One file per chunk in an output directory.
    Files,
    /// The single result of combining every chunk's result with the payload's `dispy_combine`,
    /// adjacent ranges only, left before right (on the nodes, tree-wise as ranges complete).
    Reduce,
}

/// A job as a client submits it; the input follows on a [`StreamHeader::JobInput`] stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSubmission {
    /// A name for logs and listings.
    pub name: String,
    /// The payload's content hash; the dispatcher asks for the bytes if it lacks them.
    pub payload: PayloadHash,
    /// Payload size in bytes, checked against the dispatcher's limit before upload.
    pub payload_len: u64,
    /// How to run the payload.
    pub kind: PayloadKind,
    /// Argument bytes for the payload.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// Attempts per chunk before the job fails.
    pub max_attempts: u32,
    /// Wall-clock limit per chunk, in milliseconds.
    pub chunk_timeout_ms: u64,
    /// Memory limit per worker, in bytes.
    pub memory_limit: u64,
    /// Higher runs first.
    pub priority: i32,
    /// How long the job may wait with no eligible node before it fails, in milliseconds;
    /// `None` waits as long as it takes (the dispatcher says why in `Waiting`).
    pub placement_timeout_ms: Option<u64>,
    /// Where the submitter writes the output, so `wait JOB` from another process can default to it.
    pub output: String,
    /// How the submitter writes results.
    pub results: ResultMode,
    /// Chunk inputs are `ChunkRef`s (`crate::chunk`) naming bytes on storage every node
    /// reads at the same path, not the bytes themselves.
    pub shared_input: bool,
}

/// Client to dispatcher, on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Submit a job; the dispatcher answers [`ClientEvent::JobAccepted`] (after `NeedPayload` if
    /// it lacks the payload), the client sends the input on a [`StreamHeader::JobInput`] stream,
    /// and the dispatcher confirms with [`ClientEvent::InputStored`] once all of it is journaled.
    Submit(JobSubmission),
    /// Follow a job: the dispatcher opens a [`StreamHeader::JobOutput`] stream with every result
    /// in chunk order (from the first, even after a restart), sends progress, and ends with
    /// `JobSucceeded` or `JobFailed`.
    Attach {
        /// The job.
        job: JobId,
    },
    /// The client has the whole output; the dispatcher may delete the job's spooled data.
    Release {
        /// The job.
        job: JobId,
    },
    /// Cancel a job; answered with [`ClientEvent::Status`].
    Cancel {
        /// The job.
        job: JobId,
    },
    /// One job's state; answered with [`ClientEvent::Status`].
    Status {
        /// The job.
        job: JobId,
    },
    /// Every job the dispatcher remembers; answered with [`ClientEvent::Jobs`].
    ListJobs,
    /// Stop giving a node new work (it finishes what it holds); answered with `Nodes`.
    Drain {
        /// The node's name.
        node: String,
    },
    /// Put a drained or quarantined node back to work; answered with `Nodes`.
    Undrain {
        /// The node's name.
        node: String,
    },
    /// List connected nodes; answered with [`ClientEvent::Nodes`].
    ListNodes,
    /// Resume the upload of a job's input after the connection that carried it was lost (the
    /// dispatcher restarted, or the network dropped it): answered with
    /// [`ClientEvent::InputResumed`], after which the client sends the chunks from `stored` on
    /// a new [`StreamHeader::JobInput`] stream, or with [`ClientEvent::Retry`] while the lost
    /// connection's upload has not ended yet. Only the job's owner may resume it.
    ResumeInput {
        /// The job.
        job: JobId,
    },
    /// The logs of a job's attempts stored after cursor `from` (0: from the start), of one chunk
    /// or all; answered with [`ClientEvent::Logs`]. A follower asks again from the page's `next`.
    Logs {
        /// The job.
        job: JobId,
        /// Only this chunk's attempts.
        chunk: Option<ChunkIndex>,
        /// The cursor of an earlier page.
        from: u64,
    },
    /// Why a job waits and how its chunks failed; answered with [`ClientEvent::Explanation`].
    Explain {
        /// The job.
        job: JobId,
    },
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Input arriving or chunks running.
    Running,
    /// Every chunk succeeded; results are kept until released or expired.
    Succeeded,
    /// The job failed; no results are kept.
    Failed(JobFailure),
    /// A user cancelled the job.
    Cancelled,
}

impl JobState {
    /// Whether the job is over.
    pub fn is_finished(&self) -> bool {
        !matches!(self, JobState::Running)
    }

    /// A one-word name for tables.
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed(_) => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// A job as `status` and `jobs` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job.
    pub job: JobId,
    /// Its name.
    pub name: String,
    /// The certificate name that submitted it (empty for a job from before jobs had owners).
    pub owner: String,
    /// Its state.
    pub state: JobState,
    /// Its counts.
    pub progress: JobProgress,
    /// When it was submitted, milliseconds since the Unix epoch.
    pub submitted_unix_ms: u64,
    /// Why it is waiting, when no node can take its chunks right now.
    pub blocked: Option<String>,
    /// Where its submitter asked for the output.
    pub output: String,
    /// How its results are to be written.
    pub results: ResultMode,
}

/// Progress of a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobProgress {
    /// Chunks with an accepted result.
    pub done: u64,
    /// Chunks known so far (final once the input stream has ended).
    pub total: u64,
    /// Whether all input has arrived, so `total` is final.
    pub input_complete: bool,
    /// Attempts running or queued on nodes.
    pub running: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// The nodes' run time over the accepted results, summed, so a submitter can size `auto`
    /// chunks; counts only results accepted since the dispatcher started.
    pub run_nanos: u64,
    /// Attempts started, speculative copies and reruns included, so a user can check how much
    /// work the job cost. After a dispatcher restart it counts one attempt per chunk done before
    /// the restart plus those started since.
    pub attempts: u64,
    /// Chunks whose input is durable at the dispatcher: a submitter resuming an upload after a
    /// restart resends from here, so it may forget the chunks before.
    pub stored: u64,
}

/// One failed attempt in a job failure report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptFailure {
    /// The node's name.
    pub node: String,
    /// What went wrong.
    pub failure: ChunkFailure,
    /// The last lines of the attempt's log ([`crate::observe::tail`]); empty if it logged nothing.
    #[serde(default)]
    pub log_tail: Vec<String>,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobFailure {
    /// A chunk used up its attempts (or failed with a non-retryable error).
    Chunk {
        /// The chunk.
        chunk: ChunkIndex,
        /// Every failed attempt, oldest first.
        attempts: Vec<AttemptFailure>,
    },
    /// No node could take the job's chunks within its placement timeout.
    NoEligibleNode {
        /// Why, e.g. "0 eligible nodes: 2 connected, 2 lack 4 GiB free memory".
        reason: String,
    },
    /// Every node that tried refused the payload (invalid module, missing export, ...).
    Rejected {
        /// The node's explanation.
        error: String,
    },
    /// Something else, in words.
    Other {
        /// What happened.
        message: String,
    },
}

impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobFailure::Chunk { chunk, attempts } => {
                write!(f, "chunk {chunk} failed after {} attempt(s)", attempts.len())?;
                for a in attempts {
                    write!(f, "; on node {}: {}", a.node, a.failure)?;
                    if let Some(last) = a.log_tail.last() {
                        write!(f, " (log: {last})")?;
                    }
                }
                Ok(())
            }
            JobFailure::NoEligibleNode { reason } => write!(f, "no eligible node: {reason}"),
            JobFailure::Rejected { error } => write!(f, "payload rejected: {error}"),
            JobFailure::Other { message } => f.write_str(message),
        }
    }
}

/// A node as `dispy-submit nodes` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Remote address as the dispatcher sees it.
    pub address: String,
    /// Host name the node reported.
    pub hostname: String,
    /// Operating system, as Rust's `std::env::consts::OS`.
    pub os: String,
    /// CPU architecture, as Rust's `std::env::consts::ARCH`.
    pub arch: String,
    /// Logical cores of the machine.
    pub cores: u32,
    /// `dispy-node` version.
    pub version: String,
    /// Chunk slots.
    pub slots: u32,
    /// Slots running a chunk at the last heartbeat.
    pub busy: u32,
    /// Attempts the dispatcher has placed on the node (running or queued there) and holds no
    /// result for yet: with `busy`, what `drain --wait` waits to see reach 0.
    #[serde(default)]
    pub in_flight: u32,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Available memory in bytes at the last heartbeat.
    pub memory_available: u64,
    /// One-minute load average.
    pub load: f32,
    /// Milliseconds since the last heartbeat.
    pub last_heartbeat_ms: u64,
    /// Lifecycle state, e.g. "ready".
    pub state: String,
    /// How the node runs native payloads, as [`Confinement`]'s text (e.g. "landlock").
    pub confinement: String,
    /// When the node's certificate expires, in seconds since the Unix epoch (0: unknown): the
    /// one it connected with, or the one the dispatcher renewed it with since.
    #[serde(default)]
    pub cert_expires_unix: u64,
    /// The object-store buckets and URL prefixes the node may read ([`NodeInfo`]'s).
    #[serde(default)]
    pub object_store_buckets: Vec<String>,
    /// The directories the node reads shared input below ([`NodeInfo`]'s, resolved).
    #[serde(default)]
    pub shared_input_roots: Vec<String>,
    /// The node's host identity ([`NodeInfo::host_id`]).
    #[serde(default)]
    pub host_id: String,
}

/// Dispatcher to client, on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientEvent {
    /// The dispatcher lacks the submitted payload: send it on a [`StreamHeader::Payload`] stream.
    NeedPayload,
    /// The job exists; send its input on a [`StreamHeader::JobInput`] stream.
    JobAccepted {
        /// The new job's id.
        job: JobId,
    },
    /// All of the job's input is journaled; the client may now disconnect.
    InputStored {
        /// The job.
        job: JobId,
        /// Its number of chunks.
        chunks: u64,
    },
    /// Answer to `Status` and `Cancel`.
    Status(JobSummary),
    /// Answer to `ListJobs`.
    Jobs(Vec<JobSummary>),
    /// Progress, sent at most a few times a second.
    Progress(JobProgress),
    /// The job has work that no node can take right now, and why.
    Waiting {
        /// E.g. "0 eligible nodes: 3 connected, 2 lack 4.0 GiB free memory, 1 drained".
        reason: String,
    },
    /// Every chunk succeeded; the output stream carries all results.
    JobSucceeded {
        /// Final counts.
        progress: JobProgress,
    },
    /// The job failed; no output should be kept.
    JobFailed {
        /// Why.
        failure: JobFailure,
    },
    /// Answer to [`ClientRequest::ListNodes`].
    Nodes(Vec<NodeStatus>),
    /// Answer to [`ClientRequest::ResumeInput`]: send the input from chunk `stored` on, unless
    /// `complete` says the dispatcher needs no more (all of it is stored, or the job ended).
    InputResumed {
        /// The job.
        job: JobId,
        /// Chunks whose input is durable; the next chunk sent gets this index.
        stored: u64,
        /// Whether no more input is wanted.
        complete: bool,
    },
    /// The request cannot be served yet but may be soon (an upload resumed before the dispatcher
    /// noticed that the connection carrying it was lost): ask again after a pause.
    Retry {
        /// Why, in words for the user.
        message: String,
    },
    /// Answer to [`ClientRequest::Logs`].
    Logs(crate::observe::LogPage),
    /// Answer to [`ClientRequest::Explain`].
    Explanation(Box<crate::observe::Explanation>),
    /// The request was refused.
    Error {
        /// Why, in words for the user.
        message: String,
    },
}

/// The first frame of every unidirectional stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamHeader {
    /// Payload bytes follow, raw, until the end of the stream.
    Payload {
        /// Their content hash, verified by the receiver.
        hash: PayloadHash,
        /// Their length, checked against the receiver's limit first.
        len: u64,
    },
    /// Client to dispatcher: one raw frame per chunk input, in chunk order, then the stream ends.
    JobInput {
        /// The job.
        job: JobId,
    },
    /// Dispatcher to client: one raw frame per chunk result, in chunk order.
    JobOutput {
        /// The job.
        job: JobId,
    },
    /// Dispatcher to node: [`DispatcherToNode`] frames for the life of the connection.
    Work,
    /// Node to dispatcher: [`ChunkReport`] frames for the life of the connection.
    Reports,
}
