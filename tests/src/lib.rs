//! The harness for dispy's cross-process tests: real `dispy-dispatcher`, `dispy-node` and
//! `dispy-submit` processes talking QUIC on 127.0.0.1, with certificates made by the real
//! `dispy-dispatcher pki` commands.
//!
//! [`binary`] finds the workspace binaries next to the test executable and builds them once per
//! test process (`$CARGO build --workspace --bins`), so a test never runs a stale binary. A
//! [`Cluster`] is a scenario builder: a temporary directory, a CA, a dispatcher on a free port and
//! N nodes, each a child process whose output goes to a log file in that directory. Dropping a
//! cluster kills its processes, and when the test is panicking it prints their logs first, so a
//! failing test leaves no processes behind and shows what the daemons said. [`Cluster::submit`]
//! runs `dispy-submit` with the cluster's client identity and returns a [`Run`] (exit code,
//! stdout, stderr) whose `check_*` methods panic with everything relevant. [`assert_eventually!`]
//! polls a condition instead of sleeping. [`serial_output`] runs a payload over its chunks in
//! this process, the reference that distributed output must equal byte for byte, and
//! [`RawClient`] speaks QUIC to the dispatcher directly for hostile-input tests.
//!
//! A test that needs something the machine may lack (root, `ip netns`, a tmpfs mount, `cc`,
//! `clang`, `systemd-analyze`, `chromium`, python3-prometheus-client) calls [`skip`] when it is
//! missing: one `SKIPPED <test>: <why>` line and an early return, or a failure with the same
//! reason under `DISPY_TEST_STRICT=1`, which CI sets so that nothing passes there by not running.
//!
//! Children get `RUST_LOG` from `DISPY_TEST_LOG` (default `info`), none of the caller's `DISPY_*`
//! variables, and daemons an explicit empty config file and state directories in the cluster's
//! directory, so neither a developer's environment nor `/etc/dispy` can change what tests see.
//!
//! One concern per module, each re-exported here so tests name everything as `tests::…`:
//! `binaries` (finding and building the workspace binaries, [`command`]), `run` ([`Run`], a
//! captured finished command), `pki` ([`Pki`], [`certificate_of`]), `daemon` ([`Daemon`], a long-running child with a
//! log file), `cluster` ([`Cluster`] and its builder), `job` ([`Job`], `dispy-submit run` flags),
//! `data` (serial references, byte comparisons, generated inputs), `http` ([`http_get`] for `/metrics`
//! and the status page) and `raw_client` ([`RawClient`]).
//! [`netns`] and [`durable`] hold the multi-host and durability scenario builders; [`s3`] and
//! [`https`] the object stores and web servers object input is read from.

pub mod durable;
pub mod https;
pub mod netns;
pub mod s3;

mod binaries;
mod cluster;
mod daemon;
mod data;
mod http;
mod job;
mod pki;
mod raw_client;
mod run;

use std::io::Write as _;
use std::time::{Duration, Instant};

pub use binaries::{binary, command, example, fixture, native_fixture, workspace_root};
pub use cluster::{Cluster, ClusterBuilder};
pub(crate) use daemon::signal;
pub use daemon::{free_udp_port, proc_status_bytes, Daemon};
pub use data::{check_same_bytes, dir_entries, pseudo_random_bytes, serial_output, serial_reduce};
pub use http::{free_tcp_port, http_get, HttpReply};
pub use job::Job;
pub use pki::{certificate_of, Certificate, Pki};
pub use raw_client::{block_on, RawClient};
pub use run::Run;

/// How long [`assert_eventually!`] polls before it fails.
pub const EVENTUALLY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one `dispy-submit` may run before [`Cluster::submit`] kills it and reports a hang.
/// A guard against a stuck job blocking the suite, not a performance expectation.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// How often polling helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls a boolean expression until it holds or [`EVENTUALLY_TIMEOUT`] passes, then panics
/// with the given message. Use it instead of sleeping for a state to arrive.
///
/// ```no_run
/// # let cluster = tests::Cluster::start(1);
/// let listening = || cluster.dispatcher_log().contains("listening");
/// tests::assert_eventually!(listening(), "the dispatcher never listened");
/// ```
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($message:tt)+) => {
        if !$crate::poll_until($crate::EVENTUALLY_TIMEOUT, || $cond) {
            panic!($($message)+);
        }
    };
}

/// Calls `cond` every [`POLL_INTERVAL`] until it returns true (then returns true) or `timeout`
/// passes (then returns false). The engine of [`assert_eventually!`].
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Reports that `test` (its function name) cannot run on this machine because of `why` (a
/// missing tool or privilege): prints the one line `SKIPPED <test>: <why>` straight to stderr,
/// past libtest's capture so every run shows it, and returns for the test to return early.
///
/// # Panics
/// With the same reason when `DISPY_TEST_STRICT=1` is set (as `.ci/run` does), where a test
/// that cannot run is a failure rather than a silent pass.
#[track_caller]
pub fn skip(test: &str, why: &str) {
    let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
    let strict = std::env::var("DISPY_TEST_STRICT").is_ok_and(|v| v == "1");
    assert!(!strict, "{test} cannot run: {why} (DISPY_TEST_STRICT=1 makes this a failure, not a skip)");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}
