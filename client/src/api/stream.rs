//! Jobs fed chunk by chunk: [`Client::open`] submits a job whose input stream stays open, the
//! caller sends each chunk when it has it ([`JobStream::send`]) and takes the results as they come
//! back, in chunk order ([`JobStream::recv`]). This is the shape of request-and-response use (send
//! one chunk, wait for its result, send the next) and of producers that make input as they go.
//!
//! Results are handed to the caller as they arrive instead of going to an output file, so nothing
//! here is renamed into place: a caller that needs all-or-nothing output uses [`Client::run`].
//!
//! A lost dispatcher is reconnected to as for `run`: the stream keeps every chunk sent until
//! the dispatcher reports it stored ([`JobProgress::stored`]), resends the ones it lacks on a new
//! input stream, and skips the results already handed to the caller.

use std::collections::VecDeque;

use bytes::Bytes;
use wire::frame::DEFAULT_MAX_MESSAGE;
use crate::job::JobDescription;
use common::net::{open_uni, FramedRecv, FramedSend, StreamError};
use wire::proto::{ClientEvent, ClientRequest, JobId, JobProgress, StreamHeader};

use super::{is_late_news, submission, unexpected, Client, ClientError, MAX_RESULT};

/// The outcome of one try at an operation that a lost dispatcher interrupts.
type Try<T> = Result<T, ClientError>;

/// A running job whose input the caller sends chunk by chunk; see [`Client::open`].
///
/// End it with [`JobStream::finish`]. Dropping it before the job's verdict arrived ends the input
/// where it is (the job finishes the chunks already sent) but leaves that verdict unread on the
/// connection, so the client refuses further requests: connect again.
pub struct JobStream<'c> {
    client: &'c mut Client,
    id: JobId,
    input: FramedSend,
    output: FramedRecv,
    /// Chunks sent whose results have not been received yet.
    outstanding: u64,
    /// Whether the job's verdict was read.
    ended: bool,
    /// The job's success, when it arrived before the last results (they travel on another
    /// stream).
    succeeded: Option<JobProgress>,
    /// Chunks sent that the dispatcher may not have stored yet, from chunk `unstored_from`.
    unstored: VecDeque<Bytes>,
    unstored_from: u64,
    /// Results handed to the caller.
    received: u64,
    /// Results of a re-attached output stream still to skip (the caller has them).
    skip: u64,
    /// Whether the caller ended the input.
    input_ended: bool,
}

impl Client {
    /// Submits `job` (its payload, arguments and limits; its input files and split rule are not
    /// used) with an input that stays open for [`JobStream::send`].
    ///
    /// # Errors
    /// As [`Client::run`] for the payload and the submission.
    pub async fn open(&mut self, job: &JobDescription) -> Result<JobStream<'_>, ClientError> {
        if job.results == wire::proto::ResultMode::Reduce {
            return Err(ClientError::ReduceStream);
        }
        let (submission, payload) = submission(job).await?;
        let id = self.send_submission(submission, payload).await?;
        self.control.write_frame(&ClientRequest::Attach { job: id }).await?;
        let mut input = open_uni(&self.conn, &StreamHeader::JobInput { job: id }).await?;
        input.flush().await?;
        let output = self.accept_output(id).await?;
        Ok(JobStream {
            client: self,
            id,
            input,
            output,
            outstanding: 0,
            ended: false,
            succeeded: None,
            unstored: VecDeque::new(),
            unstored_from: 0,
            received: 0,
            skip: 0,
            input_ended: false,
        })
    }
}

