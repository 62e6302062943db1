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
use wire::proto::{
    Assignment, ChunkFailure, ChunkReport, ClientEvent, ClientRequest, DispatcherToNode,
    FailureKind, Hello, HelloReply, NodeToDispatcher, PayloadHash, Role, StreamHeader,
    PROTOCOL_VERSION,
};
use tokio::task::JoinSet;
use common::tls::PeerIdentity;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::config::DispatcherConfig;
use crate::core::{Core, Event, NodeCommand, Upload};
use crate::journal::{Journal, JournalError};
use crate::liveness::LastHeard;
use crate::payloads::PayloadStore;
use crate::reload::CertReloader;
use ledger::jobs::{Caller, LedgerConfig};
use ledger::scheduler::{NodeId, SchedulerConfig};
use crate::spool::Spool;
use crate::metrics::Metrics;
use crate::status::{StatusBook, StatusSnapshot};
use peers::{note_certificate, with_certificates, PeerSlot};

/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 10_000;
/// How long shutdown waits for connection tasks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Connections one certificate may hold at once; more are refused so one peer cannot starve
/// others.
pub(crate) const MAX_CONNECTIONS_PER_PEER: usize = 64;
/// How long a peer may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Work each slot has queued behind its running chunk, per job (see
/// `SchedulerConfig::pipeline_budget`): several loopback round trips of a busy dispatcher, so tiny
/// chunks never leave a slot waiting, while a queue of chunks that take seconds stays one deep.
const PIPELINE_BUDGET: Duration = Duration::from_millis(2);

