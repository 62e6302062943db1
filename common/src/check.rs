//! Certificates that do not silently expire, and `check-config`: what both daemons check about
//! their configuration before an operator restarts them.
//!
//! [`CertExpiry`] reads when a certificate ends and says, from [`EXPIRY_WARNING`] (30 days)
//! before, that it is about to; daemons log it at start and every [`EXPIRY_CHECK_INTERVAL`]
//! ([`watch_expiry`]), `dispy-submit` prints it on stderr, and the dispatcher logs it for each
//! node and client that connects with such a certificate. A certificate from enrolment
//! ([`ENROLLED_ORGANIZATION`]) renews itself a third of its life before its end, so it is
//! warned about only once that renewal is overdue.
//!
//! [`Report`] collects what `dispy-dispatcher check-config` and `dispy-node check-config` find:
//! every key problem of `common::config` (all at once, with their origins), then the TLS
//! identity (files readable, chained to the CA, the daemon's role, not expired, key matching the
//! certificate, key file private), the directories the daemon writes, and the dispatcher's
//! listen address and enrolment CA. Each [`Finding`] is one line naming what is wrong and what
//! the daemon would do about it; a report with only warnings is clean (the daemon would start).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::config::{ConfigError, DaemonSettings, DispatcherSettings, NodeSettings, Origin};
use crate::enroll::{format_utc, ENROLLED_ORGANIZATION};
use crate::messages::io_message;
use crate::pki::{Identity, DISPATCHER_SERVER_NAME};
use wire::proto::Role;

/// How long before its end a certificate is warned about.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often a running daemon looks at its own certificate's end again.
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(12 * 3600);

/// What a daemon would do about a finding, for the end of its line.
pub const WOULD_REFUSE: &str = "the daemon would refuse to start (exit 64)";
/// The daemon would exit at start with code 1.
pub const WOULD_FAIL: &str = "the daemon would fail to start (exit 1)";
/// The daemon would run, but nobody would talk to it.
pub const PEERS_REFUSE: &str = "the daemon would start, but peers would refuse its certificate at the handshake";

/// When a certificate ends, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    /// The certificate's name (CN).
    pub name: String,
    /// Its role (OU); `None` for a CA certificate or a foreign one.
    pub role: Option<Role>,
    /// `notBefore`.
    pub not_before: SystemTime,
    /// `notAfter`.
    pub not_after: SystemTime,
    /// Issued by enrolment: its node renews it before a third of its life is left.
    pub self_renewing: bool,
}

impl CertExpiry {
    /// Reads a certificate.
    ///
    /// # Errors
    /// The parser's message when `cert` is not a certificate.
    pub fn of(cert: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
        let subject = parsed.subject();
        fn first(value: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>) -> Option<String> {
            value.and_then(|v| v.as_str().ok()).map(str::to_owned)
        }
        let at = |seconds: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
        let expiry = Self {
            name: first(subject.iter_common_name().next()).unwrap_or_default(),
            role: first(subject.iter_organizational_unit().next()).and_then(|r| Role::parse(&r)),
            not_before: at(parsed.validity().not_before.timestamp()),
            not_after: at(parsed.validity().not_after.timestamp()),
            self_renewing: first(subject.iter_organization().next()).as_deref() == Some(ENROLLED_ORGANIZATION),
        };
        Ok(expiry)
    }