impl JobStream<'_> {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Chunks sent whose results have not been received yet.
    pub fn awaiting(&self) -> u64 {
        self.outstanding
    }

    /// Sends the next chunk's input; it is scheduled as soon as the dispatcher has spooled it.
    ///
    /// # Errors
    /// [`ClientError::JobFailed`] when the job already failed (the dispatcher stopped taking
    /// input), [`ClientError::Stream`] when the connection fails.
    pub async fn send(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        // Kept until stored, so a reconnection can send it again.
        self.unstored.push_back(Bytes::copy_from_slice(chunk));
        self.outstanding += 1;
        let sent = async {
            self.input.queue_raw(chunk)?;
            self.input.flush().await
        };
        match sent.await {
            Ok(()) => Ok(()),
            // The dispatcher stopped the input because the job ended; the control stream says why.
            Err(e) if e.is_stopped() => Err(self.verdict_error().await),
            Err(e) => self.recover(e.into()).await,
        }
    }

    /// After `lost`: reconnects if it says only that the dispatcher went away, resumes the input
    /// (resending what the dispatcher lacks), re-attaches, and arranges to skip the results the
    /// caller has; otherwise returns `lost`.
    async fn recover(&mut self, lost: ClientError) -> Try<()> {
        let mut lost = lost;
        loop {
            if !lost.is_transient() || self.ended {
                return Err(lost);
            }
            tracing::warn!(job = %self.id, error = %lost, "lost the dispatcher; reconnecting");
            self.client.reconnect(&lost).await?;
            match self.reattach().await {
                Ok(()) => {
                    tracing::warn!(job = %self.id, "reconnected; the job goes on");
                    return Ok(());
                }
                Err(e) => lost = e,
            }
        }
    }

    /// On a new connection: resume the input from what the dispatcher stored, attach, and
    /// accept the output stream, which starts again from the first result.
    async fn reattach(&mut self) -> Try<()> {
        let id = self.id;
        let (stored, complete) = self.client.resume_input(id).await?;
        self.client.control.write_frame(&ClientRequest::Attach { job: id }).await?;
        if !complete {
            if stored < self.unstored_from {
                return Err(ClientError::CannotResume {
                    job: id,
                    reason: format!("the dispatcher has {stored} chunks, but chunks from {} were dropped here", self.unstored_from),
                });
            }
            self.forget_stored(stored);
            let mut input = open_uni(&self.client.conn, &StreamHeader::JobInput { job: id }).await?;
            for chunk in &self.unstored {
                input.queue_raw(chunk)?;
            }
            if self.input_ended {
                input.finish().await?;
            } else {
                input.flush().await?;
            }
            self.input = input;
        }
        let output = self.client.accept_output(id).await?;
        self.output = output;
        self.skip = self.received;
        Ok(())
    }

    /// Drops the kept chunks before `stored`: the dispatcher has them durably.
    fn forget_stored(&mut self, stored: u64) {
        while self.unstored_from < stored && self.unstored.pop_front().is_some() {
            self.unstored_from += 1;
        }
    }

    /// The result of the oldest chunk sent and not yet received; `Ok(None)` when every chunk
    /// sent has its result.
    ///
    /// # Errors
    /// [`ClientError::JobFailed`] when a chunk exhausted its attempts (or no node can run the
    /// job); [`ClientError::Stream`] when the connection fails.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.recv_once().await {
                Err(e) if e.is_transient() && !self.ended => self.recover(e).await?,
                other => return other,
            }
        }
    }

    async fn recv_once(&mut self) -> Try<Option<Bytes>> {
        if self.outstanding == 0 {
            return Ok(None);
        }
        loop {
            // Both reads keep partial frames in their buffers, so the one that loses the race
            // loses nothing.
            tokio::select! {
                result = self.output.read_raw() => match result? {
                    Some(_) if self.skip > 0 => self.skip -= 1,
                    Some(result) => {
                        self.outstanding -= 1;
                        self.received += 1;
                        return Ok(Some(result));
                    }
                    // The job ended early (it failed); the control stream says why.
                    None => return Err(self.verdict_error().await),
                },
                event = self.client.control.recv.expect_frame::<ClientEvent>() => {
                    if let Some(error) = self.on_event(event?) {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Ends the input, waits for the job to succeed and releases it. Returns the results not
    /// received yet, in chunk order, and the job's final counts.
    ///
    /// # Errors
    /// As [`JobStream::recv`].
    pub async fn finish(mut self) -> Result<(Vec<Bytes>, JobProgress), ClientError> {
        self.input_ended = true;
        match self.input.finish().await {
            Ok(()) => {}
            Err(e) if e.is_stopped() => return Err(self.verdict_error().await),
            Err(e) => self.recover(e.into()).await?,
        }
        let mut rest = Vec::new();
        while let Some(result) = self.recv().await? {
            rest.push(result);
        }
        let progress = loop {
            if let Some(progress) = self.succeeded {
                break progress;
            }
            let event = match self.client.control.recv.expect_frame::<ClientEvent>().await {
                Ok(event) => event,
                Err(e) => {
                    self.recover(e.into()).await?;
                    // The re-attached output stream sends the results again; the caller has them.
                    while self.skip > 0 && self.output.read_raw().await?.is_some() {
                        self.skip -= 1;
                    }
                    continue;
                }
            };
            if let Some(error) = self.on_event(event) {
                return Err(error);
            }
        };
        self.client.release(self.id).await;
        Ok((rest, progress))
    }

    /// What a control event means while results are awaited: `None` to keep waiting.
    fn on_event(&mut self, event: ClientEvent) -> Option<ClientError> {
        match event {
            // Only after the input ended; `finish` collects the results still on their way.
            ClientEvent::JobSucceeded { progress } => {
                self.ended = true;
                self.succeeded = Some(progress);
                None
            }
            ClientEvent::JobFailed { failure } => {
                self.ended = true;
                Some(ClientError::JobFailed { job: self.id, failure })
            }
            ClientEvent::Error { message } => Some(ClientError::Refused(message)),
            ClientEvent::Waiting { reason } => {
                tracing::info!(job = %self.id, %reason, "waiting for a node");
                None
            }
            ClientEvent::Progress(progress) => {
                self.forget_stored(progress.stored);
                None
            }
            event if is_late_news(&event) => None,
            other => Some(unexpected(&other)),
        }
    }

    /// Reads control events until the one that explains why the job ended before its results
    /// or its input did.
    async fn verdict_error(&mut self) -> ClientError {
        loop {
            let event = match self.client.control.recv.expect_frame::<ClientEvent>().await {
                Ok(event) => event,
                Err(e) => return e.into(),
            };
            if let Some(error) = self.on_event(event) {
                return error;
            }
            if self.succeeded.is_some() {
                return ClientError::Protocol("the job succeeded without the results of every chunk sent".into());
            }
        }
    }
}

impl Drop for JobStream<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.client.abandoned = Some(self.id);
        }
    }
}

impl Client {
    /// Waits for the dispatcher to open `job`'s output stream (after an attach), failing on a
    /// refusal that comes on the control stream instead.
    async fn accept_output(&mut self, job: JobId) -> Result<FramedRecv, ClientError> {
        let stream = loop {
            tokio::select! {
                stream = self.conn.accept_uni() => break stream.map_err(StreamError::from)?,
                event = self.control.recv.expect_frame::<ClientEvent>() => match event? {
                    ClientEvent::Error { message } => return Err(ClientError::Refused(message)),
                    event if is_late_news(&event) => {}
                    other => return Err(unexpected(&other)),
                },
            }
        };
        let mut output = FramedRecv::new(stream, DEFAULT_MAX_MESSAGE);
        if output.expect_frame::<StreamHeader>().await? != (StreamHeader::JobOutput { job }) {
            return Err(ClientError::Protocol("expected the job's output stream".into()));
        }
        output.set_max_frame(MAX_RESULT);
        Ok(output)
    }
}
