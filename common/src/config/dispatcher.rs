//! The dispatcher's keys ([`DISPATCHER_KEYS`], one row each) and its validated
//! [`DispatcherSettings`]: each key's type, default and range are in the one line of
//! `DispatcherSettings::read` that checks it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use super::daemon::{DaemonSettings, LOG_FORMAT};
use super::tenants::TenantSettings;
use super::values::{defaults, duration_within, integer_within, size_within, text, validate, Validator};
use super::{ConfigError, Key, Origin, RawConfig, Setting};

/// The dispatcher's default port.
pub const DEFAULT_PORT: u16 = 7870;
/// Default `listen`: every IPv4 address, port 7870.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DEFAULT_PORT));
/// Default dispatcher `tls_dir`: `ca.pem`, `cert.pem`, `key.pem` from `pki init`.
pub const DEFAULT_DISPATCHER_TLS_DIR: &str = "/etc/dispy/dispatcher";
/// Default `state_dir`: the journal, spooled inputs and results, and payloads.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dispy-dispatcher";
/// Default `retention`: how long a finished job's results wait to be fetched.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Default `input_grace`: how long a job whose upload was cut off waits for its submitter to
/// resume it; as long as `dispy-submit`'s default `--reconnect-timeout`.
pub const DEFAULT_INPUT_GRACE: Duration = Duration::from_secs(120);
/// Default `node_timeout`: heartbeat silence after which a node is lost.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `reattach_grace`: how long after a restart restored chunks wait for their nodes.
pub const DEFAULT_REATTACH_GRACE: Duration = Duration::from_secs(10);
/// Default `crash_limit`: as Dask's allowed-failures and HyperQueue's crash limit.
pub const DEFAULT_CRASH_LIMIT: u32 = 3;
/// Default `pipeline_depth`: the most attempts queued per slot beyond the running one (each job's
/// depth on a node adapts to its chunk run times below it).
pub const DEFAULT_PIPELINE_DEPTH: u32 = 32;
/// Default `max_message`: largest control message, bytes.
pub const DEFAULT_MAX_MESSAGE: usize = wire::frame::DEFAULT_MAX_MESSAGE;
/// Default `max_chunk`: largest chunk input or result, bytes.
pub const DEFAULT_MAX_CHUNK: usize = 256 << 20;
/// Default `max_payload`: largest payload, bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 256 << 20;
/// Default `payload_memory_cap`: most bytes of live jobs' payloads kept in memory for shipping.
pub const DEFAULT_PAYLOAD_MEMORY_CAP: usize = 64 << 20;
/// Default `enrolled_cert_validity`: lifetime of certificates issued to enrolled nodes, which
/// renew them once a third of it is left.
pub const DEFAULT_ENROLLED_CERT_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

const PROGRAM: &str = "dispy-dispatcher";

