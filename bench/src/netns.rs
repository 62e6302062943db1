//! The multi-host throughput scenario (`bench netns`): one `dispy-dispatcher`, N `dispy-node`s
//! and the client, each in a network namespace of its own, joined by veth pairs through a bridge
//! ([`tests::netns::NetBed`], the integration tests' bed), so every byte a job ships crosses real
//! links twice (client to dispatcher, dispatcher to node) as it would between hosts.
//!
//! The job has W3's shape: a generated file in 1 MiB chunks (`bytes:1MiB`) through
//! `examples/checksum.wat`, the bytes shipped (not shared input), run by a `dispy-submit run`
//! process in the client's namespace and timed from spawn to exit. For each node count the
//! scenario builds a fresh bed and cluster, runs the job once untimed (the nodes compile the
//! payload), then `runs` timed times, comparing every output with `run_serial`. Around each timed
//! run it reads the CPU time of the dispatcher and the nodes (`/proc/PID/stat`; `ip netns exec`
//! execs the daemon in place, so the child's pid is the daemon's) and of the finished
//! `dispy-submit` (this process's waited-for children), and divides it by the bytes shipped.
//!
//! Dropping a [`NetnsCluster`] kills its processes before the bed removes their namespaces;
//! `main` runs the scenario under a SIGINT/SIGTERM guard so an interrupted run unwinds through
//! those drops too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ::tests::netns::{NetBed, DISPATCHER_PORT};
use anyhow::{bail, ensure, Context};
use client::split::SplitRule;
use node::exec::wasm::{run_serial, WasmEngine};

use crate::cluster::{workspace_root, Binaries, Daemon, Pki};
use crate::procfs::{self, UdpCounters};
use crate::report::Row;
use crate::stats::Summary;
use crate::workloads::{write_pseudo_random, W3_CHUNK};

/// The bed's host names; a node is `n1`, `n2`, ... at `.11`, `.12`, ...
const DISPATCHER_HOST: &str = "d";
const CLIENT_HOST: &str = "c";
const FIRST_NODE_OCTET: u8 = 11;
/// Nodes that fit the bed's `/24` after [`FIRST_NODE_OCTET`].
const MAX_NODES: usize = 200;
/// How long the nodes may take to register.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of the scenario.
#[derive(Debug, Clone)]
pub(crate) struct NetnsOptions {
    /// Node counts to measure, each on a fresh bed.
    pub(crate) nodes: Vec<usize>,
    /// `dispy-node --slots` of every node.
    pub(crate) slots: u32,
    /// Bytes the job ships.
    pub(crate) bytes: u64,
    /// Timed runs per node count.
    pub(crate) runs: usize,
}

/// The job every run submits, and what its output must be.
struct Job {
    /// `dispy-submit` arguments after the global flags.
    args: Vec<OsString>,
    output: PathBuf,
    reference: Vec<u8>,
    bytes: u64,
}

/// Runs the scenario and returns its rows, lines for the report's set-up section and notes.
///
/// # Errors
/// When the bed or a process cannot start, a job fails or an output differs from the reference.
pub(crate) async fn run(
    binaries: &Binaries,
    dir: &Path,
    opts: &NetnsOptions,
) -> anyhow::Result<(Vec<Row>, Vec<String>, Vec<String>)> {
    let most = opts.nodes.iter().copied().max().unwrap_or(0);
    ensure!(most <= MAX_NODES && !opts.nodes.contains(&0), "node counts must be 1 to {MAX_NODES}");
    let pki = Pki::init(binaries, &dir.join("pki"))?;
    let node_tls = (1..=most).map(|i| pki.issue_node(&node_name(i))).collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!("bench: netns: writing {} MiB and computing the reference", opts.bytes >> 20);
    let job = prepare_job(dir, opts.bytes)?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &nodes in &opts.nodes {
        eprintln!("bench: netns: {nodes} node(s) (load average {})", procfs::load_average());
        let layout = Layout { nodes, slots: opts.slots, runs: opts.runs };
        let cluster =
            NetnsCluster::start(binaries, &pki, &node_tls[..nodes], &dir.join(format!("{nodes}-nodes")), layout)
                .await
                .with_context(|| format!("starting the cluster with {nodes} node(s)"))?;
        let (mut level_rows, note) = cluster.measure(&job).await.with_context(|| format!("{nodes} node(s)"))?;
        rows.append(&mut level_rows);
        notes.push(note);
    }
    let setup = vec![
        format!(
            "netns: 1 dispy-dispatcher, the node(s) and the client each in a network namespace of its own, \
             veth pairs into one bridge (10.77.0.0/24, MTU 1500); {} slot(s) per node",
            opts.slots
        ),
        format!(
            "job: {} MiB generated, bytes:1MiB, examples/checksum.wat, bytes shipped; `dispy-submit run` in the \
             client's namespace, timed from spawn to exit; 1 untimed warm-up, then {} timed run(s) per node count",
            opts.bytes >> 20,
            opts.runs
        ),
        "CPU: utime + stime of /proc/PID/stat around each timed run (10 ms ticks); dispy-submit's from this \
         process's waited-for children; per byte = CPU / bytes shipped"
            .into(),
    ];
    Ok((rows, setup, notes))
}

