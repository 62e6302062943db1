//! A multi-host test bed on one Linux machine: the dispatcher and each node run in their own
//! network namespace with their own address in `10.77.0.0/24`, joined by a bridge that lives in a
//! namespace of its own, so a test can kill a node, slow it down, or pull its cable (`ip link set
//! eth0 down` inside its namespace) and watch the real binaries cope.
//!
//! [`NetBed`] owns the namespaces and links: names carry the test process id and a per-process
//! counter (`dispy-<pid>-<k>-n1`), every interface is created inside a namespace the bed made
//! (never in the caller's), and dropping the bed deletes the namespaces, which takes their links
//! and the bridge with them. [`NetCluster`] is the scenario builder on top, the multi-host sibling
//! of [`crate::Cluster`]: certificates from the real `pki` commands, `dispy-dispatcher` in
//! namespace `d` at `10.77.0.1:7870`, `dispy-node`s in `n1`, `n2`, ... at `10.77.0.11`, `.12`,
//! ..., each a [`Daemon`] started through `ip netns exec` with its log in the cluster's
//! directory, and `dispy-submit` run inside the dispatcher's namespace. Dropping a cluster kills
//! its processes first (printing their logs when the test is panicking, or always when
//! `DISPY_TEST_SHOW_LOGS` is set), then removes the namespaces, then the directory.
//!
//! The bed needs root and a working `ip netns` (iproute2, veth and bridge support).
//! [`NetCluster::start`] probes once per process and, when the bed cannot run, reports it through
//! [`crate::skip`] and returns `None`, so a test skips by returning early (or fails, under
//! `DISPY_TEST_STRICT=1`). Only one cluster runs at a time per process:
//! each runs four daemons doing CPU work, and on a small machine parallel beds would only make
//! every scenario slower and its timings noisier.

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::{command, poll_until, signal, Daemon, Pki, Run, COMMAND_TIMEOUT, EVENTUALLY_TIMEOUT};

/// The first three octets of every address on the bed.
pub const SUBNET: [u8; 3] = [10, 77, 0];

/// The dispatcher's UDP port. Fixed: nothing else listens in a namespace the bed just made.
pub const DISPATCHER_PORT: u16 = 7870;

/// The host name of the dispatcher's namespace in a [`NetCluster`].
pub const DISPATCHER_HOST: &str = "d";

/// Lines of each daemon log shown when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Why the bed cannot run on this machine, or `None` when it can. Probed once per process:
/// effective uid 0, then `ip netns add` and a bridge and a veth pair inside a scratch namespace.
/// The probe also removes namespaces left by earlier test processes that were killed before
/// their beds could clean up (`dispy-PID-...` whose process is gone).
pub fn unavailable() -> Option<&'static str> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE.get_or_init(probe).as_deref()
}

fn probe() -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("it needs root and runs as uid {uid}")),
        None => return Some("cannot read the effective uid from /proc/self/status".into()),
    }
    sweep_stale_namespaces();
    let scratch = format!("dispy-{}-probe", std::process::id());
    if let Err(e) = ip(&["netns", "add", &scratch]) {
        return Some(format!("`ip netns add` does not work here: {e:#}"));
    }
    let links = ip(&["-n", &scratch, "link", "add", "br0", "type", "bridge"])
        .and_then(|()| ip(&["-n", &scratch, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]));
    let _ = ip(&["netns", "del", &scratch]);
    links.err().map(|e| format!("cannot create a bridge and a veth pair in a namespace: {e:#}"))
}

