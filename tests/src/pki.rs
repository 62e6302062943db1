//! [`Pki`]: a certificate authority in a directory, made and used only through the real
//! `dispy-dispatcher pki init|issue-node|issue-client` commands, as an operator would.

use std::path::{Path, PathBuf};

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
        let mut init = command("dispy-dispatcher");
        init.arg("pki").arg("init").arg("--dir").arg(dir);
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
        self.issue("issue-node", name);
        self.dir.join("nodes").join(name)
    }

    /// Runs `pki issue-client NAME` and returns the identity directory.
    ///
    /// # Panics
    /// If the command fails.
    pub fn issue_client(&self, name: &str) -> PathBuf {
        self.issue("issue-client", name);
        self.dir.join("clients").join(name)
    }

    fn issue(&self, action: &str, name: &str) {
        let mut issue = command("dispy-dispatcher");
        issue.arg("pki").arg(action).arg(name).arg("--dir").arg(&self.dir);
        Run::capture(issue, COMMAND_TIMEOUT).check_success();
    }
}