/// Writes the input into `dir` and computes the job's serial output.
fn prepare_job(dir: &Path, bytes: u64) -> anyhow::Result<Job> {
    let input = dir.join("netns.bin");
    write_pseudo_random(&input, bytes, 3)?;
    let payload = workspace_root().join("examples/checksum.wat");
    let chunks: Vec<Vec<u8>> =
        SplitRule::Bytes(W3_CHUNK).chunks(std::slice::from_ref(&input))?.collect::<Result<_, _>>()?;
    let reference = run_serial(&WasmEngine::new()?, &std::fs::read(&payload)?, &[], chunks)?;
    let output = dir.join("netns.out");
    let mut args: Vec<OsString> = vec!["run".into(), "--payload".into(), payload.into(), "--input".into()];
    args.extend([input.into(), "--split".into(), "bytes:1MiB".into(), "--output".into(), output.clone().into()]);
    Ok(Job { args, output, reference, bytes })
}

fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// The shape of one measured cluster.
#[derive(Debug, Clone, Copy)]
struct Layout {
    nodes: usize,
    slots: u32,
    runs: usize,
}

/// A dispatcher and nodes on a [`NetBed`]; dropping it kills the processes, then removes the
/// namespaces.
struct NetnsCluster {
    // Field order matters: the processes die before the bed deletes their namespaces.
    dispatcher: Daemon,
    nodes: Vec<Daemon>,
    bed: NetBed,
    binaries: Binaries,
    address: String,
    client_dir: PathBuf,
    layout: Layout,
}

/// CPU time used so far by the cluster's processes, this process's waited-for children (the
/// finished `dispy-submit` runs) and the whole machine.
struct CpuSample {
    dispatcher: Duration,
    nodes: Vec<Duration>,
    client: Duration,
    machine: Duration,
}