/// Deletes the namespaces `dispy-PID-...` (the names beds and probes use) whose process `PID`
/// no longer exists.
fn sweep_stale_namespaces() {
    let Ok(listing) = Command::new("ip").args(["netns", "list"]).stdin(Stdio::null()).output() else { return };
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        // Each line is "NAME" or "NAME (id: N)".
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix("dispy-").and_then(|rest| rest.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The effective uid, the second field of the `Uid:` line of `/proc/self/status`.
/// This process's effective user id, from `/proc/self/status`.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Runs `ip ARGS`, turning a failure into an error carrying its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run `ip {}`", args.join(" ")))?;
    if !output.status.success() {
        bail!("`ip {}` failed ({}): {}", args.join(" "), output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Writes straight to the process's stderr, bypassing the test harness's output capture, so a
/// skipped test says so even when it passes.
fn announce(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// One host of the bed: a namespace whose `eth0` is plugged into the bridge.
#[derive(Debug)]
struct Host {
    name: String,
    namespace: String,
    address: Ipv4Addr,
}

/// Network namespaces joined by a bridge: one namespace per host, each with `lo` and an `eth0`
/// at its own address, and one namespace holding the bridge `br0` and the far end of every
/// host's veth pair (`v-HOST`). Dropping it deletes every namespace it created.
#[derive(Debug)]
pub struct NetBed {
    hosts: Vec<Host>,
    /// Namespaces created so far, deleted in reverse on drop, so a half-built bed is cleaned up
    /// too.
    created: Vec<String>,
}

impl NetBed {
    /// Creates one namespace per `(host, last address octet)`, e.g. `[("d", 1), ("n1", 11)]`,
    /// plus the bridge namespace. Host names must be short (they name the bridge-side link
    /// `v-HOST`, at most 15 bytes) and unique.
    ///
    /// # Errors
    /// If an `ip` command fails; whatever was created is removed again.
    pub fn create(hosts: &[(&str, u8)]) -> anyhow::Result<NetBed> {
        static BEDS: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("dispy-{}-{}", std::process::id(), BEDS.fetch_add(1, Ordering::Relaxed));
        let mut bed = NetBed { hosts: Vec::new(), created: Vec::new() };
        let bridge = format!("{prefix}-br");
        bed.add_namespace(&bridge)?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        for &(name, octet) in hosts {
            let namespace = format!("{prefix}-{name}");
            let far_end = format!("v-{name}");
            let address = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], octet);
            bed.add_namespace(&namespace)?;
            // Made inside the bridge namespace with the peer moved straight into the host's, so
            // no interface ever appears in the namespace the tests run in.
            ip(&["-n", &bridge, "link", "add", &far_end, "type", "veth", "peer", "name", "eth0", "netns", &namespace])?;
            ip(&["-n", &bridge, "link", "set", &far_end, "master", "br0"])?;
            ip(&["-n", &bridge, "link", "set", &far_end, "up"])?;
            ip(&["-n", &namespace, "addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            bed.hosts.push(Host { name: name.to_owned(), namespace, address });
        }
        Ok(bed)
    }

    fn add_namespace(&mut self, namespace: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", namespace])?;
        self.created.push(namespace.to_owned());
        ip(&["-n", namespace, "link", "set", "lo", "up"])
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("the bed has no host {name:?}"))
    }

    /// The namespace of `host`.
    ///
    /// # Panics
    /// If there is no such host.
    pub fn namespace(&self, host: &str) -> &str {
        &self.host(host).namespace
    }

    /// The address of `host`.
    ///
    /// # Panics
    /// If there is no such host.
    pub fn address(&self, host: &str) -> Ipv4Addr {
        self.host(host).address
    }

    /// `inner` run inside `host`'s namespace (`ip netns exec NS PROGRAM ARGS`), with the same
    /// environment changes and working directory. `ip netns exec` execs the program in place, so
    /// the child's pid is the program's and killing the child kills the program.
    ///
    /// # Panics
    /// If there is no such host.
    pub fn command(&self, host: &str, inner: &Command) -> Command {
        let mut outer = Command::new("ip");
        outer.arg("netns").arg("exec").arg(self.namespace(host)).arg(inner.get_program()).args(inner.get_args());
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => outer.env(key, value),
                None => outer.env_remove(key),
            };
        }
        if let Some(dir) = inner.get_current_dir() {
            outer.current_dir(dir);
        }
        outer.stdin(Stdio::null());
        outer
    }

    /// Takes `host`'s `eth0` down (`up = false`: its cable is pulled, packets are dropped without
    /// a word to either side) or up again.
    ///
    /// # Errors
    /// If `ip link set` fails.
    ///
    /// # Panics
    /// If there is no such host.
    pub fn set_link(&self, host: &str, up: bool) -> anyhow::Result<()> {
        ip(&["-n", self.namespace(host), "link", "set", "eth0", if up { "up" } else { "down" }])
    }
}

impl Drop for NetBed {
    fn drop(&mut self) {
        for namespace in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", namespace]) {
                announce(&format!("warning: could not remove network namespace {namespace}: {e:#}"));
            }
        }
    }
}

