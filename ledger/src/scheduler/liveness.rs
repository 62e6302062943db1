//! Liveness: nodes joining, heartbeating and leaving; silence (suspect after half of
//! `node_timeout`, dropped after all of it); quarantine of nodes whose failures keep succeeding
//! elsewhere; results of attempts lost with a node, resent after it reconnects. Changes of a
//! node's health that the driver only logs come out as [`Notice`]s.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use wire::proto::{AttemptFailure, AttemptId, ChunkFailure, ChunkIndex, Claim, FailureKind, JobFailure, JobId};

use super::job::{FailedAttempt, LostAttempt};
use super::model::share_limit;
use super::node::{Node, NodeJob};
use super::outcome::Verdict;
use super::{Action, NodeId, NodeResources, Scheduler, Timer};

/// Lost attempts remembered for late results.
const MAX_LOST_ATTEMPTS: usize = 100_000;

/// A change in a node's health, returned by [`Scheduler::poll_notice`]. Unlike an [`Action`] it
/// asks nothing of the driver: the scheduler has already acted on it, and the driver only reports
/// it (a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The node has been silent for half of `node_timeout`: it takes no new work until it
    /// heartbeats again ([`Notice::NodeRecovered`]) or is dropped ([`Action::DropNode`]).
    /// Emitted once per silence.
    NodeSuspect {
        /// The node.
        node: NodeId,
        /// How long it has been silent.
        silent: Duration,
    },
    /// A suspect node heartbeated again and takes work again.
    NodeRecovered {
        /// The node.
        node: NodeId,
    },
    /// The node takes no new work until [`Scheduler::handle_undrain`]: its failures keep
    /// succeeding elsewhere. It finishes what it holds. A warning; emitted once.
    NodeQuarantined {
        /// The node.
        node: NodeId,
        /// Why, e.g. "3 attempts failed here that then succeeded on other nodes (last: job 4
        /// chunk 7: trap)".
        reason: String,
    },
}

impl Scheduler {
    /// The body of [`Scheduler::handle_node_joined`].
    pub(super) fn join_node(&mut self, now: Instant, node: NodeId, resources: NodeResources, claims: &[Claim]) {
        if self.nodes.contains_key(&node) {
            return;
        }
        let previous = self.sessions.insert(resources.name.clone(), node).filter(|old| self.nodes.contains_key(old));
        let capacity = share_limit(&self.config, resources.slots, None);
        let timer_at = now + self.suspect_after();
        self.timers.insert((timer_at, Timer::Heartbeat(node)));
        let mut node_state = Node::new(now, resources, capacity, timer_at);
        if let Some(hold) = self.holds.get(&node_state.name) {
            // Held by name: the new session takes no work until an operator releases the name.
            node_state.drained = hold.drained;
            node_state.quarantine.clone_from(&hold.quarantine);
        }
        if node_state.free_positions() > 0 {
            self.free.insert((capacity, Reverse(node)));
        }
        if node_state.is_idle() {
            self.idle.insert((capacity, Reverse(node)));
        }
        self.eligible_slots += node_state.eligible_slots();
        self.nodes.insert(node, node_state);
        self.freed = true;
        // What the node holds is its own before anything new is placed on it.
        self.adopt_claims(now, node, previous, claims);
        if let Some(old) = previous {
            self.supersede(now, old);
        }
        self.fill_node(now, node);
        if self.tenants.values().any(|t| t.max_slot_share.is_some() && !t.pending.is_empty()) {
            // Capped tenants' caps grew: what waited for them may fit nodes with room elsewhere.
            self.fill_all(now);
        }
        // A new node can only end placement clocks: jobs it could run are no longer stuck.
        let Some(joined) = self.nodes.get(&node) else { return };
        let unstuck: Vec<JobId> = self
            .pending_jobs()
            .into_iter()
            .filter(|&id| {
                self.jobs.get(&id).is_some_and(|job| {
                    job.placement_deadline.is_some() && joined.can_ever_run(id, &job.req)
                })
            })
            .collect();
        for job in unstuck {
            self.refresh_clock(now, job);
        }
        self.settle(now);
    }

