//! The node's keys ([`NODE_KEYS`], one row each) and its validated [`NodeSettings`]: each key's
//! type, default and range are in the one line of `NodeSettings::read` that checks it.

use std::path::PathBuf;
use std::time::Duration;

use super::daemon::{DaemonSettings, LOG_FORMAT};
use super::values::{boolean, defaults, duration_within, integer_within, size_within, text, validate, Validator};
use super::{ConfigError, Key, Origin, RawConfig, Setting};

/// Default `dispatcher` for a node.
pub const DEFAULT_DISPATCHER_ADDRESS: &str = "127.0.0.1:7870";
/// Default node `tls_dir`: `ca.pem`, `cert.pem`, `key.pem` from `pki issue-node`.
pub const DEFAULT_NODE_TLS_DIR: &str = "/etc/dispy/node";
/// Default `cache_dir`: where a node keeps payloads by hash.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/dispy-node/cache";
/// Default `scratch_dir` with the default `cache_dir`: where native workers get their scratch
/// directories. Without `scratch_dir`, it is `cache_dir` with `-scratch` appended, so a node
/// started by hand with only `--cache-dir` writable gets a writable, separate scratch root.
pub const DEFAULT_SCRATCH_DIR: &str = "/var/lib/dispy-node/cache-scratch";
/// Default `payload_user`: the account native workers run as when the node runs as root.
pub const DEFAULT_PAYLOAD_USER: &str = "nobody";
/// Default `cache_max_bytes`: payload bytes a node keeps cached before it evicts unused ones.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 1 << 30;
/// Default `heartbeat_interval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default `dispatcher_timeout`: silence after which the node calls the dispatcher dead.
pub const DEFAULT_DISPATCHER_TIMEOUT: Duration = crate::net::DEFAULT_DISPATCHER_TIMEOUT;
/// Default `stop_timeout`: how long a stopping node lets its running chunks finish. Below the
/// unit's `TimeoutStopSec` (90s), which must exceed it.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `health_log_interval`.
pub const DEFAULT_HEALTH_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// The node's default `async_threads`: its network work is light (chunks run on slot threads of
/// their own), and one thread answers an assignment without waking another.
pub const DEFAULT_NODE_ASYNC_THREADS: u32 = 1;

const PROGRAM: &str = "dispy-node";

