//! Why the core refuses a client's request, as values; the server renders them into the
//! `ClientEvent::Error` a client reads.

use thiserror::Error;
use wire::proto::JobId;

/// A client request the core cannot carry out.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The job is not known here (never submitted, or forgotten when its retention ended).
    #[error("no job {0} here (finished jobs are forgotten when their retention ends)")]
    UnknownJob(JobId),
    /// The job's output was fetched and deleted; its record and logs stay until it expires.
    #[error("job {0}'s output was already fetched (its status, logs and explain stay until it expires)")]
    OutputFetched(JobId),
    /// A submission named a payload the dispatcher does not hold.
    #[error("payload was not uploaded")]
    PayloadNotUploaded,
    /// A native payload for a platform no connected node has.
    #[error("no node can run this {os}/{arch} payload: {reason}")]
    NoPlatform {
        /// The payload's operating system.
        os: String,
        /// The payload's architecture.
        arch: String,
        /// Why no connected node is eligible.
        reason: String,
    },
    /// Nodes are connected and none could ever run the job (too little memory in total, no
    /// slots): waiting would not help unless other nodes join.
    #[error("no connected node could ever run this job: {0}")]
    NoEligibleNode(String),
    /// The job's input spool file could not be created.
    #[error("dispatcher cannot store the job's input: {0}")]
    InputStorage(std::io::Error),
    /// The job's results spool file could not be opened.
    #[error("cannot read the job's results: {0}")]
    ResultsUnreadable(std::io::Error),
    /// The job's logs file could not be read.
    #[error("cannot read the job's logs: {0}")]
    LogsUnreadable(std::io::Error),
    /// The journal failed to record the state an answer describes.
    #[error("dispatcher storage failed before this answer was recorded: {0}")]
    Unrecorded(String),
    /// A drain or undrain named a node that is not connected and not held.
    #[error("no node named {0:?} is connected (and none of that name is drained or quarantined)")]
    UnknownNode(String),
    /// A request only operators may make, from a client.
    #[error("only an operator may {0}; {1:?} has a client certificate (operators use one from `dispy-dispatcher pki issue-admin`)")]
    NotOperator(&'static str, String),
    /// A quota of the submitter's is reached.
    #[error("refused: {0}")]
    Quota(super::tenants::Exceeded),
    /// An upload was resumed while the connection that carried it still counts as uploading
    /// (the dispatcher has not noticed yet that it was lost); asking again shortly succeeds.
    #[error("job {0}'s input is still being received on another connection")]
    UploadInProgress(JobId),
}

impl Refusal {
    /// Whether the same request may succeed if made again shortly, so a client retries it.
    pub fn is_transient(&self) -> bool {
        matches!(self, Refusal::UploadInProgress(_))
    }
}
