//! [`Cluster`]: the single-host scenario builder. A temporary directory, a CA, a dispatcher on a
//! free port and N nodes, each a [`Daemon`]; `dispy-submit` runs as the cluster's client
//! ([`Cluster::submit`], [`Cluster::run_job`]). Dropping a cluster kills its processes, printing
//! their logs first when the test is panicking.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::{
    assert_eventually, command, free_udp_port, poll_until, Daemon, Job, Pki, Run, COMMAND_TIMEOUT, EVENTUALLY_TIMEOUT,
};

/// Builds a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    slots: u32,
    dispatcher_args: Vec<String>,
    node_args: Vec<String>,
    enrolment: bool,
    /// Environment for every process (the AWS variables of an object-input test).
    env: Vec<(String, String)>,
    /// Environment for one node, by name.
    node_env: Vec<(String, String, String)>,
    /// `--shared-input-roots` for one node, by name, instead of [`Cluster::shared_dir`].
    node_roots: Vec<(String, PathBuf)>,
}

impl ClusterBuilder {
    /// Turns on node enrolment with join tokens: the dispatcher gets the cluster's CA directory
    /// as `--ca-dir`, so `manage(&["token", "create", ..])` makes tokens it redeems.
    pub fn enrolment(mut self) -> Self {
        self.enrolment = true;
        self
    }

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

    /// Extra flags for the dispatcher, such as `["--payload-memory-cap", "16MiB"]`.
    pub fn dispatcher_args(mut self, args: &[&str]) -> Self {
        self.dispatcher_args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Extra flags for every node, such as `["--cache-max-bytes", "1MiB"]`.
    pub fn node_args(mut self, args: &[&str]) -> Self {
        self.node_args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Sets an environment variable for every process the cluster starts (daemons and
    /// `dispy-submit`), never for the test itself.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets an environment variable for the node named `node` only (say its
    /// `DISPY_OBJECT_STORE_BUCKETS`).
    pub fn node_env(mut self, node: &str, key: &str, value: &str) -> Self {
        self.node_env.push((node.to_owned(), key.to_owned(), value.to_owned()));
        self
    }

    /// Gives the node named `node` (started now or later by [`Cluster::start_node`]) `root` as
    /// its only `--shared-input-roots` entry instead of [`Cluster::shared_dir`].
    pub fn node_shared_root(mut self, node: &str, root: &Path) -> Self {
        self.node_roots.push((node.to_owned(), root.to_owned()));
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
        let mut dispatcher_args = self.dispatcher_args;
        if self.enrolment {
            dispatcher_args.extend(["--ca-dir".to_owned(), pki.dir().display().to_string()]);
        }
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dispatcher: None,
            address: String::new(),
            client,
            pki,
            slots: self.slots,
            dispatcher_args,
            node_args: self.node_args,
            env: self.env,
            node_env: self.node_env,
            node_roots: self.node_roots,
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
    dispatcher_args: Vec<String>,
    node_args: Vec<String>,
    env: Vec<(String, String)>,
    node_env: Vec<(String, String, String)>,
    node_roots: Vec<(String, PathBuf)>,
    temp: TempDir,
}

impl Cluster {
    /// A builder for a cluster of two one-slot nodes.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            nodes: 2,
            slots: 1,
            dispatcher_args: Vec::new(),
            node_args: Vec::new(),
            enrolment: false,
            env: Vec::new(),
            node_env: Vec::new(),
            node_roots: Vec::new(),
        }
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
        Run::capture(self.submit_command(tls_dir, args), timeout)
    }

    /// The command line of `dispy-submit ARGS` against this dispatcher with `tls_dir`, not yet
    /// started: for a command that should stay running, as a [`Daemon`].
    pub fn submit_command(&self, tls_dir: &Path, args: Vec<OsString>) -> Command {
        let mut submit = command("dispy-submit");
        submit.arg("--dispatcher").arg(&self.address).arg("--tls-dir").arg(tls_dir).args(args);
        submit.envs(self.env.iter().map(|(k, v)| (k, v)));
        submit
    }

    /// Runs `dispy-dispatcher ARGS` on this dispatcher's state directory, as an operator runs the
    /// `token`, `nodes`, `clients` and `admins` commands beside the daemon (say `clients revoke
    /// alice`). The running dispatcher sees the change.
    pub fn manage(&self, args: &[&str]) -> Run {
        let mut manage = command("dispy-dispatcher");
        manage.args(args).arg("--config").arg(self.empty_config()).arg("--state-dir").arg(self.state_dir());
        Run::capture(manage, COMMAND_TIMEOUT)
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

    /// The payload cache directory of the node named `name`.
    pub fn cache_dir(&self, name: &str) -> PathBuf {
        self.dir().join(format!("cache-{name}"))
    }

    /// Starts a node named `name` (used for its log, cache and scratch directories) with the identity in
    /// `tls_dir`, and returns its index for [`Cluster::node`]. Does not wait for it to join.
    pub fn start_node(&mut self, name: &str, tls_dir: &Path) -> usize {
        let roots = self.node_roots.iter().find(|(node, _)| node == name).map(|(_, root)| root.clone());
        let mut node = command("dispy-node");
        node.arg("--config")
            .arg(self.empty_config())
            .arg("--dispatcher")
            .arg(&self.address)
            .arg("--tls-dir")
            .arg(tls_dir)
            .arg("--cache-dir")
            .arg(self.cache_dir(name))
            .arg("--slots")
            .arg(self.slots.to_string())
            .arg("--shared-input-roots")
            .arg(roots.unwrap_or_else(|| self.shared_dir()))
            .arg("--scratch-dir")
            .arg(self.dir().join(format!("scratch-{name}")))
            .args(&self.node_args);
        node.envs(self.env.iter().map(|(k, v)| (k, v)));
        node.envs(self.node_env.iter().filter(|(n, _, _)| n == name).map(|(_, k, v)| (k, v)));
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

    /// The dispatcher's `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("dispatcher-state")
    }

    /// An empty config file, passed to the daemons so a machine's `/etc/dispy/*.toml` cannot
    /// change what the tests see; every setting comes from flags.
    pub fn empty_config(&self) -> PathBuf {
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
                .arg(self.state_dir())
                .args(&self.dispatcher_args);
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
