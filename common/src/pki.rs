//! The cluster's certificate authority: making it, issuing role certificates, and the on-disk
//! layout the daemons read.
//!
//! A certificate's subject carries the peer's name (CN) and role (OU: `dispatcher`, `node`,
//! `client` or `operator`); the dispatcher takes the role from there. The dispatcher's certificate also names
//! [`DISPATCHER_SERVER_NAME`], which is what nodes and clients verify, so any address works.
//!
//! An identity on disk is a directory holding `ca.pem`, `cert.pem` and `key.pem`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;

use wire::proto::Role;

/// The TLS server name in every dispatcher certificate; clients verify this, not an address.
pub const DISPATCHER_SERVER_NAME: &str = "dispatcher.dispy";

/// Validity, in days, of certificates issued by `pki init` and `pki issue-*` without `--days`.
pub const DEFAULT_CERT_DAYS: u32 = 365;

/// [`DEFAULT_CERT_DAYS`] as a duration, for in-memory identities (`--local`, tests, benches).
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(DEFAULT_CERT_DAYS as u64 * 24 * 3600);

/// The longest `--days` accepted: the CA's own lifetime, past which a certificate is useless.
pub const MAX_CERT_DAYS: u32 = CA_DAYS;

const CA_DAYS: u32 = 10 * 365;
const DAY: Duration = Duration::from_secs(24 * 3600);
const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// A PKI operation that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Reading or writing a PKI file failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("failed to generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// `pki init` found an existing CA and will not overwrite it.
    #[error("{0} already holds a CA; refusing to overwrite it")]
    AlreadyInitialised(PathBuf),
    /// A certificate lifetime of no days, or of more than the CA's.
    #[error("a certificate must be valid for 1 to {MAX_CERT_DAYS} days (the CA's own lifetime), not {0}")]
    BadValidity(u32),
}

/// The lifetime of a certificate valid for `days` days.
///
/// # Errors
/// [`PkiError::BadValidity`] unless `days` is between 1 and [`MAX_CERT_DAYS`].
pub fn validity_days(days: u32) -> Result<Duration, PkiError> {
    if days == 0 || days > MAX_CERT_DAYS {
        return Err(PkiError::BadValidity(days));
    }
    Ok(DAY * days)
}

