//! A node's pre-combined report made by hand, for tests that choose when it arrives (say after
//! a speculative copy of one of its chunks already won).

use bytes::Bytes;
use wire::proto::{AttemptId, ChunkIndex, ChunkReport, JobId};

use super::{run, World};

impl World {
    /// Node `n` reports `left` and `right`, the attempts of chunks `first` and `first + 1` of
    /// `job`, pre-combined, whether or not it still holds them.
    pub(in super::super) fn report_precombined(&mut self, n: usize, job: JobId, first: ChunkIndex, (left, right): (AttemptId, AttemptId)) {
        let inputs = &self.submitted[&job];
        let output = [run(&inputs[first as usize]), run(&inputs[first as usize + 1])].concat();
        let log = Bytes::from(format!("attempt {left} of chunk {first}\n"));
        let report = ChunkReport { attempt: left, outcome: Ok(Bytes::from(output)), run_nanos: 2_000, log, combined_with: Some(right) };
        self.nodes[n].queue.retain(|(a, ..)| *a != left && *a != right);
        self.nodes[n].unacked.insert(left, report.clone());
        let id = self.nodes[n].id;
        self.ledger.handle_report(self.now, id, report);
        self.turn();
    }
}
