//! The dispatcher's scheduler: a deterministic, sans-IO state machine that decides which node runs
//! which chunk, retries failures, copies stragglers, notices dead or misbehaving nodes and decides
//! when a job is over.
//!
//! Like quinn-proto's `Connection`, a [`Scheduler`] owns no sockets, tasks or clocks. The driver
//! (the dispatcher's main loop) must:
//! - feed it every input through a `handle_*` method, passing the current time as `now`;
//! - after each call, drain [`Scheduler::poll_action`] and carry out every [`Action`] in order;
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
//!   job's (if the job names one), it did not reject the job, and the memory limits of its running
//!   attempts fit its available memory. Nodes that are drained, quarantined or suspect take no new
//!   work (they keep and finish what they hold).
//! - **Priority and fair share.** Jobs with pending chunks are served by priority, higher first.
//!   Among jobs of equal priority placement is round-robin: every placement moves the job to the
//!   back of its priority class, so two equal jobs sharing one node alternate chunk by chunk
//!   instead of the older one starving the newer.
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
//!   several), is quarantined ([`Action::NodeQuarantined`]) until an operator undrains it, which
//!   also clears its count. Counts last for the node's session: a node that reconnects starts
//!   with a clean record.
//! - **Silence.** A node silent for half of `node_timeout` is *suspect* ([`Action::NodeSuspect`]):
//!   it takes no new work but still counts as eligible; a heartbeat clears it
//!   ([`Action::NodeRecovered`]). Silent for all of `node_timeout`, it is dropped
//!   ([`Action::DropNode`]) and its attempts requeued. A node that reconnects is a new [`NodeId`].
//!
//! Costs: a report or a new chunk costs O(log n) bookkeeping plus the placements it causes
//! (finding a node scans the nodes with free positions). Rare inputs (a node joining, leaving,
//! draining or being quarantined, a heartbeat with a new memory figure) revisit every job with
//! pending chunks. Speculation never scans a job's chunks: it looks at its oldest attempts, kept
//! in start order, and wakes itself through [`Scheduler::poll_timeout`] when the oldest one will
//! turn into a straggler.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt::{self, Write as _};
use std::ops::Bound;
use std::time::{Duration, Instant};

use wire::proto::{
    AttemptFailure, AttemptId, ChunkFailure, ChunkIndex, JobFailure, JobId,
};
use wire::units::format_size;

/// Lost attempts remembered for late results.
const MAX_LOST_ATTEMPTS: usize = 100_000;

/// Identifies one node *session*: the dispatcher assigns a fresh id per node connection, so a
/// node that reconnects is a new node to the scheduler and late messages from its old session
/// cannot be confused with the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Tuning knobs of the [`Scheduler`].
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Attempts queued on a node per slot beyond the one running in it, so a fast payload never
    /// waits a round trip for its next chunk. A node holds at most `slots * (1 + pipeline_depth)`
    /// attempts. Default 2 here; the dispatcher daemon uses its `pipeline_depth` setting. With
    /// `pipeline_budget`, also the most a job's depth on a node adapts to.
    pub pipeline_depth: u32,
    /// When set, a job's attempts on a node are limited to `slots * (1 + depth)`, where the depth
    /// follows the run times the node measured for the job's chunks
    /// ([`Scheduler::handle_run_time`]): enough queued chunks per slot to cover this much work,
    /// between 1 and `pipeline_depth`, and 1 until something is measured. Tiny chunks get deep
    /// queues (a slot never waits a round trip), long ones shallow queues (the end of a job is not
    /// stuck in one node's queue while others idle, queued inputs take little memory, and a node
    /// that just ran tiny chunks does not take dozens of long ones). `None` (the default here)
    /// lets every job use all of a node's positions.
    pub pipeline_budget: Option<Duration>,
    /// How long a node may stay silent (no heartbeat, join counts as one) before it is dropped
    /// and its attempts requeued; after half of it the node is suspect and takes no new work.
    /// Nodes heartbeat every second. Default 5 s.
    pub node_timeout: Duration,
    /// An attempt in flight this many times longer than the median chunk of its job gets a
    /// speculative copy on another node (see the module documentation). A value that is not a
    /// positive finite number (`f64::INFINITY`, 0) turns speculation off. Default 3.0.
    pub speculation_multiplier: f64,
    /// Chunks of a job that must have succeeded before its median means anything; 0 counts as 1.
    /// Default 5.
    pub speculation_min_samples: u32,
    /// No attempt younger than this is copied, however fast the job's chunks are, so tiny chunks
    /// with jittery timings are not all run twice. Default 1 s.
    pub speculation_min_age: Duration,
    /// Failures that succeeded elsewhere after which a node is quarantined (see the module
    /// documentation); 0 turns quarantine off. Default 3.
    pub quarantine_threshold: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            pipeline_depth: 2,
            pipeline_budget: None,
            node_timeout: Duration::from_secs(5),
            speculation_multiplier: 3.0,
            speculation_min_samples: 5,
            speculation_min_age: Duration::from_secs(1),
            quarantine_threshold: 3,
        }
    }
}

/// What a node offers when it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResources {
    /// The node's name (its certificate name), used in failure reports.
    pub name: String,
    /// Attempts the node runs at once; 0 makes the node ineligible for every job.
    pub slots: u32,
    /// Total memory in bytes; only used to explain why a job found no eligible node.
    pub memory_total: u64,
    /// Available memory in bytes, until the first heartbeat replaces it.
    pub memory_available: u64,
    /// The node's operating system as the node reports it (e.g. "linux"); native payloads only
    /// run on nodes whose `os` and `arch` match theirs.
    pub os: String,
    /// The node's CPU architecture as the node reports it (e.g. "x86_64").
    pub arch: String,
}

/// What the scheduler needs to know about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequirements {
    /// Memory one attempt may use, in bytes; placement keeps the sum of running attempts'
    /// limits within a node's available memory.
    pub memory_limit: u64,
    /// Failed attempts one chunk may use up before the job fails; 0 counts as 1.
    pub max_attempts: u32,
    /// Higher is served first; equal priorities share nodes round-robin.
    pub priority: i32,
    /// How long the job may sit with pending chunks, nothing in flight and no node that could
    /// ever take it before it fails with [`JobFailure::NoEligibleNode`].
    pub placement_timeout: Duration,
    /// The `(os, arch)` the payload needs, compared exactly with [`NodeResources::os`] and
    /// [`NodeResources::arch`]; `None` (WebAssembly) runs anywhere.
    pub platform: Option<(String, String)>,
}