/// Every dispatcher key, in documentation order (that of `deploy/dispatcher.toml`).
pub const DISPATCHER_KEYS: &[Key] = &[
    Key { name: "listen", value_name: "ADDR", help: "UDP address to listen on [default: 0.0.0.0:7870]" },
    Key {
        name: "tls_dir",
        value_name: "DIR",
        help: "Directory with the dispatcher's ca.pem, cert.pem and key.pem (from `pki init`) \
               [default: /etc/dispy/dispatcher]",
    },
    Key {
        name: "state_dir",
        value_name: "DIR",
        help: "Where the journal, spooled chunks and payloads live [default: /var/lib/dispy-dispatcher]",
    },
    Key {
        name: "retention",
        value_name: "DURATION",
        help: "How long a finished job's results are kept for `dispy-submit wait` [default: 24h]",
    },
    Key {
        name: "input_grace",
        value_name: "DURATION",
        help: "How long a job whose input upload was cut off (by a restart or a lost connection) waits \
               for its submitter to resume it before it fails; 0s fails it at once [default: 2m]",
    },
    Key {
        name: "node_timeout",
        value_name: "DURATION",
        help: "Heartbeat silence after which a node is declared lost [default: 5s]",
    },
    Key {
        name: "reattach_grace",
        value_name: "DURATION",
        help: "After a restart, how long unfinished chunks wait for reconnecting nodes to claim \
               them before they run again [default: 10s]",
    },
    Key {
        name: "crash_limit",
        value_name: "N",
        help: "Runs of one chunk that may be lost with their node before the chunk fails its job [default: 3]",
    },
    Key {
        name: "pipeline_depth",
        value_name: "N",
        help: "The most chunks queued per slot beyond the running one; each job's depth adapts to its \
               chunk run times below it [default: 32]",
    },
    Key { name: "max_message", value_name: "SIZE", help: "Largest control message accepted [default: 1MiB]" },
    Key {
        name: "max_chunk",
        value_name: "SIZE",
        help: "Largest chunk input or result accepted [default: 256MiB]",
    },
    Key { name: "max_payload", value_name: "SIZE", help: "Largest payload accepted [default: 256MiB]" },
    Key {
        name: "payload_memory_cap",
        value_name: "SIZE",
        help: "Most bytes of live jobs' payloads kept in memory for shipping to nodes; the rest are read \
               from disk [default: 64MiB]",
    },
    Key {
        name: "ca_dir",
        value_name: "DIR",
        help: "The `pki init` directory (ca.pem, ca.key); turns on node enrolment with join tokens \
               [default: none, enrolment off]",
    },
    Key {
        name: "enrolled_cert_validity",
        value_name: "DURATION",
        help: "Lifetime of certificates issued to enrolled nodes [default: 168h]",
    },
    Key {
        name: "tenant_max_jobs",
        value_name: "N",
        help: "Jobs each client may have queued or running at once [default: unlimited]",
    },
    Key {
        name: "tenant_max_spool",
        value_name: "SIZE",
        help: "Bytes each client may hold in the spool: inputs and results not yet fetched [default: unlimited]",
    },
    Key {
        name: "tenant_max_slot_share",
        value_name: "FRACTION",
        help: "The most of the cluster's slots one client's chunks may hold, e.g. 0.5 [default: 1]",
    },
    Key {
        name: "tenant_weight",
        value_name: "N",
        help: "Each client's weight when slots are shared fairly between clients [default: 1]",
    },
    Key {
        name: "tenants",
        value_name: "TABLE",
        help: "Per-client overrides of the tenant_* keys, as TOML: { alice = { max_jobs = 50, weight = 2 } } \
               [default: none]",
    },
    Key {
        name: "async_threads",
        value_name: "N",
        help: "Threads for network and scheduling work; 1 gives the lowest latency on a small cluster, \
               more keep thousands of nodes served [default: one per logical core]",
    },
    Key {
        name: "http_listen",
        value_name: "ADDR",
        help: "TCP address serving Prometheus /metrics and the status page at /; an address other than \
               loopback needs http_token_file [default: none, no HTTP server]",
    },
    Key {
        name: "http_token_file",
        value_name: "FILE",
        help: "A file holding the bearer token requests for /metrics and /api/status on http_listen \
               must carry [default: none; required unless http_listen is a loopback address]",
    },
    LOG_FORMAT,
    Key {
        name: "log_level",
        value_name: "FILTER",
        help: "Log filter such as info or info,dispatcher=debug; RUST_LOG wins [default: info]",
    },
];

/// The dispatcher's validated settings; `dispatcher::config::DispatcherConfig` adds the loaded
/// TLS identity.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatcherSettings {
    /// UDP address of the QUIC endpoint for nodes and clients.
    pub listen: SocketAddr,
    /// Where the journal, spooled chunk inputs and results, and payloads live, so a restarted
    /// dispatcher resumes unfinished jobs; systemd creates it (`StateDirectory=`).
    pub state_dir: PathBuf,
    /// How long a finished job's results are kept for `dispy-submit wait` to fetch.
    pub retention: Duration,
    /// How long a job whose upload was cut off (the dispatcher restarted, the submitter's
    /// connection dropped) waits for its submitter to resume it, so a blip costs no job.
    pub input_grace: Duration,
    /// A node silent this long is declared lost and its chunks requeued.
    pub node_timeout: Duration,
    /// After a restart, how long restored chunks wait for the nodes still running them to
    /// reconnect and claim them, before they are requeued.
    pub reattach_grace: Duration,
    /// Runs of one chunk that may be lost with their node before the chunk fails its job, so a
    /// chunk that crashes nodes is not retried forever.
    pub crash_limit: u32,
    /// Attempts queued per slot beyond the running one, so slots never wait for the network.
    pub pipeline_depth: u32,
    /// Largest control message accepted, bytes; bounds memory per peer message.
    pub max_message: usize,
    /// Largest chunk input or result accepted, bytes.
    pub max_chunk: usize,
    /// Largest payload accepted, bytes.
    pub max_payload: usize,
    /// Most bytes of payloads kept in memory for shipping to nodes: only live jobs' payloads, least
    /// recently used out first; the rest are read from disk, so memory does not grow with the
    /// number of payloads ever uploaded.
    pub payload_memory_cap: usize,
    /// The CA directory of `pki init` (`ca.pem`, `ca.key`), so the dispatcher can sign the
    /// certificates of nodes that enrol with a join token; `None` disables enrolment.
    pub ca_dir: Option<PathBuf>,
    /// Lifetime of certificates issued to enrolled (and renewing) nodes; short, because nodes
    /// renew on their own and a short life bounds what a stolen key is worth.
    pub enrolled_cert_validity: Duration,
    /// What each client may use: quotas and its share of the slots.
    pub tenants: TenantSettings,
    /// TCP address of `/metrics` and the status page; `None` serves no HTTP.
    pub http_listen: Option<SocketAddr>,
    /// The bearer token's file, which a non-loopback `http_listen` requires.
    pub http_token_file: Option<PathBuf>,
    /// The TLS directory (default `/etc/dispy/dispatcher`), the async runtime (default one thread
    /// per logical core) and logging.
    pub daemon: DaemonSettings,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        defaults(Self::read)
    }
}

