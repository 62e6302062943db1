//! Node enrolment with one-time join tokens, certificate renewal, and revocation of node, client
//! and operator certificates by name: the dispatcher's side.
//!
//! An operator runs `dispy-dispatcher token create`, which stores a token in the state directory
//! ([`TokenStore`]) and prints it (format in `common::enroll`). On the new node,
//! `dispy-node join ADDR TOKEN` makes a key, dials without a client certificate and pins our CA
//! by the token's fingerprint. [`serve_enrollment`] then holds this conversation on the control
//! stream, and closes the connection:
//!
//! ```text
//! node → Hello { role: Node }        ← HelloReply::Welcome, or Refused (version, role, disabled)
//! node → EnrollRequest               ← EnrollReply::Issued { cert, CA, expiry } or Refused
//! ```
//!
//! The certificate is signed with the CA key in `ca_dir` (`common::enroll::CaSigner`) for the CSR's public key
//! only: the name is the token's (or, for a token without one, the requested one), the role is
//! always `node` whatever the request asks, the lifetime is `enrolled_cert_validity`; client and
//! operator certificates come only from `pki issue-*`. A token works once: it is redeemed by
//! an atomic rename. A connected node renews its certificate on a bidirectional stream of its
//! own, served by [`watch_peer`], which runs beside every node, client and operator session and
//! also closes the connection of a peer revoked while connected. Revoked names (one
//! [`RevocationList`] per [`Revocable`] role) are refused at connection, and for nodes at
//! enrolment and renewal too.
//!
//! Every refusal is sent to the peer with its reason and logged.

mod store;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::enroll::{check_node_name, CaSigner, CertRequest, Issued, KeyError, SignError, TokenSecret};
use common::net::{Connection, FramedRecv, FramedSend, StreamError};
use wire::proto::{EnrollReply, EnrollRequest, Hello, HelloReply, RenewRequest, Role, PROTOCOL_VERSION};
use common::tls::PeerIdentity;
use thiserror::Error;
use tracing::{debug, info, warn};

pub use self::store::{Revocable, RevocationList, StoreError, TokenProblem, TokenRecord, TokenStore};
use crate::config::DispatcherConfig;

/// How long an enrolling peer or one renewal may take.
const CONVERSATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest enrolment message; a request is a few hundred bytes.
const MAX_ENROLL_MESSAGE: usize = 64 << 10;
/// How often a connected peer's revocation is checked.
const REVOCATION_CHECK: Duration = Duration::from_secs(2);
/// QUIC close code for a revoked peer, at connection and while connected.
pub(crate) const CLOSE_REVOKED: u32 = 4;