/// Every node key, in documentation order (that of `deploy/node.toml`).
pub const NODE_KEYS: &[Key] = &[
    Key {
        name: "dispatcher",
        value_name: "HOST:PORT",
        help: "Dispatcher address, host:port [default: 127.0.0.1:7870]",
    },
    Key {
        name: "tls_dir",
        value_name: "DIR",
        help: "Directory with this node's ca.pem, cert.pem and key.pem (from `dispy-dispatcher pki \
               issue-node`) [default: /etc/dispy/node]",
    },
    Key { name: "slots", value_name: "N", help: "Chunk slots [default: the number of logical cores]" },
    Key { name: "cache_dir", value_name: "DIR", help: "Payload cache directory [default: /var/lib/dispy-node/cache]" },
    Key {
        name: "cache_max_bytes",
        value_name: "SIZE",
        help: "Payload bytes cached before the least recently used payloads (and their compiled \
               modules) that no running job uses are evicted [default: 1GiB]",
    },
    Key {
        name: "shared_input_roots",
        value_name: "DIRS",
        help: "Directories of shared storage whose files shared-input jobs may have this node read, \
               separated by ':' [default: none, shared input refused]",
    },
    Key {
        name: "object_store_buckets",
        value_name: "LIST",
        help: "Object-store buckets (s3://BUCKET/...) and https:// URL prefixes whose objects object-input \
               jobs may have this node read, separated by ',' [default: none, object input refused]",
    },
    Key {
        name: "object_store_endpoint",
        value_name: "URL",
        help: "S3-compatible endpoint for object input, overriding AWS_ENDPOINT_URL; credentials and region \
               come from the AWS_* environment [default: AWS_ENDPOINT_URL, else AWS itself]",
    },
    Key {
        name: "object_store_ca_file",
        value_name: "FILE",
        help: "PEM file of CA certificates object input's HTTPS servers may also be signed by (an on-premises \
               store's own CA), besides the system's [default: the system's only]",
    },
    Key {
        name: "allow_native",
        value_name: "BOOL",
        help: "Whether this node runs native (.so) payloads at all; false refuses them [default: true]",
    },
    Key {
        name: "allow_unconfined_native",
        value_name: "BOOL",
        help: "Run native payloads even when this node cannot confine them (no Landlock, no payload_user) \
               [default: false, such a node refuses them]",
    },
    Key {
        name: "payload_user",
        value_name: "USER",
        help: "Account native workers switch to when the node runs as root [default: nobody]",
    },
    Key {
        name: "scratch_dir",
        value_name: "DIR",
        help: "Where each native worker gets a scratch directory, its only writable place, removed \
               afterwards [default: cache_dir with -scratch appended]",
    },
    Key { name: "heartbeat_interval", value_name: "DURATION", help: "How often to send a heartbeat [default: 1s]" },
    Key {
        name: "dispatcher_timeout",
        value_name: "DURATION",
        help: "Silence after which the dispatcher is taken for dead and dialled again; running chunks \
               go on meanwhile [default: 2s]",
    },
    Key {
        name: "stop_timeout",
        value_name: "DURATION",
        help: "On SIGTERM, how long running chunks may finish before the node cancels them and leaves \
               (a second SIGTERM cancels at once); keep it below the unit's TimeoutStopSec [default: 60s]",
    },
    Key {
        name: "health_log_interval",
        value_name: "DURATION",
        help: "How often to log a \"node health\" line [default: 30s]",
    },
    Key {
        name: "async_threads",
        value_name: "N",
        help: "Threads for the node's network work; chunks run on slot threads of their own [default: 1]",
    },
    Key {
        name: "metrics_listen",
        value_name: "ADDR",
        help: "TCP address serving this node's Prometheus /metrics; an address other than loopback \
               needs http_token_file [default: none, no HTTP server]",
    },
    Key {
        name: "http_token_file",
        value_name: "FILE",
        help: "A file holding the bearer token every request to metrics_listen must carry \
               [default: none; required unless metrics_listen is a loopback address]",
    },
    LOG_FORMAT,
    Key {
        name: "log_level",
        value_name: "FILTER",
        help: "Log filter such as info or info,node=debug; RUST_LOG wins [default: info]",
    },
];

