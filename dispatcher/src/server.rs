//! The dispatcher daemon: one QUIC endpoint, an accept loop, one task per connection and the
//! [`Core`] task that owns all state.
//!
//! Each connection's role comes from its verified certificate; the first control message must be
//! a [`Hello`] with our protocol version, answered by `Welcome` or `Refused`. Connection tasks log
//! their own errors and end; nothing reaches the accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::net::{open_uni, Connection, FramedRecv, FramedSend, StreamError};
use common::proto::{
    ClientEvent, ClientRequest, Hello, HelloReply, JobId, NodeToDispatcher, PayloadHash, Role,
    StreamHeader, PROTOCOL_VERSION,
};
use common::tls::PeerIdentity;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::config::DispatcherConfig;
use crate::core::{ClientCommand, Core, Event, NodeCommand};
use crate::scheduler::{NodeId, SchedulerConfig};

/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 10_000;
/// How long shutdown waits for connection tasks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a peer may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A start-up failure of the dispatcher.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] common::tls::TlsError),
    /// The UDP socket could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A bound dispatcher, not yet serving; lets callers learn the port before running.
pub struct Dispatcher {
    endpoint: quinn::Endpoint,
    config: Arc<DispatcherConfig>,
}

impl Dispatcher {
    /// Binds the QUIC endpoint.
    ///
    /// # Errors
    /// [`ServeError`] when TLS or the socket cannot be set up.
    pub fn bind(config: DispatcherConfig) -> Result<Self, ServeError> {
        let server = common::tls::server_config(&config.identity)?;
        let endpoint = quinn::Endpoint::server(server, config.listen)
            .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
        Ok(Self { endpoint, config: Arc::new(config) })
    }

    /// The address actually bound (useful with port 0).
    ///
    /// # Errors
    /// If the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serves until `shutdown` completes, then drains: stop accepting, cancel connection tasks,
    /// wait for them within a grace period, close the endpoint.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (events, event_rx) = mpsc::channel(4096);
        let core = Core::new(SchedulerConfig {
            pipeline_depth: self.config.pipeline_depth,
            node_timeout: self.config.node_timeout,
        });
        let core_task = tokio::spawn(core.run(event_rx).instrument(tracing::info_span!("core")));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        info!(addr = %self.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), "dispatcher listening");
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                () = &mut shutdown => break,
                incoming = self.endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { break };
            let events = events.clone();
            let config = Arc::clone(&self.config);
            let cancel = cancel.clone();
            let remote = incoming.remote_address();
            tracker.spawn(
                async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = serve_connection(incoming, config, events) => {}
                    }
                    drop(permit);
                }
                .instrument(tracing::info_span!("conn", %remote)),
            );
        }
        info!("shutting down");
        self.endpoint.close(0u32.into(), b"dispatcher shutting down");
        cancel.cancel();
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
            warn!("connection tasks did not finish within the grace period");
        }
        drop(events);
        // The core ends once every event sender is gone.
        let _ = core_task.await;
        self.endpoint.wait_idle().await;
    }
}

async fn serve_connection(incoming: quinn::Incoming, config: Arc<DispatcherConfig>, events: mpsc::Sender<Event>) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            info!(error = %e, "handshake failed");
            return;
        }
    };
    let peer = match common::tls::peer_identity(&conn) {
        Ok(peer) => peer,
        Err(e) => {
            warn!(error = %e, "refusing connection");
            conn.close(1u32.into(), b"bad certificate");
            return;
        }
    };
    let span = tracing::info_span!("peer", name = %peer.name, role = %peer.role);
    let result = async {
        let mut control = tokio::time::timeout(HELLO_TIMEOUT, handshake(&conn, &config, &peer))
            .await
            .map_err(|_| ConnError::Refused("no hello within 10 s".into()))??;
        match peer.role {
            Role::Node => serve_node(&conn, &mut control, &peer, &config, &events).await,
            Role::Client => serve_client(&conn, &mut control, &config, &events).await,
            Role::Dispatcher => Err(ConnError::Refused("dispatcher certificates cannot connect as peers".into())),
        }
    }
    .instrument(span.clone())
    .await;
    let _enter = span.enter();
    match result {
        Ok(()) => debug!("connection done"),
        Err(ConnError::Stream(e)) if e.is_connection_lost() => debug!(error = %e, "connection closed"),
        Err(e) => {
            warn!(error = %e, "connection failed");
            conn.close(2u32.into(), e.to_string().as_bytes());
        }
    }
}

#[derive(Debug, Error)]
enum ConnError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the dispatcher is shutting down")]
    CoreGone,
}

