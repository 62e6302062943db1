//! Speculation: copies of straggling attempts. Once a job has nothing pending, an attempt in
//! flight longer than `max(speculation_min_age, speculation_multiplier * median)` gets one copy
//! on another node with an idle slot; the first result wins. Candidates are kept in start order,
//! so a pass looks only at a job's oldest attempts, and a `Timer::Speculate` wakes the job when
//! its next attempt turns into a straggler. Also `Scheduler::settle`, which ends every call.

use std::cmp::Reverse;
use std::ops::Bound;
use std::time::{Duration, Instant};

use wire::proto::{AttemptId, JobId};

use super::job::Job;
use super::{NodeId, Scheduler, Timer};

/// How many of a job's stragglers, oldest first, one speculation pass tries to copy.
pub(super) const SPECULATION_SCAN: usize = 16;

impl Scheduler {
    /// Makes a running original attempt a candidate for a speculative copy.
    pub(super) fn add_candidate(&mut self, attempt: AttemptId) {
        let Some(a) = self.attempts.get_mut(&attempt) else { return };
        let (Some(since), Some(j)) = (a.running_since, self.jobs.get_mut(&a.job)) else { return };
        a.candidate = true;
        // A first candidate changes the job's oldest attempt, so its wake-up may have to move;
        // and when every candidate is already a straggler there is no wake-up, so a new young
        // one needs one.
        let first = j.candidates.is_empty() || j.spec_deadline.is_none();
        j.candidates.insert((since, attempt));
        if first {
            let job = a.job;
            self.mark_spec(job);
        }
    }

    /// Notes that the job's speculation must be reconsidered before the call returns.
    pub(super) fn mark_spec(&mut self, job: JobId) {
        if let Some(j) = self.jobs.get_mut(&job) {
            if !j.spec_dirty {
                j.spec_dirty = true;
                self.spec_dirty.push(job);
            }
        }
    }

    /// Finishes a call: reconsiders speculation for the jobs whose state changed, and for the
    /// jobs waiting for room if room appeared. Every `handle_*` ends with it.
    pub(super) fn settle(&mut self, now: Instant) {
        // Filling a node may start a job there whose share raises the node's capacity again.
        loop {
            if let Some(node) = self.grown.pop() {
                self.fill_node(now, node);
            } else if self.cap_freed.is_empty() {
                break;
            } else {
                self.fill_cap_freed(now);
            }
        }
        self.speculate_dirty(now);
        // A capped tenant's room also changes with its own slots and the cluster's eligible
        // slots, which free no position: with caps in play, waiting copies are always looked at.
        let capped = !self.spec_waiting.is_empty() && self.tenants.values().any(|t| t.max_slot_share.is_some());
        if std::mem::take(&mut self.freed) || capped {
            let mut cursor = None;
            loop {
                let next = match cursor {
                    None => self.spec_waiting.first(),
                    Some(key) => {
                        self.spec_waiting.range((Bound::Excluded(key), Bound::Unbounded)).next()
                    }
                };
                let Some(&key) = next else { break };
                cursor = Some(key);
                self.speculate(now, key.1);
                self.speculate_dirty(now);
            }
            // Copies take room; they never make any.
            self.freed = false;
        }
    }

    /// Reconsiders speculation for the jobs in `spec_dirty`, in the order they were marked,
    /// including those a copy's placement marks on the way.
    fn speculate_dirty(&mut self, now: Instant) {
        let mut i = 0;
        while let Some(&job) = self.spec_dirty.get(i) {
            i += 1;
            self.speculate(now, job);
        }
        self.spec_dirty.clear();
    }

