//! Observability on the wire: payload logs (what a chunk attempt wrote through `dispy.log`, WASI
//! stderr or a native payload's stdout and stderr) and `explain`, why a job waits and how its
//! chunks failed.
//!
//! A node captures each attempt's log up to [`ATTEMPT_LOG_MAX`] bytes and ends a longer one with
//! [`truncation_marker`]; the log rides the attempt's `ChunkReport`. The dispatcher keeps it with
//! the job until the job is forgotten and serves it in [`LogPage`]s; a failed attempt's last lines
//! ([`tail`]) travel in its `AttemptFailure`.

use serde::{Deserialize, Serialize};

use crate::proto::{AttemptFailure, ChunkIndex, JobSummary};

/// The most log bytes one attempt keeps; the rest is dropped and counted in the marker line.
pub const ATTEMPT_LOG_MAX: usize = 64 * 1024;

/// Lines of a failed attempt's log kept in its `AttemptFailure` (and shown in failure reports).
pub const TAIL_LINES: usize = 5;

/// The longest line of a tail, in characters; the rest of a longer line is cut with `…`.
pub const TAIL_LINE_CHARS: usize = 200;

/// Most log bytes one [`LogPage`] carries; a client asks again from [`LogPage::next`] for more.
pub const LOG_PAGE_MAX: usize = 1 << 20;

/// The line that ends a log cut at [`ATTEMPT_LOG_MAX`].
pub fn truncation_marker(dropped: u64) -> String {
    format!("[dispy: log truncated, {dropped} bytes dropped]\n")
}

/// The last `lines` non-empty lines of a log, lossily decoded, control characters removed and
/// each cut at [`TAIL_LINE_CHARS`].
pub fn tail(log: &[u8], lines: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(log);
    let mut kept: Vec<String> = text
        .lines()
        .map(|line| line.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|line| !line.trim().is_empty())
        .collect();
    let skip = kept.len().saturating_sub(lines);
    kept.drain(..skip);
    for line in &mut kept {
        if line.chars().count() > TAIL_LINE_CHARS {
            *line = line.chars().take(TAIL_LINE_CHARS).collect::<String>() + "…";
        }
    }
    kept
}

/// One attempt's log, as [`LogPage`] carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The chunk the attempt ran.
    pub chunk: ChunkIndex,
    /// The attempt's id.
    pub attempt: u64,
    /// The node that ran it.
    pub node: String,
    /// Whether the attempt failed.
    pub failed: bool,
    /// The log bytes (at most [`ATTEMPT_LOG_MAX`] plus the marker line).
    #[serde(with = "serde_bytes")]
    pub log: Vec<u8>,
}

/// The answer to a `Logs` request: the attempts' logs stored after the cursor, in the order
/// they arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// The logs, oldest first, of the chunk asked for or of every chunk.
    pub entries: Vec<LogEntry>,
    /// The cursor to ask from next time, to get only newer logs.
    pub next: u64,
    /// Whether the job had ended when the page was read: a follower stops once a page says so
    /// and has nothing new.
    pub finished: bool,
}

/// Why one node cannot take the job's chunks now, as `explain` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeReason {
    /// The node is on another platform than the payload's.
    WrongPlatform {
        /// The node's `os/arch`.
        node: String,
        /// The payload's `os/arch`.
        payload: String,
    },
    /// The node refuses native payloads (its operator disabled them, or it cannot confine them).
    NativeRefused {
        /// How it runs native payloads, as `Confinement`'s text.
        confinement: String,
    },
    /// The node rejected the job's payload.
    Rejected,
    /// The node has no slots.
    NoSlots,
    /// The node has less memory in total than one attempt may use.
    TooSmall {
        /// Its memory in bytes.
        memory_total: u64,
    },
    /// The node is quarantined until an operator undrains it.
    Quarantined,
    /// An operator drained the node, or it is stopping.
    Drained,
    /// The node has too little memory available now.
    ShortOfMemory {
        /// Its available memory in bytes.
        memory_available: u64,
    },
    /// The node could run the job but every slot is busy.
    Busy {
        /// Slots in use by attempts the dispatcher placed there.
        in_flight: u32,
        /// Its slots.
        slots: u32,
    },
    /// The node could take a chunk of the job now.
    Eligible,
}

impl std::fmt::Display for NodeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::units::format_size;
        match self {
            NodeReason::WrongPlatform { node, payload } => write!(f, "is {node} but the payload needs {payload}"),
            NodeReason::NativeRefused { confinement } => write!(f, "refuses native payloads ({confinement})"),
            NodeReason::Rejected => f.write_str("rejected the payload"),
            NodeReason::NoSlots => f.write_str("has no slots"),
            NodeReason::TooSmall { memory_total } => write!(f, "has only {} of memory in total", format_size(*memory_total)),
            NodeReason::Quarantined => f.write_str("is quarantined"),
            NodeReason::Drained => f.write_str("is drained"),
            NodeReason::ShortOfMemory { memory_available } => {
                write!(f, "has only {} of memory free", format_size(*memory_available))
            }
            NodeReason::Busy { in_flight, slots } => write!(f, "is busy ({in_flight} of {slots} slots)"),
            NodeReason::Eligible => f.write_str("could take a chunk"),
        }
    }
}

/// One node in an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeWait {
    /// The node's name.
    pub node: String,
    /// What keeps it from the job.
    pub reason: NodeReason,
}

/// The failed attempts of one chunk, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkAttempts {
    /// The chunk.
    pub chunk: ChunkIndex,
    /// Every failed attempt with its node, error and log tail.
    pub attempts: Vec<AttemptFailure>,
}

/// The answer to `Explain`: the job, why it waits, and its chunks' failed attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The job as `status` shows it.
    pub summary: JobSummary,
    /// Whether the job has chunks waiting for a node.
    pub waiting: bool,
    /// Why it waits, in one line ("2 connected, 1 drained, 1 eligible, all busy"); `None` when it
    /// does not wait.
    pub blocked: Option<String>,
    /// Each connected node and what keeps it from the job (only while the job runs).
    pub nodes: Vec<NodeWait>,
    /// Chunks with failed attempts, by chunk.
    pub failed_chunks: Vec<ChunkAttempts>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_non_empty_lines_cut_and_cleaned() {
        let log = b"one\n\ntwo\nthree\x07\nfour\n";
        assert_eq!(tail(log, 2), vec!["three".to_string(), "four".to_string()]);
        assert_eq!(tail(log, 10), vec!["one", "two", "three", "four"]);
        let long = "x".repeat(TAIL_LINE_CHARS + 5);
        let cut = tail(long.as_bytes(), 1);
        assert_eq!(cut[0].chars().count(), TAIL_LINE_CHARS + 1);
        assert!(cut[0].ends_with('…'));
        assert!(tail(b"", 3).is_empty());
    }

    #[test]
    fn the_marker_names_the_dropped_bytes() {
        assert_eq!(truncation_marker(12), "[dispy: log truncated, 12 bytes dropped]\n");
    }
}