/// The node's validated settings; `node::config::NodeConfig` adds the loaded TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Dispatcher address, `host:port`; the host is resolved at each dial.
    pub dispatcher: String,
    /// Chunk slots; `None` means one per logical core.
    pub slots: Option<u32>,
    /// Where payloads are cached by hash, so each is shipped to this node once.
    pub cache_dir: PathBuf,
    /// Payload bytes the cache may hold before it evicts the least recently used payloads, and
    /// their compiled modules, that no running job uses; a cache never grows with the number of
    /// payloads ever seen.
    pub cache_max_bytes: u64,
    /// Directories (shared storage mounted at the same path on every node) whose files
    /// shared-input jobs may have this node read; written like `PATH`, `/mnt/a:/mnt/b`. Empty,
    /// the default, refuses shared input.
    pub shared_input_roots: Vec<PathBuf>,
    /// What object inputs this node may read: bucket names (`logs` allows `s3://logs/...`) and
    /// URL prefixes (`https://data.example.org/public/` allows the URLs below it, matched on a
    /// path boundary); written `logs,https://data.example.org/public/`. Empty, the default,
    /// refuses object input, so an operator opts a node in to each bucket.
    pub object_store_buckets: Vec<String>,
    /// The S3-compatible endpoint object input is read from (an on-premises store), overriding
    /// `AWS_ENDPOINT_URL`; `None` uses that variable, or AWS itself. Credentials never go in the
    /// config: they come from the `AWS_*` environment (the unit's `EnvironmentFile`).
    pub object_store_endpoint: Option<String>,
    /// A PEM file of CA certificates trusted for object input's HTTPS connections besides the
    /// system's (an on-premises store or web server with a private CA); `None` trusts only the
    /// system's.
    pub object_store_ca_file: Option<PathBuf>,
    /// Whether native payloads run here at all; `false` answers every native job with a
    /// rejection, for nodes that should only ever run sandboxed WebAssembly.
    pub allow_native: bool,
    /// Whether native payloads run even when the node cannot confine them (no Landlock, or no
    /// `payload_user` to switch to as root). Off by default: such a node refuses native jobs and
    /// says why.
    pub allow_unconfined_native: bool,
    /// The account native workers switch to when the node runs as root, so payload code never
    /// runs with the node's privileges.
    pub payload_user: String,
    /// Where native workers get their scratch directories (one per worker, its only writable
    /// place, removed afterwards). Must not be inside `cache_dir` or the TLS directory.
    pub scratch_dir: PathBuf,
    /// How often to send a heartbeat; keep it well under the dispatcher's `node_timeout`.
    pub heartbeat_interval: Duration,
    /// How long the dispatcher may be silent before the node takes it for dead and dials again
    /// (QUIC keep-alives keep a healthy idle connection open); the node's chunks run on meanwhile.
    pub dispatcher_timeout: Duration,
    /// On SIGTERM, how long the node lets its running chunks finish (and waits for their results'
    /// acknowledgements) before it cancels what is left and leaves: a stop is graceful within
    /// the service manager's patience (`TimeoutStopSec` must exceed it).
    pub stop_timeout: Duration,
    /// How often to log a `node health` line for operators following the journal.
    pub health_log_interval: Duration,
    /// TCP address of this node's `/metrics`; `None` serves no HTTP.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The bearer token's file, which a non-loopback `metrics_listen` requires.
    pub http_token_file: Option<PathBuf>,
    /// The TLS directory (default `/etc/dispy/node`), the async runtime (default one thread: the
    /// node's network work is light) and logging.
    pub daemon: DaemonSettings,
}

impl Default for NodeSettings {
    fn default() -> Self {
        defaults(Self::read)
    }
}

impl AsRef<DaemonSettings> for NodeSettings {
    fn as_ref(&self) -> &DaemonSettings {
        &self.daemon
    }
}

impl TryFrom<RawConfig<NodeSettings>> for NodeSettings {
    type Error = ConfigError;

    fn try_from(raw: RawConfig<NodeSettings>) -> Result<Self, ConfigError> {
        validate(raw, PROGRAM, NODE_KEYS, Self::read)
    }
}

