//! The harness for dispy's cross-process tests: real `dispy-dispatcher`, `dispy-node` and
//! `dispy-submit` processes talking QUIC on 127.0.0.1, with certificates made by the real
//! `dispy-dispatcher pki` commands.
//!
//! [`binary`] finds the workspace binaries next to the test executable and builds them once per
//! test process (`$CARGO build --workspace --bins`), so a test never runs a stale binary. A
//! [`Cluster`] is a scenario builder: a temporary directory, a CA, a dispatcher on a free port and
//! N nodes, each a child process whose output goes to a log file in that directory. Dropping a
//! cluster kills its processes, and when the test is panicking it prints their logs first, so a
//! failing test leaves no processes behind and shows what the daemons said. [`Cluster::submit`]
//! runs `dispy-submit` with the cluster's client identity and returns a [`Run`] (exit code,
//! stdout, stderr) whose `check_*` methods panic with everything relevant. [`assert_eventually!`]
//! polls a condition instead of sleeping. [`serial_output`] runs a payload over its chunks in
//! this process, the reference that distributed output must equal byte for byte, and
//! [`RawClient`] speaks QUIC to the dispatcher directly for hostile-input tests.
//!
//! A test that needs something the machine may lack (root, `ip netns`, a tmpfs mount, `cc`,
//! `clang`, `systemd-analyze`) calls [`skip`] when it is missing: one `SKIPPED <test>: <why>` line
//! and an early return, or a failure with the same reason under `DISPY_TEST_STRICT=1`, which CI
//! sets so that nothing passes there by not running.
//!
//! Children get `RUST_LOG` from `DISPY_TEST_LOG` (default `info`), none of the caller's `DISPY_*`
//! variables, and daemons an explicit empty config file and state directories in the cluster's
//! directory, so neither a developer's environment nor `/etc/dispy` can change what tests see.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::pki::Identity;
use client::split::SplitRule;
use node::exec::wasm::{run_serial, WasmEngine};
use tempfile::TempDir;

/// How long [`assert_eventually!`] polls before it fails.
pub const EVENTUALLY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one `dispy-submit` may run before [`Cluster::submit`] kills it and reports a hang.
/// A guard against a stuck job blocking the suite, not a performance expectation.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// How often polling helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Lines of each daemon log shown when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Polls a boolean expression until it holds or [`EVENTUALLY_TIMEOUT`] passes, then panics
/// with the given message. Use it instead of sleeping for a state to arrive.
///
/// ```no_run
/// # let cluster = tests::Cluster::start(1);
/// let listening = || cluster.dispatcher_log().contains("listening");
/// tests::assert_eventually!(listening(), "the dispatcher never listened");
/// ```
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($message:tt)+) => {
        if !$crate::poll_until($crate::EVENTUALLY_TIMEOUT, || $cond) {
            panic!($($message)+);
        }
    };
}

/// Calls `cond` every [`POLL_INTERVAL`] until it returns true (then returns true) or `timeout`
/// passes (then returns false). The engine of [`assert_eventually!`].
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Reports that `test` (its function name) cannot run on this machine because of `why` (a
/// missing tool or privilege): prints the one line `SKIPPED <test>: <why>` straight to stderr,
/// past libtest's capture so every run shows it, and returns for the test to return early.
///
/// # Panics
/// With the same reason when `DISPY_TEST_STRICT=1` is set (as `.ci/run` does), where a test
/// that cannot run is a failure rather than a silent pass.
#[track_caller]
pub fn skip(test: &str, why: &str) {
    let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
    let strict = std::env::var("DISPY_TEST_STRICT").is_ok_and(|v| v == "1");
    assert!(!strict, "{test} cannot run: {why} (DISPY_TEST_STRICT=1 makes this a failure, not a skip)");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// The workspace root (where the root `Cargo.toml`, `examples/` and `tests/` are).
pub fn workspace_root() -> PathBuf {
    // This crate is `tests/` at the root of the workspace.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// A file in `examples/`, e.g. `example("checksum.wat")`.
pub fn example(name: &str) -> PathBuf {
    workspace_root().join("examples").join(name)
}

/// A file in `tests/fixtures/`, e.g. `fixture("trap.wat")`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// The path of a workspace binary (`dispy-dispatcher`, `dispy-node`, `dispy-submit`), built
/// fresh by the first call in this process.
///
/// # Panics
/// If the build fails or the binary is not where the build put the others.
pub fn binary(name: &str) -> PathBuf {
    let dir = match built_binaries() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "binary {} does not exist after building the workspace", path.display());
    path
}

/// Builds every binary of the workspace once per process and returns the directory holding them
/// (the test executable lives in its `deps/` subdirectory).
fn built_binaries() -> &'static Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| format!("cannot locate the test executable: {e}"))?;
        // target/<profile>/deps/integration-HASH -> target/<profile>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| format!("unexpected test executable location {}", exe.display()))?
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(&cargo);
        build
            .arg("build")
            .arg("--workspace")
            .arg("--bins")
            .arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"));
        // Cargo sets these for the test process. Build scripts (ring's) track some of them, so
        // passing them on would make this build, and the next ordinary one, rebuild half the tree.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            let set_by_cargo = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_", "CARGO_CRATE_NAME"]
                .iter()
                .any(|prefix| key_text.starts_with(prefix))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"]
                    .contains(&&*key_text);
            if set_by_cargo {
                build.env_remove(&key);
            }
        }
        // Build with the profile the tests were built with, so the binaries land in `dir`.
        match dir.file_name().and_then(OsStr::to_str) {
            Some("debug") | None => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) => {
                build.arg("--profile").arg(profile);
            }
        }
        let output = build.output().map_err(|e| format!("failed to run {cargo:?}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "`cargo build --workspace --bins` failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(dir)
    })
}

