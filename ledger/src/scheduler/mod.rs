//! The dispatcher's scheduler: a deterministic, sans-IO state machine that decides which node runs
//! which chunk, retries failures, copies stragglers, notices dead or misbehaving nodes and decides
//! when a job is over.
//!
//! Like quinn-proto's `Connection`, a [`Scheduler`] owns no sockets, tasks or clocks. The driver
//! (the dispatcher's main loop) must:
//! - feed it every input through a `handle_*` method, passing the current time as `now`;
//! - after each call, drain [`Scheduler::poll_action`] and carry out every [`Action`] in order,
//!   then drain [`Scheduler::poll_notice`] and report every [`Notice`] (they only inform);
//! - call [`Scheduler::handle_timeout`] once [`Scheduler::poll_timeout`] has passed (re-reading
//!   `poll_timeout` after every call, since any input may move it).
//!
//! Model: each node offers `slots * (1 + pipeline_depth)` *pipeline positions*: `slots` attempts
//! run while the rest wait queued on the node, so a slot never waits a round trip for its next
//! chunk. Under a `pipeline_budget` each job's share of a node follows the run times the node
//! measured for that job's chunks (deep for tiny chunks, one queued per slot for long ones).
//! Pending chunks of a job sit in a queue (requeued chunks first, then fresh ones, which are only
//! a counter). Work is placed eagerly whenever capacity or work appears, and the
//! scheduler keeps one invariant between calls: no pending chunk fits any node with a free
//! position (except a retry held back for a node it has not failed on yet, see
//! [`Action::Assign`]).
//!
//! Rules:
//! - **Fit.** A node takes an attempt when it has a free position, its platform matches the
//!   job's (if the job names one), it did not reject the job, the memory limits of its running
//!   attempts fit its available memory, and the job's tenant has room under its slot share. Nodes that are drained, quarantined or suspect take no new
//!   work (they keep and finish what they hold).
//! - **Fair share, then priority.** Every job belongs to a tenant ([`JobRequirements::tenant`]).
//!   A free position goes to the tenant with the lowest *usage* per [`TenantShare::weight`] among
//!   the tenants with a pending chunk that fits the node, the one served least recently among
//!   equals. Usage is the pipeline positions the tenant's attempts hold, running or queued,
//!   speculative copies included: positions are what placement hands out, the scheduler knows
//!   them exactly at every decision, and a node runs its attempts first come, first served, so a
//!   tenant's share of a node's queue becomes its share of the node's slots as the queue drains
//!   (counting running slots instead would make a tenant whose attempts wait queued look idle
//!   and hand it still more). It is a share of positions, not of slot time: a tenant of long
//!   chunks keeps a slot longer per position. Within a tenant, jobs are served by priority,
//!   higher first, and among equal priorities round-robin: every placement moves the job to the
//!   back of its priority class, so two equal jobs sharing one node alternate chunk by chunk
//!   instead of the older one starving the newer. Priority orders only its tenant's jobs: a
//!   high-priority job takes nothing from another tenant's share. A tenant alone is served as if
//!   there were no tenants. Placements of a job's new chunks onto positions no other pending job
//!   can use are not contended and skip the tenant order, except after a change that may concern
//!   several tenants (a node lost, drained or quarantined), when free positions are handed out
//!   one by one. One known slack: a job's first measured run time deepens its shares of nodes at
//!   once (`pipeline_budget`), and that job fills the new room before other tenants are asked.
//! - **Slot share.** A tenant's [`TenantShare::max_slot_share`] caps the slots it holds: on each
//!   node, its attempts there (running, queued, copies) up to the node's `slots`, at most
//!   `max(1, floor(max_slot_share * slots))` over the nodes taking work (connected, neither
//!   drained nor quarantined). A tenant at its cap still fills the queues of nodes where it holds
//!   every slot, so it never runs more attempts at once than its cap and its pipelines stay full.
//!   A job with nothing in flight that waits for its tenant's cap says so in [`Blocked`]. The cap
//!   grows as nodes join and frees what waited for it at once.
//! - **Speculation.** When a job has no pending chunks (input complete, queue empty) and one of its
//!   attempts has been running longer than `max(speculation_min_age, speculation_multiplier *
//!   median)`, where the median is over the durations of the job's chunks with an accepted result
//!   (at least `speculation_min_samples` of them), a copy of that chunk is placed on another node
//!   with an idle slot (never the same node, never a node the chunk failed on). Nodes run their
//!   attempts first come, first served, so an attempt is presumed running from the moment fewer
//!   than `slots` attempts are ahead of it on its node; durations and ages count from then, not
//!   from the `Assign` (with deep pipelines, time spent queued would make every queued attempt
//!   look like a straggler once the job's queue empties, and copy thousands of healthy chunks).
//!   Copies only use positions no pending chunk of any job can use. The first result wins;
//!   the other attempt gets [`Action::CancelAttempt`]. A chunk has at most one copy: an attempt
//!   that was copied is never copied again, even once its copy is gone; only a requeued chunk
//!   (both attempts lost or failed) may be copied afresh. A failed or lost attempt whose copy
//!   still runs is not requeued: the survivor carries on alone.
//! - **Quarantine.** A retryable failure (trap, timeout, memory limit, setup, node error) of a
//!   chunk that then succeeds on *another* node blames the node it failed on: a payload bug fails
//!   everywhere, so a node whose failures succeed elsewhere is the odd one out. A node with
//!   `quarantine_threshold` blamed failures, from at least two different chunks (of one job or
//!   several), is quarantined ([`Notice::NodeQuarantined`]) until an operator undrains it, which
//!   also clears its count. Counts last for the node's session: a node that reconnects starts
//!   with a clean record, but the quarantine itself is held by the node's name ([`NodeHold`]).
//! - **Holds.** Drain and quarantine belong to a node's *name*, not its session: a
//!   [`NodeHold`] set with [`Scheduler::handle_hold`] (or a quarantine) applies to every session
//!   of that name, connected now or registering later, until it is released. The ledger journals
//!   holds and gives them back with [`Scheduler::restore_hold`] after a restart.
//! - **Silence.** A node silent for half of `node_timeout` is *suspect* ([`Notice::NodeSuspect`]):
//!   it takes no new work but still counts as eligible; a heartbeat clears it
//!   ([`Notice::NodeRecovered`]). Silent for all of `node_timeout`, it is dropped
//!   ([`Action::DropNode`]) and its attempts requeued. A node that reconnects is a new [`NodeId`].
//! - **Poison chunks.** Requeued attempts lost with their node do not count as failed attempts,
//!   but one that was running counts as a *crash* of its chunk: a chunk that reaches
//!   `crash_limit` crashes (as Dask's allowed-failures and HyperQueue's crash limit) fails its
//!   job with [`JobFailure::Chunk`](wire::proto::JobFailure::Chunk) naming the lost nodes, instead of taking node after node down.
//!
//! Costs: a report or a new chunk costs O(log n) bookkeeping (n: jobs, tenants) plus the
//! placements it causes (finding a node scans the nodes with free positions; filling a freed
//! position takes the first tenant in fair order, skipping only tenants and jobs with nothing
//! that fits that node). A tenant alone adds one map entry moved per placement and release. A
//! capped tenant that drops below its cap while its freed position goes elsewhere revisits its own
//! pending jobs. Rare inputs (a node joining, leaving,
//! draining or being quarantined, a heartbeat with a new memory figure) revisit every job with
//! pending chunks. Speculation never scans a job's chunks: it looks at its oldest attempts, kept
//! in start order, and wakes itself through [`Scheduler::poll_timeout`] when the oldest one will
//! turn into a straggler.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use wire::proto::{AttemptId, ChunkFailure, ChunkIndex, Claim, JobId};