    /// `notAfter` in seconds since the Unix epoch, as `dispy-submit nodes --json` shows it.
    pub fn unix(&self) -> u64 {
        self.not_after.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    /// Whether it has ended at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// The warning due at `now`, if any: from [`EXPIRY_WARNING`] before the end (for a
    /// self-renewing certificate, only once its renewal is overdue), or that it has ended.
    pub fn warning(&self, now: SystemTime) -> Option<String> {
        let whose = match self.role {
            Some(role) => format!("the {role} certificate {:?}", self.name),
            None => format!("the certificate {:?}", self.name),
        };
        let end = format_utc(self.not_after);
        let Ok(left) = self.not_after.duration_since(now) else {
            return Some(format!("{whose} expired at {end}; peers refuse it: issue a new one"));
        };
        if left >= EXPIRY_WARNING {
            return None;
        }
        if self.self_renewing {
            // Renewal falls due with a third of the life left; a quarter left means it failed.
            let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
            if left > lifetime / 4 {
                return None;
            }
            return Some(format!(
                "{whose} expires at {end}, in {}, and its renewal is overdue: is the node connected, and enrolment on?",
                human(left)
            ));
        }
        Some(format!("{whose} expires at {end}, in {}: issue a new one before then", human(left)))
    }
}

/// "12 days", "5 hours" or "3 minutes".
fn human(left: Duration) -> String {
    let (days, hours) = (left.as_secs() / 86_400, left.as_secs() / 3600);
    if days >= 2 {
        format!("{days} days")
    } else if hours >= 2 {
        format!("{hours} hours")
    } else {
        format!("{} minutes", left.as_secs() / 60)
    }
}

/// Logs the warning [`CertExpiry::warning`] gives for `cert` at warn level, with its fields;
/// returns the message (for a caller that also prints it). `what` says whose certificate it is
/// ("this dispatcher's", "a connecting peer's").
pub fn log_expiry(cert: &CertificateDer<'_>, what: &str) -> Option<String> {
    let expiry = CertExpiry::of(cert).ok()?;
    let message = expiry.warning(SystemTime::now())?;
    tracing::warn!(
        certificate = %expiry.name,
        role = %expiry.role.map_or("none", Role::as_str),
        expires = %format_utc(expiry.not_after),
        whose = what,
        "certificate expires soon: {message}"
    );
    Some(message)
}

/// Logs [`log_expiry`] for the certificate `current` returns now and every
/// [`EXPIRY_CHECK_INTERVAL`]; never returns, so it can sit in a daemon's `select!`. `current`
/// returns what the daemon presents at that moment, so reloads and renewals are seen.
pub async fn watch_expiry(current: impl Fn() -> Option<CertificateDer<'static>>, what: &str) {
    loop {
        if let Some(cert) = current() {
            log_expiry(&cert, what);
        }
        tokio::time::sleep(EXPIRY_CHECK_INTERVAL).await;
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The daemon would not start, or would start unusable.
    Problem,
    /// The daemon would start, but something needs attention soon.
    Warning,
}

/// One line of a `check-config` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Problem or warning.
    pub severity: Severity,
    /// What is wrong, naming the key and where it was set.
    pub what: String,
    /// What the daemon would do about it.
    pub outcome: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Problem => "problem",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: {}; {}", self.what, self.outcome)
    }
}

/// Everything `check-config` found, in the order it looked.
#[derive(Debug, Clone, Default)]
pub struct Report {
    findings: Vec<Finding>,
}

impl Report {
    /// Records a problem: `what` is wrong and the daemon would do `outcome`.
    pub fn problem(&mut self, what: impl Into<String>, outcome: impl Into<String>) {
        self.findings.push(Finding { severity: Severity::Problem, what: what.into(), outcome: outcome.into() });
    }

    /// Records a warning.
    pub fn warning(&mut self, what: impl Into<String>, outcome: impl Into<String>) {
        self.findings.push(Finding { severity: Severity::Warning, what: what.into(), outcome: outcome.into() });
    }

    /// What was found, in order.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Whether the daemon would start cleanly: no problems (warnings allowed).
    pub fn is_clean(&self) -> bool {
        self.findings.iter().all(|f| f.severity == Severity::Warning)
    }

    /// Records every problem of a configuration that did not load or validate.
    pub fn config_error(&mut self, error: &ConfigError) {
        match error {
            ConfigError::Keys { problems, .. } => {
                for problem in problems {
                    self.problem(problem.to_string(), WOULD_REFUSE);
                }
            }
            other => self.problem(other.to_string(), WOULD_REFUSE),
        }
    }

