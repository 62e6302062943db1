//! `dispy-node`: the worker daemon's command line. Reads the settings (config file, then
//! `DISPY_*` variables, then flags, through `common::config`), sets up logging, and runs
//! [`node::daemon::run`] until SIGINT or SIGTERM. `dispy-node join ADDR TOKEN` instead enrols
//! this machine with a one-time join token ([`node::enroll::join`]) and writes its identity.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::config::{NodeSettings, Sources};
use common::daemon::EXIT_CONFIG;
use node::config::NodeConfig;

/// The dispy worker daemon: dials the dispatcher, advertises this machine and runs chunks.
///
/// Settings come from the config file, then DISPY_* environment variables (DISPY_DISPATCHER,
/// DISPY_SLOTS, ...), then these flags; deploy/node.toml documents every key.
#[derive(Debug, Parser)]
#[command(name = "dispy-node", version)]
struct Args {
    /// Config file [default: /etc/dispy/node.toml, which may be absent].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Dispatcher address, host:port [default: 127.0.0.1:7870].
    #[arg(long, value_name = "HOST:PORT")]
    dispatcher: Option<String>,
    /// Directory with this node's ca.pem, cert.pem and key.pem (from `dispy-dispatcher pki
    /// issue-node`) [default: /etc/dispy/node].
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<String>,
    /// Chunk slots [default: the number of logical cores].
    #[arg(long, value_name = "N")]
    slots: Option<String>,
    /// Payload cache directory [default: /var/lib/dispy-node/cache].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<String>,
    /// Directories of shared storage whose files shared-input jobs may have this node read,
    /// separated by ':' [default: none, shared input refused].
    #[arg(long, value_name = "DIRS")]
    shared_input_roots: Option<String>,
    /// How often to send a heartbeat [default: 1s].
    #[arg(long, value_name = "DURATION")]
    heartbeat_interval: Option<String>,
    /// How often to log a "node health" line [default: 30s].
    #[arg(long, value_name = "DURATION")]
    health_log_interval: Option<String>,
    /// Threads for the node's network work; chunks run on slot threads of their own
    /// [default: 1].
    #[arg(long, value_name = "N")]
    async_threads: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter such as info or info,node=debug; RUST_LOG wins [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol this machine with a one-time join token from `dispy-dispatcher token create`.
    ///
    /// Makes this node's key here, dials the dispatcher trusting only the CA the token pins,
    /// and writes ca.pem, cert.pem and key.pem (0600) into the TLS directory, so the daemon can
    /// start. Run it as the user that runs dispy-node (or chown the files after).
    Join {
        /// The dispatcher, host:port.
        #[arg(value_name = "HOST:PORT")]
        address: String,
        /// The token, dispy1.SECRET.FINGERPRINT.
        token: String,
        /// Where to write the identity [default: the config's tls_dir, /etc/dispy/node].
        #[arg(long = "tls-dir", value_name = "DIR")]
        join_tls_dir: Option<PathBuf>,
        /// The name to ask for [default: this machine's host name]; a token made for a name
        /// overrides it.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Replace an identity already in the directory.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    // A native payload worker is this binary started with a marker argument: serve and exit.
    node::exec::native::maybe_run_worker();
    let mut args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(Command::Join { address, token, join_tls_dir, name, force }) = args.command.take() {
        return join(args, address, &token, join_tls_dir, name, force);
    }
    let loaded = common::config::load_node(&sources(args)).and_then(NodeSettings::try_from);
    let (config, runtime) = match common::daemon::prepare("dispy-node", loaded, NodeConfig::try_from) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    match runtime.block_on(node::daemon::run(config, common::signal::shutdown())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispy-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The config file, the process's `DISPY_*` variables and the flags, in rising precedence.
fn sources(args: Args) -> Sources {
    Sources::new()
        .file_or_default(args.config.as_deref(), common::config::DEFAULT_NODE_FILE)
        .env(common::config::process_env())
        .flag("dispatcher", args.dispatcher)
        .flag("tls_dir", args.tls_dir)
        .flag("slots", args.slots)
        .flag("cache_dir", args.cache_dir)
        .flag("shared_input_roots", args.shared_input_roots)
        .flag("heartbeat_interval", args.heartbeat_interval)
        .flag("health_log_interval", args.health_log_interval)
        .flag("async_threads", args.async_threads)
        .flag("log_format", args.log_format)
        .flag("log_level", args.log_level)
}

/// `dispy-node join`: enrol, write the identity, say how to start the daemon.
fn join(args: Args, address: String, token: &str, tls_dir: Option<PathBuf>, name: Option<String>, force: bool) -> ExitCode {
    let token = match token.parse::<common::enroll::JoinToken>() {
        Ok(token) => token,
        Err(e) => {
            eprintln!("dispy-node: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The directory defaults to the daemon's tls_dir, so the daemon finds what we write.
    let tls_dir = match tls_dir {
        Some(dir) => dir,
        None => match common::config::load_node(&sources(args)).and_then(NodeSettings::try_from) {
            Ok(settings) => settings.tls_dir,
            Err(e) => {
                eprintln!("dispy-node: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let Some(name) = name.or_else(sysinfo::System::host_name) else {
        eprintln!("dispy-node: this machine's host name is unknown; pass --name NAME");
        return ExitCode::from(EXIT_CONFIG);
    };
    common::telemetry::init(common::telemetry::LogFormat::Text, "warn");
    let options = node::enroll::JoinOptions { address, token, name, tls_dir: Some(tls_dir.clone()), replace: force };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dispy-node: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(node::enroll::join(&options)) {
        Ok(enrolled) => {
            println!(
                "enrolled as node {:?}; certificate valid until {} (renewed automatically while connected)",
                enrolled.name,
                common::enroll::format_utc(enrolled.valid_until)
            );
            println!("wrote ca.pem, cert.pem and key.pem to {}", tls_dir.display());
            println!("set dispatcher = \"{}\" in node.toml if it is not yet, then start the node (systemctl restart dispy-node)", options.address);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dispy-node: {e}");
            ExitCode::FAILURE
        }
    }
}
