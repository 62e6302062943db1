//! Reloading the dispatcher's certificate while it runs: on SIGHUP (`systemctl reload`),
//! [`CertReloader`] reads `tls_dir` again and, if the new identity is a valid dispatcher
//! certificate under the same CA with its key, presents it to every new handshake. Connections
//! already made, and so their jobs, carry on (quinn keeps its `ServerConfig`; only the resolver's
//! key is swapped, `common::tls::ServerCert`). A new identity that cannot be read or is refused
//! leaves the current one in place, with an error in the log. The reloader also logs the
//! certificate's coming expiry at start and twice a day (`common::check::watch_expiry`).

use std::path::PathBuf;
use std::sync::Arc;

use common::pki::{Identity, PkiError};
use common::tls::{ServerCert, TlsError};
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use tracing::{error, info};

/// Why a reload kept the current certificate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The dispatcher was configured with an in-memory identity (tests, `--local`).
    #[error("this dispatcher has no tls_dir to reload from")]
    NoDirectory,
    /// The files could not be read.
    #[error(transparent)]
    Load(#[from] PkiError),
    /// The new identity is not one this dispatcher may present.
    #[error(transparent)]
    Refused(#[from] TlsError),
}

/// Reloads the certificate a running dispatcher presents; from `Dispatcher::certificate`.
#[derive(Debug, Clone)]
pub struct CertReloader {
    pub(crate) cert: Arc<ServerCert>,
    pub(crate) tls_dir: Option<PathBuf>,
}

impl CertReloader {
    /// The certificate presented now.
    pub fn current(&self) -> CertificateDer<'static> {
        self.cert.current()
    }

    /// Loads `tls_dir` again and presents what is there from now on.
    ///
    /// # Errors
    /// [`ReloadError`]; the current certificate then stays.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let dir = self.tls_dir.as_ref().ok_or(ReloadError::NoDirectory)?;
        self.cert.replace(&Identity::load(dir)?)?;
        Ok(())
    }

    /// Reloads on every SIGHUP of `hups`, logging the outcome, and logs the certificate's coming
    /// expiry now and twice a day. Never returns, so it can sit beside `Dispatcher::run` in a
    /// `select!`.
    pub async fn serve(self, mut hups: tokio::signal::unix::Signal) {
        let this = self.clone();
        let watch = common::check::watch_expiry(move || Some(this.current()), "this dispatcher's");
        tokio::pin!(watch);
        loop {
            tokio::select! {
                () = &mut watch => {}
                received = hups.recv() => {
                    if received.is_none() {
                        // The signal stream ended: nothing more to reload on.
                        return std::future::pending().await;
                    }
                    self.handle_hup();
                }
            }
        }
    }

    fn handle_hup(&self) {
        let dir = self.tls_dir.as_ref().map_or_else(String::new, |d| d.display().to_string());
        match self.reload() {
            Ok(()) => {
                let current = self.current();
                let expires = common::check::CertExpiry::of(&current)
                    .map_or_else(|_| "unknown".to_owned(), |e| common::enroll::format_utc(e.not_after));
                info!(tls_dir = %dir, %expires, "SIGHUP: reloaded the dispatcher's certificate; new connections get it, open ones carry on");
                common::check::log_expiry(&current, "this dispatcher's");
            }
            Err(e) => error!(tls_dir = %dir, error = %e, "SIGHUP: kept the current certificate: the new one cannot be used"),
        }
    }
}