/// Something the driver must do, returned by [`Scheduler::poll_action`] in the order to do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the job's spec (and its payload, unless the node has it) to the node.
    ///
    /// Emitted once per node and job, just before that node's first [`Action::Assign`] for the
    /// job. Assignments follow at once, without waiting for the node's `JobReady`: the node must
    /// queue them until its payload is compiled (and must hold an assignment that overtakes the
    /// `StartJob` on another stream). If it rejects the job instead, the driver calls
    /// [`Scheduler::handle_job_rejected`], the scheduler requeues those attempts elsewhere
    /// without counting them as failures and without a [`Action::CancelAttempt`], and the node
    /// drops them silently.
    StartJob {
        /// The node.
        node: NodeId,
        /// The job.
        job: JobId,
    },
    /// Send the chunk's input to the node to run under this attempt id.
    ///
    /// A chunk that failed on some node is requeued under a new attempt id; it is held back
    /// from the nodes it failed on while another eligible node exists, even if that node is
    /// busy for now.
    Assign {
        /// The node.
        node: NodeId,
        /// The job, already started on the node.
        job: JobId,
        /// The chunk.
        chunk: ChunkIndex,
        /// The attempt; its result is reported under this id.
        attempt: AttemptId,
        /// Whether this is a speculative copy of a straggling attempt that is still in flight
        /// on another node; only for the log, the driver ships it like any other.
        speculative: bool,
    },
    /// Tell the node to stop the attempt and report nothing for it. The scheduler has already
    /// freed its pipeline position; a report that still arrives is discarded. Emitted when a
    /// job ends with attempts in flight and for the losing attempt of a speculated chunk.
    CancelAttempt {
        /// The node.
        node: NodeId,
        /// The attempt.
        attempt: AttemptId,
    },
    /// The job is over (succeeded, failed or cancelled): the node stops its chunks and frees its
    /// workers. Sent to every node that got [`Action::StartJob`] for it and is still connected,
    /// including nodes that rejected it.
    EndJob {
        /// The node.
        node: NodeId,
        /// The job.
        job: JobId,
    },
    /// Close the node's connection: it was silent for `node_timeout`. Its attempts are already
    /// requeued, and [`Scheduler::handle_node_lost`] for it is a no-op from now on.
    DropNode {
        /// The node.
        node: NodeId,
        /// Why, for the log, e.g. "no heartbeat for 5s".
        reason: String,
    },
    /// The node has been silent for half of `node_timeout`: it takes no new work until it
    /// heartbeats again ([`Action::NodeRecovered`]) or is dropped ([`Action::DropNode`]). For the
    /// log; emitted once per silence.
    NodeSuspect {
        /// The node.
        node: NodeId,
        /// How long it has been silent.
        silent: Duration,
    },
    /// A suspect node heartbeated again and takes work again. For the log.
    NodeRecovered {
        /// The node.
        node: NodeId,
    },
    /// The node takes no new work until [`Scheduler::handle_undrain`]: its failures keep
    /// succeeding elsewhere. It finishes what it holds. For the log (a warning); emitted once.
    NodeQuarantined {
        /// The node.
        node: NodeId,
        /// Why, e.g. "3 attempts failed here that then succeeded on other nodes (last: job 4
        /// chunk 7: trap)".
        reason: String,
    },
    /// Input is complete and every chunk has an accepted result. Emitted after the job's
    /// [`Action::EndJob`]s; the scheduler then forgets the job.
    JobSucceeded {
        /// The job.
        job: JobId,
        /// The job's final statistics.
        stats: JobStats,
    },
    /// The job failed. Emitted after [`Action::CancelAttempt`] for each of its in-flight
    /// attempts and its [`Action::EndJob`]s; the scheduler then forgets the job.
    JobFailed {
        /// The job.
        job: JobId,
        /// Why, with every failed attempt of the culprit chunk.
        failure: JobFailure,
        /// The job's final statistics.
        stats: JobStats,
    },
}

/// A live job's counts as the scheduler sees them (the core adds what it alone knows to make
/// the [`wire::proto::JobProgress`] clients see).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Chunks with an accepted result.
    pub done: u64,
    /// Chunks known so far.
    pub total: u64,
    /// Whether all input has arrived.
    pub input_complete: bool,
    /// Attempts running or queued on nodes, speculative copies included.
    pub running: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
}

/// Scheduling statistics of a job, beyond [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobStats {
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Speculative copies launched.
    pub speculative: u64,
    /// Speculative copies whose result was accepted (they beat the original).
    pub speculative_wins: u64,
    /// The median time from `Assign` to accepted result over the job's chunks so far (sampled
    /// beyond 65,536 chunks); `None` before the first.
    pub median_chunk_time: Option<Duration>,
}

/// What a node is doing, for the nodes table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// Takes new work and has a free pipeline position.
    Ready,
    /// Takes new work, but every pipeline position is taken.
    Busy,
    /// Drained by an operator: finishing the attempts it holds, taking no new ones.
    Draining,
    /// Drained and idle: safe to stop.
    Drained,
    /// Takes no new work until undrained; see [`Action::NodeQuarantined`].
    Quarantined {
        /// Why.
        reason: String,
    },
    /// Silent for half of `node_timeout`; takes no new work until it heartbeats. Shown before
    /// any other state, since the node may be gone.
    Suspect,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeState::Ready => f.write_str("ready"),
            NodeState::Busy => f.write_str("busy"),
            NodeState::Draining => f.write_str("draining"),
            NodeState::Drained => f.write_str("drained"),
            NodeState::Quarantined { reason } => write!(f, "quarantined: {reason}"),
            NodeState::Suspect => f.write_str("suspect"),
        }
    }
}

