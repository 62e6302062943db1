//! An embedded cluster for `dispy-submit run --local N`: an ephemeral in-memory CA, a dispatcher
//! on a loopback port and N nodes, all in this process and still talking QUIC, so a newcomer runs
//! a real job with no set-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::pki::{CertificateAuthority, Identity};
use wire::proto::Role;
use tokio::sync::watch;
use tokio::task::JoinSet;

use dispatcher::config::DispatcherConfig;
use dispatcher::server::Dispatcher;

use crate::in_place::{self, InputRoute};
use crate::job::JobDescription;

/// A running embedded cluster; [`LocalCluster::shutdown`] stops it and removes its files.
pub struct LocalCluster {
    address: SocketAddr,
    client: Identity,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Holds the dispatcher's state and the nodes' caches; removed on shutdown.
    root: PathBuf,
}

impl LocalCluster {
    /// Starts a dispatcher and `nodes` nodes sharing this machine's cores between them.
    ///
    /// # Errors
    /// When certificates cannot be made or a socket cannot be bound.
    pub async fn start(nodes: u32) -> anyhow::Result<Self> {
        Self::start_reading(nodes, Vec::new()).await
    }

    /// Like [`LocalCluster::start`], with nodes that may read the object-store buckets (and
    /// `https://` URL prefixes) listed, as a node's `object_store_buckets` says: `run --local`
    /// passes the job's own ([`JobDescription::object_buckets`]).
    ///
    /// # Errors
    /// As [`LocalCluster::start`].
    pub async fn start_reading(nodes: u32, object_store_buckets: Vec<String>) -> anyhow::Result<Self> {
        let ca = CertificateAuthority::generate("local")?;
        let root = std::env::temp_dir().join(format!("dispy-local-{}-{}", std::process::id(), unique()));
        let identity = ca.issue_identity(Role::Dispatcher, "dispatcher")?;
        let mut config = DispatcherConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), identity, root.join("dispatcher"));
        config.node_timeout = Duration::from_secs(5);
        config.drain_on_stop = false;
        let dispatcher = Dispatcher::bind(config)?;
        let address = dispatcher.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(dispatcher.run(wait_for_stop(stopped.clone())));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let slots = (cores / nodes.max(1)).max(1);
        for i in 1..=nodes {
            let config = node::daemon::NodeConfig {
                dispatcher: address.to_string(),
                identity: ca.issue_identity(Role::Node, &format!("local-{i}"))?,
                slots: Some(slots),
                cache_dir: root.join(format!("node-{i}")),
                cache_max_bytes: common::config::DEFAULT_CACHE_MAX_BYTES,
                heartbeat_interval: Duration::from_secs(1),
                dispatcher_timeout: common::net::DEFAULT_DISPATCHER_TIMEOUT,
                // The dispatcher stops with the nodes: there is no one to finish chunks for.
                stop_timeout: Duration::ZERO,
                health_log_interval: Duration::from_secs(30),
                tls_dir: None,
                // Every local node is this machine: whatever the submitter can name, they can read.
                shared_input_roots: vec![std::path::PathBuf::from("/")],
                object_store_buckets: object_store_buckets.clone(),
                // The submitter's AWS_* environment is the nodes' too.
                object_store_endpoint: None,
                object_store_roots: Vec::new(),
                // The submitter's own code on the submitter's own machine: confined where the
                // machine allows (reading all of `/`, as above), and run anyway where it cannot.
                allow_native: true,
                allow_unconfined_native: true,
                payload_user: common::config::DEFAULT_PAYLOAD_USER.to_owned(),
                scratch_dir: root.join(format!("scratch-{i}")),
                metrics: None,
                // Its peers stop with it, in this process: nobody waits for the close.
                drain_on_stop: false,
            };
            let stopped = stopped.clone();
            tasks.spawn(async move {
                if let Err(e) = node::daemon::run(config, wait_for_stop(stopped), std::future::pending()).await {
                    tracing::error!(error = %e, "local node failed to start");
                }
            });
        }
        Ok(Self { address, client: ca.issue_identity(Role::Client, "local-client")?, stop, tasks, root })
    }

    /// Lets this cluster's nodes read `job`'s input files themselves, as `--shared-input` does,
    /// when the job allows it ([`JobDescription::can_share_input`]) and does not ask to ship
    /// them (`ship_input`): they run on this machine, so the bytes need not cross two QUIC hops.
    /// Returns which way the input goes (`None`: the job has no input files).
    pub fn read_input_in_place(job: &mut JobDescription) -> Option<InputRoute> {
        let route = in_place::decide(job, in_place::Readers::Local)?;
        in_place::apply(job, &route);
        Some(route)
    }

    /// The dispatcher's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A client identity trusted by this cluster.
    pub fn client_identity(&self) -> &Identity {
        &self.client
    }

    /// Stops every daemon and removes their files.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Distinguishes clusters started by one process (tests start several).
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests;
