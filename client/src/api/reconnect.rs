//! When a dispatcher goes away: the client's errors, which of them only mean the dispatcher is
//! gone for now (worth reconnecting), the pauses between attempts, and words for QUIC's
//! connection errors.

use std::path::PathBuf;
use std::time::Duration;

use common::net::StreamError;
use thiserror::Error;
use wire::proto::{JobFailure, JobId};

use crate::split::SplitError;

/// How long a client keeps trying to reach a dispatcher it lost, unless told otherwise.
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// QUIC application close codes of a dispatcher that may be back soon: `0` (shutting down) and
/// `5` (too many connections with this certificate, while old ones time out).
const TRANSIENT_CLOSE_CODES: [u32; 2] = [0, 5];

/// The pauses between attempts to reach a dispatcher: 100 ms, doubling up to 2 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first pause.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// The longest pause.
    pub const MAX: Duration = Duration::from_secs(2);

    /// A backoff at its first pause.
    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The next pause.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// What can go wrong for a client.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The dispatcher could not be reached for now (not running, restarting, the network down):
    /// worth trying again.
    #[error("failed to connect to the dispatcher at {address}: {reason}")]
    Unreachable {
        /// Where we dialled.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// The dispatcher was lost and did not come back within the reconnect timeout.
    #[error(
        "lost the dispatcher at {address} and could not reconnect within {}s ({last}); a submitted job goes on \
         there once it is back: `dispy-submit wait JOB` reattaches",
        .after.as_secs()
    )]
    ReconnectTimeout {
        /// Where we dialled.
        address: String,
        /// How long we tried.
        after: Duration,
        /// The last failure.
        last: String,
    },
    /// An upload cut off by a lost dispatcher cannot go on from where the dispatcher stopped.
    #[error("job {job}'s input upload cannot resume: {reason}; submit the job again")]
    CannotResume {
        /// The job.
        job: JobId,
        /// Why.
        reason: String,
    },
    /// The dispatcher could not be reached or the TLS handshake failed.
    #[error("failed to connect to the dispatcher at {address}: {reason}")]
    Connect {
        /// Where we dialled.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// The dispatcher refused this client or request.
    #[error("the dispatcher refused: {0}")]
    Refused(String),
    /// Nodes are connected, and none may read the job's object input (its bucket is in no
    /// node's `object_store_buckets`); says which nodes lack what.
    #[error("{0}; refusing to submit (add the bucket to a node's object_store_buckets)")]
    Unreadable(String),
    /// The connection failed mid-conversation.
    #[error("lost the dispatcher: {0}")]
    Stream(#[from] StreamError),
    /// The payload file could not be read.
    #[error("payload file {path}: {source}")]
    Payload {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The payload file is not something dispy can run.
    #[error("payload file {path}: {reason}")]
    BadPayload {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A [`JobStream`](super::JobStream) hands back each chunk's result as it arrives, so it
    /// cannot reduce them.
    #[error("a job stream hands back each chunk's result as it arrives and cannot reduce them (results = \"reduce\"); use `run` or `submit` for a reduce job")]
    ReduceStream,
    /// The input could not be read or split.
    #[error(transparent)]
    Input(#[from] SplitError),
    /// The output could not be written.
    #[error("output {path}: {source}")]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `last` was asked for, and the dispatcher remembers no job of this certificate.
    #[error("the dispatcher remembers no job submitted as {owner}, so there is no `last` job")]
    NoJobs {
        /// The certificate name the jobs would belong to.
        owner: String,
    },
    /// The job ran and failed.
    #[error("job {job} failed: {failure}")]
    JobFailed {
        /// The job.
        job: JobId,
        /// Why.
        failure: JobFailure,
    },
    /// A [`JobStream`] of this client was dropped before its job's verdict, which would be taken
    /// for the answer to this request.
    #[error("job {0} was abandoned unfinished on this connection; connect again")]
    Abandoned(JobId),
    /// The dispatcher broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether the error says only that the dispatcher went away (stopped, restarted, or the
    /// network dropped the connection), so reconnecting may carry on; refusals and protocol,
    /// input or output errors are final.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Stream(e) => e.connection_error().is_some_and(is_transient_loss),
            _ => false,
        }
    }
}

/// Whether a lost connection may come back: a timeout, a reset (a restarted dispatcher does not
/// know the connection), or a close saying so.
pub(super) fn is_transient_loss(e: &quinn::ConnectionError) -> bool {
    match e {
        quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset => true,
        quinn::ConnectionError::ApplicationClosed(c) => {
            TRANSIENT_CLOSE_CODES.iter().any(|code| c.error_code == quinn::VarInt::from_u32(*code))
        }
        _ => false,
    }
}

/// Turns quinn's connection errors into words a user can act on.
pub(super) fn explain_connection_error(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::TimedOut => "timed out (is the dispatcher running and reachable?)".into(),
        quinn::ConnectionError::TransportError(t) if t.code.to_string().contains("crypto") || t.to_string().contains("certificate") => {
            format!("TLS handshake failed ({t}): the certificates are not from this cluster's CA")
        }
        quinn::ConnectionError::ConnectionClosed(c) if c.error_code.to_string().contains("crypto") || c.to_string().contains("certificate") => {
            format!("the dispatcher rejected our certificate ({c})")
        }
        quinn::ConnectionError::ApplicationClosed(c) => {
            format!("the dispatcher closed the connection: {}", String::from_utf8_lossy(&c.reason))
        }
        other => other.to_string(),
    }
}
