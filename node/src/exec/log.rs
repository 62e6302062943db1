//! [`AttemptLog`]: what one attempt logs (`dispy.log` lines, WASI stderr, a native payload's
//! stdout and stderr), bounded at [`ATTEMPT_LOG_MAX`] bytes. The first bytes are kept; a longer
//! log ends with the marker line `[dispy: log truncated, N bytes dropped]`, so a user sees both
//! how the attempt began and that more was said.

use wire::observe::{truncation_marker, ATTEMPT_LOG_MAX};

/// One attempt's log being captured.
#[derive(Debug)]
pub struct AttemptLog {
    bytes: Vec<u8>,
    cap: usize,
    dropped: u64,
}

impl Default for AttemptLog {
    fn default() -> Self {
        Self::with_cap(ATTEMPT_LOG_MAX)
    }
}

impl AttemptLog {
    /// A log keeping at most `cap` bytes (tests use small caps).
    pub fn with_cap(cap: usize) -> Self {
        Self { bytes: Vec::new(), cap, dropped: 0 }
    }

    /// Appends raw bytes (a stream such as stderr); what does not fit is counted as dropped.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.bytes.len());
        let kept = bytes.len().min(room);
        self.bytes.extend_from_slice(&bytes[..kept]);
        self.dropped += (bytes.len() - kept) as u64;
    }

    /// Counts bytes dropped before they reached this log (a stream capped elsewhere).
    pub fn count_dropped(&mut self, bytes: u64) {
        self.dropped += bytes;
    }

    /// Appends one line (a `dispy.log` call), adding the newline it lacks.
    pub fn push_line(&mut self, line: &[u8]) {
        self.push(line);
        if !line.ends_with(b"\n") {
            self.push(b"\n");
        }
    }

    /// The log so far, with the truncation marker if bytes were dropped; the log is empty after.
    pub fn take(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.bytes);
        let dropped = std::mem::take(&mut self.dropped);
        if dropped > 0 {
            if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                bytes.push(b'\n');
            }
            bytes.extend_from_slice(truncation_marker(dropped).as_bytes());
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_get_their_newline_and_a_full_log_ends_with_the_marker() {
        let mut log = AttemptLog::with_cap(10);
        log.push_line(b"hello");
        log.push_line(b"world\n");
        assert_eq!(log.take(), b"hello\nworl\n[dispy: log truncated, 2 bytes dropped]\n");
        assert!(log.take().is_empty(), "take leaves the log empty");
        log.push(b"abc");
        assert_eq!(log.take(), b"abc");
    }
}
