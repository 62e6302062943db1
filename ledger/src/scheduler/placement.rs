//! Placement: which pending chunk goes to which node. Jobs are served by priority and
//! round-robin within a priority (see `JobKey`); a node takes an attempt when it fits (free
//! position, platform, memory, its share of the pipeline); a retry is held back from the nodes it
//! failed on while another eligible node exists. The free-position indexes (`Scheduler::free` and
//! `Scheduler::idle`) are kept in step with every change to a node here.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::ops::Bound;
use std::time::Instant;

use wire::proto::{AttemptId, ChunkIndex, JobId};

use super::job::{Attempt, Job};
use super::model::share_limit;
use super::node::{Node, NodeJob, Share};
use super::{Action, NodeId, Scheduler, Timer};

/// Service order of a job: higher priority first, then jobs never placed in submission order,
/// then the job placed least recently (its last placement's number; the submission number keeps
/// keys unique).
pub(super) type JobKey = (Reverse<i32>, u64, u64);

/// Which pending chunk to place.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pick {
    /// The requeued chunk at this index of `Job::requeued`.
    Requeued(usize),
    /// The next fresh chunk.
    Fresh,
}

/// How far into a job's requeue a node looks for a chunk that did not fail on it.
const REQUEUE_SCAN: usize = 16;

impl Scheduler {
    /// Gives the node's free positions to pending jobs in service order, one chunk at a time:
    /// each placement moves its job behind the others of its priority (see `assign`), so equal
    /// jobs take turns.
    pub(super) fn fill_node(&mut self, now: Instant, node: NodeId) {
        self.fill_node_once(now, node);
        self.fill_moved(now);
    }

    fn fill_node_once(&mut self, now: Instant, node: NodeId) {
        let mut cursor = None;
        loop {
            match self.nodes.get(&node) {
                Some(n) if n.free_positions() > 0 => {}
                _ => return,
            }
            let Some((key, job)) = self.next_pending(cursor) else { return };
            cursor = Some(key);
            if let Some(pick) = self.choose(job, node) {
                if self.assign(now, job, node, pick) {
                    // Jobs passed over for want of memory may fit a queued position now.
                    cursor = None;
                }
            }
        }
    }

    /// Places the job's pending chunks, each on the fitting node with the most free positions.
    /// Only positions no other pending job could take are free, so this takes nothing from them.
    pub(super) fn fill_job(&mut self, now: Instant, job: JobId) {
        self.fill_job_once(now, job);
        self.fill_moved(now);
    }

    /// Offers the retries that slid into the window `choose` scans (see `window_moved`) to the
    /// free nodes, until none slides in. Not re-entered: the outermost call drains.
    fn fill_moved(&mut self, now: Instant) {
        if self.filling_moved {
            return;
        }
        self.filling_moved = true;
        while let Some(job) = self.window_moved.pop() {
            self.fill_job_once(now, job);
        }
        self.filling_moved = false;
    }

    fn fill_job_once(&mut self, now: Instant, job: JobId) {
        let mut crossed = Vec::new();
        while self.jobs.get(&job).is_some_and(Job::has_pending) {
            let chosen = self
                .free
                .iter()
                .rev()
                .find_map(|&(_, Reverse(node))| Some((node, self.choose(job, node)?)));
            let Some((node, pick)) = chosen else { break };
            if self.assign(now, job, node, pick) {
                crossed.push(node);
            }
        }
        // Nodes whose running positions filled up may now take jobs they lacked memory for.
        for node in crossed {
            self.fill_node(now, node);
        }
    }

    /// Runs [`Scheduler::fill_job`] for every job with pending chunks, in service order.
    pub(super) fn fill_all(&mut self, now: Instant) {
        let mut cursor = None;
        while let Some((key, job)) = self.next_pending(cursor) {
            cursor = Some(key);
            self.fill_job(now, job);
        }
    }