pub use held::ExtraChunk;
use job::{Attempt, Job, LostAttempt};
use node::{Blame, Node, NodeJob};
use outcome::Verdict;
use tenant::{Tenant, TenantId, TenantKey};

pub use config::SchedulerConfig;
pub use types::{Action, JobRequirements, NodeHold, NodeId, NodeResources, NodeState, Progress};
pub use eligibility::Blocked;
pub use job::JobStats;
pub use liveness::Notice;
pub use tenant::{SlotShare, TenantShare, TenantShares};

mod config;
mod eligibility;
mod held;
#[cfg(test)]
mod invariants;
mod job;
mod liveness;
mod model;
mod node;
mod outcome;
mod placement;
mod reattach;
#[cfg(test)]
mod sim;
mod speculation;
mod tenant;
#[cfg(test)]
mod tests;
mod types;

/// The scheduling state machine; see the module documentation for how to drive it.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    nodes: FxHashMap<NodeId, Node>,
    /// Holds by node name, applied to every session of that name (see [`NodeHold`]).
    holds: HashMap<String, NodeHold>,
    jobs: FxHashMap<JobId, Job>,
    /// Every attempt placed on a node and not yet finished, cancelled or requeued. An attempt id
    /// missing here marks a report to discard.
    attempts: FxHashMap<AttemptId, Attempt>,
    /// Attempts that were in flight on a node when it was lost, oldest first (bounded): a result
    /// the node sends again after reconnecting can still complete the chunk.
    lost: VecDeque<LostAttempt>,
    /// The latest session of each node name: a node that registers again supersedes it and
    /// takes over the attempts it claims.
    sessions: HashMap<String, NodeId>,
    /// When the reattach grace after a restart ends (see `Job::unclaimed`), while it runs.
    grace_until: Option<Instant>,
    /// Whether a reattach grace was started, so jobs restored later requeue at once.
    grace_started: bool,
    /// Nodes taking new work with at least one free pipeline position, keyed so that iterating
    /// in reverse gives the node with the most free positions first (the oldest among equals).
    free: BTreeSet<(u32, Reverse<NodeId>)>,
    /// The part of `free` with an idle slot (fewer attempts than slots), where speculative
    /// copies go; kept apart so finding one never scans the busy nodes.
    idle: BTreeSet<(u32, Reverse<NodeId>)>,
    /// Tenants with live jobs; each holds its jobs with pending chunks in service order.
    tenants: FxHashMap<TenantId, Tenant>,
    tenant_ids: HashMap<String, TenantId>,
    /// Tenants with pending chunks, in fair-share order.
    tenant_order: BTreeSet<TenantKey>,
    next_tenant: u32,
    /// Slots of the nodes that take work or will again (connected, neither drained nor
    /// quarantined): what `max_slot_share` is a share of.
    eligible_slots: u64,
    /// Numbers `fill_node` passes, so each tenant's cursor knows when it is stale.
    fill_pass: u64,
    /// Capped tenants that dropped below their cap during the current call: their jobs may fit
    /// free nodes they were kept from, and are offered them before the call returns.
    cap_freed: Vec<TenantId>,
    /// Heartbeat deadlines, placement clocks and speculation wake-ups, soonest first.
    timers: BTreeSet<(Instant, Timer)>,
    /// Jobs with stragglers that found no node for a copy, retried whenever a position frees up;
    /// by priority, then age.
    spec_waiting: BTreeSet<(Reverse<i32>, JobId)>,
    /// Jobs whose speculation must be reconsidered before the current call returns.
    spec_dirty: Vec<JobId>,
    /// Whether the current call freed a position or otherwise made room, for `spec_waiting`.
    freed: bool,
    /// Nodes where a job's share or the capacity grew during the current call: work that fits
    /// there now is placed before the call returns.
    grown: Vec<NodeId>,
    /// Jobs whose requeued chunks moved into the window `choose` scans: a chunk that slid in
    /// may fit a free node passed over before, and is offered the free nodes at once.
    window_moved: Vec<JobId>,
    /// Whether `window_moved` is being drained.
    filling_moved: bool,
    /// Actions and notices for the driver.
    out: Outputs,
    next_attempt: u64,
    /// Numbers jobs in submission order.
    next_seq: u64,
    /// Numbers placements from 1, for round-robin (see `JobKey`).
    next_placement: u64,
}