/// Serialises clusters within the process (see the module documentation).
static TURN: Mutex<()> = Mutex::new(());

/// Builds a [`NetCluster`].
#[derive(Debug, Clone)]
pub struct NetClusterBuilder {
    nodes: usize,
    slots: u32,
    node_timeout: String,
    dispatcher_flags: Vec<OsString>,
}

impl NetClusterBuilder {
    /// How many nodes (default 3), named `n1`, `n2`, ...; at most 200.
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Slots per node (default 1).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// The dispatcher's `--node-timeout` (default `5s`, the product's default, given explicitly).
    pub fn node_timeout(mut self, timeout: &str) -> Self {
        self.node_timeout = timeout.to_owned();
        self
    }

    /// Adds `FLAG VALUE` to the dispatcher's command line (each flag at most once).
    pub fn dispatcher_flag(mut self, flag: &str, value: &str) -> Self {
        self.dispatcher_flags.push(flag.into());
        self.dispatcher_flags.push(value.into());
        self
    }

    /// Creates the namespaces, makes the certificates, starts the dispatcher and the nodes, and
    /// waits until the dispatcher lists every node as ready, each from its own address. Returns
    /// `None`, after [`crate::skip`] reports why for `test` (the test's function name), when the
    /// bed cannot run on this machine (see [`unavailable`]); the test then returns early.
    ///
    /// # Panics
    /// If any step fails; dropping the half-started cluster then prints the daemons' logs and
    /// removes the namespaces. Under `DISPY_TEST_STRICT=1`, also when the bed cannot run.
    pub fn start(self, test: &str) -> Option<NetCluster> {
        if let Some(reason) = unavailable() {
            crate::skip(test, &format!("the network-namespace test bed cannot run: {reason}"));
            return None;
        }
        assert!(self.nodes <= 200, "at most 200 nodes fit the bed's address plan");
        let turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let names: Vec<String> = (1..=self.nodes).map(|i| format!("n{i}")).collect();
        let mut hosts = vec![(DISPATCHER_HOST, 1u8)];
        // Invariant: at most 200 nodes (asserted above), so 10 + i fits a u8.
        hosts.extend(names.iter().zip(11u8..).map(|(name, octet)| (name.as_str(), octet)));
        let bed = NetBed::create(&hosts).unwrap_or_else(|e| panic!("cannot build the test bed: {e:#}"));
        let temp = tempfile::Builder::new().prefix("dispy-netns-").tempdir().expect("create a temporary directory");
        let pki = Pki::init(&temp.path().join("ca"));
        let client = pki.issue_client("tester");
        let operator = pki.issue_admin("operator");
        let nodes = names
            .iter()
            .map(|name| NetNode { name: name.clone(), tls: pki.issue_node(name), runs: Vec::new() })
            .collect();
        let address = format!("{}:{DISPATCHER_PORT}", bed.address(DISPATCHER_HOST));
        let mut cluster = NetCluster {
            nodes,
            dispatcher: None,
            past_dispatchers: Vec::new(),
            dispatcher_flags: Vec::new(),
            bed,
            address,
            client,
            operator,
            slots: self.slots,
            temp,
            _turn: turn,
        };
        cluster.dispatcher_flags = vec!["--node-timeout".into(), self.node_timeout.into()];
        cluster.dispatcher_flags.extend(self.dispatcher_flags);
        cluster.start_dispatcher();
        for name in &names {
            cluster.start_node(name);
        }
        cluster.wait_for_ready(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let listing = cluster.nodes_json().unwrap_or_else(|run| panic!("`nodes --json` failed\n{run}"));
        for name in &names {
            let address = cluster.bed.address(name).to_string();
            let seen = listing.iter().find(|n| n["name"] == name.as_str()).and_then(|n| n["address"].as_str());
            assert!(
                seen.is_some_and(|a| a.starts_with(&format!("{address}:"))),
                "node {name} should connect from {address}, the dispatcher lists {seen:?}"
            );
        }
        Some(cluster)
    }
}

/// A node of a [`NetCluster`]: its identity and every process started for it, oldest first.
#[derive(Debug)]
struct NetNode {
    name: String,
    tls: PathBuf,
    runs: Vec<Process>,
}

/// A daemon and the label its log is shown under.
#[derive(Debug)]
struct Process {
    label: String,
    daemon: Daemon,
}

impl Process {
    fn spawn(label: String, command: Command, log: &Path) -> Process {
        let daemon = Daemon::spawn(&label, command, log);
        Process { label, daemon }
    }

