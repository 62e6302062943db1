//! `bench`: dispy's benchmark harness. `bench [--runs N] [--quick] [--json] [W1 W2 W3 W4]` runs
//! the brief's workloads on a local cluster of real processes on loopback; `bench scale [--nodes
//! 1000,2000,5000]` measures one real dispatcher under thousands of simulated nodes. Both print
//! one table (or JSON) of figures: medians with their spread, never pass/fail.
//!
//! The crate is a single binary with modules rather than a library plus a thin `main`, because
//! nothing else links it; `main.rs` still only parses flags and wires the modules together.
//! See `bench/README.md` for what each figure means and `bench/RESULTS.md` for measurements.

mod cluster;
mod echo;
mod netns;
mod probe;
mod procfs;
mod report;
mod scale;
mod stats;
mod workloads;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::cluster::{Binaries, Cluster, Topology};
use crate::report::Report;
use crate::workloads::{Bench, Sizes, Workload};

/// dispy's benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "bench", args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    workloads: WorkloadArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One real dispatcher and thousands of simulated nodes: CPU, memory, scheduling time.
    Scale(ScaleArgs),
    /// One dispatcher, several nodes and the client in network namespaces joined by veth links:
    /// aggregate MB/s of a W3-style job and the dispatcher's CPU per shipped byte (needs root).
    Netns(NetnsArgs),
    /// The QUIC echo server W2 measures the transport floor with (started by the bench itself).
    #[command(hide = true)]
    EchoServer {
        /// Directory with the server identity (the dispatcher's).
        #[arg(long)]
        tls_dir: PathBuf,
    },
}