/// A start-up failure of the dispatcher.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] common::tls::TlsError),
    /// The journal could not be opened (corrupt, or the state directory is unusable).
    #[error("{0}; refusing to start (move the state directory away to start empty)")]
    Journal(#[from] JournalError),
    /// The state directory could not be prepared.
    #[error("state directory {path}: {source}")]
    State {
        /// The directory.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The HTTP address (`http_listen`) could not be bound.
    #[error("http_listen: {0}")]
    Http(#[from] common::http::HttpError),
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
    /// The certificate new handshakes get, replaced by [`CertReloader::reload`].
    cert: Arc<common::tls::ServerCert>,
    config: Arc<DispatcherConfig>,
    core: Core,
    payloads: PayloadStore,
    metrics: Arc<Metrics>,
    /// The bound HTTP address and the status snapshots it serves, with `http_listen`.
    http: Option<(common::http::HttpServer, tokio::sync::watch::Receiver<Arc<StatusSnapshot>>)>,
}

impl Dispatcher {
    /// Binds the QUIC endpoint.
    ///
    /// # Errors
    /// [`ServeError`] when TLS or the socket cannot be set up.
    /// Opens the state directory (journal, spool, payloads), resumes unfinished jobs and binds
    /// the QUIC endpoint.
    ///
    /// # Errors
    /// [`ServeError`] when TLS, the state directory or the socket cannot be set up.
    pub fn bind(config: DispatcherConfig) -> Result<Self, ServeError> {
        let state = |source| ServeError::State { path: config.state_dir.display().to_string(), source };
        std::fs::create_dir_all(&config.state_dir).map_err(state)?;
        let spool = Spool::open(&config.state_dir).map_err(state)?;
        let payloads = PayloadStore::open(&config.state_dir, config.payload_memory_cap).map_err(state)?;
        let (journal, recovered) = Journal::open(&config.state_dir.join("journal.redb"))?;
        let ledger = LedgerConfig {
            scheduler: SchedulerConfig {
                pipeline_depth: config.pipeline_depth,
                pipeline_budget: Some(PIPELINE_BUDGET),
                node_timeout: config.node_timeout,
                reattach_grace: config.reattach_grace,
                crash_limit: config.crash_limit,
                tenants: config.shares(),
                ..SchedulerConfig::default()
            },
            retention: config.retention,
            quotas: config.quotas(),
            input_grace: config.input_grace,
        };
        let (server, cert) = common::tls::server_config_reloadable(&config.identity)?;
        let endpoint = common::net::endpoint(config.listen, Some(server))
            .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
        let metrics = Arc::new(Metrics::new());
        let (http, status) = match &config.http {
            Some((addr, access)) => {
                let server = common::http::HttpServer::bind(*addr, access.clone())?;
                let listen = endpoint.local_addr().map_or_else(|_| config.listen.to_string(), |a| a.to_string());
                let (sender, receiver) = tokio::sync::watch::channel(Arc::new(StatusSnapshot::default()));
                (Some((server, receiver)), Some((StatusBook::new(listen), sender)))
            }
            None => (None, None),
        };
        let observer = crate::core::Observer::new(Arc::clone(&metrics), status);
        let core = Core::new(ledger, journal, recovered, spool.clone(), payloads.clone(), observer).map_err(state)?;
        Ok(Self { endpoint, cert, config: Arc::new(config), core, payloads, metrics, http })
    }

    /// What reloads the certificate this dispatcher presents (SIGHUP, in `dispy-dispatcher`).
    pub fn certificate(&self) -> CertReloader {
        CertReloader { cert: Arc::clone(&self.cert), tls_dir: self.config.tls_dir.clone() }
    }

    /// The address actually bound (useful with port 0).
    ///
    /// # Errors
    /// If the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The TCP address `/metrics` and the status page are served on (useful with port 0);
    /// `None` without `http_listen`.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|(server, _)| server.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains: stop accepting, cancel connection tasks,
    /// wait for them within a grace period, close the endpoint.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (events, event_rx) = mpsc::channel(4096);
        let addr = self.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string());
        let core_task = tokio::spawn(self.core.run(event_rx).instrument(tracing::info_span!("core")));
        let enrollment = crate::enroll::Enrollment::new(&self.config);
        let shared = Arc::new(Shared {
            config: Arc::clone(&self.config),
            payloads: self.payloads,
            enrollment,
            peers: Default::default(),
            metrics: self.metrics,
        });
        let cancel = CancellationToken::new();
        let http = self.http.map(|(server, status)| {
            let ends = Arc::clone(&shared);
            let certificates: crate::http::CertificateEnds = Arc::new(move |name: &str| {
                let end = ends.enrollment.node_certificate_expiry(name)?;
                end.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
            });
            let own = Arc::clone(&self.cert);
            let state = crate::http::HttpState { metrics: Arc::clone(&shared.metrics), status, certificates, own };
            if let Ok(addr) = server.local_addr() {
                info!(%addr, "serving /metrics and the status page");
            }
            let stop = cancel.clone();
            let (router, assets) = (crate::http::router(state), crate::http::assets());
            tokio::spawn(server.serve(router, assets, async move { stop.cancelled().await }))
        });
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        info!(%addr, "dispatcher listening");
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                () = &mut shutdown => break,
                incoming = self.endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { break };
            let events = events.clone();
            let shared = Arc::clone(&shared);
            let cancel = cancel.clone();
            let remote = incoming.remote_address();
            tracker.spawn(
                async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = serve_connection(incoming, shared, events) => {}
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
        if let Some(http) = http {
            // Requests in flight finish; a stuck client does not hold the stop up.
            if tokio::time::timeout(SHUTDOWN_GRACE, http).await.is_err() {
                warn!("HTTP connections did not finish within the grace period");
            }
        }
        if self.config.drain_on_stop {
            self.endpoint.wait_idle().await;
        }
    }
}

/// What every connection task may use besides the core.
struct Shared {
    config: Arc<DispatcherConfig>,
    payloads: PayloadStore,
    enrollment: crate::enroll::Enrollment,
    /// Open connections per certificate name.
    peers: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    metrics: Arc<Metrics>,
}

async fn serve_connection(incoming: quinn::Incoming, shared: Arc<Shared>, events: mpsc::Sender<Event>) {
    let config = &shared.config;
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            info!(error = %e, "handshake failed");
            return;
        }
    };
    let peer = match common::tls::peer_identity(&conn) {
        Ok(peer) => peer,
        Err(common::tls::TlsError::NoPeerCertificate) => {
            // No certificate: the only thing such a peer may do is enrol with a join token.
            crate::enroll::serve_enrollment(&conn, &shared.enrollment).await;
            return;
        }
        Err(e) => {
            warn!(error = %e, "refusing connection");
            shared.metrics.refused("bad_certificate");
            conn.close(1u32.into(), b"bad certificate");
            return;
        }
    };
    let Some(_slot) = PeerSlot::take(&shared.peers, &peer.name) else {
        warn!(peer = %peer.name, "refusing connection: too many from this peer");
        shared.metrics.refused("too_many");
        conn.close(5u32.into(), b"too many connections with this certificate");
        return;
    };
    if let Some(reason) = shared.enrollment.revocation(&peer) {
        warn!(peer = %peer.name, role = %peer.role, "refusing a revoked certificate");
        shared.metrics.refused("revoked");
        conn.close(crate::enroll::CLOSE_REVOKED.into(), reason.as_bytes());
        return;
    }
    note_certificate(&conn, &peer, &shared.enrollment);
    let _open = shared.metrics.connection(&peer.role.to_string());
    let span = tracing::info_span!("peer", name = %peer.name, role = %peer.role);
    let result = async {
        let mut control = match tokio::time::timeout(HELLO_TIMEOUT, handshake(&conn, config, &peer)).await {
            Ok(Ok(control)) => control,
            Ok(Err(e)) => {
                if matches!(e, ConnError::Refused(_)) {
                    shared.metrics.refused("hello");
                }
                return Err(e);
            }
            Err(_) => {
                shared.metrics.refused("hello");
                return Err(ConnError::Refused("no hello within 10 s".into()));
            }
        };
        match peer.role {
            Role::Node => serve_node(&conn, &mut control, &peer, config, &events, &shared.enrollment).await,
            Role::Client | Role::Operator => serve_client(&conn, control, &peer, &shared, &events).await,
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
    } else if hello.role != peer.role && !(hello.role == Role::Client && peer.role == Role::Operator) {
        // An operator uses the client tools; its certificate, not its hello, grants more.
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
    enrollment: &crate::enroll::Enrollment,
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
    let heard = LastHeard::default();
    heard.stamp();
    let registered = Event::NodeRegistered { info: *info, address, commands, heard: heard.clone(), reply };
    events.send(registered).await.map_err(|_| ConnError::CoreGone)?;
    let node = node.await.map_err(|_| ConnError::CoreGone)?;
    let result = tokio::select! {
        r = read_node_control(&mut control.recv, node, &heard, events) => r,
        r = read_reports(&mut reports, node, &heard, events) => r,
        r = run_node_commands(conn, work, command_rx, node, events) => r,
        r = crate::enroll::watch_peer(conn, peer, enrollment) => r.map_err(ConnError::from),
    };
    let reason = match &result {
        Ok(()) => "connection closed".to_owned(),
        Err(e) => e.to_string(),
    };
    // A connection that timed out or was reset may come back with the node's chunks still
    // running; one closed by either side on purpose will not.
    let lost = matches!(&result, Err(ConnError::Stream(e)) if matches!(
        e.connection_error(),
        Some(quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset | quinn::ConnectionError::TransportError(_))
    ));
    let _ = events.send(Event::NodeClosed { node, reason, lost }).await;
    result
}

async fn read_node_control(recv: &mut FramedRecv, node: NodeId, heard: &LastHeard, events: &mpsc::Sender<Event>) -> Result<(), ConnError> {
    while let Some(msg) = recv.read_frame::<NodeToDispatcher>().await? {
        heard.stamp();
        if matches!(msg, NodeToDispatcher::Heartbeat(_)) {
            // With the core's queue full (a burst of reports), a heartbeat's news waits for the
            // next one: the stamp above already proves life, and blocking here would stop the
            // stamps too.
            match events.try_send(Event::NodeMessage { node, msg }) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => continue,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(ConnError::CoreGone),
            }
        }
        events.send(Event::NodeMessage { node, msg }).await.map_err(|_| ConnError::CoreGone)?;
    }
    Ok(())
}

