//! A node as the scheduler tracks it: its resources, its state (suspect, drained, quarantined),
//! the attempts it holds and each job's share of its pipeline, and the predicates placement and
//! eligibility ask of it (free positions, fit, whether a job could ever run there).

use std::collections::BTreeSet;
use std::time::Instant;

use rustc_hash::FxHashMap;
use wire::proto::{AttemptId, ChunkIndex, JobId};

use super::tenant::TenantId;
use super::{JobRequirements, NodeResources};

/// A connected node session.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) os: String,
    pub(super) arch: String,
    pub(super) slots: u32,
    /// The most attempts the node takes: `slots * (1 + pipeline_depth)`, or under
    /// `pipeline_budget` the largest of its jobs' share limits (at least `slots * 2`). A capacity
    /// that just shrank may be exceeded until attempts finish.
    pub(super) capacity: u32,
    pub(super) memory_total: u64,
    /// From the last heartbeat.
    pub(super) memory_available: u64,
    /// When the node last heartbeated (or joined), or, once its heartbeat timer has looked,
    /// last showed a sign of life.
    pub(super) heard: Instant,
    /// The node's last sign of life (a report, or any frame its connection received): proof of
    /// life as good as a heartbeat, noted cheaply here and taken into `heard` only when the
    /// heartbeat timer fires.
    pub(super) alive_at: Instant,
    /// When its `Timer::Heartbeat` fires: `heard` plus half of `node_timeout`, or plus all of it
    /// once the node is suspect.
    pub(super) timer_at: Instant,
    pub(super) suspect: bool,
    /// False once its connection ended without the node leaving: it keeps its attempts (the node
    /// may still run them) and takes no new work until it registers again under its name or
    /// stays silent for `node_timeout`.
    pub(super) connected: bool,
    pub(super) drained: bool,
    /// The node said it is stopping (`Leaving`): this session takes no new work, as if drained,
    /// but nothing is recorded against its name, so it takes work again when it comes back.
    pub(super) leaving: bool,
    /// Why the node is quarantined, if it is.
    pub(super) quarantine: Option<String>,
    pub(super) blame: Blame,
    /// `attempts.len()`, kept as a number because it keys `Scheduler::free`.
    pub(super) in_flight: u32,
    /// Sum of the memory limits of `attempts`.
    pub(super) in_flight_memory: u64,
    /// In assignment order (ids only grow): the first `slots` are presumed running, the rest
    /// queued behind them, as the node runs its attempts first come, first served.
    pub(super) attempts: BTreeSet<AttemptId>,
    /// Jobs the node got `StartJob` for, until they end.
    pub(super) jobs: FxHashMap<JobId, NodeJob>,
    /// Each of those jobs' part of the node's pipeline.
    pub(super) shares: FxHashMap<JobId, Share>,
    /// Attempts here by tenant; tenants with none are absent.
    pub(super) tenants: FxHashMap<TenantId, u32>,
}

/// A job's part of one node's pipeline.
#[derive(Debug)]
pub(super) struct Share {
    /// The job's attempts on the node.
    pub(super) in_flight: u32,
    /// The most it may have there: the node's capacity, or under `pipeline_budget` what its run
    /// times there call for. A limit that just shrank may be exceeded until attempts finish.
    pub(super) limit: u32,
    /// Moving average of the job's chunk run times on the node, under `pipeline_budget`.
    pub(super) run_nanos: Option<u64>,
}

/// Failures on a node of chunks that then succeeded elsewhere.
#[derive(Debug, Default)]
pub(super) struct Blame {
    pub(super) count: u32,
    /// The first such chunk, to tell whether more than one chunk is involved.
    pub(super) first: Option<(JobId, ChunkIndex)>,
    pub(super) distinct: bool,
}

impl Node {
    /// A node that just joined with these resources and no work, its heartbeat timer due at
    /// `timer_at`.
    pub(super) fn new(now: Instant, resources: NodeResources, capacity: u32, timer_at: Instant) -> Self {
        Self {
            name: resources.name,
            os: resources.os,
            arch: resources.arch,
            slots: resources.slots,
            capacity,
            memory_total: resources.memory_total,
            memory_available: resources.memory_available,
            heard: now,
            alive_at: now,
            timer_at,
            suspect: false,
            connected: true,
            drained: false,
            leaving: false,
            quarantine: None,
            blame: Blame::default(),
            in_flight: 0,
            in_flight_memory: 0,
            attempts: BTreeSet::new(),
            jobs: FxHashMap::default(),
            shares: FxHashMap::default(),
            tenants: FxHashMap::default(),
        }
    }

    pub(super) fn rejected(&self, job: JobId) -> bool {
        matches!(self.jobs.get(&job), Some(NodeJob::Rejected))
    }

    /// Whether the node takes new work at all.
    pub(super) fn open(&self) -> bool {
        self.connected && !self.drained && !self.leaving && !self.suspect && self.quarantine.is_none()
    }

    /// The slots tenants' slot shares are shares of: all of them unless drained, leaving or
    /// quarantined (a suspect node still counts, as for eligibility).
    pub(super) fn eligible_slots(&self) -> u64 {
        if self.drained || self.leaving || self.quarantine.is_some() {
            0
        } else {
            u64::from(self.slots)
        }
    }

    /// Open with an idle slot: it could start a speculative copy at once.
    pub(super) fn is_idle(&self) -> bool {
        self.free_positions() > 0 && self.in_flight < self.slots
    }

    /// Positions new work may take now; what keys `Scheduler::free`.
    pub(super) fn free_positions(&self) -> u32 {
        if self.open() {
            self.capacity.saturating_sub(self.in_flight)
        } else {
            0
        }
    }

    /// Whether the node's platform is the one the job needs.
    pub(super) fn runs(&self, req: &JobRequirements) -> bool {
        req.platform.as_ref().is_none_or(|(os, arch)| *os == self.os && *arch == self.arch)
    }

    /// Whether one more attempt of the job may be placed here now.
    pub(super) fn fits(&self, job: JobId, req: &JobRequirements) -> bool {
        if self.free_positions() == 0 || self.rejected(job) || !self.runs(req) {
            return false;
        }
        if self.shares.get(&job).is_some_and(|share| share.in_flight >= share.limit) {
            return false;
        }
        if self.in_flight < self.slots {
            // The attempt would start at once, next to all the others.
            self.in_flight_memory.saturating_add(req.memory_limit) <= self.memory_available
        } else {
            // The attempt waits for a running one to finish, whose memory it then takes.
            req.memory_limit <= self.memory_available
        }
    }

    /// Whether the job could run here once the node has room: what "eligible" means. A suspect
    /// node stays eligible (it may heartbeat again); a drained, leaving or quarantined one does
    /// not.
    pub(super) fn can_ever_run(&self, job: JobId, req: &JobRequirements) -> bool {
        self.can_ever_run_with(job, req, self.memory_available)
    }

    pub(super) fn can_ever_run_with(&self, job: JobId, req: &JobRequirements, memory_available: u64) -> bool {
        self.capacity > 0
            && !self.drained
            && !self.leaving
            && self.quarantine.is_none()
            && !self.rejected(job)
            && self.runs(req)
            && req.memory_limit <= memory_available
    }
}

/// Where a job stands on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeJob {
    /// `StartJob` sent; the node may be compiling.
    Started,
    /// The node reported `JobReady`.
    Ready,
    /// The node reported `JobRejected`; it gets no more of the job's chunks.
    Rejected,
}
