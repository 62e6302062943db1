//! Helpers for the durability tests (`tests/integration/durability.rs`): a [`DurableCluster`]
//! whose dispatcher can be SIGKILLed and started again on the same port and state directory,
//! optionally with that state directory on a small tmpfs ([`Tmpfs`]) to make the disk fill up.
//! Its daemons log JSON lines, so tests read facts out of the logs without parsing prose: the
//! dispatcher's `resuming job … done=N`, and each node's `node health` line, whose cumulative
//! `chunks_done` counter is the only per-node count of executed chunks the daemons expose (nodes
//! log one every second here). [`fnv1a64`] and [`BlockPattern`] make a large input and its
//! expected `checksum.wat` output without holding either in memory.
//!
//! Like [`Cluster`](crate::Cluster), dropping a `DurableCluster` kills its processes (printing
//! their logs first when the test is panicking), then unmounts its tmpfs, then removes its
//! directory.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::{command, free_udp_port, poll_until, Daemon, Pki, Run, COMMAND_TIMEOUT, EVENTUALLY_TIMEOUT};

/// Lines of each daemon log shown when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// Builds a [`DurableCluster`].
#[derive(Debug, Clone)]
pub struct DurableBuilder {
    nodes: usize,
    slots: u32,
    dispatcher_args: Vec<OsString>,
    tmpfs_size: Option<String>,
}

impl DurableBuilder {
    /// How many nodes to start (default 2), named `n1`, `n2`, ….
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Slots per node (default 1).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// Passes `--retention DURATION` to the dispatcher.
    pub fn retention(mut self, duration: &str) -> Self {
        self.dispatcher_args.extend(["--retention".into(), duration.into()]);
        self
    }

    /// Passes `--async-threads N` to the dispatcher.
    pub fn dispatcher_async_threads(mut self, threads: u32) -> Self {
        self.dispatcher_args.extend(["--async-threads".into(), threads.to_string().into()]);
        self
    }

    /// Extra `dispy-dispatcher` arguments, for every lifetime.
    pub fn dispatcher_args(mut self, args: &[&str]) -> Self {
        self.dispatcher_args.extend(args.iter().map(OsString::from));
        self
    }

    /// Puts the dispatcher's state directory on a tmpfs of `size` (as `mount -o size=` takes
    /// it, e.g. `64m`), so the disk can be filled. Needs root; see [`DurableBuilder::try_start`].
    pub fn state_on_tmpfs(mut self, size: &str) -> Self {
        self.tmpfs_size = Some(size.to_owned());
        self
    }

    /// Like [`DurableBuilder::start`], but a tmpfs that cannot be mounted (not root, no
    /// `mount`, a sandbox refusing it) is an `Err` with the reason, for the test to skip.
    ///
    /// # Panics
    /// As [`DurableBuilder::start`], for everything else.
    pub fn try_start(self) -> Result<DurableCluster, String> {
        let temp = tempfile::Builder::new().prefix("dispy-durable-").tempdir().expect("create a temporary directory");
        let state_dir = temp.path().join("dispatcher-state");
        std::fs::create_dir_all(&state_dir).expect("create the state directory");
        let mount = match &self.tmpfs_size {
            Some(size) => Some(Tmpfs::mount(&state_dir, size)?),
            None => None,
        };
        let pki = Pki::init(&temp.path().join("ca"));
        let client = pki.issue_client("tester");
        let node_names: Vec<String> = (1..=self.nodes).map(|i| format!("n{i}")).collect();
        let node_dirs: Vec<PathBuf> = node_names.iter().map(|name| pki.issue_node(name)).collect();
        let empty_config = temp.path().join("empty-config.toml");
        std::fs::write(&empty_config, "").expect("write an empty config file");
        let mut cluster = DurableCluster {
            nodes: Vec::new(),
            dispatcher: None,
            lifetimes: 0,
            mount,
            address: format!("127.0.0.1:{}", free_udp_port()),
            state_dir,
            dispatcher_args: self.dispatcher_args,
            empty_config,
            client,
            pki,
            slots: self.slots,
            temp,
        };
        cluster.start_dispatcher();
        for (name, dir) in node_names.iter().zip(&node_dirs) {
            cluster.start_node(name, dir);
        }
        cluster.wait_for_nodes(&node_names.iter().map(String::as_str).collect::<Vec<_>>());
        Ok(cluster)
    }

