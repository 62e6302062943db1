//! Tenants: the owners of jobs, and fair share between them. Each tenant with pending chunks sits
//! in `Scheduler::tenant_order` by its usage (the pipeline positions its attempts hold) divided by
//! its weight, then least recently served; each keeps its own jobs with pending chunks in service
//! order (priority, then round-robin, see `JobKey`). A tenant's `max_slot_share` caps the slots
//! it holds (see [`TenantShare::max_slot_share`]).

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::time::Instant;

use wire::proto::JobId;

use super::node::Node;
use super::placement::{JobKey, Pick};
use super::{NodeId, Scheduler};

/// How a tenant shares the cluster's slots.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantShare {
    /// The tenant's part of contended positions relative to other tenants': a tenant of weight
    /// 3 holds three positions for every one a tenant of weight 1 holds while both have work
    /// that fits. 0 counts as 1.
    pub weight: u32,
    /// The largest fraction of the slots of the nodes taking work (connected, neither drained nor
    /// quarantined) the tenant may hold: at most `max(1, floor(max_slot_share * slots))`. A tenant
    /// holds, on each node, as many slots as it has attempts there, running or queued, up to the
    /// node's slot count: a node runs its attempts first come, first served, so the tenant never
    /// runs more attempts at once than it holds slots, while its queued attempts beyond a node's
    /// slots cost nothing and keep its pipelines full. A value not in (0, 1) (1.0, NaN) caps
    /// nothing. A cap that shrank (nodes left) may be exceeded until attempts finish.
    pub max_slot_share: f64,
}

impl Default for TenantShare {
    fn default() -> Self {
        Self { weight: 1, max_slot_share: 1.0 }
    }
}

/// Every tenant's [`TenantShare`]: named tenants get theirs, the others the default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantShares {
    /// The share of tenants not in `by_name`.
    pub default: TenantShare,
    /// Shares by tenant name (the certificate name of the client that submits the jobs).
    pub by_name: HashMap<String, TenantShare>,
}

impl TenantShares {
    /// The share of the tenant with this name.
    pub fn get(&self, name: &str) -> &TenantShare {
        self.by_name.get(name).unwrap_or(&self.default)
    }
}

/// A tenant, numbered by the scheduler while it has live jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct TenantId(pub(super) u32);

/// A tenant's place in `Scheduler::tenant_order`: lowest usage per weight first, then the one
/// served least recently, then the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TenantKey {
    pub(super) usage: Usage,
    /// The number of the tenant's last placement (0 before its first).
    pub(super) served: u64,
    pub(super) id: TenantId,
}

/// Positions held per unit of weight, compared exactly (as a fraction).
#[derive(Debug, Clone, Copy)]
pub(super) struct Usage {
    pub(super) positions: u64,
    pub(super) weight: u32,
}

impl Ord for Usage {
    fn cmp(&self, other: &Self) -> Ordering {
        let ours = u128::from(self.positions) * u128::from(other.weight);
        let theirs = u128::from(other.positions) * u128::from(self.weight);
        ours.cmp(&theirs)
    }
}

impl PartialOrd for Usage {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Usage {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Usage {}

/// A tenant with live jobs.
#[derive(Debug)]
pub(super) struct Tenant {
    pub(super) name: String,
    /// Its weight, at least 1.
    pub(super) weight: u32,
    /// Its `max_slot_share` when it caps anything.
    pub(super) max_slot_share: Option<f64>,
    /// Its live jobs; the tenant is forgotten when the last one ends.
    pub(super) jobs: usize,
    /// Its jobs with pending chunks, in service order; the tenant is in `Scheduler::tenant_order`
    /// exactly while this is not empty.
    pub(super) pending: BTreeMap<JobKey, JobId>,
    /// Attempts of its jobs on nodes, running or queued, speculative copies included: its usage.
    pub(super) positions: u64,
    /// Sum over nodes of its attempts there, up to the node's slots: what its cap limits.
    pub(super) slots_held: u64,
    /// See [`TenantKey::served`].
    pub(super) served: u64,
    /// Where the current `fill_node` pass left off in `pending` (pass number, last job key
    /// tried): jobs up to it have nothing that fits the node being filled.
    pub(super) cursor: (u64, Option<JobKey>),
}

impl Tenant {
    pub(super) fn key(&self, id: TenantId) -> TenantKey {
        TenantKey { usage: self.usage(), served: self.served, id }
    }

