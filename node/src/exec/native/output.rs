//! What a native worker writes to its stdout and stderr (the payload's `printf`s and
//! `fprintf(stderr, …)`s, and the worker's own last words): the node keeps all of it, bounded, as
//! the attempt's log (`exec::log::AttemptLog`), and the last few lines in a [`StderrTail`] to quote in a
//! failure message.

use std::collections::VecDeque;

/// Lines of a worker's stderr kept for failure messages, and the longest quote made of them.
const STDERR_LINES: usize = 4;
const STDERR_QUOTE: usize = 300;
/// Longest stderr line kept; the rest of a longer line is dropped.
const STDERR_LINE: usize = 1024;

/// The last lines a worker wrote to stdout or stderr; every line is also logged at debug level.
#[derive(Default)]
pub(super) struct StderrTail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl StderrTail {
    pub(super) fn clear(&mut self) {
        self.lines.clear();
        self.partial.clear();
    }

    pub(super) fn push(&mut self, bytes: &[u8], pid: u32) {
        for &byte in bytes {
            if byte == b'\n' {
                self.end_line(pid);
            } else if self.partial.len() < STDERR_LINE {
                self.partial.push(byte);
            }
        }
    }

    /// Keeps a last line that has no newline.
    pub(super) fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            self.end_line(0);
        }
    }

    pub(super) fn end_line(&mut self, pid: u32) {
        let line: String = String::from_utf8_lossy(&self.partial)
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        self.partial.clear();
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        tracing::debug!(worker = pid, "payload output: {line}");
        if self.lines.len() == STDERR_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_string());
    }

    /// The kept lines as a suffix for a one-line failure message; empty if none.
    pub(super) fn quote(&self) -> String {
        if self.lines.is_empty() {
            return String::new();
        }
        let joined = self.lines.iter().map(String::as_str).collect::<Vec<_>>().join(" | ");
        let mut quoted: String = joined.chars().take(STDERR_QUOTE).collect();
        if joined.chars().count() > STDERR_QUOTE {
            quoted.push('…');
        }
        format!(" (output: {quoted})")
    }
}

