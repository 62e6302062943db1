//! A minimal client speaking the client protocol directly (`common::net`, `common::proto`), for
//! the W2 figure that `dispatcher::Client` cannot give: the job round trip without connection
//! set-up and teardown.
//!
//! `Client::run` consumes its client, so every job through the API pays a new UDP socket, a QUIC
//! and TLS handshake, and at the end a `Release`, a wait for the dispatcher to close and
//! `Endpoint::wait_idle`. The dispatcher itself serves any number of requests on one connection,
//! so the probe keeps one connection and, per job, times `Submit` → `JobAccepted` → `Attach` +
//! the input stream → the result on the output stream and `JobSucceeded` on the control stream.
//! It then sends `Release` (untimed) as the API does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use common::frame::DEFAULT_MAX_MESSAGE;
use common::net::{open_uni, Connection, FramedRecv};
use common::pki::Identity;
use common::proto::{
    ClientEvent, ClientRequest, Hello, HelloReply, JobSubmission, PayloadHash, PayloadKind, ResultMode, Role,
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
            .write_frame(&Hello { protocol_version: PROTOCOL_VERSION, role: Role::Client, software: "dispy-bench".into() })
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
        let hash = PayloadHash::of(payload);
        let submission = JobSubmission {
            name: "bench-w2-probe".into(),
            payload: hash,
            payload_len: payload.len() as u64,
            kind: PayloadKind::Wasm,
            args: Vec::new(),
            max_attempts: common::job::DEFAULT_MAX_ATTEMPTS,
            chunk_timeout_ms: common::job::DEFAULT_CHUNK_TIMEOUT.as_millis() as u64,
            memory_limit: common::job::DEFAULT_MEMORY_LIMIT,
            priority: 0,
            placement_timeout_ms: common::job::DEFAULT_PLACEMENT_TIMEOUT.as_millis() as u64,
            output: String::new(),
            results: ResultMode::Concat,
        };
        let started = Instant::now();
        self.control.write_frame(&ClientRequest::Submit(submission)).await?;
        let job = loop {
            match self.control.recv.expect_frame::<ClientEvent>().await? {
                ClientEvent::NeedPayload => {
                    let header = StreamHeader::Payload { hash, len: payload.len() as u64 };
                    let mut stream = open_uni(&self.conn, &header).await?;
                    stream.write_unframed(Bytes::copy_from_slice(payload)).await?;
                    stream.finish().await?;
                }
                ClientEvent::JobAccepted { job } => break job,
                // Late news of the previous job on this connection.
                ClientEvent::Progress(_) | ClientEvent::InputStored { .. } => {}
                other => bail!("unexpected answer to Submit: {other:?}"),
            }
        };
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
                ClientEvent::Progress(_) | ClientEvent::InputStored { .. } => {}
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

    /// Closes the connection and waits for the endpoint to drain.
    pub(crate) async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }

    /// Ends the connection the way `Client::run` does after its `Release` (finish the control
    /// stream, wait up to 500 ms for the dispatcher to close, close, `Endpoint::wait_idle`) and
    /// times the two waits, to show where `Client::run`'s time beyond the round trip goes.
    pub(crate) async fn close_like_client(mut self) -> Teardown {
        let started = Instant::now();
        let _ = self.control.send.finish().await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.conn.closed()).await;
        let closed = Instant::now();
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
        Teardown { until_closed: closed - started, wait_idle: closed.elapsed() }
    }
}

/// Where the end of a `Client::run` goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Teardown {
    /// Finishing the control stream until the dispatcher closes the connection (at most 500 ms).
    pub(crate) until_closed: Duration,
    /// `Endpoint::wait_idle` after closing: the QUIC draining period.
    pub(crate) wait_idle: Duration,
}
