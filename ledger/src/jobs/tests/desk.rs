//! A ledger driven call by call, with one node and commits that succeed at once: what it
//! answered, which spools it removed and which payloads it shipped. The tests of tenants and of
//! payload shipping drive it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wire::proto::{JobId, PayloadHash};

use super::super::{
    Answer, Caller, ClientId, Effect, Ledger, LedgerConfig, NodeCommand, Quotas, Recovered, Refusal, RequestId, Time,
};
use super::harness::{config, info, submission};
use crate::record::Extent;
use crate::scheduler::NodeId;

pub(super) struct Desk {
    pub(super) ledger: Ledger,
    pub(super) now: Time,
    /// The one node, `node-a`.
    pub(super) node: NodeId,
    next: u64,
    pub(super) answers: HashMap<RequestId, Answer>,
    /// Jobs whose spool files went, in order.
    pub(super) removed: Vec<JobId>,
    /// Payloads shipped to the node, in order.
    pub(super) shipped: Vec<PayloadHash>,
    /// Jobs whose every file (logs included) went, in order.
    pub(super) forgotten: Vec<JobId>,
    /// Attempt logs stored, in order.
    pub(super) logs: Vec<crate::jobs::LogRecord>,
    /// Results to store, for a test to report stored.
    pub(super) to_store: Vec<crate::jobs::StoreTicket>,
    /// Assignments sent to the node: (job, chunk, attempt).
    pub(super) assigned: Vec<(JobId, u64, wire::proto::AttemptId)>,
}

impl Desk {
    pub(super) fn new(quotas: Quotas) -> Self {
        let now = Time { at: Instant::now(), unix_ms: 1_000_000 };
        let config = LedgerConfig { scheduler: config(), retention: Duration::from_secs(3600), quotas, input_grace: Duration::ZERO };
        let mut ledger = Ledger::new(config, Recovered { next_job: 1, incarnation: 1, ..Recovered::default() }, now);
        let node = ledger.handle_node_registered(now, info("node-a"), "10.0.0.1:1".into());
        let mut desk =
            Self {
            ledger,
            now,
            node,
            next: 0,
            answers: HashMap::new(),
            removed: Vec::new(),
            shipped: Vec::new(),
            forgotten: Vec::new(),
            logs: Vec::new(),
            assigned: Vec::new(),
            to_store: Vec::new(),
        };
        desk.turn();
        desk
    }

    /// Ends a turn and commits what it gathered at once, as a graceful stop would.
    pub(super) fn turn(&mut self) {
        self.ledger.end_turn(self.now);
        self.ledger.flush(self.now);
        while let Some(effect) = self.ledger.poll_effect() {
            match effect {
                Effect::Commit { .. } => self.ledger.handle_committed(),
                Effect::Answer { request, answer } => drop(self.answers.insert(request, answer)),
                Effect::RemoveSpool(job) => self.removed.push(job),
                Effect::ForgetSpool(job) => self.forgotten.push(job),
                Effect::StoreLog(record) => self.logs.push(record),
                Effect::StoreResult { ticket, .. } => self.to_store.push(ticket),
                Effect::Node { command: NodeCommand::Assign { job, chunk, attempt, .. }, .. } => {
                    self.assigned.push((job, chunk, attempt));
                }
                Effect::Node { command: NodeCommand::Payload(payload), .. } => self.shipped.push(payload),
                _ => {}
            }
        }
    }

    /// `who` submits a job of `payload` (the harness's own when `None`).
    pub(super) fn submit(&mut self, who: &Caller, payload: Option<PayloadHash>) -> Result<JobId, Refusal> {
        let mut job = submission();
        job.payload = payload.unwrap_or(job.payload);
        let client = ClientId(self.fresh());
        let job = self.ledger.handle_submit(self.now, client, who, job);
        self.turn();
        job
    }

    /// The job's next chunk input, `len` bytes, arrives.
    pub(super) fn input(&mut self, job: JobId, len: u64) {
        self.ledger.handle_input(self.now, job, Extent { offset: 0, len });
        self.turn();
    }

    /// A fresh request (or client) id.
    pub(super) fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}