/// The scheduling state machine; see the module documentation for how to drive it.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    nodes: HashMap<NodeId, Node>,
    jobs: HashMap<JobId, Job>,
    /// Every attempt placed on a node and not yet finished, cancelled or requeued. An attempt id
    /// missing here marks a report to discard.
    attempts: HashMap<AttemptId, Attempt>,
    /// Attempts that were in flight on a node when it was lost, oldest first (bounded): a result
    /// the node sends again after reconnecting can still complete the chunk.
    lost: VecDeque<LostAttempt>,
    /// Nodes taking new work with at least one free pipeline position, keyed so that iterating
    /// in reverse gives the node with the most free positions first (the oldest among equals).
    free: BTreeSet<(u32, Reverse<NodeId>)>,
    /// The part of `free` with an idle slot (fewer attempts than slots), where speculative
    /// copies go; kept apart so finding one never scans the busy nodes.
    idle: BTreeSet<(u32, Reverse<NodeId>)>,
    /// Jobs with pending chunks, in service order.
    pending: BTreeMap<JobKey, JobId>,
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
    actions: VecDeque<Action>,
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
            nodes: HashMap::new(),
            jobs: HashMap::new(),
            attempts: HashMap::new(),
            lost: VecDeque::new(),
            free: BTreeSet::new(),
            idle: BTreeSet::new(),
            pending: BTreeMap::new(),
            timers: BTreeSet::new(),
            spec_waiting: BTreeSet::new(),
            spec_dirty: Vec::new(),
            freed: false,
            grown: Vec::new(),
            actions: VecDeque::new(),
            next_attempt: 1,
            next_seq: 0,
            next_placement: 1,
        }
    }

    /// A node registered; it counts as having just sent a heartbeat. Pending work is placed on
    /// it at once. A `node` id that is already connected is ignored.
    pub fn handle_node_joined(&mut self, now: Instant, node: NodeId, resources: NodeResources) {
        if self.nodes.contains_key(&node) {
            return;
        }
        let capacity = share_limit(&self.config, resources.slots, None);
        let timer_at = now + self.suspect_after();
        self.timers.insert((timer_at, Timer::Heartbeat(node)));
        if capacity > 0 {
            self.free.insert((capacity, Reverse(node)));
            self.idle.insert((capacity, Reverse(node)));
        }
        let new = Node {
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
            drained: false,
            quarantine: None,
            blame: Blame::default(),
            in_flight: 0,
            in_flight_memory: 0,
            attempts: BTreeSet::new(),
            jobs: HashMap::new(),
            shares: HashMap::new(),
        };
        self.nodes.insert(node, new);
        self.freed = true;
        self.fill_node(now, node);
        // A new node can only end placement clocks: jobs it could run are no longer stuck.
        let Some(joined) = self.nodes.get(&node) else { return };
        let unstuck: Vec<JobId> = self
            .pending
            .values()
            .filter(|&&id| {
                self.jobs.get(&id).is_some_and(|job| {
                    job.placement_deadline.is_some() && joined.can_ever_run(id, &job.req)
                })
            })
            .copied()
            .collect();
        for job in unstuck {
            self.refresh_clock(now, job);
        }
        self.settle(now);
    }

    /// A node's heartbeat: pushes its deadline back, clears suspicion ([`Action::NodeRecovered`])
    /// and records its available memory, which may let it take more work. Unknown nodes are
    /// ignored.
    pub fn handle_heartbeat(&mut self, now: Instant, node: NodeId, memory_available: u64) {
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
            self.actions.push_back(Action::NodeRecovered { node });
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
            .pending
            .values()
            .filter(|&&id| {
                self.jobs.get(&id).is_some_and(|job| {
                    n.can_ever_run_with(id, &job.req, old_memory)
                        != n.can_ever_run_with(id, &job.req, memory_available)
                })
            })
            .copied()
            .collect();
        self.fill_node(now, node);
        for job in flipped {
            self.fill_job(now, job);
            self.refresh_clock(now, job);
        }
        self.settle(now);
    }

    /// The node's connection closed (or the driver gave up on it): its attempts are requeued
    /// without counting as failed attempts (unless a copy of the chunk runs elsewhere). Unknown
    /// or already dropped nodes are ignored.
    pub fn handle_node_lost(&mut self, now: Instant, node: NodeId) {
        self.lose_node(now, node);
        self.settle(now);
    }

    /// An operator drains the node: it finishes the attempts it holds (running and queued) and
    /// takes no new ones, not even speculative copies, until [`Scheduler::handle_undrain`]. It
    /// stops counting as eligible, so the reason of [`JobFailure::NoEligibleNode`] counts it as
    /// drained. Unknown nodes and nodes already drained are ignored.
    pub fn handle_drain(&mut self, now: Instant, node: NodeId) {
        match self.nodes.get(&node) {
            Some(n) if !n.drained => {}
            _ => return,
        }
        self.update_node(node, |n| n.drained = true);
        self.eligibility_changed(now);
        self.settle(now);
    }

    /// An operator puts a drained or quarantined node back to work; a quarantined node also
    /// forgets the failures it was blamed for. Unknown nodes and nodes taking work are ignored.
    pub fn handle_undrain(&mut self, now: Instant, node: NodeId) {
        match self.nodes.get(&node) {
            Some(n) if n.drained || n.quarantine.is_some() => {}
            _ => return,
        }
        self.update_node(node, |n| {
            n.drained = false;
            n.quarantine = None;
            n.blame = Blame::default();
        });
        self.fill_node(now, node);
        self.eligibility_changed(now);
        self.settle(now);
    }

    /// A new job; its chunks arrive with [`Scheduler::handle_chunks_added`]. A `job` id that is
    /// already known is ignored.
    pub fn handle_job_submitted(&mut self, _now: Instant, job: JobId, req: JobRequirements) {
        if self.jobs.contains_key(&job) {
            return;
        }
        let key = (Reverse(req.priority), 0, self.next_seq);
        self.next_seq += 1;
        self.jobs.insert(
            job,
            Job {
                req,
                key,
                total: 0,
                next_fresh: 0,
                input_complete: false,
                done: 0,
                requeued: VecDeque::new(),
                in_flight: 0,
                pairs: 0,
                retries: 0,
                speculative: 0,
                speculative_wins: 0,
                failures: HashMap::new(),
                started_on: HashSet::new(),
                rejected_live: 0,
                last_rejection: None,
                placement_deadline: None,
                in_pending: false,
                candidates: BTreeSet::new(),
                durations: Median::default(),
                first_run: None,
                spec_deadline: None,
                spec_waiting: false,
                spec_dirty: false,
            },
        );
    }

    /// A job resumed after a dispatcher restart: its input is complete and `done[i]` says
    /// whether chunk `i` already has a stored result; only the others run (again). Restored
    /// results count as done but not as samples for speculation. A `job` id that is already
    /// known is ignored.
    pub fn handle_job_restored(
        &mut self,
        now: Instant,
        job: JobId,
        req: JobRequirements,
        done: &[bool],
    ) {
        if self.jobs.contains_key(&job) {
            return;
        }
        self.handle_job_submitted(now, job, req);
        let Some(j) = self.jobs.get_mut(&job) else { return };
        j.total = done.len() as u64;
        j.next_fresh = j.total;
        j.requeued = done.iter().zip(0..).filter(|(done, _)| !**done).map(|(_, c)| c).collect();
        j.done = j.total - j.requeued.len() as u64;
        self.sync_pending(job);
        self.fill_job(now, job);
        self.refresh_clock(now, job);
        self.handle_input_complete(now, job);
    }

    /// `count` more chunks of the job's input arrived; their indices continue from the number
    /// of chunks so far. Ignored for unknown jobs and after input completion.
    pub fn handle_chunks_added(&mut self, now: Instant, job: JobId, count: u64) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.input_complete || count == 0 {
            return;
        }
        j.total = j.total.saturating_add(count);
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
    /// job, it fails with [`JobFailure::Rejected`] carrying this `error`. Ignored unless the
    /// job was started on the node and not yet rejected there.
    pub fn handle_job_rejected(&mut self, now: Instant, node: NodeId, job: JobId, error: String) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        match n.jobs.get_mut(&job) {
            Some(state @ (NodeJob::Started | NodeJob::Ready)) => *state = NodeJob::Rejected,
            _ => return,
        }
        let Some(j) = self.jobs.get_mut(&job) else {
            // Invariant: a node's job map only names live jobs; end_job removes them.
            debug_assert!(false, "node {node} knows ended job {job}");
            return;
        };
        j.rejected_live += 1;
        j.last_rejection = Some(error.clone());
        let mut ours: Vec<AttemptId> = n
            .attempts
            .iter()
            .filter(|a| self.attempts.get(a).is_some_and(|a| a.job == job))
            .copied()
            .collect();
        ours.sort_unstable();
        for attempt in ours {
            if let Some(a) = self.release_attempt(now, attempt) {
                if a.twin.is_none() {
                    self.requeue(a.job, a.chunk);
                }
            }
        }
        let everyone_rejected =
            self.jobs.get(&job).is_some_and(|j| j.rejected_live >= self.nodes.len());
        if everyone_rejected {
            // This also offers the node's freed positions to other jobs.
            self.end_job(now, job, Some(Verdict::Failed(JobFailure::Rejected { error })));
        } else {
            self.fill_node(now, node);
            self.fill_job(now, job);
            self.refresh_clock(now, job);
        }
        self.settle(now);
    }

    /// A node measured how long one of its attempts ran (setup excluded). Under
    /// `pipeline_budget` this sets the limit of the attempt's job on the node: `budget / average
    /// run time` queued chunks per slot, between 1 and `pipeline_depth`; room that appears is
    /// filled at once. Call it before the report's [`Scheduler::handle_chunk_succeeded`] (it needs
    /// the attempt live). Without a budget, or for an attempt not live on the node, it does
    /// nothing.
    pub fn handle_run_time(&mut self, now: Instant, node: NodeId, attempt: AttemptId, run: Duration) {
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
    fn refresh_capacity(&mut self, node: NodeId) {
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
        self.handle_sign_of_life(now, node);
        let Some(live) = self.attempts.get(&attempt) else {
            return self.recover_lost_result(now, node, attempt);
        };
        if live.node != node {
            return None;
        }
        let a = self.release_attempt(now, attempt)?;
        // Invariant: attempts only exist for live jobs; end_job releases them.
        let job = self.jobs.get_mut(&a.job)?;
        job.done += 1;
        if let Some(since) = a.running_since {
            job.durations.insert(job.done, now.saturating_duration_since(since));
        }
        if a.speculative {
            job.speculative_wins += 1;
        }
        let history = if job.failures.is_empty() { None } else { job.failures.remove(&a.chunk) };
        let mut loser = None;
        if let Some(twin) = a.twin {
            if let Some(t) = self.release_attempt(now, twin) {
                self.actions.push_back(Action::CancelAttempt { node: t.node, attempt: twin });
                loser = Some(t.node);
            }
        }
        if let Some(history) = history {
            self.blame(now, node, a.job, a.chunk, history);
        }
        if self.jobs.get(&a.job).is_some_and(Job::is_finished) {
            // This also offers the freed positions to other jobs.
            self.end_job(now, a.job, Some(Verdict::Succeeded));
        } else {
            self.mark_spec(a.job);
            self.fill_node(now, node);
            if let Some(loser) = loser {
                self.fill_node(now, loser);
            }
            self.refresh_clock(now, a.job);
        }
        self.settle(now);
        Some((a.job, a.chunk))
    }

    /// A result for an attempt lost with its node, sent again after the node reconnected: if the
    /// chunk runs again elsewhere, that attempt is cancelled and this result completes the chunk
    /// instead. If the chunk is done, or waits in the queue, the result is discarded (a queued
    /// chunk simply runs again).
    ///
    /// Only the node the attempt was assigned to (the same certificate name, in a new session)
    /// can complete it this way.
    fn recover_lost_result(&mut self, now: Instant, node: NodeId, attempt: AttemptId) -> Option<(JobId, ChunkIndex)> {
        let name = &self.nodes.get(&node)?.name;
        let position = self.lost.iter().position(|l| l.attempt == attempt && &l.node_name == name)?;
        let LostAttempt { job, chunk, .. } = self.lost.remove(position)?;
        let (&rerun, rerun_on) =
            self.attempts.iter().find(|(_, a)| a.job == job && a.chunk == chunk).map(|(id, a)| (id, a.node))?;
        self.actions.push_back(Action::CancelAttempt { node: rerun_on, attempt: rerun });
        self.handle_chunk_succeeded(now, rerun_on, rerun)
    }

    /// Sets the first attempt id this scheduler hands out, so ids from an earlier dispatcher
    /// lifetime (which nodes may still report) never collide with new ones.
    pub fn set_attempt_base(&mut self, base: u64) {
        self.next_attempt = self.next_attempt.max(base);
    }

    /// A node reports a failed attempt. A retryable failure requeues the chunk under a new
    /// attempt, away from the nodes it failed on when possible (unless a copy of the chunk still
    /// runs elsewhere, which then carries on alone); a non-retryable one, or the
    /// `max_attempts`-th, fails the job with [`JobFailure::Chunk`]. Reports to discard (see
    /// [`Scheduler::handle_chunk_succeeded`]) are ignored.
    pub fn handle_chunk_failed(
        &mut self,
        now: Instant,
        node: NodeId,
        attempt: AttemptId,
        failure: ChunkFailure,
    ) {
        self.handle_sign_of_life(now, node);
        if self.attempts.get(&attempt).is_none_or(|a| a.node != node) {
            return;
        }
        let Some(a) = self.release_attempt(now, attempt) else { return };
        let name = self.nodes.get(&node).map(|n| n.name.clone()).unwrap_or_default();
        // Invariant: attempts only exist for live jobs; end_job releases them.
        let Some(job) = self.jobs.get_mut(&a.job) else { return };
        let retryable = failure.kind.is_retryable();
        let history = job.failures.entry(a.chunk).or_default();
        history.push(FailedAttempt { node, report: AttemptFailure { node: name, failure } });
        if !retryable || history.len() >= job.req.max_attempts.max(1) as usize {
            let attempts = job
                .failures
                .remove(&a.chunk)
                .unwrap_or_default()
                .into_iter()
                .map(|f| f.report)
                .collect();
            let failure = JobFailure::Chunk { chunk: a.chunk, attempts };
            // This also offers the node's freed position to other jobs.
            self.end_job(now, a.job, Some(Verdict::Failed(failure)));
            self.settle(now);
            return;
        }
        if a.twin.is_none() {
            job.retries += 1;
            self.requeue(a.job, a.chunk);
        }
        // The freed position goes by priority first; then the retry looks for another node.
        self.fill_node(now, node);
        self.fill_job(now, a.job);
        self.refresh_clock(now, a.job);
        self.settle(now);
    }

    /// The job is cancelled: its in-flight attempts are cancelled, its nodes get
    /// [`Action::EndJob`], and nothing more is emitted for it (no verdict); the scheduler forgets
    /// it at once. Later reports for it are discarded. Unknown jobs are ignored.
    pub fn handle_cancel(&mut self, now: Instant, job: JobId) {
        self.end_job(now, job, None);
        self.settle(now);
    }

    /// Fires every deadline at or before `now`: silent nodes become suspect
    /// ([`Action::NodeSuspect`]) and later are dropped ([`Action::DropNode`]) with their attempts
    /// requeued, jobs whose placement clock ran out fail with [`JobFailure::NoEligibleNode`], and
    /// stragglers get speculative copies. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, timer));
            match timer {
                Timer::Heartbeat(node) => self.heartbeat_missed(now, node),
                Timer::Placement(job) => {
                    let Some(j) = self.jobs.get_mut(&job) else { continue };
                    j.placement_deadline = None;
                    // Re-check defensively; the clock should have been stopped otherwise.
                    let j = &self.jobs[&job];
                    if j.has_pending() && j.in_flight == 0 && !self.any_eligible(job, j) {
                        let reason = self.eligibility(Some(job), &j.req).reason;
                        let failure = JobFailure::NoEligibleNode { reason };
                        self.end_job(now, job, Some(Verdict::Failed(failure)));
                    } else {
                        self.refresh_clock(now, job);
                    }
                }
                Timer::Speculate(job) => {
                    let Some(j) = self.jobs.get_mut(&job) else { continue };
                    j.spec_deadline = None;
                    self.speculate(now, job);
                }
            }
        }
        self.settle(now);
    }

    /// The next action for the driver, in order; `None` once all have been taken.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
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
        })
    }

    /// Scheduling statistics of a live job; `None` for unknown and ended jobs (the verdict
    /// actions carry their final statistics).
    pub fn stats(&self, job: JobId) -> Option<JobStats> {
        self.jobs.get(&job).map(Job::stats)
    }

    /// Why the job waits, when it has pending chunks and nothing in flight (no node can take
    /// any of its chunks right now), e.g. "3 connected, 2 lack 4.0 GiB free memory, 1 drained, 0
    /// eligible" or, when eligible nodes are full of other work, "2 connected, 2 eligible, all
    /// busy". `None` while the job runs or has nothing left to place, and for unknown jobs.
    /// Costs O(nodes); meant for a progress tick.
    pub fn blocked_reason(&self, job: JobId) -> Option<String> {
        let j = self.jobs.get(&job)?;
        if !j.has_pending() || j.in_flight > 0 {
            return None;
        }
        let e = self.eligibility(Some(job), &j.req);
        Some(if e.eligible > 0 { format!("{}, all busy", e.reason) } else { e.reason })
    }

    /// Whether a job with these requirements has an eligible node now (one that could run it
    /// once it has room), and if not, why, in the words of [`JobFailure::NoEligibleNode`]. For
    /// refusing a job at submission; costs O(nodes).
    ///
    /// # Errors
    ///
    /// The reason, when no connected node is eligible.
    pub fn eligible_summary(&self, req: &JobRequirements) -> Result<(), String> {
        let e = self.eligibility(None, req);
        if e.eligible > 0 {
            Ok(())
        } else {
            Err(e.reason)
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

/// Service order of a job: higher priority first, then jobs never placed in submission order,
/// then the job placed least recently (its last placement's number; the submission number keeps
/// keys unique).
type JobKey = (Reverse<i32>, u64, u64);

/// Something with a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The node turns suspect then, or is dropped if it already is.
    Heartbeat(NodeId),
    /// The job has been unplaceable since `placement_timeout` before then.
    Placement(JobId),
    /// The job's oldest attempt that is not yet a straggler becomes one then.
    Speculate(JobId),
}

/// A job's end, as announced to the driver.
#[derive(Debug)]
enum Verdict {
    Succeeded,
    Failed(JobFailure),
}

/// Which pending chunk to place.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// The requeued chunk at this index of `Job::requeued`.
    Requeued(usize),
    /// The next fresh chunk.
    Fresh,
}