    fn log_tail(&self) -> String {
        let log = self.daemon.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "=== {} (pid {}) log, last {} lines:\n{}",
            self.label,
            self.daemon.pid(),
            lines.len() - start,
            lines[start..].join("\n")
        )
    }
}

/// A dispatcher and nodes on a [`NetBed`], each in its own namespace. See the module
/// documentation.
#[derive(Debug)]
pub struct NetCluster {
    // Field order matters: processes die (in `Drop`) before the namespaces and the directory go,
    // and the turn is released last.
    nodes: Vec<NetNode>,
    dispatcher: Option<Process>,
    /// Dispatchers killed by [`NetCluster::restart_dispatcher`], kept for their logs.
    past_dispatchers: Vec<Process>,
    /// The flags every dispatcher lifetime gets.
    dispatcher_flags: Vec<OsString>,
    bed: NetBed,
    address: String,
    client: PathBuf,
    /// An operator's identity, for draining nodes.
    operator: PathBuf,
    slots: u32,
    temp: TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl NetCluster {
    /// A builder for a cluster of three one-slot nodes.
    pub fn builder() -> NetClusterBuilder {
        NetClusterBuilder { nodes: 3, slots: 1, node_timeout: "5s".into(), dispatcher_flags: Vec::new() }
    }

    /// The dispatcher's address, `10.77.0.1:7870`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The network namespaces.
    pub fn bed(&self) -> &NetBed {
        &self.bed
    }

    /// The cluster's temporary directory (inputs and outputs go here; every namespace sees the
    /// same file system).
    pub fn dir(&self) -> &Path {
        self.temp.path()
    }

    /// A new empty directory `name` inside the cluster's directory, for a job's output.
    ///
    /// # Panics
    /// If it already exists or cannot be created.
    pub fn output_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir().join("out").join(name);
        std::fs::create_dir_all(dir.parent().unwrap_or(self.dir())).expect("create the output root");
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    }

    /// The command line `dispy-submit --dispatcher ADDR --tls-dir CLIENT ARGS`, run inside the
    /// dispatcher's namespace.
    pub fn submit_command<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Command {
        self.command_as(&self.client, args)
    }

    fn command_as<S: AsRef<OsStr>>(&self, tls_dir: &Path, args: impl IntoIterator<Item = S>) -> Command {
        let mut submit = command("dispy-submit");
        submit.arg("--dispatcher").arg(&self.address).arg("--tls-dir").arg(tls_dir).args(args);
        self.bed.command(DISPATCHER_HOST, &submit)
    }

