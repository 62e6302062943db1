//! Attempt logs and `explain`, driven call by call: a failed attempt's log tail reaches
//! `explain` and the job's failure; a waiting job's explanation names each node's reason; another
//! tenant's job answers `logs` and `explain` as an unknown one; a released job keeps its record
//! and logs (its input and results go) until it expires.

use std::time::Duration;

use bytes::Bytes;
use wire::observe::{Explanation, NodeReason, NodeWait};
use wire::proto::{ChunkFailure, ChunkReport, Confinement, FailureKind, JobFailure, JobId, JobState, NodeToDispatcher, PayloadKind};

use super::super::{Answer, Caller, LogQuery, Quotas, Refusal};
use super::desk::Desk;
use super::harness::{info, submission};
use crate::record::Extent;

fn alice() -> Caller {
    Caller { name: "alice".into(), operator: false }
}

impl Desk {
    /// Submits a one-chunk job of alice's and tells the ledger the node is ready for it.
    fn one_chunk_job(&mut self) -> JobId {
        let job = self.submit(&alice(), None).expect("accepted");
        self.input(job, 1);
        self.ledger.handle_input_end(self.now, job);
        self.ledger.handle_node_message(self.now, self.node, NodeToDispatcher::JobReady { job });
        self.turn();
        job
    }

    /// The node reports the job's latest attempt with `outcome` and `log`.
    fn report(&mut self, job: JobId, outcome: Result<Bytes, ChunkFailure>, log: &str) {
        let &(_, _, attempt) = self.assigned.iter().rev().find(|(j, _, _)| *j == job).expect("an attempt was assigned");
        let report = ChunkReport { attempt, outcome, run_nanos: 1, log: Bytes::from(log.to_owned()), combined_with: None };
        self.ledger.handle_report(self.now, self.node, report);
        self.turn();
    }

    fn explain(&mut self, who: &Caller, job: JobId) -> Result<Explanation, Refusal> {
        let request = self.request_id();
        self.ledger.handle_explain(request, who, job);
        self.turn();
        match self.answers.remove(&request) {
            Some(Answer::Explain(explanation)) => explanation.map(|e| *e),
            other => panic!("explain answered {other:?}"),
        }
    }

    fn logs(&mut self, who: &Caller, job: JobId, chunk: Option<u64>) -> Result<LogQuery, Refusal> {
        let request = self.request_id();
        self.ledger.handle_logs(request, who, job, chunk, 7);
        self.turn();
        match self.answers.remove(&request) {
            Some(Answer::Logs(query)) => query,
            other => panic!("logs answered {other:?}"),
        }
    }

    fn request_id(&mut self) -> super::super::RequestId {
        super::super::RequestId(self.fresh())
    }

    /// Advances virtual time by `by` and lets timers fire.
    fn wait(&mut self, by: Duration) {
        self.now.at += by;
        self.now.unix_ms += by.as_millis() as u64;
        self.ledger.handle_timeout(self.now);
        self.turn();
    }
}

fn trap() -> ChunkFailure {
    ChunkFailure { kind: FailureKind::Trap, message: "wasm trap: unreachable".into() }
}

