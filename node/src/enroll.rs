//! The node's side of enrolment: [`join`] turns a one-time join token into this node's identity
//! directory (`ca.pem`, `cert.pem`, `key.pem`), and [`renew`] / [`keep_renewed`] replace the
//! certificate over the normal connection before it expires.
//!
//! The key is made here and never leaves the machine: the dispatcher receives a certificate
//! signing request and signs only its public key. While joining, the node has no CA to trust
//! yet, so it pins the CA by the token's fingerprint (`common::enroll::PinnedCaVerifier`): a
//! dispatcher presenting any other CA is refused before anything is sent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::enroll::{
    check_node_name, enrolment_client_config, format_utc, Fingerprint, JoinToken, KeyError, NodeKey, Validity,
};
use wire::frame::DEFAULT_MAX_MESSAGE;
use common::net::{Connection, FramedRecv, FramedSend, StreamError};
use common::pki::Identity;
use wire::proto::{EnrollReply, EnrollRequest, Hello, HelloReply, RenewRequest, Role, PROTOCOL_VERSION};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

/// How long the dispatcher may take to answer an enrolment or renewal.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest single sleep while waiting for renewal to fall due, so a suspended machine or a
/// clock step is noticed within this.
const RECHECK: Duration = Duration::from_secs(3600);
/// Shortest wait before retrying a failed renewal.
const RETRY_MIN: Duration = Duration::from_secs(60);

/// Why joining or renewing failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JoinError {
    /// A key, request or name problem on this side.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The dispatcher could not be reached, or the handshake failed for a reason other than
    /// its CA.
    #[error("failed to connect to {address}: {reason}")]
    Connect {
        /// Where we dialled.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The dispatcher presented a CA other than the one the token pins.
    #[error("the dispatcher's CA does not match the token: {address} is not the dispatcher that made it (or its CA was replaced); nothing was sent")]
    CaMismatch {
        /// Where we dialled.
        address: String,
    },
    /// The dispatcher said no.
    #[error("the dispatcher refused: {0}")]
    Refused(String),
    /// A stream failed or carried something unexpected.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The dispatcher did not answer in time.
    #[error("the dispatcher did not answer within {0:?}")]
    Timeout(Duration),
    /// What the dispatcher issued cannot be used.
    #[error("the dispatcher issued an unusable certificate: {0}")]
    BadCertificate(String),
    /// The identity directory already holds an identity.
    #[error("{} already holds a node identity (cert.pem, key.pem); pass --force to replace it", .0.display())]
    Exists(PathBuf),
    /// Writing the identity failed.
    #[error("failed to write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What to join and where to put the identity.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The dispatcher, `host:port`.
    pub address: String,
    /// The token from `dispy-dispatcher token create`.
    pub token: JoinToken,
    /// The name to ask for; a token made for a name overrides it.
    pub name: String,
    /// Where to write `ca.pem`, `cert.pem` and `key.pem`; `None` keeps the identity in memory.
    pub tls_dir: Option<PathBuf>,
    /// Whether an existing identity in `tls_dir` may be replaced.
    pub replace: bool,
}

/// A node identity the dispatcher just issued.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The name in the certificate (the token's, if it named one).
    pub name: String,
    /// When the certificate expires.
    pub valid_until: SystemTime,
    /// The identity, as written to the directory (if any).
    pub identity: Identity,
}

