//! `dispy-dispatcher`: the daemon's command line (SIGHUP reloads its certificate), plus the `pki`
//! commands that create the cluster CA and issue certificates, `check-config`, the `token`
//! commands that make one-time join tokens for new nodes, the `nodes`, `clients` and `admins`
//! commands that revoke certificates by name, and the `journal` commands that check and repair
//! the journal.
//! The logic lives in the `dispatcher` library; the settings come from `common::config` (file,
//! then `DISPY_*` variables, then these flags).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::config::{DispatcherSettings, Flags, Sources, DISPATCHER_KEYS};
use common::daemon::EXIT_CONFIG;
use common::pki::CertificateAuthority;
use wire::proto::Role;
use common::telemetry::LogFormat;
use dispatcher::config::DispatcherConfig;
use dispatcher::enroll::{Revocable, RevocationList};
use dispatcher::server::Dispatcher;

/// The dispy dispatcher: schedules jobs' chunks onto nodes over QUIC.
///
/// Settings come from the config file, then DISPY_* environment variables (DISPY_LISTEN,
/// DISPY_NODE_TIMEOUT, ...), then these flags; deploy/dispatcher.toml documents every key.
// Besides `--config`, each key of `DISPATCHER_KEYS` is a flag, added by `common::daemon::parse_args`.
#[derive(Debug, Parser)]
#[command(name = "dispy-dispatcher", version)]
struct Args {
    /// Config file [default: /etc/dispy/dispatcher.toml, which may be absent].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the configuration the daemon would run with (the same file, DISPY_* variables and
    /// flags, which may also follow this word): every key, the certificates, the state
    /// directory and the listen address. Prints one line per problem and what the daemon would
    /// do; exits 0 only when it would start cleanly, 64 otherwise.
    CheckConfig {
        /// Config file [default: /etc/dispy/dispatcher.toml, which may be absent].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Create the cluster CA and issue certificates.
    Pki {
        #[command(subcommand)]
        action: PkiAction,
    },
    /// Make one-time join tokens for new nodes (`dispy-node join ADDR TOKEN`).
    ///
    /// Tokens live in the state directory, so run this on the dispatcher's machine, as the
    /// dispatcher's user (or root); the running daemon redeems them.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Revoke nodes: the dispatcher closes their connections and refuses new ones, enrolments
    /// and renewals.
    Nodes {
        #[command(subcommand)]
        action: RevokeAction,
    },
    /// Revoke client (user) certificates: the dispatcher closes their connections and refuses
    /// new ones.
    Clients {
        #[command(subcommand)]
        action: RevokeAction,
    },
    /// Revoke operator certificates (`pki issue-admin`): the dispatcher closes their
    /// connections and refuses new ones.
    Admins {
        #[command(subcommand)]
        action: RevokeAction,
    },
    /// Check or repair the journal (STATE_DIR/journal.redb) while the dispatcher is stopped.
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
}

#[derive(Debug, Subcommand)]
enum JournalAction {
    /// Check the journal without changing it: every page's checksum, every row, every extent
    /// against the spool files. Exits 0 when it is healthy, 1 when something is wrong.
    Check {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Repair the journal after keeping a copy (journal.redb.bad-UNIXTIME): roll back a torn
    /// transaction, drop rows that do not decode, record jobs whose spooled bytes are gone as
    /// failed; a file redb cannot open is replaced by an empty journal, the spooled jobs moved
    /// aside (jobs.bad-UNIXTIME).
    Repair {
        #[command(flatten)]
        state: StateArgs,
    },
}

/// Where the enrolment state is: the same settings the daemon reads.
#[derive(Debug, clap::Args)]
struct StateArgs {
    /// Config file [default: /etc/dispy/dispatcher.toml, which may be absent].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The dispatcher's state directory [default: the config's state_dir].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<String>,
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Make a join token and print it (alone on standard output).
    ///
    /// Format: dispy1.SECRET.FINGERPRINT, the secret 32 hex digits, the fingerprint the SHA-256
    /// of the cluster CA certificate (64 hex digits), which the node pins. Only a hash of the
    /// secret is stored. The token works once.
    Create {
        /// How long the token may be used [default: 1h].
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        ttl: String,
        /// The node name the certificate will carry; without it the node's own choice
        /// (`dispy-node join --name`, default its host name) is used.
        #[arg(long, value_name = "NODE")]
        name: Option<String>,
        /// The `pki init` directory [default: the config's ca_dir].
        #[arg(long, value_name = "DIR")]
        ca_dir: Option<String>,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List the outstanding tokens (by id, a hash; their secrets are not kept).
    List {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Delete the outstanding tokens whose id starts with ID (8 hex digits at least).
    Delete {
        /// The id, or its first digits, as `token list` shows.
        id: String,
        #[command(flatten)]
        state: StateArgs,
    },
}

/// The same three commands for each role's own revocation list (`Revocable`).
#[derive(Debug, Subcommand)]
enum RevokeAction {
    /// Revoke NAME: its open connections are closed within seconds and new ones refused (a
    /// node can no longer enrol or renew either).
    Revoke {
        /// The certificate's name (its common name, as issued).
        name: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Take NAME off the revocation list.
    Unrevoke {
        /// The certificate's name.
        name: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List the revoked names.
    Revoked {
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Debug, Subcommand)]
enum PkiAction {
    /// Create a CA in DIR (ca.pem, ca.key) and the dispatcher's identity in DIR/dispatcher.
    Init {
        /// Where the CA lives.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        validity: Validity,
    },
    /// Issue the dispatcher's certificate again, under the existing CA in DIR (no CA re-key),
    /// into DIR/dispatcher (or --out); then install it and `systemctl reload dispy-dispatcher`
    /// (SIGHUP), which keeps every connection and job.
    IssueDispatcher {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Where to write ca.pem, cert.pem and key.pem [default: DIR/dispatcher].
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        validity: Validity,
    },
    /// Issue a node certificate into DIR/nodes/NAME (or --out).
    IssueNode(IssueArgs),
    /// Issue a client (user) certificate into DIR/clients/NAME (or --out): it sees and changes
    /// its own jobs.
    IssueClient(IssueArgs),
    /// Issue an operator certificate into DIR/admins/NAME (or --out): it uses the client tools
    /// and may see and cancel every job and drain nodes.
    IssueAdmin(IssueArgs),
}

/// What every `pki issue-*` takes.
#[derive(Debug, clap::Args)]
struct IssueArgs {
    /// The certificate's name (its common name): the node's name, or the user's.
    name: String,
    /// The CA directory.
    #[arg(long)]
    dir: PathBuf,
    /// Where to write ca.pem, cert.pem and key.pem.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    validity: Validity,
}

/// `--days`, for every certificate `pki` issues.
#[derive(Debug, clap::Args)]
struct Validity {
    /// How many days the certificate is valid (1 to 3650, the CA's lifetime).
    #[arg(long, value_name = "N", default_value_t = common::pki::DEFAULT_CERT_DAYS, value_parser = parse_days)]
    days: u32,
}

impl Validity {
    fn duration(&self) -> Result<std::time::Duration, common::pki::PkiError> {
        common::pki::validity_days(self.days)
    }
}

/// Refuses a bad `--days` while parsing, before anything is written.
fn parse_days(text: &str) -> Result<u32, String> {
    let days = text.parse().map_err(|_| format!("{text:?} is not a whole number of days"))?;
    common::pki::validity_days(days).map_err(|e| e.to_string())?;
    Ok(days)
}

fn main() -> ExitCode {
    let (args, flags) = match common::daemon::parse_args::<Args>(DISPATCHER_KEYS, std::env::args_os()) {
        Ok(parsed) => parsed,
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
    if let Some(command @ (Command::Token { .. }
    | Command::Nodes { .. }
    | Command::Clients { .. }
    | Command::Admins { .. }
    | Command::Journal { .. })) = &args.command
    {
        common::telemetry::init(LogFormat::Text, "warn");
        return match enrolment(&args, &flags, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(CommandError::Config(e)) => {
                eprintln!("dispy-dispatcher: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
            Err(CommandError::Failed(e)) => {
                eprintln!("dispy-dispatcher: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::CheckConfig { config }) = &args.command {
        let sources = Sources::new()
            .file_or_default(config.as_deref().or(args.config.as_deref()), common::config::DEFAULT_DISPATCHER_FILE)
            .env(common::config::process_env())
            .flags(&flags);
        return ExitCode::from(check_config(&sources));
    }
    let loaded = common::config::load_dispatcher(&sources(&args, &flags)).and_then(DispatcherSettings::try_from);
    let (config, runtime) = match common::daemon::prepare("dispy-dispatcher", loaded, DispatcherConfig::try_from) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let state_dir = config.state_dir.clone();
    let served = runtime.block_on(async {
        let dispatcher = Dispatcher::bind(config)?;
        let reloader = dispatcher.certificate();
        match common::signal::reloads() {
            Ok(hups) => tokio::select! {
                () = dispatcher.run(common::signal::shutdown()) => {}
                () = reloader.serve(hups) => {}
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; reloading the certificate needs a restart");
                dispatcher.run(common::signal::shutdown()).await;
            }
        }
        Ok::<_, dispatcher::server::ServeError>(())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispy-dispatcher: {e}");
            if let dispatcher::server::ServeError::Journal(journal) = &e {
                if !matches!(journal, dispatcher::journal::JournalError::InUse { .. }) {
                    let dir = state_dir.display();
                    eprintln!(
                        "dispy-dispatcher: the journal cannot be used as it is. See what is wrong with\n  \
                         dispy-dispatcher journal check --state-dir {dir}\nthen repair it (a copy of it is kept) with\n  \
                         dispy-dispatcher journal repair --state-dir {dir}\n(docs/operations.md, \"The journal\")"
                    );
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: every key problem, or else what `common::check` finds; the exit code.
fn check_config(sources: &Sources) -> u8 {
    let mut report = common::check::Report::default();
    match common::config::load_dispatcher(sources).and_then(DispatcherSettings::try_from) {
        Ok(settings) => report = common::check::check_dispatcher(&settings, std::time::SystemTime::now()),
        Err(e) => report.config_error(&e),
    }
    report.finish("dispy-dispatcher")
}

/// The config file, the process's `DISPY_*` variables and the flags, in rising precedence.
fn sources(args: &Args, flags: &Flags) -> Sources {
    Sources::new()
        .file_or_default(args.config.as_deref(), common::config::DEFAULT_DISPATCHER_FILE)
        .env(common::config::process_env())
        .flags(flags)
}

fn pki(action: &PkiAction) -> anyhow::Result<()> {
    match action {
        PkiAction::Init { dir, validity } => {
            let ca = CertificateAuthority::generate("dispy")?;
            ca.save(dir)?;
            let out = dir.join("dispatcher");
            ca.issue_to_dir(Role::Dispatcher, "dispatcher", validity.duration()?, &out)?;
            println!("created CA in {} and the dispatcher identity in {}", dir.display(), out.display());
        }
        PkiAction::IssueDispatcher { dir, out, validity } => {
            let ca = CertificateAuthority::load(dir)
                .context("failed to load the CA (run `dispy-dispatcher pki init` first)")?;
            let out = out.clone().unwrap_or_else(|| dir.join("dispatcher"));
            ca.issue_to_dir(Role::Dispatcher, "dispatcher", validity.duration()?, &out)?;
            println!(
                "issued the dispatcher certificate, valid for {} days, into {}; install it in the dispatcher's tls_dir, then `systemctl reload dispy-dispatcher` (SIGHUP)",
                validity.days,
                out.display()
            );
        }
        PkiAction::IssueNode(args) => issue(Role::Node, args, "nodes")?,
        PkiAction::IssueClient(args) => issue(Role::Client, args, "clients")?,
        PkiAction::IssueAdmin(args) => issue(Role::Operator, args, "admins")?,
    }
    Ok(())
}

fn issue(role: Role, args: &IssueArgs, folder: &str) -> anyhow::Result<()> {
    let IssueArgs { name, dir, out, validity } = args;
    let ca = CertificateAuthority::load(dir)
        .context("failed to load the CA (run `dispy-dispatcher pki init` first)")?;
    let out = out.clone().unwrap_or_else(|| dir.join(folder).join(name));
    ca.issue_to_dir(role, name, validity.duration()?, &out)?;
    println!("issued {role} certificate {name:?}, valid for {} days, into {}", validity.days, out.display());
    Ok(())
}

/// How an enrolment command failed: bad settings exit with 64, anything else with 1.
enum CommandError {
    Config(common::config::ConfigError),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for CommandError {
    fn from(e: anyhow::Error) -> Self {
        CommandError::Failed(e)
    }
}

impl From<dispatcher::enroll::StoreError> for CommandError {
    fn from(e: dispatcher::enroll::StoreError) -> Self {
        CommandError::Failed(e.into())
    }
}

/// The daemon's settings as these commands see them: its config file and `DISPY_*` variables,
/// then the flags given before the command, then the command's own.
fn enrolment_settings(
    args: &Args,
    flags: &Flags,
    state: &StateArgs,
    ca_dir: Option<&String>,
) -> Result<DispatcherSettings, CommandError> {
    let sources = Sources::new()
        .file_or_default(state.config.as_deref().or(args.config.as_deref()), common::config::DEFAULT_DISPATCHER_FILE)
        .env(common::config::process_env())
        .flag("tls_dir", flags.get("tls_dir"))
        .flag("state_dir", state.state_dir.clone().or_else(|| flags.get("state_dir")))
        .flag("ca_dir", ca_dir.cloned().or_else(|| flags.get("ca_dir")));
    common::config::load_dispatcher(&sources).and_then(DispatcherSettings::try_from).map_err(CommandError::Config)
}

fn enrolment(args: &Args, flags: &Flags, command: &Command) -> Result<(), CommandError> {
    use dispatcher::enroll::TokenStore;
    match command {
        Command::Token { action: TokenAction::Create { ttl, name, ca_dir, state } } => {
            let settings = enrolment_settings(args, flags, state, ca_dir.as_ref())?;
            create_token(&settings, ttl, name.as_deref())?;
        }
        Command::Token { action: TokenAction::List { state } } => {
            let settings = enrolment_settings(args, flags, state, None)?;
            let tokens = TokenStore::open(&settings.state_dir)?.list()?;
            if tokens.is_empty() {
                eprintln!("no outstanding join tokens in {}", settings.state_dir.display());
            }
            let now = std::time::SystemTime::now();
            for token in tokens {
                let state = if token.expires <= now { "expired" } else { "valid" };
                let name = token.name.as_deref().unwrap_or("(any name)");
                println!("{}  {state:<7}  until {}  {name}", &token.id[..16], common::enroll::format_utc(token.expires));
            }
        }
        Command::Token { action: TokenAction::Delete { id, state } } => {
            let settings = enrolment_settings(args, flags, state, None)?;
            if id.len() < 8 {
                return Err(anyhow::anyhow!("give at least 8 digits of the token id, as `token list` shows").into());
            }
            match TokenStore::open(&settings.state_dir)?.delete(&id.to_ascii_lowercase())? {
                0 => return Err(anyhow::anyhow!("no outstanding token id starts with {id}").into()),
                n => println!("deleted {n} join token(s)"),
            }
        }
        Command::Nodes { action } => revocation(args, flags, Revocable::Node, action)?,
        Command::Clients { action } => revocation(args, flags, Revocable::Client, action)?,
        Command::Admins { action } => revocation(args, flags, Revocable::Operator, action)?,
        Command::Journal { action } => return journal(args, flags, action),
        Command::Pki { .. } | Command::CheckConfig { .. } => {}
    }
    Ok(())
}

/// `nodes`, `clients` or `admins`: edits or lists the `kind` revocation list.
fn revocation(args: &Args, flags: &Flags, kind: Revocable, action: &RevokeAction) -> Result<(), CommandError> {
    let role = kind.role();
    match action {
        RevokeAction::Revoke { name, state } => {
            let settings = enrolment_settings(args, flags, state, None)?;
            check_list_name(role, name)?;
            if RevocationList::new(&settings.state_dir, kind).revoke(name)? {
                let node_only = if kind == Revocable::Node { ", and it cannot enrol or renew" } else { "" };
                println!("revoked {role} {name:?}: the dispatcher closes its connections and refuses new ones{node_only}");
            } else {
                println!("{role} {name:?} was already revoked");
            }
        }
        RevokeAction::Unrevoke { name, state } => {
            let settings = enrolment_settings(args, flags, state, None)?;
            if RevocationList::new(&settings.state_dir, kind).unrevoke(name)? {
                println!("{role} {name:?} is no longer revoked");
            } else {
                return Err(anyhow::anyhow!("{role} {name:?} is not revoked").into());
            }
        }
        RevokeAction::Revoked { state } => {
            let settings = enrolment_settings(args, flags, state, None)?;
            for name in RevocationList::new(&settings.state_dir, kind).names()? {
                println!("{name}");
            }
        }
    }
    Ok(())
}

/// `journal check` or `journal repair`; a journal with problems left is a failure (exit 1).
fn journal(args: &Args, flags: &Flags, action: &JournalAction) -> Result<(), CommandError> {
    use dispatcher::journal::maintenance;

    let (JournalAction::Check { state } | JournalAction::Repair { state }) = action;
    let settings = enrolment_settings(args, flags, state, None)?;
    if let JournalAction::Repair { .. } = action {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let report = maintenance::repair(&settings.state_dir, now).map_err(anyhow::Error::from)?;
        println!("kept a copy of the journal as it was in {}", report.backup.display());
        for change in &report.changes {
            println!("repair: {change}");
        }
    }
    let report = maintenance::check(&settings.state_dir).map_err(anyhow::Error::from)?;
    let jobs: u64 = report.jobs.values().sum();
    let states: Vec<String> = report.jobs.iter().map(|(state, n)| format!("{n} {state}")).collect();
    let states = if states.is_empty() { String::new() } else { format!(" ({})", states.join(", ")) };
    println!(
        "journal {}: {}, {jobs} jobs{states}, {} held node names",
        report.path.display(),
        wire::units::format_size(report.size),
        report.holds
    );
    if report.recovered {
        println!("it was not closed cleanly (or its last transaction was torn): the dispatcher rolls it back to its last complete commit when it starts");
    }
    if report.problems.is_empty() {
        println!("no problems found");
        return Ok(());
    }
    const SHOWN: usize = 50;
    for problem in report.problems.iter().take(SHOWN) {
        println!("problem: {problem}");
    }
    if report.problems.len() > SHOWN {
        println!("... and {} more problems", report.problems.len() - SHOWN);
    }
    let hint = match action {
        JournalAction::Check { .. } => "; `dispy-dispatcher journal repair` repairs it, keeping a copy",
        JournalAction::Repair { .. } => " after the repair",
    };
    Err(anyhow::anyhow!("{} problem(s) in the journal{hint}", report.problems.len()).into())
}

/// A revocation list entry is one line: refuse what would not read back as the same name.
fn check_list_name(role: Role, name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.trim() != name || name.starts_with('#') || name.contains(['\n', '\r']) {
        anyhow::bail!("{name:?} cannot be a {role} name");
    }
    Ok(())
}

fn create_token(settings: &DispatcherSettings, ttl: &str, name: Option<&str>) -> Result<(), CommandError> {
    use common::enroll::{check_node_name, format_utc, Fingerprint, JoinToken, TokenSecret};
    use rustls::pki_types::{pem::PemObject, CertificateDer};

    let ttl = wire::units::parse_duration(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    if ttl.is_zero() || ttl > std::time::Duration::from_secs(365 * 24 * 3600) {
        return Err(anyhow::anyhow!("--ttl must be more than 0 and at most 8760h").into());
    }
    if let Some(name) = name {
        check_node_name(name).map_err(anyhow::Error::from)?;
        if RevocationList::new(&settings.state_dir, Revocable::Node).contains(name) {
            return Err(anyhow::anyhow!("node {name:?} is revoked; `nodes unrevoke {name}` first").into());
        }
    }
    let Some(ca_dir) = &settings.ca_dir else {
        return Err(anyhow::anyhow!(
            "node enrolment is off: set ca_dir (the `pki init` directory) in the dispatcher's config, restart it, then make tokens"
        )
        .into());
    };
    let read_ca = |path: &Path| -> anyhow::Result<CertificateDer<'static>> {
        let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
        CertificateDer::from_pem_slice(text.as_bytes()).with_context(|| format!("{} holds no certificate", path.display()))
    };
    let ca = read_ca(&ca_dir.join("ca.pem"))?;
    // The node pins what the daemon presents: the CA in its tls_dir. They must be the same.
    if let Ok(presented) = read_ca(&settings.daemon.tls_dir.join("ca.pem")) {
        if presented != ca {
            return Err(anyhow::anyhow!(
                "{} is not the CA in {}; the dispatcher would refuse to enrol (point ca_dir at the right `pki init` directory)",
                ca_dir.join("ca.pem").display(),
                settings.daemon.tls_dir.display()
            )
            .into());
        }
    }
    let secret = TokenSecret::generate().map_err(anyhow::Error::from)?;
    let store = dispatcher::enroll::TokenStore::open(&settings.state_dir)?;
    let now = std::time::SystemTime::now();
    store.purge(now);
    let record = store.create(&secret, ttl, name, now)?;
    let token = JoinToken { secret, ca_fingerprint: Fingerprint::of(&ca) };
    println!("{token}");
    eprintln!(
        "join token {} for {}, usable once until {}.\nOn the new node, as the user that runs dispy-node (or root, then chown):\n  dispy-node join <this-host>:{} TOKEN",
        &record.id[..16],
        name.map_or_else(|| "any node name".to_owned(), |n| format!("node {n:?}")),
        format_utc(record.expires),
        settings.listen.port(),
    );
    Ok(())
}