    pub(super) fn usage(&self) -> Usage {
        Usage { positions: self.positions, weight: self.weight }
    }
}

/// A tenant at its slot share, as [`Blocked`](super::Blocked) reports it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SlotShare {
    /// The tenant's name.
    pub tenant: String,
    /// Slots it holds (see [`TenantShare::max_slot_share`]).
    pub held: u64,
    /// The most it may hold now.
    pub cap: u64,
    /// Slots of the nodes taking work.
    pub slots: u64,
    /// Its configured share.
    pub max_slot_share: f64,
}

impl fmt::Display for SlotShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { tenant, held, slots, max_slot_share, .. } = self;
        write!(f, "tenant {tenant} is at its slot share: {held} of {slots} slots (max_slot_share {max_slot_share})")
    }
}

impl Scheduler {
    /// The tenant of a job being submitted, registered on its first job.
    pub(super) fn tenant_for_new_job(&mut self, name: &str) -> TenantId {
        let id = match self.tenant_ids.entry(name.to_owned()) {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(entry) => {
                let id = TenantId(self.next_tenant);
                self.next_tenant = self.next_tenant.wrapping_add(1);
                entry.insert(id);
                let share = self.config.tenants.get(name);
                let capped = share.max_slot_share > 0.0 && share.max_slot_share < 1.0;
                let tenant = Tenant {
                    name: name.to_owned(),
                    weight: share.weight.max(1),
                    max_slot_share: capped.then_some(share.max_slot_share),
                    jobs: 0,
                    pending: BTreeMap::new(),
                    positions: 0,
                    slots_held: 0,
                    served: 0,
                    cursor: (0, None),
                };
                self.tenants.insert(id, tenant);
                id
            }
        };
        if let Some(t) = self.tenants.get_mut(&id) {
            t.jobs += 1;
        }
        id
    }

    /// A job of the tenant ended: the tenant is forgotten with its last job.
    pub(super) fn tenant_job_ended(&mut self, id: TenantId) {
        let Some(t) = self.tenants.get_mut(&id) else { return };
        t.jobs = t.jobs.saturating_sub(1);
        if t.jobs == 0 {
            // Invariant: attempts and pending chunks only exist for live jobs, so nothing refers
            // to the tenant any more.
            let t = self.tenants.remove(&id);
            if let Some(t) = t {
                self.tenant_ids.remove(&t.name);
            }
        }
    }

    /// Changes a tenant, keeping its entry in `tenant_order` in step (present exactly while it has
    /// jobs with pending chunks, keyed by its usage).
    pub(super) fn update_tenant(&mut self, id: TenantId, change: impl FnOnce(&mut Tenant)) {
        let Some(t) = self.tenants.get_mut(&id) else { return };
        if !t.pending.is_empty() {
            self.tenant_order.remove(&t.key(id));
        }
        change(t);
        if !t.pending.is_empty() {
            self.tenant_order.insert(t.key(id));
        }
    }

