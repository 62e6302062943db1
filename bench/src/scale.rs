//! The scale benchmark: one real `dispy-dispatcher` process and thousands of simulated nodes in
//! this process, each a real QUIC connection with its own node certificate speaking the real
//! node protocol.
//!
//! The CA lives in this process ([`CertificateAuthority`]); the dispatcher's identity is written
//! with `issue_to_dir`, each simulated node gets an in-memory identity. One quinn endpoint can
//! dial many connections, so the nodes share a few endpoints (UDP sockets) instead of holding one
//! each, which keeps file descriptors and memory small. A simulated node says `Hello`, sends
//! `Register` (2 slots by default, plenty of memory), opens its `Reports` stream, heartbeats every
//! second (with a per-node phase so the fleet does not beat in lockstep), answers `StartJob` with
//! `JobReady` and every `Assign` at once with an `Ok` report of 8 bytes: the sum of the chunk's
//! bytes, so the job's output can be checked against `run_serial` of `sum.wat`.
//!
//! For each node count the benchmark joins nodes up to that count, lets the fleet settle, reads
//! the dispatcher's CPU time (`utime + stime` of `/proc/PID/stat`) over a window and its `VmRSS`,
//! then runs a job of many tiny chunks through `client::Client` and times it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use wire::frame::DEFAULT_MAX_MESSAGE;
use client::job::JobDescription;
use common::net::{open_uni, Connection, FramedRecv, StreamError};
use common::pki::{CertificateAuthority, Identity};
use wire::proto::{
    ChunkReport, DispatcherToNode, Heartbeat, Hello, HelloReply, NodeInfo, NodeToDispatcher, Role, StreamHeader,
    PROTOCOL_VERSION,
};
use client::split::SplitRule;
use client::Client;
use node::exec::wasm::{run_serial, WasmEngine};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cluster::{free_udp_port, Binaries, Daemon};
use crate::procfs::{self, CpuSplit, CpuWindow, UdpCounters};
use crate::report::Row;
use crate::stats::Summary;

/// How often a simulated node heartbeats, as `dispy-node` does by default.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Memory a simulated node advertises: enough for every pipeline position of a 1 GiB job.
const SIM_MEMORY: u64 = 64 << 30;
/// Handshakes in flight at once while nodes join.
const JOIN_CONCURRENCY: usize = 64;
/// How long joining one batch of nodes may take before the level is given up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Options of the scale benchmark.
#[derive(Debug, Clone)]
pub(crate) struct ScaleOptions {
    /// Node counts to measure, ascending.
    pub(crate) nodes: Vec<usize>,
    /// Chunks of the job run at each count.
    pub(crate) chunks: u64,
    /// Timed job runs at each count.
    pub(crate) job_runs: usize,
    /// Shared quinn endpoints (UDP sockets) for all simulated nodes.
    pub(crate) endpoints: usize,
    /// Slots each simulated node advertises.
    pub(crate) slots: u32,
    /// CPU measurement window.
    pub(crate) window: Duration,
    /// Pause between the last join and the CPU window.
    pub(crate) settle: Duration,
}

/// Counters shared by every simulated node.
#[derive(Debug, Default)]
struct SimStats {
    registered: AtomicU64,
    assigned: AtomicU64,
    heartbeats: AtomicU64,
    ended: AtomicU64,
    failed: AtomicU64,
    /// Longest gap between two heartbeats of one node since the last reset, in milliseconds:
    /// shows whether the simulator itself kept time (a gap near 1,000 ms) or was starved.
    max_beat_gap_ms: AtomicU64,
    /// Heartbeats sent more than 2 s after the node's previous one, since the last reset.
    late_beats: AtomicU64,
}

impl SimStats {
    /// Starts a new measurement phase for the heartbeat-gap figures.
    fn reset_gaps(&self) {
        self.max_beat_gap_ms.store(0, Ordering::Relaxed);
        self.late_beats.store(0, Ordering::Relaxed);
    }

    /// The heartbeat-gap figures of the phase, in words.
    fn gaps(&self) -> String {
        format!(
            "sim-side max heartbeat gap {} ms, {} beats > 2 s late",
            self.max_beat_gap_ms.load(Ordering::Relaxed),
            self.late_beats.load(Ordering::Relaxed)
        )
    }
}

/// What every simulated node needs.
struct SimContext {
    address: SocketAddr,
    slots: u32,
    stats: SimStats,
    handshakes: Semaphore,
}