    /// Checks the TLS identity in `daemon.tls_dir` for a daemon of `role`, at `now`: the three
    /// files, the certificate's role, its chain to `ca.pem`, its validity, the CA's, whether
    /// `key.pem` is its key, and that the key file is private. Returns the identity when it
    /// loaded.
    pub fn check_identity(&mut self, daemon: &DaemonSettings, role: Role, now: SystemTime) -> Option<Identity> {
        let dir = &daemon.tls_dir;
        let at = key_at(&daemon.origins.of("tls_dir"), "tls_dir");
        let mut texts = Vec::new();
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            match std::fs::read_to_string(dir.join(file)) {
                Ok(text) => texts.push(text),
                Err(e) => self.problem(
                    format!("{at}: cannot read {}: {}", dir.join(file).display(), io_message(&e)),
                    WOULD_REFUSE,
                ),
            }
        }
        let [ca, cert, key] = <[String; 3]>::try_from(texts).ok()?;
        let identity = match Identity::from_pem(&ca, &cert, &key, dir) {
            Ok(identity) => identity,
            Err(e) => {
                self.problem(format!("{at}: {e}"), WOULD_REFUSE);
                return None;
            }
        };
        let cert_path = dir.join("cert.pem");
        let expiry = match CertExpiry::of(&identity.cert) {
            Ok(expiry) => expiry,
            Err(e) => {
                self.problem(format!("{at}: {} is not a certificate: {e}", cert_path.display()), WOULD_REFUSE);
                return None;
            }
        };
        match expiry.role {
            Some(found) if found == role => {}
            Some(found) => self.problem(
                format!("{at}: {} is a {found} certificate, not a {role} one", cert_path.display()),
                PEERS_REFUSE,
            ),
            None => self.problem(format!("{at}: {} is not a dispy certificate (no role)", cert_path.display()), PEERS_REFUSE),
        }
        if let Err(reason) = chains_to_ca(&identity, role, &expiry) {
            self.problem(
                format!("{at}: {} is not valid under the CA in {}: {reason}", cert_path.display(), dir.join("ca.pem").display()),
                PEERS_REFUSE,
            );
        }
        if now < expiry.not_before {
            self.problem(
                format!("{at}: {} is not valid before {} (is this clock right?)", cert_path.display(), format_utc(expiry.not_before)),
                PEERS_REFUSE,
            );
        }
        if expiry.expired(now) {
            self.problem(format!("{at}: {} expired at {}", cert_path.display(), format_utc(expiry.not_after)), PEERS_REFUSE);
        } else if let Some(warning) = expiry.warning(now) {
            self.warning(format!("{at}: {}: {warning}", cert_path.display()), "the daemon would start and log this warning");
        }
        match CertExpiry::of(&identity.ca) {
            Ok(ca) if ca.expired(now) => self.problem(
                format!("{at}: the CA in {} expired at {}", dir.join("ca.pem").display(), format_utc(ca.not_after)),
                PEERS_REFUSE,
            ),
            Ok(ca) if ca.not_after.duration_since(now).unwrap_or_default() < EXPIRY_WARNING => self.warning(
                format!("{at}: the CA in {} expires at {}", dir.join("ca.pem").display(), format_utc(ca.not_after)),
                "every certificate under it stops working then: make a new CA (docs/operations.md)",
            ),
            Ok(_) => {}
            Err(e) => self.problem(format!("{at}: {} is not a certificate: {e}", dir.join("ca.pem").display()), PEERS_REFUSE),
        }
        if let Err(reason) = key_matches(&identity) {
            self.problem(
                format!("{at}: {} is not the key of {}: {reason}", dir.join("key.pem").display(), cert_path.display()),
                WOULD_FAIL,
            );
        }
        self.check_private(&at, &dir.join("key.pem"));
        Some(identity)
    }

    /// Warns when the key file can be read by anyone but its owner.
    fn check_private(&mut self, at: &str, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(key) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                self.warning(
                    format!("{at}: {} has mode {mode:04o}: other users can read the private key", key.display()),
                    "the daemon would start; chmod 600 it",
                );
            }
        }
    }

    /// Checks that the daemon can create (if missing) and write the directory `path` of `key`;
    /// `outcome` is what the daemon would do if not.
    pub fn check_writable_dir(&mut self, daemon: &DaemonSettings, key: &'static str, path: &Path, outcome: &str) {
        use std::os::unix::fs::PermissionsExt;
        let at = key_at(&daemon.origins.of(key), key);
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => {
                self.problem(format!("{at}: {} is not a directory", path.display()), outcome);
            }
            Ok(meta) => {
                if let Err(e) = probe_write(path) {
                    self.problem(format!("{at}: {} is not writable: {}", path.display(), io_message(&e)), outcome);
                }
                let mode = meta.permissions().mode();
                if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                    self.warning(
                        format!("{at}: {} has mode {:04o}: every user may write into it", path.display(), mode & 0o7777),
                        "the daemon would start; chmod 700 it",
                    );
                }
            }
            Err(_) => {
                // The daemon creates it with its missing parents: the nearest existing one must
                // be a writable directory.
                let mut parent = path.parent();
                while let Some(p) = parent {
                    if p.exists() {
                        break;
                    }
                    parent = p.parent();
                }
                let parent = parent.unwrap_or(Path::new("/"));
                if let Err(e) = probe_write(parent) {
                    self.problem(
                        format!(
                            "{at}: {} does not exist and cannot be created (in {}: {})",
                            path.display(),
                            parent.display(),
                            io_message(&e)
                        ),
                        outcome,
                    );
                }
            }
        }
    }

    /// Checks that the UDP address `listen` can be bound now.
    pub fn check_listen(&mut self, daemon: &DaemonSettings, listen: SocketAddr) {
        if let Err(e) = std::net::UdpSocket::bind(listen) {
            let at = key_at(&daemon.origins.of("listen"), "listen");
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse { " (is a dispatcher already running there?)" } else { "" };
            self.problem(format!("{at}: cannot listen on UDP {listen}: {e}{hint}"), WOULD_FAIL);
        }
    }

    /// Prints one line per finding on standard output and a summary on standard error, and
    /// returns the exit code: 0 when clean, 64 otherwise.
    pub fn finish(&self, program: &str) -> u8 {
        for finding in &self.findings {
            println!("{finding}");
        }
        let problems = self.findings.iter().filter(|f| f.severity == Severity::Problem).count();
        if problems == 0 {
            eprintln!("{program}: the configuration is good: the daemon would start cleanly");
            0
        } else {
            eprintln!("{program}: {problems} problem(s): the daemon would not start cleanly");
            crate::daemon::EXIT_CONFIG
        }
    }
}