/// A command to run a workspace binary, with the environment the harness promises: `RUST_LOG`
/// from `DISPY_TEST_LOG` (default `info`), no inherited `DISPY_*` variables, no stdin.
pub fn command(binary_name: &str) -> Command {
    let mut command = Command::new(binary(binary_name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DISPY_") {
            command.env_remove(key);
        }
    }
    let log = std::env::var("DISPY_TEST_LOG").unwrap_or_else(|_| "info".to_owned());
    command.env("RUST_LOG", log).env("NO_COLOR", "1").stdin(Stdio::null());
    command
}

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command line, for failure messages.
    pub command: String,
    /// The exit code; `None` when killed by a signal or by the timeout.
    pub code: Option<i32>,
    /// Whether the harness killed it for running longer than allowed.
    pub timed_out: bool,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// Wall-clock time it took (reported, never asserted).
    pub elapsed: Duration,
}

impl Run {
    /// Runs `command` to completion, killing it after `timeout`. Output is captured.
    ///
    /// # Panics
    /// If the command cannot be started.
    pub fn capture(mut command: Command, timeout: Duration) -> Run {
        let description = describe(&command);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().unwrap_or_else(|e| panic!("failed to start {description}: {e}"));
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let deadline = started + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let elapsed = started.elapsed();
        let join = |h: std::thread::JoinHandle<String>| h.join().unwrap_or_else(|_| "<reader panicked>".into());
        Run {
            command: description,
            code: status.as_ref().and_then(ExitStatus::code),
            timed_out: status.is_none(),
            stdout: join(stdout),
            stderr: join(stderr),
            elapsed,
        }
    }

    /// Asserts the command exited with `code`, showing the run otherwise.
    ///
    /// # Panics
    /// On any other outcome.
    #[track_caller]
    pub fn check_code(&self, code: i32) {
        assert!(self.code == Some(code), "expected exit code {code}\n{self}");
    }

    /// Asserts the command succeeded.
    ///
    /// # Panics
    /// If it did not.
    #[track_caller]
    pub fn check_success(&self) {
        self.check_code(0);
    }

    /// Asserts stderr contains every one of `needles`, ignoring ASCII case.
    ///
    /// # Panics
    /// Naming the first missing needle.
    #[track_caller]
    pub fn check_stderr_mentions(&self, needles: &[&str]) {
        let haystack = self.stderr.to_ascii_lowercase();
        for needle in needles {
            assert!(haystack.contains(&needle.to_ascii_lowercase()), "stderr does not mention {needle:?}\n{self}");
        }
    }

