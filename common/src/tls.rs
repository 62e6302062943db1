//! rustls and quinn configuration for the three roles, and reading a peer's role from its
//! certificate.
//!
//! Every connection is mutual TLS 1.3 under the cluster CA: the dispatcher requires a client
//! certificate signed by the CA, and nodes and clients require the dispatcher's certificate to be
//! signed by the same CA and to name [`DISPATCHER_SERVER_NAME`]. Anything else fails the handshake.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
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
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(identity)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::BadCa(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone(), identity.ca.clone()], identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // The conversion only fails for configs without TLS 1.3, which we just required.
    let quic = QuicServerConfig::try_from(tls).expect("TLS 1.3 is enabled");
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(crate::net::transport_config(crate::net::IDLE_TIMEOUT));
    Ok(config)
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

/// Reads the verified peer certificate of a connection and returns its name and role.
///
/// # Errors
/// [`TlsError`] when there is no certificate or it lacks a dispy name and role.
pub fn peer_identity(connection: &quinn::Connection) -> Result<PeerIdentity, TlsError> {
    let certs = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(TlsError::NoPeerCertificate)?;
    let first = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    identity_of(first)
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