/// Why a node was not given a certificate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// Enrolment is switched off or cannot work on this dispatcher.
    #[error("enrolment is disabled on this dispatcher: {0}")]
    Disabled(String),
    /// The token is unknown, used or expired.
    #[error(transparent)]
    Token(#[from] TokenProblem),
    /// The token secret has the wrong length.
    #[error("malformed join token: the secret must be {} bytes", common::enroll::SECRET_LEN)]
    MalformedToken,
    /// The certificate signing request is unusable, or signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The node name is not allowed.
    #[error(transparent)]
    Name(#[from] KeyError),
    /// The node is revoked.
    #[error("node {0:?} is revoked; an operator can run `dispy-dispatcher nodes unrevoke {0}`")]
    Revoked(String),
    /// A peer other than a node asked for a node certificate.
    #[error("only nodes can enrol or renew here, not a {0}")]
    NotANode(Role),
}

impl EnrollError {
    /// The reason given to the peer: everything but our own failures, which stay in our log.
    fn for_peer(&self) -> String {
        match self {
            EnrollError::Sign(SignError::Ca { .. } | SignError::Sign(_)) | EnrollError::Token(TokenProblem::Store(_)) => {
                "the dispatcher could not issue a certificate; its log says why".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// Enrolment state shared by the connection tasks: the CA that signs enrolled nodes, the
/// outstanding join tokens and the revoked names of each role.
#[derive(Clone)]
pub struct Enrollment {
    inner: Arc<Inner>,
}

struct Inner {
    /// The CA and token store, or why enrolment is off (said to peers as is).
    enabled: Result<(CaSigner, TokenStore), String>,
    /// One list per [`Revocable`] role; a dispatcher certificate has none.
    revoked: HashMap<Role, RevocationList>,
    validity: Duration,
    /// When each node's certificate ends, by name: the one it connected with, or the one it was
    /// renewed with since, for `dispy-submit nodes`. One entry per node name ever connected.
    node_expiry: std::sync::Mutex<HashMap<String, SystemTime>>,
}

impl fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrollment")
            .field("enabled", &self.inner.enabled.as_ref().map(|(ca, _)| ca.fingerprint()))
            .field("validity", &self.inner.validity)
            .finish_non_exhaustive()
    }
}

impl Enrollment {
    /// Loads the CA from `ca_dir` and opens the token store and revocation lists in the state
    /// directory. Never fails: problems are logged and turn enrolment off (refusing enrolling
    /// peers with the reason); the revocation lists always work.
    pub fn new(config: &DispatcherConfig) -> Self {
        let enabled = match &config.ca_dir {
            None => {
                info!("node enrolment is off (no ca_dir configured)");
                Err("no ca_dir is configured; an operator can set it in dispatcher.toml".to_owned())
            }
            Some(dir) => match (CaSigner::load(dir, &config.identity.ca), TokenStore::open(&config.state_dir)) {
                (Ok(signer), Ok(tokens)) => {
                    tokens.purge(SystemTime::now());
                    info!(ca = %signer.fingerprint(), validity = ?config.enrolled_cert_validity, "node enrolment is on");
                    Ok((signer, tokens))
                }
                (Err(e), _) => {
                    tracing::error!(error = %e, "node enrolment is off: cannot use the CA");
                    Err("the dispatcher cannot use its CA; its log says why".to_owned())
                }
                (_, Err(e)) => {
                    tracing::error!(error = %e, "node enrolment is off: cannot use the token store");
                    Err("the dispatcher cannot use its token store; its log says why".to_owned())
                }
            },
        };
        Self {
            inner: Arc::new(Inner {
                enabled,
                revoked: Revocable::ALL
                    .into_iter()
                    .map(|kind| (kind.role(), RevocationList::new(&config.state_dir, kind)))
                    .collect(),
                validity: config.enrolled_cert_validity,
                node_expiry: std::sync::Mutex::default(),
            }),
        }
    }

    /// Records that node `name`'s certificate ends at `not_after` (at connection and renewal).
    pub fn note_node_certificate(&self, name: &str, not_after: SystemTime) {
        // Only inserts and lookups happen under this lock; a poisoned map is still whole.
        self.inner.node_expiry.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), not_after);
    }

    /// When node `name`'s certificate ends, as last recorded.
    pub fn node_certificate_expiry(&self, name: &str) -> Option<SystemTime> {
        self.inner.node_expiry.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied()
    }

    /// Whether the certificate name `name` has been revoked for `role`.
    pub fn is_revoked(&self, role: Role, name: &str) -> bool {
        self.inner.revoked.get(&role).is_some_and(|list| list.contains(name))
    }

    /// Why `peer` may not stay connected, if it is revoked: the reason its connection is closed
    /// with, which `dispy-submit` and `dispy-node` show.
    pub fn revocation(&self, peer: &PeerIdentity) -> Option<String> {
        self.is_revoked(peer.role, &peer.name)
            .then(|| format!("the certificate of {} {:?} is revoked on this dispatcher", peer.role, peer.name))
    }

    /// Redeems a join token for a certificate. Everything is checked before the token is
    /// spent, so a refused request (bad CSR, revoked name) leaves the token usable.
    ///
    /// # Errors
    /// [`EnrollError`] saying why nothing was issued.
    pub fn enroll(&self, request: &EnrollRequest, now: SystemTime) -> Result<Issued, EnrollError> {
        let (signer, tokens) = self.enabled()?;
        let secret = TokenSecret::from_slice(&request.token_secret).ok_or(EnrollError::MalformedToken)?;
        let record = tokens.lookup(&secret, now)?;
        let name = record.name.clone().unwrap_or_else(|| request.name.clone());
        check_node_name(&name)?;
        if self.is_revoked(Role::Node, &name) {
            return Err(EnrollError::Revoked(name));
        }
        let csr = CertRequest::parse(&request.csr_der)?;
        tokens.claim(&secret)?;
        let issued = signer.sign_node(&csr, &name, self.inner.validity, now)?;
        info!(
            node = %name,
            requested = %request.name,
            token = &record.id[..12],
            valid_until = %common::enroll::format_utc(issued.valid_until),
            "node enrolled"
        );
        Ok(issued)
    }

    /// Issues a new certificate, for a new key, to the connected node `peer`.
    ///
    /// # Errors
    /// [`EnrollError`] saying why nothing was issued.
    pub fn renew(&self, peer: &PeerIdentity, request: &RenewRequest, now: SystemTime) -> Result<Issued, EnrollError> {
        let (signer, _) = self.enabled()?;
        if peer.role != Role::Node {
            return Err(EnrollError::NotANode(peer.role));
        }
        check_node_name(&peer.name)?;
        if self.is_revoked(Role::Node, &peer.name) {
            return Err(EnrollError::Revoked(peer.name.clone()));
        }
        let csr = CertRequest::parse(&request.csr_der)?;
        let issued = signer.sign_node(&csr, &peer.name, self.inner.validity, now)?;
        self.note_node_certificate(&peer.name, issued.valid_until);
        info!(node = %peer.name, valid_until = %common::enroll::format_utc(issued.valid_until), "node certificate renewed");
        Ok(issued)
    }

    fn enabled(&self) -> Result<&(CaSigner, TokenStore), EnrollError> {
        self.inner.enabled.as_ref().map_err(|reason| EnrollError::Disabled(reason.clone()))
    }

    fn reply(&self, issued: Result<Issued, EnrollError>) -> EnrollReply {
        match (issued, self.enabled()) {
            (Ok(issued), Ok((signer, _))) => EnrollReply::Issued {
                cert_pem: issued.cert_pem,
                ca_pem: signer.ca_pem().to_owned(),
                valid_until_unix: issued.valid_until.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            },
            (Err(e), _) | (_, Err(e)) => EnrollReply::Refused { reason: e.for_peer() },
        }
    }
}

/// Serves a connection that presented no certificate: it may only enrol (see the module
/// documentation). Logs the outcome and closes the connection.
pub async fn serve_enrollment(conn: &quinn::Connection, enrollment: &Enrollment) {
    match tokio::time::timeout(CONVERSATION_TIMEOUT, converse(conn, enrollment)).await {
        Err(_) => {
            warn!("enrolment refused: the peer took longer than 10 s");
            conn.close(1u32.into(), b"enrolment timed out");
        }
        Ok(Err(e)) if e.is_connection_lost() => debug!(error = %e, "enrolling peer went away"),
        Ok(Err(e)) => {
            warn!(error = %e, "enrolment failed");
            conn.close(1u32.into(), b"a client certificate or a join token is required");
        }
        Ok(Ok(())) => {
            // Let the reply arrive: the node closes once it has it.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            conn.close(0u32.into(), b"enrolment done");
        }
    }
}

async fn converse(conn: &quinn::Connection, enrollment: &Enrollment) -> Result<(), StreamError> {
    let mut control = Connection::accept(conn, MAX_ENROLL_MESSAGE).await?;
    let hello: Hello = control.recv.expect_frame().await?;
    let refusal = if hello.protocol_version != PROTOCOL_VERSION {
        Some(format!(
            "protocol version {} is not supported; this dispatcher speaks version {PROTOCOL_VERSION}",
            hello.protocol_version
        ))
    } else if hello.role != Role::Node {
        Some(format!(
            "a {} needs a certificate signed by the cluster CA (only nodes can enrol with a join token)",
            hello.role
        ))
    } else {
        enrollment.enabled().err().map(|e| e.to_string())
    };
    if let Some(reason) = refusal {
        warn!(role = %hello.role, software = %hello.software, %reason, "enrolment refused");
        control.write_frame(&HelloReply::Refused { reason }).await?;
        return control.send.finish().await;
    }
    control
        .write_frame(&HelloReply::Welcome { protocol_version: PROTOCOL_VERSION, peer_name: String::new() })
        .await?;
    let issued = match control.recv.expect_frame::<EnrollRequest>().await {
        Ok(request) => enrollment.enroll(&request, SystemTime::now()).inspect_err(|e| {
            warn!(requested = %request.name, software = %hello.software, reason = %e, "enrolment refused");
        }),
        Err(StreamError::Frame(e)) => {
            warn!(error = %e, "enrolment refused: not an enrolment request");
            Err(SignError::MalformedCsr(format!("expected an enrolment request: {e}")).into())
        }
        Err(e) => return Err(e),
    };
    control.write_frame(&enrollment.reply(issued)).await?;
    control.send.finish().await
}

/// Runs beside a connected peer's session (node, client or operator): closes the connection once
/// the peer is revoked, and answers certificate renewal requests, each on a bidirectional stream
/// the peer opens (one [`RenewRequest`], one [`EnrollReply`]; only nodes get a certificate).
/// Returns only when the connection is gone, so it can sit in the session's `select!`.
///
/// # Errors
/// The [`StreamError`] that ended the connection.
pub async fn watch_peer(conn: &quinn::Connection, peer: &PeerIdentity, enrollment: &Enrollment) -> Result<(), StreamError> {
    let mut check = tokio::time::interval(REVOCATION_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            stream = conn.accept_bi() => {
                let (send, recv) = stream?;
                let mut stream = Connection { send: FramedSend::new(send), recv: FramedRecv::new(recv, MAX_ENROLL_MESSAGE) };
                match tokio::time::timeout(CONVERSATION_TIMEOUT, renew_one(&mut stream, peer, enrollment)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if e.is_connection_lost() => return Err(e),
                    Ok(Err(e)) => warn!(error = %e, "renewal stream failed"),
                    Err(_) => warn!("renewal refused: the node took longer than 10 s"),
                }
            }
            _ = check.tick() => {
                if let Some(reason) = enrollment.revocation(peer) {
                    warn!(peer = %peer.name, role = %peer.role, "closing the connection of a revoked certificate");
                    conn.close(CLOSE_REVOKED.into(), reason.as_bytes());
                }
            }
        }
    }
}

async fn renew_one(stream: &mut Connection, peer: &PeerIdentity, enrollment: &Enrollment) -> Result<(), StreamError> {
    let issued = match stream.recv.expect_frame::<RenewRequest>().await {
        Ok(request) => enrollment.renew(peer, &request, SystemTime::now()),
        Err(StreamError::Frame(e)) => Err(SignError::MalformedCsr(format!("expected a renewal request: {e}")).into()),
        Err(e) => return Err(e),
    };
    if let Err(e) = &issued {
        warn!(node = %peer.name, reason = %e, "renewal refused");
    }
    stream.write_frame(&enrollment.reply(issued)).await?;
    stream.send.finish().await
}

#[cfg(test)]
mod tests;