#[test]
fn failed_attempts_keep_their_log_tails_for_explain_and_the_failure() {
    let mut desk = Desk::new(Quotas::default());
    let job = desk.one_chunk_job();
    desk.report(job, Err(trap()), "starting\nfirst try\n");
    let running = desk.explain(&alice(), job).expect("alice sees her job");
    assert_eq!(running.summary.state, JobState::Running);
    assert_eq!(running.failed_chunks.len(), 1);
    let first = &running.failed_chunks[0].attempts[0];
    assert_eq!((first.node.as_str(), first.log_tail.clone()), ("node-a", vec!["starting".to_owned(), "first try".to_owned()]));
    assert_eq!(first.failure, trap());

    // The chunk fails until it has used its attempts (the only node takes the retries).
    for attempt in 1..4 {
        while desk.assigned.iter().filter(|(j, _, _)| *j == job).count() <= attempt {
            desk.wait(Duration::from_secs(5));
        }
        desk.report(job, Err(trap()), &format!("starting\ntry {attempt}\n"));
    }
    let failed = desk.explain(&alice(), job).expect("alice sees her failed job");
    let JobState::Failed(JobFailure::Chunk { chunk: 0, attempts }) = &failed.summary.state else {
        panic!("the job failed on its chunk: {:?}", failed.summary.state);
    };
    assert_eq!(failed.failed_chunks.len(), 1);
    assert_eq!(&failed.failed_chunks[0].attempts, attempts, "explain lists every attempt of the failure");
    let tails: Vec<Vec<String>> = attempts.iter().map(|a| a.log_tail.clone()).collect();
    let expect: Vec<Vec<String>> = ["first try", "try 1", "try 2", "try 3"]
        .iter()
        .map(|last| vec!["starting".to_owned(), (*last).to_owned()])
        .collect();
    assert_eq!(tails, expect);
    assert!(!failed.waiting && failed.nodes.is_empty(), "a failed job waits for nothing");
    let text = JobFailure::Chunk { chunk: 0, attempts: attempts.clone() }.to_string();
    assert!(text.ends_with("on node node-a: wasm trap: unreachable (log: try 3)"), "{text}");
    // Every attempt's whole log went to the spool, marked failed, under its chunk.
    let logged: Vec<(u64, bool, &[u8])> = desk.logs.iter().map(|r| (r.chunk, r.failed, &r.log[..])).collect();
    assert_eq!(logged.len(), 4);
    assert!(logged.iter().all(|(chunk, failed, _)| *chunk == 0 && *failed));
    assert_eq!(logged[3].2, b"starting\ntry 3\n");
    assert_eq!(desk.removed, [job], "a failed job's input and results go at once");
    assert!(desk.forgotten.is_empty(), "its logs stay");
    assert_eq!(desk.logs(&alice(), job, None).expect("alice reads her logs"), LogQuery { job, chunk: None, from: 7, finished: true });
}

#[test]
fn a_succeeded_attempts_log_is_stored_and_an_empty_one_is_not() {
    let mut desk = Desk::new(Quotas::default());
    let job = desk.one_chunk_job();
    desk.report(job, Ok(Bytes::from_static(b"out")), "hello from chunk 0\n");
    assert_eq!(desk.logs.len(), 1);
    let record = &desk.logs[0];
    assert_eq!((record.job, record.chunk, record.node.as_str(), record.failed), (job, 0, "node-a", false));
    let second = desk.one_chunk_job();
    desk.report(second, Ok(Bytes::from_static(b"out")), "");
    assert_eq!(desk.logs.len(), 1, "nothing to store for an attempt that logged nothing");
}

#[test]
fn explain_names_each_nodes_reason_for_a_waiting_job() {
    let mut desk = Desk::new(Quotas::default());
    let operator = Caller { name: "root".into(), operator: true };
    let mut small = info("node-b");
    small.memory_available = 1000;
    desk.ledger.handle_node_registered(desk.now, small, "10.0.0.2:1".into());
    let mut native_refused = info("node-c");
    native_refused.confinement = Confinement::Refused;
    desk.ledger.handle_node_registered(desk.now, native_refused, "10.0.0.3:1".into());
    let request = desk.request_id();
    desk.ledger.handle_drain(desk.now, request, &operator, "node-a", true);
    desk.turn();

    let mut native = submission();
    native.kind = PayloadKind::Native { os: "linux".into(), arch: "x86_64".into() };
    let client = super::super::ClientId(desk.fresh());
    let job = desk.ledger.handle_submit(desk.now, client, &alice(), native).expect("accepted: it may wait");
    desk.turn();
    desk.ledger.handle_input(desk.now, job, Extent { offset: 0, len: 1 });
    desk.ledger.handle_input_end(desk.now, job);
    desk.turn();

    let explained = desk.explain(&alice(), job).expect("alice sees her job");
    let reasons: Vec<NodeWait> = explained.nodes.clone();
    assert_eq!(
        reasons,
        vec![
            NodeWait { node: "node-a".into(), reason: NodeReason::Drained },
            NodeWait { node: "node-b".into(), reason: NodeReason::ShortOfMemory { memory_available: 1000 } },
            NodeWait { node: "node-c".into(), reason: NodeReason::NativeRefused { confinement: "none: native refused".into() } },
        ]
    );
    assert_eq!(reasons[1].reason.to_string(), "has only 1000 B of memory free");
    assert!(explained.failed_chunks.is_empty());
    // node-c would take it as far as the scheduler knows (it rejects native jobs when started),
    // so the job is not counted as waiting until it has; the one-line reason says the same.
    assert_eq!(explained.waiting, explained.blocked.is_some());
}