    /// The body of [`Scheduler::handle_heartbeat`].
    pub(super) fn heartbeat(&mut self, now: Instant, node: NodeId, memory_available: u64) {
        let suspect_after = self.suspect_after();
        let Some(n) = self.nodes.get_mut(&node) else { return };
        self.timers.remove(&(n.timer_at, Timer::Heartbeat(node)));
        n.heard = now;
        n.timer_at = now + suspect_after;
        self.timers.insert((n.timer_at, Timer::Heartbeat(node)));
        let old_memory = std::mem::replace(&mut n.memory_available, memory_available);
        let recovered = n.suspect;
        if recovered {
            self.update_node(node, |n| n.suspect = false);
            self.out.notify(Notice::NodeRecovered { node });
        }
        if old_memory == memory_available {
            if recovered {
                self.fill_node(now, node);
            }
            self.settle(now);
            return;
        }
        if memory_available > old_memory {
            self.freed = true;
        }
        // A job whose eligibility on this node flipped may have a retry held back for this
        // node that must now go elsewhere, and its placement clock may need to start or stop.
        let n = &self.nodes[&node];
        let flipped: Vec<JobId> = self
            .pending_jobs()
            .into_iter()
            .filter(|&id| {
                self.jobs.get(&id).is_some_and(|job| {
                    n.can_ever_run_with(id, &job.req, old_memory)
                        != n.can_ever_run_with(id, &job.req, memory_available)
                })
            })
            .collect();
        self.fill_node(now, node);
        self.fill_jobs(now, &flipped);
        for job in flipped {
            self.refresh_clock(now, job);
        }
        self.settle(now);
    }

    /// The node's heartbeat timer fired: it turns suspect, or is dropped if it already was.
    pub(super) fn heartbeat_missed(&mut self, now: Instant, node: NodeId) {
        let deadline = self.config.node_timeout;
        let Some(n) = self.nodes.get_mut(&node) else { return };
        if n.alive_at > n.heard {
            // The node showed life since: only its heartbeats are late (a busy node, heartbeats
            // dropped by a full socket buffer, or a core behind its event queue).
            let (alive_at, memory) = (n.alive_at, n.memory_available);
            self.heartbeat(alive_at, node, memory);
            return;
        }
        let drop_at = n.heard + deadline;
        if !n.suspect && now < drop_at {
            n.timer_at = drop_at;
            self.timers.insert((drop_at, Timer::Heartbeat(node)));
            let silent = now.saturating_duration_since(n.heard);
            self.update_node(node, |n| n.suspect = true);
            self.out.notify(Notice::NodeSuspect { node, silent });
            return;
        }
        let reason = format!("no heartbeat for {deadline:?}");
        self.out.act(Action::DropNode { node, reason });
        self.lose_node(now, node);
    }

    /// How long a node may be silent before it is suspect.
    pub(super) fn suspect_after(&self) -> Duration {
        self.config.node_timeout / 2
    }

    /// A chunk succeeded on `winner` after failing elsewhere: blames each node it failed on and
    /// quarantines those that reached the threshold (see the module documentation).
    pub(super) fn blame(
        &mut self,
        now: Instant,
        winner: NodeId,
        job: JobId,
        chunk: ChunkIndex,
        history: Vec<FailedAttempt>,
    ) {
        let threshold = self.config.quarantine_threshold;
        if threshold == 0 {
            return;
        }
        // Only retryable failures stay in a history whose chunk goes on running.
        for failed in history {
            if failed.node == winner {
                continue;
            }
            let Some(n) = self.nodes.get_mut(&failed.node) else { continue };
            if n.quarantine.is_some() {
                continue;
            }
            let blame = &mut n.blame;
            blame.count += 1;
            match blame.first {
                None => blame.first = Some((job, chunk)),
                Some(first) => blame.distinct |= first != (job, chunk),
            }
            if blame.count >= threshold && blame.distinct {
                let reason = format!(
                    "{} attempts failed here that then succeeded on other nodes (last: job {job} \
                     chunk {chunk}: {})",
                    blame.count, failed.report.failure
                );
                self.update_node(failed.node, |n| n.quarantine = Some(reason.clone()));
                let name = self.nodes[&failed.node].name.clone();
                self.holds.entry(name).or_default().quarantine = Some(reason.clone());
                self.out.notify(Notice::NodeQuarantined { node: failed.node, reason });
                self.eligibility_changed(now);
            }
        }
    }