impl Scheduler {
    /// Creates a scheduler with no nodes and no jobs.
    pub fn new(config: SchedulerConfig) -> Self {
        Self {
            config,
            nodes: FxHashMap::default(),
            holds: HashMap::new(),
            jobs: FxHashMap::default(),
            attempts: FxHashMap::default(),
            lost: VecDeque::new(),
            sessions: HashMap::new(),
            grace_until: None,
            grace_started: false,
            free: BTreeSet::new(),
            idle: BTreeSet::new(),
            tenants: FxHashMap::default(),
            tenant_ids: HashMap::new(),
            tenant_order: BTreeSet::new(),
            next_tenant: 0,
            eligible_slots: 0,
            fill_pass: 0,
            cap_freed: Vec::new(),
            timers: BTreeSet::new(),
            spec_waiting: BTreeSet::new(),
            spec_dirty: Vec::new(),
            freed: false,
            grown: Vec::new(),
            window_moved: Vec::new(),
            filling_moved: false,
            out: Outputs::default(),
            next_attempt: 1,
            next_seq: 0,
            next_placement: 1,
        }
    }


    /// A node registered; it counts as having just sent a heartbeat. Pending work is placed on
    /// it at once. A `node` id that is already connected is ignored.
    pub fn handle_node_joined(&mut self, now: Instant, node: NodeId, resources: NodeResources) {
        self.join_node(now, node, resources, &[]);
    }