async fn handshake(conn: &quinn::Connection, config: &DispatcherConfig, peer: &PeerIdentity) -> Result<Connection, ConnError> {
    let mut control = Connection::accept(conn, config.max_message).await?;
    let hello: Hello = control.recv.expect_frame().await?;
    let refusal = if hello.protocol_version != PROTOCOL_VERSION {
        Some(format!(
            "protocol version {} is not supported; this dispatcher speaks version {PROTOCOL_VERSION}",
            hello.protocol_version
        ))
    } else if hello.role != peer.role {
        Some(format!("this certificate is for a {}, not a {}; use a {} certificate", peer.role, hello.role, hello.role))
    } else {
        None
    };
    if let Some(reason) = refusal {
        control.write_frame(&HelloReply::Refused { reason: reason.clone() }).await?;
        // Give the refusal time to arrive before the connection closes.
        control.send.finish().await?;
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
        return Err(ConnError::Refused(reason));
    }
    control
        .write_frame(&HelloReply::Welcome { protocol_version: PROTOCOL_VERSION, peer_name: peer.name.clone() })
        .await?;
    Ok(control)
}

async fn serve_node(
    conn: &quinn::Connection,
    control: &mut Connection,
    peer: &PeerIdentity,
    config: &DispatcherConfig,
    events: &mpsc::Sender<Event>,
) -> Result<(), ConnError> {
    let NodeToDispatcher::Register(mut info) = control.recv.expect_frame().await? else {
        return Err(StreamError::Unexpected("a node must register first".into()).into());
    };
    // The certificate names the node; a message cannot.
    info.name = peer.name.clone();
    let mut reports = FramedRecv::new(conn.accept_uni().await.map_err(StreamError::from)?, config.max_message);
    if reports.expect_frame::<StreamHeader>().await? != StreamHeader::Reports {
        return Err(StreamError::Unexpected("expected the reports stream".into()).into());
    }
    reports.set_max_frame(config.max_chunk + 1024);
    let work = open_uni(conn, &StreamHeader::Work).await?;
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (reply, node) = oneshot::channel();
    let address = conn.remote_address().to_string();
    events.send(Event::NodeRegistered { info, address, commands, reply }).await.map_err(|_| ConnError::CoreGone)?;
    let node = node.await.map_err(|_| ConnError::CoreGone)?;
    let result = tokio::select! {
        r = read_node_control(&mut control.recv, node, events) => r,
        r = read_reports(&mut reports, node, events) => r,
        r = run_node_commands(conn, work, command_rx) => r,
    };
    let reason = match &result {
        Ok(()) => "connection closed".to_owned(),
        Err(e) => e.to_string(),
    };
    let _ = events.send(Event::NodeClosed { node, reason }).await;
    result
}

async fn read_node_control(recv: &mut FramedRecv, node: NodeId, events: &mpsc::Sender<Event>) -> Result<(), ConnError> {
    while let Some(msg) = recv.read_frame::<NodeToDispatcher>().await? {
        events.send(Event::NodeMessage { node, msg }).await.map_err(|_| ConnError::CoreGone)?;
    }
    Ok(())
}

async fn read_reports(recv: &mut FramedRecv, node: NodeId, events: &mpsc::Sender<Event>) -> Result<(), ConnError> {
    while let Some(report) = recv.read_frame().await? {
        events.send(Event::NodeReport { node, report }).await.map_err(|_| ConnError::CoreGone)?;
    }
    Ok(())
}

async fn run_node_commands(
    conn: &quinn::Connection,
    mut work: FramedSend,
    mut commands: mpsc::UnboundedReceiver<NodeCommand>,
) -> Result<(), ConnError> {
    let mut payloads = tokio::task::JoinSet::new();
    while let Some(first) = commands.recv().await {
        let mut next = Some(first);
        // Batch everything already queued into one flush.
        while let Some(command) = next.take() {
            match command {
                NodeCommand::Send(msg) => work.queue_frame(&msg)?,
                NodeCommand::Payload(hash, bytes) => {
                    let conn = conn.clone();
                    // Tracked by the JoinSet, which aborts unfinished uploads with the connection.
                    payloads.spawn(async move { send_payload(&conn, hash, bytes).await });
                }
                NodeCommand::Close(reason) => {
                    conn.close(3u32.into(), reason.as_bytes());
                    return Ok(());
                }
            }
            next = commands.try_recv().ok();
        }
        work.flush().await?;
        while let Some(done) = payloads.try_join_next() {
            if let Ok(Err(e)) = done {
                warn!(error = %e, "payload upload to node failed");
            }
        }
    }
    Ok(())
}

async fn send_payload(conn: &quinn::Connection, hash: PayloadHash, bytes: Bytes) -> Result<(), StreamError> {
    let mut stream = open_uni(conn, &StreamHeader::Payload { hash, len: bytes.len() as u64 }).await?;
    stream.write_unframed(bytes).await?;
    stream.finish().await
}