    /// Makes the certificates, starts the dispatcher and the nodes, and waits until the
    /// dispatcher lists every node as ready.
    ///
    /// # Panics
    /// If any step fails, including mounting the tmpfs.
    pub fn start(self) -> DurableCluster {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A dispatcher (restartable, same address and state directory) and its nodes, in a temporary
/// directory. Daemons log JSON lines: dispatcher lifetime `k` to `dispatcher-k.log`, node `NAME`
/// to `node-NAME.log`.
#[derive(Debug)]
pub struct DurableCluster {
    // Field order matters: processes die (in `Drop`), then the tmpfs goes, then the directory.
    nodes: Vec<Daemon>,
    dispatcher: Option<Daemon>,
    lifetimes: u32,
    mount: Option<Tmpfs>,
    address: String,
    state_dir: PathBuf,
    dispatcher_args: Vec<OsString>,
    empty_config: PathBuf,
    client: PathBuf,
    pki: Pki,
    slots: u32,
    temp: TempDir,
}

impl DurableCluster {
    /// A builder for a cluster of two one-slot nodes, with the default retention and the state
    /// directory on the temporary directory's file system.
    pub fn builder() -> DurableBuilder {
        DurableBuilder { nodes: 2, slots: 1, dispatcher_args: Vec::new(), tmpfs_size: None }
    }

    /// The dispatcher's address, `127.0.0.1:PORT`; the same in every lifetime.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.temp.path()
    }

    /// The dispatcher's `--state-dir`.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The tmpfs holding the state directory, if the builder asked for one.
    pub fn tmpfs(&self) -> Option<&Tmpfs> {
        self.mount.as_ref()
    }

    /// The cluster's CA.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// A path `name` inside the cluster's directory (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// The command line of `dispy-dispatcher` for this cluster (same port, same state).
    pub fn dispatcher_command(&self) -> Command {
        let mut dispatcher = command("dispy-dispatcher");
        dispatcher
            .arg("--config")
            .arg(&self.empty_config)
            .arg("--listen")
            .arg(&self.address)
            .arg("--tls-dir")
            .arg(self.pki.dispatcher_dir())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--log-format")
            .arg("json")
            .args(&self.dispatcher_args);
        dispatcher
    }

    /// Starts a new dispatcher lifetime and waits until it answers `nodes`.
    ///
    /// # Panics
    /// If a dispatcher is running, or the new one exits or never answers.
    pub fn start_dispatcher(&mut self) {
        assert!(
            !self.dispatcher.as_mut().is_some_and(Daemon::is_alive),
            "start_dispatcher: the previous dispatcher still runs"
        );
        self.lifetimes += 1;
        let log = self.dir().join(format!("dispatcher-{}.log", self.lifetimes));
        let label = format!("dispatcher (lifetime {})", self.lifetimes);
        // The old daemon (if any) is dead already; replacing it keeps its log file on disk.
        self.dispatcher = Some(Daemon::spawn(&label, self.dispatcher_command(), &log));
        let mut last = None;
        let answered = poll_until(EVENTUALLY_TIMEOUT, || {
            if !self.dispatcher_mut().is_alive() {
                return true;
            }
            last = self.nodes_json().err();
            last.is_none()
        });
        assert!(
            answered && self.dispatcher_mut().is_alive(),
            "dispatcher lifetime {} exited or never answered `nodes`; last attempt: {last:?}\n{}",
            self.lifetimes,
            self.logs()
        );
    }

    /// Stops the dispatcher with SIGTERM, its graceful shutdown, and waits for it to exit.
    pub fn stop_dispatcher(&mut self) {
        let status = self.dispatcher_mut().terminate(crate::EVENTUALLY_TIMEOUT);
        assert!(status.success(), "the dispatcher's graceful stop exited with {status}\n{}", self.logs());
    }

    /// SIGKILLs the dispatcher (no shutdown, no flush) and waits for it to be gone.
    pub fn kill_dispatcher(&mut self) {
        self.dispatcher_mut().kill();
    }

    /// The dispatcher's process.
    ///
    /// # Panics
    /// Before the first start (never, for a started cluster).
    pub fn dispatcher_mut(&mut self) -> &mut Daemon {
        self.dispatcher.as_mut().expect("a started cluster has a dispatcher")
    }

    /// The dispatcher's process id.
    pub fn dispatcher_pid(&self) -> u32 {
        self.dispatcher.as_ref().map_or(0, Daemon::pid)
    }

    /// How many times a dispatcher was started.
    pub fn lifetimes(&self) -> u32 {
        self.lifetimes
    }

    /// The log of dispatcher lifetime `lifetime` (1 for the first).
    pub fn dispatcher_log(&self, lifetime: u32) -> String {
        read_lossy(&self.dir().join(format!("dispatcher-{lifetime}.log")))
    }

    /// Starts a node named `name` with the identity in `tls_dir`; it logs `node health` every
    /// second. Returns its index for [`DurableCluster::node_log`].
    pub fn start_node(&mut self, name: &str, tls_dir: &Path) -> usize {
        let mut node = command("dispy-node");
        node.arg("--config")
            .arg(&self.empty_config)
            .arg("--dispatcher")
            .arg(&self.address)
            .arg("--tls-dir")
            .arg(tls_dir)
            .arg("--cache-dir")
            .arg(self.dir().join(format!("cache-{name}")))
            .arg("--slots")
            .arg(self.slots.to_string())
            .arg("--health-log-interval")
            .arg("1s")
            .arg("--log-format")
            .arg("json");
        let log = self.dir().join(format!("node-{name}.log"));
        self.nodes.push(Daemon::spawn(&format!("node {name}"), node, &log));
        self.nodes.len() - 1
    }

    /// How many nodes were started.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Everything node `index` has logged so far.
    pub fn node_log(&self, index: usize) -> String {
        self.nodes[index].log()
    }

    /// Runs `dispy-submit ARGS` as the cluster's client, killed after [`COMMAND_TIMEOUT`].
    pub fn submit(&self, args: &[&dyn AsRef<OsStr>]) -> Run {
        self.submit_with(args, COMMAND_TIMEOUT)
    }

    /// Runs `dispy-submit ARGS` as the cluster's client, killed after `timeout`.
    pub fn submit_with(&self, args: &[&dyn AsRef<OsStr>], timeout: Duration) -> Run {
        Run::capture(self.submit_command(args), timeout)
    }

    /// `dispy-submit ARGS` with the cluster's address and client identity, not started.
    pub fn submit_command(&self, args: &[&dyn AsRef<OsStr>]) -> Command {
        self.submit_command_as(&self.client, args)
    }

    /// Runs `dispy-submit ARGS` with the identity in `tls_dir`, killed after [`COMMAND_TIMEOUT`].
    pub fn submit_as(&self, tls_dir: &Path, args: &[&dyn AsRef<OsStr>]) -> Run {
        Run::capture(self.submit_command_as(tls_dir, args), COMMAND_TIMEOUT)
    }

    /// `dispy-submit ARGS` with the cluster's address and the identity in `tls_dir`, not started.
    pub fn submit_command_as(&self, tls_dir: &Path, args: &[&dyn AsRef<OsStr>]) -> Command {
        let mut submit = command("dispy-submit");
        submit.arg("--dispatcher").arg(&self.address).arg("--tls-dir").arg(tls_dir);
        submit.args(args.iter().map(|a| a.as_ref()));
        submit
    }

    /// `dispy-submit submit ARGS`: checks it succeeded and returns the job id it printed.
    ///
    /// # Panics
    /// If the command fails or prints something other than one number.
    #[track_caller]
    pub fn submit_detached(&self, args: &[&dyn AsRef<OsStr>]) -> u64 {
        let mut full: Vec<&dyn AsRef<OsStr>> = vec![&"submit"];
        full.extend_from_slice(args);
        let run = self.submit(&full);
        run.check_success();
        run.stdout.trim().parse().unwrap_or_else(|_| panic!("`submit` did not print a job id\n{run}"))
    }

    /// Waits until a job's upload is under way, with at least `chunks` chunks listed and its
    /// input not yet complete, and returns its id: the moment to kill the dispatcher mid-upload.
    ///
    /// # Panics
    /// If the whole input was stored first (the test's input is too small), or no upload starts
    /// in time; `context` says what else to print.
    #[track_caller]
    pub fn job_mid_upload(&self, chunks: u64, context: impl Fn() -> String) -> u64 {
        let mut job = None;
        let started = poll_until(EVENTUALLY_TIMEOUT, || {
            let jobs = self.jobs_json().unwrap_or_default();
            assert!(
                !jobs.iter().any(|j| j["input_complete"] == true),
                "the whole input was stored before the kill; make it larger: {jobs:?}"
            );
            job = jobs.iter().find(|j| j["total"].as_u64() >= Some(chunks)).and_then(|j| j["job"].as_u64());
            job.is_some()
        });
        assert!(started, "the upload never started\n{}", context());
        job.unwrap_or_default()
    }

    /// `status JOB --json`, parsed; the failed run otherwise (for an unknown job, say).
    ///
    /// # Errors
    /// The run, when the command fails or its output is not a JSON object.
    pub fn status_json(&self, job: u64) -> Result<serde_json::Value, Box<Run>> {
        let run = self.submit(&[&"status", &job.to_string(), &"--json"]);
        parse_json(run, serde_json::Value::is_object)
    }

    /// `jobs --json`, parsed.
    ///
    /// # Errors
    /// The run, when the command fails or its output is not a JSON array.
    pub fn jobs_json(&self) -> Result<Vec<serde_json::Value>, Box<Run>> {
        let run = self.submit(&[&"jobs", &"--json"]);
        parse_json(run, serde_json::Value::is_array).map(|v| v.as_array().cloned().unwrap_or_default())
    }

    /// `nodes --json`, parsed.
    ///
    /// # Errors
    /// The run, when the command fails or its output is not a JSON array.
    pub fn nodes_json(&self) -> Result<Vec<serde_json::Value>, Box<Run>> {
        let run = self.submit(&[&"nodes", &"--json"]);
        parse_json(run, serde_json::Value::is_array).map(|v| v.as_array().cloned().unwrap_or_default())
    }

    /// Waits until the dispatcher lists exactly `names` as its ready nodes.
    ///
    /// # Panics
    /// After [`EVENTUALLY_TIMEOUT`], with the last listing and the logs.
    #[track_caller]
    pub fn wait_for_nodes(&self, names: &[&str]) {
        let mut want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        want.sort();
        let mut last = None;
        let listed = poll_until(EVENTUALLY_TIMEOUT, || {
            let Ok(nodes) = self.nodes_json() else { return false };
            let mut ready: Vec<String> = nodes
                .iter()
                .filter(|n| n["state"] == "ready")
                .filter_map(|n| n["name"].as_str().map(str::to_owned))
                .collect();
            ready.sort();
            let done = ready == want;
            last = Some(ready);
            done
        });
        assert!(listed, "the dispatcher never listed exactly {want:?} as ready; last listing: {last:?}");
    }

    /// Asserts the current dispatcher and every node are still running.
    ///
    /// # Panics
    /// Naming the dead process.
    #[track_caller]
    pub fn check_all_alive(&mut self) {
        assert!(self.dispatcher_mut().is_alive(), "the dispatcher exited");
        for (i, node) in self.nodes.iter_mut().enumerate() {
            assert!(node.is_alive(), "node {} exited", i + 1);
        }
    }

    /// The tails of every log: every dispatcher lifetime's and every node's.
    pub fn logs(&self) -> String {
        let mut parts: Vec<String> =
            (1..=self.lifetimes).map(|k| tail(&format!("dispatcher lifetime {k}"), &self.dispatcher_log(k))).collect();
        parts.extend(self.nodes.iter().enumerate().map(|(i, n)| tail(&format!("node n{}", i + 1), &n.log())));
        parts.join("\n")
    }
}

impl Drop for DurableCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for node in &mut self.nodes {
            node.kill();
        }
        if let Some(dispatcher) = &mut self.dispatcher {
            dispatcher.kill();
        }
        // Fields drop next, in order: the tmpfs is unmounted (nothing has it open any more),
        // then the temporary directory is removed.
    }
}

