//! rustls and quinn configuration for the three roles, and reading a peer's role from its
//! certificate.
//!
//! Every connection is mutual TLS 1.3 under the cluster CA: the dispatcher requires a client
//! certificate signed by the CA, and nodes and clients require the dispatcher's certificate to be
//! signed by the same CA and to name [`DISPATCHER_SERVER_NAME`]. Anything else fails the handshake.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use thiserror::Error;

use crate::pki::{Identity, DISPATCHER_SERVER_NAME};
use wire::proto::{Role, ALPN};

/// A TLS set-up or peer-certificate problem.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the certificates or keys.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA certificate could not be used as a trust anchor.
    #[error("invalid CA certificate: {0}")]
    BadCa(String),
    /// The peer presented no certificate.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's certificate does not carry a dispy name and role.
    #[error("peer certificate is not a dispy certificate: {0}")]
    NotDispyCertificate(String),
    /// A new server certificate was refused on reload (the old one stays).
    #[error("{0}")]
    Reload(String),
}

/// Who is on the other end of a connection, according to its verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's common name.
    pub name: String,
    /// The role in the certificate's organizational unit.
    pub role: Role,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(identity: &Identity) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca.clone()).map_err(|e| TlsError::BadCa(e.to_string()))?;
    Ok(roots)
}

/// The dispatcher's QUIC server configuration: presents its certificate followed by the CA's
/// (so an enrolling node can pin the CA by fingerprint), and verifies any client certificate
/// against the cluster CA. A peer without a certificate completes the handshake but may only
/// enrol (the dispatcher checks [`peer_identity`]); one with a foreign certificate is refused.
///
/// # Errors
/// [`TlsError`] when the identity's certificates or key are unusable.
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    server_config_reloadable(identity).map(|(config, _)| config)
}

/// [`server_config`], with the [`ServerCert`] it presents: replacing that certificate changes
/// what new handshakes see, while connections already made keep going (quinn keeps the
/// `ServerConfig`; only the resolver's key changes).
///
/// # Errors
/// [`TlsError`] when the identity's certificates or key are unusable.
pub fn server_config_reloadable(identity: &Identity) -> Result<(quinn::ServerConfig, Arc<ServerCert>), TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(identity)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::BadCa(e.to_string()))?;
    let cert = Arc::new(ServerCert::new(identity)?);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert.clone());
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // The conversion only fails for configs without TLS 1.3, which we just required.
    let quic = QuicServerConfig::try_from(tls).expect("TLS 1.3 is enabled");
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(crate::net::transport_config(crate::net::IDLE_TIMEOUT));
    Ok((config, cert))
}

/// The certificate the dispatcher presents, swappable while it runs (`SIGHUP`): a rustls
/// certificate resolver holding the current chain and key.
#[derive(Debug)]
pub struct ServerCert {
    /// The chain (certificate, then CA) and key presented to every new handshake. Held only to
    /// clone or replace the `Arc`, never across an await.
    current: RwLock<Arc<CertifiedKey>>,
    /// The CA every replacement must be issued under: reloading changes the dispatcher's
    /// certificate, never whom the cluster trusts.
    ca: CertificateDer<'static>,
}

impl ServerCert {
    fn new(identity: &Identity) -> Result<Self, TlsError> {
        Ok(Self { current: RwLock::new(Arc::new(certified_key(identity)?)), ca: identity.ca.clone() })
    }

    /// The certificate presented now.
    pub fn current(&self) -> CertificateDer<'static> {
        // Only clones and swaps of the `Arc` happen under this lock; a poisoned one still
        // holds a whole value.
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.cert[0].clone()
    }

    /// Presents `identity` to every handshake from now on, after checking it: the same CA, a
    /// dispatcher certificate under it that has not expired, and its key.
    ///
    /// # Errors
    /// [`TlsError`] saying why the new identity was refused; the current one stays.
    pub fn replace(&self, identity: &Identity) -> Result<(), TlsError> {
        if identity.ca != self.ca {
            return Err(TlsError::Reload(
                "its ca.pem is not the CA this dispatcher runs under; a new CA needs a restart".into(),
            ));
        }
        let peer = identity_of(&identity.cert)?;
        if peer.role != Role::Dispatcher {
            return Err(TlsError::Reload(format!("cert.pem is a {} certificate, not a dispatcher one", peer.role)));
        }
        let expiry = crate::check::CertExpiry::of(&identity.cert).map_err(TlsError::NotDispyCertificate)?;
        if expiry.expired(std::time::SystemTime::now()) {
            return Err(TlsError::Reload(format!(
                "cert.pem expired at {}",
                crate::enroll::format_utc(expiry.not_after)
            )));
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots(identity)?), provider())
            .build()
            .map_err(|e| TlsError::BadCa(e.to_string()))?;
        let name = rustls_pki_types::ServerName::try_from(DISPATCHER_SERVER_NAME).map_err(|e| TlsError::Reload(e.to_string()))?;
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &identity.cert,
            &[],
            &name,
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .map_err(|e| TlsError::Reload(format!("cert.pem is not a valid dispatcher certificate under the CA: {e}")))?;
        let key = Arc::new(certified_key(identity)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner())))
    }
}

