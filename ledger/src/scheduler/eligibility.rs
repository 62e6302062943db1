//! Eligibility: whether any connected node could ever run a job (platform, rejections, slots,
//! memory, drain and quarantine; a tenant's slot share), the placement clock that fails a job no node can take, and
//! [`Blocked`], the typed answer to "why does this job wait". The scheduler only counts; the
//! English is [`Blocked`]'s `Display`, rendered by whoever shows it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use wire::observe::NodeReason;
use wire::proto::{AttemptFailure, ChunkIndex, JobFailure, JobId};
use wire::units::format_size;

use super::job::Job;
use super::outcome::Verdict;
use super::{JobRequirements, Scheduler, SlotShare, Timer};

/// Why a job cannot place a chunk: every connected node counted once, under the first reason
/// that applies, permanent reasons first (what undraining or waiting cannot fix). Returned by
/// [`Scheduler::blocked_reason`] and [`Scheduler::eligible_summary`].
///
/// `Display` renders it in the words clients see, e.g. "3 connected, 2 lack 4.0 GiB free memory,
/// 1 drained, 0 eligible", or "2 connected, 2 eligible, all busy" when eligible nodes are full of
/// other work, or "2 connected, 2 eligible, tenant alice is at its slot share: 4 of 8 slots
/// (max_slot_share 0.5)" when the job's tenant holds all the slots its cap allows.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Blocked {
    /// Connected nodes; with none, nothing else counts.
    pub connected: usize,
    /// The `(os, arch)` the payload needs; `None` for a payload that runs anywhere.
    pub platform: Option<(String, String)>,
    /// Nodes on another platform than `platform`, as `((os, arch), count)`, sorted by platform.
    pub wrong_platform: Vec<((String, String), usize)>,
    /// Nodes that rejected the job (only counted for a submitted job).
    pub rejected: usize,
    /// The error of the job's last rejection, when `rejected` is not 0.
    pub rejection: Option<String>,
    /// Nodes with no slots.
    pub no_slots: usize,
    /// The memory one attempt of the job may use, in bytes: what `too_small` and
    /// `short_of_memory` nodes lack.
    pub memory_limit: u64,
    /// Nodes with less memory in total than `memory_limit`.
    pub too_small: usize,
    /// Nodes quarantined until an operator undrains them.
    pub quarantined: usize,
    /// Nodes an operator drained.
    pub drained: usize,
    /// Nodes with enough memory in total but less than `memory_limit` available now.
    pub short_of_memory: usize,
    /// Nodes that could run the job once they have room (suspect ones included). When this is not
    /// 0 the job waits for them to finish other work.
    pub eligible: usize,
    /// The job's tenant holds all the slots its `max_slot_share` allows (only for a submitted
    /// job): when `eligible` is not 0, this is what it waits for.
    pub slot_share: Option<SlotShare>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.connected == 0 {
            return f.write_str("0 nodes connected");
        }
        write!(f, "{} connected", self.connected)?;
        if let Some((os, arch)) = self.platform.as_ref().filter(|_| !self.wrong_platform.is_empty()) {
            for (i, ((node_os, node_arch), count)) in self.wrong_platform.iter().enumerate() {
                let sep = if i == 0 { ", " } else { " and " };
                write!(f, "{sep}{count} {} {node_os}/{node_arch}", verb(*count, "is", "are"))?;
            }
            write!(f, " but the payload needs {os}/{arch}")?;
        }
        if self.rejected > 0 {
            write!(f, ", {} rejected the job", self.rejected)?;
            if let Some(error) = &self.rejection {
                write!(f, " ({error})")?;
            }
        }
        if self.no_slots > 0 {
            write!(f, ", {} {} no slots", self.no_slots, verb(self.no_slots, "has", "have"))?;
        }
        let size = format_size(self.memory_limit);
        if self.too_small > 0 {
            let have = verb(self.too_small, "has", "have");
            write!(f, ", {} {have} less than {size} of memory", self.too_small)?;
        }
        if self.quarantined > 0 {
            write!(f, ", {} quarantined", self.quarantined)?;
        }
        if self.drained > 0 {
            write!(f, ", {} drained", self.drained)?;
        }
        if self.short_of_memory > 0 {
            let lack = verb(self.short_of_memory, "lacks", "lack");
            write!(f, ", {} {lack} {size} free memory", self.short_of_memory)?;
        }
        write!(f, ", {} eligible", self.eligible)?;
        match &self.slot_share {
            Some(share) if self.eligible > 0 => write!(f, ", {share}")?,
            _ if self.eligible > 0 => f.write_str(", all busy")?,
            _ => {}
        }
        Ok(())
    }
}