impl NetnsCluster {
    /// Builds the bed, starts the dispatcher and the nodes in their namespaces (logs and state
    /// in `dir`) and waits until every node has registered from its own address.
    async fn start(
        binaries: &Binaries,
        pki: &Pki,
        node_tls: &[PathBuf],
        dir: &Path,
        layout: Layout,
    ) -> anyhow::Result<NetnsCluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        let names: Vec<String> = (1..=layout.nodes).map(node_name).collect();
        let mut hosts = vec![(DISPATCHER_HOST, 1), (CLIENT_HOST, 2)];
        hosts.extend(names.iter().map(String::as_str).zip(FIRST_NODE_OCTET..));
        let bed = NetBed::create(&hosts)?;
        let address = format!("{}:{DISPATCHER_PORT}", bed.address(DISPATCHER_HOST));
        let mut command = binaries.command("dispy-dispatcher");
        command.arg("--listen").arg(&address).arg("--tls-dir").arg(pki.dispatcher());
        command.arg("--state-dir").arg(dir.join("state"));
        let dispatcher = Daemon::spawn(bed.command(DISPATCHER_HOST, &command), &dir.join("dispatcher.log"))?;
        let mut nodes = Vec::new();
        for (name, tls) in names.iter().zip(node_tls) {
            let mut command = binaries.command("dispy-node");
            command.arg("--dispatcher").arg(&address).arg("--tls-dir").arg(tls);
            command
                .arg("--slots")
                .arg(layout.slots.to_string())
                .arg("--cache-dir")
                .arg(dir.join(format!("cache-{name}")));
            nodes.push(Daemon::spawn(bed.command(name, &command), &dir.join(format!("{name}.log")))?);
        }
        let mut cluster = NetnsCluster {
            dispatcher,
            nodes,
            bed,
            binaries: binaries.clone(),
            address,
            client_dir: pki.client(),
            layout,
        };
        cluster.wait_ready(&names).await?;
        Ok(cluster)
    }

    /// `dispy-submit ARGS` in the client's namespace, killed if the future running it is dropped.
    fn submit<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&self, args: I) -> tokio::process::Command {
        let mut inner = self.binaries.command("dispy-submit");
        inner.arg("--dispatcher").arg(&self.address).arg("--tls-dir").arg(&self.client_dir).args(args);
        let mut outer = tokio::process::Command::from(self.bed.command(CLIENT_HOST, &inner));
        outer.kill_on_drop(true);
        outer
    }

    /// Waits until `dispy-submit nodes --json` lists every node as taking work, each connected
    /// from its own namespace's address (so the traffic crosses the bed, not a shortcut).
    async fn wait_ready(&mut self, names: &[String]) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let listing =
                self.submit(["--json", "nodes"]).output().await.context("failed to run dispy-submit nodes")?;
            let last =
                String::from_utf8_lossy(if listing.status.success() { &listing.stdout } else { &listing.stderr })
                    .into_owned();
            let nodes: Vec<serde_json::Value> = serde_json::from_str(&last).unwrap_or_default();
            let ready = |name: &String| {
                let own = format!("{}:", self.bed.address(name));
                nodes.iter().any(|n| {
                    n["name"] == name.as_str()
                        && (n["state"] == "ready" || n["state"] == "busy")
                        && n["address"].as_str().is_some_and(|a| a.starts_with(&own))
                })
            };
            if names.iter().all(ready) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the nodes did not all register from their own addresses within {READY_TIMEOUT:?}; last listing: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.dispatcher.check_alive("dispy-dispatcher")?;
        for node in &mut self.nodes {
            node.check_alive("dispy-node")?;
        }
        Ok(())
    }

    fn cpu(&self) -> anyhow::Result<CpuSample> {
        Ok(CpuSample {
            dispatcher: procfs::cpu_time(self.dispatcher.pid())?,
            nodes: self.nodes.iter().map(|n| procfs::cpu_time(n.pid())).collect::<anyhow::Result<_>>()?,
            client: procfs::waited_children_cpu_time()?,
            machine: procfs::machine_busy()?,
        })
    }

    /// The UDP counters of the dispatcher's and the nodes' namespaces, summed.
    fn udp(&self) -> UdpCounters {
        self.nodes
            .iter()
            .chain([&self.dispatcher])
            .map(|daemon| UdpCounters::read_in_namespace_of(daemon.pid()))
            .fold(UdpCounters::default(), |sum, one| sum.plus(&one))
    }

    /// Runs the job once and checks its output; returns its wall time.
    async fn run_job(&mut self, job: &Job) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let done = self.submit(&job.args).output().await.context("failed to run dispy-submit run")?;
        let elapsed = started.elapsed();
        if !done.status.success() {
            self.check_alive()?;
            bail!("dispy-submit run failed ({}): {}", done.status, String::from_utf8_lossy(&done.stderr).trim());
        }
        let output = std::fs::read(&job.output).with_context(|| format!("failed to read {}", job.output.display()))?;
        ensure!(
            output == job.reference,
            "the output differs from run_serial ({} bytes, blake3 {}; expected {} bytes, blake3 {})",
            output.len(),
            blake3::hash(&output),
            job.reference.len(),
            blake3::hash(&job.reference)
        );
        std::fs::remove_file(&job.output)?;
        Ok(elapsed)
    }

    /// The warm-up and the timed runs; the rows for this node count and a note on where the CPU
    /// went.
    async fn measure(mut self, job: &Job) -> anyhow::Result<(Vec<Row>, String)> {
        let load_before = procfs::load_average();
        self.run_job(job).await.context("warm-up run")?;
        let udp_before = self.udp();
        let mut figures = Figures::default();
        let mut node_totals = vec![Duration::ZERO; self.layout.nodes];
        for run in 1..=self.layout.runs {
            let before = self.cpu()?;
            let elapsed = self.run_job(job).await.with_context(|| format!("timed run {run}"))?;
            let after = self.cpu()?;
            for (total, (was, now)) in node_totals.iter_mut().zip(before.nodes.iter().zip(&after.nodes)) {
                *total += now.saturating_sub(*was);
            }
            figures.add(job.bytes, elapsed, &before, &after);
        }
        let udp = self.udp().since(&udp_before);
        self.check_alive()?;
        let label = format!("{} node(s) x {} slot(s)", self.layout.nodes, self.layout.slots);
        drop(self);
        let load = format!("{load_before} -> {}", procfs::load_average());
        let per_node: Vec<String> = node_totals
            .iter()
            .enumerate()
            .map(|(i, cpu)| format!("{} {:.2} s", node_name(i + 1), cpu.as_secs_f64()))
            .collect();
        let nodes = per_node.len();
        let note = format!(
            "netns, {nodes} node(s): CPU of each node over the timed runs: {}; {} UDP datagrams dropped for a full \
             receive buffer in the dispatcher's and nodes' namespaces during the timed runs (of {} received)",
            per_node.join(", "),
            udp.buffer_drops,
            udp.received
        );
        let mut rows = figures.rows(&label);
        for row in &mut rows {
            row.load = load.clone();
        }
        Ok((rows, note))
    }
}

