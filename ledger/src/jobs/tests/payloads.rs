//! Payload shipping when a node's cache evicts: a job started on the node gets its payload again,
//! a later job gets it when it starts, and `payload_needed` follows the running jobs.

use std::time::{Duration, Instant};

use wire::proto::{JobId, NodeToDispatcher, PayloadHash};

use super::super::{
    Caller, ClientId, Effect, Ledger, LedgerConfig, NodeCommand, Quotas, Recovered, RequestId, Time,
};
use super::harness::{config, info, submission};
use crate::record::Extent;
use crate::scheduler::NodeId;

struct Desk {
    ledger: Ledger,
    now: Time,
    node: NodeId,
    next: u64,
    /// Payloads shipped to the node, in order.
    shipped: Vec<PayloadHash>,
}

impl Desk {
    fn new() -> Self {
        let now = Time { at: Instant::now(), unix_ms: 1_000_000 };
        let config = LedgerConfig { scheduler: config(), retention: Duration::from_secs(3600), quotas: Quotas::default(), input_grace: Duration::ZERO };
        let mut ledger = Ledger::new(config, Recovered { next_job: 1, incarnation: 1, jobs: Vec::new() }, now);
        let node = ledger.handle_node_registered(now, info("node-a"), "10.0.0.1:1".into());
        let mut desk = Self { ledger, now, node, next: 0, shipped: Vec::new() };
        desk.turn();
        desk
    }

    fn turn(&mut self) {
        self.ledger.end_turn(self.now);
        self.ledger.flush(self.now);
        while let Some(effect) = self.ledger.poll_effect() {
            match effect {
                Effect::Commit { .. } => self.ledger.handle_committed(),
                Effect::Node { command: NodeCommand::Payload(payload), .. } => self.shipped.push(payload),
                _ => {}
            }
        }
    }

    /// Submits a one-chunk job using `payload`, which starts on the node.
    fn run_job(&mut self, payload: PayloadHash) -> JobId {
        self.next += 1;
        let who = Caller { name: "alice".into(), operator: false };
        let job = self
            .ledger
            .handle_submit(self.now, ClientId(self.next), &who, wire::proto::JobSubmission { payload, ..submission() })
            .expect("accepted");
        self.turn();
        self.ledger.handle_input(self.now, job, Extent { offset: 0, len: 1 });
        self.ledger.handle_input_end(self.now, job);
        self.turn();
        job
    }

    fn evicted(&mut self, payloads: &[PayloadHash]) {
        let msg = NodeToDispatcher::PayloadsEvicted { payloads: payloads.to_vec() };
        self.ledger.handle_node_message(self.now, self.node, msg);
        self.turn();
    }
}

#[test]
fn an_evicted_payload_is_shipped_again_when_a_job_needs_it() {
    let mut desk = Desk::new();
    let (a, b) = (PayloadHash::of(b"a"), PayloadHash::of(b"b"));
    let first = desk.run_job(a);
    assert_eq!(desk.shipped, [a], "shipped once, with the job's start");
    assert!(desk.ledger.payload_needed(&a) && !desk.ledger.payload_needed(&b));
    let second = desk.run_job(a);
    assert_eq!(desk.shipped, [a], "the node has it");
    // The node evicted `a` before it heard of the jobs started there that use it.
    desk.evicted(&[a]);
    assert_eq!(desk.shipped, [a, a]);
    let who = Caller { name: "alice".into(), operator: false };
    desk.ledger.handle_cancel(desk.now, RequestId(1), &who, first);
    desk.turn();
    assert!(desk.ledger.payload_needed(&a), "another job still runs with it");
    desk.ledger.handle_cancel(desk.now, RequestId(2), &who, second);
    desk.turn();
    assert!(!desk.ledger.payload_needed(&a));
    // Evicted while no job uses it: shipped only when the next one starts.
    desk.evicted(&[a]);
    assert_eq!(desk.shipped, [a, a]);
    desk.run_job(a);
    assert_eq!(desk.shipped, [a, a, a]);
}