/// A tmpfs mounted on a directory; unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `64m`) on the existing directory `dir`.
    ///
    /// # Errors
    /// Why it could not be mounted (not root, no `mount` binary, refused by a sandbox).
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "dispy-test-tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs on {} failed ({}): {}",
                dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir: dir.to_owned() })
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Lazily, so a straggling reader cannot leave the mount behind for good.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// The JSON objects among a daemon's log lines (`--log-format json`), in order.
pub fn log_events(log: &str) -> Vec<serde_json::Value> {
    log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter(|v| v.is_object()).collect()
}

/// A numeric field of a log event, whether tracing recorded it as a number or as a string (as
/// it does for `%display` fields).
pub fn field_u64(event: &serde_json::Value, field: &str) -> Option<u64> {
    let value = &event[field];
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// What a node's most recent `node health` line says, and where in its log it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The index of the line among the log's JSON events.
    pub position: usize,
    /// Chunks the node has run to success since it started (its pool's counter).
    pub chunks_done: u64,
    /// Slots running a chunk when the line was logged.
    pub busy: u64,
}

/// The last `node health` line of `log` that comes after event `after` (an index into
/// [`log_events`]; `None` for any).
pub fn last_health(log: &str, after: Option<usize>) -> Option<Health> {
    log_events(log)
        .iter()
        .enumerate()
        .filter(|(i, e)| after.is_none_or(|a| *i > a) && e["message"] == "node health")
        .filter_map(|(position, e)| {
            Some(Health { position, chunks_done: field_u64(e, "chunks_done")?, busy: field_u64(e, "busy")? })
        })
        .next_back()
}

