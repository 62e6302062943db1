//! Daemon configuration: the only module that touches the `config` crate.
//!
//! Each daemon's settings come from three sources, later ones winning key by key: a TOML file
//! (`/etc/dispy/dispatcher.toml` or `/etc/dispy/node.toml`, or `--config FILE`), `DISPY_*`
//! environment variables (`DISPY_SLOTS=4` sets `slots`; `__` separates nested keys, as in
//! `DISPY_TENANTS__ALICE__WEIGHT`), and command-line flags (`--slots 4`). [`load_dispatcher`] and
//! [`load_node`] merge the [`Sources`] into a [`RawConfig`] that keeps every value as written
//! ([`Setting`]) and where it came from ([`Origin`]), refusing keys the daemon does not have;
//! `TryFrom` turns it into validated [`DispatcherSettings`] or [`NodeSettings`], reporting every
//! unknown or invalid key at once, each naming its file, variable or flag, the key and the
//! reason. The daemons then build their own `DispatcherConfig` / `NodeConfig` from the settings
//! (loading the TLS identity), so everything here is pure and testable from inline TOML.
//!
//! Each daemon's keys are one table of [`Key`]s ([`DISPATCHER_KEYS`], [`NODE_KEYS`]): the known
//! keys, their `DISPY_*` variables, their flags (built by `common::daemon::parse_args`) and the
//! order problems are reported in all come from it, so a key is written in its table row, its
//! settings field and the one line that validates it (plus its paragraph in `deploy/*.toml`).
//! The settings both daemons have are one [`DaemonSettings`], embedded in each.
//!
//! A `DISPY_*` variable that names no key of this daemon is refused like an unknown file key,
//! unless another dispy program reads it ([`SHARED_VARIABLES`]): the namespace is shared, and a
//! shell that exports `DISPY_DISPATCHER` for `dispy-submit` must still be able to start a
//! dispatcher. Empty variables count as unset.

mod daemon;
mod dispatcher;
mod node;
mod sources;
mod tenants;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::path::PathBuf;

use thiserror::Error;

use crate::messages::io_message;

pub use daemon::{DaemonSettings, DEFAULT_LOG_LEVEL};
pub use dispatcher::{
    DispatcherSettings, DEFAULT_CRASH_LIMIT, DEFAULT_DISPATCHER_TLS_DIR, DEFAULT_ENROLLED_CERT_VALIDITY,
    DEFAULT_INPUT_GRACE, DEFAULT_LISTEN, DEFAULT_MAX_CHUNK, DEFAULT_MAX_MESSAGE, DEFAULT_MAX_PAYLOAD, DEFAULT_NODE_TIMEOUT,
    DEFAULT_REATTACH_GRACE,
    DEFAULT_PAYLOAD_MEMORY_CAP, DEFAULT_PIPELINE_DEPTH, DEFAULT_PORT, DEFAULT_RETENTION, DEFAULT_STATE_DIR,
    DISPATCHER_KEYS,
};
pub use node::{
    NodeSettings, DEFAULT_CACHE_DIR, DEFAULT_CACHE_MAX_BYTES, DEFAULT_PAYLOAD_USER, DEFAULT_SCRATCH_DIR,
    DEFAULT_DISPATCHER_ADDRESS, DEFAULT_HEALTH_LOG_INTERVAL, DEFAULT_STOP_TIMEOUT,
    DEFAULT_DISPATCHER_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_NODE_ASYNC_THREADS, DEFAULT_NODE_TLS_DIR, NODE_KEYS,
};
pub use sources::{process_env, Flags, Sources};
pub use tenants::{TenantLimits, TenantSettings};
pub use values::Setting;