    /// An attempt of the tenant's job was placed on the node (whose count of the tenant's
    /// attempts is already raised, `delta` 1) or released from it (`delta` -1, count already
    /// lowered; a node already removed counts for nothing: `lose_node` took its slots back).
    pub(super) fn tenant_attempt(&mut self, id: TenantId, node: NodeId, delta: i64) {
        // The attempt takes a slot if at most `slots` of the tenant's are there with it.
        let within = self.nodes.get(&node).is_some_and(|n| {
            let here = n.tenants.get(&id).copied().unwrap_or(0);
            let with_it = if delta > 0 { here } else { here + 1 };
            with_it <= n.slots
        });
        let at_cap = self.tenants.get(&id).is_some_and(|t| self.slot_cap(t).is_some_and(|cap| t.slots_held >= cap));
        self.update_tenant(id, |t| {
            t.positions = t.positions.saturating_add_signed(delta);
            if within {
                t.slots_held = t.slots_held.saturating_add_signed(delta);
            }
        });
        if at_cap && within && delta < 0 {
            self.cap_freed.push(id);
        }
    }

    /// Offers the free nodes to the pending jobs of the tenants that dropped below their cap
    /// during the call and are still below it (the position they freed may have gone to another
    /// tenant, while their jobs fit nodes they were kept from).
    pub(super) fn fill_cap_freed(&mut self, now: Instant) {
        while let Some(id) = self.cap_freed.pop() {
            let Some(t) = self.tenants.get(&id) else { continue };
            if self.slot_cap(t).is_some_and(|cap| t.slots_held >= cap) {
                continue;
            }
            let jobs: Vec<JobId> = t.pending.values().copied().collect();
            self.fill_jobs(now, &jobs);
        }
    }

    /// The most slots the tenant may hold now; `None` when uncapped.
    pub(super) fn slot_cap(&self, t: &Tenant) -> Option<u64> {
        let share = t.max_slot_share?;
        // Beyond 2^53 slots the float rounds; no cluster is that big.
        Some(((share * self.eligible_slots as f64).floor() as u64).max(1))
    }

    /// Whether one more attempt of the tenant on the node stays within its cap: it is below the
    /// cap, or already holds every slot of the node (a queued attempt there takes no new slot).
    pub(super) fn tenant_has_room(&self, id: TenantId, node: &Node) -> bool {
        let Some(t) = self.tenants.get(&id) else { return false };
        match self.slot_cap(t) {
            None => true,
            Some(cap) => t.slots_held < cap || node.tenants.get(&id).is_some_and(|&c| c >= node.slots),
        }
    }

    /// The tenant's cap, when it is at it, for [`Blocked`](super::Blocked).
    pub(super) fn slot_share(&self, id: TenantId) -> Option<SlotShare> {
        let t = self.tenants.get(&id)?;
        let cap = self.slot_cap(t)?;
        (t.slots_held >= cap).then(|| SlotShare {
            tenant: t.name.clone(),
            held: t.slots_held,
            cap,
            slots: self.eligible_slots,
            max_slot_share: t.max_slot_share.unwrap_or(1.0),
        })
    }

    /// Every job with pending chunks: tenants in fair order, each tenant's jobs in service order.
    pub(super) fn pending_jobs(&self) -> Vec<JobId> {
        self.tenant_order
            .iter()
            .filter_map(|key| self.tenants.get(&key.id))
            .flat_map(|t| t.pending.values().copied())
            .collect()
    }

    /// The first job of the tenant, in service order after the tenant's cursor for the current
    /// `fill_node` pass, with a chunk that fits the node; moves the cursor past the jobs tried.
    pub(super) fn next_job_for(&mut self, id: TenantId, node: NodeId) -> Option<(JobId, Pick)> {
        let pass = self.fill_pass;
        let t = self.tenants.get(&id)?;
        if !self.nodes.get(&node).is_some_and(|n| self.tenant_has_room(id, n)) {
            return None;
        }
        let after = if t.cursor.0 == pass { t.cursor.1 } else { None };
        let mut jobs = match after {
            None => t.pending.range(..),
            Some(key) => t.pending.range((Bound::Excluded(key), Bound::Unbounded)),
        };
        let mut last = after;
        let found = jobs.find_map(|(&key, &job)| {
            last = Some(key);
            Some((job, self.choose(job, node)?))
        });
        if let Some(t) = self.tenants.get_mut(&id) {
            t.cursor = (pass, last);
        }
        found
    }
}
