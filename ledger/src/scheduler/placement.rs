//! Placement: which pending chunk goes to which node. A free position goes to the tenant with the
//! lowest usage per weight among those with a chunk that fits it (see `tenant.rs`), and within
//! that tenant jobs are served by priority and round-robin within a priority (see `JobKey`). A
//! node takes an attempt when it fits (free position, platform, memory, its share of the
//! pipeline, the tenant's slot cap); a retry is held back from the nodes it failed on while
//! another eligible node exists. A paired job's (a reduce job's) fresh chunks `2k` and `2k + 1`
//! go to one node when it has room for both, so the node can pre-combine them. The
//! free-position indexes (`Scheduler::free` and `Scheduler::idle`) are kept in step with every
//! change to a node here.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::ops::Bound;
use std::time::Instant;

use wire::proto::{AttemptId, ChunkIndex, JobId};

use super::job::{Attempt, Job};
use super::model::share_limit;
use super::node::{Node, NodeJob, Share};
use super::tenant::TenantKey;
use super::{Action, NodeId, Scheduler, Timer};

/// Service order of a job within its tenant: higher priority first, then jobs never placed in submission order,
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

/// How [`Scheduler::place_attempt`] creates an attempt.
#[derive(Debug, Clone, Copy)]
pub(super) enum Placing {
    /// A new attempt, a speculative copy of `twin` if given.
    New {
        /// The straggler it copies.
        twin: Option<AttemptId>,
    },
    /// An attempt the node already holds, kept under its id.
    Adopted {
        /// Its id.
        attempt: AttemptId,
        /// Whether it was placed as a speculative copy.
        speculative: bool,
        /// The other live attempt of its chunk, if it is one of a pair.
        twin: Option<AttemptId>,
    },
}

/// How far into a job's requeue a node looks for a chunk that did not fail on it.
pub(super) const REQUEUE_SCAN: usize = 16;

impl Scheduler {
    /// Gives the node's free positions to pending jobs one chunk at a time: each to the tenant with
    /// the lowest usage per weight that has a chunk fitting the node, and of that tenant's jobs to
    /// the first in service order. Each placement moves its job behind the others of its priority
    /// (see `assign`), so equal jobs take turns.
    pub(super) fn fill_node(&mut self, now: Instant, node: NodeId) {
        self.fill_node_once(now, node);
        self.fill_moved(now);
    }