    /// The next job with pending chunks in service order, after `after` if given.
    fn next_pending(&self, after: Option<JobKey>) -> Option<(JobKey, JobId)> {
        let next = match after {
            None => self.pending.iter().next(),
            Some(key) => self.pending.range((Bound::Excluded(key), Bound::Unbounded)).next(),
        };
        next.map(|(&key, &job)| (key, job))
    }

    /// Which of the job's chunks to place on the node now, if any.
    pub(super) fn choose(&self, job: JobId, node: NodeId) -> Option<Pick> {
        let j = self.jobs.get(&job)?;
        if !self.nodes.get(&node)?.fits(job, &j.req) {
            return None;
        }
        for (i, &chunk) in j.requeued.iter().take(REQUEUE_SCAN).enumerate() {
            if !j.failed_on(chunk, node) || !self.has_alternative(job, j, chunk) {
                return Some(Pick::Requeued(i));
            }
        }
        (j.next_fresh < j.total).then_some(Pick::Fresh)
    }

    /// Creates an attempt for a chosen pending chunk and moves the job to the back of its
    /// priority class.
    ///
    /// Returns whether this filled the node's last running position while queued positions
    /// remain: from then on a job only needs its own memory limit to fit (see `Node::fits`), so
    /// jobs skipped for want of memory must be offered the node again.
    fn assign(&mut self, now: Instant, job: JobId, node: NodeId, pick: Pick) -> bool {
        let Some(j) = self.jobs.get_mut(&job) else { return false };
        let chunk = match pick {
            Pick::Requeued(i) => {
                // Invariant: `choose` found index `i` in this queue and nothing ran since.
                let Some(chunk) = j.requeued.remove(i) else { return false };
                if j.requeued.len() >= REQUEUE_SCAN {
                    self.window_moved.push(job);
                }
                chunk
            }
            Pick::Fresh => {
                j.next_fresh += 1;
                j.next_fresh - 1
            }
        };
        if let Some(at) = j.placement_deadline.take() {
            self.timers.remove(&(at, Timer::Placement(job)));
        }
        if j.in_pending {
            self.pending.remove(&j.key);
            j.key.1 = self.next_placement;
            self.pending.insert(j.key, job);
        } else {
            j.key.1 = self.next_placement;
        }
        self.next_placement += 1;
        let crossed = self.place(now, job, chunk, node, None);
        self.sync_pending(job);
        crossed
    }

    /// Creates an attempt of the chunk on the node, starting the job there first if needed; a
    /// copy of `twin` if given. Returns what [`Scheduler::assign`] does.
    pub(super) fn place(
        &mut self,
        now: Instant,
        job: JobId,
        chunk: ChunkIndex,
        node: NodeId,
        twin: Option<AttemptId>,
    ) -> bool {
        let (Some(j), Some(n)) = (self.jobs.get_mut(&job), self.nodes.get_mut(&node)) else {
            return false;
        };
        j.in_flight += 1;
        if let Entry::Vacant(entry) = n.jobs.entry(job) {
            entry.insert(NodeJob::Started);
            j.started_on.insert(node);
            self.out.act(Action::StartJob { node, job });
        }
        let new_share = !n.shares.contains_key(&job);
        let limit = share_limit(&self.config, n.slots, j.first_run);
        n.shares.entry(job).or_insert(Share { in_flight: 0, limit, run_nanos: None }).in_flight += 1;
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        let memory = j.req.memory_limit;
        // The newest attempt: it runs at once if fewer than `slots` are ahead of it.
        let running_since = (n.attempts.len() < n.slots as usize).then_some(now);
        n.attempts.insert(attempt);
        n.in_flight_memory = n.in_flight_memory.saturating_add(memory);
        let speculative = twin.is_some();
        if speculative {
            j.pairs += 1;
            j.speculative += 1;
        }
        if new_share {
            self.refresh_capacity(node);
        }
        self.set_in_flight(node, 1);
        let state = Attempt {
            job,
            chunk,
            node,
            memory,
            running_since,
            speculative,
            twin,
            candidate: false,
        };
        self.attempts.insert(attempt, state);
        if running_since.is_some() && !speculative {
            self.add_candidate(attempt);
        }
        if let Some(t) = twin.and_then(|twin| self.attempts.get_mut(&twin)) {
            t.twin = Some(attempt);
        }
        self.out.act(Action::Assign { node, job, chunk, attempt, speculative });
        self.nodes.get(&node).is_some_and(|n| n.in_flight == n.slots && n.in_flight < n.capacity)
    }

