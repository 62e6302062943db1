//! Daemon configuration: the only module that touches the `config` crate.
//!
//! Each daemon's settings come from three sources, later ones winning key by key: a TOML file
//! (`/etc/dispy/dispatcher.toml` or `/etc/dispy/node.toml`, or `--config FILE`), `DISPY_*`
//! environment variables (`DISPY_SLOTS=4` sets `slots`; `__` separates nested keys, of which
//! there are none yet), and command-line flags (`--slots 4`). [`load_dispatcher`] and
//! [`load_node`] merge the [`Sources`] into a raw `#[serde(deny_unknown_fields)]` struct that
//! keeps every value as written ([`Setting`]) and where it came from ([`Origin`]); `TryFrom`
//! turns it into validated [`DispatcherSettings`] or [`NodeSettings`], reporting every unknown
//! or invalid key at once, each naming its file, variable or flag, the key and the reason. The
//! daemons then build their own `DispatcherConfig` / `NodeConfig` from the settings (loading
//! the TLS identity), so everything here is pure and testable from inline TOML.
//!
//! A `DISPY_*` variable that names no key of this daemon is refused like an unknown file key,
//! unless another dispy program reads it ([`SHARED_VARIABLES`]): the namespace is shared, and a
//! shell that exports `DISPY_DISPATCHER` for `dispy-submit` must still be able to start a
//! dispatcher. Empty variables count as unset.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use thiserror::Error;

use crate::messages::io_message;
use crate::telemetry::LogFormat;
use wire::units::{parse_duration, parse_size};

/// The dispatcher's config file when `--config` is not given; it may be absent.
pub const DEFAULT_DISPATCHER_FILE: &str = "/etc/dispy/dispatcher.toml";
/// The node's config file when `--config` is not given; it may be absent.
pub const DEFAULT_NODE_FILE: &str = "/etc/dispy/node.toml";
/// Environment variables with this prefix override file keys: `DISPY_` + the key upper-cased.
pub const ENV_PREFIX: &str = "DISPY_";
/// Separates nested keys in variable names (`DISPY_A__B` is `a.b`); no key is nested yet.
pub const ENV_SEPARATOR: &str = "__";
/// `DISPY_*` variables read by other dispy programs, ignored by a daemon that has no such key
/// (besides the other daemon's keys): `dispy-submit` reads `DISPY_DISPATCHER` and
/// `DISPY_TLS_DIR`, the integration tests `DISPY_TEST_LOG`.
pub const SHARED_VARIABLES: &[&str] = &["DISPY_DISPATCHER", "DISPY_TLS_DIR", "DISPY_TEST_LOG"];

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
/// Default `node_timeout`: heartbeat silence after which a node is lost.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `pipeline_depth`: the most attempts queued per slot beyond the running one (each job's
/// depth on a node adapts to its chunk run times below it).
pub const DEFAULT_PIPELINE_DEPTH: u32 = 32;
/// Default `max_message`: largest control message, bytes.
pub const DEFAULT_MAX_MESSAGE: usize = wire::frame::DEFAULT_MAX_MESSAGE;
/// Default `max_chunk`: largest chunk input or result, bytes.
pub const DEFAULT_MAX_CHUNK: usize = 256 << 20;
/// Default `max_payload`: largest payload, bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 256 << 20;
/// Default `enrolled_cert_validity`: lifetime of certificates issued to enrolled nodes, which
/// renew them once a third of it is left.
pub const DEFAULT_ENROLLED_CERT_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `dispatcher` for a node.
pub const DEFAULT_DISPATCHER_ADDRESS: &str = "127.0.0.1:7870";
/// Default node `tls_dir`: `ca.pem`, `cert.pem`, `key.pem` from `pki issue-node`.
pub const DEFAULT_NODE_TLS_DIR: &str = "/etc/dispy/node";
/// Default `cache_dir`: where a node keeps payloads by hash.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/dispy-node/cache";
/// Default `heartbeat_interval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default `health_log_interval`.
pub const DEFAULT_HEALTH_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// The node's default `async_threads`: its network work is light (chunks run on slot threads of
/// their own), and one thread answers an assignment without waking another.
pub const DEFAULT_NODE_ASYNC_THREADS: u32 = 1;
/// Default `log_level` (an `EnvFilter` directive; `RUST_LOG` wins when set).
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Every dispatcher key, in documentation order.
pub const DISPATCHER_KEYS: &[&str] = &[
    "listen",
    "tls_dir",
    "state_dir",
    "retention",
    "node_timeout",
    "pipeline_depth",
    "max_message",
    "max_chunk",
    "max_payload",
    "ca_dir",
    "enrolled_cert_validity",
    "async_threads",
    "log_format",
    "log_level",
];