async fn read_reports(recv: &mut FramedRecv, node: NodeId, heard: &LastHeard, events: &mpsc::Sender<Event>) -> Result<(), ConnError> {
    while let Some(report) = recv.read_frame().await? {
        heard.stamp();
        events.send(Event::NodeReport { node, report }).await.map_err(|_| ConnError::CoreGone)?;
    }
    Ok(())
}

async fn run_node_commands(
    conn: &quinn::Connection,
    mut work: FramedSend,
    mut commands: mpsc::UnboundedReceiver<NodeCommand>,
    node: NodeId,
    events: &mpsc::Sender<Event>,
) -> Result<(), ConnError> {
    let mut payloads = tokio::task::JoinSet::new();
    while let Some(first) = commands.recv().await {
        let mut next = Some(first);
        // Batch everything already queued into one flush.
        while let Some(command) = next.take() {
            match command {
                NodeCommand::Send(msg) => work.queue_frame(&msg)?,
                NodeCommand::Assign { job, chunk, attempt, input } => match input.read() {
                    Ok(input) => {
                        let bulk = input.clone();
                        let assign = DispatcherToNode::Assign(Assignment { job, chunk, attempt, input, combine: false });
                        work.queue_frame_around(&assign, &bulk)?;
                        // Big inputs go out one by one instead of piling up in the buffer.
                        if work.queued() >= 1 << 20 {
                            work.flush().await?;
                        }
                    }
                    Err(e) => {
                        // Counted as a failed attempt, so it is retried and reported.
                        let failure = ChunkFailure { kind: FailureKind::Node, message: format!("dispatcher could not read the chunk's input: {e}") };
                        let report = ChunkReport { attempt, outcome: Err(failure), run_nanos: 0, log: Bytes::new(), combined_with: None };
                        events.send(Event::NodeReport { node, report }).await.map_err(|_| ConnError::CoreGone)?;
                    }
                },
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
    control: Connection,
    peer: &PeerIdentity,
    shared: &Shared,
    events: &mpsc::Sender<Event>,
) -> Result<(), ConnError> {
    let Connection { send, mut recv } = control;
    let caller = &Caller { name: peer.name.clone(), operator: peer.role == Role::Operator };
    let (outbox, outbox_rx) = mpsc::unbounded_channel();
    let mut uploads = JoinSet::new();
    let mut attachments = JoinSet::new();
    let requests = async {
        while let Some(request) = recv.read_frame::<ClientRequest>().await? {
            let client = ClientConn { conn, caller, outbox: &outbox };
            handle_request(&client, shared, events, &mut uploads, &mut attachments, request).await?;
            while let Some(done) = attachments.try_join_next() {
                if let Ok(Err(e)) = done {
                    debug!(error = %e, "attachment ended");
                }
            }
        }
        Ok::<_, ConnError>(())
    };
    let result = tokio::select! {
        r = requests => r,
        r = write_client_events(send, outbox_rx, &shared.enrollment) => r,
        r = crate::enroll::watch_peer(conn, peer, &shared.enrollment) => r.map_err(ConnError::from),
    };
    // Let uploads see the end of their streams (and report incomplete input) before going.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while uploads.join_next().await.is_some() {} }).await;
    result
}

/// A client connection as its requests see it: the connection, who is on it, and its outbox.
struct ClientConn<'a> {
    conn: &'a quinn::Connection,
    caller: &'a Caller,
    outbox: &'a mpsc::UnboundedSender<ClientEvent>,
}

async fn handle_request(
    client: &ClientConn<'_>,
    shared: &Shared,
    events: &mpsc::Sender<Event>,
    uploads: &mut JoinSet<()>,
    attachments: &mut JoinSet<Result<(), ConnError>>,
    request: ClientRequest,
) -> Result<(), ConnError> {
    let ClientConn { conn, outbox, .. } = *client;
    let caller = client.caller.clone();
    let config = &shared.config;
    let gone = |_| ConnError::CoreGone;
    match request {
        ClientRequest::ListNodes => {
            let (reply, answer) = oneshot::channel();
            events.send(Event::ListNodes { reply }).await.map_err(gone)?;
            let _ = outbox.send(ClientEvent::Nodes(answer.await.map_err(|_| ConnError::CoreGone)?));
        }
        ClientRequest::ListJobs => {
            let (reply, answer) = oneshot::channel();
            events.send(Event::ListJobs { caller, reply }).await.map_err(gone)?;
            let _ = outbox.send(match answer.await.map_err(|_| ConnError::CoreGone)? {
                Ok(jobs) => ClientEvent::Jobs(jobs),
                Err(refusal) => ClientEvent::Error { message: refusal.to_string() },
            });
        }
        ClientRequest::Status { job } | ClientRequest::Cancel { job } => {
            let (reply, answer) = oneshot::channel();
            let event = if matches!(request, ClientRequest::Cancel { .. }) {
                Event::Cancel { caller, job, reply }
            } else {
                Event::Status { caller, job, reply }
            };
            events.send(event).await.map_err(gone)?;
            let _ = outbox.send(match answer.await.map_err(|_| ConnError::CoreGone)? {
                Ok(summary) => ClientEvent::Status(summary),
                Err(refusal) => ClientEvent::Error { message: refusal.to_string() },
            });
        }
        ClientRequest::Release { job } => events.send(Event::Release { caller, job }).await.map_err(gone)?,
        ClientRequest::Drain { .. } | ClientRequest::Undrain { .. } | ClientRequest::Logs { .. } | ClientRequest::Explain { .. } => {
            observe::ask(events, client, request).await?;
        }
        ClientRequest::Attach { job } => {
            let (commands, command_rx) = mpsc::unbounded_channel();
            let (reply, answer) = oneshot::channel();
            events.send(Event::Attach { caller, job, commands, client: outbox.clone(), reply }).await.map_err(gone)?;
            match answer.await.map_err(|_| ConnError::CoreGone)? {
                Ok(attachment) => {
                    let conn = conn.clone();
                    let outbox = outbox.clone();
                    // Tracked by the connection's JoinSet, which aborts it with the connection.
                    attachments.spawn(async move { output::stream_results(&conn, job, attachment.results, command_rx, &outbox).await });
                }
                Err(refusal) => {
                    let _ = outbox.send(ClientEvent::Error { message: refusal.to_string() });
                }
            }
        }
        ClientRequest::Submit(submission) => {
            if submission.payload_len > config.max_payload as u64 {
                let message = format!(
                    "payload of {} exceeds the dispatcher's limit of {}",
                    wire::units::format_size(submission.payload_len),
                    wire::units::format_size(config.max_payload as u64)
                );
                let _ = outbox.send(ClientEvent::Error { message });
                return Ok(());
            }
            if !shared.payloads.contains(&submission.payload) {
                let _ = outbox.send(ClientEvent::NeedPayload);
                let bytes = receive_payload(conn, config, submission.payload).await?;
                // Writing and syncing up to 256 MiB stays off the runtime, which may be the
                // dispatcher's only thread (`async_threads = 1`) and must keep serving nodes.
                let payloads = shared.payloads.clone();
                let hash = submission.payload;
                let stored = tokio::task::spawn_blocking(move || payloads.store(hash, &bytes))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                if let Err(e) = stored {
                    let _ = outbox.send(ClientEvent::Error { message: format!("dispatcher cannot store the payload: {e}") });
                    return Ok(());
                }
            }
            let (reply, answer) = oneshot::channel();
            events.send(Event::Submit { caller, submission, submitter: outbox.clone(), reply }).await.map_err(gone)?;
            match answer.await.map_err(|_| ConnError::CoreGone)? {
                Ok(upload) => {
                    let job = upload.job;
                    let _ = outbox.send(ClientEvent::JobAccepted { job });
                    let input = conn.accept_uni().await.map_err(StreamError::from)?;
                    let events = events.clone();
                    let max_chunk = config.max_chunk;
                    // Tracked by the connection's JoinSet; it ends with the input stream.
                    uploads.spawn(async move { spool_input(input, max_chunk, upload, &events).await });
                }
                Err(refusal) => {
                    let _ = outbox.send(ClientEvent::Error { message: refusal.to_string() });
                }
            }
        }
        ClientRequest::ResumeInput { job } => {
            let (reply, answer) = oneshot::channel();
            events.send(Event::ResumeInput { caller, job, submitter: outbox.clone(), reply }).await.map_err(gone)?;
            match answer.await.map_err(|_| ConnError::CoreGone)? {
                Ok((resumed, upload)) => {
                    let (stored, complete) = (resumed.stored, resumed.complete);
                    let _ = outbox.send(ClientEvent::InputResumed { job, stored, complete });
                    if let Some(upload) = upload {
                        let input = conn.accept_uni().await.map_err(StreamError::from)?;
                        let events = events.clone();
                        let max_chunk = config.max_chunk;
                        // Tracked by the connection's JoinSet; it ends with the input stream.
                        uploads.spawn(async move { spool_input(input, max_chunk, upload, &events).await });
                    }
                }
                Err(refusal) if refusal.is_transient() => {
                    let _ = outbox.send(ClientEvent::Retry { message: refusal.to_string() });
                }
                Err(refusal) => {
                    let _ = outbox.send(ClientEvent::Error { message: refusal.to_string() });
                }
            }
        }
    }
    Ok(())
}

/// Receives a job's input and tells the core how it ended: a lost connection leaves the job
/// waiting for its submitter to resume the upload, any other failure fails it.
async fn spool_input(input: quinn::RecvStream, max_chunk: usize, upload: Upload, events: &mpsc::Sender<Event>) {
    let job = upload.job;
    let event = match receive_input(input, max_chunk, upload, events).await {
        Ok(()) => return,
        Err(InputError::Lost) => Event::InputInterrupted { job },
        Err(InputError::Failed(error)) => Event::InputFailed { job, error },
    };
    let _ = events.send(event).await;
}

/// Why an upload ended before its input did.
enum InputError {
    /// The connection carrying it was lost: the submitter may resume it.
    Lost,
    /// Anything else, in words.
    Failed(String),
}

impl From<String> for InputError {
    fn from(error: String) -> Self {
        InputError::Failed(error)
    }
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

/// Spools a job's input as it arrives. QUIC flow control is the backpressure: the client can send
/// only as fast as this task writes to disk.
async fn receive_input(
    stream: quinn::RecvStream,
    max_chunk: usize,
    upload: Upload,
    events: &mpsc::Sender<Event>,
) -> Result<(), InputError> {
    let Upload { job, mut appender, mut stopped } = upload;
    let mut input = FramedRecv::new(stream, wire::frame::DEFAULT_MAX_MESSAGE);
    match input.expect_frame::<StreamHeader>().await {
        Ok(StreamHeader::JobInput { job: j }) if j == job => {}
        Ok(other) => return Err(format!("expected the job's input stream, got {other:?}").into()),
        Err(e) if e.is_connection_lost() => return Err(InputError::Lost),
        Err(e) => return Err(format!("input stream failed: {e}").into()),
    }
    input.set_max_frame(max_chunk);
    loop {
        let read = tokio::select! {
            biased;
            // The job ended (cancelled, failed, over its owner's spool quota): dropping the
            // stream stops the submitter's sending, and the control stream tells it why.
            _ = &mut stopped => return Err(format!("job {job} ended before its input did").into()),
            read = input.read_raw() => read,
        };
        let chunk = match read {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) if e.is_connection_lost() => return Err(InputError::Lost),
            Err(e) => return Err(format!("bad input stream: {e}").into()),
        };
        let extent = appender.append(&chunk).map_err(|e| format!("dispatcher cannot store the input: {e}"))?;
        let input = Event::Input { job, extent, bytes: chunk };
        events.send(input).await.map_err(|_| "the dispatcher is shutting down".to_string())?;
    }
    // Made durable by the core's next journal commit, which `InputStored` waits for.
    let sync = appender.sync_handle().map_err(|e| format!("dispatcher cannot store the input: {e}"))?;
    events.send(Event::InputEnd { job, sync }).await.map_err(|_| "the dispatcher is shutting down".to_string().into())
}

async fn write_client_events(
    mut send: FramedSend,
    mut outbox: mpsc::UnboundedReceiver<ClientEvent>,
    enrollment: &crate::enroll::Enrollment,
) -> Result<(), ConnError> {
    while let Some(event) = outbox.recv().await {
        send.queue_frame(&with_certificates(event, enrollment))?;
        while let Ok(more) = outbox.try_recv() {
            send.queue_frame(&with_certificates(more, enrollment))?;
        }
        send.flush().await?;
    }
    // Every sender is gone: nothing more to say.
    std::future::pending().await
}

mod observe;
mod output;
mod peers;
#[cfg(test)]
mod tests;