    /// Removes a node, requeues its attempts (those without a live copy elsewhere) and
    /// re-places work; the common part of a closed connection and a heartbeat timeout.
    pub(super) fn lose_node(&mut self, now: Instant, node: NodeId) {
        let Some(n) = self.nodes.remove(&node) else { return };
        if self.sessions.get(&n.name) == Some(&node) {
            self.sessions.remove(&n.name);
        }
        self.timers.remove(&(n.timer_at, Timer::Heartbeat(node)));
        self.eligible_slots = self.eligible_slots.saturating_sub(n.eligible_slots());
        // Its attempts are released below without their node: take back the slots they held.
        for (&tenant, &count) in &n.tenants {
            let held = u64::from(count.min(n.slots));
            self.update_tenant(tenant, |t| t.slots_held = t.slots_held.saturating_sub(held));
        }
        let free = n.free_positions();
        if free > 0 {
            self.free.remove(&(free, Reverse(node)));
        }
        if n.is_idle() {
            self.idle.remove(&(free, Reverse(node)));
        }
        // Oldest first: `attempts` is ordered.
        let lost: Vec<AttemptId> = n.attempts.iter().copied().collect();
        let mut requeue: Vec<(JobId, ChunkIndex)> = Vec::new();
        let mut poison: Vec<(JobId, ChunkIndex)> = Vec::new();
        for attempt in lost {
            let Some(a) = self.release_attempt(now, attempt) else { continue };
            self.lost.push_back(LostAttempt { attempt, job: a.job, chunk: a.chunk, node_name: n.name.clone() });
            if self.lost.len() > MAX_LOST_ATTEMPTS {
                self.lost.pop_front();
            }
            if a.running_since.is_some() && self.count_crash(a.job, a.chunk, &n.name) {
                poison.push((a.job, a.chunk));
            } else if a.twin.is_none() {
                requeue.push((a.job, a.chunk));
            }
        }
        requeue.sort_unstable();
        for (job, chunk) in requeue {
            self.requeue(job, chunk);
        }
        for (job, state) in n.jobs {
            if let Some(j) = self.jobs.get_mut(&job) {
                j.started_on.remove(&node);
                if state == NodeJob::Rejected {
                    j.rejected_live = j.rejected_live.saturating_sub(1);
                }
            }
        }
        // Only now, with the node gone from every job: ending a job tells its nodes.
        poison.sort_unstable();
        for (job, chunk) in poison {
            self.fail_poison_chunk(now, job, chunk);
        }
        // A job that every remaining node rejected can never run.
        let mut doomed: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.rejected_live > 0 && j.rejected_live >= self.nodes.len())
            .map(|(&id, _)| id)
            .collect();
        doomed.sort_unstable();
        for job in doomed {
            let error = self.jobs.get(&job).and_then(|j| j.last_rejection.clone());
            let error = error.unwrap_or_default();
            self.end_job(now, job, Some(Verdict::Failed(JobFailure::Rejected { error })));
        }
        self.fill_all(now);
        for job in self.pending_jobs() {
            self.refresh_clock(now, job);
        }
    }

    /// Counts a running attempt of the chunk lost with node `name`; returns whether the chunk has
    /// now reached the crash limit.
    fn count_crash(&mut self, job: JobId, chunk: ChunkIndex, name: &str) -> bool {
        let limit = self.config.crash_limit.max(1) as usize;
        let Some(j) = self.jobs.get_mut(&job) else { return false };
        let crashes = j.crashes.entry(chunk).or_default();
        crashes.push(name.to_owned());
        crashes.len() >= limit
    }

    /// Fails a job whose chunk was running on every node lost under it, up to the crash limit,
    /// naming those nodes (after any ordinary failures of the chunk).
    fn fail_poison_chunk(&mut self, now: Instant, job: JobId, chunk: ChunkIndex) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        let failed = j.failures.remove(&chunk).unwrap_or_default().into_iter().map(|f| f.report);
        let crashed = j.crashes.remove(&chunk).unwrap_or_default().into_iter().map(|node| AttemptFailure {
            node,
            failure: ChunkFailure {
                kind: FailureKind::Node,
                message: "the node was lost (crashed or cut off) while running this chunk".into(),
            },
            log_tail: Vec::new(),
        });
        let attempts = failed.chain(crashed).collect();
        self.end_job(now, job, Some(Verdict::Failed(JobFailure::Chunk { chunk, attempts })));
    }

    /// A result for an attempt lost with its node, sent again after the node reconnected: if the
    /// chunk runs again elsewhere, that attempt is cancelled and this result completes the chunk
    /// instead. If the chunk is done, or waits in the queue, the result is discarded (a queued
    /// chunk simply runs again).
    ///
    /// Only the node the attempt was assigned to (the same certificate name, in a new session)
    /// can complete it this way.
    pub(super) fn recover_lost_result(&mut self, now: Instant, node: NodeId, attempt: AttemptId) -> Option<(JobId, ChunkIndex)> {
        let name = &self.nodes.get(&node)?.name;
        let position = self.lost.iter().position(|l| l.attempt == attempt && &l.node_name == name)?;
        let LostAttempt { job, chunk, .. } = self.lost.remove(position)?;
        let (&rerun, rerun_on) =
            self.attempts.iter().find(|(_, a)| a.job == job && a.chunk == chunk).map(|(id, a)| (id, a.node))?;
        self.out.act(Action::CancelAttempt { node: rerun_on, attempt: rerun });
        self.handle_chunk_succeeded(now, rerun_on, rerun)
    }
}