    /// Runs `dispy-submit ARGS` as the cluster's operator (`drain`, `undrain`), to completion.
    pub fn operate<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Run {
        Run::capture(self.command_as(&self.operator, args), COMMAND_TIMEOUT)
    }

    /// Runs `dispy-submit ARGS` to completion (killed after [`COMMAND_TIMEOUT`]).
    pub fn submit<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Run {
        Run::capture(self.submit_command(args), COMMAND_TIMEOUT)
    }

    /// Starts `dispy-submit ARGS` on a thread of its own, so the test can break things while it
    /// runs; join the handle for its [`Run`].
    pub fn submit_in_background<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> JoinHandle<Run> {
        let submit = self.submit_command(args);
        std::thread::spawn(move || Run::capture(submit, COMMAND_TIMEOUT))
    }

    /// The nodes as `dispy-submit nodes --json` lists them, or the failed run.
    ///
    /// # Errors
    /// The run, when the command fails or prints something that is not a JSON array.
    pub fn nodes_json(&self) -> Result<Vec<serde_json::Value>, Box<Run>> {
        json_array(self.submit(["nodes", "--json"]))
    }

    /// The jobs as `dispy-submit jobs --json` lists them, or the failed run.
    ///
    /// # Errors
    /// The run, when the command fails or prints something that is not a JSON array.
    pub fn jobs_json(&self) -> Result<Vec<serde_json::Value>, Box<Run>> {
        json_array(self.submit(["jobs", "--json"]))
    }

    /// `node`'s entry in `nodes --json`; `None` if it is not listed or listing failed.
    pub fn node_status(&self, node: &str) -> Option<serde_json::Value> {
        self.nodes_json().ok()?.into_iter().find(|n| n["name"] == node)
    }

    /// `node`'s state in `nodes --json` (`ready`, `busy`, `draining`, ...), if listed.
    pub fn node_state(&self, node: &str) -> Option<String> {
        self.node_status(node)?["state"].as_str().map(str::to_owned)
    }

    /// Waits until the dispatcher lists every one of `names` as taking work (state `ready` or
    /// `busy`).
    ///
    /// # Panics
    /// After [`EVENTUALLY_TIMEOUT`], with the last listing.
    #[track_caller]
    pub fn wait_for_ready(&self, names: &[&str]) {
        self.wait_for_ready_within(names, EVENTUALLY_TIMEOUT);
    }

    /// As [`NetCluster::wait_for_ready`], with a deadline of `timeout`.
    ///
    /// # Panics
    /// After `timeout`, with the last listing.
    #[track_caller]
    pub fn wait_for_ready_within(&self, names: &[&str], timeout: Duration) {
        let mut last = None;
        let ready = poll_until(timeout, || {
            last = self.nodes_json().ok();
            let listed = |name: &&str| {
                last.iter().flatten().any(|n| n["name"] == *name && (n["state"] == "ready" || n["state"] == "busy"))
            };
            names.iter().all(listed)
        });
        assert!(ready, "the dispatcher never listed {names:?} as taking work; last listing: {last:?}");
    }

    /// Starts (or restarts, after [`NetCluster::kill_node`]) node `name` in its namespace, with a
    /// fresh cache directory and log file for every start. Does not wait for it to join.
    ///
    /// # Panics
    /// If there is no such node or it is already running.
    pub fn start_node(&mut self, name: &str) {
        let index = self.node_index(name);
        let node = &mut self.nodes[index];
        assert!(node.runs.last_mut().is_none_or(|p| !p.daemon.is_alive()), "node {name} is already running");
        let run = node.runs.len() + 1;
        let mut daemon = command("dispy-node");
        daemon
            .arg("--config")
            .arg(empty_config(self.temp.path()))
            .arg("--dispatcher")
            .arg(&self.address)
            .arg("--tls-dir")
            .arg(&node.tls)
            .arg("--cache-dir")
            .arg(self.temp.path().join(format!("cache-{name}-{run}")))
            .arg("--slots")
            .arg(self.slots.to_string())
            .arg("--heartbeat-interval")
            .arg("1s");
        // The node logs each job it starts and ends, and each chunk it completes, at debug level;
        // scenarios read those lines.
        with_debug_target(&mut daemon, "node::daemon");
        with_debug_target(&mut daemon, "node::pool");
        let log = self.temp.path().join(format!("node-{name}-{run}.log"));
        let label = format!("node {name} #{run} (netns {})", self.bed.namespace(name));
        node.runs.push(Process::spawn(label, self.bed.command(name, &daemon), &log));
    }

