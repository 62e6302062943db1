//! Test-only views of the scheduler: `check_invariants`, which the sim runs after every call to
//! check that the redundant bookkeeping agrees with itself and that the eager placement and
//! speculation promises hold; `check_fair_choice` and `check_cap_before_place`, which placement
//! runs before each decision in test builds, recomputing the fair-share and slot-cap rules by
//! brute force; and accessors the tests read.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::Instant;

use wire::proto::{AttemptId, ChunkIndex, JobId};

use super::job::{Job, JobStats};
use super::model::share_limit;
use super::speculation::SPECULATION_SCAN;
use super::tenant::{TenantId, TenantKey};
use super::{NodeId, Scheduler, Timer};

impl Scheduler {
    /// Scheduling statistics of a live job; `None` for unknown and ended jobs (the verdict
    /// actions carry their final statistics).
    pub(super) fn stats(&self, job: JobId) -> Option<JobStats> {
        self.jobs.get(&job).map(Job::stats)
    }

    /// Panics if the scheduler's redundant bookkeeping disagrees with itself or a promise does
    /// not hold at `now`.
    pub(super) fn check_invariants(&self, now: Instant) {
        let mut job_in_flight: HashMap<JobId, u64> = HashMap::new();
        let mut job_pairs: HashMap<JobId, u64> = HashMap::new();
        let mut per_chunk: HashMap<(JobId, ChunkIndex), Vec<AttemptId>> = HashMap::new();
        for (id, a) in &self.attempts {
            let n = &self.nodes[&a.node];
            assert!(n.attempts.contains(id), "attempt {id} missing from node {}", a.node);
            assert!(self.jobs.contains_key(&a.job), "attempt {id} of ended job {}", a.job);
            assert!(n.jobs.contains_key(&a.job), "attempt {id} on node without StartJob");
            *job_in_flight.entry(a.job).or_default() += 1;
            per_chunk.entry((a.job, a.chunk)).or_default().push(*id);
            let j = &self.jobs[&a.job];
            let listed = a.running_since.is_some_and(|since| j.candidates.contains(&(since, *id)));
            assert_eq!(a.candidate, listed, "attempt {id}");
            assert!(!a.candidate || (!a.speculative && a.twin.is_none()), "attempt {id}");
            if let Some(twin) = a.twin {
                let t = &self.attempts[&twin];
                assert_eq!(t.twin, Some(*id), "attempt {id} twin {twin} not linked back");
                assert_eq!((t.job, t.chunk), (a.job, a.chunk), "attempt {id} twin {twin}");
                assert_ne!(t.node, a.node, "attempt {id} and its copy on one node");
                assert_ne!(t.speculative, a.speculative, "attempt {id} twin {twin}");
                if a.speculative {
                    *job_pairs.entry(a.job).or_default() += 1;
                }
            }
        }
        for ((job, chunk), live) in &per_chunk {
            assert!(live.len() <= 2, "job {job} chunk {chunk} has attempts {live:?}");
            if let [a, b] = live[..] {
                assert_eq!(self.attempts[&a].twin, Some(b), "job {job} chunk {chunk} unpaired");
            }
        }
        for (id, n) in &self.nodes {
            assert_eq!(n.in_flight as usize, n.attempts.len(), "node {id} in_flight");
            for (position, attempt) in n.attempts.iter().enumerate() {
                let running = self.attempts[attempt].running_since.is_some();
                assert_eq!(running, position < n.slots as usize, "node {id} attempt {attempt}");
            }
            let most = n.slots * (1 + self.config.pipeline_depth);
            assert!(n.in_flight <= most, "node {id} over capacity");
            let least = share_limit(&self.config, n.slots, None);
            let wanted = n.shares.values().map(|share| share.limit).fold(least, u32::max);
            assert_eq!(n.capacity, wanted, "node {id} capacity");
            let mut shares: Vec<&JobId> = n.shares.keys().collect();
            let mut jobs: Vec<&JobId> = n.jobs.keys().collect();
            shares.sort_unstable();
            jobs.sort_unstable();
            assert_eq!(shares, jobs, "node {id} shares");
            for (job, share) in &n.shares {
                let count = n.attempts.iter().filter(|a| self.attempts[a].job == *job).count();
                assert_eq!(share.in_flight as usize, count, "node {id} job {job} in_flight");
                if self.config.pipeline_budget.is_none() {
                    assert_eq!(share.limit, n.capacity, "node {id} job {job} limit");
                }
            }
            let memory: u64 = n.attempts.iter().map(|a| self.attempts[a].memory).sum();
            assert_eq!(n.in_flight_memory, memory, "node {id} in_flight_memory");
            let free = n.free_positions();
            assert_eq!(self.free.contains(&(free, Reverse(*id))), free > 0, "node {id} free");
            assert_eq!(self.idle.contains(&(free, Reverse(*id))), n.is_idle(), "node {id} idle");
            assert!(self.timers.contains(&(n.timer_at, Timer::Heartbeat(*id))));
            let expect = if n.suspect { self.config.node_timeout } else { self.suspect_after() };
            assert_eq!(n.timer_at, n.heard + expect, "node {id} heartbeat timer");
            for job in n.jobs.keys() {
                let j = &self.jobs[job];
                assert!(j.started_on.contains(id), "node {id} job {job} not in started_on");
            }
        }
        let nodes_with_room = self.nodes.values().filter(|n| n.free_positions() > 0).count();
        assert_eq!(self.free.len(), nodes_with_room, "stale free entries");
        let idle_nodes = self.nodes.values().filter(|n| n.is_idle()).count();
        assert_eq!(self.idle.len(), idle_nodes, "stale idle entries");
        let (mut clocks, mut wakeups) = (0, 0);
        for (id, j) in &self.jobs {
            assert_eq!(j.in_flight, job_in_flight.get(id).copied().unwrap_or(0), "job {id}");
            assert_eq!(j.pairs, job_pairs.get(id).copied().unwrap_or(0), "job {id} pairs");
            assert_eq!(j.in_pending, j.has_pending(), "job {id} in_pending");
            let listed = self.tenants[&j.tenant].pending.get(&j.key) == Some(id);
            assert_eq!(listed, j.in_pending, "job {id} pending");
            assert_eq!(self.tenant_ids.get(&j.req.tenant), Some(&j.tenant), "job {id} tenant");
            assert!(j.next_fresh <= j.fresh_end && j.fresh_end <= j.total);
            let placed = j.in_flight - j.pairs;
            assert!(
                j.done + placed + j.requeued.len() as u64 + j.held.len() as u64 + (j.fresh_end - j.next_fresh) == j.total,
                "job {id}: chunks lost or duplicated"
            );
            let rejected = self.nodes.values().filter(|n| n.rejected(*id)).count();
            assert_eq!(j.rejected_live, rejected, "job {id} rejected_live");
            for node in &j.started_on {
                assert!(self.nodes[node].jobs.contains_key(id), "job {id} started_on {node}");
            }
            let stuck = j.has_pending() && j.in_flight == 0 && !self.any_eligible(*id, j);
            assert_eq!(stuck, j.placement_deadline.is_some(), "job {id} placement clock");
            if let Some(at) = j.placement_deadline {
                clocks += 1;
                assert!(self.timers.contains(&(at, Timer::Placement(*id))));
            }
            assert!(!j.spec_dirty, "job {id} left dirty");
            let key = (Reverse(j.req.priority), *id);
            assert_eq!(self.spec_waiting.contains(&key), j.spec_waiting, "job {id} waiting");
            if let Some(at) = j.spec_deadline {
                wakeups += 1;
                assert!(self.timers.contains(&(at, Timer::Speculate(*id))));
            }
            self.check_speculation(now, *id, j);
        }
        let pending: usize = self.tenants.values().map(|t| t.pending.len()).sum();
        assert_eq!(pending, self.jobs.values().filter(|j| j.in_pending).count());
        assert_eq!(self.spec_waiting.len(), self.jobs.values().filter(|j| j.spec_waiting).count());
        self.check_tenants();
        // Eager placement: no pending chunk fits a node with a free position.
        for job in self.pending_jobs() {
            for &(_, Reverse(node)) in &self.free {
                let pick = self.choose(job, node);
                assert!(pick.is_none(), "job {job} could place {pick:?} on idle node {node}");
            }
        }
        let grace = usize::from(self.grace_until.is_some());
        if let Some(at) = self.grace_until {
            assert!(self.timers.contains(&(at, Timer::Grace)));
        }
        assert_eq!(self.timers.len(), self.nodes.len() + clocks + wakeups + grace, "stale timers");
    }

