//! The Rust client API (`dispy::Client`): connect to a dispatcher with a client certificate,
//! list nodes, and run a job from a [`JobDescription`] to a finished output file. `dispy-submit`
//! is a thin shell around it.
//!
//! A job's output is written under a temporary name next to the requested one and renamed only
//! when every chunk succeeded, so a partial output is never presented as complete.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use common::frame::DEFAULT_MAX_MESSAGE;
use common::job::JobDescription;
use common::net::{open_uni, Connection, FramedRecv, StreamError};
use common::pki::Identity;
use common::proto::{
    ClientEvent, ClientRequest, Hello, HelloReply, JobFailure, JobId, JobProgress, JobSubmission,
    NodeStatus, PayloadHash, Role, StreamHeader, PROTOCOL_VERSION,
};
use common::split::SplitError;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::output::OutputSink;

/// Largest result frame the client accepts.
const MAX_RESULT: usize = 1 << 30;
/// Chunks read ahead of the network.
const INPUT_QUEUE: usize = 64;
/// Queued input bytes that trigger a flush.
const INPUT_FLUSH: usize = 1 << 20;

/// What can go wrong for a client.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
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
    /// The job ran and failed.
    #[error("job {job} failed: {failure}")]
    JobFailed {
        /// The job.
        job: JobId,
        /// Why.
        failure: JobFailure,
    },
    /// The dispatcher broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A finished job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    /// The job's id.
    pub job: JobId,
    /// Final counts.
    pub progress: JobProgress,
    /// Where the output is.
    pub output: PathBuf,
}

/// A connection to a dispatcher as a client.
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control: Connection,
}