    /// A node registered holding `claims`, the attempts it kept from an earlier session
    /// (queued, running, or finished with a result it will send again). Like
    /// [`Scheduler::handle_node_joined`], and moreover:
    /// - an earlier session of the same name (connected or disconnected) is superseded: the
    ///   attempts of it that the node claims move to `node` under the same ids, the rest are
    ///   requeued as if that session were lost, and a still-connected one gets
    ///   [`Action::DropNode`];
    /// - after a dispatcher restart, a claimed chunk of a restored job that still awaits its
    ///   claim (see [`SchedulerConfig::reattach_grace`]) is adopted: it becomes a live attempt
    ///   on `node` under the claimed id, without an [`Action::Assign`];
    /// - every other claim (unknown or ended job, chunk done, queued or in flight elsewhere, an
    ///   id this scheduler never handed out, a chunk claimed twice) is refused with
    ///   [`Action::CancelAttempt`], so the node drops it.
    ///
    /// A job adopted onto `node` gets its [`Action::StartJob`] first, as for a placement, so the
    /// node knows the dispatcher still wants it. Results for adopted attempts are reported and
    /// accepted as for any other; each chunk's result is still accepted once.
    pub fn handle_node_rejoined(&mut self, now: Instant, node: NodeId, resources: NodeResources, claims: &[Claim]) {
        self.join_node(now, node, resources, claims);
    }

    /// The node's connection ended without the node leaving (cut off, or its idle timeout
    /// expired): unlike [`Scheduler::handle_node_lost`], its attempts stay in flight, since the
    /// node may still run them and reconnect. It takes no new work. When it registers again
    /// under its name ([`Scheduler::handle_node_rejoined`]) it takes back what it claims; when
    /// it stays silent for `node_timeout` (counted from when it was last heard) it is dropped
    /// ([`Action::DropNode`]) and its attempts requeued, as for any silent node. Unknown nodes
    /// are ignored.
    pub fn handle_node_disconnected(&mut self, _now: Instant, node: NodeId) {
        self.update_node(node, |n| n.connected = false);
    }

    /// A node's heartbeat: pushes its deadline back, clears suspicion ([`Notice::NodeRecovered`])
    /// and records its available memory, which may let it take more work. Unknown nodes are
    /// ignored.
    pub fn handle_heartbeat(&mut self, now: Instant, node: NodeId, memory_available: u64) {
        self.heartbeat(now, node, memory_available);
    }

