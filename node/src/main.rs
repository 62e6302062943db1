//! `dispy-node`: the worker daemon's command line. Reads the settings (config file, then
//! `DISPY_*` variables, then flags, through `common::config`), sets up logging, and runs
//! [`node::daemon::run`] until SIGINT or SIGTERM (which drain it; a second one stops it at once),
//! logging when its certificate nears its end.
//! `dispy-node join ADDR TOKEN` instead enrols this machine with a one-time join token
//! ([`node::enroll::join`]) and writes its identity; `dispy-node check-config` checks the
//! configuration the daemon would run with (`common::check`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::config::{Flags, NodeSettings, Sources, NODE_KEYS};
use common::daemon::EXIT_CONFIG;
use node::config::NodeConfig;

/// The dispy worker daemon: dials the dispatcher, advertises this machine and runs chunks.
///
/// Settings come from the config file, then DISPY_* environment variables (DISPY_DISPATCHER,
/// DISPY_SLOTS, ...), then these flags; deploy/node.toml documents every key.
// Besides `--config`, each key of `NODE_KEYS` is a flag, added by `common::daemon::parse_args`.
#[derive(Debug, Parser)]
#[command(name = "dispy-node", version)]
struct Args {
    /// Config file [default: /etc/dispy/node.toml, which may be absent].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the configuration the daemon would run with (the same file, DISPY_* variables and
    /// flags, which may also follow this word): every key, the certificates, the cache and
    /// scratch directories and the dispatcher address. Prints one line per problem and what the
    /// daemon would do; exits 0 only when it would start cleanly, 64 otherwise.
    CheckConfig {
        /// Config file [default: /etc/dispy/node.toml, which may be absent].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
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
    let parsed = common::daemon::parse_args::<Args>(NODE_KEYS, std::env::args_os());
    let (mut args, flags) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match args.command.take() {
        Some(Command::Join { address, token, join_tls_dir, name, force }) => {
            return join(&sources(&args, &flags), address, &token, join_tls_dir, name, force)
        }
        Some(Command::CheckConfig { config }) => return check_config(&args, &flags, config),
        None => {}
    }
    let loaded = common::config::load_node(&sources(&args, &flags)).and_then(NodeSettings::try_from);
    let (config, runtime) = match common::daemon::prepare("dispy-node", loaded, NodeConfig::try_from) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    // The certificate in use is the one in tls_dir, which renewals rewrite.
    let loaded_cert = config.identity.cert.clone();
    let cert_file = config.tls_dir.as_ref().map(|dir| dir.join("cert.pem"));
    let current_cert = move || {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let on_disk = cert_file.as_ref().and_then(|path| CertificateDer::pem_file_iter(path).ok()?.next()?.ok());
        Some(on_disk.unwrap_or_else(|| loaded_cert.clone()))
    };
    let daemon = async {
        tokio::select! {
            // The first SIGTERM drains the node; a second one cancels what is left.
            result = node::daemon::run(config, common::signal::shutdown(), common::signal::shutdown()) => result,
            () = common::check::watch_expiry(current_cert, "this node's") => Ok(()),
        }
    };
    match runtime.block_on(daemon) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispy-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: every key problem, or else what `common::check` finds; the exit code.
fn check_config(args: &Args, flags: &Flags, config: Option<PathBuf>) -> ExitCode {
    let sources = Sources::new()
        .file_or_default(config.as_deref().or(args.config.as_deref()), common::config::DEFAULT_NODE_FILE)
        .env(common::config::process_env())
        .flags(flags);
    let mut report = common::check::Report::default();
    match common::config::load_node(&sources).and_then(NodeSettings::try_from) {
        Ok(settings) => report = common::check::check_node(&settings, std::time::SystemTime::now()),
        Err(e) => report.config_error(&e),
    }
    ExitCode::from(report.finish("dispy-node"))
}

/// The config file, the process's `DISPY_*` variables and the flags, in rising precedence.
fn sources(args: &Args, flags: &Flags) -> Sources {
    Sources::new()
        .file_or_default(args.config.as_deref(), common::config::DEFAULT_NODE_FILE)
        .env(common::config::process_env())
        .flags(flags)
}

/// `dispy-node join`: enrol, write the identity, say how to start the daemon.
fn join(sources: &Sources, address: String, token: &str, tls_dir: Option<PathBuf>, name: Option<String>, force: bool) -> ExitCode {
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
        None => match common::config::load_node(sources).and_then(NodeSettings::try_from) {
            Ok(settings) => settings.daemon.tls_dir,
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
