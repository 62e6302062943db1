//! How `dispy-submit` shows attempt logs, explanations and a failed job's log tails, for people
//! and as JSON (serde_json).
//!
//! Log lines print as `CHUNK: LINE`: the chunk index, a colon and a space, then the line as the
//! payload wrote it (invalid UTF-8 replaced, the newline dropped). With `--json`, `logs` prints one
//! object per attempt log on its own line (JSON Lines, so `--follow` can stream):
//! `{"chunk", "attempt", "node", "failed", "lines"}`.

use serde_json::{json, Value};
use wire::observe::{ChunkAttempts, Explanation, LogEntry};
use wire::proto::{AttemptFailure, ChunkIndex, JobFailure, JobId, JobState};

use crate::{Client, ClientError};

/// `dispy-submit logs`: prints `job`'s attempt logs (of `chunk` only, when given) to standard
/// output as they were stored, as `CHUNK: LINE` lines or JSON Lines; with `follow`, until the
/// job has ended.
///
/// # Errors
/// As [`Client::logs`].
pub async fn print_logs(
    client: &mut Client,
    job: JobId,
    chunk: Option<ChunkIndex>,
    follow: bool,
    json: bool,
) -> Result<(), ClientError> {
    client
        .logs(job, chunk, follow, |entry| {
            if json {
                println!("{}", log_json(&entry));
            } else {
                log_lines(&entry).iter().for_each(|line| println!("{line}"));
            }
        })
        .await
}

/// `dispy-submit explain`: prints an explanation as text or one JSON object.
pub fn print_explanation(explanation: &Explanation, json: bool) {
    if json {
        println!("{}", explanation_json(explanation));
    } else {
        print!("{}", explanation_text(explanation));
    }
}

/// The lines of one attempt's log, each after its chunk index: `3: hello`.
pub fn log_lines(entry: &LogEntry) -> Vec<String> {
    String::from_utf8_lossy(&entry.log).lines().map(|line| format!("{}: {line}", entry.chunk)).collect()
}

/// One attempt's log as a JSON object.
pub fn log_json(entry: &LogEntry) -> Value {
    let lines: Vec<String> = String::from_utf8_lossy(&entry.log).lines().map(str::to_owned).collect();
    json!({
        "chunk": entry.chunk,
        "attempt": entry.attempt,
        "node": entry.node,
        "failed": entry.failed,
        "lines": lines,
    })
}

/// A failed job's chunk attempts with their log tails, as lines to print after the failure
/// (nothing for a failure that is not a chunk's, or attempts that logged nothing).
pub fn failure_tails(failure: &JobFailure) -> Vec<String> {
    let JobFailure::Chunk { chunk, attempts } = failure else { return Vec::new() };
    let mut out = Vec::new();
    for (n, attempt) in attempts.iter().enumerate().filter(|(_, a)| !a.log_tail.is_empty()) {
        out.push(format!("chunk {chunk}, attempt {} on {}: last lines of its log:", n + 1, attempt.node));
        out.extend(attempt.log_tail.iter().map(|line| format!("  {chunk}: {line}")));
    }
    out
}

/// `explain` for people: the job, why it waits node by node, and every failed attempt.
pub fn explanation_text(e: &Explanation) -> String {
    let s = &e.summary;
    let mut out = format!(
        "job {} ({}) is {}: {}/{} chunks done, {} running, {} retries\n",
        s.job, s.name, s.state.name(), s.progress.done, s.progress.total, s.progress.running, s.progress.retries
    );
    if let JobState::Failed(failure) = &s.state {
        out += &format!("failure: {failure}\n");
    }
    match (&e.blocked, e.waiting) {
        (Some(blocked), _) => out += &format!("waiting: {blocked}\n"),
        (None, true) => out += "waiting for a node\n",
        (None, false) if s.state == JobState::Running => out += "not waiting for a node\n",
        _ => {}
    }
    if !e.nodes.is_empty() {
        out += "nodes:\n";
        for node in &e.nodes {
            out += &format!("  {}: {}\n", node.node, node.reason);
        }
    }
    for ChunkAttempts { chunk, attempts } in &e.failed_chunks {
        out += &format!("chunk {chunk}: {} failed attempt(s)\n", attempts.len());
        for (n, a) in attempts.iter().enumerate() {
            out += &format!("  attempt {} on {}: {}\n", n + 1, a.node, a.failure);
            for line in &a.log_tail {
                out += &format!("    {chunk}: {line}\n");
            }
        }
    }
    out
}

/// `explain --json`.
pub fn explanation_json(e: &Explanation) -> Value {
    let s = &e.summary;
    let failure = match &s.state {
        JobState::Failed(failure) => Some(failure.to_string()),
        _ => None,
    };
    let attempt = |a: &AttemptFailure| {
        json!({
            "node": a.node,
            "kind": format!("{:?}", a.failure.kind),
            "error": a.failure.message,
            "log_tail": a.log_tail,
        })
    };
    json!({
        "job": s.job.0,
        "name": s.name,
        "state": s.state.name(),
        "done": s.progress.done,
        "total": s.progress.total,
        "running": s.progress.running,
        "retries": s.progress.retries,
        "failure": failure,
        "waiting": e.waiting,
        "blocked": e.blocked,
        "nodes": e.nodes.iter().map(|n| json!({ "node": n.node, "reason": n.reason.to_string() })).collect::<Vec<_>>(),
        "failed_chunks": e.failed_chunks.iter().map(|c| json!({
            "chunk": c.chunk,
            "attempts": c.attempts.iter().map(attempt).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use wire::proto::{ChunkFailure, FailureKind};

    use super::*;

    #[test]
    fn log_lines_carry_their_chunk_index() {
        let entry = LogEntry { chunk: 3, attempt: 9, node: "n".into(), failed: false, log: b"one\ntwo\n".to_vec() };
        assert_eq!(log_lines(&entry), ["3: one", "3: two"]);
        let object = log_json(&entry);
        assert_eq!(object["lines"], json!(["one", "two"]));
        assert_eq!(object["chunk"], 3);
    }

    #[test]
    fn a_failed_jobs_report_shows_each_attempts_log_tail() {
        let attempt = |node: &str, tail: &[&str]| AttemptFailure {
            node: node.into(),
            failure: ChunkFailure { kind: FailureKind::Trap, message: "trap".into() },
            log_tail: tail.iter().map(|l| (*l).to_owned()).collect(),
        };
        let failure = JobFailure::Chunk { chunk: 2, attempts: vec![attempt("a", &["x", "y"]), attempt("b", &[])] };
        assert_eq!(failure_tails(&failure), ["chunk 2, attempt 1 on a: last lines of its log:", "  2: x", "  2: y"]);
        assert!(failure_tails(&JobFailure::Other { message: "m".into() }).is_empty());
    }
}