/// Every node key, in documentation order.
pub const NODE_KEYS: &[&str] = &[
    "dispatcher",
    "tls_dir",
    "slots",
    "cache_dir",
    "shared_input_roots",
    "heartbeat_interval",
    "health_log_interval",
    "async_threads",
    "log_format",
    "log_level",
];

/// Where a daemon's settings come from. Build one with the methods, then call
/// [`load_dispatcher`] or [`load_node`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    file: Option<FileSource>,
    env: Vec<(String, String)>,
    flags: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
enum FileSource {
    /// A path; `required` is false only for the default path.
    Path { path: PathBuf, required: bool },
    /// TOML text (tests), named `name` in messages.
    Text { name: PathBuf, text: String },
}

impl Sources {
    /// No file, no environment, no flags: every key at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `explicit` (from `--config`), which must exist, or else `default`, which may be
    /// absent.
    pub fn file_or_default(mut self, explicit: Option<&Path>, default: &str) -> Self {
        self.file = Some(match explicit {
            Some(path) => FileSource::Path { path: path.to_owned(), required: true },
            None => FileSource::Path { path: PathBuf::from(default), required: false },
        });
        self
    }

    /// Uses TOML `text` as the config file, called `name` in messages; relative paths in it
    /// resolve against `name`'s directory as they would for a file.
    pub fn toml(mut self, name: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        self.file = Some(FileSource::Text { name: name.into(), text: text.into() });
        self
    }

    /// Adds environment variables; only `DISPY_*` ones are read. Pass [`process_env`] in a
    /// daemon and a literal list in tests.
    pub fn env<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env.extend(vars.into_iter().map(|(name, value)| (name.into(), value.into())));
        self
    }

    /// Sets `key` from its command-line flag (`--` + the key with dashes), when given.
    pub fn flag(mut self, key: &'static str, value: Option<impl Into<String>>) -> Self {
        if let Some(value) = value {
            self.flags.push((key, value.into()));
        }
        self
    }
}

/// The process's `DISPY_*` variables (non-Unicode text replaced, so it is refused visibly).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(name, value)| (name.to_string_lossy().into_owned(), value.to_string_lossy().into_owned()))
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect()
}

/// Where a value came from, for error messages and relative paths.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Origin {
    /// Set nowhere: the built-in default.
    #[default]
    Default,
    /// The config file (or inline text with this name).
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag, e.g. `--slots`.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// One value as written, before validation; the daemon's own rules decide what it means.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Setting {
    /// A string (every environment variable and flag is one).
    Text(String),
    /// A TOML integer.
    Integer(i64),
    /// A TOML float.
    Float(f64),
    /// A TOML boolean.
    Boolean(bool),
    /// Anything else (a table, an array, an out-of-range integer), described for messages.
    Other(&'static str),
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Text(text) => write!(f, "string {text:?}"),
            Setting::Integer(number) => write!(f, "integer {number}"),
            Setting::Float(number) => write!(f, "float {number:?}"),
            Setting::Boolean(flag) => write!(f, "boolean {flag}"),
            Setting::Other(what) => f.write_str(what),
        }
    }
}

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SettingVisitor)
    }
}

struct SettingVisitor;

