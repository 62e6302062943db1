//! What a node and the dispatcher must agree on to enrol a node with a one-time join token: the
//! token's text format, the CA fingerprint it pins, the TLS verifier that enforces the pin, the
//! certificate request a node sends, and the node-name rules.
//!
//! # Join tokens
//!
//! `dispy-dispatcher token create` prints a token such as
//!
//! ```text
//! dispy1.8f0c2a9d4e6b1f3a7c5d9e2b4a6c8e0f.3b1d…(64 hex digits in all)…9a
//! ```
//!
//! that is `dispy1` (format and version), a dot, the secret (16 random bytes as 32 lowercase hex
//! digits), a dot, and the SHA-256 fingerprint of the cluster CA certificate's DER (64 hex
//! digits). Upper-case hex is accepted; surrounding whitespace is ignored. The secret proves to
//! the dispatcher that an operator let this node in; the fingerprint proves to the node that it
//! talks to that operator's dispatcher, so the token is all a new node needs. The dispatcher
//! stores only SHA-256 of the secret ([`TokenSecret::id`]), never the secret itself.
//!
//! # The pin
//!
//! A node enrolling has no CA yet. [`PinnedCaVerifier`] accepts the dispatcher only if the last
//! certificate of the chain it sends (the dispatcher sends `[leaf, CA]`) has the token's
//! fingerprint, and the leaf is valid under that CA (checked by webpki through rustls'
//! `WebPkiServerVerifier`) for the name `dispatcher.dispy`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::crypto::rustls::QuicClientConfig;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

use wire::proto::{Role, ALPN};

/// The first part of every join token: the format and its version.
pub const TOKEN_PREFIX: &str = "dispy1";
/// Bytes of randomness in a token secret (128 bits).
pub const SECRET_LEN: usize = 16;
/// Bytes in a SHA-256 fingerprint.
pub const FINGERPRINT_LEN: usize = 32;
/// Longest node name; a name is also a DNS label in the certificate (`NAME.node.dispy`).
pub const MAX_NAME_LEN: usize = 63;
/// The organization (O) in the subject of every certificate issued by enrolment or renewal: it
/// marks a certificate its node renews itself, so expiry warnings wait until renewal is overdue
/// (`common::check::CertExpiry`).
pub const ENROLLED_ORGANIZATION: &str = "dispy enrolled node";

/// A join token that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The text does not have the `dispy1.SECRET.FINGERPRINT` shape.
    #[error("not a dispy join token: expected {TOKEN_PREFIX}.SECRET.FINGERPRINT, as printed by `dispy-dispatcher token create`")]
    Shape,
    /// The token is of a format this program does not know (a newer dispy made it).
    #[error("unsupported join token version {0:?}; this program reads {TOKEN_PREFIX} tokens")]
    Version(String),
    /// A part is not hexadecimal or has the wrong length.
    #[error("join token {part} must be {expected} hex digits, found {found:?}")]
    Part {
        /// "secret" or "CA fingerprint".
        part: &'static str,
        /// How many hex digits it must have.
        expected: usize,
        /// What was there (the fingerprint is public; a bad secret is shown only by length).
        found: String,
    },
}

