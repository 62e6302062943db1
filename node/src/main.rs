//! `dispy-node`: the worker daemon's command line. Parses flags, sets up logging, and runs
//! [`node::daemon::run`] until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use common::telemetry::LogFormat;
use node::daemon::NodeConfig;

/// Exit code for unusable configuration (EX_CONFIG-like, as sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// The dispy worker daemon: dials the dispatcher, advertises this machine and runs chunks.
#[derive(Debug, Parser)]
#[command(name = "dispy-node", version)]
struct Args {
    /// Dispatcher address, host:port.
    #[arg(long, env = "DISPY_DISPATCHER", default_value = "127.0.0.1:7870")]
    dispatcher: String,
    /// Directory with this node's ca.pem, cert.pem and key.pem (from `dispy-dispatcher pki issue-node`).
    #[arg(long, env = "DISPY_TLS_DIR", default_value = "/etc/dispy/tls")]
    tls_dir: PathBuf,
    /// Chunk slots; defaults to the number of logical cores.
    #[arg(long, env = "DISPY_SLOTS")]
    slots: Option<u32>,
    /// Payload cache directory.
    #[arg(long, env = "DISPY_CACHE_DIR", default_value = "/var/lib/dispy-node/cache")]
    cache_dir: PathBuf,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Log format: text or json.
    #[arg(long, env = "DISPY_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::telemetry::init(args.log_format, "info");
    let config = match config_from(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dispy-node: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dispy-node: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(node::daemon::run(config, common::signal::shutdown())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispy-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_from(args: &Args) -> anyhow::Result<NodeConfig> {
    if args.slots == Some(0) {
        anyhow::bail!("--slots must be at least 1");
    }
    let identity = common::pki::Identity::load(&args.tls_dir).context("failed to load the node's TLS identity")?;
    Ok(NodeConfig {
        dispatcher: args.dispatcher.clone(),
        identity,
        slots: args.slots,
        cache_dir: args.cache_dir.clone(),
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms.max(10)),
        health_log_interval: Duration::from_secs(30),
    })
}
