//! A minimal client speaking the client protocol directly (`common::net`, `wire::proto`), for
//! a W2 figure below the client API: the dispatcher-and-node round trip of a one-chunk job.
//!
//! `Client::run` also reads and hashes the payload file, splits the input file on a blocking
//! thread and writes the output to a temporary file it renames into place; the probe does none of
//! that, so the difference between the two W2 figures is the client's own file work. On one
//! connection it times, per job, `Submit` → `JobAccepted` → `Attach` + the input stream → the
//! result on the output stream and `JobSucceeded` on the control stream, then sends `Release`
//! (untimed) as the API does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use wire::frame::DEFAULT_MAX_MESSAGE;
use common::net::{open_uni, Connection, FramedRecv};
use common::pki::Identity;
use wire::proto::{
    ClientEvent, ClientRequest, Hello, HelloReply, JobId, JobSubmission, PayloadHash, PayloadKind, ResultMode, Role,
    StreamHeader, PROTOCOL_VERSION,
};

/// A protocol-level client holding one connection.
pub(crate) struct Probe {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control: Connection,
}

impl Probe {
    /// Connects and says hello.
    ///
    /// # Errors
    /// When the address is not `ip:port`, or the socket, TLS or handshake fails.
    pub(crate) async fn connect(address: &str, identity: &Identity) -> anyhow::Result<Probe> {
        let address: SocketAddr = address.parse().context("the dispatcher address is not ip:port")?;
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        endpoint.set_default_client_config(common::tls::client_config(identity)?);
        let conn = endpoint.connect(address, common::tls::dispatcher_server_name())?.await?;
        let mut control = Connection::open(&conn, DEFAULT_MAX_MESSAGE).await?;
        control
            .write_frame(&Hello {
                protocol_version: PROTOCOL_VERSION,
                role: Role::Client,
                software: "dispy-bench".into(),
            })
            .await?;
        match control.recv.expect_frame::<HelloReply>().await? {
            HelloReply::Welcome { .. } => {}
            HelloReply::Refused { reason } => bail!("refused: {reason}"),
        }
        Ok(Probe { endpoint, conn, control })
    }

    /// Submits a one-chunk job running the WebAssembly `payload` over `chunk`, waits for its
    /// result and verdict, checks the result against `expect`, and returns the round trip.
    ///
    /// # Errors
    /// On any protocol or transport problem, or a wrong result.
    pub(crate) async fn round_trip(&mut self, payload: &[u8], chunk: &[u8], expect: &[u8]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let job = self.submit(payload).await?;
        self.control.send.queue_frame(&ClientRequest::Attach { job })?;
        let mut input = open_uni(&self.conn, &StreamHeader::JobInput { job }).await?;
        input.queue_raw(chunk)?;
        let (sent, flushed) = tokio::join!(input.finish(), self.control.send.flush());
        sent?;
        flushed?;
        let mut output = FramedRecv::new(self.conn.accept_uni().await?, DEFAULT_MAX_MESSAGE);
        if output.expect_frame::<StreamHeader>().await? != (StreamHeader::JobOutput { job }) {
            bail!("expected the job's output stream");
        }
        let result = output.read_raw().await?.context("the output stream ended without a result")?;
        loop {
            match self.control.recv.expect_frame::<ClientEvent>().await? {
                ClientEvent::Progress(_) | ClientEvent::InputStored { .. } | ClientEvent::Waiting { .. } => {}
                ClientEvent::JobSucceeded { .. } => break,
                other => bail!("unexpected event: {other:?}"),
            }
        }
        let elapsed = started.elapsed();
        self.control.write_frame(&ClientRequest::Release { job }).await?;
        if result.as_ref() != expect {
            bail!("probe result {result:?} differs from run_serial's {expect:?}");
        }
        Ok(elapsed)
    }

    /// Submits a job running the WebAssembly `payload` and returns its id once accepted.
    async fn submit(&mut self, payload: &[u8]) -> anyhow::Result<JobId> {
        let hash = PayloadHash::of(payload);
        let submission = JobSubmission {
            name: "bench-w2-probe".into(),
            payload: hash,
            payload_len: payload.len() as u64,
            kind: PayloadKind::Wasm,
            args: Vec::new(),
            max_attempts: client::job::DEFAULT_MAX_ATTEMPTS,
            chunk_timeout_ms: client::job::DEFAULT_CHUNK_TIMEOUT.as_millis() as u64,
            memory_limit: client::job::DEFAULT_MEMORY_LIMIT,
            priority: 0,
            placement_timeout_ms: client::job::DEFAULT_PLACEMENT_TIMEOUT.map(|t| t.as_millis() as u64),
            output: String::new(),
            results: ResultMode::Concat,
            shared_input: false,
        };
        self.control.write_frame(&ClientRequest::Submit(submission)).await?;
        loop {
            match self.control.recv.expect_frame::<ClientEvent>().await? {
                ClientEvent::NeedPayload => {
                    let header = StreamHeader::Payload { hash, len: payload.len() as u64 };
                    let mut stream = open_uni(&self.conn, &header).await?;
                    stream.write_unframed(Bytes::copy_from_slice(payload)).await?;
                    stream.finish().await?;
                }
                ClientEvent::JobAccepted { job } => return Ok(job),
                // Late news of the previous job on this connection.
                ClientEvent::Progress(_) | ClientEvent::InputStored { .. } | ClientEvent::Waiting { .. } => {}
                other => bail!("unexpected answer to Submit: {other:?}"),
            }
        }
    }

    /// Closes the connection and waits for the endpoint to drain.
    pub(crate) async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}