/// Everything `dispy-dispatcher check-config` checks beyond the keys.
pub fn check_dispatcher(settings: &DispatcherSettings, now: SystemTime) -> Report {
    let mut report = Report::default();
    let identity = report.check_identity(&settings.daemon, Role::Dispatcher, now);
    if let (Some(dir), Some(identity)) = (&settings.ca_dir, &identity) {
        if let Err(e) = crate::enroll::CaSigner::load(dir, &identity.ca) {
            let at = key_at(&settings.daemon.origins.of("ca_dir"), "ca_dir");
            report.problem(format!("{at}: node enrolment cannot use this CA: {e}"), WOULD_REFUSE);
        }
    }
    report.check_writable_dir(&settings.daemon, "state_dir", &settings.state_dir, WOULD_FAIL);
    report.check_listen(&settings.daemon, settings.listen);
    report.check_http(&settings.daemon, "http_listen", settings.http_listen, settings.http_token_file.as_deref());
    report
}

/// Everything `dispy-node check-config` checks beyond the keys.
pub fn check_node(settings: &NodeSettings, now: SystemTime) -> Report {
    let mut report = Report::default();
    report.check_identity(&settings.daemon, Role::Node, now);
    report.check_writable_dir(&settings.daemon, "cache_dir", &settings.cache_dir, WOULD_FAIL);
    report.check_writable_dir(
        &settings.daemon,
        "scratch_dir",
        &settings.scratch_dir,
        "the daemon would start, but native payloads would fail",
    );
    if let Err(e) = std::net::ToSocketAddrs::to_socket_addrs(settings.dispatcher.as_str()) {
        let at = key_at(&settings.daemon.origins.of("dispatcher"), "dispatcher");
        report.warning(
            format!("{at}: {:?} does not resolve now: {e}", settings.dispatcher),
            "the daemon would start and keep dialling until it does",
        );
    }
    report.check_http(&settings.daemon, "metrics_listen", settings.metrics_listen, settings.http_token_file.as_deref());
    report
}

