//! A local cluster of real processes for the workloads: a temporary directory, a CA made by the
//! real `dispy-dispatcher pki` commands, one `dispy-dispatcher` on a free loopback port and the
//! requested `dispy-node` processes, each logging to a file in the directory.
//!
//! The binaries are the ones next to the bench executable (`target/release/` for
//! `cargo run --release -p bench`). When the bench runs under cargo (`$CARGO` is set) it first
//! runs `cargo build -p dispatcher -p node -p client --bins` with its own profile, so a benchmark never
//! measures stale binaries. Dropping a [`Cluster`] kills its processes.

use std::fs::File;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::pki::Identity;
use client::Client;

/// How long the cluster may take to have every node registered.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the workspace binaries are, and how to run them.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Finds the binaries next to this executable, building them first when running under cargo
    /// and `build` is set.
    ///
    /// # Errors
    /// When the build fails or a binary is missing.
    pub(crate) fn locate(build: bool) -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe().context("failed to locate the bench executable")?;
        let dir = exe.parent().context("the bench executable has no directory")?.to_path_buf();
        if build {
            if let Some(cargo) = std::env::var_os("CARGO") {
                let mut command = Command::new(cargo);
                command.args(["build", "-p", "dispatcher", "-p", "node", "-p", "client", "--bins"]);
                command.arg("--manifest-path").arg(workspace_root().join("Cargo.toml"));
                match dir.file_name().and_then(|n| n.to_str()) {
                    Some("release") => {
                        command.arg("--release");
                    }
                    Some("debug") | None => {}
                    Some(profile) => {
                        command.arg("--profile").arg(profile);
                    }
                }
                eprintln!("bench: building the binaries ({command:?})");
                let status = command.status().context("failed to run cargo")?;
                if !status.success() {
                    bail!("building the dispy binaries failed ({status})");
                }
            }
        }
        let binaries = Binaries { dir };
        for name in ["dispy-dispatcher", "dispy-node", "dispy-submit"] {
            let path = binaries.path(name);
            if !path.is_file() {
                bail!(
                    "{} is missing; build it with `cargo build --release -p bench -p dispatcher -p node -p client`",
                    path.display()
                );
            }
        }
        Ok(binaries)
    }

    /// The path of a workspace binary.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A command for a workspace binary with a clean environment: no inherited `DISPY_*`
    /// variables, `RUST_LOG` from `DISPY_BENCH_LOG` (default `info`, the daemons' default).
    pub(crate) fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.path(name));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DISPY_") {
                command.env_remove(key);
            }
        }
        let log = std::env::var("DISPY_BENCH_LOG").unwrap_or_else(|_| "info".to_owned());
        command.env("RUST_LOG", log).env("NO_COLOR", "1").stdin(Stdio::null());
        command
    }

    /// Runs a short command to completion, failing with its output if it fails.
    ///
    /// # Errors
    /// When the command cannot start or exits unsuccessfully.
    pub(crate) fn run(&self, mut command: Command) -> anyhow::Result<()> {
        let output = command.output().with_context(|| format!("failed to run {command:?}"))?;
        if !output.status.success() {
            bail!("{command:?} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }
}

/// The workspace root, where `examples/` and `bench/` are.
pub(crate) fn workspace_root() -> PathBuf {
    // This crate is `bench/` at the root of the workspace.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// A child process that is killed when dropped; its output goes to a log file.
#[derive(Debug)]
pub(crate) struct Daemon {
    child: Child,
}

impl Daemon {
    /// Starts `command` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// When the log file cannot be created or the process cannot start.
    pub(crate) fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Daemon> {
        let file = File::create(log).with_context(|| format!("failed to create {}", log.display()))?;
        command.stdout(file.try_clone()?).stderr(file);
        let child = command.spawn().with_context(|| format!("failed to start {command:?}"))?;
        Ok(Daemon { child })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    ///
    /// # Errors
    /// Naming the exit status.
    pub(crate) fn check_alive(&mut self, label: &str) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("{label} exited ({status})"),
            Err(e) => bail!("cannot query {label}: {e}"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
///
/// # Errors
/// When no socket can be bound.
pub(crate) fn free_udp_port() -> anyhow::Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("failed to bind a UDP socket")?;
    Ok(socket.local_addr()?.port())
}

/// A CA made by the real `dispy-dispatcher pki` commands, with the dispatcher's identity and
/// one client, `bench`.
#[derive(Debug)]
pub(crate) struct Pki {
    binaries: Binaries,
    dir: PathBuf,
}

impl Pki {
    /// `pki init` and `pki issue-client bench` in `dir`.
    ///
    /// # Errors
    /// When a command fails.
    pub(crate) fn init(binaries: &Binaries, dir: &Path) -> anyhow::Result<Pki> {
        let pki = Pki { binaries: binaries.clone(), dir: dir.to_path_buf() };
        pki.run(&["init"])?;
        pki.run(&["issue-client", "bench"])?;
        Ok(pki)
    }

    /// `pki issue-node NAME`; returns the node's certificate directory.
    ///
    /// # Errors
    /// When the command fails.
    pub(crate) fn issue_node(&self, name: &str) -> anyhow::Result<PathBuf> {
        self.run(&["issue-node", name])?;
        Ok(self.dir.join("nodes").join(name))
    }

    /// The dispatcher's certificate directory.
    pub(crate) fn dispatcher(&self) -> PathBuf {
        self.dir.join("dispatcher")
    }

    /// The client's certificate directory.
    pub(crate) fn client(&self) -> PathBuf {
        self.dir.join("clients/bench")
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut command = self.binaries.command("dispy-dispatcher");
        command.arg("pki").args(args).arg("--dir").arg(&self.dir);
        self.binaries.run(command)
    }
}

/// How the 2 slots of the workload cluster are spread over node processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Topology {
    /// Node processes.
    pub(crate) nodes: u32,
    /// Slots of each node (`dispy-node --slots`).
    pub(crate) slots_per_node: u32,
    /// `dispy-dispatcher --pipeline-depth`, when not the dispatcher's default.
    pub(crate) pipeline_depth: Option<u32>,
    /// `dispy-dispatcher --async-threads`, when not the dispatcher's default.
    pub(crate) dispatcher_async_threads: Option<u32>,
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} node(s) x {} slot(s)", self.nodes, self.slots_per_node)?;
        match self.pipeline_depth {
            Some(depth) => write!(f, ", dispatcher --pipeline-depth {depth}"),
            None => write!(f, ", dispatcher's default pipeline depth"),
        }?;
        match self.dispatcher_async_threads {
            Some(threads) => write!(f, ", dispatcher --async-threads {threads}"),
            None => write!(f, ", dispatcher's default async threads"),
        }
    }
}

/// The bucket W3's object-store run reads from.
pub(crate) const S3_BUCKET: &str = "bench";

/// A dispatcher and its nodes, running as child processes; dropping it kills them.
pub(crate) struct Cluster {
    /// `127.0.0.1:PORT` of the dispatcher.
    pub(crate) address: String,
    /// The client identity (from `pki issue-client`).
    pub(crate) client: Identity,
    /// The dispatcher process.
    pub(crate) dispatcher: Daemon,
    /// The node processes.
    pub(crate) nodes: Vec<Daemon>,
    /// The cluster's layout.
    pub(crate) topology: Topology,
    /// The client's certificate directory, for `dispy-submit` runs.
    pub(crate) client_dir: PathBuf,
    /// `dispy-submit`.
    pub(crate) submit: PathBuf,
    /// A local S3-compatible server (moto) the nodes may read bucket `bench` from, when moto is
    /// installed (`DISPY_TEST_MOTO` or on `PATH`).
    pub(crate) s3: Option<tests::s3::S3Server>,
}

impl Cluster {
    /// Makes a CA in `dir/pki`, starts the dispatcher (with its state in `state_dir`) and the
    /// nodes, and waits until every node has registered. With `s3`, also a local S3-compatible
    /// server when one is installed; only W3 reads it, and its start-up (a second or two of a
    /// core) would otherwise fall into the first workload's runs.
    ///
    /// # Errors
    /// When a command fails, a process dies or the nodes do not register in time.
    pub(crate) async fn start(
        binaries: &Binaries,
        dir: &Path,
        state_dir: &Path,
        topology: Topology,
        s3: bool,
    ) -> anyhow::Result<Cluster> {
        let pki = Pki::init(binaries, &dir.join("pki"))?;
        let client = Identity::load(&pki.client())?;

        let address = format!("127.0.0.1:{}", free_udp_port()?);
        let mut command = binaries.command("dispy-dispatcher");
        command.arg("--listen").arg(&address).arg("--tls-dir").arg(pki.dispatcher()).arg("--state-dir").arg(state_dir);
        if let Some(depth) = topology.pipeline_depth {
            command.arg("--pipeline-depth").arg(depth.to_string());
        }
        if let Some(threads) = topology.dispatcher_async_threads {
            command.arg("--async-threads").arg(threads.to_string());
        }
        let dispatcher = Daemon::spawn(command, &dir.join("dispatcher.log"))?;
        let s3 = if s3 { tests::s3::S3Server::start_if_installed() } else { None };

        let mut nodes = Vec::new();
        for i in 1..=topology.nodes {
            let name = format!("node-{i}");
            let mut command = binaries.command("dispy-node");
            command
                .arg("--dispatcher")
                .arg(&address)
                .arg("--tls-dir")
                .arg(pki.issue_node(&name)?)
                .arg("--slots")
                .arg(topology.slots_per_node.to_string())
                .arg("--cache-dir")
                .arg(dir.join(format!("cache-{i}")))
                // The workloads' inputs live in `dir`: on one machine it is "shared storage".
                .arg("--shared-input-roots")
                .arg(dir);
            if let Some(s3) = &s3 {
                command.arg("--object-store-buckets").arg(S3_BUCKET).envs(s3.env());
            }
            nodes.push(Daemon::spawn(command, &dir.join(format!("{name}.log")))?);
        }
        let (client_dir, submit) = (pki.client(), binaries.path("dispy-submit"));
        let mut cluster = Cluster { address, client, dispatcher, nodes, topology, client_dir, submit, s3 };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Waits until the dispatcher lists every node with its slots.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let want = self.topology.nodes as usize;
        loop {
            self.check_alive()?;
            if let Ok(mut client) = Client::connect(&self.address, &self.client).await {
                if let Ok(nodes) = client.nodes().await {
                    if nodes.len() == want {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("the nodes did not all register within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if any process has exited.
    ///
    /// # Errors
    /// Naming the process.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        self.dispatcher.check_alive("dispy-dispatcher")?;
        for node in &mut self.nodes {
            node.check_alive("dispy-node")?;
        }
        Ok(())
    }
}