/// A key, certificate request or certificate problem in enrolment.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Making a key or a certificate request failed.
    #[error("failed to make a key or certificate request: {0}")]
    Generate(#[from] rcgen::Error),
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// A node name breaks the rules of [`check_node_name`].
    #[error("invalid node name {name:?}: {reason}")]
    Name {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// A node certificate could not be issued.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SignError {
    /// The certificate signing request is not one (or its signature is wrong).
    #[error("malformed certificate signing request: {0}")]
    MalformedCsr(String),
    /// The CA directory cannot be used.
    #[error("CA in {dir}: {reason}")]
    Ca {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rcgen could not sign.
    #[error("failed to sign a node certificate: {0}")]
    Sign(#[from] rcgen::Error),
}

/// The secret half of a join token. Its `Debug` output hides the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(pub [u8; SECRET_LEN]);

impl TokenSecret {
    /// A fresh random secret.
    ///
    /// # Errors
    /// [`KeyError::Random`] if the system random number generator fails.
    pub fn generate() -> Result<Self, KeyError> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; SECRET_LEN];
        ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// Reads a secret from the bytes of an [`wire::proto::EnrollRequest`]; `None` when the
    /// length is wrong.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The name the dispatcher stores the token under: SHA-256 of the secret, in hex. Knowing it
    /// does not let anyone redeem the token.
    pub fn id(&self) -> String {
        hex(ring::digest::digest(&ring::digest::SHA256, &self.0).as_ref())
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

/// The SHA-256 digest of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

impl Fingerprint {
    /// The fingerprint of `der`.
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut bytes = [0u8; FINGERPRINT_LEN];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A join token: the secret to redeem and the fingerprint of the CA to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Proves to the dispatcher that an operator admitted this node.
    pub secret: TokenSecret,
    /// The cluster CA the dispatcher must present.
    pub ca_fingerprint: Fingerprint,
}

impl fmt::Display for JoinToken {
    /// The token text, `dispy1.SECRET.FINGERPRINT` (see the module documentation).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}.{}.{}", hex(&self.secret.0), self.ca_fingerprint)
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, TokenError> {
        let mut parts = text.trim().split('.');
        let (Some(version), Some(secret), Some(fingerprint), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Shape);
        };
        if version != TOKEN_PREFIX {
            return Err(if version.starts_with("dispy") { TokenError::Version(version.to_owned()) } else { TokenError::Shape });
        }
        let secret = unhex::<SECRET_LEN>(secret).ok_or_else(|| TokenError::Part {
            part: "secret",
            expected: 2 * SECRET_LEN,
            found: format!("{} characters", secret.len()),
        })?;
        let fingerprint = unhex::<FINGERPRINT_LEN>(fingerprint).ok_or_else(|| TokenError::Part {
            part: "CA fingerprint",
            expected: 2 * FINGERPRINT_LEN,
            found: fingerprint.to_owned(),
        })?;
        Ok(Self { secret: TokenSecret(secret), ca_fingerprint: Fingerprint(fingerprint) })
    }
}

/// Checks that `name` can name a node: 1 to 63 ASCII letters, digits, `-`, `_` or `.`, starting
/// with a letter or digit. The name becomes the certificate's common name, a DNS name
/// (`NAME.node.dispy`) and a line of the revocation list, so nothing else is allowed.
///
/// # Errors
/// [`KeyError::Name`] saying which rule the name breaks.
pub fn check_node_name(name: &str) -> Result<(), KeyError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 63 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("it must start with a letter or digit")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        Some("only letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KeyError::Name { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

/// A fresh key pair and a certificate signing request for it.
pub struct NodeKey {
    /// The private key, PKCS#8 PEM, for the node's `key.pem`.
    pub key_pem: String,
    /// The request (DER): the public key, signed by the private key, subject CN = the name.
    pub csr_der: Vec<u8>,
}

impl NodeKey {
    /// Makes a key on this machine and a request naming `name`; the key never leaves the node.
    ///
    /// # Errors
    /// [`KeyError::Generate`] if key generation or encoding fails.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let csr = params.serialize_request(&key)?;
        Ok(Self { key_pem: key.serialize_pem(), csr_der: csr.der().to_vec() })
    }
}

/// A parsed certificate signing request whose signature checked out, so its sender holds the
/// private key of its public key.
#[derive(Debug, Clone)]
pub struct CertRequest(CertificateSigningRequestParams);

impl CertRequest {
    /// Parses and verifies a request (DER).
    ///
    /// # Errors
    /// [`SignError::MalformedCsr`].
    pub fn parse(der: &[u8]) -> Result<Self, SignError> {
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
            .map(Self)
            .map_err(|e| SignError::MalformedCsr(e.to_string()))
    }
}

/// A certificate issued to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The node's name (the certificate's CN).
    pub name: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// When it expires.
    pub valid_until: SystemTime,
}

/// The cluster CA, loaded from the `pki init` directory to sign enrolled nodes' requests.
pub struct CaSigner {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    fingerprint: Fingerprint,
}

impl fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaSigner").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl CaSigner {
    /// Loads `dir/ca.pem` and `dir/ca.key` and checks the CA is `presented`, the one the
    /// dispatcher sends (from its `tls_dir`), so what it signs is trusted by the cluster and the
    /// fingerprint in tokens is what nodes will see.
    ///
    /// # Errors
    /// [`SignError::Ca`] naming the problem.
    pub fn load(dir: &Path, presented: &CertificateDer<'_>) -> Result<Self, SignError> {
        let fail = |reason: String| SignError::Ca { dir: dir.to_owned(), reason };
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).map_err(|e| fail(format!("cannot read {file}: {e}")));
        let ca_pem = read("ca.pem")?;
        let der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| fail(format!("ca.pem: {e}")))?;
        if der.as_ref() != presented.as_ref() {
            return Err(fail(
                "ca.pem is not the CA in the dispatcher's tls_dir; point ca_dir at the `pki init` directory that made it".into(),
            ));
        }
        let key = KeyPair::from_pem(&read("ca.key")?).map_err(|e| fail(format!("ca.key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| fail(format!("ca.pem and ca.key: {e}")))?;
        Ok(Self { issuer, fingerprint: Fingerprint::of(&der), ca_pem })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The fingerprint join tokens carry.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Issues a node certificate named `name` for the public key of `request`, valid for
    /// `validity` from `now`. Nothing else in the request is used: the role is always `node`,
    /// the usage client authentication only.
    ///
    /// # Errors
    /// [`SignError::Sign`] if rcgen cannot sign (for example an unusable name).
    pub fn sign_node(&self, request: &CertRequest, name: &str, validity: Duration, now: SystemTime) -> Result<Issued, SignError> {
        let mut params = CertificateParams::new(vec![format!("{name}.{}.dispy", Role::Node)])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationalUnitName, Role::Node.as_str());
        params.distinguished_name.push(DnType::OrganizationName, ENROLLED_ORGANIZATION);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        // Allow for node clocks a little behind ours, as `pki` does.
        params.not_before = (now - Duration::from_secs(3600)).into();
        let valid_until = now + validity;
        params.not_after = valid_until.into();
        let signed = CertificateSigningRequestParams { params, public_key: request.0.public_key.clone() };
        let cert = signed.signed_by(&self.issuer)?;
        Ok(Issued { name: name.to_owned(), cert_pem: cert.pem(), valid_until })
    }
}

/// When a certificate starts and stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `notBefore`.
    pub not_before: SystemTime,
    /// `notAfter`.
    pub not_after: SystemTime,
}

impl Validity {
    /// Reads the validity period of a certificate.
    ///
    /// # Errors
    /// [`KeyError::Certificate`] when `der` is not a certificate.
    pub fn of(der: &[u8]) -> Result<Self, KeyError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| KeyError::Certificate(e.to_string()))?;
        let at = |seconds: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
        Ok(Self {
            not_before: at(cert.validity().not_before.timestamp()),
            not_after: at(cert.validity().not_after.timestamp()),
        })
    }

    /// When renewal is due: once less than a third of the lifetime is left.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        self.not_after.checked_sub(lifetime / 3).unwrap_or(self.not_before)
    }
}