    /// SIGKILLs node `name` and waits for it to die.
    ///
    /// # Panics
    /// If there is no such node or it never ran.
    pub fn kill_node(&mut self, name: &str) {
        self.current(name).kill();
    }

    /// Makes node `name` a straggler: a thread lets it run `percent`% of every second and holds
    /// it stopped (SIGSTOP) the rest, until the returned [`SlowDown`] is dropped. Its chunks crawl
    /// while it still heartbeats and answers QUIC about once a second, so the dispatcher keeps it
    /// connected: a much slower machine, not a dead one.
    ///
    /// # Panics
    /// If there is no such node or it never ran.
    pub fn slow_down(&mut self, name: &str, percent: u32) -> SlowDown {
        let pid = self.current(name).pid();
        let running = Duration::from_millis(10 * u64::from(percent.clamp(1, 99)));
        let stopped = Duration::from_secs(1) - running;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(Ordering::Relaxed) {
                    signal(pid, "-STOP");
                    std::thread::sleep(stopped);
                    signal(pid, "-CONT");
                    std::thread::sleep(running);
                }
            }
        });
        SlowDown { stop, thread: Some(thread), pid }
    }

    /// Pulls node `name`'s cable: its `eth0` goes down, so neither side hears from the other.
    ///
    /// # Panics
    /// If there is no such node or `ip` fails.
    pub fn cut_link(&self, name: &str) {
        self.bed.set_link(name, false).unwrap_or_else(|e| panic!("cannot cut {name}'s link: {e:#}"));
    }

    /// Plugs node `name`'s cable back in.
    ///
    /// # Panics
    /// If there is no such node or `ip` fails.
    pub fn restore_link(&self, name: &str) {
        self.bed.set_link(name, true).unwrap_or_else(|e| panic!("cannot restore {name}'s link: {e:#}"));
    }

    /// Whether the newest process of node `name` is still running.
    ///
    /// # Panics
    /// If there is no such node or it never ran.
    pub fn node_alive(&mut self, name: &str) -> bool {
        self.current(name).is_alive()
    }

    /// Everything node `name` logged, over all its runs, oldest first.
    ///
    /// # Panics
    /// If there is no such node.
    pub fn node_log(&self, name: &str) -> String {
        self.nodes[self.node_index(name)].runs.iter().map(|p| p.daemon.log()).collect()
    }

    /// Everything the dispatcher has logged so far, every lifetime in order.
    pub fn dispatcher_log(&self) -> String {
        self.past_dispatchers.iter().chain(&self.dispatcher).map(|p| p.daemon.log()).collect()
    }

    /// SIGKILLs the dispatcher (no shutdown, no flush) and starts it again on the same address and
    /// state directory, waiting until it answers.
    pub fn restart_dispatcher(&mut self) {
        if let Some(mut old) = self.dispatcher.take() {
            old.daemon.kill();
            self.past_dispatchers.push(old);
        }
        self.start_dispatcher();
    }

    /// Whether the dispatcher is still running.
    pub fn dispatcher_alive(&mut self) -> bool {
        self.dispatcher.as_mut().is_some_and(|p| p.daemon.is_alive())
    }

    /// The tails of every daemon's log; printed when a test panics while holding the cluster.
    pub fn logs(&self) -> String {
        let processes =
            self.past_dispatchers.iter().chain(&self.dispatcher).chain(self.nodes.iter().flat_map(|n| &n.runs));
        processes.map(Process::log_tail).collect::<Vec<_>>().join("\n")
    }

    fn node_index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("the cluster has no node {name:?}"))
    }

    fn current(&mut self, name: &str) -> &mut Daemon {
        let index = self.node_index(name);
        let run = self.nodes[index].runs.last_mut();
        &mut run.unwrap_or_else(|| panic!("node {name} was never started")).daemon
    }

    /// Starts the dispatcher in its namespace and waits until it answers `nodes`.
    fn start_dispatcher(&mut self) {
        let mut daemon = command("dispy-dispatcher");
        daemon
            .arg("--config")
            .arg(empty_config(self.temp.path()))
            .arg("--listen")
            .arg(&self.address)
            .arg("--tls-dir")
            .arg(self.temp.path().join("ca").join("dispatcher"))
            .arg("--state-dir")
            .arg(self.temp.path().join("dispatcher-state"))
            .args(&self.dispatcher_flags);
        // The dispatcher logs each assignment and each discarded result at debug level;
        // scenarios read those lines.
        with_debug_target(&mut daemon, "dispatcher::ledger");
        let log = self.temp.path().join(format!("dispatcher-{}.log", self.past_dispatchers.len() + 1));
        let label = format!("dispatcher (netns {})", self.bed.namespace(DISPATCHER_HOST));
        self.dispatcher = Some(Process::spawn(label, self.bed.command(DISPATCHER_HOST, &daemon), &log));
        let mut last = None;
        let answered = poll_until(EVENTUALLY_TIMEOUT, || {
            last = self.nodes_json().err();
            last.is_none() || !self.dispatcher_alive()
        });
        assert!(answered && self.dispatcher_alive(), "the dispatcher never answered `nodes`:\n{last:?}");
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("DISPY_TEST_SHOW_LOGS").is_some() {
            // Captured by the test harness and shown with the failure (or with `--nocapture`).
            eprintln!("{}", self.logs());
        }
        for process in self.nodes.iter_mut().flat_map(|n| &mut n.runs) {
            process.daemon.kill();
        }
        if let Some(dispatcher) = &mut self.dispatcher {
            dispatcher.daemon.kill();
        }
        // The fields drop next: the bed removes the namespaces, then the directory goes.
    }
}

