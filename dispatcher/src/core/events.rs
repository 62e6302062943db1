//! What passes between the connection tasks and the core: the closed [`Event`] enum the core
//! handles, and the commands it sends back down each connection's channel.

use std::sync::Arc;

use bytes::Bytes;
use ledger::record::Extent;
use ledger::scheduler::NodeId;
use tokio::sync::{mpsc, oneshot};
use wire::proto::{
    AttemptId, ChunkIndex, ChunkReport, ClientEvent, DispatcherToNode, JobId, JobSubmission, JobSummary, NodeInfo,
    NodeStatus, NodeToDispatcher, PayloadHash,
};

pub(crate) use ledger::jobs::AttachCommand as ClientCommand;
use ledger::jobs::{Caller, Resumed};

use super::Refusal;
use crate::liveness::LastHeard;
use crate::spool::{Appender, Reader};

/// A chunk's input: still in memory from its upload ([`super::input_cache`]), or in the spool,
/// read by the node connection task just before it is sent, so inputs waiting for a slow link
/// take no memory.
#[derive(Debug, Clone)]
pub(crate) enum InputRef {
    /// The bytes, kept since the upload appended them to the spool.
    Cached(Bytes),
    /// Where they are in the job's input file.
    Spooled { reader: Arc<Reader>, extent: Extent },
}

impl InputRef {
    /// The input's bytes.
    pub(crate) fn read(&self) -> std::io::Result<Bytes> {
        match self {
            InputRef::Cached(bytes) => Ok(bytes.clone()),
            InputRef::Spooled { reader, extent } => reader.read(*extent),
        }
    }
}

/// What the core tells a node connection to do.
#[derive(Debug)]
pub(crate) enum NodeCommand {
    /// Send on the work stream.
    Send(DispatcherToNode),
    /// Send a chunk on the work stream, reading its input from the spool first unless cached.
    Assign { job: JobId, chunk: ChunkIndex, attempt: AttemptId, input: InputRef },
    /// Open a payload stream with these bytes.
    Payload(PayloadHash, Bytes),
    /// Close the connection.
    Close(String),
}

/// Where an accepted (or resumed) job's input goes.
#[derive(Debug)]
pub(crate) struct Upload {
    /// The new job.
    pub(crate) job: JobId,
    /// Its input spool file.
    pub(crate) appender: Appender,
    /// Resolves when the job ends before its input does (cancelled, failed, over its owner's
    /// spool quota): the upload stops taking bytes.
    pub(crate) stopped: oneshot::Receiver<()>,
}

/// What an attaching client needs besides the command stream.
#[derive(Debug)]
pub(crate) struct Attachment {
    /// Where the job's results are.
    pub(crate) results: Option<Reader>,
}

/// Everything that can happen to the core.
#[derive(Debug)]
pub(crate) enum Event {
    /// A node finished its handshake and registration.
    NodeRegistered {
        info: NodeInfo,
        address: String,
        commands: mpsc::UnboundedSender<NodeCommand>,
        /// Stamped by the connection task as frames arrive.
        heard: LastHeard,
        reply: oneshot::Sender<NodeId>,
    },
    /// A control message from a registered node.
    NodeMessage { node: NodeId, msg: NodeToDispatcher },
    /// A chunk report from a registered node.
    NodeReport { node: NodeId, report: ChunkReport },
    /// A node's connection ended: closed on purpose (`lost` false: the node left, or the
    /// dispatcher closed it), or lost to a timeout or reset (`lost`: the node may be running its
    /// chunks still and come back for them).
    NodeClosed { node: NodeId, reason: String, lost: bool },
    /// A client submits a job; the reply says where to spool its input.
    Submit {
        caller: Caller,
        submission: JobSubmission,
        submitter: mpsc::UnboundedSender<ClientEvent>,
        reply: oneshot::Sender<Result<Upload, Refusal>>,
    },
    /// The next chunk input of a job was spooled here; `bytes` are what was appended, for
    /// the core's write-through cache.
    Input { job: JobId, extent: Extent, bytes: Bytes },
    /// A job's input ended; `sync` is its spool file, made durable by the journal writer with
    /// the commit that records the input complete (not on the job's path: chunks already run).
    InputEnd { job: JobId, sync: std::fs::File },
    /// A job's input could not be received or stored.
    InputFailed { job: JobId, error: String },
    /// The connection uploading a job's input was lost before the input ended.
    InputInterrupted { job: JobId },
    /// A client resumes the upload of a job's input; the reply says from which chunk, with where
    /// to spool the rest unless no more is wanted.
    ResumeInput {
        caller: Caller,
        job: JobId,
        submitter: mpsc::UnboundedSender<ClientEvent>,
        reply: oneshot::Sender<Result<(Resumed, Option<Upload>), Refusal>>,
    },
    /// A client follows a job.
    Attach {
        caller: Caller,
        job: JobId,
        commands: mpsc::UnboundedSender<ClientCommand>,
        /// The connection's events, the same channel a submitter on it gave.
        client: mpsc::UnboundedSender<ClientEvent>,
        reply: oneshot::Sender<Result<Attachment, Refusal>>,
    },
    /// A client has a job's whole output.
    Release { caller: Caller, job: JobId },
    /// A client cancels a job.
    Cancel { caller: Caller, job: JobId, reply: oneshot::Sender<Result<JobSummary, Refusal>> },
    /// `dispy-submit status`.
    Status { caller: Caller, job: JobId, reply: oneshot::Sender<Result<JobSummary, Refusal>> },
    /// `dispy-submit jobs`.
    ListJobs { caller: Caller, reply: oneshot::Sender<Result<Vec<JobSummary>, Refusal>> },
    /// `dispy-submit nodes`.
    ListNodes { reply: oneshot::Sender<Vec<NodeStatus>> },
    /// `dispy-submit drain` / `undrain`.
    Drain { caller: Caller, node: String, drain: bool, reply: oneshot::Sender<Result<Vec<NodeStatus>, Refusal>> },
    /// `dispy-submit logs`: a job's attempt logs after a cursor.
    Logs {
        caller: Caller,
        job: JobId,
        chunk: Option<u64>,
        from: u64,
        reply: oneshot::Sender<Result<wire::observe::LogPage, Refusal>>,
    },
    /// `dispy-submit explain`.
    Explain { caller: Caller, job: JobId, reply: oneshot::Sender<Result<Box<wire::observe::Explanation>, Refusal>> },
}