impl NodeSettings {
    /// Each key's value, default and rule.
    fn read(v: &mut Validator) -> Self {
        let cache_dir = v.check("cache_dir", PathBuf::from(DEFAULT_CACHE_DIR), Validator::path);
        let mut beside_cache = cache_dir.clone().into_os_string();
        beside_cache.push("-scratch");
        Self {
            dispatcher: v.check("dispatcher", DEFAULT_DISPATCHER_ADDRESS.to_owned(), dispatcher_address),
            slots: v.check("slots", None, |_, s| integer_within(s, 1, 4096).map(Some)),
            cache_dir,
            cache_max_bytes: v.check("cache_max_bytes", DEFAULT_CACHE_MAX_BYTES, |_, s| {
                size_within(s, 0, 1 << 40, "").map(|size| size as u64)
            }),
            shared_input_roots: v.check("shared_input_roots", Vec::new(), absolute_paths),
            object_store_buckets: v.check("object_store_buckets", Vec::new(), |_, s| bucket_list(s)),
            object_store_endpoint: v.check("object_store_endpoint", None, |_, s| endpoint(s).map(Some)),
            object_store_ca_file: v.check("object_store_ca_file", None, |origin, s| Validator::path(origin, s).map(Some)),
            allow_native: v.check("allow_native", true, |_, s| boolean(s)),
            allow_unconfined_native: v.check("allow_unconfined_native", false, |_, s| boolean(s)),
            payload_user: v.check("payload_user", DEFAULT_PAYLOAD_USER.to_owned(), |_, s| user_name(s)),
            scratch_dir: v.check("scratch_dir", PathBuf::from(beside_cache), Validator::path),
            heartbeat_interval: v.check("heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL, |_, s| {
                duration_within(s, Duration::from_millis(10), Duration::from_secs(60))
            }),
            dispatcher_timeout: v.check("dispatcher_timeout", DEFAULT_DISPATCHER_TIMEOUT, |_, s| {
                duration_within(s, Duration::from_millis(500), Duration::from_secs(600))
            }),
            stop_timeout: v.check("stop_timeout", DEFAULT_STOP_TIMEOUT, |_, s| duration_within(s, Duration::ZERO, Duration::from_secs(86_400))),
            health_log_interval: v.check("health_log_interval", DEFAULT_HEALTH_LOG_INTERVAL, |_, s| {
                duration_within(s, Duration::from_secs(1), Duration::from_secs(86_400))
            }),
            metrics_listen: v.check("metrics_listen", None, |origin, s| {
                super::dispatcher::socket_addr(origin, s).map(Some)
            }),
            http_token_file: v.check("http_token_file", None, |origin, s| Validator::path(origin, s).map(Some)),
            daemon: DaemonSettings::read(v, PROGRAM, DEFAULT_NODE_TLS_DIR, Some(DEFAULT_NODE_ASYNC_THREADS)),
        }
    }
}

/// Absolute directories separated by `:`, like `PATH`; an empty string is an empty list.
/// Relative ones are refused: a node's working directory says nothing about shared storage.
fn absolute_paths(_: &Origin, value: Setting) -> Result<Vec<PathBuf>, String> {
    let text = text(value)?;
    let paths: Vec<PathBuf> = std::env::split_paths(&text).filter(|path| !path.as_os_str().is_empty()).collect();
    match paths.iter().find(|path| path.is_relative()) {
        Some(relative) => Err(format!("expected absolute directories separated by ':', found {}", relative.display())),
        None => Ok(paths),
    }
}

/// Bucket names and `https://` (or `http://`) URL prefixes separated by `,`; an empty string is
/// an empty list.
fn bucket_list(value: Setting) -> Result<Vec<String>, String> {
    let text = text(value)?;
    let mut entries = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let url = entry.strip_prefix("https://").or_else(|| entry.strip_prefix("http://"));
        let bad = match url {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => entry.contains(|c: char| c == '/' || c == ':' || c.is_whitespace()),
        };
        if bad {
            return Err(format!(
                "expected bucket names or https:// URL prefixes separated by ',', found {entry:?}"
            ));
        }
        entries.push(entry.to_owned());
    }
    Ok(entries)
}

/// An `http://` or `https://` URL with a host.
fn endpoint(value: Setting) -> Result<String, String> {
    let text = text(value)?;
    let host = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    match host {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(text),
        _ => Err(format!("expected an http:// or https:// URL such as \"https://s3.example.org\", found {text:?}")),
    }
}

/// A user name: not empty, no whitespace, no ':' or '/'.
fn user_name(value: Setting) -> Result<String, String> {
    let text = text(value)?;
    let bad = text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == ':' || c == '/');
    if bad {
        Err(format!("expected a user name such as \"nobody\", found {text:?}"))
    } else {
        Ok(text)
    }
}

/// `host:port`, where the host is a name or an address (IPv6 in brackets).
fn dispatcher_address(_: &Origin, value: Setting) -> Result<String, String> {
    let text = text(value)?;
    let bad = || format!("expected host:port such as \"dispatcher.example:7870\", found {text:?}");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty() && !host.contains(char::is_whitespace);
    let port_ok = port.parse::<u16>().is_ok_and(|port| port != 0);
    if host_ok && port_ok {
        Ok(text)
    } else {
        Err(bad())
    }
}