/// The dispatcher's config file when `--config` is not given; it may be absent.
pub const DEFAULT_DISPATCHER_FILE: &str = "/etc/dispy/dispatcher.toml";
/// The node's config file when `--config` is not given; it may be absent.
pub const DEFAULT_NODE_FILE: &str = "/etc/dispy/node.toml";
/// Environment variables with this prefix override file keys: `DISPY_` + the key upper-cased.
pub const ENV_PREFIX: &str = "DISPY_";
/// Separates nested keys in variable names (`DISPY_A__B` is `a.b`), as in the `tenants` table.
pub const ENV_SEPARATOR: &str = "__";
/// `DISPY_*` variables read by other dispy programs, ignored by a daemon that has no such key
/// (besides the other daemon's keys): `dispy-submit` reads `DISPY_DISPATCHER`, `DISPY_TLS_DIR`
/// and `DISPY_RECONNECT_TIMEOUT`, the test suite `DISPY_TEST_LOG`, `DISPY_TEST_STRICT` and
/// `DISPY_TEST_MOTO` (CI exports the last two, and daemons started from that shell must still
/// run).
pub const SHARED_VARIABLES: &[&str] = &[
    "DISPY_DISPATCHER",
    "DISPY_TLS_DIR",
    "DISPY_RECONNECT_TIMEOUT",
    "DISPY_TEST_LOG",
    "DISPY_TEST_STRICT",
    "DISPY_TEST_MOTO",
];

/// One key of a daemon: the row of its table that everything but validation is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The key in a config file, e.g. `node_timeout`; its variable is `DISPY_NODE_TIMEOUT` and
    /// its flag `--node-timeout`.
    pub name: &'static str,
    /// What the flag's value is, for `--help` (`DURATION`, `DIR`, ...).
    pub value_name: &'static str,
    /// The flag's `--help` line, ending with the default in brackets (no full stop, as clap
    /// prints derived help).
    pub help: &'static str,
}

impl Key {
    /// The environment variable that sets this key, e.g. `DISPY_NODE_TIMEOUT`.
    pub fn env(&self) -> String {
        format!("{ENV_PREFIX}{}", self.name.to_ascii_uppercase())
    }

    /// The command-line flag that sets this key, without the dashes, e.g. `node-timeout`.
    pub fn long(&self) -> String {
        self.name.replace('_', "-")
    }
}

/// The names of `keys`, in table order.
fn names(keys: &[Key]) -> Vec<&'static str> {
    keys.iter().map(|key| key.name).collect()
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

/// Where each key that was set came from; keys not listed are at their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(BTreeMap<String, Origin>);

impl Origins {
    /// Where `key` came from ([`Origin::Default`] when it was not set).
    pub fn of(&self, key: &str) -> Origin {
        self.0.get(key).cloned().unwrap_or_default()
    }
}

/// A daemon's settings as written, `S` being the settings they are for: the values of its known
/// keys, unvalidated, their origins, and any unknown keys already found. Validate it with
/// `S::try_from`.
#[derive(Debug, Clone)]
pub struct RawConfig<S> {
    /// Each key that was set, as written.
    values: BTreeMap<String, Setting>,
    /// Where each value came from.
    origins: Origins,
    /// Unknown keys found while loading, reported with the invalid values by `try_from`.
    unknown: Vec<KeyProblem>,
    settings: PhantomData<fn() -> S>,
}

impl<S> Default for RawConfig<S> {
    /// Nothing set: every key at its default.
    fn default() -> Self {
        Self { values: BTreeMap::new(), origins: Origins::default(), unknown: Vec::new(), settings: PhantomData }
    }
}

/// Merges the dispatcher's [`Sources`].
///
/// # Errors
/// [`ConfigError::Read`] when a required file (or an existing default one) cannot be read,
/// [`ConfigError::Syntax`] when it is not TOML. Unknown keys are not an error yet: they travel
/// in the [`RawConfig`] so validation reports them with every invalid value.
pub fn load_dispatcher(sources: &Sources) -> Result<RawConfig<DispatcherSettings>, ConfigError> {
    sources::load(sources, DISPATCHER_KEYS, NODE_KEYS)
}

/// Merges the node's [`Sources`].
///
/// # Errors
/// As [`load_dispatcher`].
pub fn load_node(sources: &Sources) -> Result<RawConfig<NodeSettings>, ConfigError> {
    sources::load(sources, NODE_KEYS, DISPATCHER_KEYS)
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

/// " (did you mean "KEY"?)" for an unknown key, if a known one is close.
fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map(|key| format!(" (did you mean {key:?}?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests;