impl Blocked {
    /// Whether no connected node could run the job even if every one were undrained, released
    /// and idle: each is on another platform, has no slots, has too little memory in total or
    /// rejected it. False with no node connected (one may join).
    pub fn is_permanent(&self) -> bool {
        let connected_wrong: usize = self.wrong_platform.iter().map(|(_, count)| count).sum();
        self.connected > 0 && connected_wrong + self.rejected + self.no_slots + self.too_small == self.connected
    }
}

/// "1 lacks" / "2 lack": picks the verb form for a count.
fn verb(count: usize, singular: &'static str, plural: &'static str) -> &'static str {
    if count == 1 {
        singular
    } else {
        plural
    }
}

/// Why node `n` cannot take a chunk of a job with requirements `req` now (for a submitted `job`,
/// rejections count): the first reason that applies, permanent reasons first, as [`Blocked`]
/// counts them. A node that could run it is `Busy` when its slots are full, else `Eligible`.
fn classify(n: &super::node::Node, job: Option<JobId>, req: &JobRequirements) -> NodeReason {
    if !n.runs(req) {
        let payload = req.platform.as_ref().map(|(os, arch)| format!("{os}/{arch}")).unwrap_or_default();
        NodeReason::WrongPlatform { node: format!("{}/{}", n.os, n.arch), payload }
    } else if job.is_some_and(|job| n.rejected(job)) {
        NodeReason::Rejected
    } else if n.capacity == 0 {
        NodeReason::NoSlots
    } else if n.memory_total < req.memory_limit {
        NodeReason::TooSmall { memory_total: n.memory_total }
    } else if n.quarantine.is_some() {
        NodeReason::Quarantined
    } else if n.drained || n.leaving {
        NodeReason::Drained
    } else if n.memory_available < req.memory_limit {
        NodeReason::ShortOfMemory { memory_available: n.memory_available }
    } else if n.free_positions() == 0 {
        NodeReason::Busy { in_flight: n.in_flight, slots: n.capacity }
    } else {
        NodeReason::Eligible
    }
}

impl Scheduler {
    /// Each connected node by name, with why it cannot take a chunk of `job` now (the per-node
    /// breakdown of [`Scheduler::blocked_reason`], for `explain`); empty for an unknown job.
    pub fn node_reasons(&self, job: JobId) -> Vec<(String, NodeReason)> {
        let Some(j) = self.jobs.get(&job) else { return Vec::new() };
        let mut reasons: Vec<(String, NodeReason)> =
            self.nodes.values().map(|n| (n.name.clone(), classify(n, Some(job), &j.req))).collect();
        reasons.sort_by(|a, b| a.0.cmp(&b.0));
        reasons
    }

    /// The failed attempts of a running job's chunks that are not done yet, by chunk, oldest
    /// first; empty for an unknown job.
    pub fn failed_attempts(&self, job: JobId) -> Vec<(ChunkIndex, Vec<AttemptFailure>)> {
        let Some(j) = self.jobs.get(&job) else { return Vec::new() };
        let mut failed: Vec<_> =
            j.failures.iter().map(|(chunk, history)| (*chunk, history.iter().map(|f| f.report.clone()).collect())).collect();
        failed.sort_by_key(|(chunk, _)| *chunk);
        failed
    }

    /// Whether a node the chunk has not failed on could ever run it.
    pub(super) fn has_alternative(&self, job: JobId, j: &Job, chunk: ChunkIndex) -> bool {
        self.nodes.iter().any(|(&id, n)| !j.failed_on(chunk, id) && n.can_ever_run(job, &j.req))
    }