/// Flags shared by both modes.
#[derive(Debug, ClapArgs)]
struct Common {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Do not run `cargo build` for the dispy binaries first (they must exist next to `bench`).
    #[arg(long)]
    no_build: bool,
    /// Keep the temporary directory (certificates, daemon logs) and print its path.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, ClapArgs)]
struct WorkloadArgs {
    /// Timed runs per workload (after one untimed warm-up run); each figure is their median.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// One timed run at smaller sizes: a smoke test, not a measurement.
    #[arg(long)]
    quick: bool,
    /// How the 2 slots are spread: `1x2` (one node with 2 slots) or `2x1` (two nodes, 1 slot each).
    #[arg(long, default_value = "1x2", value_parser = parse_topology)]
    topology: Topology,
    /// Pass `--pipeline-depth N` to the dispatcher (chunks queued per slot beyond the running
    /// one), for experiments; by default the dispatcher's own default applies.
    #[arg(long)]
    pipeline_depth: Option<u32>,
    /// Pass `--async-threads N` to the dispatcher (1: all its network and scheduling work on one
    /// thread); by default the dispatcher's own default (one per core) applies.
    #[arg(long)]
    dispatcher_async_threads: Option<u32>,
    /// Put the dispatcher's state directory (journal and spool) under this directory instead of
    /// the temporary directory, e.g. on tmpfs (`/dev/shm`) to see what fsync costs.
    #[arg(long)]
    state_parent: Option<PathBuf>,
    /// W3 runs only its jobs with the bytes shipped through the dispatcher (throughput and the
    /// dispatcher's CPU per byte), for profiling the data path.
    #[arg(long)]
    w3_shipped_only: bool,
    #[command(flatten)]
    common: Common,
    /// Workloads to run (default: all).
    #[arg(value_enum, ignore_case = true)]
    workloads: Vec<Workload>,
}

#[derive(Debug, ClapArgs)]
struct ScaleArgs {
    /// Node counts to measure, ascending, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 2000, 5000])]
    nodes: Vec<usize>,
    /// Chunks (of 16 bytes) of the job run at each node count.
    #[arg(long, default_value_t = 100_000)]
    chunks: u64,
    /// Timed runs of the job at each node count.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// quinn endpoints (UDP sockets) shared by the simulated nodes.
    #[arg(long, default_value_t = 16)]
    endpoints: usize,
    /// Slots each simulated node advertises.
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// Seconds of the CPU measurement window.
    #[arg(long, default_value_t = 10)]
    window_secs: u64,
    /// 100 and 200 nodes, 10,000 chunks, one run, a 3 s window: a smoke test.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, ClapArgs)]
struct NetnsArgs {
    /// Node counts to measure, comma-separated; each gets a fresh set of namespaces.
    #[arg(long, value_delimiter = ',', default_values_t = [3])]
    nodes: Vec<usize>,
    /// Slots of each node (`dispy-node --slots`).
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// MiB the job ships (in 1 MiB chunks).
    #[arg(long, default_value_t = 512)]
    mib: u64,
    /// Timed runs per node count (after one untimed warm-up run).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    common: Common,
}

fn parse_topology(text: &str) -> Result<Topology, String> {
    let (nodes, slots) = text.split_once(['x', 'X']).ok_or("expected NODESxSLOTS, e.g. 1x2")?;
    let parse = |s: &str| s.parse::<u32>().ok().filter(|n| *n > 0).ok_or(format!("{s:?} is not a positive number"));
    Ok(Topology { nodes: parse(nodes)?, slots_per_node: parse(slots)?, pipeline_depth: None, dispatcher_async_threads: None })
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The workloads' client runs on one thread, as in dispy-submit; the scale benchmark's
    // thousands of simulated nodes need more.
    let threads = match args.command {
        Some(Command::Scale(_)) => None,
        _ => Some(1),
    };
    let runtime = match common::daemon::runtime(threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            Some(Command::Scale(scale)) => run_scale(scale).await,
            Some(Command::Netns(netns)) => until_signalled(run_netns(netns)).await,
            Some(Command::EchoServer { tls_dir }) => echo::serve(&tls_dir).await,
            None => run_workloads(args.workloads).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `report` as JSON or a table, then removes the scratch directory unless `--keep`.
fn publish(report: &Report, json: bool, dir: tempfile::TempDir, keep: bool) -> anyhow::Result<()> {
    if json {
        report.print_json()?;
    } else {
        report.print_table();
    }
    finish_scratch(dir, keep);
    Ok(())
}

/// A scratch directory, removed at the end unless `--keep`.
fn scratch(keep: bool) -> anyhow::Result<(tempfile::TempDir, bool)> {
    let dir =
        tempfile::Builder::new().prefix("dispy-bench-").tempdir().context("failed to create a temporary directory")?;
    Ok((dir, keep))
}

fn finish_scratch(dir: tempfile::TempDir, keep: bool) {
    if keep {
        let path: PathBuf = dir.keep();
        eprintln!("bench: kept {}", path.display());
    }
}

/// Warns when the machine is busy, since other processes disturb every figure.
fn warn_if_busy() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if let Some(load) = procfs::load_1min() {
        if load > 0.5 * cpus {
            eprintln!("bench: warning: 1-minute load average {load:.2} on {cpus} CPUs; other processes will disturb the figures");
        }
    }
}

/// Latency figures (W2) on a KVM guest whose idle CPUs halt at once measure the hypervisor's
/// wake-ups as much as dispy.
fn note_halt_polling() {
    if procfs::guest_halt_poll_ns() == Some(0) {
        eprintln!(
            "bench: note: guest halt polling is off (guest_halt_poll_ns 0): every wake-up of an idle process \
             goes through the hypervisor, which W2's round trips feel (docs/operations.md, \"Latency\")"
        );
    }
}

/// Which source the binaries were built from: HEAD and whether the working tree differs (read-only
/// git commands), plus when the dispatcher binary was built.
fn provenance(binaries: &Binaries) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(cluster::workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).map_or_else(|| "unknown".into(), |s| s.trim().to_owned());
    let changed = git(&["status", "--porcelain"]).map_or(0, |s| s.lines().count());
    let built = std::fs::metadata(binaries.path("dispy-dispatcher"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| std::process::Command::new("date").arg("-u").arg(format!("-d@{}", d.as_secs())).output().ok())
        .map_or_else(|| "unknown".into(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    format!("source: git HEAD {head} with {changed} changed or untracked path(s) in the working tree; dispy-dispatcher built {built}")
}

fn date() -> String {
    std::process::Command::new("date")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

async fn run_workloads(args: WorkloadArgs) -> anyhow::Result<()> {
    let binaries = Binaries::locate(!args.common.no_build)?;
    let (dir, keep) = scratch(args.common.keep)?;
    let date = date();
    let mut workloads = args.workloads.clone();
    if workloads.is_empty() {
        workloads = vec![Workload::W1, Workload::W2, Workload::W3, Workload::W4];
    }
    workloads.sort();
    workloads.dedup();
    let (runs, sizes) = if args.quick { (1, Sizes::QUICK) } else { (args.runs.max(1), Sizes::FULL) };
    if workloads.contains(&Workload::W2) {
        note_halt_polling();
    }
    eprintln!("bench: starting a cluster in {}", dir.path().display());
    let topology = Topology {
        pipeline_depth: args.pipeline_depth,
        dispatcher_async_threads: args.dispatcher_async_threads,
        ..args.topology
    };
    let state_dir = match &args.state_parent {
        Some(parent) => tempfile::Builder::new().prefix("dispy-bench-state-").tempdir_in(parent)?,
        None => tempfile::Builder::new().prefix("state-").tempdir_in(dir.path())?,
    };
    let s3 = workloads.contains(&Workload::W3) && !args.w3_shipped_only;
    let mut cluster = Cluster::start(&binaries, dir.path(), state_dir.path(), topology, s3).await?;
    let setup = vec![
        format!(
            "cluster: 1 dispy-dispatcher + {} ({} slots in total), real processes on 127.0.0.1, certificates from `dispy-dispatcher pki`",
            cluster.topology,
            cluster.topology.nodes * cluster.topology.slots_per_node
        ),
        format!("binaries: {}", binaries.path("dispy-dispatcher").parent().map_or_else(String::new, |p| p.display().to_string())),
        provenance(&binaries),
        "client: in-process client::Client (connect + run per job); W2 also with a protocol-level probe".into(),
        format!("dispatcher state directory (journal, spool): {}", state_dir.path().display()),
        format!("runs: {runs} timed run(s) per workload after 1 untimed warm-up{}", if args.quick { " (--quick: smaller sizes)" } else { "" }),
    ];
    let engine = node::exec::wasm::WasmEngine::new()?;
    let w3_shipped_only = args.w3_shipped_only;
    let mut bench = Bench { cluster: &mut cluster, dir: dir.path(), engine, runs, sizes, w3_shipped_only };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for workload in workloads {
        eprintln!("bench: running {workload:?} (load average {})", procfs::load_average());
        warn_if_busy();
        let (workload_rows, note) = bench.run(workload).await.with_context(|| format!("{workload:?} failed"))?;
        rows.extend(workload_rows);
        notes.push(note);
    }
    drop(cluster);
    drop(state_dir);
    let report = Report { date, machine: procfs::Machine::describe(), setup, rows, notes };
    publish(&report, args.common.json, dir, keep)
}

async fn run_scale(args: ScaleArgs) -> anyhow::Result<()> {
    let binaries = Binaries::locate(!args.common.no_build)?;
    let (dir, keep) = scratch(args.common.keep)?;
    let date = date();
    let mut nodes = if args.quick { vec![100, 200] } else { args.nodes.clone() };
    nodes.sort_unstable();
    nodes.dedup();
    let opts = scale::ScaleOptions {
        nodes,
        chunks: if args.quick { 10_000 } else { args.chunks },
        job_runs: if args.quick { 1 } else { args.runs },
        endpoints: args.endpoints,
        slots: args.slots,
        window: Duration::from_secs(if args.quick { 3 } else { args.window_secs.max(1) }),
        settle: Duration::from_secs(3),
    };
    warn_if_busy();
    let (rows, mut setup, notes) = scale::run(&binaries, dir.path(), &opts).await?;
    setup.insert(
        0,
        "scale: 1 dispy-dispatcher process; simulated nodes in the bench process over real QUIC + mTLS on 127.0.0.1"
            .into(),
    );
    setup.insert(1, provenance(&binaries));
    let report = Report { date, machine: procfs::Machine::describe(), setup, rows, notes };
    publish(&report, args.common.json, dir, keep)
}

/// Runs `work` until it ends or this process gets SIGINT or SIGTERM; on a signal `work` is
/// dropped, so its guards (processes, network namespaces) clean up before the process exits.
async fn until_signalled(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered before `work` first runs, so a signal during its set-up is caught too.
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
    tokio::select! {
        biased;
        _ = interrupt.recv() => bail!("interrupted (SIGINT); its processes and network namespaces are gone"),
        _ = terminate.recv() => bail!("terminated (SIGTERM); its processes and network namespaces are gone"),
        result = work => result,
    }
}

async fn run_netns(args: NetnsArgs) -> anyhow::Result<()> {
    if let Some(why) = tests::netns::unavailable() {
        println!("SKIPPED: bench netns: {why}");
        return Ok(());
    }
    let binaries = Binaries::locate(!args.common.no_build)?;
    let (dir, keep) = scratch(args.common.keep)?;
    let date = date();
    let opts = netns::NetnsOptions {
        nodes: args.nodes.clone(),
        slots: args.slots.max(1),
        bytes: args.mib.max(1) << 20,
        runs: args.runs.max(1),
    };
    warn_if_busy();
    let (rows, mut setup, notes) = netns::run(&binaries, dir.path(), &opts).await?;
    setup.push(provenance(&binaries));
    let report = Report { date, machine: procfs::Machine::describe(), setup, rows, notes };
    publish(&report, args.common.json, dir, keep)
}