    /// Asserts stderr is exactly one non-empty line: a clear one-line error.
    ///
    /// # Panics
    /// If it is empty or longer.
    #[track_caller]
    pub fn check_one_line_error(&self) {
        let lines = self.stderr.lines().filter(|l| !l.trim().is_empty()).count();
        assert!(lines == 1, "expected a one-line error, got {lines} lines\n{self}");
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match (self.timed_out, self.code) {
            (true, _) => "killed after the harness timeout".to_owned(),
            (false, Some(code)) => format!("exit code {code}"),
            (false, None) => "killed by a signal".to_owned(),
        };
        writeln!(f, "--- {} ({outcome}, {:.1?})", self.command, self.elapsed)?;
        writeln!(f, "--- stdout:\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr:\n{}", self.stderr.trim_end())
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn describe(command: &Command) -> String {
    let program =
        Path::new(command.get_program()).file_name().unwrap_or(command.get_program()).to_string_lossy().into_owned();
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("{program} {}", args.join(" "))
}

/// A certificate authority on disk, driven through the real `dispy-dispatcher pki` commands.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Runs `pki init --dir DIR`: a new CA plus the dispatcher identity in `DIR/dispatcher`.
    ///
    /// # Panics
    /// If the command fails.
    pub fn init(dir: &Path) -> Pki {
        let mut init = command("dispy-dispatcher");
        init.arg("pki").arg("init").arg("--dir").arg(dir);
        Run::capture(init, COMMAND_TIMEOUT).check_success();
        Pki { dir: dir.to_owned() }
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The dispatcher's identity directory.
    pub fn dispatcher_dir(&self) -> PathBuf {
        self.dir.join("dispatcher")
    }

    /// Runs `pki issue-node NAME` and returns the identity directory.
    ///
    /// # Panics
    /// If the command fails.
    pub fn issue_node(&self, name: &str) -> PathBuf {
        self.issue("issue-node", name);
        self.dir.join("nodes").join(name)
    }

    /// Runs `pki issue-client NAME` and returns the identity directory.
    ///
    /// # Panics
    /// If the command fails.
    pub fn issue_client(&self, name: &str) -> PathBuf {
        self.issue("issue-client", name);
        self.dir.join("clients").join(name)
    }

    fn issue(&self, action: &str, name: &str) {
        let mut issue = command("dispy-dispatcher");
        issue.arg("pki").arg(action).arg(name).arg("--dir").arg(&self.dir);
        Run::capture(issue, COMMAND_TIMEOUT).check_success();
    }
}

/// A long-running child process (dispatcher or node) whose stdout and stderr go to a log file.
/// Dropping it kills the process.
#[derive(Debug)]
pub struct Daemon {
    label: String,
    child: Child,
    log: PathBuf,
    /// Set by [`Daemon::kill`], so [`Cluster::check_all_alive`] skips processes a test stopped.
    killed: bool,
}

impl Daemon {
    /// Starts `command` with its output appended to `log`.
    ///
    /// # Panics
    /// If the log cannot be created or the process cannot start.
    pub fn spawn(label: &str, mut command: Command, log: &Path) -> Daemon {
        let file = File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let file2 = file.try_clone().unwrap_or_else(|e| panic!("cannot duplicate {}: {e}", log.display()));
        command.stdout(file).stderr(file2);
        let child = command.spawn().unwrap_or_else(|e| panic!("failed to start {label}: {e}"));
        Daemon { label: label.to_owned(), child, log: log.to_owned(), killed: false }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Asks the process to stop (SIGTERM) and waits for it to exit on its own.
    ///
    /// # Panics
    /// If it is still running after `timeout` (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        signal(self.pid(), "-TERM");
        let exited = poll_until(timeout, || !self.is_alive());
        let tail = if exited { String::new() } else { self.log_tail() };
        self.kill();
        assert!(exited, "{} did not exit within {timeout:?} of SIGTERM\n{tail}", self.label);
        self.child.wait().expect("an exited child has a status")
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        self.killed = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "=== {} (pid {}) log, last {} lines:\n{}",
            self.label,
            self.pid(),
            lines.len() - start,
            lines[start..].join("\n")
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` (e.g. `-STOP`) to `pid` with kill(1); a process that is gone is no error.
pub(crate) fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill").arg(signal).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
/// If no socket can be bound.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
    socket.local_addr().expect("a bound socket has an address").port()
}

/// Builds a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    slots: u32,
}

impl ClusterBuilder {
    /// How many nodes to start (default 2).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Slots per node (default 1).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// Makes the certificates, starts the dispatcher and the nodes, and waits until the
    /// dispatcher answers and lists every node as ready.
    ///
    /// # Panics
    /// If any step fails; dropping the half-started cluster then prints the daemons' logs.
    pub fn start(self) -> Cluster {
        let temp = tempfile::Builder::new().prefix("dispy-test-").tempdir().expect("create a temporary directory");
        let pki = Pki::init(&temp.path().join("ca"));
        let client = pki.issue_client("tester");
        let node_names: Vec<String> = (1..=self.nodes).map(|i| format!("n{i}")).collect();
        let node_dirs: Vec<PathBuf> = node_names.iter().map(|name| pki.issue_node(name)).collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dispatcher: None,
            address: String::new(),
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
        cluster
    }
}

/// A running dispatcher and its nodes, in a temporary directory that is removed on drop (after
/// the processes are killed).
#[derive(Debug)]
pub struct Cluster {
    // Field order matters: processes die (in `Drop`) before the directory goes.
    nodes: Vec<Daemon>,
    dispatcher: Option<Daemon>,
    address: String,
    client: PathBuf,
    pki: Pki,
    slots: u32,
    temp: TempDir,
}

impl Cluster {
    /// A builder for a cluster of two one-slot nodes.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder { nodes: 2, slots: 1 }
    }

    /// A cluster of `nodes` one-slot nodes, started and ready.
    ///
    /// # Panics
    /// As [`ClusterBuilder::start`].
    pub fn start(nodes: usize) -> Cluster {
        Cluster::builder().nodes(nodes).start()
    }

    /// The dispatcher's address, `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.temp.path()
    }

    /// The cluster's CA.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The identity directory of the cluster's client, `tester`.
    pub fn client_dir(&self) -> &Path {
        &self.client
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

    /// Runs `dispy-submit ARGS` as the cluster's client.
    pub fn submit(&self, args: &[&dyn AsRef<OsStr>]) -> Run {
        self.submit_as(&self.client, args)
    }

    /// Runs `dispy-submit ARGS` with the identity in `tls_dir`.
    pub fn submit_as(&self, tls_dir: &Path, args: &[&dyn AsRef<OsStr>]) -> Run {
        self.submit_with(tls_dir, args.iter().map(|a| a.as_ref().to_owned()).collect(), COMMAND_TIMEOUT)
    }

    /// Runs a job described by `job` as the cluster's client.
    pub fn run_job(&self, job: &Job) -> Run {
        self.submit_with(&self.client, job.to_args(), COMMAND_TIMEOUT)
    }

    /// Runs `dispy-submit` against this dispatcher with `tls_dir`, killing it after `timeout`.
    pub fn submit_with(&self, tls_dir: &Path, args: Vec<OsString>, timeout: Duration) -> Run {
        let mut submit = command("dispy-submit");
        submit.arg("--dispatcher").arg(&self.address).arg("--tls-dir").arg(tls_dir).args(args);
        Run::capture(submit, timeout)
    }

    /// The nodes as `dispy-submit nodes --json` lists them, or the failed run.
    ///
    /// # Errors
    /// The run, when the command fails or prints something that is not a JSON array.
    pub fn nodes_json(&self) -> Result<Vec<serde_json::Value>, Box<Run>> {
        let run = self.submit(&[&"nodes", &"--json"]);
        if run.code != Some(0) {
            return Err(Box::new(run));
        }
        match serde_json::from_str::<serde_json::Value>(&run.stdout) {
            Ok(serde_json::Value::Array(nodes)) => Ok(nodes),
            _ => Err(Box::new(run)),
        }
    }

    /// Names of the nodes the dispatcher lists as ready, sorted; `None` if listing failed.
    pub fn ready_nodes(&self) -> Option<Vec<String>> {
        let nodes = self.nodes_json().ok()?;
        let mut names: Vec<String> = nodes
            .iter()
            .filter(|n| n["state"] == "ready")
            .filter_map(|n| n["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        Some(names)
    }

    /// Waits until the dispatcher lists exactly `names` as its ready nodes.
    ///
    /// # Panics
    /// After [`EVENTUALLY_TIMEOUT`], with the last listing.
    #[track_caller]
    pub fn wait_for_nodes(&self, names: &[&str]) {
        let mut want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        want.sort();
        let mut last = None;
        assert_eventually!(
            {
                last = self.ready_nodes();
                last.as_ref() == Some(&want)
            },
            "the dispatcher never listed exactly {want:?} as ready; last listing: {last:?}"
        );
    }

    /// Starts a node named `name` (used for its log and cache directory) with the identity in
    /// `tls_dir`, and returns its index for [`Cluster::node`]. Does not wait for it to join.
    pub fn start_node(&mut self, name: &str, tls_dir: &Path) -> usize {
        let mut node = command("dispy-node");
        node.arg("--config")
            .arg(self.empty_config())
            .arg("--dispatcher")
            .arg(&self.address)
            .arg("--tls-dir")
            .arg(tls_dir)
            .arg("--cache-dir")
            .arg(self.dir().join(format!("cache-{name}")))
            .arg("--slots")
            .arg(self.slots.to_string())
            .arg("--shared-input-roots")
            .arg(self.shared_dir());
        let log = self.dir().join(format!("node-{name}.log"));
        self.nodes.push(Daemon::spawn(&format!("node {name}"), node, &log));
        self.nodes.len() - 1
    }

    /// The directory every node of this cluster may read shared input from (created here).
    pub fn shared_dir(&self) -> PathBuf {
        let dir = self.dir().join("shared");
        std::fs::create_dir_all(&dir).expect("create the shared input directory");
        dir
    }

    /// The node started `index`-th.
    ///
    /// # Panics
    /// If there is no such node.
    pub fn node(&mut self, index: usize) -> &mut Daemon {
        &mut self.nodes[index]
    }

    /// The dispatcher process.
    ///
    /// # Panics
    /// If the cluster has no dispatcher (never, once started).
    pub fn dispatcher(&mut self) -> &mut Daemon {
        self.dispatcher.as_mut().expect("a started cluster has a dispatcher")
    }

    /// Everything the dispatcher has logged so far.
    pub fn dispatcher_log(&self) -> String {
        self.dispatcher.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// Asserts the dispatcher and every node are still running (except those a test killed).
    ///
    /// # Panics
    /// Naming the dead process.
    #[track_caller]
    pub fn check_all_alive(&mut self) {
        let mut dead = Vec::new();
        for daemon in self.dispatcher.iter_mut().chain(self.nodes.iter_mut()) {
            if !daemon.killed && !daemon.is_alive() {
                dead.push(daemon.label.clone());
            }
        }
        assert!(dead.is_empty(), "{dead:?} exited");
    }

    /// The tails of every daemon's log; printed when a test panics while holding the cluster.
    pub fn logs(&self) -> String {
        self.dispatcher.iter().chain(&self.nodes).map(Daemon::log_tail).collect::<Vec<_>>().join("\n")
    }

    /// An empty config file, passed to the daemons so a machine's `/etc/dispy/*.toml` cannot
    /// change what the tests see; every setting comes from flags.
    fn empty_config(&self) -> PathBuf {
        let path = self.dir().join("empty-config.toml");
        if !path.exists() {
            std::fs::write(&path, "").expect("write an empty config file");
        }
        path
    }

    /// Starts the dispatcher on a free port and waits until it answers `nodes`. A port taken
    /// between choosing and binding makes the dispatcher exit; then another port is tried.
    fn start_dispatcher(&mut self) {
        for _ in 0..5 {
            self.address = format!("127.0.0.1:{}", free_udp_port());
            let mut dispatcher = command("dispy-dispatcher");
            dispatcher
                .arg("--config")
                .arg(self.empty_config())
                .arg("--listen")
                .arg(&self.address)
                .arg("--tls-dir")
                .arg(self.pki.dispatcher_dir())
                .arg("--state-dir")
                .arg(self.dir().join("dispatcher-state"));
            let log = self.dir().join("dispatcher.log");
            self.dispatcher = Some(Daemon::spawn("dispatcher", dispatcher, &log));
            let mut last = None;
            let answered = poll_until(EVENTUALLY_TIMEOUT, || {
                if !self.dispatcher().is_alive() {
                    return true;
                }
                last = self.nodes_json().err();
                last.is_none()
            });
            if self.dispatcher().is_alive() && answered {
                return;
            }
            assert!(!self.dispatcher().is_alive(), "the dispatcher never answered `nodes`:\n{last:?}");
        }
        panic!("the dispatcher could not bind a port after 5 tries");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Captured by the test harness and shown with the failure.
            eprintln!("{}", self.logs());
        }
        for node in &mut self.nodes {
            node.kill();
        }
        if let Some(dispatcher) = &mut self.dispatcher {
            dispatcher.kill();
        }
    }
}

/// The flags of a `dispy-submit run` (the flag form, no job file).
#[derive(Debug, Clone)]
pub struct Job {
    args: Vec<OsString>,
}

impl Job {
    /// `run --payload PAYLOAD --split SPLIT --output OUTPUT`.
    pub fn new(payload: &Path, split: &str, output: &Path) -> Job {
        let args = ["run", "--payload"].map(OsString::from).into_iter();
        let mut args: Vec<OsString> = args.collect();
        args.push(payload.into());
        args.extend(["--split".into(), split.into(), "--output".into(), output.into()]);
        Job { args }
    }

    /// Adds `--input PATH`.
    pub fn input(self, path: &Path) -> Job {
        self.flag("--input", path)
    }

    /// Adds `--args TEXT`.
    pub fn payload_args(self, text: &str) -> Job {
        self.flag("--args", text)
    }

    /// Adds any `--flag VALUE`.
    pub fn flag(mut self, flag: &str, value: impl AsRef<OsStr>) -> Job {
        self.args.push(flag.into());
        self.args.push(value.as_ref().to_owned());
        self
    }

    /// Adds a flag that takes no value, such as `--shared-input`.
    pub fn switch(mut self, flag: &str) -> Job {
        self.args.push(flag.into());
        self
    }

    /// The arguments after `dispy-submit`'s global flags.
    pub fn to_args(&self) -> Vec<OsString> {
        self.args.clone()
    }
}

/// The serial reference: `payload` run in this process over the chunks `split` cuts from
/// `inputs`, outputs concatenated in order (`node::exec::wasm::run_serial`).
///
/// # Panics
/// If the rule, the inputs, the payload or a chunk fails.
pub fn serial_output(payload: &Path, args: &[u8], split: &str, inputs: &[PathBuf]) -> Vec<u8> {
    let run = || -> anyhow::Result<Vec<u8>> {
        let rule: SplitRule = split.parse()?;
        let chunks = rule.chunks(inputs)?.collect::<Result<Vec<_>, _>>()?;
        let bytes = std::fs::read(payload).with_context(|| format!("failed to read {}", payload.display()))?;
        let engine = WasmEngine::new()?;
        Ok(run_serial(&engine, &bytes, args, chunks)?)
    };
    run().unwrap_or_else(|e| panic!("serial run of {} failed: {e:#}", payload.display()))
}

/// Asserts two outputs are equal, reporting sizes and the first difference instead of dumping
/// bytes.
///
/// # Panics
/// If they differ.
#[track_caller]
pub fn check_same_bytes(got: &[u8], want: &[u8], context: &dyn fmt::Display) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    panic!(
        "output differs from the serial run: {} bytes vs {} expected, first difference at byte {first}\n{context}",
        got.len(),
        want.len()
    );
}

/// The names in `dir`, sorted.
///
/// # Panics
/// If `dir` cannot be listed.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut names: Vec<String> =
        entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// `len` deterministic pseudo-random bytes (xorshift64*), different for each `seed`.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// A memory figure of process `pid` in bytes, from the `FIELD:` line of `/proc/PID/status`, e.g.
/// `VmRSS` (resident now) or `VmPeak` (largest virtual size ever).
///
/// # Errors
/// If the file cannot be read or has no such line.
pub fn proc_status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("failed to read /proc/PID/status")?;
    let prefix = format!("{field}:");
    let line = status.lines().find(|l| l.starts_with(&prefix)).with_context(|| format!("no {field} line"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("empty {field} line"))?
        .parse()
        .with_context(|| format!("{field} is not a number"))?;
    Ok(kib * 1024)
}

/// Runs a future to completion on a fresh tokio runtime, for the async parts of a test.
///
/// # Panics
/// If the runtime cannot be created.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("create a tokio runtime")
        .block_on(future)
}

/// A bare QUIC connection to the dispatcher with a valid identity, for sending it bytes that
/// `dispy-submit` never would.
pub struct RawClient {
    endpoint: quinn::Endpoint,
    /// The connection, handshake done, no stream opened yet.
    pub conn: quinn::Connection,
}

impl RawClient {
    /// Loads the identity in `tls_dir` and connects to `address` under the dispatcher's server
    /// name. Call from inside a tokio runtime.
    ///
    /// # Errors
    /// If the identity is unusable or the handshake fails.
    pub async fn connect(address: &str, tls_dir: &Path) -> anyhow::Result<RawClient> {
        let identity = Identity::load(tls_dir).context("failed to load the identity")?;
        let address: SocketAddr = address.parse().context("not a socket address")?;
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        endpoint.set_default_client_config(common::tls::client_config(&identity)?);
        let conn =
            endpoint.connect(address, common::tls::dispatcher_server_name())?.await.context("handshake failed")?;
        Ok(RawClient { endpoint, conn })
    }

    /// Closes the connection and waits for the endpoint to be idle.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"test done");
        self.endpoint.wait_idle().await;
    }
}
pub mod durable;
pub mod netns;