    /// Whether any connected node could ever run the job.
    pub(super) fn any_eligible(&self, job: JobId, j: &Job) -> bool {
        self.nodes.values().any(|n| n.can_ever_run(job, &j.req))
    }

    /// Starts or stops the job's placement clock: it runs while the job has pending chunks,
    /// nothing in flight and no connected node that could ever run it, and only when its
    /// submitter set a `placement_timeout` (otherwise the job waits, saying why).
    pub(super) fn refresh_clock(&mut self, now: Instant, job: JobId) {
        let Some(j) = self.jobs.get(&job) else { return };
        let stuck = j.req.placement_timeout.is_some() && j.has_pending() && j.in_flight == 0 && !self.any_eligible(job, j);
        let Some(j) = self.jobs.get_mut(&job) else { return };
        match (stuck, j.placement_deadline, j.req.placement_timeout) {
            (true, None, Some(timeout)) => {
                let at = now + timeout;
                j.placement_deadline = Some(at);
                self.timers.insert((at, Timer::Placement(job)));
            }
            (false, Some(at), _) => {
                j.placement_deadline = None;
                self.timers.remove(&(at, Timer::Placement(job)));
            }
            _ => {}
        }
    }

    /// The job's placement clock ran out: it fails with [`JobFailure::NoEligibleNode`] if it is
    /// still stuck.
    pub(super) fn placement_expired(&mut self, now: Instant, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        j.placement_deadline = None;
        // Re-check defensively; the clock should have been stopped otherwise.
        let j = &self.jobs[&job];
        if j.has_pending() && j.in_flight == 0 && !self.any_eligible(job, j) {
            let reason = self.blocked(Some(job), &j.req).to_string();
            let failure = JobFailure::NoEligibleNode { reason };
            self.end_job(now, job, Some(Verdict::Failed(failure)));
        } else {
            self.refresh_clock(now, job);
        }
    }

    /// A node stopped or started counting as eligible (drain, undrain, quarantine): held-back
    /// retries may have to go elsewhere, and placement clocks may start or stop.
    pub(super) fn eligibility_changed(&mut self, now: Instant) {
        self.fill_all(now);
        for job in self.pending_jobs() {
            self.refresh_clock(now, job);
        }
    }

    /// Counts, node by node, who could run a job with these requirements (and, for a submitted
    /// `job`, who rejected it).
    pub(super) fn blocked(&self, job: Option<JobId>, req: &JobRequirements) -> Blocked {
        let limit = req.memory_limit;
        // Permanent reasons first (see `classify`): they tell the user what undraining or waiting
        // cannot fix.
        let mut blocked = Blocked {
            connected: self.nodes.len(),
            platform: req.platform.clone(),
            wrong_platform: Vec::new(),
            rejected: 0,
            rejection: None,
            no_slots: 0,
            memory_limit: limit,
            too_small: 0,
            quarantined: 0,
            drained: 0,
            short_of_memory: 0,
            eligible: 0,
            slot_share: job.and_then(|job| self.slot_share(self.jobs.get(&job)?.tenant)),
        };
        let mut platforms: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for n in self.nodes.values() {
            match classify(n, job, req) {
                NodeReason::WrongPlatform { .. } => *platforms.entry((n.os.as_str(), n.arch.as_str())).or_default() += 1,
                NodeReason::Rejected => blocked.rejected += 1,
                NodeReason::NoSlots => blocked.no_slots += 1,
                NodeReason::TooSmall { .. } => blocked.too_small += 1,
                NodeReason::Quarantined => blocked.quarantined += 1,
                NodeReason::Drained => blocked.drained += 1,
                NodeReason::ShortOfMemory { .. } => blocked.short_of_memory += 1,
                _ => blocked.eligible += 1,
            }
        }
        blocked.wrong_platform = platforms
            .into_iter()
            .map(|((os, arch), count)| ((os.to_owned(), arch.to_owned()), count))
            .collect();
        if blocked.rejected > 0 {
            blocked.rejection = job.and_then(|job| self.jobs.get(&job)?.last_rejection.clone());
        }
        blocked
    }
}
