//! [`Pki`]: a certificate authority in a directory, made and used only through the real
//! `dispy-dispatcher pki init|issue-node|issue-client|issue-admin` commands, as an operator would,
//! and [`certificate_of`], which reads back what they wrote.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use wire::proto::Role;

use crate::{command, Run, COMMAND_TIMEOUT};

/// A certificate authority on disk, driven through the real `dispy-dispatcher pki` commands.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Runs `pki init --dir DIR`: a new CA plus the dispatcher identity in `DIR/dispatcher`.
    ///
    /// # Panics
    /// If the command fails.
    pub fn init(dir: &Path) -> Pki {
        Pki::init_with(dir, &[])
    }

    /// Runs `pki init --dir DIR EXTRA`, for flags such as `--days 30`.
    ///
    /// # Panics
    /// If the command fails.
    pub fn init_with(dir: &Path, extra: &[&str]) -> Pki {
        let mut init = command("dispy-dispatcher");
        init.arg("pki").arg("init").arg("--dir").arg(dir).args(extra);
        Run::capture(init, COMMAND_TIMEOUT).check_success();
        Pki { dir: dir.to_owned() }
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The dispatcher's identity directory.
    pub fn dispatcher_dir(&self) -> PathBuf {
        self.dir.join("dispatcher")
    }

    /// Runs `pki issue-node NAME` and returns the identity directory.
    ///
    /// # Panics
    /// If the command fails.
    pub fn issue_node(&self, name: &str) -> PathBuf {
        self.try_issue("issue-node", name, &[]).check_success();
        self.dir.join("nodes").join(name)
    }

    /// Runs `pki issue-client NAME` and returns the identity directory.
    ///
    /// # Panics
    /// If the command fails.
    pub fn issue_client(&self, name: &str) -> PathBuf {
        self.try_issue("issue-client", name, &[]).check_success();
        self.dir.join("clients").join(name)
    }

    /// Runs `pki issue-admin NAME` and returns the identity directory of the operator
    /// certificate, which `dispy-submit --tls-dir` takes like a client's.
    ///
    /// # Panics
    /// If the command fails.
    pub fn issue_admin(&self, name: &str) -> PathBuf {
        self.try_issue("issue-admin", name, &[]).check_success();
        self.dir.join("admins").join(name)
    }

    /// Runs `pki ACTION NAME --dir DIR EXTRA` (say `issue-node n1 --days 2`) and returns how it
    /// went, for tests of the command itself.
    pub fn try_issue(&self, action: &str, name: &str, extra: &[&str]) -> Run {
        let mut issue = command("dispy-dispatcher");
        issue.arg("pki").arg(action).arg(name).arg("--dir").arg(&self.dir).args(extra);
        Run::capture(issue, COMMAND_TIMEOUT)
    }
}

/// What an identity directory's `cert.pem` says, as the dispatcher reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The common name.
    pub name: String,
    /// The role (organizational unit).
    pub role: Role,
    /// The end of its validity.
    pub not_after: SystemTime,
}

/// Reads the certificate in the identity directory `dir` (`ca.pem`, `cert.pem`, `key.pem`).
///
/// # Panics
/// If the directory does not hold a dispy identity.
pub fn certificate_of(dir: &Path) -> Certificate {
    let identity = common::pki::Identity::load(dir).unwrap_or_else(|e| panic!("no identity in {}: {e}", dir.display()));
    let peer = common::tls::identity_of(&identity.cert).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let validity = common::enroll::Validity::of(&identity.cert).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    Certificate { name: peer.name, role: peer.role, not_after: validity.not_after }
}
