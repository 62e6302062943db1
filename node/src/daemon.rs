//! The node daemon: dial the dispatcher, register, heartbeat, run what it assigns, and dial again
//! with backoff whenever the connection is lost, until shutdown.
//!
//! One connection is one session. Inside a session a single task selects over the control
//! stream, the heartbeat timer, incoming unidirectional streams (assignments and payloads) and the
//! report writer, so when any of them fails the whole session ends together.
//!
//! Work outlives sessions: a job whose payload is ready keeps running its chunks when the
//! connection is lost (the dispatcher restarted, or the network dropped), and every report waits
//! until the dispatcher acknowledges it. The next session's `Register` claims the attempts the
//! node holds (queued, running, or finished with a result not yet acknowledged); the dispatcher
//! confirms each job it still wants with `StartJob` and refuses the other attempts with
//! `CancelAttempt`. A job the new session has not confirmed is dropped once it holds no attempt.
//! Only jobs still preparing (waiting for their payload) end with their session.
//!
//! A stop is graceful: at `shutdown` (SIGTERM) every session tells the dispatcher it is
//! `Leaving`, so it gets no new work; the chunks the node holds finish and their reports are
//! acknowledged, for up to `stop_timeout`, and then the node closes its connection on purpose.
//! Whatever is left at that deadline or at `hurry` (a second SIGTERM) is cancelled, and the
//! dispatcher requeues it the moment the connection closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wire::frame::DEFAULT_MAX_MESSAGE;
use common::net::{open_uni, Connection, FramedRecv, FramedSend, StreamError};
use wire::proto::{
    Assignment, ChunkReport, Confinement, DispatcherToNode, Heartbeat, Hello, HelloReply, JobSpec, NodeInfo,
    NodeToDispatcher, Role, StreamHeader, PROTOCOL_VERSION,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use crate::cache::{PayloadCache, PayloadLease};
pub use crate::config::NodeConfig;
use crate::exec::native::{NativeEngine, NativePolicy, Probe};
use crate::exec::{CancelFlag, Executor};
use crate::health::HealthProbe;
use crate::object_input::{Allowlist, NodeObjects, ObjectStores};
use crate::metrics::{NodeMetrics, PoolMetrics, Reading};
use common::http::HttpServer;
use crate::pool::{JobContext, Pool, Work};
use crate::shared_input;

mod jobs;
mod prepare;
mod reports;
use jobs::{Action, Cancel, JobState, JobTable, Start};
use prepare::{prepare, receive_payload};
use reports::Outbox;

/// Largest assignment frame (chunk input plus header).
const MAX_ASSIGNMENT: usize = 1 << 30;
const BACKOFF_START: Duration = Duration::from_millis(100);
/// How often a stopping node looks whether everything it held is finished and acknowledged.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Short, so a node is back soon after its dispatcher restarts (within its `reattach_grace`) and
/// within the dispatcher's `node_timeout` after a network blip.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The dispatcher could not be reached.
    #[error("failed to connect to {address}: {reason}")]
    Connect {
        /// Where we dialled.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The dispatcher refused this node.
    #[error("dispatcher refused this node: {0}")]
    Refused(String),
    /// A stream failed or carried something invalid.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// A start-up problem that stops the daemon before it dials.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// The TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] common::tls::TlsError),
    /// The payload cache could not be opened.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// The WebAssembly engine or the slot threads could not start.
    #[error("failed to start the executor: {0}")]
    Executor(String),
    /// The UDP socket could not be bound.
    #[error("failed to bind a UDP socket: {0}")]
    Bind(std::io::Error),
    /// `metrics_listen` could not be bound.
    #[error("metrics_listen: {0}")]
    Metrics(#[from] common::http::HttpError),
}

/// State shared by every session of this daemon.
struct Node {
    config: NodeConfig,
    name: String,
    slots: u32,
    executor: Executor,
    pool: Pool,
    cache: PayloadCache,
    health: HealthProbe,
    endpoint: quinn::Endpoint,
    /// The identity presented at the next dial; certificate renewal replaces it.
    identity: tokio::sync::watch::Sender<common::pki::Identity>,
    /// Reports not yet acknowledged, across sessions, and where the current session sends
    /// them: a report lost with a connection is sent again on the next one.
    outbox: Mutex<Outbox>,
    /// Where slot threads send reports, for every session.
    reports: mpsc::UnboundedSender<ChunkReport>,
    /// Jobs and the attempts this node holds, across sessions.
    work: Mutex<JobTable<Arc<PendingContext>, Arc<JobContext>>>,
    /// Set once the node is stopping: every session, current or later, says `Leaving`.
    stopping: tokio::sync::watch::Sender<bool>,
    /// How object input is read; `None` when `object_store_buckets` is empty (none is).
    objects: Option<Arc<NodeObjects>>,
}

/// Runs the node until `shutdown` completes, then stops gracefully: it tells the dispatcher it is
/// leaving, lets the chunks it holds finish and their reports be acknowledged for up to
/// `stop_timeout`, cancels what is left (at once when `hurry` completes), and closes its
/// connection. `hurry` is first polled after `shutdown` completed, so a second
/// `common::signal::shutdown()` completes at the second SIGTERM.
///
/// # Errors
/// [`StartError`] when the node cannot start; lost connections are retried, never returned.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()>,
    hurry: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let (reports, report_rx) = mpsc::unbounded_channel();
    let metrics_server = config.metrics.as_ref().map(|(addr, access)| HttpServer::bind(*addr, access.clone())).transpose()?;
    let pool_metrics = PoolMetrics::default();
    let node = Arc::new(Node::start(config, reports, pool_metrics.clone())?);
    info!(name = %node.name, slots = node.slots, dispatcher = %node.config.dispatcher, "node starting");
    // Served until the node has stopped, drain included.
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics_server.map(|server| {
        if let Ok(addr) = server.local_addr() {
            info!(%addr, "serving /metrics");
        }
        let router = node.metrics_router(&pool_metrics);
        tokio::spawn(server.serve(router, axum::Router::new(), async move { drop(metrics_stopped.await) }))
    });
    // Sessions, reports and the health log go on while the node drains; none of them ends.
    let working = async {
        tokio::join!(node.clone().dial_forever(), node.log_health(), node.collect_reports(report_rx));
    };
    tokio::pin!(working);
    tokio::select! {
        () = shutdown => {}
        () = &mut working => {}
    }
    let held = node.held();
    info!(attempts = held, stop_timeout = ?node.config.stop_timeout, "stopping: finishing the chunks this node holds, taking no new ones");
    node.stopping.send_replace(true);
    let finished = tokio::select! {
        // A node holding nothing is drained at once, whatever the timeout.
        biased;
        () = node.drained() => true,
        () = tokio::time::sleep(node.config.stop_timeout) => {
            // A zero timeout (`--local`) asked for no wait: nothing to warn about.
            if !node.config.stop_timeout.is_zero() {
                warn!(attempts = node.held(), "stop_timeout passed; cancelling the chunks left, which the dispatcher runs elsewhere");
            }
            false
        }
        () = hurry => {
            warn!(attempts = node.held(), "stopping at once; cancelling the chunks left, which the dispatcher runs elsewhere");
            false
        }
        () = &mut working => false,
    };
    if !finished {
        node.cancel_all();
    }
    let (done, failed) = node.pool.totals();
    info!(chunks_done = done, chunks_failed = failed, drained = finished, "node stopped");
    // An application close: the dispatcher requeues at once whatever this node still held.
    node.endpoint.close(0u32.into(), b"node stopping");
    if node.config.drain_on_stop {
        node.endpoint.wait_idle().await;
    }
    drop(stop_metrics);
    if let Some(task) = metrics_task {
        // Scrapes in flight finish; a stuck client does not hold the stop up.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    Ok(())
}

impl Node {
    fn start(config: NodeConfig, reports: mpsc::UnboundedSender<ChunkReport>, metrics: PoolMetrics) -> Result<Self, StartError> {
        let name = common::tls::identity_of(&config.identity.cert)?.name;
        let probe = Probe::this_machine(&config.payload_user);
        let policy = NativePolicy::decide(&config.native_settings(), &probe);
        match policy.confinement() {
            Confinement::Landlock => info!(native = %policy.confinement(), detail = policy.detail(), "native payloads confined"),
            Confinement::Unconfined => warn!(native = %policy.confinement(), detail = policy.detail(), "native payloads run UNCONFINED"),
            Confinement::Refused => warn!(native = %policy.confinement(), detail = policy.detail(), "cannot confine native payloads: refusing them"),
            Confinement::Disabled => info!(native = %policy.confinement(), "native payloads disabled"),
        }
        let executor = Executor::with_native(NativeEngine::confined(policy)).map_err(|e| StartError::Executor(e.to_string()))?;
        let slots = config.slots.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        });
        let pool = Pool::new(executor.clone(), slots, metrics).map_err(|e| StartError::Executor(e.to_string()))?;
        let cache = PayloadCache::open(&config.cache_dir, config.cache_max_bytes)?;
        let mut endpoint = common::net::endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), None).map_err(StartError::Bind)?;
        endpoint.set_default_client_config(common::tls::client_config_with_timeout(
            &config.identity,
            config.dispatcher_timeout,
        )?);
        let identity = tokio::sync::watch::Sender::new(config.identity.clone());
        let objects = match config.object_store_buckets.as_slice() {
            [] => None,
            buckets => {
                let stores = ObjectStores::new(config.object_store_endpoint.clone())
                    .map_err(|e| StartError::Executor(e.to_string()))?
                    .trusting(config.object_store_roots.clone());
                info!(buckets = %buckets.join(","), "object input readable");
                Some(Arc::new(NodeObjects { stores, allow: Allowlist::new(buckets.to_vec()) }))
            }
        };
        Ok(Self {
            config,
            name,
            slots,
            executor,
            pool,
            cache,
            health: HealthProbe::default(),
            endpoint,
            identity,
            outbox: Mutex::default(),
            reports,
            work: Mutex::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            objects,
        })
    }

    /// `GET /metrics` for `metrics_listen`: the pool's and cache's counters, and gauges read at
    /// each scrape (the certificate in use, renewals included).
    fn metrics_router(self: &Arc<Self>, pool: &PoolMetrics) -> axum::Router {
        let metrics = Arc::new(NodeMetrics::new(pool, self.cache.metrics()));
        let node = Arc::clone(self);
        let read = Arc::new(move || Reading {
            slots: node.slots,
            busy: node.pool.busy(),
            cache_bytes: node.cache.held(),
            certificate: common::check::CertExpiry::of(&node.identity.borrow().cert)
                .ok()
                .and_then(|expiry| expiry.not_after.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|end| (node.name.clone(), end.as_secs())),
        });
        crate::metrics::router(metrics, read)
    }

    /// Attempts this node holds: assigned and neither acknowledged nor cancelled.
    fn held(&self) -> usize {
        self.work().held()
    }

    /// Completes once every attempt this node held is finished and every report acknowledged.
    async fn drained(&self) {
        // Polled: acknowledgements arrive within milliseconds of a result, and a stop is rare.
        let mut ticker = tokio::time::interval(STOP_POLL);
        loop {
            ticker.tick().await;
            if self.held() == 0 && self.outbox().unacked.is_empty() {
                return;
            }
        }
    }

    /// Stops every job and attempt this node holds, sending no report for them.
    fn cancel_all(&self) {
        let actions = self.work().cancel_all();
        self.carry_out(actions);
    }

    fn work(&self) -> std::sync::MutexGuard<'_, JobTable<Arc<PendingContext>, Arc<JobContext>>> {
        // Only map operations happen under this lock; a poisoned map is still consistent.
        self.work.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Does on the pool what the job table decided, outside its lock; returns what to tell the
    /// dispatcher.
    fn carry_out(&self, actions: Vec<Action<Arc<JobContext>>>) -> Vec<NodeToDispatcher> {
        let mut tell = Vec::new();
        for action in actions {
            match action {
                Action::Run(job, assignment) => self.pool.submit(Work { job, assignment, reports: self.reports.clone() }),
                Action::StopJob(job) => self.pool.cancel_job(job),
                Action::StopAttempt(attempt) => self.pool.cancel_attempt(attempt),
                Action::Tell(message) => tell.push(message),
            }
        }
        tell
    }

    /// Logs this node's health at a steady interval, connected or not, for operators following
    /// the journal.
    async fn log_health(&self) {
        let mut ticker = tokio::time::interval(self.config.health_log_interval);
        loop {
            ticker.tick().await;
            let health = self.health.sample();
            let (done, failed) = self.pool.totals();
            info!(
                cores = health.cores,
                slots = self.slots,
                busy = self.pool.busy(),
                memory_available = health.memory_available,
                load = health.load,
                chunks_done = done,
                chunks_failed = failed,
                native = %self.executor.native_policy().confinement(),
                "node health"
            );
        }
    }

    async fn dial_forever(self: Arc<Self>) {
        let mut backoff = BACKOFF_START;
        let mut last_failure: Option<String> = None;
        loop {
            let session = tokio::spawn({
                let node = Arc::clone(&self);
                async move { node.session().await }.instrument(tracing::info_span!("session"))
            });
            match session.await {
                Ok(Ok(())) => {
                    // The session was up: dial again at once, its chunks are waiting.
                    last_failure = None;
                    backoff = BACKOFF_START;
                }
                Ok(Err(SessionError::Connect { address, reason })) => {
                    // Say it once at warn (a wrong certificate would otherwise look like silence),
                    // then quietly while it keeps failing the same way.
                    if last_failure.as_deref() != Some(reason.as_str()) {
                        warn!(%address, %reason, "cannot reach the dispatcher; retrying");
                        last_failure = Some(reason);
                    } else {
                        debug!(%address, %reason, "dispatcher still unreachable");
                    }
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "session ended");
                    backoff = BACKOFF_START;
                    last_failure = None;
                }
                Err(e) => warn!(error = %e, "session task failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect(&self) -> Result<quinn::Connection, SessionError> {
        let address = self.config.dispatcher.clone();
        let fail = |reason: String| SessionError::Connect { address: address.clone(), reason };
        let addr = tokio::net::lookup_host(&address)
            .await
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("no address found".into()))?;
        let client = common::tls::client_config_with_timeout(&self.identity.borrow(), self.config.dispatcher_timeout)
            .map_err(|e| fail(e.to_string()))?;
        let connecting = self
            .endpoint
            .connect_with(client, addr, common::tls::dispatcher_server_name())
            .map_err(|e| fail(e.to_string()))?;
        connecting.await.map_err(|e| fail(e.to_string()))
    }

    /// One connection's life. Returns `Ok` when the dispatcher closed it cleanly.
    async fn session(self: Arc<Self>) -> Result<(), SessionError> {
        let conn = self.connect().await?;
        let mut control = Connection::open(&conn, DEFAULT_MAX_MESSAGE).await?;
        control
            .write_frame(&Hello {
                protocol_version: PROTOCOL_VERSION,
                role: Role::Node,
                software: format!("dispy-node {}", env!("CARGO_PKG_VERSION")),
            })
            .await?;
        match control.recv.expect_frame::<HelloReply>().await? {
            HelloReply::Welcome { .. } => {}
            HelloReply::Refused { reason } => return Err(SessionError::Refused(reason)),
        }
        let health = self.health.sample();
        let (claims, actions) = self.work().begin_session();
        self.carry_out(actions);
        if !claims.is_empty() {
            info!(attempts = claims.len(), "claiming the attempts held from the last session");
        }
        control
            .write_frame(&NodeToDispatcher::Register(Box::new(NodeInfo {
                name: self.name.clone(),
                hostname: sysinfo::System::host_name().unwrap_or_default(),
                os: std::env::consts::OS.into(),
                arch: std::env::consts::ARCH.into(),
                slots: self.slots,
                cores: health.cores,
                memory_total: health.memory_total,
                memory_available: health.memory_available,
                version: env!("CARGO_PKG_VERSION").into(),
                cached_payloads: self.cache.list(),
                confinement: self.executor.native_policy().confinement(),
                claims,
                object_store_buckets: self.config.object_store_buckets.clone(),
                shared_input_roots: shared_input::resolve_roots(&self.config.shared_input_roots)
                    .iter()
                    .map(|root| root.display().to_string())
                    .collect(),
                host_id: shared_input::host_id(),
            })))
            .await?;
        info!(remote = %conn.remote_address(), "registered with the dispatcher");
        let reports_stream = open_uni(&conn, &StreamHeader::Reports).await?;
        let (to_dispatcher, outbox) = mpsc::channel(256);
        let session = Arc::new(Session { node: Arc::clone(&self), to_dispatcher });
        let result = tokio::select! {
            r = write_control(control.send, outbox) => r,
            r = read_control(control.recv) => r,
            r = session.heartbeat() => r,
            r = Arc::clone(&session).accept_streams(&conn) => r,
            r = self.write_reports(reports_stream) => r,
            r = crate::enroll::keep_renewed(&conn, &self.identity, self.config.tls_dir.as_deref()) => r.map_err(SessionError::from),
            r = session.announce_leaving() => r,
        };
        session.end();
        match result {
            Err(SessionError::Stream(e)) if e.is_connection_lost() => {
                info!(reason = %e, "lost the dispatcher");
                Ok(())
            }
            other => other,
        }
    }
}