/// The most attempts of one job a node with `slots` slots may hold: `slots * (1 + depth)`, the
/// depth being `pipeline_depth` without a budget, and under one the queued chunks per slot that
/// cover the budget at `run` per chunk, between 1 and `pipeline_depth` (1 when nothing is
/// measured). With no job asking for more, also a node's capacity.
fn share_limit(config: &SchedulerConfig, slots: u32, run: Option<Duration>) -> u32 {
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

/// How far into a job's requeue a node looks for a chunk that did not fail on it.
const REQUEUE_SCAN: usize = 16;

/// How many of a job's stragglers, oldest first, one speculation pass tries to copy.
const SPECULATION_SCAN: usize = 16;

/// Chunk durations kept exactly per job; beyond, they are sampled ever more sparsely.
const DURATION_SAMPLES: u64 = 1 << 16;

#[derive(Debug)]
struct Node {
    name: String,
    os: String,
    arch: String,
    slots: u32,
    /// The most attempts the node takes: `slots * (1 + pipeline_depth)`, or under
    /// `pipeline_budget` the largest of its jobs' share limits (at least `slots * 2`). A capacity
    /// that just shrank may be exceeded until attempts finish.
    capacity: u32,
    memory_total: u64,
    /// From the last heartbeat.
    memory_available: u64,
    /// When the node last heartbeated (or joined), or, once its heartbeat timer has looked,
    /// last showed a sign of life.
    heard: Instant,
    /// The node's last sign of life (a report, or any frame its connection received): proof of
    /// life as good as a heartbeat, noted cheaply here and taken into `heard` only when the
    /// heartbeat timer fires.
    alive_at: Instant,
    /// When its `Timer::Heartbeat` fires: `heard` plus half of `node_timeout`, or plus all of it
    /// once the node is suspect.
    timer_at: Instant,
    suspect: bool,
    drained: bool,
    /// Why the node is quarantined, if it is.
    quarantine: Option<String>,
    blame: Blame,
    /// `attempts.len()`, kept as a number because it keys `Scheduler::free`.
    in_flight: u32,
    /// Sum of the memory limits of `attempts`.
    in_flight_memory: u64,
    /// In assignment order (ids only grow): the first `slots` are presumed running, the rest
    /// queued behind them, as the node runs its attempts first come, first served.
    attempts: BTreeSet<AttemptId>,
    /// Jobs the node got `StartJob` for, until they end.
    jobs: HashMap<JobId, NodeJob>,
    /// Each of those jobs' part of the node's pipeline.
    shares: HashMap<JobId, Share>,
}

/// A job's part of one node's pipeline.
#[derive(Debug)]
struct Share {
    /// The job's attempts on the node.
    in_flight: u32,
    /// The most it may have there: the node's capacity, or under `pipeline_budget` what its run
    /// times there call for. A limit that just shrank may be exceeded until attempts finish.
    limit: u32,
    /// Moving average of the job's chunk run times on the node, under `pipeline_budget`.
    run_nanos: Option<u64>,
}

/// Failures on a node of chunks that then succeeded elsewhere.
#[derive(Debug, Default)]
struct Blame {
    count: u32,
    /// The first such chunk, to tell whether more than one chunk is involved.
    first: Option<(JobId, ChunkIndex)>,
    distinct: bool,
}

impl Node {
    fn rejected(&self, job: JobId) -> bool {
        matches!(self.jobs.get(&job), Some(NodeJob::Rejected))
    }

    /// Whether the node takes new work at all.
    fn open(&self) -> bool {
        !self.drained && !self.suspect && self.quarantine.is_none()
    }

    /// Open with an idle slot: it could start a speculative copy at once.
    fn is_idle(&self) -> bool {
        self.free_positions() > 0 && self.in_flight < self.slots
    }

    /// Positions new work may take now; what keys `Scheduler::free`.
    fn free_positions(&self) -> u32 {
        if self.open() {
            self.capacity.saturating_sub(self.in_flight)
        } else {
            0
        }
    }

    /// Whether the node's platform is the one the job needs.
    fn runs(&self, req: &JobRequirements) -> bool {
        req.platform.as_ref().is_none_or(|(os, arch)| *os == self.os && *arch == self.arch)
    }

    /// Whether one more attempt of the job may be placed here now.
    fn fits(&self, job: JobId, req: &JobRequirements) -> bool {
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
    /// node stays eligible (it may heartbeat again); a drained or quarantined one does not.
    fn can_ever_run(&self, job: JobId, req: &JobRequirements) -> bool {
        self.can_ever_run_with(job, req, self.memory_available)
    }

    fn can_ever_run_with(&self, job: JobId, req: &JobRequirements, memory_available: u64) -> bool {
        self.capacity > 0
            && !self.drained
            && self.quarantine.is_none()
            && !self.rejected(job)
            && self.runs(req)
            && req.memory_limit <= memory_available
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeJob {
    /// `StartJob` sent; the node may be compiling.
    Started,
    /// The node reported `JobReady`.
    Ready,
    /// The node reported `JobRejected`; it gets no more of the job's chunks.
    Rejected,
}

#[derive(Debug)]
struct Job {
    req: JobRequirements,
    /// Its key in `Scheduler::pending`; renewed at every placement for round-robin.
    key: JobKey,
    /// Chunks known so far; fresh chunks are `next_fresh..total`.
    total: u64,
    next_fresh: ChunkIndex,
    input_complete: bool,
    /// Chunks with an accepted result.
    done: u64,
    /// Chunks to place again (failed, or on a lost or rejecting node), served before fresh ones.
    requeued: VecDeque<ChunkIndex>,
    /// Live attempts, speculative copies included.
    in_flight: u64,
    /// Live original-and-copy pairs: `in_flight - pairs` chunks are in flight.
    pairs: u64,
    retries: u64,
    speculative: u64,
    speculative_wins: u64,
    /// Failed attempts of chunks not yet done, oldest first; only chunks that failed appear.
    failures: HashMap<ChunkIndex, Vec<FailedAttempt>>,
    /// Connected nodes that got `StartJob`.
    started_on: HashSet<NodeId>,
    /// Connected nodes that rejected the job.
    rejected_live: usize,
    last_rejection: Option<String>,
    /// When the job fails for want of an eligible node, as registered in `Scheduler::timers`.
    placement_deadline: Option<Instant>,
    /// Whether the job is in `Scheduler::pending`.
    in_pending: bool,
    /// Live attempts that may still get a speculative copy, by start time.
    candidates: BTreeSet<(Instant, AttemptId)>,
    /// Durations of chunks with an accepted result.
    durations: Median,
    /// The run time of the job's first measured chunk, under `pipeline_budget`: where its shares
    /// of nodes that have measured nothing yet start.
    first_run: Option<Duration>,
    /// The job's `Timer::Speculate`, if set.
    spec_deadline: Option<Instant>,
    /// Whether the job is in `Scheduler::spec_waiting`.
    spec_waiting: bool,
    /// Whether the job is in `Scheduler::spec_dirty`.
    spec_dirty: bool,
}

impl Job {
    fn has_pending(&self) -> bool {
        !self.requeued.is_empty() || self.next_fresh < self.total
    }

    fn is_finished(&self) -> bool {
        self.input_complete && self.done == self.total
    }

    fn failed_on(&self, chunk: ChunkIndex, node: NodeId) -> bool {
        self.failures.get(&chunk).is_some_and(|f| f.iter().any(|a| a.node == node))
    }

    fn stats(&self) -> JobStats {
        JobStats {
            retries: self.retries,
            speculative: self.speculative,
            speculative_wins: self.speculative_wins,
            median_chunk_time: self.durations.median(),
        }
    }
}

#[derive(Debug)]
struct FailedAttempt {
    node: NodeId,
    report: AttemptFailure,
}

/// An attempt that was in flight on a node when the node was lost.
#[derive(Debug)]
struct LostAttempt {
    attempt: AttemptId,
    job: JobId,
    chunk: ChunkIndex,
    /// The certificate name of the node it ran on; only that node may complete it later.
    node_name: String,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    job: JobId,
    chunk: ChunkIndex,
    node: NodeId,
    /// The job's memory limit, charged to the node while the attempt is in flight.
    memory: u64,
    /// Since when it is presumed running: its assignment, or the moment an attempt ahead of it
    /// left its node's first `slots` positions; `None` while it waits queued behind them.
    running_since: Option<Instant>,
    /// Whether it is a speculative copy.
    speculative: bool,
    /// The other live attempt of the same chunk, when one of the two is a copy.
    twin: Option<AttemptId>,
    /// Whether it is in `Job::candidates`.
    candidate: bool,
}

/// A running median: the lower half in a max-heap, the upper half in a min-heap.
#[derive(Debug, Default)]
struct Median {
    low: BinaryHeap<u64>,
    high: BinaryHeap<Reverse<u64>>,
}

impl Median {
    /// Records the duration of the `n`-th accepted chunk (from 1): every one of the first
    /// `DURATION_SAMPLES`, then one in `1 + n / DURATION_SAMPLES`, so memory grows only
    /// logarithmically with the job's size.
    fn insert(&mut self, n: u64, duration: Duration) {
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
    fn len(&self) -> usize {
        self.low.len() + self.high.len()
    }

    /// The lower median.
    fn median(&self) -> Option<Duration> {
        self.low.peek().map(|&nanos| Duration::from_nanos(nanos))
    }
}

/// Who could run a job, node by node, as words.
struct Eligibility {
    reason: String,
    eligible: usize,
}

/// "1 lacks" / "2 lack": picks the verb form for a count.
fn verb(count: usize, singular: &'static str, plural: &'static str) -> &'static str {
    if count == 1 {
        singular
    } else {
        plural
    }
}

impl Scheduler {
    /// Gives the node's free positions to pending jobs in service order, one chunk at a time:
    /// each placement moves its job behind the others of its priority (see `assign`), so equal
    /// jobs take turns.
    fn fill_node(&mut self, now: Instant, node: NodeId) {
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
    fn fill_job(&mut self, now: Instant, job: JobId) {
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
    fn fill_all(&mut self, now: Instant) {
        let mut cursor = None;
        while let Some((key, job)) = self.next_pending(cursor) {
            cursor = Some(key);
            self.fill_job(now, job);
        }
    }

    fn next_pending(&self, after: Option<JobKey>) -> Option<(JobKey, JobId)> {
        let next = match after {
            None => self.pending.iter().next(),
            Some(key) => self.pending.range((Bound::Excluded(key), Bound::Unbounded)).next(),
        };
        next.map(|(&key, &job)| (key, job))
    }

    /// Which of the job's chunks to place on the node now, if any.
    fn choose(&self, job: JobId, node: NodeId) -> Option<Pick> {
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

    /// Whether a node the chunk has not failed on could ever run it.
    fn has_alternative(&self, job: JobId, j: &Job, chunk: ChunkIndex) -> bool {
        self.nodes.iter().any(|(&id, n)| !j.failed_on(chunk, id) && n.can_ever_run(job, &j.req))
    }

    fn any_eligible(&self, job: JobId, j: &Job) -> bool {
        self.nodes.values().any(|n| n.can_ever_run(job, &j.req))
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
    fn place(
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
            self.actions.push_back(Action::StartJob { node, job });
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
        self.actions.push_back(Action::Assign { node, job, chunk, attempt, speculative });
        self.nodes.get(&node).is_some_and(|n| n.in_flight == n.slots && n.in_flight < n.capacity)
    }

    /// Adds `delta` (+1 or -1) to the node's in-flight count.
    fn set_in_flight(&mut self, node: NodeId, delta: i32) {
        self.update_node(node, |n| n.in_flight = n.in_flight.saturating_add_signed(delta));
    }

    /// Changes a node, keeping its entry in the free-position index in step and noting room
    /// that appeared for waiting speculative copies.
    fn update_node(&mut self, id: NodeId, change: impl FnOnce(&mut Node)) {
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
    fn release_attempt(&mut self, now: Instant, attempt: AttemptId) -> Option<Attempt> {
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

    /// Makes a running original attempt a candidate for a speculative copy.
    fn add_candidate(&mut self, attempt: AttemptId) {
        let Some(a) = self.attempts.get_mut(&attempt) else { return };
        let (Some(since), Some(j)) = (a.running_since, self.jobs.get_mut(&a.job)) else { return };
        a.candidate = true;
        // A first candidate changes the job's oldest attempt, so its wake-up may have to move.
        let first = j.candidates.is_empty();
        j.candidates.insert((since, attempt));
        if first {
            let job = a.job;
            self.mark_spec(job);
        }
    }

    fn requeue(&mut self, job: JobId, chunk: ChunkIndex) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.requeued.push_back(chunk);
            self.sync_pending(job);
        }
    }

    /// Keeps `pending` in step with whether the job has pending chunks.
    fn sync_pending(&mut self, job: JobId) {
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

    /// Starts or stops the job's placement clock: it runs while the job has pending chunks,
    /// nothing in flight and no connected node that could ever run it.
    fn refresh_clock(&mut self, now: Instant, job: JobId) {
        let Some(j) = self.jobs.get(&job) else { return };
        let stuck = j.has_pending() && j.in_flight == 0 && !self.any_eligible(job, j);
        let Some(j) = self.jobs.get_mut(&job) else { return };
        match (stuck, j.placement_deadline) {
            (true, None) => {
                let at = now + j.req.placement_timeout;
                j.placement_deadline = Some(at);
                self.timers.insert((at, Timer::Placement(job)));
            }
            (false, Some(at)) => {
                j.placement_deadline = None;
                self.timers.remove(&(at, Timer::Placement(job)));
            }
            _ => {}
        }
    }

    /// A node stopped or started counting as eligible (drain, undrain, quarantine): held-back
    /// retries may have to go elsewhere, and placement clocks may start or stop.
    fn eligibility_changed(&mut self, now: Instant) {
        self.fill_all(now);
        let waiting: Vec<JobId> = self.pending.values().copied().collect();
        for job in waiting {
            self.refresh_clock(now, job);
        }
    }

    /// The node was heard from at `at` (a report, or a frame its connection received): it
    /// counts as a heartbeat when its heartbeat timer next fires. Cheap; unknown nodes are
    /// ignored.
    pub fn handle_sign_of_life(&mut self, at: Instant, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.alive_at = n.alive_at.max(at);
        }
    }

    /// The node's heartbeat timer fired: it turns suspect, or is dropped if it already was.
    fn heartbeat_missed(&mut self, now: Instant, node: NodeId) {
        let deadline = self.config.node_timeout;
        let Some(n) = self.nodes.get_mut(&node) else { return };
        if n.alive_at > n.heard {
            // The node showed life since: only its heartbeats are late (a busy node, heartbeats
            // dropped by a full socket buffer, or a core behind its event queue).
            let (alive_at, memory) = (n.alive_at, n.memory_available);
            self.handle_heartbeat(alive_at, node, memory);
            return;
        }
        let drop_at = n.heard + deadline;
        if !n.suspect && now < drop_at {
            n.timer_at = drop_at;
            self.timers.insert((drop_at, Timer::Heartbeat(node)));
            let silent = now.saturating_duration_since(n.heard);
            self.update_node(node, |n| n.suspect = true);
            self.actions.push_back(Action::NodeSuspect { node, silent });
            return;
        }
        let reason = format!("no heartbeat for {deadline:?}");
        self.actions.push_back(Action::DropNode { node, reason });
        self.lose_node(now, node);
    }

    /// How long a node may be silent before it is suspect.
    fn suspect_after(&self) -> Duration {
        self.config.node_timeout / 2
    }

    /// A chunk succeeded on `winner` after failing elsewhere: blames each node it failed on and
    /// quarantines those that reached the threshold (see the module documentation).
    fn blame(
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
                self.actions.push_back(Action::NodeQuarantined { node: failed.node, reason });
                self.eligibility_changed(now);
            }
        }
    }

    /// Removes a node, requeues its attempts (those without a live copy elsewhere) and
    /// re-places work; the common part of a closed connection and a heartbeat timeout.
    fn lose_node(&mut self, now: Instant, node: NodeId) {
        let Some(n) = self.nodes.remove(&node) else { return };
        self.timers.remove(&(n.timer_at, Timer::Heartbeat(node)));
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
        for attempt in lost {
            let Some(a) = self.release_attempt(now, attempt) else { continue };
            self.lost.push_back(LostAttempt { attempt, job: a.job, chunk: a.chunk, node_name: n.name.clone() });
            if self.lost.len() > MAX_LOST_ATTEMPTS {
                self.lost.pop_front();
            }
            if a.twin.is_none() {
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
        let waiting: Vec<JobId> = self.pending.values().copied().collect();
        for job in waiting {
            self.refresh_clock(now, job);
        }
    }

    /// Ends a job: cancels its attempts, sends `EndJob` to its nodes, emits the verdict (none
    /// for a cancellation), forgets the job and gives the freed positions to other jobs.
    fn end_job(&mut self, now: Instant, job: JobId, verdict: Option<Verdict>) {
        let Some(j) = self.jobs.get(&job) else { return };
        let mut nodes: Vec<NodeId> = j.started_on.iter().copied().collect();
        nodes.sort_unstable();
        let mut cancelled: Vec<AttemptId> = Vec::new();
        for node in &nodes {
            // Invariant: `started_on` only names connected nodes; lose_node removes them.
            let Some(n) = self.nodes.get(node) else { continue };
            let attempts = &self.attempts;
            cancelled.extend(
                n.attempts.iter().filter(|a| attempts.get(a).is_some_and(|a| a.job == job)),
            );
        }
        cancelled.sort_unstable();
        for attempt in cancelled {
            if let Some(a) = self.release_attempt(now, attempt) {
                self.actions.push_back(Action::CancelAttempt { node: a.node, attempt });
            }
        }
        let Some(j) = self.jobs.remove(&job) else { return };
        if j.in_pending {
            self.pending.remove(&j.key);
        }
        if let Some(at) = j.placement_deadline {
            self.timers.remove(&(at, Timer::Placement(job)));
        }
        if let Some(at) = j.spec_deadline {
            self.timers.remove(&(at, Timer::Speculate(job)));
        }
        if j.spec_waiting {
            self.spec_waiting.remove(&(Reverse(j.req.priority), job));
        }
        for &node in &nodes {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.jobs.remove(&job);
                n.shares.remove(&job);
            }
            self.refresh_capacity(node);
            self.actions.push_back(Action::EndJob { node, job });
        }
        let stats = j.stats();
        match verdict {
            Some(Verdict::Succeeded) => self.actions.push_back(Action::JobSucceeded { job, stats }),
            Some(Verdict::Failed(failure)) => {
                self.actions.push_back(Action::JobFailed { job, failure, stats })
            }
            None => {}
        }
        for node in nodes {
            self.fill_node(now, node);
        }
    }

    /// Notes that the job's speculation must be reconsidered before the call returns.
    fn mark_spec(&mut self, job: JobId) {
        if let Some(j) = self.jobs.get_mut(&job) {
            if !j.spec_dirty {
                j.spec_dirty = true;
                self.spec_dirty.push(job);
            }
        }
    }

    /// Finishes a call: reconsiders speculation for the jobs whose state changed, and for the
    /// jobs waiting for room if room appeared. Every `handle_*` ends with it.
    fn settle(&mut self, now: Instant) {
        // Filling a node may start a job there whose share raises the node's capacity again.
        while let Some(node) = self.grown.pop() {
            self.fill_node(now, node);
        }
        self.speculate_dirty(now);
        if std::mem::take(&mut self.freed) {
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
    fn spec_threshold(&self, j: &Job) -> Option<Duration> {
        let multiplier = self.config.speculation_multiplier;
        if !(multiplier.is_finite() && multiplier > 0.0) {
            return None;
        }
        if !j.input_complete || j.has_pending() || j.candidates.is_empty() {
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
    fn speculate(&mut self, now: Instant, job: JobId) {
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
    /// the chunk failed on; the one with the most free positions.
    fn copy_target(&self, attempt: AttemptId) -> Option<NodeId> {
        let a = self.attempts.get(&attempt)?;
        let j = self.jobs.get(&a.job)?;
        self.idle.iter().rev().map(|&(_, Reverse(node))| node).find(|&node| {
            node != a.node
                && self.nodes.get(&node).is_some_and(|n| n.fits(a.job, &j.req))
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
            // Jobs passed over for want of memory may fit a queued position now.
            self.fill_node(now, node);
        }
    }

    /// Describes, node by node, who could run a job with these requirements, e.g. "3 connected,
    /// 2 are linux/x86_64 but the payload needs linux/aarch64, 1 drained, 0 eligible".
    fn eligibility(&self, job: Option<JobId>, req: &JobRequirements) -> Eligibility {
        if self.nodes.is_empty() {
            return Eligibility { reason: "0 nodes connected".to_owned(), eligible: 0 };
        }
        let limit = req.memory_limit;
        let mut platforms: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let (mut rejected, mut no_slots, mut small) = (0, 0, 0);
        let (mut quarantined, mut drained, mut lack, mut eligible) = (0, 0, 0, 0);
        // Permanent reasons first: they tell the user what undraining or waiting cannot fix.
        for n in self.nodes.values() {
            if !n.runs(req) {
                *platforms.entry((n.os.as_str(), n.arch.as_str())).or_default() += 1;
            } else if job.is_some_and(|job| n.rejected(job)) {
                rejected += 1;
            } else if n.capacity == 0 {
                no_slots += 1;
            } else if n.memory_total < limit {
                small += 1;
            } else if n.quarantine.is_some() {
                quarantined += 1;
            } else if n.drained {
                drained += 1;
            } else if n.memory_available < limit {
                lack += 1;
            } else {
                eligible += 1;
            }
        }
        let size = format_size(limit);
        let mut reason = format!("{} connected", self.nodes.len());
        // Writing to a String cannot fail.
        if let Some((os, arch)) = req.platform.as_ref().filter(|_| !platforms.is_empty()) {
            let mut first = true;
            for ((node_os, node_arch), count) in platforms {
                let sep = if first { ", " } else { " and " };
                first = false;
                let be = verb(count, "is", "are");
                let _ = write!(reason, "{sep}{count} {be} {node_os}/{node_arch}");
            }
            let _ = write!(reason, " but the payload needs {os}/{arch}");
        }
        if rejected > 0 {
            let _ = write!(reason, ", {rejected} rejected the job");
            let last = job.and_then(|job| self.jobs.get(&job)?.last_rejection.as_ref());
            if let Some(error) = last {
                let _ = write!(reason, " ({error})");
            }
        }
        if no_slots > 0 {
            let _ = write!(reason, ", {no_slots} {} no slots", verb(no_slots, "has", "have"));
        }
        if small > 0 {
            let _ = write!(
                reason,
                ", {small} {} less than {size} of memory",
                verb(small, "has", "have")
            );
        }
        if quarantined > 0 {
            let _ = write!(reason, ", {quarantined} quarantined");
        }
        if drained > 0 {
            let _ = write!(reason, ", {drained} drained");
        }
        if lack > 0 {
            let _ = write!(reason, ", {lack} {} {size} free memory", verb(lack, "lacks", "lack"));
        }
        let _ = write!(reason, ", {eligible} eligible");
        Eligibility { reason, eligible }
    }
}

#[cfg(test)]
impl Scheduler {
    /// Panics if the scheduler's redundant bookkeeping disagrees with itself or a promise does
    /// not hold at `now`.
    fn check_invariants(&self, now: Instant) {
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
            assert_eq!(self.pending.get(&j.key) == Some(id), j.in_pending, "job {id} pending");
            assert!(j.next_fresh <= j.total);
            let placed = j.in_flight - j.pairs;
            assert!(
                j.done + placed + j.requeued.len() as u64 + (j.total - j.next_fresh) == j.total,
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
        assert_eq!(self.pending.len(), self.jobs.values().filter(|j| j.in_pending).count());
        assert_eq!(self.spec_waiting.len(), self.jobs.values().filter(|j| j.spec_waiting).count());
        // Eager placement: no pending chunk fits a node with a free position.
        for &job in self.pending.values() {
            for &(_, Reverse(node)) in &self.free {
                let pick = self.choose(job, node);
                assert!(pick.is_none(), "job {job} could place {pick:?} on idle node {node}");
            }
        }
        assert_eq!(self.timers.len(), self.nodes.len() + clocks + wakeups, "stale timers");
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

    /// Whether the scheduler has forgotten every job and attempt.
    fn is_empty_of_jobs(&self) -> bool {
        self.jobs.is_empty()
            && self.attempts.is_empty()
            && self.pending.is_empty()
            && self.spec_waiting.is_empty()
            && self.timers.len() == self.nodes.len()
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