/// Runs the scale benchmark and returns its rows, lines for the report's set-up section and
/// notes for under the table.
///
/// # Errors
/// When the dispatcher cannot start or the client job fails at the first level; later levels
/// that fail end the benchmark with the rows measured so far and a note.
pub(crate) async fn run(
    binaries: &Binaries,
    dir: &Path,
    opts: &ScaleOptions,
) -> anyhow::Result<(Vec<Row>, Vec<String>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut setup = Vec::new();
    let ca = CertificateAuthority::generate("bench-scale")?;
    let tls_dir = dir.join("dispatcher");
    ca.issue_to_dir(Role::Dispatcher, "dispatcher", common::pki::DEFAULT_CERT_VALIDITY, &tls_dir)?;
    let client_identity = ca.issue_identity(Role::Client, "bench")?;
    let port = free_udp_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = binaries.command("dispy-dispatcher");
    command
        .arg("--listen")
        .arg(address.to_string())
        .arg("--tls-dir")
        .arg(&tls_dir)
        .arg("--state-dir")
        .arg(dir.join("state"));
    let mut dispatcher = Daemon::spawn(command, &dir.join("dispatcher.log"))?;
    let pid = dispatcher.pid();
    let mut lister = connect_client(&address.to_string(), &client_identity).await?;
    let baseline_rss = procfs::rss_bytes(pid)?;
    setup.push(format!(
        "scale: dispatcher pid {pid}, baseline RSS {:.1} MiB; simulated nodes share {} quinn endpoints, {} slots each, heartbeat every {:?}",
        mib(baseline_rss),
        opts.endpoints,
        opts.slots,
        HEARTBEAT
    ));

    // The job every level runs, and its reference output.
    let input = dir.join("scale.bin");
    crate::workloads::write_pseudo_random(&input, opts.chunks * 16, 7)?;
    let payload = Path::new(env!("CARGO_MANIFEST_DIR")).join("payloads/sum.wat");
    let mut job = JobDescription::new(payload.clone(), SplitRule::Bytes(16), dir.join("scale.out"));
    job.inputs = vec![input];
    job.name = "bench-scale".into();
    let reference = {
        let engine = WasmEngine::new()?;
        let inputs: Vec<Vec<u8>> = job.split.chunks(&job.inputs)?.collect::<Result<_, _>>()?;
        run_serial(&engine, &std::fs::read(&payload)?, &[], inputs)?
    };

    let mut endpoints = Vec::new();
    for _ in 0..opts.endpoints.max(1) {
        endpoints.push(quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?);
    }
    let ctx = Arc::new(SimContext {
        address,
        slots: opts.slots,
        stats: SimStats::default(),
        handshakes: Semaphore::new(JOIN_CONCURRENCY),
    });
    let mut fleet = JoinSet::new();
    let mut rows = Vec::new();
    let bench_pid = std::process::id();
    let mut next_index = 0usize;

    for &target in &opts.nodes {
        let level = format!("{target} nodes");
        report_failures(&mut fleet);
        let existing = fleet.len();
        if target < existing {
            continue;
        }
        eprintln!("bench: scale: {existing} nodes connected; joining {} more", target - existing);
        let join_started = Instant::now();
        for _ in existing..target {
            let index = next_index;
            next_index += 1;
            let identity = ca.issue_identity(Role::Node, &format!("sim-{index:05}"))?;
            let endpoint = endpoints[index % endpoints.len()].clone();
            let ctx = Arc::clone(&ctx);
            fleet.spawn(async move {
                let result = sim_node(&ctx, endpoint, index, identity).await;
                match &result {
                    Ok(()) => ctx.stats.ended.fetch_add(1, Ordering::Relaxed),
                    Err(_) => ctx.stats.failed.fetch_add(1, Ordering::Relaxed),
                };
                result.map_err(|e| (index, e))
            });
        }
        let joined = wait_for_nodes(&mut lister, &mut dispatcher, target, JOIN_TIMEOUT).await;
        let join_time = join_started.elapsed();
        report_failures(&mut fleet);
        let listed = match joined {
            Ok(listed) => listed,
            Err(e) => {
                notes.push(format!("scale: stopped at {level}: {e:#}"));
                break;
            }
        };
        eprintln!("bench: scale: {listed} nodes registered in {join_time:.1?}; settling");
        tokio::time::sleep(opts.settle).await;

        let load_before = procfs::load_average();
        let beats_before = ctx.stats.heartbeats.load(Ordering::Relaxed);
        let udp_before = UdpCounters::read();
        ctx.stats.reset_gaps();
        let window = CpuWindow::start(pid)?;
        let own = CpuWindow::start(bench_pid)?;
        let split = CpuSplit::start(vec![("dispatcher", vec![pid]), ("bench (simulated nodes)", vec![bench_pid])]);
        let window_started = Instant::now();
        tokio::time::sleep(opts.window).await;
        let cpu = window.percent()?;
        let own_cpu = own.percent()?;
        notes.push(format!("{level}, heartbeat window: CPU use: {}", split.finish()));
        let beat_rate = (ctx.stats.heartbeats.load(Ordering::Relaxed) - beats_before) as f64
            / window_started.elapsed().as_secs_f64();
        let rss = procfs::rss_bytes(pid)?;
        let idle_udp = UdpCounters::read().since(&udp_before);
        let idle_gaps = ctx.stats.gaps();
        let still_listed = lister.nodes().await.map(|n| n.len()).unwrap_or(0);
        let load = format!("{load_before} -> {}", procfs::load_average());
        eprintln!(
            "bench: scale: {level}: dispatcher {cpu:.1} % CPU, {:.1} MiB RSS, {beat_rate:.0} heartbeats/s",
            mib(rss)
        );
        let one = |v: f64| Summary::of(&[v]);
        let window_note = format!("{} s window", opts.window.as_secs());
        let mut level_rows = vec![
            Row::new("scale", format!("dispatcher CPU, {level} heartbeating ({window_note}, {beat_rate:.0} beats/s, {still_listed} listed after)"), "% of a core", one(cpu), "< 100 at 5,000"),
            Row::new("scale", format!("dispatcher RSS (VmRSS), {level}"), "MiB", one(mib(rss)), "< 1,024 at 5,000"),
            Row::new("scale", format!("dispatcher RSS per node above the {:.1} MiB baseline, {level}", mib(baseline_rss)), "KiB",
                one((rss.saturating_sub(baseline_rss)) as f64 / 1024.0 / target as f64), ""),
            Row::new("scale", format!("bench process CPU simulating {level} ({window_note}; {idle_gaps})"), "% of a core", one(own_cpu), ""),
            Row::new("scale", format!("UDP datagrams dropped for a full receive buffer in the window, {level} (of {} received)", idle_udp.received),
                "datagrams", one(idle_udp.buffer_drops as f64), ""),
            Row::new("scale", format!("time for {} more nodes to join (handshake + Register, {JOIN_CONCURRENCY} at a time)", target - existing), "s",
                one(join_time.as_secs_f64()), ""),
        ];

        // The job.
        let assigned_before = ctx.stats.assigned.load(Ordering::Relaxed);
        let mut seconds = Vec::new();
        let mut job_cpu = Vec::new();
        let mut own_job_cpu = Vec::new();
        let mut failure = None;
        let udp_before = UdpCounters::read();
        let dispatcher_drops_before = procfs::udp_socket_drops(port).unwrap_or(0);
        let lost_before = ctx.stats.ended.load(Ordering::Relaxed) + ctx.stats.failed.load(Ordering::Relaxed);
        ctx.stats.reset_gaps();
        let split =
            CpuSplit::start(vec![("dispatcher", vec![pid]), ("bench (client + simulated nodes)", vec![bench_pid])]);
        for _ in 0..opts.job_runs.max(1) {
            let cpu_window = CpuWindow::start(pid)?;
            let own_window = CpuWindow::start(bench_pid)?;
            match run_job(&address.to_string(), &client_identity, &job, &reference).await {
                Ok(elapsed) => {
                    seconds.push(elapsed.as_secs_f64());
                    job_cpu.push(cpu_window.percent()?);
                    own_job_cpu.push(own_window.percent()?);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        notes.push(format!("{level}, job runs: CPU use: {}", split.finish()));
        report_failures(&mut fleet);
        let job_udp = UdpCounters::read().since(&udp_before);
        let dispatcher_drops = procfs::udp_socket_drops(port).unwrap_or(0).saturating_sub(dispatcher_drops_before);
        let job_gaps = ctx.stats.gaps();
        let lost = ctx.stats.ended.load(Ordering::Relaxed) + ctx.stats.failed.load(Ordering::Relaxed) - lost_before;
        let spread = ctx.stats.assigned.load(Ordering::Relaxed) - assigned_before;
        let peak = procfs::peak_rss_bytes(pid)?;
        let rates: Vec<f64> = seconds.iter().map(|s| opts.chunks as f64 / s).collect();
        level_rows.extend([
            Row::new("scale", format!("job of {} tiny chunks across {level}: wall time (Client::connect + run)", opts.chunks), "s", Summary::of(&seconds), ""),
            Row::new("scale", format!("same job as chunks/s ({spread} assignments answered over the runs)"), "chunks/s", Summary::of(&rates), ""),
            Row::new("scale", format!("dispatcher CPU during the job, {level}"), "% of a core", Summary::of(&job_cpu), ""),
            Row::new("scale", format!("bench process CPU during the job, {level} (client + simulated nodes; {job_gaps})"), "% of a core",
                Summary::of(&own_job_cpu), ""),
            Row::new("scale", format!("simulated nodes whose session ended during the job runs, {level}"), "nodes", one(lost as f64), ""),
            Row::new("scale", format!("UDP datagrams dropped for a full receive buffer during the job runs, {level} (of {} received; {dispatcher_drops} of the drops at the dispatcher's socket)", job_udp.received),
                "datagrams", one(job_udp.buffer_drops as f64), ""),
            Row::new("scale", format!("dispatcher peak RSS (VmHWM) so far, {level}"), "MiB", one(mib(peak)), ""),
        ]);
        for row in &mut level_rows {
            row.load = load.clone();
        }
        rows.extend(level_rows);
        if let Some(e) = failure {
            notes.push(format!("scale: the job failed at {level}: {e:#}"));
            break;
        }
        dispatcher.check_alive("dispy-dispatcher")?;
    }
    let s = &ctx.stats;
    notes.push(format!(
        "scale: simulated nodes: {} registered, {} assignments answered, {} heartbeats sent; sessions ended: {} cleanly, {} with an error (the dispatcher closing a connection, e.g. `no heartbeat for 5s`, counts here)",
        s.registered.load(Ordering::Relaxed),
        s.assigned.load(Ordering::Relaxed),
        s.heartbeats.load(Ordering::Relaxed),
        s.ended.load(Ordering::Relaxed),
        s.failed.load(Ordering::Relaxed),
    ));
    fleet.abort_all();
    for endpoint in &endpoints {
        endpoint.close(0u32.into(), b"bench done");
    }
    Ok((rows, setup, notes))
}

/// Connects a client, retrying while the dispatcher starts.
async fn connect_client(address: &str, identity: &Identity) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect(address, identity).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => return Err(e).context("the dispatcher did not come up"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Polls `ListNodes` until the dispatcher lists `want` nodes.
async fn wait_for_nodes(
    lister: &mut Client,
    dispatcher: &mut Daemon,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut listed = 0;
    loop {
        dispatcher.check_alive("dispy-dispatcher")?;
        match lister.nodes().await {
            Ok(nodes) => listed = nodes.len(),
            Err(e) => eprintln!("bench: scale: listing nodes failed: {e}"),
        }
        if listed >= want {
            return Ok(listed);
        }
        if Instant::now() > deadline {
            bail!("only {listed} of {want} nodes registered within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints the first errors of simulated nodes that have ended.
fn report_failures(fleet: &mut JoinSet<Result<(), (usize, anyhow::Error)>>) {
    let mut shown = 0;
    while let Some(done) = fleet.try_join_next() {
        if let Ok(Err((index, e))) = done {
            if shown < 5 {
                eprintln!("bench: scale: simulated node {index} failed: {e:#}");
            }
            shown += 1;
        }
    }
}

/// Runs the job through the client API and checks its output.
async fn run_job(
    address: &str,
    identity: &Identity,
    job: &JobDescription,
    reference: &[u8],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut client = Client::connect(address, identity).await?;
    let report = client.run(job, |_| {}).await?;
    client.close().await;
    let elapsed = started.elapsed();
    let output = std::fs::read(&report.output)?;
    let _ = std::fs::remove_file(&report.output);
    if output != reference {
        bail!("the scale job's output differs from run_serial ({} vs {} bytes)", output.len(), reference.len());
    }
    Ok(elapsed)
}

/// One simulated node's session; returns when the dispatcher closes it.
async fn sim_node(ctx: &SimContext, endpoint: quinn::Endpoint, index: usize, identity: Identity) -> anyhow::Result<()> {
    let name = common::tls::identity_of(&identity.cert)?.name;
    let config = common::tls::client_config(&identity)?;
    let permit = ctx.handshakes.acquire().await?;
    let conn = endpoint.connect_with(config, ctx.address, common::tls::dispatcher_server_name())?.await?;
    let mut control = Connection::open(&conn, DEFAULT_MAX_MESSAGE).await?;
    control
        .write_frame(&Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Node,
            software: "dispy-bench-sim".into(),
        })
        .await?;
    match control.recv.expect_frame::<HelloReply>().await? {
        HelloReply::Welcome { .. } => {}
        HelloReply::Refused { reason } => bail!("refused: {reason}"),
    }
    control
        .write_frame(&NodeToDispatcher::Register(Box::new(NodeInfo {
            name,
            hostname: "bench".into(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            slots: ctx.slots,
            cores: ctx.slots,
            memory_total: SIM_MEMORY,
            memory_available: SIM_MEMORY,
            version: env!("CARGO_PKG_VERSION").into(),
            cached_payloads: Vec::new(),
            confinement: wire::proto::Confinement::Landlock,
            claims: Vec::new(),
            object_store_buckets: Vec::new(),
            shared_input_roots: Vec::new(),
            host_id: String::new(),
        })))
        .await?;
    let mut reports = open_uni(&conn, &StreamHeader::Reports).await?;
    reports.flush().await?;
    drop(permit);
    ctx.stats.registered.fetch_add(1, Ordering::Relaxed);

    // Spread the fleet's heartbeats over the second, deterministically.
    let phase = Duration::from_millis((index as u64).wrapping_mul(7919) % 1000);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The dispatcher's work stream appears with its first message.
    let mut work: Option<FramedRecv> = None;
    let mut drains = JoinSet::new();
    let mut last_beat: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            msg = next_work(&mut work) => {
                match msg? {
                    None => return Ok(()),
                    Some(DispatcherToNode::StartJob(spec)) => {
                        control.write_frame(&NodeToDispatcher::JobReady { job: spec.job }).await?;
                    }
                    Some(DispatcherToNode::Assign(assignment)) => {
                        let started = Instant::now();
                        let sum: u64 = assignment.input.iter().map(|&b| u64::from(b)).sum();
                        let report = ChunkReport {
                            attempt: assignment.attempt,
                            outcome: Ok(Bytes::copy_from_slice(&sum.to_le_bytes())),
                            run_nanos: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                            log: Bytes::new(),
                        };
                        reports.queue_frame(&report)?;
                        ctx.stats.assigned.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(DispatcherToNode::EndJob { .. } | DispatcherToNode::CancelAttempt { .. } | DispatcherToNode::Ack { .. }) => {}
                }
            }
            // Only once no more work is buffered: one flush for a burst of assignments.
            flushed = reports.flush(), if reports.queued() > 0 => flushed?,
            stream = conn.accept_uni() => {
                let mut recv = FramedRecv::new(stream?, DEFAULT_MAX_MESSAGE);
                match recv.expect_frame::<StreamHeader>().await? {
                    StreamHeader::Work => {
                        recv.set_max_frame(256 << 20);
                        work = Some(recv);
                    }
                    StreamHeader::Payload { .. } => {
                        // Read and discard the payload; tracked by the JoinSet, which ends with the session.
                        drains.spawn(async move { recv.read_to_end(256 << 20).await.map(drop) });
                    }
                    other => bail!("unexpected {other:?} stream from the dispatcher"),
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if let Some(previous) = last_beat.replace(now) {
                    let gap = now - previous;
                    ctx.stats.max_beat_gap_ms.fetch_max(gap.as_millis() as u64, Ordering::Relaxed);
                    if gap > Duration::from_secs(2) {
                        ctx.stats.late_beats.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let beat = Heartbeat { load: 0.0, memory_available: SIM_MEMORY, busy_slots: 0 };
                control.write_frame(&NodeToDispatcher::Heartbeat(beat)).await?;
                ctx.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) = drains.join_next() => {}
        }
    }
}

/// The next message on the work stream, or never while the stream has not appeared.
async fn next_work(work: &mut Option<FramedRecv>) -> Result<Option<DispatcherToNode>, StreamError> {
    match work {
        Some(recv) => recv.read_frame().await,
        None => std::future::pending().await,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}