/// Enrols this node: makes a key, dials `options.address` without a certificate, trusting only
/// the CA the token pins, redeems the token for a certificate and writes the identity.
///
/// # Errors
/// [`JoinError`] saying what went wrong; [`JoinError::CaMismatch`] when the dispatcher is not
/// the one the token came from.
pub async fn join(options: &JoinOptions) -> Result<Enrolled, JoinError> {
    check_node_name(&options.name)?;
    if let Some(dir) = &options.tls_dir {
        if !options.replace && (dir.join("cert.pem").exists() || dir.join("key.pem").exists()) {
            return Err(JoinError::Exists(dir.clone()));
        }
    }
    let key = NodeKey::generate(&options.name)?;
    let address = options.address.clone();
    let fail = |reason: String| JoinError::Connect { address: address.clone(), reason };
    let (client_config, verifier) = enrolment_client_config(&options.token).map_err(|e| fail(e.to_string()))?;
    let remote = tokio::net::lookup_host(&options.address)
        .await
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address found".into()))?;
    let local: SocketAddr = if remote.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let endpoint = quinn::Endpoint::client(local).map_err(|e| fail(format!("cannot open a UDP socket: {e}")))?;
    let connecting = endpoint
        .connect_with(client_config, remote, common::tls::dispatcher_server_name())
        .map_err(|e| fail(e.to_string()))?;
    let conn = match connecting.await {
        Ok(conn) => conn,
        Err(_) if verifier.saw_other_ca() => return Err(JoinError::CaMismatch { address }),
        Err(e) => return Err(fail(e.to_string())),
    };
    let result = tokio::time::timeout(ANSWER_TIMEOUT, enrol(&conn, options, &key.csr_der)).await;
    conn.close(0u32.into(), b"enrolment done");
    // Let the close reach the dispatcher; it does not matter if it does not.
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    let (cert_pem, ca_pem) = result.map_err(|_| JoinError::Timeout(ANSWER_TIMEOUT))??;
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| JoinError::BadCertificate(format!("its CA: {e}")))?;
    if Fingerprint::of(&ca) != options.token.ca_fingerprint {
        return Err(JoinError::BadCertificate("the CA it sent is not the one the token pins".into()));
    }
    let enrolled = accept(ca, &cert_pem, &key.key_pem)?;
    if let Some(dir) = &options.tls_dir {
        write_identity(dir, Some(&ca_pem), &cert_pem, &key.key_pem)?;
    }
    info!(name = %enrolled.name, valid_until = %format_utc(enrolled.valid_until), "enrolled with the dispatcher");
    Ok(enrolled)
}

/// Hello, then the request; returns the certificate and CA, PEM.
async fn enrol(conn: &quinn::Connection, options: &JoinOptions, csr_der: &[u8]) -> Result<(String, String), JoinError> {
    let mut control = Connection::open(conn, DEFAULT_MAX_MESSAGE).await?;
    control
        .write_frame(&Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Node,
            software: format!("dispy-node {} (join)", env!("CARGO_PKG_VERSION")),
        })
        .await?;
    if let HelloReply::Refused { reason } = control.recv.expect_frame::<HelloReply>().await? {
        return Err(JoinError::Refused(reason));
    }
    control
        .write_frame(&EnrollRequest {
            token_secret: options.token.secret.0.to_vec(),
            csr_der: csr_der.to_vec(),
            name: options.name.clone(),
        })
        .await?;
    match control.recv.expect_frame::<EnrollReply>().await? {
        EnrollReply::Issued { cert_pem, ca_pem, .. } => Ok((cert_pem, ca_pem)),
        EnrollReply::Refused { reason } => Err(JoinError::Refused(reason)),
    }
}

/// Asks the dispatcher, over this node's normal connection `conn`, for a certificate for a new
/// key, and writes it to `tls_dir` (when given) in place of the old one. The CA stays `current`'s.
/// If the files cannot be written (a read-only directory), the new identity is still returned,
/// for use until the daemon restarts, and a warning is logged.
///
/// # Errors
/// [`JoinError`]; a lost connection is [`JoinError::Stream`] with
/// [`StreamError::is_connection_lost`].
pub async fn renew(conn: &quinn::Connection, current: &Identity, tls_dir: Option<&Path>) -> Result<Enrolled, JoinError> {
    let name = common::tls::identity_of(&current.cert).map_err(|e| JoinError::BadCertificate(e.to_string()))?.name;
    let key = NodeKey::generate(&name)?;
    let exchange = async {
        let (send, recv) = conn.open_bi().await.map_err(StreamError::from)?;
        let mut stream = Connection { send: FramedSend::new(send), recv: FramedRecv::new(recv, DEFAULT_MAX_MESSAGE) };
        stream.write_frame(&RenewRequest { csr_der: key.csr_der.clone() }).await?;
        stream.send.finish().await?;
        stream.recv.expect_frame::<EnrollReply>().await
    };
    let reply = tokio::time::timeout(ANSWER_TIMEOUT, exchange).await.map_err(|_| JoinError::Timeout(ANSWER_TIMEOUT))??;
    let cert_pem = match reply {
        EnrollReply::Issued { cert_pem, .. } => cert_pem,
        EnrollReply::Refused { reason } => return Err(JoinError::Refused(reason)),
    };
    // Keep the CA we already trust: a renewal must not change whom this node trusts.
    let enrolled = accept(current.ca.clone(), &cert_pem, &key.key_pem)?;
    if enrolled.name != name {
        return Err(JoinError::BadCertificate(format!("it names {:?}, not {name:?}", enrolled.name)));
    }
    if let Some(dir) = tls_dir {
        if let Err(e) = write_identity(dir, None, &cert_pem, &key.key_pem) {
            warn!(error = %e, "the renewed certificate is in use but could not be saved; after a restart the node presents the old one");
        }
    }
    info!(valid_until = %format_utc(enrolled.valid_until), "certificate renewed");
    Ok(enrolled)
}