    /// Eager speculation: no straggler the scheduler would look at could be copied now, the job
    /// waits for room if it has any, and it wakes up when its next attempt turns into one.
    fn check_speculation(&self, now: Instant, id: JobId, j: &Job) {
        let Some(threshold) = self.spec_threshold(j) else {
            assert!(j.spec_deadline.is_none() && !j.spec_waiting, "job {id} speculates");
            return;
        };
        if j.spec_deadline.is_some_and(|at| at <= now) {
            // A wake-up due at this very instant has not been handled yet.
            return;
        }
        let straggling = |&&(started, _): &&(Instant, AttemptId)| started + threshold <= now;
        for &(_, attempt) in j.candidates.iter().take_while(straggling).take(SPECULATION_SCAN) {
            let target = self.copy_target(attempt);
            assert!(
                target.is_none(),
                "job {id}: straggler {attempt} could be copied to {target:?}"
            );
        }
        let stragglers = j.candidates.iter().take_while(straggling).count();
        assert_eq!(stragglers > 0, j.spec_waiting, "job {id} waiting with {stragglers} stragglers");
        let young = j.candidates.iter().find(|c| !straggling(c));
        assert_eq!(j.spec_deadline, young.map(|&(started, _)| started + threshold), "job {id}");
    }

    /// Tenant bookkeeping: each tenant's job count, positions, slots held, per-node counts and
    /// place in `tenant_order` agree with the attempts and jobs, and `eligible_slots` with the
    /// nodes.
    fn check_tenants(&self) {
        let mut positions: HashMap<TenantId, u64> = HashMap::new();
        let mut per_node: HashMap<(NodeId, TenantId), u32> = HashMap::new();
        for a in self.attempts.values() {
            let tenant = self.jobs[&a.job].tenant;
            *positions.entry(tenant).or_default() += 1;
            *per_node.entry((a.node, tenant)).or_default() += 1;
        }
        for (id, n) in &self.nodes {
            for (tenant, &count) in &n.tenants {
                assert_eq!(per_node.get(&(*id, *tenant)), Some(&count), "node {id} tenant count");
            }
        }
        assert_eq!(per_node.len(), self.nodes.values().map(|n| n.tenants.len()).sum::<usize>());
        let eligible: u64 = self.nodes.values().map(|n| n.eligible_slots()).sum();
        assert_eq!(self.eligible_slots, eligible, "eligible_slots");
        assert_eq!(self.tenants.len(), self.tenant_ids.len(), "tenant names");
        for (id, t) in &self.tenants {
            assert_eq!(self.tenant_ids.get(&t.name), Some(id), "tenant {} id", t.name);
            let jobs = self.jobs.values().filter(|j| j.tenant == *id).count();
            assert!(jobs > 0, "tenant {} kept without jobs", t.name);
            assert_eq!(t.jobs, jobs, "tenant {} jobs", t.name);
            assert_eq!(t.positions, positions.get(id).copied().unwrap_or(0), "tenant {}", t.name);
            let held: u64 = per_node
                .iter()
                .filter(|((_, tenant), _)| tenant == id)
                .map(|((node, _), &count)| u64::from(count.min(self.nodes[node].slots)))
                .sum();
            assert_eq!(t.slots_held, held, "tenant {} slots held", t.name);
            assert_eq!(self.tenant_order.contains(&t.key(*id)), !t.pending.is_empty(), "tenant {}", t.name);
            for (key, job) in &t.pending {
                assert_eq!(self.jobs[job].key, *key, "tenant {} job {job} key", t.name);
            }
        }
        assert_eq!(self.tenant_order.len(), self.tenants.values().filter(|t| !t.pending.is_empty()).count());
    }