/// The chain `[certificate, CA]` and the key, checked to belong together.
fn certified_key(identity: &Identity) -> Result<CertifiedKey, TlsError> {
    let key = CertifiedKey::from_der(vec![identity.cert.clone(), identity.ca.clone()], identity.key.clone_key(), &provider())?;
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(key),
        Err(e) => Err(e.into()),
    }
}

/// The QUIC client configuration for nodes and clients: presents their certificate, trusts only
/// a dispatcher certificate signed by the cluster CA, and calls the dispatcher dead after
/// [`crate::net::IDLE_TIMEOUT`] of silence.
///
/// # Errors
/// [`TlsError`] when the identity's certificates or key are unusable.
pub fn client_config(identity: &Identity) -> Result<quinn::ClientConfig, TlsError> {
    client_config_with_timeout(identity, crate::net::IDLE_TIMEOUT)
}

/// [`client_config`] calling the dispatcher dead after `dispatcher_timeout` of silence (see
/// [`crate::net::transport_config`]).
///
/// # Errors
/// [`TlsError`] when the identity's certificates or key are unusable.
pub fn client_config_with_timeout(
    identity: &Identity,
    dispatcher_timeout: Duration,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // As in server_config: TLS 1.3 is enabled, so the conversion succeeds.
    let quic = QuicClientConfig::try_from(tls).expect("TLS 1.3 is enabled");
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(crate::net::transport_config(dispatcher_timeout));
    Ok(config)
}

/// The server name clients pass to `Endpoint::connect`.
pub fn dispatcher_server_name() -> &'static str {
    DISPATCHER_SERVER_NAME
}

/// The verified certificate a connection's peer presented, if any.
pub fn peer_certificate(connection: &quinn::Connection) -> Option<CertificateDer<'static>> {
    connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().cloned())
}

/// Reads the verified peer certificate of a connection and returns its name and role.
///
/// # Errors
/// [`TlsError`] when there is no certificate or it lacks a dispy name and role.
pub fn peer_identity(connection: &quinn::Connection) -> Result<PeerIdentity, TlsError> {
    identity_of(&peer_certificate(connection).ok_or(TlsError::NoPeerCertificate)?)
}

/// Reads the dispy name and role out of a certificate.
///
/// # Errors
/// [`TlsError::NotDispyCertificate`] when the subject lacks a CN or a known role OU.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<PeerIdentity, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| TlsError::NotDispyCertificate(e.to_string()))?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|n| n.as_str().ok())
        .ok_or_else(|| TlsError::NotDispyCertificate("no common name".into()))?;
    let role_text = subject
        .iter_organizational_unit()
        .next()
        .and_then(|n| n.as_str().ok())
        .ok_or_else(|| TlsError::NotDispyCertificate("no role (organizational unit)".into()))?;
    let role = Role::parse(role_text)
        .ok_or_else(|| TlsError::NotDispyCertificate(format!("unknown role {role_text:?}")))?;
    Ok(PeerIdentity { name: name.to_owned(), role })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::CertificateAuthority;

    #[test]
    fn issued_certificates_carry_name_and_role() {
        let ca = CertificateAuthority::generate("test").expect("ca");
        for role in [Role::Dispatcher, Role::Node, Role::Client] {
            let id = ca.issue_identity(role, "alpha-1").expect("issue");
            assert_eq!(identity_of(&id.cert).expect("parse"), PeerIdentity { name: "alpha-1".into(), role });
            server_config(&id).expect("server config builds");
            client_config(&id).expect("client config builds");
        }
    }
}