impl<'de> Visitor<'de> for SettingVisitor {
    type Value = Setting;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any configuration value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Setting, E> {
        Ok(Setting::Boolean(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Setting, E> {
        Ok(Setting::Integer(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Setting, E> {
        Ok(i64::try_from(value).map_or(Setting::Other("an integer out of range"), Setting::Integer))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<Setting, E> {
        Ok(i64::try_from(value).map_or(Setting::Other("an integer out of range"), Setting::Integer))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<Setting, E> {
        Ok(i64::try_from(value).map_or(Setting::Other("an integer out of range"), Setting::Integer))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Setting, E> {
        Ok(Setting::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Setting, E> {
        Ok(Setting::Text(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Setting, E> {
        Ok(Setting::Text(value))
    }

    fn visit_none<E: de::Error>(self) -> Result<Setting, E> {
        Ok(Setting::Other("an empty value"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Setting, E> {
        Ok(Setting::Other("an empty value"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Setting, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Setting::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Setting, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Setting::Other("a table"))
    }
}

/// Where each key that was set came from; keys not listed are at their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(BTreeMap<String, Origin>);

impl Origins {
    /// Where `key` came from ([`Origin::Default`] when it was not set).
    pub fn of(&self, key: &str) -> Origin {
        self.0.get(key).cloned().unwrap_or_default()
    }
}

/// The dispatcher's settings as written: unvalidated values, their origins, and any unknown
/// keys already found. Validate it with `DispatcherSettings::try_from`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDispatcherConfig {
    /// See [`DispatcherSettings::listen`].
    pub listen: Option<Setting>,
    /// See [`DispatcherSettings::tls_dir`].
    pub tls_dir: Option<Setting>,
    /// See [`DispatcherSettings::state_dir`].
    pub state_dir: Option<Setting>,
    /// See [`DispatcherSettings::retention`].
    pub retention: Option<Setting>,
    /// See [`DispatcherSettings::node_timeout`].
    pub node_timeout: Option<Setting>,
    /// See [`DispatcherSettings::pipeline_depth`].
    pub pipeline_depth: Option<Setting>,
    /// See [`DispatcherSettings::max_message`].
    pub max_message: Option<Setting>,
    /// See [`DispatcherSettings::max_chunk`].
    pub max_chunk: Option<Setting>,
    /// See [`DispatcherSettings::max_payload`].
    pub max_payload: Option<Setting>,
    /// See [`DispatcherSettings::ca_dir`].
    pub ca_dir: Option<Setting>,
    /// See [`DispatcherSettings::enrolled_cert_validity`].
    pub enrolled_cert_validity: Option<Setting>,
    /// See [`DispatcherSettings::async_threads`].
    pub async_threads: Option<Setting>,
    /// See [`DispatcherSettings::log_format`].
    pub log_format: Option<Setting>,
    /// See [`DispatcherSettings::log_level`].
    pub log_level: Option<Setting>,
    /// Where each value came from.
    #[serde(skip)]
    pub origins: Origins,
    /// Unknown keys found while loading, reported with the invalid values by `try_from`.
    #[serde(skip)]
    pub unknown: Vec<KeyProblem>,
}

/// The node's settings as written: unvalidated values, their origins, and any unknown keys
/// already found. Validate it with `NodeSettings::try_from`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeConfig {
    /// See [`NodeSettings::dispatcher`].
    pub dispatcher: Option<Setting>,
    /// See [`NodeSettings::tls_dir`].
    pub tls_dir: Option<Setting>,
    /// See [`NodeSettings::slots`].
    pub slots: Option<Setting>,
    /// See [`NodeSettings::cache_dir`].
    pub cache_dir: Option<Setting>,
    /// See [`NodeSettings::shared_input_roots`].
    pub shared_input_roots: Option<Setting>,
    /// See [`NodeSettings::heartbeat_interval`].
    pub heartbeat_interval: Option<Setting>,
    /// See [`NodeSettings::health_log_interval`].
    pub health_log_interval: Option<Setting>,
    /// See [`NodeSettings::async_threads`].
    pub async_threads: Option<Setting>,
    /// See [`NodeSettings::log_format`].
    pub log_format: Option<Setting>,
    /// See [`NodeSettings::log_level`].
    pub log_level: Option<Setting>,
    /// Where each value came from.
    #[serde(skip)]
    pub origins: Origins,
    /// Unknown keys found while loading, reported with the invalid values by `try_from`.
    #[serde(skip)]
    pub unknown: Vec<KeyProblem>,
}

/// Merges the dispatcher's [`Sources`].
///
/// # Errors
/// [`ConfigError::Read`] when a required file (or an existing default one) cannot be read,
/// [`ConfigError::Syntax`] when it is not TOML. Unknown keys are not an error yet: they travel
/// in [`RawDispatcherConfig::unknown`] so validation reports them with every invalid value.
pub fn load_dispatcher(sources: &Sources) -> Result<RawDispatcherConfig, ConfigError> {
    let (raw, origins, unknown) = load::<RawDispatcherConfig>(sources, DISPATCHER_KEYS, NODE_KEYS)?;
    Ok(RawDispatcherConfig { origins, unknown, ..raw })
}

/// Merges the node's [`Sources`].
///
/// # Errors
/// As [`load_dispatcher`].
pub fn load_node(sources: &Sources) -> Result<RawNodeConfig, ConfigError> {
    let (raw, origins, unknown) = load::<RawNodeConfig>(sources, NODE_KEYS, DISPATCHER_KEYS)?;
    Ok(RawNodeConfig { origins, unknown, ..raw })
}

/// The dispatcher's validated settings; `dispatcher::config::DispatcherConfig` adds the loaded
/// TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherSettings {
    /// UDP address of the QUIC endpoint for nodes and clients.
    pub listen: SocketAddr,
    /// Directory with the dispatcher's `ca.pem`, `cert.pem` and `key.pem`.
    pub tls_dir: PathBuf,
    /// Where the journal, spooled chunk inputs and results, and payloads live, so a restarted
    /// dispatcher resumes unfinished jobs; systemd creates it (`StateDirectory=`).
    pub state_dir: PathBuf,
    /// How long a finished job's results are kept for `dispy-submit wait` to fetch.
    pub retention: Duration,
    /// A node silent this long is declared lost and its chunks requeued.
    pub node_timeout: Duration,
    /// Attempts queued per slot beyond the running one, so slots never wait for the network.
    pub pipeline_depth: u32,
    /// Largest control message accepted, bytes; bounds memory per peer message.
    pub max_message: usize,
    /// Largest chunk input or result accepted, bytes.
    pub max_chunk: usize,
    /// Largest payload accepted, bytes.
    pub max_payload: usize,
    /// The CA directory of `pki init` (`ca.pem`, `ca.key`), so the dispatcher can sign the
    /// certificates of nodes that enrol with a join token; `None` disables enrolment.
    pub ca_dir: Option<PathBuf>,
    /// Lifetime of certificates issued to enrolled (and renewing) nodes; short, because nodes
    /// renew on their own and a short life bounds what a stolen key is worth.
    pub enrolled_cert_validity: Duration,
    /// Threads of the async runtime (network, scheduling); `None` means one per logical core.
    /// One thread answers a chunk without waking another (lowest latency, for small clusters);
    /// more keep a dispatcher with thousands of nodes draining its socket.
    pub async_threads: Option<u32>,
    /// Text for a terminal, JSON for journald and jq.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,dispatcher=debug`; `RUST_LOG` wins.
    pub log_level: String,
    /// Where each key came from, so later checks (the TLS files) can name it.
    pub origins: Origins,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            tls_dir: PathBuf::from(DEFAULT_DISPATCHER_TLS_DIR),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            retention: DEFAULT_RETENTION,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            pipeline_depth: DEFAULT_PIPELINE_DEPTH,
            max_message: DEFAULT_MAX_MESSAGE,
            max_chunk: DEFAULT_MAX_CHUNK,
            max_payload: DEFAULT_MAX_PAYLOAD,
            ca_dir: None,
            enrolled_cert_validity: DEFAULT_ENROLLED_CERT_VALIDITY,
            async_threads: None,
            log_format: LogFormat::Text,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            origins: Origins::default(),
        }
    }
}

impl DispatcherSettings {
    /// An error for `key` found unusable after validation (say, unreadable certificates).
    pub fn invalid(&self, key: &'static str, reason: impl Into<String>) -> ConfigError {
        invalid("dispy-dispatcher", &self.origins, key, reason.into())
    }
}

impl TryFrom<RawDispatcherConfig> for DispatcherSettings {
    type Error = ConfigError;

    fn try_from(raw: RawDispatcherConfig) -> Result<Self, ConfigError> {
        let d = DispatcherSettings::default();
        let mut v = Validator::new(&raw.origins, raw.unknown.clone());
        let settings = DispatcherSettings {
            listen: v.check("listen", raw.listen, d.listen, socket_addr),
            tls_dir: v.check("tls_dir", raw.tls_dir, d.tls_dir, Validator::path),
            state_dir: v.check("state_dir", raw.state_dir, d.state_dir, Validator::path),
            retention: v.check("retention", raw.retention, d.retention, |_, s| {
                duration_within(s, Duration::from_secs(1), Duration::from_secs(365 * 86_400))
            }),
            node_timeout: v.check("node_timeout", raw.node_timeout, d.node_timeout, |_, s| {
                duration_within(s, Duration::from_secs(1), Duration::from_secs(3600))
            }),
            pipeline_depth: v.check("pipeline_depth", raw.pipeline_depth, d.pipeline_depth, |_, s| {
                integer_within(s, 0, 64)
            }),
            max_message: v.check("max_message", raw.max_message, d.max_message, |_, s| {
                size_within(s, 64 << 10, 64 << 20, "")
            }),
            max_chunk: v.check("max_chunk", raw.max_chunk, d.max_chunk, |_, s| {
                size_within(s, 1, 1023 << 20, " (nodes accept assignments up to 1GiB)")
            }),
            max_payload: v.check("max_payload", raw.max_payload, d.max_payload, |_, s| {
                size_within(s, 1, 256 << 20, " (nodes accept payloads up to 256MiB)")
            }),
            ca_dir: v.check("ca_dir", raw.ca_dir, d.ca_dir, |origin, s| Validator::path(origin, s).map(Some)),
            enrolled_cert_validity: v.check(
                "enrolled_cert_validity",
                raw.enrolled_cert_validity,
                d.enrolled_cert_validity,
                |_, s| duration_within(s, Duration::from_secs(3600), Duration::from_secs(365 * 86_400)),
            ),
            async_threads: v.check("async_threads", raw.async_threads, d.async_threads, async_threads),
            log_format: v.check("log_format", raw.log_format, d.log_format, log_format),
            log_level: v.check("log_level", raw.log_level, d.log_level, log_level),
            origins: raw.origins.clone(),
        };
        v.finish("dispy-dispatcher", settings)
    }
}

/// The node's validated settings; `node::config::NodeConfig` adds the loaded TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Dispatcher address, `host:port`; the host is resolved at each dial.
    pub dispatcher: String,
    /// Directory with this node's `ca.pem`, `cert.pem` and `key.pem`.
    pub tls_dir: PathBuf,
    /// Chunk slots; `None` means one per logical core.
    pub slots: Option<u32>,
    /// Where payloads are cached by hash, so each is shipped to this node once.
    pub cache_dir: PathBuf,
    /// Directories (shared storage mounted at the same path on every node) whose files
    /// shared-input jobs may have this node read; written like `PATH`, `/mnt/a:/mnt/b`. Empty,
    /// the default, refuses shared input.
    pub shared_input_roots: Vec<PathBuf>,
    /// How often to send a heartbeat; keep it well under the dispatcher's `node_timeout`.
    pub heartbeat_interval: Duration,
    /// How often to log a `node health` line for operators following the journal.
    pub health_log_interval: Duration,
    /// Threads of the async runtime (the dispatcher session, payload transfers); `None` means
    /// one per logical core. Chunks run on slot threads whatever this is.
    pub async_threads: Option<u32>,
    /// Text for a terminal, JSON for journald and jq.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,node=debug`; `RUST_LOG` wins.
    pub log_level: String,
    /// Where each key came from, so later checks (the TLS files) can name it.
    pub origins: Origins,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            dispatcher: DEFAULT_DISPATCHER_ADDRESS.to_owned(),
            tls_dir: PathBuf::from(DEFAULT_NODE_TLS_DIR),
            slots: None,
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            shared_input_roots: Vec::new(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            health_log_interval: DEFAULT_HEALTH_LOG_INTERVAL,
            async_threads: Some(DEFAULT_NODE_ASYNC_THREADS),
            log_format: LogFormat::Text,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            origins: Origins::default(),
        }
    }
}

impl NodeSettings {
    /// An error for `key` found unusable after validation (say, unreadable certificates).
    pub fn invalid(&self, key: &'static str, reason: impl Into<String>) -> ConfigError {
        invalid("dispy-node", &self.origins, key, reason.into())
    }
}

impl TryFrom<RawNodeConfig> for NodeSettings {
    type Error = ConfigError;

    fn try_from(raw: RawNodeConfig) -> Result<Self, ConfigError> {
        let d = NodeSettings::default();
        let mut v = Validator::new(&raw.origins, raw.unknown.clone());
        let settings = NodeSettings {
            dispatcher: v.check("dispatcher", raw.dispatcher, d.dispatcher, dispatcher_address),
            tls_dir: v.check("tls_dir", raw.tls_dir, d.tls_dir, Validator::path),
            slots: v.check("slots", raw.slots, d.slots, |_, s| integer_within(s, 1, 4096).map(Some)),
            cache_dir: v.check("cache_dir", raw.cache_dir, d.cache_dir, Validator::path),
            shared_input_roots: v.check(
                "shared_input_roots",
                raw.shared_input_roots,
                d.shared_input_roots,
                absolute_paths,
            ),
            heartbeat_interval: v.check(
                "heartbeat_interval",
                raw.heartbeat_interval,
                d.heartbeat_interval,
                |_, s| duration_within(s, Duration::from_millis(10), Duration::from_secs(60)),
            ),
            health_log_interval: v.check(
                "health_log_interval",
                raw.health_log_interval,
                d.health_log_interval,
                |_, s| duration_within(s, Duration::from_secs(1), Duration::from_secs(86_400)),
            ),
            async_threads: v.check("async_threads", raw.async_threads, d.async_threads, async_threads),
            log_format: v.check("log_format", raw.log_format, d.log_format, log_format),
            log_level: v.check("log_level", raw.log_level, d.log_level, log_level),
            origins: raw.origins.clone(),
        };
        v.finish("dispy-node", settings)
    }
}

/// Configuration that cannot be used; daemons exit with code 64 on it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read (a missing default file is not an error).
    #[error("failed to read config file {}: {}", path.display(), io_message(error))]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error; its text is already part of this error's message.
        error: io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {}: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The TOML parser's message, with the line and column.
        message: String,
    },
    /// The sources could not be merged for another reason (a bug rather than bad input).
    #[error("failed to load the configuration: {0}")]
    Load(String),
    /// Keys are unknown or invalid; every problem found is listed, one per line.
    #[error("invalid {program} configuration:{}", Problems(problems))]
    Keys {
        /// The daemon, e.g. `dispy-node`.
        program: &'static str,
        /// At least one problem, unknown keys first, then in documentation order.
        problems: Vec<KeyProblem>,
    },
}

/// One bad key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key is not one of this daemon's (typos would otherwise be silently ignored).
    #[error("{origin}: unknown key {key:?}{}", did_you_mean(*suggestion))]
    Unknown {
        /// Where it was written.
        origin: Origin,
        /// The key as written (lower-cased for variables).
        key: String,
        /// A key spelled similarly, if any.
        suggestion: Option<&'static str>,
    },
    /// The key's value has the wrong type or an invalid value.
    #[error("{origin}: key {key:?}: {reason}")]
    Invalid {
        /// Where the value was written.
        origin: Origin,
        /// The key.
        key: &'static str,
        /// What is wrong, naming the offending value.
        reason: String,
    },
}

/// Key problems, one per indented line.
struct Problems<'a>(&'a [KeyProblem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

fn invalid(program: &'static str, origins: &Origins, key: &'static str, reason: String) -> ConfigError {
    ConfigError::Keys {
        program,
        problems: vec![KeyProblem::Invalid { origin: origins.of(key), key, reason }],
    }
}

/// Merges `sources` for a daemon with `keys`; `other_keys` (the other daemon's) and
/// [`SHARED_VARIABLES`] are ignored in the environment. Returns the raw struct, the origins of
/// the keys set, and the unknown keys.
fn load<T>(
    sources: &Sources,
    keys: &[&'static str],
    other_keys: &[&str],
) -> Result<(T, Origins, Vec<KeyProblem>), ConfigError>
where
    T: for<'de> Deserialize<'de>,
{
    let mut unknown = Vec::new();
    let mut builder = config::Config::builder();

    let file_name = match &sources.file {
        None => None,
        Some(FileSource::Text { name, text }) => {
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
            Some(name.clone())
        }
        Some(FileSource::Path { path, required }) => match std::fs::read_to_string(path) {
            Ok(text) => {
                builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
                Some(path.clone())
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound && !required => None,
            Err(error) => return Err(ConfigError::Read { path: path.clone(), error }),
        },
    };

    // Only variables naming one of our keys reach the `config` crate; the rest are refused
    // here, unless another dispy program reads them.
    let mut env = config::Map::new();
    for (name, value) in &sources.env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
        if value.is_empty() {
            continue;
        }
        let key = rest.to_ascii_lowercase();
        let top = key.split(ENV_SEPARATOR).next().unwrap_or_default();
        if keys.contains(&top) {
            env.insert(name.clone(), value.clone());
        } else if !other_keys.contains(&top) && !SHARED_VARIABLES.contains(&name.as_str()) {
            unknown.push(KeyProblem::Unknown {
                origin: Origin::Env(name.clone()),
                suggestion: crate::messages::closest(keys, top),
                key,
            });
        }
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
            .prefix_separator("_")
            .separator(ENV_SEPARATOR)
            .ignore_empty(true)
            .source(Some(env)),
    );

    for (key, value) in &sources.flags {
        debug_assert!(keys.contains(key), "flag for unknown key {key}");
        builder = builder
            .set_override(*key, value.as_str())
            .map_err(|error| ConfigError::Load(error.to_string()))?;
    }

    let merged = builder.build().map_err(|error| match (error, &file_name) {
        (config::ConfigError::FileParse { cause, .. }, Some(file)) => {
            ConfigError::Syntax { file: file.clone(), message: cause.to_string().trim_end().to_owned() }
        }
        (error, _) => ConfigError::Load(error.to_string()),
    })?;
    let mut table = config::Source::collect(&merged).map_err(|error| ConfigError::Load(error.to_string()))?;

    let mut origins = BTreeMap::new();
    let mut names: Vec<String> = table.keys().cloned().collect();
    names.sort();
    for name in names {
        let Some(&key) = keys.iter().find(|known| **known == name) else {
            // Variables were sorted out above, and flags only name known keys.
            table.remove(&name);
            unknown.push(KeyProblem::Unknown {
                origin: file_name.clone().map_or(Origin::Default, Origin::File),
                suggestion: crate::messages::closest(keys, &name),
                key: name,
            });
            continue;
        };
        let from_env = table.get(key).and_then(config::Value::origin) == Some("the environment");
        let origin = if sources.flags.iter().any(|(flag, _)| *flag == key) {
            Origin::Flag(format!("--{}", key.replace('_', "-")))
        } else if from_env {
            Origin::Env(format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()))
        } else {
            file_name.clone().map_or(Origin::Default, Origin::File)
        };
        origins.insert(key.to_owned(), origin);
    }

    let raw: T = config::Value::new(None, config::ValueKind::Table(table))
        .try_deserialize()
        .map_err(|error| ConfigError::Load(error.to_string()))?;
    Ok((raw, Origins(origins), unknown))
}

/// Collects a [`KeyProblem`] for each bad value while building settings.
struct Validator<'a> {
    origins: &'a Origins,
    problems: Vec<KeyProblem>,
}

impl<'a> Validator<'a> {
    fn new(origins: &'a Origins, unknown: Vec<KeyProblem>) -> Self {
        Self { origins, problems: unknown }
    }

    /// Parses `value` of `key`, or keeps `default` when it is absent or (with a problem
    /// recorded) invalid.
    fn check<T>(
        &mut self,
        key: &'static str,
        value: Option<Setting>,
        default: T,
        parse: impl FnOnce(&Origin, Setting) -> Result<T, String>,
    ) -> T {
        let Some(value) = value else { return default };
        let origin = self.origins.of(key);
        match parse(&origin, value) {
            Ok(value) => value,
            Err(reason) => {
                self.problems.push(KeyProblem::Invalid { origin, key, reason });
                default
            }
        }
    }

    /// A non-empty path; relative paths in a file resolve against the file's directory.
    fn path(origin: &Origin, value: Setting) -> Result<PathBuf, String> {
        let text = text(value)?;
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        let path = PathBuf::from(text);
        Ok(match origin {
            Origin::File(file) if path.is_relative() => file.parent().unwrap_or(Path::new("")).join(path),
            _ => path,
        })
    }

    fn finish<T>(self, program: &'static str, settings: T) -> Result<T, ConfigError> {
        let mut problems = self.problems;
        if problems.is_empty() {
            return Ok(settings);
        }
        let rank = |problem: &KeyProblem| match problem {
            KeyProblem::Unknown { key, .. } => (0, key.clone()),
            KeyProblem::Invalid { key, .. } => {
                let keys = if program == "dispy-node" { NODE_KEYS } else { DISPATCHER_KEYS };
                (1 + keys.iter().position(|known| known == key).unwrap_or(keys.len()), String::new())
            }
        };
        problems.sort_by_key(rank);
        Err(ConfigError::Keys { program, problems })
    }
}

fn text(value: Setting) -> Result<String, String> {
    match value {
        Setting::Text(text) => Ok(text),
        other => Err(format!("expected a string, found {other}")),
    }
}

fn socket_addr(_: &Origin, value: Setting) -> Result<SocketAddr, String> {
    let text = text(value)?;
    text.trim()
        .parse()
        .map_err(|_| format!("expected an IP address and port such as \"0.0.0.0:7870\", found {text:?}"))
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

/// A whole number in `min..=max`, from an integer or (environment, flags) a string.
fn integer_within(value: Setting, min: u32, max: u32) -> Result<u32, String> {
    let number = match value {
        Setting::Integer(number) => number,
        Setting::Text(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("expected a whole number, found string {text:?}"))?,
        other => return Err(format!("expected a whole number, found {other}")),
    };
    match u32::try_from(number) {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ => Err(format!("must be between {min} and {max}, found {number}")),
    }
}

/// A duration in `min..=max`, from a string such as "30s" or an integer number of seconds.
fn duration_within(value: Setting, min: Duration, max: Duration) -> Result<Duration, String> {
    let duration = match value {
        Setting::Text(text) => parse_duration(&text).map_err(|error| error.to_string())?,
        Setting::Integer(seconds) => u64::try_from(seconds)
            .map(Duration::from_secs)
            .map_err(|_| format!("expected a duration such as \"30s\", found {seconds}"))?,
        other => {
            return Err(format!("expected a duration such as \"30s\" or a number of seconds, found {other}"))
        }
    };
    if (min..=max).contains(&duration) {
        Ok(duration)
    } else {
        Err(format!("must be between {min:?} and {max:?}, found {duration:?}"))
    }
}

/// A byte size in `min..=max`, from a string such as "1MiB" or an integer number of bytes.
fn size_within(value: Setting, min: usize, max: usize, why: &str) -> Result<usize, String> {
    let size = match value {
        Setting::Text(text) => parse_size(&text).map_err(|error| error.to_string())?,
        Setting::Integer(bytes) => {
            u64::try_from(bytes).map_err(|_| format!("expected a size such as \"1MiB\", found {bytes}"))?
        }
        other => return Err(format!("expected a size such as \"1MiB\" or a number of bytes, found {other}")),
    };
    match usize::try_from(size) {
        Ok(size) if (min..=max).contains(&size) => Ok(size),
        _ => Err(format!(
            "must be between {} and {}{why}, found {}",
            exact_size(min as u64),
            exact_size(max as u64),
            exact_size(size)
        )),
    }
}

/// A byte count in the largest binary unit that divides it, as written in config files.
fn exact_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 3] = [(30, "GiB"), (20, "MiB"), (10, "KiB")];
    UNITS
        .iter()
        .find(|(shift, _)| bytes != 0 && bytes.is_multiple_of(1 << shift))
        .map_or_else(|| format!("{bytes}B"), |(shift, unit)| format!("{}{unit}", bytes >> shift))
}

fn log_format(_: &Origin, value: Setting) -> Result<LogFormat, String> {
    text(value)?.parse()
}

/// A thread count for the async runtime.
fn async_threads(_: &Origin, value: Setting) -> Result<Option<u32>, String> {
    integer_within(value, 1, 1024).map(Some)
}

/// An `EnvFilter` directive, checked now so a typo is refused rather than logging nothing.
fn log_level(_: &Origin, value: Setting) -> Result<String, String> {
    let text = text(value)?;
    if text.trim().is_empty() {
        return Err("must not be empty; use \"info\" for the default".to_owned());
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(&text)
        .map(|_| text.clone())
        .map_err(|error| format!("invalid log filter {text:?}: {error}"))
}

/// " (did you mean "KEY"?)" for an unknown key, if a known one is close.
fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map(|key| format!(" (did you mean {key:?}?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests;