/// A node slowed down by [`NetCluster::slow_down`]; dropping it stops the cycling and lets the
/// node run at full speed again.
#[derive(Debug)]
pub struct SlowDown {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pid: u32,
}

impl Drop for SlowDown {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        signal(self.pid, "-CONT");
    }
}

/// Adds `TARGET=debug` to the `RUST_LOG` filter the harness gave `command`.
fn with_debug_target(command: &mut Command, target: &str) {
    let filter = command.get_envs().find(|(key, _)| *key == "RUST_LOG").and_then(|(_, value)| value);
    let filter = filter.map_or_else(|| "info".to_owned(), |f| f.to_string_lossy().into_owned());
    command.env("RUST_LOG", format!("{filter},{target}=debug"));
}

/// An empty config file in `dir`, passed to the daemons so a machine's `/etc/dispy/*.toml`
/// cannot change what the tests see.
fn empty_config(dir: &Path) -> PathBuf {
    let path = dir.join("empty-config.toml");
    if !path.exists() {
        std::fs::write(&path, "").expect("write an empty config file");
    }
    path
}

fn json_array(run: Run) -> Result<Vec<serde_json::Value>, Box<Run>> {
    if run.code != Some(0) {
        return Err(Box::new(run));
    }
    match serde_json::from_str::<serde_json::Value>(&run.stdout) {
        Ok(serde_json::Value::Array(items)) => Ok(items),
        _ => Err(Box::new(run)),
    }
}