    /// The node was heard from at `at` (a report, or a frame its connection received): it
    /// counts as a heartbeat when its heartbeat timer next fires. Cheap; unknown nodes are
    /// ignored.
    pub fn handle_sign_of_life(&mut self, at: Instant, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.alive_at = n.alive_at.max(at);
        }
    }

    /// The node's connection closed (or the driver gave up on it): its attempts are requeued
    /// without counting as failed attempts (unless a copy of the chunk runs elsewhere). Unknown
    /// or already dropped nodes are ignored.
    pub fn handle_node_lost(&mut self, now: Instant, node: NodeId) {
        self.lose_node(now, node);
        self.settle(now);
    }

    /// The node session is stopping (it sent `Leaving`): like a drain it finishes the attempts
    /// it holds and takes no new ones, not even speculative copies, but only this session, and
    /// nothing is held against its name. When it then closes its connection
    /// ([`Scheduler::handle_node_lost`]) what it still holds is requeued at once. Unknown nodes
    /// and nodes already leaving are ignored.
    pub fn handle_node_leaving(&mut self, now: Instant, node: NodeId) {
        if self.nodes.get(&node).is_none_or(|n| n.leaving) {
            return;
        }
        self.update_node(node, |n| n.leaving = true);
        self.eligibility_changed(now);
        self.settle(now);
    }

    /// Attempts placed on the node (running or queued there) with no result yet; `None` for
    /// unknown and dropped nodes.
    pub fn node_in_flight(&self, node: NodeId) -> Option<u32> {
        self.nodes.get(&node).map(|n| n.in_flight)
    }

    /// An operator drains the node's name (see [`Scheduler::handle_hold`]): it finishes the
    /// attempts it holds (running and queued) and takes no new ones, not even speculative copies,
    /// until [`Scheduler::handle_undrain`]. It stops counting as eligible, so the reason of
    /// [`JobFailure::NoEligibleNode`](wire::proto::JobFailure::NoEligibleNode) counts it as drained. Unknown nodes and nodes already
    /// drained are ignored.
    pub fn handle_drain(&mut self, now: Instant, node: NodeId) {
        let Some(n) = self.nodes.get(&node).filter(|n| !n.drained) else { return };
        let name = n.name.clone();
        let mut hold = self.holds.get(&name).cloned().unwrap_or_default();
        hold.drained = true;
        self.handle_hold(now, &name, hold);
    }

    /// An operator puts a drained or quarantined node's name back to work; a quarantined node
    /// also forgets the failures it was blamed for. Unknown nodes and nodes taking work are
    /// ignored.
    pub fn handle_undrain(&mut self, now: Instant, node: NodeId) {
        let Some(n) = self.nodes.get(&node).filter(|n| n.drained || n.quarantine.is_some()) else { return };
        let name = n.name.clone();
        self.handle_hold(now, &name, NodeHold::default());
    }

    /// Holds (or with a [`NodeHold`] that holds nothing, releases) every session of the node
    /// `name`, connected now or registering later. A drained name finishes the attempts it holds
    /// and takes no new ones; a released one forgets the failures it was blamed for and takes
    /// work at once. A name need not be connected.
    pub fn handle_hold(&mut self, now: Instant, name: &str, hold: NodeHold) {
        if hold.is_held() {
            self.holds.insert(name.to_owned(), hold.clone());
        } else {
            self.holds.remove(name);
        }
        let mut sessions: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| n.name == name).map(|(id, _)| *id).collect();
        sessions.sort_unstable();
        let mut changed = false;
        for id in sessions {
            let n = &self.nodes[&id];
            if n.drained == hold.drained && n.quarantine == hold.quarantine {
                continue;
            }
            let release = !hold.is_held();
            self.update_node(id, |n| {
                n.drained = hold.drained;
                n.quarantine.clone_from(&hold.quarantine);
                if release {
                    n.blame = Blame::default();
                }
            });
            self.fill_node(now, id);
            changed = true;
        }
        if changed {
            self.eligibility_changed(now);
        }
        self.settle(now);
    }

    /// A hold the journal kept from an earlier dispatcher lifetime, before any node registers.
    pub fn restore_hold(&mut self, name: &str, hold: NodeHold) {
        if hold.is_held() {
            self.holds.insert(name.to_owned(), hold);
        }
    }

    /// The hold on node `name`, if any.
    pub fn hold(&self, name: &str) -> Option<&NodeHold> {
        self.holds.get(name)
    }

    /// Every held node name, connected or not, in no particular order.
    pub fn holds(&self) -> impl Iterator<Item = (&str, &NodeHold)> + '_ {
        self.holds.iter().map(|(name, hold)| (name.as_str(), hold))
    }

    /// A new job; its chunks arrive with [`Scheduler::handle_chunks_added`]. A `job` id that is
    /// already known is ignored.
    pub fn handle_job_submitted(&mut self, _now: Instant, job: JobId, req: JobRequirements) {
        if self.jobs.contains_key(&job) {
            return;
        }
        let key = (Reverse(req.priority), 0, self.next_seq);
        self.next_seq += 1;
        let tenant = self.tenant_for_new_job(&req.tenant);
        self.jobs.insert(job, Job::new(req, key, tenant));
    }

    /// A job resumed after a dispatcher restart: its input is complete and `done[i]` says
    /// whether chunk `i` already has a stored result; only the others run (again). Restored
    /// results count as done but not as samples for speculation. A `job` id that is already
    /// known is ignored.
    ///
    /// The first call starts the reattach grace (`reattach_grace` from `now`): until it ends, the
    /// chunks without a result wait for nodes to claim them ([`Scheduler::handle_node_rejoined`]);
    /// then those still unclaimed are requeued. Jobs restored after the grace started are
    /// treated alike, and once it ended they requeue at once.
    pub fn handle_job_restored(
        &mut self,
        now: Instant,
        job: JobId,
        req: JobRequirements,
        done: &[bool],
    ) {
        if self.restore_job(now, job, req, done, &BTreeMap::new()) {
            self.handle_input_complete(now, job);
        }
    }

    /// Like [`Scheduler::handle_job_restored`], for a job whose input was still arriving: the
    /// chunks known so far run, and more follow with [`Scheduler::handle_chunks_added`] once its
    /// submitter resumes the upload.
    pub fn handle_job_restored_incomplete(&mut self, now: Instant, job: JobId, req: JobRequirements, done: &[bool]) {
        if self.restore_job(now, job, req, done, &BTreeMap::new()) {
            self.settle(now);
        }
    }

    /// Registers a restored job with `done` chunks (indices `0..done.len()`) and the `extra`
    /// chunks beyond them (a reduce job's combines); returns false for a known `job`.
    fn restore_job(
        &mut self,
        now: Instant,
        job: JobId,
        req: JobRequirements,
        done: &[bool],
        extra: &BTreeMap<ChunkIndex, ExtraChunk>,
    ) -> bool {
        if self.jobs.contains_key(&job) {
            return false;
        }
        self.handle_job_submitted(now, job, req);
        let Some(j) = self.jobs.get_mut(&job) else {
            return false;
        };
        j.fresh_end = done.len() as u64;
        j.next_fresh = j.fresh_end;
        j.total = j.fresh_end + extra.len() as u64;
        let in_state = |state: ExtraChunk| extra.iter().filter(move |(_, s)| **s == state).map(|(c, _)| *c);
        j.held = in_state(ExtraChunk::Held).collect();
        let missing = done.iter().zip(0..).filter(|(done, _)| !**done).map(|(_, c)| c).chain(in_state(ExtraChunk::Ready));
        if !self.grace_started && !self.config.reattach_grace.is_zero() {
            self.grace_started = true;
            let until = now + self.config.reattach_grace;
            self.grace_until = Some(until);
            self.timers.insert((until, Timer::Grace));
        }
        if self.grace_until.is_some() {
            j.unclaimed = missing.collect();
            j.done = j.total - j.unclaimed.len() as u64 - j.held.len() as u64;
        } else {
            j.requeued = missing.collect();
            j.done = j.total - j.requeued.len() as u64 - j.held.len() as u64;
        }
        self.sync_pending(job);
        self.fill_job(now, job);
        self.refresh_clock(now, job);
        true
    }

    /// `count` more chunks of the job's input arrived; their indices continue from the number
    /// of chunks so far. Ignored for unknown jobs and after input completion.
    pub fn handle_chunks_added(&mut self, now: Instant, job: JobId, count: u64) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.input_complete || count == 0 {
            return;
        }
        j.total = j.total.saturating_add(count);
        j.fresh_end = j.fresh_end.saturating_add(count);
        self.sync_pending(job);
        self.fill_job(now, job);
        self.refresh_clock(now, job);
        self.settle(now);
    }

    /// No more chunks will be added; a job whose chunks all succeeded (or that has none)
    /// succeeds now.
    pub fn handle_input_complete(&mut self, now: Instant, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        j.input_complete = true;
        if j.is_finished() {
            self.end_job(now, job, Some(Verdict::Succeeded));
        } else {
            self.mark_spec(job);
        }
        self.settle(now);
    }

    /// The node compiled the job's payload. Informational: assignments do not wait for it.
    pub fn handle_job_ready(&mut self, _now: Instant, node: NodeId, job: JobId) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        if let Some(state @ NodeJob::Started) = n.jobs.get_mut(&job) {
            *state = NodeJob::Ready;
        }
    }

    /// The node cannot run the job. Its attempts of the job are requeued (not counted as
    /// failures) and it never gets the job again; once every connected node has rejected the
    /// job, it fails with [`JobFailure::Rejected`](wire::proto::JobFailure::Rejected) carrying this `error`. Ignored unless the
    /// job was started on the node and not yet rejected there.
    pub fn handle_job_rejected(&mut self, now: Instant, node: NodeId, job: JobId, error: String) {
        self.job_rejected(now, node, job, error);
    }

    /// A node measured how long one of its attempts ran (setup excluded). Under
    /// `pipeline_budget` this sets the limit of the attempt's job on the node: `budget / average
    /// run time` queued chunks per slot, between 1 and `pipeline_depth`; room that appears is
    /// filled at once. Call it before the report's [`Scheduler::handle_chunk_succeeded`] (it needs
    /// the attempt live). Without a budget, or for an attempt not live on the node, it does
    /// nothing.
    pub fn handle_run_time(&mut self, now: Instant, node: NodeId, attempt: AttemptId, run: Duration) {
        self.measure_run_time(now, node, attempt, run);
    }

    /// A node reports a result. Returns `Some((job, chunk))` when the result is accepted: the
    /// attempt is live and was placed on this node, so this is the chunk's only result. Returns
    /// `None` when it must be discarded (unknown, requeued or cancelled attempt, the losing copy
    /// of a speculated chunk, ended job, another node's attempt, a node session that is gone).
    ///
    /// The caller must store an accepted result before acting on the actions this call queued:
    /// they may include the job's [`Action::JobSucceeded`].
    pub fn handle_chunk_succeeded(
        &mut self,
        now: Instant,
        node: NodeId,
        attempt: AttemptId,
    ) -> Option<(JobId, ChunkIndex)> {
        self.chunk_succeeded(now, node, attempt)
    }

    /// A node reports a failed attempt. A retryable failure requeues the chunk under a new
    /// attempt, away from the nodes it failed on when possible (unless a copy of the chunk still
    /// runs elsewhere, which then carries on alone); a non-retryable one, or the
    /// `max_attempts`-th, fails the job with [`JobFailure::Chunk`](wire::proto::JobFailure::Chunk). Reports to discard (see
    /// [`Scheduler::handle_chunk_succeeded`]) are ignored.
    pub fn handle_chunk_failed(
        &mut self,
        now: Instant,
        node: NodeId,
        attempt: AttemptId,
        failure: ChunkFailure,
    ) {
        self.chunk_failed(now, node, attempt, failure, Vec::new());
    }

    /// As [`Scheduler::handle_chunk_failed`], with the last lines of the attempt's log, kept in
    /// its [`AttemptFailure`](wire::proto::AttemptFailure) for `explain` and the job's failure.
    pub fn handle_chunk_failed_logged(
        &mut self,
        now: Instant,
        node: NodeId,
        attempt: AttemptId,
        failure: ChunkFailure,
        log_tail: Vec<String>,
    ) {
        self.chunk_failed(now, node, attempt, failure, log_tail);
    }

    /// The job and chunk of a live attempt; `None` for unknown, ended and discarded ones.
    pub fn attempt_chunk(&self, attempt: AttemptId) -> Option<(JobId, ChunkIndex)> {
        self.attempts.get(&attempt).map(|a| (a.job, a.chunk))
    }

    /// The job is cancelled: its in-flight attempts are cancelled, its nodes get
    /// [`Action::EndJob`], and nothing more is emitted for it (no verdict); the scheduler forgets
    /// it at once. Later reports for it are discarded. Unknown jobs are ignored.
    pub fn handle_cancel(&mut self, now: Instant, job: JobId) {
        self.end_job(now, job, None);
        self.settle(now);
    }

    /// Fires every deadline at or before `now`: silent nodes become suspect
    /// ([`Notice::NodeSuspect`]) and later are dropped ([`Action::DropNode`]) with their attempts
    /// requeued, jobs whose placement clock (a `placement_timeout` their submitter set) ran out
    /// fail with [`JobFailure::NoEligibleNode`](wire::proto::JobFailure::NoEligibleNode), and
    /// stragglers get speculative copies. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, timer));
            match timer {
                Timer::Heartbeat(node) => self.heartbeat_missed(now, node),
                Timer::Placement(job) => self.placement_expired(now, job),
                Timer::Grace => self.grace_ended(now),
                Timer::Speculate(job) => {
                    let Some(j) = self.jobs.get_mut(&job) else { continue };
                    j.spec_deadline = None;
                    self.speculate(now, job);
                }
            }
        }
        self.settle(now);
    }

    /// Sets the first attempt id this scheduler hands out, so ids from an earlier dispatcher
    /// lifetime (which nodes may still report) never collide with new ones.
    pub fn set_attempt_base(&mut self, base: u64) {
        self.next_attempt = self.next_attempt.max(base);
    }

    /// The next action for the driver, in order; `None` once all have been taken.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front().map(|(_, action)| action)
    }

    /// The next notice for the driver to report, in order; `None` once all have been taken.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.out.notices.pop_front().map(|(_, notice)| notice)
    }

    /// When [`Scheduler::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Progress of a live job; `None` for unknown jobs and jobs that ended (the scheduler
    /// forgets them once it emits their verdict or they are cancelled). `running` counts
    /// speculative copies too.
    pub fn progress(&self, job: JobId) -> Option<Progress> {
        let j = self.jobs.get(&job)?;
        Some(Progress {
            done: j.done,
            total: j.total,
            input_complete: j.input_complete,
            running: j.in_flight,
            retries: j.retries,
            attempts: j.attempts,
        })
    }

    /// The jobs `node` got `StartJob` for and that have not ended there.
    pub fn jobs_started_on(&self, node: NodeId) -> impl Iterator<Item = JobId> + '_ {
        self.nodes.get(&node).into_iter().flat_map(|n| n.jobs.keys().copied())
    }

    /// Why the job waits, when it has pending chunks and nothing in flight (no node can take
    /// any of its chunks right now): [`Blocked`] counts the connected nodes by what keeps each
    /// from the job, and shows "all busy" when eligible nodes are full of other work. `None`
    /// while the job runs or has nothing left to place, and for unknown jobs. Costs O(nodes);
    /// meant for a progress tick.
    pub fn blocked_reason(&self, job: JobId) -> Option<Blocked> {
        let j = self.jobs.get(&job)?;
        if !j.has_pending() || j.in_flight > 0 {
            return None;
        }
        Some(self.blocked(Some(job), &j.req))
    }

    /// Whether a job with these requirements has an eligible node now (one that could run it
    /// once it has room), and if not, why: the same [`Blocked`] whose words a later
    /// [`JobFailure::NoEligibleNode`](wire::proto::JobFailure::NoEligibleNode) would carry. For refusing a job at submission; costs
    /// O(nodes).
    ///
    /// # Errors
    ///
    /// Why, when no connected node is eligible (boxed: it is large, and rare).
    pub fn eligible_summary(&self, req: &JobRequirements) -> Result<(), Box<Blocked>> {
        let blocked = self.blocked(None, req);
        if blocked.eligible > 0 {
            Ok(())
        } else {
            Err(Box::new(blocked))
        }
    }

    /// Whether any connected node, in whatever state, runs on this platform. Costs O(nodes).
    pub fn platform_available(&self, os: &str, arch: &str) -> bool {
        self.nodes.values().any(|n| n.os == os && n.arch == arch)
    }

    /// The node's state for the nodes table; `None` for unknown and dropped nodes.
    pub fn node_state(&self, node: NodeId) -> Option<NodeState> {
        let n = self.nodes.get(&node)?;
        Some(if n.suspect {
            NodeState::Suspect
        } else if let Some(reason) = &n.quarantine {
            NodeState::Quarantined { reason: reason.clone() }
        } else if n.leaving {
            NodeState::Stopping
        } else if n.drained {
            if n.in_flight > 0 {
                NodeState::Draining
            } else {
                NodeState::Drained
            }
        } else if n.in_flight < n.capacity {
            NodeState::Ready
        } else {
            NodeState::Busy
        })
    }
}

/// Something with a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The node turns suspect then, or is dropped if it already is.
    Heartbeat(NodeId),
    /// The job has been unplaceable since `placement_timeout` before then.
    Placement(JobId),
    /// The job's oldest attempt that is not yet a straggler becomes one then.
    Speculate(JobId),
    /// The reattach grace after a restart ends: unclaimed chunks are requeued.
    Grace,
}

/// What the scheduler has for the driver: commands and notices, each numbered in the order it
/// was queued, so the two queues can be read back as one timeline (the sim does, to check every
/// `Assign` against the node's health at that moment).
#[derive(Debug, Default)]
struct Outputs {
    actions: VecDeque<(u64, Action)>,
    notices: VecDeque<(u64, Notice)>,
    /// Outputs queued so far.
    queued: u64,
}

impl Outputs {
    /// Queues a command for the driver.
    fn act(&mut self, action: Action) {
        self.queued += 1;
        self.actions.push_back((self.queued, action));
    }

    /// Queues something for the driver to report.
    fn notify(&mut self, notice: Notice) {
        self.queued += 1;
        self.notices.push_back((self.queued, notice));
    }
}