/// A certificate with its private key, in PEM and DER.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// The cluster CA: its certificate and the key that signs every other certificate.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl CertificateAuthority {
    /// Makes a new CA with a fresh key; `--local` keeps it in memory only.
    ///
    /// # Errors
    /// [`PkiError::Generate`] if key generation or signing fails.
    pub fn generate(cluster_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("dispy CA {cluster_name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, DAY * CA_DAYS);
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// Loads a CA written by [`CertificateAuthority::save`].
    ///
    /// # Errors
    /// [`PkiError`] when a file is missing or not a CA certificate and key.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|e| PkiError::BadFile { path: key_path, reason: e.to_string() })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| PkiError::BadFile { path: cert_path, reason: e.to_string() })?;
        Ok(Self { issuer, cert_pem })
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`, refusing to overwrite a CA.
    ///
    /// # Errors
    /// [`PkiError::AlreadyInitialised`] or an I/O error.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        if dir.join(CA_KEY_FILE).exists() {
            return Err(PkiError::AlreadyInitialised(dir.to_owned()));
        }
        write(&dir.join(CA_CERT_FILE), &self.cert_pem, false)?;
        write(&dir.join(CA_KEY_FILE), &self.issuer.key().serialize_pem(), true)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `name` in `role`, with a fresh key, valid for `validity`.
    ///
    /// # Errors
    /// [`PkiError::Generate`] if signing fails (for example an unusable name).
    pub fn issue(&self, role: Role, name: &str, validity: Duration) -> Result<IssuedCert, PkiError> {
        let now = std::time::SystemTime::now();
        // Allow for clocks a little behind ours.
        self.issue_between(role, name, now - Duration::from_secs(3600), now + validity)
    }

    /// Issues a certificate valid from `not_before` to `not_after`, which may both be past: tests
    /// of expiry use it (`issue` starts an hour ago and lasts a given time).
    ///
    /// # Errors
    /// As [`CertificateAuthority::issue`].
    pub fn issue_between(
        &self,
        role: Role,
        name: &str,
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let mut sans = vec![format!("{name}.{role}.dispy")];
        let mut usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if role == Role::Dispatcher {
            sans.push(DISPATCHER_SERVER_NAME.to_owned());
            usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationalUnitName, role.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Issues a certificate and returns it as an in-memory [`Identity`] (for `--local` and tests).
    ///
    /// # Errors
    /// As [`CertificateAuthority::issue`].
    pub fn issue_identity(&self, role: Role, name: &str) -> Result<Identity, PkiError> {
        let issued = self.issue(role, name, DEFAULT_CERT_VALIDITY)?;
        Identity::from_pem(&self.cert_pem, &issued.cert_pem, &issued.key_pem, Path::new("<memory>"))
    }

    /// Issues a certificate valid for `validity` and writes it with the CA certificate as an
    /// identity directory.
    ///
    /// # Errors
    /// As [`CertificateAuthority::issue`], or an I/O error.
    pub fn issue_to_dir(&self, role: Role, name: &str, validity: Duration, dir: &Path) -> Result<(), PkiError> {
        self.write_to_dir(&self.issue(role, name, validity)?, dir)
    }

    /// Writes `issued` with the CA certificate as an identity directory (`key.pem` mode 0600).
    ///
    /// # Errors
    /// An I/O error.
    pub fn write_to_dir(&self, issued: &IssuedCert, dir: &Path) -> Result<(), PkiError> {
        write(&dir.join(CA_CERT_FILE), &self.cert_pem, false)?;
        write(&dir.join(CERT_FILE), &issued.cert_pem, false)?;
        write(&dir.join(KEY_FILE), &issued.key_pem, true)
    }
}

/// What a daemon or client presents and trusts: its certificate and key, and the cluster CA.
#[derive(Debug)]
pub struct Identity {
    /// The CA that signs every peer.
    pub ca: CertificateDer<'static>,
    /// This end's certificate.
    pub cert: CertificateDer<'static>,
    /// This end's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self { ca: self.ca.clone(), cert: self.cert.clone(), key: self.key.clone_key() }
    }
}

impl Identity {
    /// Loads `ca.pem`, `cert.pem` and `key.pem` from an identity directory.
    ///
    /// # Errors
    /// [`PkiError`] naming the file that is missing or unusable.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let ca = read(&dir.join(CA_CERT_FILE))?;
        let cert = read(&dir.join(CERT_FILE))?;
        let key = read(&dir.join(KEY_FILE))?;
        Self::from_pem(&ca, &cert, &key, dir)
    }

    /// Builds an identity from PEM text; `origin` names where it came from, for errors.
    ///
    /// # Errors
    /// [`PkiError::BadFile`] when a PEM block is missing or invalid.
    pub fn from_pem(ca: &str, cert: &str, key: &str, origin: &Path) -> Result<Self, PkiError> {
        use rustls_pki_types::pem::PemObject;
        let bad = |file: &str, e: rustls_pki_types::pem::Error| PkiError::BadFile {
            path: origin.join(file),
            reason: e.to_string(),
        };
        Ok(Self {
            ca: CertificateDer::from_pem_slice(ca.as_bytes()).map_err(|e| bad(CA_CERT_FILE, e))?,
            cert: CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| bad(CERT_FILE, e))?,
            key: PrivatePkcs8KeyDer::from_pem_slice(key.as_bytes())
                .map(PrivateKeyDer::Pkcs8)
                .map_err(|e| bad(KEY_FILE, e))?,
        })
    }
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = std::time::SystemTime::now();
    // Allow for clocks a little behind ours.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + validity).into();
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| PkiError::Io { action: "write", path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io_err)?;
    file.write_all(contents.as_bytes()).map_err(io_err)
}
