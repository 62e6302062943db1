//! The Rust client API (`dispy::Client`): connect to a dispatcher with a client certificate,
//! list nodes, and run a job from a [`JobDescription`] to a finished output file. `dispy-submit`
//! is a thin shell around it.
//!
//! A job's output is written under a temporary name next to the requested one and renamed only
//! when every chunk succeeded, so a partial output is never presented as complete.
//!
//! A dispatcher that goes away (restarted, or cut off for a while) costs a following job
//! nothing: `run`, `wait` and [`JobStream`] reconnect with [`Backoff`] for up to the client's
//! reconnect timeout, resume an unfinished upload from the last chunk the dispatcher had stored,
//! re-attach and skip the results they already had. Refusals are never retried.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use wire::frame::DEFAULT_MAX_MESSAGE;
use crate::job::JobDescription;
use common::net::{open_uni, Connection, FramedRecv, StreamError};
use common::pki::Identity;
use wire::proto::{
    ClientEvent, ClientRequest, Hello, HelloReply, JobId, JobProgress, JobSubmission,
    JobSummary, NodeStatus, PayloadHash, ResultMode, Role, StreamHeader, PROTOCOL_VERSION,
};
use crate::split::auto::{AutoTuner, Decision};
use crate::split::{Chunks, SplitError};
use tokio::sync::mpsc;

use crate::output::OutputSink;

mod observe;
mod reconnect;
mod stream;
pub use reconnect::{Backoff, ClientError, DEFAULT_RECONNECT_TIMEOUT};
use reconnect::{explain_connection_error, is_transient_loss};
pub use stream::JobStream;

/// Largest result frame the client accepts.
const MAX_RESULT: usize = 1 << 30;
/// Chunks read ahead of the network.
const INPUT_QUEUE: usize = 64;
/// Queued input bytes that trigger a flush.
const INPUT_FLUSH: usize = 1 << 20;
/// How long `close` lets the endpoint send its last packets.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(10);
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