impl Report {
    /// The HTTP address's access rule (`crate::http::Access`): a non-loopback address needs a
    /// usable token file.
    fn check_http(&mut self, daemon: &DaemonSettings, key: &str, addr: Option<SocketAddr>, token: Option<&Path>) {
        let Some(addr) = addr else { return };
        if let Err(e) = crate::http::Access::new(addr, token) {
            let key = if matches!(e, crate::http::HttpError::Exposed { .. }) { key } else { "http_token_file" };
            let at = key_at(&daemon.origins.of(key), key);
            self.problem(format!("{at}: {e}"), WOULD_REFUSE);
        }
    }
}

/// `ORIGIN: key "KEY"`, as configuration problems begin.
fn key_at(origin: &Origin, key: &str) -> String {
    format!("{origin}: key {key:?}")
}

/// Creates and removes a file in `dir`: the only honest test of writing (permissions, read-only
/// mounts, and root's exemptions all apply).
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe: PathBuf = dir.join(format!(".dispy-check-{}", std::process::id()));
    std::fs::File::create(&probe)?;
    std::fs::remove_file(&probe)
}

/// Whether `identity.cert` is signed by `identity.ca` for `role`'s use, judged by webpki at a
/// moment inside the certificate's validity (expiry is reported apart).
fn chains_to_ca(identity: &Identity, role: Role, expiry: &CertExpiry) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca.clone()).map_err(|e| format!("ca.pem is not a usable CA: {e}"))?;
    let roots = Arc::new(roots);
    let middle = expiry.not_before + expiry.not_after.duration_since(expiry.not_before).unwrap_or_default() / 2;
    let at = UnixTime::since_unix_epoch(middle.duration_since(UNIX_EPOCH).unwrap_or_default());
    if role == Role::Dispatcher {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider).build().map_err(|e| e.to_string())?;
        let name = ServerName::try_from(DISPATCHER_SERVER_NAME).map_err(|e| e.to_string())?;
        verifier.verify_server_cert(&identity.cert, &[], &name, &[], at).map_err(|e| e.to_string())?;
    } else {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider).build().map_err(|e| e.to_string())?;
        verifier.verify_client_cert(&identity.cert, &[], at).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Whether the private key belongs to the certificate, as rustls checks when it loads them.
fn key_matches(identity: &Identity) -> Result<(), String> {
    use rustls::sign::CertifiedKey;
    let provider = rustls::crypto::ring::default_provider();
    let mismatch = |e: rustls::Error| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "it belongs to another certificate (the files come from two issues)".to_owned()
        }
        other => other.to_string(),
    };
    let certified = CertifiedKey::from_der(vec![identity.cert.clone()], identity.key.clone_key(), &provider).map_err(mismatch)?;
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => Err(mismatch(e)),
    }
}

#[cfg(test)]
mod tests;
