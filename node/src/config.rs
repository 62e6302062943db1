//! The node's validated configuration.
//!
//! `common::config::load_node` merges the config file, `DISPY_*` variables and flags into a raw
//! struct, `NodeSettings::try_from` validates every key, and `NodeConfig::try_from` (here) loads
//! the TLS identity the settings point at. `--local` and tests build a [`NodeConfig`] directly.

use std::path::PathBuf;
use std::time::Duration;

use common::config::{ConfigError, NodeSettings};
use common::pki::Identity;

/// Everything `dispy-node` needs to run, already validated.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Dispatcher address, `host:port`.
    pub dispatcher: String,
    /// This node's certificate, key and the cluster CA.
    pub identity: Identity,
    /// Chunk slots; `None` means one per logical core.
    pub slots: Option<u32>,
    /// Where payloads are cached.
    pub cache_dir: PathBuf,
    /// Payload bytes cached before unused payloads are evicted (default 1 GiB).
    pub cache_max_bytes: u64,
    /// How often to send a heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which the dispatcher is taken for dead (default 2 s).
    pub dispatcher_timeout: Duration,
    /// On SIGTERM, how long running chunks may finish before the node cancels them (default 60 s).
    pub stop_timeout: Duration,
    /// How often to log a health line.
    pub health_log_interval: Duration,
    /// Where renewed certificates are written (the identity's directory); `None` keeps them in
    /// memory only.
    pub tls_dir: Option<PathBuf>,
    /// Directories whose files shared-input jobs may have this node read; empty refuses them.
    pub shared_input_roots: Vec<PathBuf>,
    /// Buckets and `https://` URL prefixes object-input jobs may have this node read; empty
    /// refuses them (see `common::config::NodeSettings::object_store_buckets`).
    pub object_store_buckets: Vec<String>,
    /// The S3-compatible endpoint, overriding `AWS_ENDPOINT_URL`.
    pub object_store_endpoint: Option<String>,
    /// CA certificates trusted for object input's HTTPS besides the system's, read from
    /// `object_store_ca_file` at start.
    pub object_store_roots: Vec<object_store::Certificate>,
    /// Whether native payloads run here at all.
    pub allow_native: bool,
    /// Whether native payloads run when this node cannot confine them.
    pub allow_unconfined_native: bool,
    /// The account native workers switch to when the node runs as root.
    pub payload_user: String,
    /// Where native workers get their scratch directories.
    pub scratch_dir: PathBuf,
    /// Where this node's `/metrics` is served, and who may read it; `None` (the default) serves
    /// no HTTP.
    pub metrics: Option<(std::net::SocketAddr, common::http::Access)>,
    /// Whether stopping waits out QUIC's draining period so the dispatcher surely hears the
    /// close (a daemon does); an embedded `--local` node, which stops with its dispatcher,
    /// does not.
    pub drain_on_stop: bool,
}

impl NodeConfig {
    /// The settings for native payloads, read roots included.
    pub fn native_settings(&self) -> crate::exec::native::NativeSettings {
        crate::exec::native::NativeSettings {
            allow_native: self.allow_native,
            allow_unconfined_native: self.allow_unconfined_native,
            payload_user: self.payload_user.clone(),
            scratch_dir: self.scratch_dir.clone(),
            read_roots: self.shared_input_roots.clone(),
        }
    }
}

impl TryFrom<NodeSettings> for NodeConfig {
    type Error = ConfigError;

    /// Loads the TLS identity from `tls_dir`; an unreadable or invalid one is reported as a
    /// problem with that key, naming where it was set.
    fn try_from(settings: NodeSettings) -> Result<Self, ConfigError> {
        let identity = Identity::load(&settings.daemon.tls_dir).map_err(|e| {
            settings.daemon.invalid("tls_dir", format!("failed to load the node's TLS identity: {e}"))
        })?;
        let object_store_roots = match &settings.object_store_ca_file {
            Some(path) => crate::object_input::read_certificates(path)
                .map_err(|e| settings.daemon.invalid("object_store_ca_file", e))?,
            None => Vec::new(),
        };
        let metrics = match settings.metrics_listen {
            Some(addr) => Some((
                addr,
                common::http::Access::new(addr, settings.http_token_file.as_deref()).map_err(|e| {
                    let key = if matches!(e, common::http::HttpError::Exposed { .. }) { "metrics_listen" } else { "http_token_file" };
                    settings.daemon.invalid(key, e.to_string())
                })?,
            )),
            None => None,
        };
        Ok(Self {
            metrics,
            drain_on_stop: true,
            dispatcher: settings.dispatcher,
            identity,
            slots: settings.slots,
            cache_dir: settings.cache_dir,
            cache_max_bytes: settings.cache_max_bytes,
            heartbeat_interval: settings.heartbeat_interval,
            dispatcher_timeout: settings.dispatcher_timeout,
            stop_timeout: settings.stop_timeout,
            health_log_interval: settings.health_log_interval,
            tls_dir: Some(settings.daemon.tls_dir),
            shared_input_roots: settings.shared_input_roots,
            object_store_buckets: settings.object_store_buckets,
            object_store_endpoint: settings.object_store_endpoint,
            object_store_roots,
            allow_native: settings.allow_native,
            allow_unconfined_native: settings.allow_unconfined_native,
            payload_user: settings.payload_user,
            scratch_dir: settings.scratch_dir,
        })
    }
}