/// Accepts a dispatcher only if the last certificate of its chain is the CA pinned by a join
/// token and the leaf is valid under that CA for the name `dispatcher.dispy`.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pinned: Fingerprint,
    provider: Arc<CryptoProvider>,
    /// Set when a dispatcher presented another CA (or none), so the caller can tell the
    /// operator the token does not belong to this dispatcher rather than "handshake failed".
    mismatch: AtomicBool,
}

impl PinnedCaVerifier {
    /// A verifier pinning `fingerprint`.
    pub fn new(fingerprint: Fingerprint) -> Self {
        Self { pinned: fingerprint, provider: provider(), mismatch: AtomicBool::new(false) }
    }

    /// Whether a handshake was refused because the dispatcher's CA is not the pinned one.
    pub fn saw_other_ca(&self) -> bool {
        self.mismatch.load(Ordering::Relaxed)
    }

    fn refuse_ca(&self) -> rustls::Error {
        self.mismatch.store(true, Ordering::Relaxed);
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((ca, rest)) = intermediates.split_last() else { return Err(self.refuse_ca()) };
        if Fingerprint::of(ca) != self.pinned {
            return Err(self.refuse_ca());
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&self.provider))
            .build()
            .map_err(|e| rustls::Error::General(format!("unusable pinned CA: {e}")))?;
        webpki.verify_server_cert(end_entity, rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The QUIC client configuration of an enrolling node: no client certificate, and the dispatcher
/// checked by a [`PinnedCaVerifier`] for `token`, returned too so a failed handshake can be
/// explained.
///
/// # Errors
/// A [`rustls::Error`] if the TLS configuration cannot be built (a bug, not bad input).
pub fn enrolment_client_config(token: &JoinToken) -> Result<(quinn::ClientConfig, Arc<PinnedCaVerifier>), rustls::Error> {
    let verifier = Arc::new(PinnedCaVerifier::new(token.ca_fingerprint));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| rustls::Error::General(e.to_string()))?;
    Ok((quinn::ClientConfig::new(Arc::new(quic)), verifier))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A time as `YYYY-MM-DD HH:MM:SS UTC`, for messages about expiry.
pub fn format_utc(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Exactly `N` bytes from `2N` hex digits of either case.
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    // `from_str_radix` alone would accept a sign ("+f"), so check the digits first.
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