#[test]
fn a_job_that_waits_says_so() {
    let mut desk = Desk::new(Quotas::default());
    let operator = Caller { name: "root".into(), operator: true };
    let request = desk.request_id();
    desk.ledger.handle_drain(desk.now, request, &operator, "node-a", true);
    desk.turn();
    let job = desk.one_chunk_job();
    let explained = desk.explain(&alice(), job).expect("alice sees her job");
    assert!(explained.waiting);
    assert_eq!(explained.blocked.as_deref(), Some("1 connected, 1 drained, 0 eligible"));
    assert_eq!(explained.nodes, vec![NodeWait { node: "node-a".into(), reason: NodeReason::Drained }]);
}

#[test]
fn another_tenants_job_answers_logs_and_explain_as_an_unknown_one() {
    let mut desk = Desk::new(Quotas::default());
    let job = desk.one_chunk_job();
    let bob = Caller { name: "bob".into(), operator: false };
    let unknown = |job: JobId| Refusal::UnknownJob(job).to_string();
    assert_eq!(desk.explain(&bob, job).map(|_| ()).map_err(|e| e.to_string()), Err(unknown(job)));
    assert_eq!(desk.logs(&bob, job, Some(0)).map_err(|e| e.to_string()), Err(unknown(job)));
    assert_eq!(desk.logs(&bob, JobId(99), None).map_err(|e| e.to_string()), Err(unknown(JobId(99))));
    let operator = Caller { name: "root".into(), operator: true };
    assert!(desk.explain(&operator, job).is_ok(), "an operator sees every job");
    assert_eq!(desk.logs(&alice(), job, Some(0)).expect("alice reads her logs"), LogQuery { job, chunk: Some(0), from: 7, finished: false });
}

#[test]
fn a_released_job_keeps_its_record_and_logs_until_it_expires() {
    let mut desk = Desk::new(Quotas::default());
    let job = desk.one_chunk_job();
    desk.report(job, Ok(Bytes::from_static(b"out")), "a line\n");
    let ticket = desk.to_store.pop().expect("the result is to be stored");
    desk.ledger.handle_result_stored(desk.now, ticket, Ok(Extent { offset: 0, len: 3 }));
    desk.turn();
    assert_eq!(desk.explain(&alice(), job).expect("known").summary.state, JobState::Succeeded);

    desk.ledger.handle_release(&alice(), job);
    desk.turn();
    assert_eq!(desk.removed, [job], "its input and results go");
    assert!(desk.forgotten.is_empty());
    assert!(matches!(desk.ledger.attachable(&alice(), job), Err(Refusal::OutputFetched(j)) if j == job));
    assert!(desk.logs(&alice(), job, None).expect("alice reads her logs").finished);
    desk.ledger.handle_release(&alice(), job);
    desk.turn();
    assert_eq!(desk.removed, [job], "a second release changes nothing");

    // Retention is an hour; expiry is checked every few ticks.
    desk.now.unix_ms += 2 * 3600 * 1000;
    for _ in 0..100 {
        desk.ledger.handle_tick(desk.now);
        desk.turn();
    }
    assert_eq!(desk.forgotten, [job], "its logs go when it expires");
    assert!(matches!(desk.logs(&alice(), job, None), Err(Refusal::UnknownJob(_))));
}

/// A job's logs stop at `MAX_JOB_LOG_BYTES`: the attempt that would cross it leaves a note, later
/// ones nothing, and what is kept counts in the owner's spool.
#[test]
fn a_jobs_logs_stop_at_their_bound_with_a_note() {
    use super::super::observe::MAX_JOB_LOG_BYTES;
    let mut desk = Desk::new(Quotas::default());
    let job = desk.one_chunk_job();
    let big = "x".repeat((MAX_JOB_LOG_BYTES * 5 / 8) as usize);
    for attempt in 0..3 {
        while desk.assigned.iter().filter(|(j, _, _)| *j == job).count() <= attempt {
            desk.wait(Duration::from_secs(5));
        }
        desk.report(job, Err(trap()), &big);
    }
    let kept: Vec<usize> = desk.logs.iter().map(|r| r.log.len()).collect();
    assert_eq!(kept.len(), 2, "the third attempt's log is not kept: {kept:?}");
    assert_eq!(kept[0], big.len());
    let note = String::from_utf8_lossy(&desk.logs[1].log).into_owned();
    assert!(note.starts_with("[dispy: this job's logs reached 64.0 MiB"), "{note}");
    // The one-byte input and the two logs kept.
    assert_eq!(desk.ledger.spool_use("alice"), 1 + kept.iter().sum::<usize>() as u64);
}
