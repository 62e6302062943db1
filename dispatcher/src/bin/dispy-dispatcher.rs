//! `dispy-dispatcher`: the daemon's command line, plus the `pki` commands that create the
//! cluster CA and issue certificates. The logic lives in the `dispatcher` library; the settings
//! come from `common::config` (file, then `DISPY_*` variables, then these flags).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::config::{DispatcherSettings, Sources};
use common::pki::CertificateAuthority;
use common::proto::Role;
use common::telemetry::LogFormat;
use dispatcher::config::DispatcherConfig;
use dispatcher::server::Dispatcher;

/// Exit code for unusable configuration or arguments (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// The dispy dispatcher: schedules jobs' chunks onto nodes over QUIC.
///
/// Settings come from the config file, then DISPY_* environment variables (DISPY_LISTEN,
/// DISPY_NODE_TIMEOUT, ...), then these flags; deploy/dispatcher.toml documents every key.
#[derive(Debug, Parser)]
#[command(name = "dispy-dispatcher", version)]
struct Args {
    /// Config file [default: /etc/dispy/dispatcher.toml, which may be absent].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// UDP address to listen on [default: 0.0.0.0:7870].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory with the dispatcher's ca.pem, cert.pem and key.pem (from `pki init`)
    /// [default: /etc/dispy/dispatcher].
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<String>,
    /// Where the journal, spooled chunks and payloads live [default: /var/lib/dispy-dispatcher].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<String>,
    /// How long a finished job's results are kept for `dispy-submit wait` [default: 24h].
    #[arg(long, value_name = "DURATION")]
    retention: Option<String>,
    /// Heartbeat silence after which a node is declared lost [default: 5s].
    #[arg(long, value_name = "DURATION")]
    node_timeout: Option<String>,
    /// Chunks queued per slot beyond the running one [default: 2].
    #[arg(long, value_name = "N")]
    pipeline_depth: Option<String>,
    /// Largest control message accepted [default: 1MiB].
    #[arg(long, value_name = "SIZE")]
    max_message: Option<String>,
    /// Largest chunk input or result accepted [default: 256MiB].
    #[arg(long, value_name = "SIZE")]
    max_chunk: Option<String>,
    /// Largest payload accepted [default: 256MiB].
    #[arg(long, value_name = "SIZE")]
    max_payload: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter such as info or info,dispatcher=debug; RUST_LOG wins [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
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
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(Command::Pki { action }) = &args.command {
        common::telemetry::init(LogFormat::Text, "info");
        return match pki(action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dispy-dispatcher: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let loaded = common::config::load_dispatcher(&sources(args));
    let settings = match loaded.and_then(DispatcherSettings::try_from) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("dispy-dispatcher: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    common::telemetry::init(settings.log_format, &settings.log_level);
    let config = match DispatcherConfig::try_from(settings) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dispy-dispatcher: {e}");
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

/// The config file, the process's `DISPY_*` variables and the flags, in rising precedence.
fn sources(args: Args) -> Sources {
    Sources::new()
        .file_or_default(args.config.as_deref(), common::config::DEFAULT_DISPATCHER_FILE)
        .env(common::config::process_env())
        .flag("listen", args.listen)
        .flag("tls_dir", args.tls_dir)
        .flag("state_dir", args.state_dir)
        .flag("retention", args.retention)
        .flag("node_timeout", args.node_timeout)
        .flag("pipeline_depth", args.pipeline_depth)
        .flag("max_message", args.max_message)
        .flag("max_chunk", args.max_chunk)
        .flag("max_payload", args.max_payload)
        .flag("log_format", args.log_format)
        .flag("log_level", args.log_level)
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
        PkiAction::IssueClient { name, dir, out } => {
            issue(Role::Client, name, dir, out.as_deref(), "clients")?
        }
    }
    Ok(())
}

fn issue(role: Role, name: &str, dir: &Path, out: Option<&Path>, folder: &str) -> anyhow::Result<()> {
    let ca = CertificateAuthority::load(dir)
        .context("failed to load the CA (run `dispy-dispatcher pki init` first)")?;
    let out = out.map_or_else(|| dir.join(folder).join(name), Path::to_path_buf);
    ca.issue_to_dir(role, name, &out)?;
    println!("issued {role} certificate {name:?} into {}", out.display());
    Ok(())
}