    /// Adds `delta` (+1 or -1) to the node's in-flight count.
    fn set_in_flight(&mut self, node: NodeId, delta: i32) {
        self.update_node(node, |n| n.in_flight = n.in_flight.saturating_add_signed(delta));
    }

    /// Changes a node, keeping its entry in the free-position index in step and noting room
    /// that appeared for waiting speculative copies.
    pub(super) fn update_node(&mut self, id: NodeId, change: impl FnOnce(&mut Node)) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let (old_free, old_idle) = (node.free_positions(), node.is_idle());
        change(node);
        let (new_free, new_idle) = (node.free_positions(), node.is_idle());
        if (old_free, old_idle) != (new_free, new_idle) {
            if old_idle {
                self.idle.remove(&(old_free, Reverse(id)));
            }
            if new_idle {
                self.idle.insert((new_free, Reverse(id)));
            }
        }
        if old_free != new_free {
            if old_free > 0 {
                self.free.remove(&(old_free, Reverse(id)));
            }
            if new_free > 0 {
                self.free.insert((new_free, Reverse(id)));
            }
            if new_free > old_free {
                self.freed = true;
            }
        }
    }

    /// Forgets a live attempt, frees its node position and job count, and unpairs its twin,
    /// which stays a lone attempt that is never copied again. The caller requeues the chunk if
    /// the returned attempt had no twin and needs running again.
    pub(super) fn release_attempt(&mut self, now: Instant, attempt: AttemptId) -> Option<Attempt> {
        let a = self.attempts.remove(&attempt)?;
        let mut promoted = None;
        if let Some(n) = self.nodes.get_mut(&a.node) {
            n.attempts.remove(&attempt);
            n.in_flight_memory = n.in_flight_memory.saturating_sub(a.memory);
            if let Some(share) = n.shares.get_mut(&a.job) {
                share.in_flight = share.in_flight.saturating_sub(1);
            }
            if a.running_since.is_some() {
                // The first attempt queued behind the running ones takes the freed slot.
                promoted = n.attempts.iter().nth((n.slots as usize).saturating_sub(1)).copied();
            }
        }
        if let Some(next) = promoted.and_then(|id| self.attempts.get_mut(&id).map(|b| (id, b))) {
            let (id, b) = next;
            if b.running_since.is_none() {
                b.running_since = Some(now);
                if !b.speculative {
                    self.add_candidate(id);
                }
            }
        }
        self.set_in_flight(a.node, -1);
        if let Some(t) = a.twin.and_then(|twin| self.attempts.get_mut(&twin)) {
            t.twin = None;
        }
        if let Some(j) = self.jobs.get_mut(&a.job) {
            j.in_flight = j.in_flight.saturating_sub(1);
            if a.twin.is_some() {
                j.pairs = j.pairs.saturating_sub(1);
            }
            if let (true, Some(since)) = (a.candidate, a.running_since) {
                j.candidates.remove(&(since, attempt));
            }
        }
        if a.candidate {
            self.mark_spec(a.job);
        }
        Some(a)
    }

    /// Puts the chunk back in the job's queue, behind the chunks requeued before it.
    pub(super) fn requeue(&mut self, job: JobId, chunk: ChunkIndex) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.requeued.push_back(chunk);
            self.sync_pending(job);
        }
    }

    /// Keeps `pending` in step with whether the job has pending chunks.
    pub(super) fn sync_pending(&mut self, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        let has = j.has_pending();
        if has != j.in_pending {
            j.in_pending = has;
            if has {
                self.pending.insert(j.key, job);
            } else {
                self.pending.remove(&j.key);
            }
            // Speculation only runs while nothing is pending.
            self.mark_spec(job);
        }
    }
}