/// Something to show the user while a job runs.
#[derive(Debug, Clone, Copy)]
pub enum Update<'a> {
    /// New counts.
    Progress(&'a JobProgress),
    /// No node can take the job's work right now, and why.
    Waiting(&'a str),
    /// An `auto` split rule measured its probe chunks and chose the chunk size.
    ChunkSize(&'a Decision),
    /// The dispatcher accepted the job under this id (the job can be followed from elsewhere).
    Accepted(JobId),
    /// The dispatcher was lost, and why; the client is reconnecting.
    Reconnecting(&'a str),
}

/// What a following client has of its job, kept across reconnections.
#[derive(Debug, Default)]
struct Followed {
    /// Results written so far; a re-attached stream sends them again, and they are skipped.
    written: u64,
    /// Whether the dispatcher confirmed the whole input stored.
    input_stored: bool,
}

/// A job this client follows: its id and, for an `auto` rule, the tuner that sizes its chunks
/// from its progress.
struct Started {
    id: JobId,
    tuner: Option<AutoTuner>,
}

impl Started {
    /// Feeds a progress update to the tuner, if any; returns its decision when it makes one.
    fn observe(&self, progress: &JobProgress) -> Option<Decision> {
        let decision = self.tuner.as_ref()?.observe(progress.done, progress.run_nanos)?;
        tracing::info!(
            job = %self.id,
            probes = decision.probes,
            probe_units = decision.probe_units,
            probe_ms = decision.probe_time.as_secs_f64() * 1e3,
            size = decision.size,
            "auto split: chunk size chosen"
        );
        Some(decision)
    }
}

/// A connection to a dispatcher as a client.
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control: Connection,
    /// The dispatcher's address, resolved again at every dial.
    address: String,
    /// How long to try reaching a lost dispatcher again.
    reconnect_timeout: Duration,
    /// A job whose [`JobStream`] was dropped before its verdict: that verdict is still due on
    /// the control stream, where it would be taken for the answer to a later request.
    abandoned: Option<JobId>,
    /// This client's certificate name: the owner of the jobs it submits.
    name: String,
}

impl Client {
    /// Connects and says hello.
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the dispatcher is unreachable or the handshake fails,
    /// [`ClientError::Refused`] when it turns this certificate away.
    pub async fn connect(address: &str, identity: &Identity) -> Result<Self, ClientError> {
        let fail = |reason: String| ClientError::Connect { address: address.to_owned(), reason };
        let addr = resolve(address).await?;
        let bind: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let mut endpoint = common::net::endpoint(bind, None).map_err(|e| fail(e.to_string()))?;
        // A dead dispatcher is noticed in about 2 s; the calls above the connection reconnect.
        let config = common::tls::client_config_with_timeout(identity, common::net::DEFAULT_DISPATCHER_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let name = common::tls::identity_of(&identity.cert).map_err(|e| fail(e.to_string()))?.name;
        let (conn, control) = dial(&endpoint, address).await?;
        Ok(Self {
            endpoint,
            conn,
            control,
            address: address.to_owned(),
            reconnect_timeout: DEFAULT_RECONNECT_TIMEOUT,
            abandoned: None,
            name,
        })
    }

    /// The newest job this client's certificate submitted that the dispatcher still remembers
    /// (what `last` means wherever the CLI takes a job id).
    ///
    /// # Errors
    /// [`ClientError::NoJobs`] when there is none; connection errors as for [`Client::jobs`].
    pub async fn last_job(&mut self) -> Result<JobId, ClientError> {
        let jobs = self.jobs().await?;
        jobs.iter()
            .filter(|j| j.owner == self.name)
            .map(|j| j.job)
            .max()
            .ok_or_else(|| ClientError::NoJobs { owner: self.name.clone() })
    }

    /// How long `run`, `wait` and [`JobStream`] keep trying to reach a dispatcher they lost
    /// (default [`DEFAULT_RECONNECT_TIMEOUT`]); zero gives up at once.
    pub fn set_reconnect_timeout(&mut self, timeout: Duration) {
        self.reconnect_timeout = timeout;
    }

    /// Dials the dispatcher again after `lost`, with [`Backoff`], until it answers or the
    /// reconnect timeout passes.
    ///
    /// # Errors
    /// [`ClientError::ReconnectTimeout`], or a refusal (never retried).
    pub async fn reconnect(&mut self, lost: &ClientError) -> Result<(), ClientError> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.reconnect_timeout;
        let mut backoff = Backoff::new();
        let mut last = lost.to_string();
        tracing::info!(error = %lost, timeout_s = self.reconnect_timeout.as_secs(), "lost the dispatcher; reconnecting");
        self.conn.close(0u32.into(), b"reconnecting");
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::ReconnectTimeout { address: self.address.clone(), after: self.reconnect_timeout, last });
            }
            match tokio::time::timeout_at(deadline, dial(&self.endpoint, &self.address)).await {
                Ok(Ok((conn, control))) => {
                    tracing::info!(after_ms = started.elapsed().as_millis() as u64, "reconnected to the dispatcher");
                    self.conn = conn;
                    self.control = control;
                    self.abandoned = None;
                    return Ok(());
                }
                Ok(Err(e)) if e.is_transient() => last = e.to_string(),
                Ok(Err(e)) => return Err(e),
                Err(_) => continue,
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + backoff.next_delay())).await;
        }
    }

    /// Asks to resume `job`'s cut-off upload; returns where it goes on. A dispatcher that has not
    /// yet noticed the lost upload says to retry, which this does with [`Backoff`] within the
    /// reconnect timeout.
    async fn resume_input(&mut self, job: JobId) -> Result<(u64, bool), ClientError> {
        let deadline = tokio::time::Instant::now() + self.reconnect_timeout;
        let mut backoff = Backoff::new();
        loop {
            self.control.write_frame(&ClientRequest::ResumeInput { job }).await?;
            loop {
                match self.control.recv.expect_frame::<ClientEvent>().await? {
                    ClientEvent::InputResumed { job: j, stored, complete } if j == job => {
                        tracing::info!(%job, stored, complete, "input upload resumed");
                        return Ok((stored, complete));
                    }
                    ClientEvent::Retry { message } => {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(ClientError::Refused(message));
                        }
                        break;
                    }
                    ClientEvent::Error { message } => return Err(ClientError::Refused(message)),
                    event if is_late_news(&event) => {}
                    other => return Err(unexpected(&other)),
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Lists the connected nodes.
    ///
    /// # Errors
    /// [`ClientError`] when the conversation fails.
    pub async fn nodes(&mut self) -> Result<Vec<NodeStatus>, ClientError> {
        match self.request(&ClientRequest::ListNodes).await? {
            ClientEvent::Nodes(nodes) => Ok(nodes),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks one question and returns the answer, passing over late news of earlier jobs.
    async fn request(&mut self, request: &ClientRequest) -> Result<ClientEvent, ClientError> {
        self.check_usable()?;
        self.control.write_frame(request).await?;
        loop {
            match self.control.recv.expect_frame::<ClientEvent>().await? {
                ClientEvent::Error { message } => return Err(ClientError::Refused(message)),
                event if is_late_news(&event) => {}
                answer => return Ok(answer),
            }
        }
    }

    /// One job's state.
    ///
    /// # Errors
    /// [`ClientError::Refused`] for an unknown job, or a connection problem.
    pub async fn status(&mut self, job: JobId) -> Result<JobSummary, ClientError> {
        match self.request(&ClientRequest::Status { job }).await? {
            ClientEvent::Status(summary) => Ok(summary),
            other => Err(unexpected(&other)),
        }
    }

    /// Cancels a job and returns its state afterwards.
    ///
    /// # Errors
    /// [`ClientError::Refused`] for an unknown job, or a connection problem.
    pub async fn cancel(&mut self, job: JobId) -> Result<JobSummary, ClientError> {
        match self.request(&ClientRequest::Cancel { job }).await? {
            ClientEvent::Status(summary) => Ok(summary),
            other => Err(unexpected(&other)),
        }
    }

    /// Drains (`drain = true`) or undrains a node by name; returns the node table afterwards.
    ///
    /// # Errors
    /// [`ClientError::Refused`] when no such node is connected.
    pub async fn drain(&mut self, node: &str, drain: bool) -> Result<Vec<NodeStatus>, ClientError> {
        let request = if drain {
            ClientRequest::Drain { node: node.to_owned() }
        } else {
            ClientRequest::Undrain { node: node.to_owned() }
        };
        match self.request(&request).await? {
            ClientEvent::Nodes(nodes) => Ok(nodes),
            other => Err(unexpected(&other)),
        }
    }

    /// Every job the dispatcher remembers.
    ///
    /// # Errors
    /// A connection problem.
    pub async fn jobs(&mut self) -> Result<Vec<JobSummary>, ClientError> {
        match self.request(&ClientRequest::ListJobs).await? {
            ClientEvent::Jobs(jobs) => Ok(jobs),
            other => Err(unexpected(&other)),
        }
    }

    /// Submits a job and uploads all its input, then returns its id without waiting for it to
    /// run: the job lives on in the dispatcher, and [`Client::wait`] fetches its output later.
    ///
    /// # Errors
    /// As [`Client::run`], for everything up to the input being stored.
    pub async fn submit(&mut self, job: &JobDescription) -> Result<JobId, ClientError> {
        let (started, chunks) = self.start(job).await?;
        let id = started.id;
        let conn = self.conn.clone();
        let input = send_input(&conn, id, chunks);
        tokio::pin!(input);
        loop {
            tokio::select! {
                Err(e) = &mut input => return Err(e),
                event = self.control.recv.expect_frame::<ClientEvent>() => match event? {
                    ClientEvent::InputStored { job, .. } if job == id => return Ok(id),
                    ClientEvent::Progress(progress) => {
                        started.observe(&progress);
                    }
                    ClientEvent::JobFailed { failure } => return Err(ClientError::JobFailed { job: id, failure }),
                    ClientEvent::Error { message } => return Err(ClientError::Refused(message)),
                    _ => {}
                },
            }
        }
    }

    /// Runs a job to completion: uploads the payload if the dispatcher lacks it, streams the
    /// input while results stream back, and renames the output into place on success.
    /// `on_update` sees the job's id once accepted, every progress update and every reason the job
    /// has to wait. A dispatcher lost on the way is reconnected to (see the module doc): the
    /// upload resumes after the last chunk it stored (the input is read again up to there) and
    /// the results already written are skipped.
    ///
    /// # Errors
    /// [`ClientError::JobFailed`] when a chunk exhausted its attempts or no node could run the
    /// job; [`ClientError::ReconnectTimeout`] when a lost dispatcher did not come back in time;
    /// [`ClientError::CannotResume`] for an `auto` rule's upload cut off before it was stored;
    /// other variants for local or connection problems. No output is left behind on error.
    pub async fn run(
        &mut self,
        job: &JobDescription,
        mut on_update: impl FnMut(Update<'_>),
    ) -> Result<JobReport, ClientError> {
        let mut sink = OutputSink::create(&job.output, job.results)
            .map_err(|source| ClientError::Output { path: job.output.clone(), source })?;
        let (started, chunks) = self.start(job).await?;
        let id = started.id;
        on_update(Update::Accepted(id));
        let mut followed = Followed::default();
        let mut input: Option<Box<dyn Iterator<Item = Result<Vec<u8>, SplitError>> + Send>> = Some(Box::new(chunks));
        let progress = loop {
            let attempt = self.run_attached(&started, input.take(), &mut sink, &mut followed, &job.output, &mut on_update).await;
            let lost = match attempt {
                Ok(progress) => break progress,
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            on_update(Update::Reconnecting(&lost.to_string()));
            self.reconnect(&lost).await?;
            if !followed.input_stored {
                let (stored, complete) = self.resume_input(id).await?;
                if !complete {
                    if started.tuner.is_some() {
                        let reason = "an `auto` rule's chunk sizes were measured by the lost dispatcher".to_owned();
                        return Err(ClientError::CannotResume { job: id, reason });
                    }
                    let chunks = input_chunks(job).await?;
                    // Splits are deterministic for fixed rules: the chunks from `stored` on are
                    // those the dispatcher lacks.
                    input = Some(Box::new(chunks.skip(usize::try_from(stored).unwrap_or(usize::MAX))));
                }
            }
        };
        let output = sink.commit().map_err(|source| ClientError::Output { path: job.output.clone(), source })?;
        self.release(id).await;
        Ok(JobReport { job: id, progress, output })
    }

    /// Attaches to a running job, sends `input` if there is some, and follows the job until its
    /// verdict or an error.
    async fn run_attached(
        &mut self,
        started: &Started,
        input: Option<Box<dyn Iterator<Item = Result<Vec<u8>, SplitError>> + Send>>,
        sink: &mut OutputSink,
        followed: &mut Followed,
        output_path: &Path,
        on_update: &mut impl FnMut(Update<'_>),
    ) -> Result<JobProgress, ClientError> {
        let id = started.id;
        self.control.write_frame(&ClientRequest::Attach { job: id }).await?;
        let conn = self.conn.clone();
        let input = async {
            match input {
                Some(chunks) => send_input(&conn, id, chunks).await,
                None => std::future::pending().await,
            }
        };
        let follow = self.follow(started, sink, followed, output_path, on_update);
        tokio::pin!(input, follow);
        // The input sender never completes successfully; the job ends when `follow` does.
        tokio::select! {
            biased;
            r = &mut follow => r,
            Err(e) = &mut input => Err(e),
        }
    }

    /// Reattaches to a job (submitted earlier, perhaps by another process), waits for it and
    /// writes its output to `output`, reconnecting to a lost dispatcher as `run` does.
    ///
    /// # Errors
    /// As [`Client::run`].
    pub async fn wait(
        &mut self,
        id: JobId,
        output: &Path,
        results: ResultMode,
        mut on_update: impl FnMut(Update<'_>),
    ) -> Result<JobReport, ClientError> {
        let mut sink = OutputSink::create(output, results)
            .map_err(|source| ClientError::Output { path: output.to_owned(), source })?;
        self.check_usable()?;
        let started = Started { id, tuner: None };
        let mut followed = Followed { written: 0, input_stored: true };
        let progress = loop {
            let attempt = async {
                self.control.write_frame(&ClientRequest::Attach { job: id }).await?;
                self.follow(&started, &mut sink, &mut followed, output, &mut on_update).await
            };
            let lost = match attempt.await {
                Ok(progress) => break progress,
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            on_update(Update::Reconnecting(&lost.to_string()));
            self.reconnect(&lost).await?;
        };
        let output = sink.commit().map_err(|source| ClientError::Output { path: output.to_owned(), source })?;
        self.release(id).await;
        Ok(JobReport { job: id, progress, output })
    }

    /// Submits the job and uploads its payload if needed; returns the job id, its chunks and,
    /// for an `auto` rule, their tuner.
    async fn start(&mut self, job: &JobDescription) -> Result<(Started, Chunks), ClientError> {
        let (submission, payload) = submission(job).await?;
        let chunks = input_chunks(job).await?;
        if job.has_object_input() {
            let nodes = self.nodes().await?;
            if let Some(readers) = crate::readers::object_readers(job, &nodes).filter(crate::readers::Readers::none_can_read) {
                return Err(ClientError::Unreadable(readers.to_string()));
            }
        }
        let tuner = match chunks.auto() {
            Some(auto) => {
                let slots = self.nodes().await?.iter().map(|node| u64::from(node.slots)).sum();
                Some(auto.tuner(job.chunk_target, slots, job.max_auto_chunk_bytes()))
            }
            None => None,
        };
        let id = self.send_submission(submission, payload).await?;
        Ok((Started { id, tuner }, chunks))
    }

    /// Sends `Submit`, uploads the payload if the dispatcher asks for it, and returns the new
    /// job's id.
    async fn send_submission(&mut self, submission: JobSubmission, payload: Bytes) -> Result<JobId, ClientError> {
        self.check_usable()?;
        let hash = submission.payload;
        self.control.write_frame(&ClientRequest::Submit(submission)).await?;
        loop {
            match self.control.recv.expect_frame::<ClientEvent>().await? {
                ClientEvent::NeedPayload => {
                    let mut stream =
                        open_uni(&self.conn, &StreamHeader::Payload { hash, len: payload.len() as u64 }).await?;
                    stream.write_unframed(payload.clone()).await?;
                    stream.finish().await?;
                }
                ClientEvent::JobAccepted { job } => {
                    tracing::info!(%job, "job accepted");
                    return Ok(job);
                }
                event if is_late_news(&event) => {}
                ClientEvent::Error { message } => return Err(ClientError::Refused(message)),
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Writes an attached job's results (skipping those `followed` has already) and follows its
    /// events until the verdict; returns the final counts.
    async fn follow(
        &mut self,
        started: &Started,
        sink: &mut OutputSink,
        followed: &mut Followed,
        output_path: &Path,
        on_update: &mut impl FnMut(Update<'_>),
    ) -> Result<JobProgress, ClientError> {
        let id = started.id;
        let Followed { written, input_stored } = followed;
        let output = async {
            let stream = self.conn.accept_uni().await.map_err(StreamError::from)?;
            let mut recv = FramedRecv::new(stream, DEFAULT_MAX_MESSAGE);
            if recv.expect_frame::<StreamHeader>().await? != (StreamHeader::JobOutput { job: id }) {
                return Err(ClientError::Protocol("expected the job's output stream".into()));
            }
            recv.set_max_frame(MAX_RESULT);
            // A re-attached stream starts again from the first result.
            let mut count = 0u64;
            while let Some(result) = recv.read_raw().await? {
                if count >= *written {
                    sink.write(count, &result).map_err(|source| ClientError::Output { path: output_path.to_owned(), source })?;
                    *written = count + 1;
                }
                count += 1;
            }
            Ok::<_, ClientError>(count)
        };
        let control = &mut self.control;
        let events = async {
            loop {
                match control.recv.expect_frame::<ClientEvent>().await? {
                    ClientEvent::Progress(progress) => {
                        if let Some(decision) = started.observe(&progress) {
                            on_update(Update::ChunkSize(&decision));
                        }
                        on_update(Update::Progress(&progress));
                    }
                    ClientEvent::Waiting { reason } => on_update(Update::Waiting(&reason)),
                    ClientEvent::JobSucceeded { progress } => {
                        on_update(Update::Progress(&progress));
                        return Ok(progress);
                    }
                    ClientEvent::JobFailed { failure } => return Err(ClientError::JobFailed { job: id, failure }),
                    ClientEvent::Error { message } => return Err(ClientError::Refused(message)),
                    ClientEvent::InputStored { .. } => *input_stored = true,
                    other => return Err(unexpected(&other)),
                }
            }
        };
        let (progress, received) = tokio::try_join!(events, output)?;
        if received != sink.expected_results(progress.total) {
            return Err(ClientError::Protocol(format!("received {received} results for {} chunks", progress.total)));
        }
        Ok(progress)
    }

    /// Refuses requests after a [`JobStream`] was dropped before its verdict.
    fn check_usable(&self) -> Result<(), ClientError> {
        match self.abandoned {
            None => Ok(()),
            Some(job) => Err(ClientError::Abandoned(job)),
        }
    }

    /// Tells the dispatcher the output is safe, so it may delete the job's spooled data.
    async fn release(&mut self, id: JobId) {
        // Best effort: an unreleased job expires after the dispatcher's retention time anyway.
        let _ = self.control.write_frame(&ClientRequest::Release { job: id }).await;
    }

    /// Closes the connection cleanly, after anything sent has arrived. Call it before the
    /// runtime stops: a `Client` only dropped leaves its close to the endpoint's background task,
    /// and without it the dispatcher keeps the connection (counted against the certificate's
    /// limit of 64) until its idle timeout.
    pub async fn close(mut self) {
        let _ = self.control.send.finish().await;
        // Give the last messages a moment to arrive before closing.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), self.conn.closed()).await;
        self.conn.close(0u32.into(), b"done");
        // Long enough for our close to leave the socket; waiting out QUIC's draining period
        // (three probe timeouts, ~80 ms) would only delay every `dispy-submit` command's exit.
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
    }
}

/// Whether `event` can be news of an earlier job on this connection, which a new question's
/// answer may follow (a durable `InputStored` arrives after the verdict it backs).
fn is_late_news(event: &ClientEvent) -> bool {
    matches!(event, ClientEvent::InputStored { .. } | ClientEvent::Progress(_) | ClientEvent::Waiting { .. })
}

fn unexpected(event: &ClientEvent) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {event:?}"))
}

/// Reads the job's payload and describes the job for `Submit`.
async fn submission(job: &JobDescription) -> Result<(JobSubmission, Bytes), ClientError> {
    let payload = tokio::fs::read(&job.payload)
        .await
        .map_err(|source| ClientError::Payload { path: job.payload.clone(), source })?;
    let kind = wire::abi::detect_kind(&payload)
        .map_err(|reason| ClientError::BadPayload { path: job.payload.clone(), reason })?;
    let submission = JobSubmission {
        name: job.name.clone(),
        payload: PayloadHash::of(&payload),
        payload_len: payload.len() as u64,
        kind,
        args: job.args.clone(),
        max_attempts: job.max_attempts,
        chunk_timeout_ms: job.chunk_timeout.as_millis() as u64,
        memory_limit: job.memory_limit,
        priority: job.priority,
        placement_timeout_ms: job.placement_timeout.map(|t| t.as_millis() as u64),
        output: std::path::absolute(&job.output).unwrap_or_else(|_| job.output.clone()).display().to_string(),
        results: job.results,
        // Object input travels as references too: the nodes read it.
        shared_input: job.shared_input || job.has_object_input(),
    };
    Ok((submission, Bytes::from(payload)))
}

/// The job's chunk inputs ([`JobDescription::input_chunks`]); object input is sized, listed
/// and scanned through blocking requests, so that happens on a blocking thread.
async fn input_chunks(job: &JobDescription) -> Result<Chunks, ClientError> {
    if !job.has_object_input() {
        return Ok(job.input_chunks()?);
    }
    let job = job.clone();
    tokio::task::spawn_blocking(move || job.input_chunks())
        .await
        .map_err(|e| ClientError::Protocol(format!("input reader failed: {e}")))?
        .map_err(ClientError::from)
}

/// Reads `chunks` on a blocking thread, at most a few dozen ahead of the receiver; the thread
/// ends when the chunks do or the receiver is dropped.
pub fn read_ahead(
    chunks: impl Iterator<Item = Result<Vec<u8>, SplitError>> + Send + 'static,
) -> mpsc::Receiver<Result<Vec<u8>, SplitError>> {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    tokio::task::spawn_blocking(move || {
        for chunk in chunks {
            if tx.blocking_send(chunk).is_err() {
                break;
            }
        }
    });
    rx
}

/// Writes `chunks` as raw frames on the job's input stream. Completes only on error; on success
/// it stays pending so the caller's select keeps waiting.
async fn send_input(
    conn: &quinn::Connection,
    job: JobId,
    chunks: impl Iterator<Item = Result<Vec<u8>, SplitError>> + Send + 'static,
) -> Result<(), ClientError> {
    let rx = read_ahead(chunks);
    let sent = async {
        // Owned here, so the reader thread sees the channel close when sending stops early.
        let mut rx = rx;
        let mut stream = open_uni(conn, &StreamHeader::JobInput { job }).await?;
        while let Some(chunk) = rx.recv().await {
            stream.queue_raw(&chunk?)?;
            if stream.queued() >= INPUT_FLUSH || rx.is_empty() {
                stream.flush().await?;
            }
        }
        stream.finish().await?;
        Ok::<_, ClientError>(())
    };
    match sent.await {
        Ok(()) => {}
        // The dispatcher stopped taking input because the job failed (a full disk, say); the
        // control stream brings the reason, so wait for it rather than report a stream error.
        Err(ClientError::Stream(e)) if e.is_stopped() => {}
        Err(e) => return Err(e),
    }
    std::future::pending().await
}

/// Resolves `address` (again at every dial, as a restarted dispatcher may have moved).
async fn resolve(address: &str) -> Result<SocketAddr, ClientError> {
    let fail = |reason: String| ClientError::Connect { address: address.to_owned(), reason };
    tokio::net::lookup_host(address).await.map_err(|e| fail(e.to_string()))?.next().ok_or_else(|| fail("no address found".into()))
}

/// Dials the dispatcher and says hello; a dispatcher that is not there (yet) is
/// [`ClientError::Unreachable`], one that turns us away [`ClientError::Refused`].
async fn dial(endpoint: &quinn::Endpoint, address: &str) -> Result<(quinn::Connection, Connection), ClientError> {
    let fail = |reason: String| ClientError::Connect { address: address.to_owned(), reason };
    let unreachable = |e: &quinn::ConnectionError| ClientError::Unreachable { address: address.to_owned(), reason: explain_connection_error(e) };
    let addr = resolve(address).await?;
    let conn = match endpoint.connect(addr, common::tls::dispatcher_server_name()).map_err(|e| fail(e.to_string()))?.await {
        Ok(conn) => conn,
        Err(e) if is_transient_loss(&e) => return Err(unreachable(&e)),
        Err(e) => return Err(fail(explain_connection_error(&e))),
    };
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        role: Role::Client,
        software: format!("dispy-submit {}", env!("CARGO_PKG_VERSION")),
    };
    let opened = async {
        let mut control = Connection::open(&conn, DEFAULT_MAX_MESSAGE).await?;
        control.write_frame(&hello).await?;
        Ok::<_, StreamError>(control)
    };
    let refused = |e: StreamError| match e.connection_error() {
        Some(closed) if is_transient_loss(closed) => unreachable(closed),
        Some(closed) => ClientError::Refused(explain_connection_error(closed)),
        None => e.into(),
    };
    let mut control = opened.await.map_err(refused)?;
    match control.recv.expect_frame::<HelloReply>().await {
        Ok(HelloReply::Welcome { .. }) => Ok((conn, control)),
        Ok(HelloReply::Refused { reason }) => Err(ClientError::Refused(reason)),
        // The dispatcher verifies our certificate after the handshake's first flight, so a
        // refused certificate shows up here, as the connection closing.
        Err(e) => Err(refused(e)),
    }
}


#[cfg(test)]
mod tests;