    fn fill_node_once(&mut self, now: Instant, node: NodeId) {
        self.fill_pass += 1;
        // Tenants up to this key have nothing that fits the node (`Tenant::cursor` does the same
        // for each tenant's jobs). A tenant that places moves behind it: its usage only grows.
        let mut after: Option<TenantKey> = None;
        loop {
            match self.nodes.get(&node) {
                Some(n) if n.free_positions() > 0 => {}
                _ => return,
            }
            let next = match after {
                None => self.tenant_order.first(),
                Some(key) => self.tenant_order.range((Bound::Excluded(key), Bound::Unbounded)).next(),
            };
            let Some(&key) = next else { return };
            let Some((job, pick)) = self.next_job_for(key.id, node) else {
                after = Some(key);
                continue;
            };
            #[cfg(test)]
            self.check_fair_choice(key, node);
            if self.assign(now, job, node, pick) {
                // Jobs passed over may fit the node now (see `assign`).
                after = None;
                self.fill_pass += 1;
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
            let chosen = self.pair_choice(job).or_else(|| {
                self.free.iter().rev().find_map(|&(_, Reverse(node))| Some((node, self.choose(job, node)?)))
            });
            let Some((node, pick)) = chosen else { break };
            if self.assign(now, job, node, pick) {
                crossed.push(node);
            }
        }
        // Nodes where skipped jobs may fit now (see `assign`) are offered to every job.
        for node in crossed {
            self.fill_node(now, node);
        }
    }

    /// Places what fits after a change that may concern many jobs (a node lost, drained or
    /// quarantined): every job with pending chunks.
    pub(super) fn fill_all(&mut self, now: Instant) {
        let jobs = self.pending_jobs();
        self.fill_jobs(now, &jobs);
    }

    /// Places the pending chunks of these jobs. With one tenant waiting, job by job in service
    /// order, each spread over the nodes with the most room ([`Scheduler::fill_job`]). With
    /// several, free positions may be contended, so they go out one at a time by fair share
    /// ([`Scheduler::fill_node`] on every node with room), which reaches these jobs too.
    pub(super) fn fill_jobs(&mut self, now: Instant, jobs: &[JobId]) {
        if self.tenant_order.len() > 1 {
            let free: Vec<NodeId> = self.free.iter().rev().map(|&(_, Reverse(node))| node).collect();
            for node in free {
                self.fill_node(now, node);
            }
            return;
        }
        for &job in jobs {
            self.fill_job(now, job);
        }
    }

    /// Which of the job's chunks to place on the node now, if any.
    pub(super) fn choose(&self, job: JobId, node: NodeId) -> Option<Pick> {
        let j = self.jobs.get(&job)?;
        let n = self.nodes.get(&node)?;
        if !n.fits(job, &j.req) || !self.tenant_has_room(j.tenant, n) {
            return None;
        }
        for (i, &chunk) in j.requeued.iter().take(REQUEUE_SCAN).enumerate() {
            if !j.failed_on(chunk, node) || !self.has_alternative(job, j, chunk) {
                return Some(Pick::Requeued(i));
            }
        }
        (j.next_fresh < j.fresh_end).then_some(Pick::Fresh)
    }

    /// Creates an attempt for a chosen pending chunk, moves the job to the back of its priority
    /// class and marks its tenant as just served.
    ///
    /// Returns whether jobs skipped on the node may fit it now, so they must be offered it again:
    /// this filled the node's last running position while queued positions remain (from then on
    /// a job only needs its own memory limit to fit, see `Node::fits`), or a capped tenant now
    /// holds every slot of the node (its queued attempts there take no new slot).
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
        let (tenant, old_key, in_pending) = (j.tenant, j.key, j.in_pending);
        let placement = self.next_placement;
        self.next_placement += 1;
        j.key.1 = placement;
        let new_key = j.key;
        self.update_tenant(tenant, |t| {
            t.served = placement;
            if in_pending {
                t.pending.remove(&old_key);
                t.pending.insert(new_key, job);
            }
        });
        let mut crossed = self.place(now, job, chunk, node, None);
        self.sync_pending(job);
        if let Some(j) = self.jobs.get_mut(&job).filter(|j| j.req.paired && matches!(pick, Pick::Fresh)) {
            j.pair_node = chunk.is_multiple_of(2).then_some(node);
        }
        // A paired job's fresh chunks `2k` and `2k + 1` go to one node when it has room for
        // both (a reduce job's node then pre-combines them).
        let pair = matches!(pick, Pick::Fresh)
            && chunk.is_multiple_of(2)
            && self.jobs.get(&job).is_some_and(|j| j.req.paired && j.next_fresh < j.fresh_end)
            && self.nodes.get(&node).is_some_and(|n| n.free_positions() > 0);
        if pair && matches!(self.choose(job, node), Some(Pick::Fresh)) {
            crossed |= self.assign(now, job, node, Pick::Fresh);
        }
        crossed
    }

    /// For a paired job whose next fresh chunk is `2k + 1`: the node that took `2k`, if it has
    /// room for it.
    fn pair_choice(&self, job: JobId) -> Option<(NodeId, Pick)> {
        let j = self.jobs.get(&job)?;
        let node = j.pair_node.filter(|_| j.req.paired && !j.next_fresh.is_multiple_of(2))?;
        if self.nodes.get(&node)?.free_positions() == 0 {
            return None;
        }
        self.choose(job, node).filter(|pick| matches!(pick, Pick::Fresh)).map(|pick| (node, pick))
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
        #[cfg(test)]
        self.check_cap_before_place(job, node);
        self.place_attempt(now, job, chunk, node, Placing::New { twin })
    }

