//! `dispy-dispatcher`: the daemon's command line, plus the `pki` commands that create the
//! cluster CA and issue certificates. The logic lives in the `dispatcher` library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::pki::CertificateAuthority;
use common::proto::Role;
use common::telemetry::LogFormat;
use dispatcher::config::{DispatcherConfig, DEFAULT_PORT};
use dispatcher::server::Dispatcher;

/// Exit code for unusable configuration or arguments.
const EXIT_CONFIG: u8 = 64;

/// The dispy dispatcher: schedules jobs' chunks onto nodes over QUIC.
#[derive(Debug, Parser)]
#[command(name = "dispy-dispatcher", version)]
struct Args {
    /// UDP address to listen on.
    #[arg(long, env = "DISPY_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
    listen: SocketAddr,
    /// Directory with the dispatcher's ca.pem, cert.pem and key.pem (from `pki init`).
    #[arg(long, env = "DISPY_TLS_DIR", default_value = "/etc/dispy/tls")]
    tls_dir: PathBuf,
    /// Seconds of heartbeat silence after which a node is declared lost.
    #[arg(long, default_value_t = 5)]
    node_timeout_secs: u64,
    /// Log format: text or json.
    #[arg(long, env = "DISPY_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the cluster CA and issue certificates.
    Pki {
        #[command(subcommand)]
        action: PkiAction,
    },
}

#[derive(Debug, Subcommand)]
enum PkiAction {
    /// Create a CA in DIR (ca.pem, ca.key) and the dispatcher's identity in DIR/dispatcher.
    Init {
        /// Where the CA lives.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a node certificate into DIR/nodes/NAME (or --out).
    IssueNode {
        /// The node's name.
        name: String,
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Where to write ca.pem, cert.pem and key.pem.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Issue a client certificate into DIR/clients/NAME (or --out).
    IssueClient {
        /// The client's name.
        name: String,
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Where to write ca.pem, cert.pem and key.pem.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::telemetry::init(args.log_format, "info");
    if let Some(Command::Pki { action }) = &args.command {
        return match pki(action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dispy-dispatcher: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match config_from(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dispy-dispatcher: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dispy-dispatcher: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let dispatcher = Dispatcher::bind(config)?;
        dispatcher.run(common::signal::shutdown()).await;
        Ok::<_, dispatcher::server::ServeError>(())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispy-dispatcher: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_from(args: &Args) -> anyhow::Result<DispatcherConfig> {
    let identity = common::pki::Identity::load(&args.tls_dir).context("failed to load the dispatcher's TLS identity")?;
    if args.node_timeout_secs == 0 {
        anyhow::bail!("--node-timeout-secs must be at least 1");
    }
    let mut config = DispatcherConfig::new(args.listen, identity);
    config.node_timeout = std::time::Duration::from_secs(args.node_timeout_secs);
    Ok(config)
}

fn pki(action: &PkiAction) -> anyhow::Result<()> {
    match action {
        PkiAction::Init { dir } => {
            let ca = CertificateAuthority::generate("dispy")?;
            ca.save(dir)?;
            let out = dir.join("dispatcher");
            ca.issue_to_dir(Role::Dispatcher, "dispatcher", &out)?;
            println!("created CA in {} and the dispatcher identity in {}", dir.display(), out.display());
        }
        PkiAction::IssueNode { name, dir, out } => issue(Role::Node, name, dir, out.as_deref(), "nodes")?,
        PkiAction::IssueClient { name, dir, out } => issue(Role::Client, name, dir, out.as_deref(), "clients")?,
    }
    Ok(())
}

fn issue(role: Role, name: &str, dir: &Path, out: Option<&Path>, folder: &str) -> anyhow::Result<()> {
    let ca = CertificateAuthority::load(dir).context("failed to load the CA (run `dispy-dispatcher pki init` first)")?;
    let out = out.map_or_else(|| dir.join(folder).join(name), Path::to_path_buf);
    ca.issue_to_dir(role, name, &out)?;
    println!("issued {role} certificate {name:?} into {}", out.display());
    Ok(())
}
