//! Payload shipping when a node's cache evicts: a job started on the node gets its payload again,
//! a later job gets it when it starts, and `payload_needed` follows the running jobs.

use wire::proto::{JobId, NodeToDispatcher, PayloadHash};

use super::super::{Caller, Quotas, RequestId};
use super::desk::Desk;

impl Desk {
    /// Submits a one-chunk job using `payload`, which starts on the node.
    fn run_job(&mut self, payload: PayloadHash) -> JobId {
        let who = Caller { name: "alice".into(), operator: false };
        let job = self.submit(&who, Some(payload)).expect("accepted");
        self.input(job, 1);
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
    let mut desk = Desk::new(Quotas::default());
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
