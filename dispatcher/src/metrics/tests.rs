//! The dispatcher's metrics as text: names, units, labels and the counts observations add up to.

use std::time::Duration;

use ledger::jobs::{FailedAttempt, Observation};
use wire::proto::{JobId, NodeStatus};

use super::{state_word, Metrics};

fn node(name: &str, state: &str, slots: u32, busy: u32) -> NodeStatus {
    NodeStatus {
        name: name.into(),
        address: "127.0.0.1:1".into(),
        slots,
        busy,
        in_flight: busy,
        state: state.into(),
        ..NodeStatus::default()
    }
}

fn failed(retried: bool) -> Observation {
    Observation::AttemptFailed(FailedAttempt {
        job: JobId(1),
        chunk: 3,
        tenant: "alice".into(),
        node: "n1".into(),
        message: "trap".into(),
        unix_ms: 0,
        retried,
    })
}

#[track_caller]
fn check(text: &str, line: &str) {
    assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
}

#[test]
fn observations_and_tables_become_conventional_metrics() {
    let metrics = Metrics::new();
    for _ in 0..3 {
        metrics.observe(&Observation::ChunkCompleted { tenant: "alice".into(), run: Duration::from_millis(20), bytes: 10 });
    }
    metrics.observe(&failed(true));
    metrics.observe(&failed(false));
    metrics.observe(&Observation::Speculated { tenant: "alice".into() });
    metrics.observe(&Observation::Placed { wait: Duration::from_millis(1) });
    metrics.observe(&Observation::InputStored { bytes: 7 });
    metrics.observe_commit(Duration::from_millis(2));
    metrics.refresh(&[node("n1", "ready", 4, 1), node("n2", "quarantined: 3 failures", 2, 2), node("n3", "drained, not connected", 0, 0)], ["running", "failed", "running"].into_iter());
    let conn = metrics.connection("node");
    metrics.refused("hello");
    metrics.sent_result(5);
    metrics.sent_input(4);
    let text = metrics.render_with_certificates(Some(1_900_000_000), &[("n1".into(), 1_800_000_000)]);
    check(&text, "# TYPE dispy_chunks_completed counter");
    check(&text, r#"dispy_chunks_completed_total{tenant="alice"} 3"#);
    check(&text, r#"dispy_chunks_failed_total{tenant="alice"} 2"#);
    check(&text, r#"dispy_chunks_retried_total{tenant="alice"} 1"#);
    check(&text, r#"dispy_chunks_speculated_total{tenant="alice"} 1"#);
    check(&text, "dispy_chunk_run_seconds_count 3");
    check(&text, "dispy_chunk_queue_wait_seconds_count 1");
    check(&text, "dispy_journal_commit_seconds_count 1");
    check(&text, r#"dispy_received_bytes_total{stream="result"} 30"#);
    check(&text, r#"dispy_received_bytes_total{stream="input"} 7"#);
    check(&text, r#"dispy_sent_bytes_total{stream="result"} 5"#);
    check(&text, r#"dispy_sent_bytes_total{stream="input"} 4"#);
    check(&text, r#"dispy_nodes{state="ready"} 1"#);
    check(&text, r#"dispy_nodes{state="quarantined"} 1"#);
    check(&text, r#"dispy_nodes{state="away"} 1"#);
    check(&text, r#"dispy_nodes{state="busy"} 0"#);
    check(&text, "dispy_slots 6");
    check(&text, "dispy_slots_busy 3");
    check(&text, r#"dispy_jobs{state="running"} 2"#);
    check(&text, r#"dispy_jobs{state="failed"} 1"#);
    check(&text, r#"dispy_jobs{state="succeeded"} 0"#);
    check(&text, r#"dispy_connections{role="node"} 1"#);
    check(&text, r#"dispy_handshakes_refused_total{reason="hello"} 1"#);
    check(&text, r#"dispy_certificate_expiry_seconds{certificate="dispatcher"} 1900000000"#);
    check(&text, r#"dispy_certificate_expiry_seconds{certificate="n1"} 1800000000"#);
    drop(conn);
    check(&metrics.render(), r#"dispy_connections{role="node"} 0"#);
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn node_states_become_few_label_values() {
    assert_eq!(state_word("ready"), "ready");
    assert_eq!(state_word("quarantined: 3 attempts failed here"), "quarantined");
    assert_eq!(state_word("quarantined, not connected: 3 attempts"), "away");
    assert_eq!(state_word("something new"), "unknown");
}