impl AsRef<DaemonSettings> for DispatcherSettings {
    fn as_ref(&self) -> &DaemonSettings {
        &self.daemon
    }
}

impl TryFrom<RawConfig<DispatcherSettings>> for DispatcherSettings {
    type Error = ConfigError;

    fn try_from(raw: RawConfig<DispatcherSettings>) -> Result<Self, ConfigError> {
        validate(raw, PROGRAM, DISPATCHER_KEYS, Self::read)
    }
}

impl DispatcherSettings {
    /// Each key's value, default and rule.
    fn read(v: &mut Validator) -> Self {
        Self {
            listen: v.check("listen", DEFAULT_LISTEN, socket_addr),
            state_dir: v.check("state_dir", PathBuf::from(DEFAULT_STATE_DIR), Validator::path),
            retention: v.check("retention", DEFAULT_RETENTION, |_, s| {
                duration_within(s, Duration::from_secs(1), Duration::from_secs(365 * 86_400))
            }),
            input_grace: v.check("input_grace", DEFAULT_INPUT_GRACE, |_, s| {
                duration_within(s, Duration::ZERO, Duration::from_secs(86_400))
            }),
            node_timeout: v.check("node_timeout", DEFAULT_NODE_TIMEOUT, |_, s| {
                duration_within(s, Duration::from_secs(1), Duration::from_secs(3600))
            }),
            reattach_grace: v.check("reattach_grace", DEFAULT_REATTACH_GRACE, |_, s| {
                duration_within(s, Duration::ZERO, Duration::from_secs(3600))
            }),
            crash_limit: v.check("crash_limit", DEFAULT_CRASH_LIMIT, |_, s| integer_within(s, 1, 1000)),
            pipeline_depth: v.check("pipeline_depth", DEFAULT_PIPELINE_DEPTH, |_, s| integer_within(s, 0, 64)),
            max_message: v.check("max_message", DEFAULT_MAX_MESSAGE, |_, s| size_within(s, 64 << 10, 64 << 20, "")),
            max_chunk: v.check("max_chunk", DEFAULT_MAX_CHUNK, |_, s| {
                size_within(s, 1, 1023 << 20, " (nodes accept assignments up to 1GiB)")
            }),
            max_payload: v.check("max_payload", DEFAULT_MAX_PAYLOAD, |_, s| {
                size_within(s, 1, 256 << 20, " (nodes accept payloads up to 256MiB)")
            }),
            payload_memory_cap: v.check("payload_memory_cap", DEFAULT_PAYLOAD_MEMORY_CAP, |_, s| {
                size_within(s, 0, 16 << 30, "")
            }),
            ca_dir: v.check("ca_dir", None, |origin, s| Validator::path(origin, s).map(Some)),
            enrolled_cert_validity: v.check("enrolled_cert_validity", DEFAULT_ENROLLED_CERT_VALIDITY, |_, s| {
                duration_within(s, Duration::from_secs(3600), Duration::from_secs(365 * 86_400))
            }),
            tenants: TenantSettings::read(v),
            http_listen: v.check("http_listen", None, |origin, s| socket_addr(origin, s).map(Some)),
            http_token_file: v.check("http_token_file", None, |origin, s| Validator::path(origin, s).map(Some)),
            daemon: DaemonSettings::read(v, PROGRAM, DEFAULT_DISPATCHER_TLS_DIR, None),
        }
    }
}

/// An IP address and port.
pub(super) fn socket_addr(_: &Origin, value: Setting) -> Result<SocketAddr, String> {
    let text = text(value)?;
    text.trim()
        .parse()
        .map_err(|_| format!("expected an IP address and port such as \"0.0.0.0:7870\", found {text:?}"))
}