impl Client {
    /// Connects and says hello.
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the dispatcher is unreachable or the handshake fails,
    /// [`ClientError::Refused`] when it turns this certificate away.
    pub async fn connect(address: &str, identity: &Identity) -> Result<Self, ClientError> {
        let fail = |reason: String| ClientError::Connect { address: address.to_owned(), reason };
        let addr: SocketAddr = tokio::net::lookup_host(address)
            .await
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("no address found".into()))?;
        let bind: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| fail(e.to_string()))?;
        endpoint.set_default_client_config(common::tls::client_config(identity).map_err(|e| fail(e.to_string()))?);
        let conn = endpoint
            .connect(addr, common::tls::dispatcher_server_name())
            .map_err(|e| fail(e.to_string()))?
            .await
            .map_err(|e| fail(explain_connection_error(&e)))?;
        let mut control = Connection::open(&conn, DEFAULT_MAX_MESSAGE).await?;
        control
            .write_frame(&Hello {
                protocol_version: PROTOCOL_VERSION,
                role: Role::Client,
                software: format!("dispy-submit {}", env!("CARGO_PKG_VERSION")),
            })
            .await?;
        match control.recv.expect_frame::<HelloReply>().await {
            Ok(HelloReply::Welcome { .. }) => Ok(Self { endpoint, conn, control }),
            Ok(HelloReply::Refused { reason }) => Err(ClientError::Refused(reason)),
            Err(StreamError::Connection(e)) => Err(ClientError::Refused(explain_connection_error(&e))),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists the connected nodes.
    ///
    /// # Errors
    /// [`ClientError`] when the conversation fails.
    pub async fn nodes(&mut self) -> Result<Vec<NodeStatus>, ClientError> {
        self.control.write_frame(&ClientRequest::ListNodes).await?;
        match self.control.recv.expect_frame::<ClientEvent>().await? {
            ClientEvent::Nodes(nodes) => Ok(nodes),
            ClientEvent::Error { message } => Err(ClientError::Refused(message)),
            other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Runs a job to completion: uploads the payload if the dispatcher lacks it, streams the
    /// input while results stream back, and renames the output into place on success.
    /// `on_progress` sees every progress update.
    ///
    /// # Errors
    /// [`ClientError::JobFailed`] when a chunk exhausted its attempts or no node could run the
    /// job; other variants for local or connection problems. No output is left behind on error.
    pub async fn run(
        mut self,
        job: &JobDescription,
        mut on_progress: impl FnMut(&JobProgress),
    ) -> Result<JobReport, ClientError> {
        let payload = tokio::fs::read(&job.payload)
            .await
            .map_err(|source| ClientError::Payload { path: job.payload.clone(), source })?;
        let kind = common::abi::detect_kind(&payload)
            .map_err(|reason| ClientError::BadPayload { path: job.payload.clone(), reason })?;
        let payload = Bytes::from(payload);
        let chunks = job.split.chunks(&job.inputs)?;
        let mut sink = OutputSink::create(&job.output, job.results)
            .map_err(|source| ClientError::Output { path: job.output.clone(), source })?;
        let hash = PayloadHash::of(&payload);
        let submission = JobSubmission {
            name: job.name.clone(),
            payload: hash,
            payload_len: payload.len() as u64,
            kind,
            args: job.args.clone(),
            max_attempts: job.max_attempts,
            chunk_timeout_ms: job.chunk_timeout.as_millis() as u64,
            memory_limit: job.memory_limit,
            priority: job.priority,
            placement_timeout_ms: job.placement_timeout.as_millis() as u64,
        };
        self.control.write_frame(&ClientRequest::Submit(submission)).await?;
        let id = loop {
            match self.control.recv.expect_frame::<ClientEvent>().await? {
                ClientEvent::NeedPayload => {
                    let mut stream =
                        open_uni(&self.conn, &StreamHeader::Payload { hash, len: payload.len() as u64 }).await?;
                    stream.write_unframed(payload.clone()).await?;
                    stream.finish().await?;
                }
                ClientEvent::JobAccepted { job } => break job,
                ClientEvent::Error { message } => return Err(ClientError::Refused(message)),
                other => return Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
            }
        };
        tracing::info!(job = %id, "job accepted");
        let input = send_input(&self.conn, id, chunks);
        let output = async {
            let stream = self.conn.accept_uni().await.map_err(StreamError::from)?;
            let mut recv = FramedRecv::new(stream, DEFAULT_MAX_MESSAGE);
            if recv.expect_frame::<StreamHeader>().await? != (StreamHeader::JobOutput { job: id }) {
                return Err(ClientError::Protocol("expected the job's output stream".into()));
            }
            recv.set_max_frame(MAX_RESULT);
            let mut count = 0u64;
            while let Some(result) = recv.read_raw().await? {
                sink.write(count, &result).map_err(|source| ClientError::Output { path: job.output.clone(), source })?;
                count += 1;
            }
            Ok::<_, ClientError>(count)
        };
        let events = async {
            loop {
                match self.control.recv.expect_frame::<ClientEvent>().await? {
                    ClientEvent::Progress(progress) => on_progress(&progress),
                    ClientEvent::JobSucceeded { progress } => {
                        on_progress(&progress);
                        return Ok(progress);
                    }
                    ClientEvent::JobFailed { failure } => return Err(ClientError::JobFailed { job: id, failure }),
                    ClientEvent::Error { message } => return Err(ClientError::Refused(message)),
                    other => return Err(ClientError::Protocol(format!("unexpected event {other:?}"))),
                }
            }
        };
        // The input sender finishes first; then wait for both the output and the final event.
        let (progress, written) = tokio::select! {
            biased;
            r = async { tokio::try_join!(events, output) } => r?,
            Err(e) = input => return Err(e),
        };
        if written != progress.total {
            return Err(ClientError::Protocol(format!("received {written} results for {} chunks", progress.total)));
        }
        let output = sink.commit().map_err(|source| ClientError::Output { path: job.output.clone(), source })?;
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
        Ok(JobReport { job: id, progress, output })
    }
}

/// Reads chunks on a blocking thread and writes them as raw frames on the job's input stream.
/// Completes only on error; on success it stays pending so the caller's select keeps waiting.
async fn send_input(conn: &quinn::Connection, job: JobId, chunks: common::split::Chunks) -> Result<(), ClientError> {
    let (tx, mut rx) = mpsc::channel::<Result<Vec<u8>, SplitError>>(INPUT_QUEUE);
    // The reader thread ends when the iterator does or when the receiver is dropped.
    let reader = tokio::task::spawn_blocking(move || {
        for chunk in chunks {
            if tx.blocking_send(chunk).is_err() {
                break;
            }
        }
    });
    let mut stream = open_uni(conn, &StreamHeader::JobInput { job }).await?;
    while let Some(chunk) = rx.recv().await {
        stream.queue_raw(&chunk?)?;
        if stream.queued() >= INPUT_FLUSH || rx.is_empty() {
            stream.flush().await?;
        }
    }
    stream.finish().await?;
    let _ = reader.await;
    std::future::pending().await
}

/// Turns quinn's connection errors into words a user can act on.
fn explain_connection_error(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::TimedOut => "timed out (is the dispatcher running and reachable?)".into(),
        quinn::ConnectionError::TransportError(t) if t.code.to_string().contains("crypto") || t.to_string().contains("certificate") => {
            format!("TLS handshake failed ({t}): the certificates are not from this cluster's CA")
        }
        quinn::ConnectionError::ConnectionClosed(c) if c.error_code.to_string().contains("crypto") => {
            format!("the dispatcher rejected our certificate ({c})")
        }
        quinn::ConnectionError::ApplicationClosed(c) => {
            format!("the dispatcher closed the connection: {}", String::from_utf8_lossy(&c.reason))
        }
        other => other.to_string(),
    }
}