    /// Fair share, by brute force: the tenant `fill_node` is about to serve on the node comes
    /// first in `tenant_order` (lowest positions per weight, then least recently served) among
    /// all tenants with a pending chunk that fits the node now.
    pub(super) fn check_fair_choice(&self, chosen: TenantKey, node: NodeId) {
        let fits = |key: &&TenantKey| {
            self.tenants[&key.id].pending.values().any(|&job| self.choose(job, node).is_some())
        };
        let first = self.tenant_order.iter().find(fits);
        assert_eq!(first, Some(&chosen), "node n{node} went to a tenant out of fair-share order");
    }

    /// The slot cap, by brute force: placing an attempt of the job on the node leaves its tenant
    /// within its cap, or takes no new slot (the tenant already holds every slot of the node).
    pub(super) fn check_cap_before_place(&self, job: JobId, node: NodeId) {
        let tenant = self.jobs[&job].tenant;
        let t = &self.tenants[&tenant];
        let Some(cap) = self.slot_cap(t) else { return };
        let n = &self.nodes[&node];
        let here = n.attempts.iter().filter(|a| self.jobs[&self.attempts[a].job].tenant == tenant).count();
        let held: u64 = self
            .nodes
            .values()
            .map(|n| {
                let mine = n.attempts.iter().filter(|a| self.jobs[&self.attempts[a].job].tenant == tenant);
                mine.count().min(n.slots as usize) as u64
            })
            .sum();
        assert!(
            held < cap || here >= n.slots as usize,
            "tenant {} holds {held} slots (cap {cap}) and takes another on n{node}",
            t.name
        );
    }

    /// Whether the scheduler has forgotten every job and attempt.
    pub(super) fn is_empty_of_jobs(&self) -> bool {
        self.jobs.is_empty()
            && self.attempts.is_empty()
            && self.tenants.is_empty()
            && self.tenant_ids.is_empty()
            && self.tenant_order.is_empty()
            && self.spec_waiting.is_empty()
            && self.timers.len() == self.nodes.len() + usize::from(self.grace_until.is_some())
    }
}