async fn serve_client(
    conn: &quinn::Connection,
    control: &mut Connection,
    config: &DispatcherConfig,
    events: &mpsc::Sender<Event>,
) -> Result<(), ConnError> {
    while let Some(request) = control.read_frame::<ClientRequest>().await? {
        match request {
            ClientRequest::ListNodes => {
                let (reply, nodes) = oneshot::channel();
                events.send(Event::ListNodes { reply }).await.map_err(|_| ConnError::CoreGone)?;
                let nodes = nodes.await.map_err(|_| ConnError::CoreGone)?;
                control.write_frame(&ClientEvent::Nodes(nodes)).await?;
            }
            ClientRequest::Submit(submission) => {
                if submission.payload_len > config.max_payload as u64 {
                    let message = format!(
                        "payload of {} exceeds the dispatcher's limit of {}",
                        common::units::format_size(submission.payload_len),
                        common::units::format_size(config.max_payload as u64)
                    );
                    control.write_frame(&ClientEvent::Error { message }).await?;
                    continue;
                }
                let (reply, known) = oneshot::channel();
                events.send(Event::HasPayload { hash: submission.payload, reply }).await.map_err(|_| ConnError::CoreGone)?;
                if !known.await.map_err(|_| ConnError::CoreGone)? {
                    control.write_frame(&ClientEvent::NeedPayload).await?;
                    let bytes = receive_payload(conn, config, submission.payload).await?;
                    events.send(Event::PayloadUploaded { hash: submission.payload, bytes }).await.map_err(|_| ConnError::CoreGone)?;
                }
                let (commands, command_rx) = mpsc::unbounded_channel();
                let (reply, accepted) = oneshot::channel();
                events.send(Event::Submit { submission, commands, reply }).await.map_err(|_| ConnError::CoreGone)?;
                match accepted.await.map_err(|_| ConnError::CoreGone)? {
                    Ok(job) => {
                        control.write_frame(&ClientEvent::JobAccepted { job }).await?;
                        let result = run_job(conn, control, config, events, job, command_rx).await;
                        if result.is_err() {
                            let _ = events.send(Event::ClientGone { job }).await;
                        }
                        return result;
                    }
                    Err(message) => control.write_frame(&ClientEvent::Error { message }).await?,
                }
            }
        }
    }
    Ok(())
}

async fn receive_payload(conn: &quinn::Connection, config: &DispatcherConfig, expected: PayloadHash) -> Result<Bytes, ConnError> {
    let mut recv = FramedRecv::new(conn.accept_uni().await.map_err(StreamError::from)?, config.max_message);
    let StreamHeader::Payload { hash, len } = recv.expect_frame().await? else {
        return Err(StreamError::Unexpected("expected a payload stream".into()).into());
    };
    if hash != expected || len > config.max_payload as u64 {
        return Err(StreamError::Unexpected("payload stream does not match the submission".into()).into());
    }
    let bytes = recv.read_to_end(config.max_payload).await?;
    if PayloadHash::of(&bytes) != expected {
        return Err(ConnError::Refused("uploaded payload does not match its hash".into()));
    }
    Ok(bytes)
}

/// Streams a job's input in and its output and events out until the job ends.
async fn run_job(
    conn: &quinn::Connection,
    control: &mut Connection,
    config: &DispatcherConfig,
    events: &mpsc::Sender<Event>,
    job: JobId,
    mut commands: mpsc::UnboundedReceiver<ClientCommand>,
) -> Result<(), ConnError> {
    let mut input = FramedRecv::new(conn.accept_uni().await.map_err(StreamError::from)?, config.max_message);
    if input.expect_frame::<StreamHeader>().await? != (StreamHeader::JobInput { job }) {
        return Err(StreamError::Unexpected("expected the job's input stream".into()).into());
    }
    input.set_max_frame(config.max_chunk);
    let mut output = open_uni(conn, &StreamHeader::JobOutput { job }).await?;
    let read_input = async {
        while let Some(chunk) = input.read_raw().await? {
            events.send(Event::Input { job, input: chunk }).await.map_err(|_| ConnError::CoreGone)?;
        }
        events.send(Event::InputEnd { job }).await.map_err(|_| ConnError::CoreGone)?;
        // Input is done; keep this branch pending so the select! waits for the job's end.
        std::future::pending::<Result<(), ConnError>>().await
    };
    let forward = async {
        while let Some(first) = commands.recv().await {
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    ClientCommand::Output(bytes) => output.queue_raw(&bytes)?,
                    ClientCommand::OutputEnd => output.finish().await?,
                    ClientCommand::Event(event) => {
                        output.flush().await?;
                        let last = matches!(event, ClientEvent::JobSucceeded { .. } | ClientEvent::JobFailed { .. });
                        control.send.queue_frame(&event)?;
                        if last {
                            control.send.finish().await?;
                            return Ok(());
                        }
                    }
                }
                next = commands.try_recv().ok();
            }
            output.flush().await?;
            control.send.flush().await?;
        }
        Err(ConnError::CoreGone)
    };
    tokio::select! {
        r = read_input => r,
        r = forward => {
            if r.is_ok() {
                // Let the client read the final event before the connection goes.
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            }
            r
        }
    }
}