    /// How long the job's attempts may be in flight before they are stragglers, if the job is
    /// in the phase where it speculates at all.
    pub(super) fn spec_threshold(&self, j: &Job) -> Option<Duration> {
        let multiplier = self.config.speculation_multiplier;
        if !(multiplier.is_finite() && multiplier > 0.0) {
            return None;
        }
        if !j.input_complete || j.has_pending() || !j.unclaimed.is_empty() || j.candidates.is_empty() {
            return None;
        }
        if j.durations.len() < self.config.speculation_min_samples.max(1) as usize {
            return None;
        }
        let median = j.durations.median()?;
        let nanos = median.as_nanos() as f64 * multiplier;
        // Beyond u64 nanoseconds (584 years) nothing is ever a straggler.
        if nanos >= u64::MAX as f64 {
            return None;
        }
        Some(Duration::from_nanos(nanos.round() as u64).max(self.config.speculation_min_age))
    }

    /// Copies the job's oldest stragglers where there is room, parks the job in `spec_waiting`
    /// if some found none, and sets the wake-up for its oldest attempt that is not a straggler
    /// yet.
    pub(super) fn speculate(&mut self, now: Instant, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        j.spec_dirty = false;
        if let Some(at) = j.spec_deadline.take() {
            self.timers.remove(&(at, Timer::Speculate(job)));
        }
        let j = &self.jobs[&job];
        let mut waiting = false;
        if let Some(threshold) = self.spec_threshold(j) {
            // Attempts started at or before `cutoff` are stragglers.
            let cutoff = now.checked_sub(threshold);
            let mut cursor: Option<(Instant, AttemptId)> = None;
            let mut scanned = 0;
            while let Some(j) = self.jobs.get(&job) {
                let next = match cursor {
                    None => j.candidates.first(),
                    Some(c) => j.candidates.range((Bound::Excluded(c), Bound::Unbounded)).next(),
                };
                let Some(&(started, attempt)) = next else { break };
                if cutoff.is_none_or(|cutoff| started > cutoff) {
                    break;
                }
                if scanned == SPECULATION_SCAN {
                    waiting = true;
                    break;
                }
                scanned += 1;
                cursor = Some((started, attempt));
                match self.copy_target(attempt) {
                    Some(node) => self.launch_copy(now, attempt, node),
                    None => waiting = true,
                }
            }
            let Some(j) = self.jobs.get_mut(&job) else { return };
            let young = match cutoff {
                None => j.candidates.first(),
                Some(cutoff) => j
                    .candidates
                    .range((Bound::Excluded((cutoff, AttemptId(u64::MAX))), Bound::Unbounded))
                    .next(),
            };
            if let Some(at) = young.and_then(|&(started, _)| started.checked_add(threshold)) {
                j.spec_deadline = Some(at);
                self.timers.insert((at, Timer::Speculate(job)));
            }
        }
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.spec_waiting != waiting {
            j.spec_waiting = waiting;
            let key = (Reverse(j.req.priority), job);
            if waiting {
                self.spec_waiting.insert(key);
            } else {
                self.spec_waiting.remove(&key);
            }
        }
    }

    /// A node with an idle slot that can take a copy of the attempt: not its own node, not one
    /// the chunk failed on, within the tenant's slot cap; the one with the most free positions.
    pub(super) fn copy_target(&self, attempt: AttemptId) -> Option<NodeId> {
        let a = self.attempts.get(&attempt)?;
        let j = self.jobs.get(&a.job)?;
        self.idle.iter().rev().map(|&(_, Reverse(node))| node).find(|&node| {
            node != a.node
                && self.nodes.get(&node).is_some_and(|n| n.fits(a.job, &j.req) && self.tenant_has_room(j.tenant, n))
                && !j.failed_on(a.chunk, node)
        })
    }

    /// Places a speculative copy of the attempt on the node.
    fn launch_copy(&mut self, now: Instant, attempt: AttemptId, node: NodeId) {
        let Some(a) = self.attempts.get_mut(&attempt) else { return };
        a.candidate = false;
        let (job, chunk, since) = (a.job, a.chunk, a.running_since);
        if let (Some(j), Some(since)) = (self.jobs.get_mut(&job), since) {
            j.candidates.remove(&(since, attempt));
        }
        if self.place(now, job, chunk, node, Some(attempt)) {
            // Jobs passed over may fit the node now (see `assign`).
            self.fill_node(now, node);
        }
    }
}