/// What is known of a job before its payload is compiled.
struct PendingContext {
    spec: JobSpec,
    cancel: CancelFlag,
    /// Keeps the payload cached while the job is on this node.
    lease: PayloadLease,
}

impl Cancel for Arc<PendingContext> {
    fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Cancel for Arc<JobContext> {
    fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// Per-connection state.
struct Session {
    node: Arc<Node>,
    to_dispatcher: mpsc::Sender<NodeToDispatcher>,
}

impl Session {
    /// Once the node is stopping (now or later in this session), tells the dispatcher it is
    /// leaving, so it gets no new work; then waits for the session to end some other way.
    async fn announce_leaving(&self) -> Result<(), SessionError> {
        let mut stopping = self.node.stopping.subscribe();
        if stopping.wait_for(|stopping| *stopping).await.is_ok() {
            debug!("telling the dispatcher this node is leaving");
            if self.to_dispatcher.send(NodeToDispatcher::Leaving).await.is_err() {
                return Ok(());
            }
        }
        std::future::pending().await
    }

    async fn heartbeat(&self) -> Result<(), SessionError> {
        let mut ticker = tokio::time::interval(self.node.config.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let health = self.node.health.sample();
            let beat = Heartbeat {
                load: health.load,
                memory_available: health.memory_available,
                busy_slots: self.node.pool.busy(),
            };
            if self.to_dispatcher.send(NodeToDispatcher::Heartbeat(beat)).await.is_err() {
                return Ok(());
            }
        }
    }

    async fn accept_streams(self: Arc<Self>, conn: &quinn::Connection) -> Result<(), SessionError> {
        let mut readers = JoinSet::new();
        loop {
            tokio::select! {
                stream = conn.accept_uni() => {
                    let mut recv = FramedRecv::new(stream.map_err(StreamError::from)?, DEFAULT_MAX_MESSAGE);
                    let header: StreamHeader = recv.expect_frame().await?;
                    match header {
                        StreamHeader::Work => {
                            recv.set_max_frame(MAX_ASSIGNMENT);
                            readers.spawn(Arc::clone(&self).read_work(recv));
                        }
                        StreamHeader::Payload { hash, len } => {
                            let node = Arc::clone(&self.node);
                            readers.spawn(receive_payload(recv, node, hash, len, self.to_dispatcher.clone()));
                        }
                        other => return Err(StreamError::Unexpected(format!("{other:?} stream from the dispatcher")).into()),
                    }
                }
                Some(done) = readers.join_next() => {
                    match done {
                        Ok(result) => result?,
                        Err(e) => warn!(error = %e, "stream reader failed"),
                    }
                }
            }
        }
    }

    /// Handles the work stream in order: job starts, chunks, job ends, cancellations.
    async fn read_work(self: Arc<Self>, mut recv: FramedRecv) -> Result<(), SessionError> {
        let mut preparations = JoinSet::new();
        while let Some(msg) = recv.read_frame::<DispatcherToNode>().await? {
            while preparations.try_join_next().is_some() {}
            match msg {
                DispatcherToNode::StartJob(spec) => {
                    let job = spec.job;
                    // Held from now, so the payload is not evicted between its arrival and the compile.
                    let pending = || {
                        let lease = self.node.cache.lease(spec.payload);
                        Arc::new(PendingContext { spec, cancel: CancelFlag::default(), lease })
                    };
                    let (start, actions) = self.node.work().start_job(job, pending);
                    self.carry_out(actions).await;
                    let Start::Prepare(context) = start else {
                        debug!(%job, "job kept from the last session confirmed");
                        continue;
                    };
                    debug!(%job, payload = ?context.spec.payload, "job starting");
                    let session = Arc::clone(&self);
                    // Tracked by the JoinSet, which aborts what is left when the session ends.
                    preparations.spawn(async move {
                        let prepared = prepare(&session, &context).await;
                        if let Err(error) = &prepared {
                            warn!(%job, %error, "job rejected");
                        }
                        let actions = session.node.work().prepared(job, prepared);
                        session.carry_out(actions).await;
                    });
                }
                DispatcherToNode::Assign(assignment) => {
                    if let Some(error) = self.input_refusal(&assignment) {
                        warn!(job = %assignment.job, %error, "job rejected");
                        let actions = self.node.work().reject(assignment.job, error);
                        self.carry_out(actions).await;
                        continue;
                    }
                    let actions = self.node.work().assign(assignment);
                    self.carry_out(actions).await;
                }
                DispatcherToNode::EndJob { job } => {
                    debug!(%job, "job ended");
                    let actions = self.node.work().end_job(job);
                    self.carry_out(actions).await;
                }
                DispatcherToNode::CancelAttempt { attempt } => {
                    let actions = self.node.work().cancel_attempt(attempt);
                    self.carry_out(actions).await;
                }
                DispatcherToNode::Ack { attempts } => {
                    {
                        let mut outbox = self.node.outbox();
                        for attempt in &attempts {
                            outbox.unacked.remove(attempt);
                        }
                    }
                    let actions = self.node.work().acknowledged(&attempts);
                    self.carry_out(actions).await;
                }
            }
        }
        Ok(())
    }

    /// For a chunk of a shared-input job naming objects this node may not read (a bucket
    /// missing from its `object_store_buckets`) or files it may not or will not read (outside
    /// its `shared_input_roots`, or not the file the job was submitted with), why; the job is
    /// then rejected here before anything of it runs, and the dispatcher places its chunks on
    /// nodes that may.
    fn input_refusal(&self, assignment: &Assignment) -> Option<String> {
        let shared = match self.node.work().job(assignment.job)? {
            JobState::Preparing { context, .. } => context.spec.shared_input,
            JobState::Ready(context) => context.shared_input_roots.is_some(),
        };
        if !shared {
            return None;
        }
        // A malformed reference fails its chunk on the slot, with the decoder's message.
        let chunk = wire::chunk::ChunkRef::decode(&assignment.input).ok()?;
        NodeObjects::refusal(self.node.objects.as_deref(), &chunk).or_else(|| {
            // A few `stat`s and 8 KiB read per file: cheap enough for the session task.
            shared_input::refusal(&chunk, &shared_input::resolve_roots(&self.node.config.shared_input_roots))
        })
    }

    /// Does what the job table decided, and tells the dispatcher what it should hear.
    async fn carry_out(&self, actions: Vec<Action<Arc<JobContext>>>) {
        for message in self.node.carry_out(actions) {
            if self.to_dispatcher.send(message).await.is_err() {
                return;
            }
        }
    }

    /// The session ended: jobs still preparing end with it; ready jobs keep running.
    fn end(&self) {
        let actions = self.node.work().end_session();
        self.node.carry_out(actions);
    }
}

/// The dispatcher sends nothing on the control stream after the handshake; its end is the end of
/// the session.
async fn read_control(mut recv: FramedRecv) -> Result<(), SessionError> {
    match recv.read_frame::<DispatcherToNode>().await? {
        None => Ok(()),
        Some(msg) => Err(StreamError::Unexpected(format!("{msg:?} on the control stream")).into()),
    }
}

async fn write_control(mut send: FramedSend, mut outbox: mpsc::Receiver<NodeToDispatcher>) -> Result<(), SessionError> {
    while let Some(msg) = outbox.recv().await {
        send.queue_frame(&msg)?;
        while let Ok(more) = outbox.try_recv() {
            send.queue_frame(&more)?;
        }
        send.flush().await?;
    }
    Ok(())
}

