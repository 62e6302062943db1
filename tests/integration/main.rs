//! Cross-process integration tests: real `dispy-dispatcher`, `dispy-node` and `dispy-submit`
//! binaries on 127.0.0.1, with certificates from the real `pki` commands. One test binary with a
//! module per concern; the harness (`tests::Cluster` and friends) lives in `tests/src/lib.rs`.
//!
//! - `jobs`: distributed output equals the serial run for every split rule; `nodes` listings.
//! - `cli`: every command's `--json`, `last`, exit codes 0, 1, 2 and 64, completions, man page.
//! - `security`: certificates from another CA and certificates of the wrong role are refused.
//! - `revocation`: `pki issue-admin` and `--days`; revoked nodes, clients and operators are
//!   refused and their open connections closed, until unrevoked.
//! - `protocol`: hostile frames and versions end only their own connection.
//! - `deploy`: systemd units verify; install scripts stage idempotently and uninstall.
//! - `durability`: dispatcher restarts, detached jobs, bounded memory, a full disk, retention.
//! - `operator_state`: drains and revocations across restarts, jobs waiting for a first node,
//!   a torn journal checked and repaired.
//! - `reconnect`: `run`, `wait` and `stream` reconnect across a SIGKILLed and restarted
//!   dispatcher (an upload resumes), and give up after `--reconnect-timeout` with exit code 2.
//! - `faults`: a multi-host bed in network namespaces: killed, cut-off, slow and drained nodes;
//!   the dispatcher SIGKILLed and restarted, or cut off for 3 s, with no chunk run twice.
//! - `cancel`: a cancelled job, and the losing original of a speculated straggler, stop at once.
//! - `failures`: payloads that trap, loop, hog memory or fail, and one-line usage errors.
//! - `local`: `dispy-submit run --local` runs the examples with no setup.
//! - `native`: C payloads as `.so` and `.wasm` match the WAT; foreign libraries are refused.
//! - `confinement`: a hostile native payload is denied the node's secrets, cache and network;
//!   nodes that disable or cannot confine native payloads refuse them and are named.
//! - `stream`: jobs fed chunk by chunk through `Client::open`.
//! - `tenants`: ownership, operators and quotas between two clients.
//! - `operations`: the one-command node install with a join token, the dispatcher's certificate
//!   reloaded under a running job, expiry warnings, `check-config`.
//! - `stop`: SIGTERM drains a node (its running chunks finish and never run again); a second
//!   SIGTERM or `stop_timeout` cancels what is left, requeued at once; `drain --wait`.
//! - `observability`: `/metrics` of the dispatcher and a node parsed by Prometheus parsers, the
//!   HTTP access rule (loopback, or a bearer token), the status page in headless Chromium.
//! - `load`: 100 submissions at once, the dispatcher's memory over 200 payloads, node cache
//!   eviction.
//! - `same_host`: input files every node can read are read in place, not shipped, unless
//!   `--ship-input`; a node without the root makes the submitter ship, or rejects the job when
//!   it joins later; a file changed after submission is refused, never read.
//! - `observe`: attempt logs (`dispy.log`, native stdout and stderr) through `logs`, and
//!   `explain` on a waiting and a failed job, with `--json` parsed.

mod cli;
mod confinement;
mod cancel;
mod deploy;
mod failures;
mod jobs;
mod load;
mod local;
mod native;
mod observe;
mod observability;
mod operations;
mod protocol;
mod reconnect;
mod reduce;
mod same_host;
mod revocation;
mod security;
mod stop;
mod stream;
mod tenants;
mod durability;
mod object_input;
mod operator_state;
mod faults;
