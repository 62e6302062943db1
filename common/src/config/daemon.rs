//! The settings both daemons have, one [`DaemonSettings`] embedded in each daemon's settings:
//! its TLS directory, its async runtime and its logging, and where each key came from so that a
//! later check (loading the TLS files) names the key's origin as validation does.

use std::path::PathBuf;

use super::values::{integer_within, text, Validator};
use super::{ConfigError, Key, KeyProblem, Origin, Origins, Setting};
use crate::telemetry::LogFormat;

/// Default `log_level` (an `EnvFilter` directive; `RUST_LOG` wins when set).
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The `log_format` row of both daemons' tables; the other shared keys' rows differ in their
/// help (the defaults and examples are each daemon's own).
pub(super) const LOG_FORMAT: Key =
    Key { name: "log_format", value_name: "FORMAT", help: "Log format: text or json [default: text]" };

/// What every daemon reads besides its own keys; `common::daemon::prepare` starts logging and
/// the runtime from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// The daemon, e.g. `dispy-node`, for messages.
    pub program: &'static str,
    /// Directory with this daemon's `ca.pem`, `cert.pem` and `key.pem`.
    pub tls_dir: PathBuf,
    /// Threads of the async runtime (the network, and the dispatcher's scheduling); `None` means
    /// one per logical core. One thread answers a message without waking another (lowest
    /// latency, for small clusters); more keep a dispatcher with thousands of nodes draining its
    /// socket. A node's chunks run on slot threads whatever this is.
    pub async_threads: Option<u32>,
    /// Text for a terminal, JSON for journald and jq.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,node=debug`; `RUST_LOG` wins.
    pub log_level: String,
    /// Where each key came from, so later checks (the TLS files) can name it.
    pub origins: Origins,
}

impl DaemonSettings {
    /// Reads the shared keys for `program`, whose defaults for `tls_dir` and `async_threads`
    /// differ (the log keys' are the same).
    pub(super) fn read(
        v: &mut Validator,
        program: &'static str,
        tls_dir: &str,
        async_threads: Option<u32>,
    ) -> Self {
        Self {
            program,
            tls_dir: v.check("tls_dir", PathBuf::from(tls_dir), Validator::path),
            async_threads: v.check("async_threads", async_threads, |_, s| integer_within(s, 1, 1024).map(Some)),
            log_format: v.check("log_format", LogFormat::Text, log_format),
            log_level: v.check("log_level", DEFAULT_LOG_LEVEL.to_owned(), log_level),
            origins: v.origins().clone(),
        }
    }

    /// An error for `key` found unusable after validation (say, unreadable certificates).
    pub fn invalid(&self, key: &'static str, reason: impl Into<String>) -> ConfigError {
        let problem = KeyProblem::Invalid { origin: self.origins.of(key), key, reason: reason.into() };
        ConfigError::Keys { program: self.program, problems: vec![problem] }
    }
}

/// `text` or `json`.
fn log_format(_: &Origin, value: Setting) -> Result<LogFormat, String> {
    text(value)?.parse()
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