/// Keeps this node's certificate fresh over its connection `conn`: waits until a third of the
/// certificate's lifetime is left, renews it ([`renew`]), publishes the new identity on
/// `identity` (so the next dial presents it) and writes it to `tls_dir`; a failed renewal is
/// logged and retried. Returns only when the connection is gone, so it can sit in a session's
/// `select!`.
///
/// # Errors
/// The [`StreamError`] that ended the connection.
pub async fn keep_renewed(
    conn: &quinn::Connection,
    identity: &watch::Sender<Identity>,
    tls_dir: Option<&Path>,
) -> Result<(), StreamError> {
    loop {
        let validity = Validity::of(&identity.borrow().cert);
        let Ok(validity) = validity else {
            // Our own certificate is unreadable: nothing to renew, and the session is fine.
            warn!("cannot read this node's certificate; it will not be renewed");
            return std::future::pending().await;
        };
        if let Ok(wait) = validity.renew_at().duration_since(SystemTime::now()) {
            sleep_or_lose(conn, wait.min(RECHECK)).await?;
            continue;
        }
        let current = identity.borrow().clone();
        match renew(conn, &current, tls_dir).await {
            Ok(enrolled) => {
                let renew_at = Validity::of(&enrolled.identity.cert).map(|v| v.renew_at());
                identity.send_replace(enrolled.identity);
                // A lifetime shorter than the hour certificates are backdated by would make the
                // new certificate due at once; never renew more often than this.
                if renew_at.map_or(true, |at| at <= SystemTime::now()) {
                    sleep_or_lose(conn, RETRY_MIN).await?;
                }
            }
            Err(JoinError::Stream(e)) if e.is_connection_lost() => return Err(e),
            Err(e) => {
                let left = validity.not_after.duration_since(SystemTime::now()).unwrap_or_default();
                let retry = (left / 10).clamp(RETRY_MIN, RECHECK);
                warn!(error = %e, expires = %format_utc(validity.not_after), retry_in = ?retry, "certificate renewal failed");
                sleep_or_lose(conn, retry).await?;
            }
        }
    }
}

/// Sleeps for `duration`, or fails as soon as the connection is gone.
async fn sleep_or_lose(conn: &quinn::Connection, duration: Duration) -> Result<(), StreamError> {
    tokio::select! {
        () = tokio::time::sleep(duration) => Ok(()),
        reason = conn.closed() => Err(StreamError::Connection(reason)),
    }
}

/// Checks what the dispatcher issued is a node certificate for our key under `ca`.
fn accept(ca: CertificateDer<'static>, cert_pem: &str, key_pem: &str) -> Result<Enrolled, JoinError> {
    let bad = |e: &dyn std::fmt::Display| JoinError::BadCertificate(e.to_string());
    let identity = Identity {
        ca,
        cert: CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| bad(&e))?,
        key: PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map(PrivateKeyDer::Pkcs8).map_err(|e| bad(&e))?,
    };
    let peer = common::tls::identity_of(&identity.cert).map_err(|e| bad(&e))?;
    if peer.role != Role::Node {
        return Err(JoinError::BadCertificate(format!("it is a {} certificate", peer.role)));
    }
    // Building a client config checks the certificate matches our key.
    common::tls::client_config(&identity).map_err(|e| bad(&e))?;
    let validity = Validity::of(&identity.cert)?;
    Ok(Enrolled { name: peer.name, valid_until: validity.not_after, identity })
}

/// Writes the identity files: each to a temporary name first, then all renamed into place
/// together (the key before the certificate), so a crash leaves at worst a new key with the old
/// certificate for an instant, never a half-written file.
fn write_identity(dir: &Path, ca_pem: Option<&str>, cert_pem: &str, key_pem: &str) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| JoinError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let mut files = vec![("key.pem", key_pem, 0o600), ("cert.pem", cert_pem, 0o644)];
    if let Some(ca_pem) = ca_pem {
        files.push(("ca.pem", ca_pem, 0o644));
    }
    let mut staged = Vec::new();
    for (name, text, mode) in files {
        let path = dir.join(name);
        let temp = dir.join(format!(".{name}.new"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .map_err(err(&temp))?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(err(&temp))?;
        staged.push((temp, path));
    }
    for (temp, path) in staged {
        std::fs::rename(&temp, &path).map_err(err(&path))?;
    }
    Ok(())
}
