//! What the ledger knows of payloads: which the driver must keep (files) and have at hand
//! (bytes to ship), and a node's evictions, after which the payloads its jobs still use are
//! shipped again.

use std::collections::HashSet;

use tracing::debug;
use wire::proto::{JobState, PayloadHash};

use super::{Ledger, NodeCommand, LOG_TARGET};
use crate::scheduler::NodeId;

impl Ledger {
    /// Whether a running job uses `payload`, so the driver keeps its bytes at hand for shipping
    /// to nodes; a finished job's payload is needed no more.
    pub fn payload_needed(&self, payload: &PayloadHash) -> bool {
        self.jobs.values().any(|e| e.record.state == JobState::Running && e.record.submission.payload == *payload)
    }

    /// Every payload an unfinished job uses: the files the driver must keep.
    pub fn payloads_in_use(&self) -> HashSet<PayloadHash> {
        self.jobs.values().filter(|e| e.record.state == JobState::Running).map(|e| e.record.submission.payload).collect()
    }

    /// A node's cache deleted payloads no job of its used: later jobs get them shipped again, and
    /// so do jobs already started there that use one (the node evicted before it heard of them).
    pub(super) fn handle_payloads_evicted(&mut self, node: NodeId, payloads: &[PayloadHash]) {
        let Some(entry) = self.nodes.get_mut(&node) else { return };
        for payload in payloads {
            entry.payloads.remove(payload);
        }
        let mut ship: Vec<PayloadHash> = self
            .scheduler
            .jobs_started_on(node)
            .filter_map(|job| self.jobs.get(&job))
            .map(|e| e.record.submission.payload)
            .filter(|payload| payloads.contains(payload))
            .collect();
        ship.sort_unstable_by_key(|p| p.0);
        ship.dedup();
        for payload in ship {
            if let Some(entry) = self.nodes.get_mut(&node) {
                entry.payloads.insert(payload);
            }
            debug!(target: LOG_TARGET, node = %self.node_name(node), ?payload, "shipping an evicted payload again");
            self.send_node(node, NodeCommand::Payload(payload));
        }
    }
}