    /// Creates an attempt of the chunk on the node: a new one (sent with [`Action::Assign`]), or
    /// one the node already holds and the scheduler adopts under its id (nothing is sent but the
    /// job's [`Action::StartJob`], when the node's session has not had it). Returns what
    /// [`Scheduler::assign`] does.
    pub(super) fn place_attempt(
        &mut self,
        now: Instant,
        job: JobId,
        chunk: ChunkIndex,
        node: NodeId,
        placing: Placing,
    ) -> bool {
        let (Some(j), Some(n)) = (self.jobs.get_mut(&job), self.nodes.get_mut(&node)) else {
            return false;
        };
        j.in_flight += 1;
        j.attempts += 1;
        let tenant = j.tenant;
        *n.tenants.entry(tenant).or_default() += 1;
        if let Entry::Vacant(entry) = n.jobs.entry(job) {
            entry.insert(NodeJob::Started);
            j.started_on.insert(node);
            self.out.act(Action::StartJob { node, job });
        }
        let new_share = !n.shares.contains_key(&job);
        let limit = share_limit(&self.config, n.slots, j.first_run);
        n.shares.entry(job).or_insert(Share { in_flight: 0, limit, run_nanos: None }).in_flight += 1;
        let (attempt, speculative, twin) = match placing {
            Placing::New { twin } => {
                let attempt = AttemptId(self.next_attempt);
                self.next_attempt += 1;
                if twin.is_some() {
                    j.speculative += 1;
                }
                (attempt, twin.is_some(), twin)
            }
            Placing::Adopted { attempt, speculative, twin } => (attempt, speculative, twin),
        };
        let memory = j.req.memory_limit;
        // The newest attempt: it runs at once if fewer than `slots` are ahead of it.
        let running_since = (n.attempts.len() < n.slots as usize).then_some(now);
        n.attempts.insert(attempt);
        n.in_flight_memory = n.in_flight_memory.saturating_add(memory);
        if twin.is_some() {
            j.pairs += 1;
        }
        if new_share {
            self.refresh_capacity(node);
        }
        self.set_in_flight(node, 1);
        self.tenant_attempt(tenant, node, 1);
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
        if matches!(placing, Placing::New { .. }) {
            self.out.act(Action::Assign { node, job, chunk, attempt, speculative });
        }
        let capped = self.tenants.get(&tenant).is_some_and(|t| t.max_slot_share.is_some());
        self.nodes.get(&node).is_some_and(|n| {
            let took_every_slot = capped && n.tenants.get(&tenant) == Some(&n.slots);
            (n.in_flight == n.slots || took_every_slot) && n.in_flight < n.capacity
        })
    }

    /// Adds `delta` (+1 or -1) to the node's in-flight count.
    fn set_in_flight(&mut self, node: NodeId, delta: i32) {
        self.update_node(node, |n| n.in_flight = n.in_flight.saturating_add_signed(delta));
    }

    /// Changes a node, keeping its entry in the free-position index and `eligible_slots` in step
    /// and noting room that appeared for waiting speculative copies.
    pub(super) fn update_node(&mut self, id: NodeId, change: impl FnOnce(&mut Node)) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let (old_free, old_idle, old_slots) = (node.free_positions(), node.is_idle(), node.eligible_slots());
        change(node);
        let (new_free, new_idle) = (node.free_positions(), node.is_idle());
        self.eligible_slots = (self.eligible_slots + node.eligible_slots()).saturating_sub(old_slots);
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
        // Invariant: attempts only exist for live jobs; end_job releases them before forgetting.
        let tenant = self.jobs.get(&a.job).map(|j| j.tenant);
        let mut promoted = None;
        if let Some(n) = self.nodes.get_mut(&a.node) {
            n.attempts.remove(&attempt);
            if let Some(Entry::Occupied(mut here)) = tenant.map(|t| n.tenants.entry(t)) {
                *here.get_mut() -= 1;
                if *here.get() == 0 {
                    here.remove();
                }
            }
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
        if let Some(tenant) = tenant {
            self.tenant_attempt(tenant, a.node, -1);
        }
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

    /// Keeps its tenant's `pending` in step with whether the job has pending chunks.
    pub(super) fn sync_pending(&mut self, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        let has = j.has_pending();
        if has != j.in_pending {
            j.in_pending = has;
            let (tenant, key) = (j.tenant, j.key);
            self.update_tenant(tenant, |t| {
                if has {
                    t.pending.insert(key, job);
                } else {
                    t.pending.remove(&key);
                }
            });
            // Speculation only runs while nothing is pending.
            self.mark_spec(job);
        }
    }
}
