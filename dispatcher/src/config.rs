//! The dispatcher's validated configuration.
//!
//! `common::config::load_dispatcher` merges the config file, `DISPY_*` variables and flags into
//! a raw struct, `DispatcherSettings::try_from` validates every key, and
//! `DispatcherConfig::try_from` (here) loads the TLS identity the settings point at. Tests and
//! `--local` build a [`DispatcherConfig`] directly with [`DispatcherConfig::new`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::config::{ConfigError, DispatcherSettings, TenantLimits, TenantSettings};
use common::http::Access;
use common::pki::Identity;
use ledger::jobs::{Quota, Quotas};
use ledger::scheduler::{TenantShare, TenantShares};

/// Everything `dispy-dispatcher` needs to run, already validated.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// UDP address of the QUIC endpoint (default `0.0.0.0:7870`).
    pub listen: SocketAddr,
    /// The dispatcher's certificate, key and the cluster CA.
    pub identity: Identity,
    /// Where `identity` was loaded from, so SIGHUP can load it again; `None` (`--local`, tests)
    /// has nothing to reload.
    pub tls_dir: Option<PathBuf>,
    /// Where the journal, spooled inputs and results, and payloads live.
    pub state_dir: PathBuf,
    /// How long a finished job's results are kept when nobody fetches them (default 24 h).
    pub retention: Duration,
    /// How long a job whose upload was cut off waits for its submitter to resume it (default
    /// 2 min).
    pub input_grace: Duration,
    /// A node silent this long is declared lost (default 5 s).
    pub node_timeout: Duration,
    /// After a restart, how long restored chunks wait for their nodes to claim them (default
    /// 10 s).
    pub reattach_grace: Duration,
    /// Runs of one chunk that may be lost with their node before it fails its job (default 3).
    pub crash_limit: u32,
    /// Attempts queued per slot beyond the running one, so slots never wait for the network.
    pub pipeline_depth: u32,
    /// Largest control message accepted, bytes.
    pub max_message: usize,
    /// Largest chunk input or result accepted, bytes.
    pub max_chunk: usize,
    /// Largest payload accepted, bytes.
    pub max_payload: usize,
    /// Most bytes of payloads kept in memory for shipping to nodes (default 64 MiB); only
    /// payloads of live jobs are kept, the rest are read from disk when needed.
    pub payload_memory_cap: usize,
    /// The `pki init` directory (`ca.pem`, `ca.key`) used to sign the certificates of nodes
    /// that enrol with a join token; `None` (the default) turns enrolment off.
    pub ca_dir: Option<PathBuf>,
    /// Lifetime of certificates issued to enrolled and renewing nodes (default 7 days).
    pub enrolled_cert_validity: Duration,
    /// What each client may use: quotas and its share of the slots (default: no limits,
    /// equal weights).
    pub tenants: TenantSettings,
    /// Where `/metrics` and the status page are served, and who may read them; `None` (the
    /// default) serves no HTTP.
    pub http: Option<(SocketAddr, Access)>,
    /// Whether stopping waits out QUIC's draining period (three probe timeouts, about 80 ms on
    /// a LAN) so every peer surely hears the close; `true` here. An embedded `--local` cluster,
    /// whose peers all stop with it, does not wait.
    pub drain_on_stop: bool,
}

/// The dispatcher's default port.
pub const DEFAULT_PORT: u16 = common::config::DEFAULT_PORT;

