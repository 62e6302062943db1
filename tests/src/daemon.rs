//! [`Daemon`]: a long-running child process (dispatcher or node) logging to a file, killed on
//! drop, plus the process-level helpers around it: signals, a free UDP port, and memory figures
//! from `/proc`.

use std::fs::File;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::poll_until;

/// Lines of each daemon log shown when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// A long-running child process (dispatcher or node) whose stdout and stderr go to a log file.
/// Dropping it kills the process.
#[derive(Debug)]
pub struct Daemon {
    pub(crate) label: String,
    child: Child,
    log: PathBuf,
    /// Set by [`Daemon::kill`], so [`Cluster::check_all_alive`](crate::Cluster::check_all_alive) skips
    /// processes a test stopped.
    pub(crate) killed: bool,
}

impl Daemon {
    /// Starts `command` with its output appended to `log`.
    ///
    /// # Panics
    /// If the log cannot be created or the process cannot start.
    pub fn spawn(label: &str, mut command: Command, log: &Path) -> Daemon {
        let file = File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let file2 = file.try_clone().unwrap_or_else(|e| panic!("cannot duplicate {}: {e}", log.display()));
        command.stdout(file).stderr(file2);
        let child = command.spawn().unwrap_or_else(|e| panic!("failed to start {label}: {e}"));
        Daemon { label: label.to_owned(), child, log: log.to_owned(), killed: false }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit on its own (a client command, say) and
    /// returns how it ended; `None` if it is still running.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || !self.is_alive());
        self.child.try_wait().ok().flatten()
    }

    /// Asks the process to stop (SIGTERM) and waits for it to exit on its own.
    ///
    /// # Panics
    /// If it is still running after `timeout` (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        signal(self.pid(), "-TERM");
        let exited = poll_until(timeout, || !self.is_alive());
        let tail = if exited { String::new() } else { self.log_tail() };
        self.kill();
        assert!(exited, "{} did not exit within {timeout:?} of SIGTERM\n{tail}", self.label);
        self.child.wait().expect("an exited child has a status")
    }

    /// Sends the process SIGTERM and returns at once (a second one, say, while it drains).
    pub fn send_sigterm(&self) {
        signal(self.pid(), "-TERM");
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        self.killed = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of the log under a header naming the process, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "=== {} (pid {}) log, last {} lines:\n{}",
            self.label,
            self.pid(),
            lines.len() - start,
            lines[start..].join("\n")
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` (e.g. `-STOP`) to `pid` with kill(1); a process that is gone is no error.
pub(crate) fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill").arg(signal).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
/// If no socket can be bound.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
    socket.local_addr().expect("a bound socket has an address").port()
}

/// A memory figure of process `pid` in bytes, from the `FIELD:` line of `/proc/PID/status`, e.g.
/// `VmRSS` (resident now) or `VmPeak` (largest virtual size ever).
///
/// # Errors
/// If the file cannot be read or has no such line.
pub fn proc_status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("failed to read /proc/PID/status")?;
    let prefix = format!("{field}:");
    let line = status.lines().find(|l| l.starts_with(&prefix)).with_context(|| format!("no {field} line"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("empty {field} line"))?
        .parse()
        .with_context(|| format!("{field} is not a number"))?;
    Ok(kib * 1024)
}