/// Each timed run's figures.
#[derive(Debug, Default)]
struct Figures {
    rates: Vec<f64>,
    dispatcher_ns_per_byte: Vec<f64>,
    dispatcher_percent: Vec<f64>,
    nodes_ns_per_byte: Vec<f64>,
    nodes_percent: Vec<f64>,
    client_ns_per_byte: Vec<f64>,
    other_percent: Vec<f64>,
}

impl Figures {
    fn add(&mut self, bytes: u64, elapsed: Duration, before: &CpuSample, after: &CpuSample) {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let dispatcher = after.dispatcher.saturating_sub(before.dispatcher);
        let nodes: Duration = after.nodes.iter().sum::<Duration>().saturating_sub(before.nodes.iter().sum());
        let client = after.client.saturating_sub(before.client);
        let machine = after.machine.saturating_sub(before.machine);
        let per_byte = |cpu: Duration| cpu.as_secs_f64() * 1e9 / bytes as f64;
        let percent = |cpu: Duration| 100.0 * cpu.as_secs_f64() / seconds;
        self.rates.push(bytes as f64 / 1e6 / seconds);
        self.dispatcher_ns_per_byte.push(per_byte(dispatcher));
        self.dispatcher_percent.push(percent(dispatcher));
        self.nodes_ns_per_byte.push(per_byte(nodes));
        self.nodes_percent.push(percent(nodes));
        self.client_ns_per_byte.push(per_byte(client));
        // This process only waits during a run; whatever else was busy is someone else's.
        self.other_percent.push(percent(machine.saturating_sub(dispatcher + nodes + client)));
    }

    fn rows(&self, label: &str) -> Vec<Row> {
        let row = |what: &str, unit: &'static str, values: &[f64], target: &'static str| {
            Row::new("netns", format!("{label}: {what}"), unit, Summary::of(values), target)
        };
        vec![
            row(
                "aggregate throughput, 1 MiB chunks shipped through the dispatcher (checksum.wat)",
                "MB/s",
                &self.rates,
                "",
            ),
            row("dispatcher CPU per shipped byte", "ns/B", &self.dispatcher_ns_per_byte, ""),
            row("dispatcher CPU (100 = one core)", "%", &self.dispatcher_percent, ""),
            row("nodes' CPU per shipped byte, all nodes", "ns/B", &self.nodes_ns_per_byte, ""),
            row("nodes' CPU, all nodes (100 = one core)", "%", &self.nodes_percent, ""),
            row("client (dispy-submit run) CPU per shipped byte", "ns/B", &self.client_ns_per_byte, ""),
            row(
                "everything else busy on the machine: other processes, interrupts (100 = one core)",
                "%",
                &self.other_percent,
                "",
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dispatcher: u64, nodes: &[u64], client: u64, machine: u64) -> CpuSample {
        CpuSample {
            dispatcher: Duration::from_millis(dispatcher),
            nodes: nodes.iter().map(|&ms| Duration::from_millis(ms)).collect(),
            client: Duration::from_millis(client),
            machine: Duration::from_millis(machine),
        }
    }

    #[test]
    fn figures_divide_each_runs_cpu_by_the_bytes_and_the_wall_time() {
        let mut figures = Figures::default();
        // 1e9 bytes in 2 s: the dispatcher used 1 s (1 ns/B, half a core), the nodes 3 s together,
        // the client 0.5 s, and the machine was busy 5 s, so 0.5 s was someone else's.
        let before = sample(10_000, &[100, 200], 40, 90_000);
        let after = sample(11_000, &[1_600, 1_700], 540, 95_000);
        figures.add(1_000_000_000, Duration::from_secs(2), &before, &after);
        let close = |values: &[f64], want: f64| {
            assert_eq!(values.len(), 1);
            assert!((values[0] - want).abs() < 1e-9, "{values:?} should be {want}");
        };
        close(&figures.rates, 500.0);
        close(&figures.dispatcher_ns_per_byte, 1.0);
        close(&figures.dispatcher_percent, 50.0);
        close(&figures.nodes_ns_per_byte, 3.0);
        close(&figures.nodes_percent, 150.0);
        close(&figures.client_ns_per_byte, 0.5);
        close(&figures.other_percent, 25.0);
        assert_eq!(figures.rows("2 node(s)").len(), 7);
    }
}
