//! The run-time model: how deep each job's share of a node's pipeline is, from the run times the
//! node measures for its chunks (`pipeline_budget`), what that makes the node's capacity, and the
//! running [`Median`] of chunk durations that speculation compares stragglers with.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use wire::proto::{AttemptId, JobId};

use super::{NodeId, Scheduler, SchedulerConfig};

/// The most attempts of one job a node with `slots` slots may hold: `slots * (1 + depth)`, the
/// depth being `pipeline_depth` without a budget, and under one the queued chunks per slot that
/// cover the budget at `run` per chunk, between 1 and `pipeline_depth` (1 when nothing is
/// measured). With no job asking for more, also a node's capacity.
pub(super) fn share_limit(config: &SchedulerConfig, slots: u32, run: Option<Duration>) -> u32 {
    let max = config.pipeline_depth;
    let depth = match (config.pipeline_budget, run) {
        (None, _) => max,
        (Some(_), None) => max.min(1),
        (Some(budget), Some(run)) => {
            u32::try_from(budget.as_nanos() / run.as_nanos().max(1)).unwrap_or(u32::MAX).clamp(max.min(1), max)
        }
    };
    slots.saturating_mul(depth.saturating_add(1))
}

/// Chunk durations kept exactly per job; beyond, they are sampled ever more sparsely.
const DURATION_SAMPLES: u64 = 1 << 16;

/// A running median: the lower half in a max-heap, the upper half in a min-heap.
#[derive(Debug, Default)]
pub(super) struct Median {
    low: BinaryHeap<u64>,
    high: BinaryHeap<Reverse<u64>>,
}

impl Median {
    /// Records the duration of the `n`-th accepted chunk (from 1): every one of the first
    /// `DURATION_SAMPLES`, then one in `1 + n / DURATION_SAMPLES`, so memory grows only
    /// logarithmically with the job's size.
    pub(super) fn insert(&mut self, n: u64, duration: Duration) {
        let stride = 1 + n / DURATION_SAMPLES;
        if n > DURATION_SAMPLES && !n.is_multiple_of(stride) {
            return;
        }
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        if self.low.peek().is_none_or(|&m| nanos <= m) {
            self.low.push(nanos);
        } else {
            self.high.push(Reverse(nanos));
        }
        if self.low.len() > self.high.len() + 1 {
            if let Some(top) = self.low.pop() {
                self.high.push(Reverse(top));
            }
        } else if self.high.len() > self.low.len() {
            if let Some(Reverse(top)) = self.high.pop() {
                self.low.push(top);
            }
        }
    }

    /// Durations recorded.
    pub(super) fn len(&self) -> usize {
        self.low.len() + self.high.len()
    }

    /// The lower median.
    pub(super) fn median(&self) -> Option<Duration> {
        self.low.peek().map(|&nanos| Duration::from_nanos(nanos))
    }
}

impl Scheduler {
    /// The body of [`Scheduler::handle_run_time`]: the measured run time moves the average of
    /// the attempt's job on its node, and with it the job's share limit there.
    pub(super) fn measure_run_time(&mut self, now: Instant, node: NodeId, attempt: AttemptId, run: Duration) {
        if self.config.pipeline_budget.is_none() {
            return;
        }
        let Some(job) = self.attempts.get(&attempt).filter(|a| a.node == node).map(|a| a.job) else { return };
        if self.jobs.get(&job).is_some_and(|j| j.first_run.is_none()) {
            self.first_run_time(now, job, run);
        }
        let Some(n) = self.nodes.get_mut(&node) else { return };
        let slots = n.slots;
        let Some(share) = n.shares.get_mut(&job) else { return };
        let sample = u64::try_from(run.as_nanos()).unwrap_or(u64::MAX).max(1);
        // An average over about the last eight chunks: steady, yet quick to follow a change.
        let average = share.run_nanos.map_or(sample, |old| old - old / 8 + sample / 8).max(1);
        share.run_nanos = Some(average);
        let limit = share_limit(&self.config, slots, Some(Duration::from_nanos(average)));
        if limit == share.limit {
            return;
        }
        let grew = limit > share.limit;
        share.limit = limit;
        self.refresh_capacity(node);
        if grew {
            self.grown.push(node);
            self.settle(now);
        }
    }

    /// The job's first measured chunk: its shares of nodes that have measured nothing of it yet
    /// grow (never shrink) to the depth it calls for, so a job of tiny chunks fills the cluster's
    /// pipelines in one pass instead of node by node as each reports.
    fn first_run_time(&mut self, now: Instant, job: JobId, run: Duration) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        j.first_run = Some(run);
        let mut grown = Vec::new();
        for &node in &j.started_on {
            let Some(n) = self.nodes.get_mut(&node) else { continue };
            let limit = share_limit(&self.config, n.slots, Some(run));
            if let Some(share) = n.shares.get_mut(&job).filter(|share| share.run_nanos.is_none() && share.limit < limit) {
                share.limit = limit;
                grown.push(node);
            }
        }
        if grown.is_empty() {
            return;
        }
        grown.sort_unstable();
        for node in grown {
            self.refresh_capacity(node);
        }
        // Spread over the nodes, most room first; `settle` then offers grown capacity to others.
        self.fill_job(now, job);
        self.settle(now);
    }

    /// Sets a node's capacity to what its jobs' shares allow (at least its base capacity), so
    /// the free-position index only lists nodes where some job may still place work.
    pub(super) fn refresh_capacity(&mut self, node: NodeId) {
        let Some(n) = self.nodes.get(&node) else { return };
        let least = share_limit(&self.config, n.slots, None);
        let wanted = n.shares.values().map(|share| share.limit).fold(least, u32::max);
        if wanted != n.capacity {
            if wanted > n.capacity {
                self.grown.push(node);
            }
            self.update_node(node, |n| n.capacity = wanted);
        }
    }
}