impl DispatcherConfig {
    /// A configuration with every default, listening on `listen`, keeping state in `state_dir`.
    pub fn new(listen: SocketAddr, identity: Identity, state_dir: PathBuf) -> Self {
        Self {
            listen,
            identity,
            tls_dir: None,
            state_dir,
            retention: common::config::DEFAULT_RETENTION,
            input_grace: common::config::DEFAULT_INPUT_GRACE,
            node_timeout: common::config::DEFAULT_NODE_TIMEOUT,
            reattach_grace: common::config::DEFAULT_REATTACH_GRACE,
            crash_limit: common::config::DEFAULT_CRASH_LIMIT,
            pipeline_depth: common::config::DEFAULT_PIPELINE_DEPTH,
            max_message: common::config::DEFAULT_MAX_MESSAGE,
            max_chunk: common::config::DEFAULT_MAX_CHUNK,
            max_payload: common::config::DEFAULT_MAX_PAYLOAD,
            payload_memory_cap: common::config::DEFAULT_PAYLOAD_MEMORY_CAP,
            ca_dir: None,
            enrolled_cert_validity: common::config::DEFAULT_ENROLLED_CERT_VALIDITY,
            tenants: TenantSettings::default(),
            http: None,
            drain_on_stop: true,
        }
    }

    /// The scheduler's view of the tenants' shares of the slots.
    pub(crate) fn shares(&self) -> TenantShares {
        let share = |limits: &TenantLimits| TenantShare { weight: limits.weight, max_slot_share: limits.max_slot_share };
        TenantShares {
            default: share(&self.tenants.default),
            by_name: self.tenants.by_name.iter().map(|(name, limits)| (name.clone(), share(limits))).collect(),
        }
    }

    /// The ledger's view of the tenants' quotas.
    pub(crate) fn quotas(&self) -> Quotas {
        let quota = |limits: &TenantLimits| Quota { max_jobs: limits.max_jobs, max_spool: limits.max_spool };
        Quotas {
            default: quota(&self.tenants.default),
            by_name: self.tenants.by_name.iter().map(|(name, limits)| (name.clone(), quota(limits))).collect(),
        }
    }
}

impl TryFrom<DispatcherSettings> for DispatcherConfig {
    type Error = ConfigError;

    /// Loads the TLS identity from `tls_dir`, and checks the CA in `ca_dir` when set; an
    /// unreadable or invalid one is reported as a problem with that key, naming where it was set.
    fn try_from(settings: DispatcherSettings) -> Result<Self, ConfigError> {
        let identity = Identity::load(&settings.daemon.tls_dir).map_err(|e| {
            settings.daemon.invalid("tls_dir", format!("failed to load the dispatcher's TLS identity: {e}"))
        })?;
        if let Some(dir) = &settings.ca_dir {
            common::enroll::CaSigner::load(dir, &identity.ca).map_err(|e| {
                settings.daemon.invalid("ca_dir", format!("node enrolment cannot use this CA: {e}"))
            })?;
        }
        let http = match settings.http_listen {
            Some(addr) => Some((addr, http_access(&settings, addr)?)),
            None => None,
        };
        let mut config = Self::new(settings.listen, identity, settings.state_dir);
        config.http = http;
        config.tls_dir = Some(settings.daemon.tls_dir);
        config.retention = settings.retention;
        config.input_grace = settings.input_grace;
        config.node_timeout = settings.node_timeout;
        config.reattach_grace = settings.reattach_grace;
        config.crash_limit = settings.crash_limit;
        config.pipeline_depth = settings.pipeline_depth;
        config.max_message = settings.max_message;
        config.max_chunk = settings.max_chunk;
        config.max_payload = settings.max_payload;
        config.payload_memory_cap = settings.payload_memory_cap;
        config.ca_dir = settings.ca_dir;
        config.enrolled_cert_validity = settings.enrolled_cert_validity;
        config.tenants = settings.tenants;
        Ok(config)
    }
}


/// The access rule of `http_listen`, a refusal naming the key at fault.
fn http_access(settings: &DispatcherSettings, addr: SocketAddr) -> Result<Access, ConfigError> {
    Access::new(addr, settings.http_token_file.as_deref()).map_err(|e| {
        let key = if matches!(e, common::http::HttpError::Exposed { .. }) { "http_listen" } else { "http_token_file" };
        settings.daemon.invalid(key, e.to_string())
    })
}