/// The index of the last event of `log` whose message is one of `messages`.
pub fn last_event_with(log: &str, messages: &[&str]) -> Option<usize> {
    log_events(log).iter().rposition(|e| e["message"].as_str().is_some_and(|m| messages.contains(&m)))
}

/// FNV-1a 64, continued from `state` (start from [`FNV_OFFSET`]), as `examples/checksum.wat`
/// computes it.
pub fn fnv1a64(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state = (state ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    state
}

/// FNV-1a 64's offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// A large deterministic input made of equal-sized blocks that share every byte but their last
/// eight, which hold the block's index: writing it is a loop of `write` calls, and the FNV-1a
/// of every block costs one pass over one block, even in a debug build. Any byte lost, changed
/// or moved changes some block's hash, and blocks out of order change the sequence.
#[derive(Debug, Clone)]
pub struct BlockPattern {
    body: Vec<u8>,
    blocks: u64,
}

impl BlockPattern {
    /// `blocks` blocks of `block_size` bytes (at least 8) each, the shared part pseudo-random.
    pub fn new(block_size: usize, blocks: u64) -> BlockPattern {
        assert!(block_size >= 8, "a block holds its 8-byte index");
        BlockPattern { body: crate::pseudo_random_bytes(block_size - 8, 0xd15b), blocks }
    }

    /// The total size in bytes.
    pub fn len(&self) -> u64 {
        (self.body.len() as u64 + 8) * self.blocks
    }

    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.blocks == 0
    }

    /// Writes the whole input to `path`.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        for block in 0..self.blocks {
            out.write_all(&self.body)?;
            out.write_all(&block.to_le_bytes())?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// What `checksum.wat` emits for the input split into its blocks: each block's FNV-1a 64,
    /// little-endian, in order.
    pub fn checksums(&self) -> Vec<u8> {
        let shared = fnv1a64(FNV_OFFSET, &self.body);
        (0..self.blocks).flat_map(|block| fnv1a64(shared, &block.to_le_bytes()).to_le_bytes()).collect()
    }
}

fn parse_json(run: Run, shape: fn(&serde_json::Value) -> bool) -> Result<serde_json::Value, Box<Run>> {
    if run.code != Some(0) {
        return Err(Box::new(run));
    }
    match serde_json::from_str::<serde_json::Value>(&run.stdout) {
        Ok(value) if shape(&value) => Ok(value),
        _ => Err(Box::new(run)),
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

fn tail(label: &str, log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    format!("=== {label} log, last {} lines:\n{}", lines.len() - start, lines[start..].join("\n"))
}
