//! The dispatcher's scheduler: a deterministic, sans-IO state machine that decides which node runs
//! which chunk, retries failures, notices dead nodes and decides when a job is over.
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
//! chunk. Pending chunks of a job sit in a queue (requeued chunks first, then fresh ones, which
//! are only a counter); jobs with pending chunks are served by priority, then submission order.
//! Work is placed eagerly whenever capacity or work appears, and the scheduler keeps one
//! invariant between calls: no pending chunk fits any node with a free position (except a retry
//! held back for a node it has not failed on yet, see [`Action::Assign`]).

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::{self, Write as _};
use std::ops::Bound;
use std::time::{Duration, Instant};

use common::proto::{
    AttemptFailure, AttemptId, ChunkFailure, ChunkIndex, JobFailure, JobId, JobProgress,
};
use common::units::format_size;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Attempts queued on a node per slot beyond the one running in it, so a fast payload never
    /// waits a round trip for its next chunk. A node holds at most `slots * (1 + pipeline_depth)`
    /// attempts. Default 2.
    pub pipeline_depth: u32,
    /// How long a node may stay silent (no heartbeat, join counts as one) before it is dropped
    /// and its attempts requeued. Nodes heartbeat every second. Default 5 s.
    pub node_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { pipeline_depth: 2, node_timeout: Duration::from_secs(5) }
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
}

/// What the scheduler needs to know about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequirements {
    /// Memory one attempt may use, in bytes; placement keeps the sum of running attempts'
    /// limits within a node's available memory.
    pub memory_limit: u64,
    /// Failed attempts one chunk may use up before the job fails; 0 counts as 1.
    pub max_attempts: u32,
    /// Higher is served first; equal priorities are served in submission order.
    pub priority: i32,
    /// How long the job may sit with pending chunks, nothing in flight and no node that could
    /// ever take it before it fails with [`JobFailure::NoEligibleNode`].
    pub placement_timeout: Duration,
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
    },
    /// Tell the node to stop the attempt and report nothing for it. The scheduler has already
    /// freed its pipeline position; a report that still arrives is discarded.
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
    /// Input is complete and every chunk has an accepted result. Emitted after the job's
    /// [`Action::EndJob`]s; the scheduler then forgets the job.
    JobSucceeded {
        /// The job.
        job: JobId,
    },
    /// The job failed. Emitted after [`Action::CancelAttempt`] for each of its in-flight
    /// attempts and its [`Action::EndJob`]s; the scheduler then forgets the job.
    JobFailed {
        /// The job.
        job: JobId,
        /// Why, with every failed attempt of the culprit chunk.
        failure: JobFailure,
    },
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
    /// Nodes with at least one free pipeline position, keyed so that iterating in reverse gives
    /// the node with the most free positions first (the oldest node among equals).
    free: BTreeSet<(u32, Reverse<NodeId>)>,
    /// Jobs with pending chunks, in service order.
    pending: BTreeMap<JobKey, JobId>,
    /// Heartbeat deadlines and placement clocks, soonest first.
    timers: BTreeSet<(Instant, Timer)>,
    actions: VecDeque<Action>,
    next_attempt: u64,
    next_seq: u64,
}

impl Scheduler {
    /// Creates a scheduler with no nodes and no jobs.
    pub fn new(config: SchedulerConfig) -> Self {
        Self {
            config,
            nodes: HashMap::new(),
            jobs: HashMap::new(),
            attempts: HashMap::new(),
            free: BTreeSet::new(),
            pending: BTreeMap::new(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            next_attempt: 1,
            next_seq: 0,
        }
    }

    /// A node registered; it counts as having just sent a heartbeat. Pending work is placed on
    /// it at once. A `node` id that is already connected is ignored.
    pub fn handle_node_joined(&mut self, now: Instant, node: NodeId, resources: NodeResources) {
        if self.nodes.contains_key(&node) {
            return;
        }
        let capacity = resources.slots.saturating_mul(self.config.pipeline_depth.saturating_add(1));
        let deadline = now + self.config.node_timeout;
        self.timers.insert((deadline, Timer::Heartbeat(node)));
        if capacity > 0 {
            self.free.insert((capacity, Reverse(node)));
        }
        let new = Node {
            name: resources.name,
            slots: resources.slots,
            capacity,
            memory_total: resources.memory_total,
            memory_available: resources.memory_available,
            deadline,
            in_flight: 0,
            in_flight_memory: 0,
            attempts: HashSet::new(),
            jobs: HashMap::new(),
        };
        self.nodes.insert(node, new);
        self.fill_node(node);
        // A new node can only end placement clocks: jobs it could run are no longer stuck.
        let Some(joined) = self.nodes.get(&node) else { return };
        let unstuck: Vec<JobId> = self
            .pending
            .values()
            .filter(|&&id| {
                self.jobs.get(&id).is_some_and(|job| {
                    job.placement_deadline.is_some()
                        && joined.can_ever_run(id, job.req.memory_limit)
                })
            })
            .copied()
            .collect();
        for job in unstuck {
            self.refresh_clock(now, job);
        }
    }

    /// A node's heartbeat: pushes its deadline back and records its available memory, which
    /// may let it take more work. Unknown nodes are ignored.
    pub fn handle_heartbeat(&mut self, now: Instant, node: NodeId, memory_available: u64) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        self.timers.remove(&(n.deadline, Timer::Heartbeat(node)));
        n.deadline = now + self.config.node_timeout;
        self.timers.insert((n.deadline, Timer::Heartbeat(node)));
        let old_memory = std::mem::replace(&mut n.memory_available, memory_available);
        if old_memory == memory_available {
            // Nothing changed for placement.
            return;
        }
        // A job whose eligibility on this node flipped may have a retry held back for this
        // node that must now go elsewhere, and its placement clock may need to start or stop.
        let n = &self.nodes[&node];
        let flipped: Vec<JobId> = self
            .pending
            .values()
            .filter(|&&id| {
                self.jobs.get(&id).is_some_and(|job| {
                    let limit = job.req.memory_limit;
                    n.capacity > 0
                        && !n.rejected(id)
                        && (limit <= old_memory) != (limit <= memory_available)
                })
            })
            .copied()
            .collect();
        self.fill_node(node);
        for job in flipped {
            self.fill_job(job);
            self.refresh_clock(now, job);
        }
    }

    /// The node's connection closed (or the driver gave up on it): its attempts are requeued
    /// without counting as failed attempts. Unknown or already dropped nodes are ignored.
    pub fn handle_node_lost(&mut self, now: Instant, node: NodeId) {
        self.lose_node(now, node);
    }

    /// A new job; its chunks arrive with [`Scheduler::handle_chunks_added`]. A `job` id that is
    /// already known is ignored.
    pub fn handle_job_submitted(&mut self, _now: Instant, job: JobId, req: JobRequirements) {
        if self.jobs.contains_key(&job) {
            return;
        }
        let key = (Reverse(req.priority), self.next_seq);
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
                retries: 0,
                failures: HashMap::new(),
                started_on: HashSet::new(),
                rejected_live: 0,
                last_rejection: None,
                placement_deadline: None,
                in_pending: false,
            },
        );
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
        self.fill_job(job);
        self.refresh_clock(now, job);
    }

    /// No more chunks will be added; a job whose chunks all succeeded (or that has none)
    /// succeeds now.
    pub fn handle_input_complete(&mut self, _now: Instant, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        j.input_complete = true;
        if j.is_finished() {
            self.end_job(job, Some(Verdict::Succeeded));
        }
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
            if let Some(a) = self.release_attempt(attempt) {
                self.requeue(a.job, a.chunk);
            }
        }
        let everyone_rejected =
            self.jobs.get(&job).is_some_and(|j| j.rejected_live >= self.nodes.len());
        if everyone_rejected {
            // This also offers the node's freed positions to other jobs.
            self.end_job(job, Some(Verdict::Failed(JobFailure::Rejected { error })));
            return;
        }
        self.fill_node(node);
        self.fill_job(job);
        self.refresh_clock(now, job);
    }

    /// A node reports a result. Returns `Some((job, chunk))` when the result is accepted: the
    /// attempt is live and was placed on this node, so this is the chunk's only result. Returns
    /// `None` when it must be discarded (unknown, requeued or cancelled attempt, ended job,
    /// another node's attempt).
    ///
    /// The caller must store an accepted result before acting on the actions this call queued:
    /// they may include the job's [`Action::JobSucceeded`].
    pub fn handle_chunk_succeeded(
        &mut self,
        now: Instant,
        node: NodeId,
        attempt: AttemptId,
    ) -> Option<(JobId, ChunkIndex)> {
        if self.attempts.get(&attempt)?.node != node {
            return None;
        }
        let a = self.release_attempt(attempt)?;
        // Invariant: attempts only exist for live jobs; end_job releases them.
        let job = self.jobs.get_mut(&a.job)?;
        job.done += 1;
        if !job.failures.is_empty() {
            job.failures.remove(&a.chunk);
        }
        if job.is_finished() {
            // This also offers the node's freed position to other jobs.
            self.end_job(a.job, Some(Verdict::Succeeded));
        } else {
            self.fill_node(node);
            self.refresh_clock(now, a.job);
        }
        Some((a.job, a.chunk))
    }

    /// A node reports a failed attempt. A retryable failure requeues the chunk under a new
    /// attempt, away from the nodes it failed on when possible; a non-retryable one, or the
    /// `max_attempts`-th, fails the job with [`JobFailure::Chunk`]. Reports to discard (see
    /// [`Scheduler::handle_chunk_succeeded`]) are ignored.
    pub fn handle_chunk_failed(
        &mut self,
        now: Instant,
        node: NodeId,
        attempt: AttemptId,
        failure: ChunkFailure,
    ) {
        if self.attempts.get(&attempt).is_none_or(|a| a.node != node) {
            return;
        }
        let Some(a) = self.release_attempt(attempt) else { return };
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
            self.end_job(a.job, Some(Verdict::Failed(failure)));
            return;
        }
        job.retries += 1;
        self.requeue(a.job, a.chunk);
        // The freed position goes by priority first; then the retry looks for another node.
        self.fill_node(node);
        self.fill_job(a.job);
        self.refresh_clock(now, a.job);
    }

    /// The job is cancelled: its in-flight attempts are cancelled, its nodes get
    /// [`Action::EndJob`], and nothing more is emitted for it (no verdict). Later reports for
    /// it are discarded. Unknown jobs are ignored.
    pub fn handle_cancel(&mut self, _now: Instant, job: JobId) {
        self.end_job(job, None);
    }

    /// Fires every deadline at or before `now`: silent nodes are dropped ([`Action::DropNode`])
    /// and their attempts requeued, and jobs whose placement clock ran out fail with
    /// [`JobFailure::NoEligibleNode`]. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, timer));
            match timer {
                Timer::Heartbeat(node) => {
                    let reason = format!("no heartbeat for {:?}", self.config.node_timeout);
                    self.actions.push_back(Action::DropNode { node, reason });
                    self.lose_node(now, node);
                }
                Timer::Placement(job) => {
                    let Some(j) = self.jobs.get_mut(&job) else { continue };
                    j.placement_deadline = None;
                    // Re-check defensively; the clock should have been stopped otherwise.
                    let j = &self.jobs[&job];
                    if j.has_pending() && j.in_flight == 0 && !self.any_eligible(job, j) {
                        let reason = self.no_eligible_reason(job, j);
                        let failure = JobFailure::NoEligibleNode { reason };
                        self.end_job(job, Some(Verdict::Failed(failure)));
                    } else {
                        self.refresh_clock(now, job);
                    }
                }
            }
        }
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
    /// forgets them once it emits their verdict or they are cancelled).
    pub fn progress(&self, job: JobId) -> Option<JobProgress> {
        let j = self.jobs.get(&job)?;
        Some(JobProgress {
            done: j.done,
            total: j.total,
            input_complete: j.input_complete,
            running: j.in_flight,
            retries: j.retries,
        })
    }
}

/// Service order of a job: higher priority first, then submission order.
type JobKey = (Reverse<i32>, u64);

/// Something with a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The node must heartbeat by then.
    Heartbeat(NodeId),
    /// The job has been unplaceable since `placement_timeout` before then.
    Placement(JobId),
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

/// How far into a job's requeue a node looks for a chunk that did not fail on it.
const REQUEUE_SCAN: usize = 16;

#[derive(Debug)]
struct Node {
    name: String,
    slots: u32,
    /// `slots * (1 + pipeline_depth)`: the most attempts the node holds.
    capacity: u32,
    memory_total: u64,
    /// From the last heartbeat.
    memory_available: u64,
    /// Last heartbeat plus `node_timeout`, as registered in `Scheduler::timers`.
    deadline: Instant,
    /// `attempts.len()`, kept as a number because it keys `Scheduler::free`.
    in_flight: u32,
    /// Sum of the memory limits of `attempts`.
    in_flight_memory: u64,
    attempts: HashSet<AttemptId>,
    /// Jobs the node got `StartJob` for, until they end.
    jobs: HashMap<JobId, NodeJob>,
}

impl Node {
    fn rejected(&self, job: JobId) -> bool {
        matches!(self.jobs.get(&job), Some(NodeJob::Rejected))
    }

    /// Whether one more attempt of the job may be placed here now.
    fn fits(&self, job: JobId, memory: u64) -> bool {
        if self.in_flight >= self.capacity || self.rejected(job) {
            return false;
        }
        if self.in_flight < self.slots {
            // The attempt would start at once, next to all the others.
            self.in_flight_memory.saturating_add(memory) <= self.memory_available
        } else {
            // The attempt waits for a running one to finish, whose memory it then takes.
            memory <= self.memory_available
        }
    }

    /// Whether the job could run here once the node has room: what "eligible" means.
    fn can_ever_run(&self, job: JobId, memory: u64) -> bool {
        self.capacity > 0 && !self.rejected(job) && memory <= self.memory_available
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
    key: JobKey,
    /// Chunks known so far; fresh chunks are `next_fresh..total`.
    total: u64,
    next_fresh: ChunkIndex,
    input_complete: bool,
    /// Chunks with an accepted result.
    done: u64,
    /// Chunks to place again (failed, or on a lost or rejecting node), served before fresh ones.
    requeued: VecDeque<ChunkIndex>,
    in_flight: u64,
    retries: u64,
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
}

#[derive(Debug)]
struct FailedAttempt {
    node: NodeId,
    report: AttemptFailure,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    job: JobId,
    chunk: ChunkIndex,
    node: NodeId,
    /// The job's memory limit, charged to the node while the attempt is in flight.
    memory: u64,
}

/// Sets a node's in-flight count, keeping its entry in the free-position index in step.
fn set_in_flight(free: &mut BTreeSet<(u32, Reverse<NodeId>)>, id: NodeId, node: &mut Node, n: u32) {
    let old_free = node.capacity.saturating_sub(node.in_flight);
    if old_free > 0 {
        free.remove(&(old_free, Reverse(id)));
    }
    node.in_flight = n;
    let new_free = node.capacity.saturating_sub(n);
    if new_free > 0 {
        free.insert((new_free, Reverse(id)));
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

impl Scheduler {
    /// Gives the node's free positions to pending jobs in service order.
    fn fill_node(&mut self, node: NodeId) {
        let mut cursor = None;
        loop {
            match self.nodes.get(&node) {
                Some(n) if n.in_flight < n.capacity => {}
                _ => return,
            }
            let Some((key, job)) = self.next_pending(cursor) else { return };
            cursor = Some(key);
            while let Some(pick) = self.choose(job, node) {
                if self.assign(job, node, pick) {
                    // Jobs passed over for want of memory may fit a queued position now.
                    cursor = None;
                }
            }
        }
    }

    /// Places the job's pending chunks, each on the fitting node with the most free positions.
    fn fill_job(&mut self, job: JobId) {
        let mut crossed = Vec::new();
        while self.jobs.get(&job).is_some_and(Job::has_pending) {
            let chosen = self
                .free
                .iter()
                .rev()
                .find_map(|&(_, Reverse(node))| Some((node, self.choose(job, node)?)));
            let Some((node, pick)) = chosen else { break };
            if self.assign(job, node, pick) {
                crossed.push(node);
            }
        }
        // Nodes whose running positions filled up may now take jobs they lacked memory for.
        for node in crossed {
            self.fill_node(node);
        }
    }

    /// Runs [`Scheduler::fill_job`] for every job with pending chunks, in service order.
    fn fill_all(&mut self) {
        let mut cursor = None;
        while let Some((key, job)) = self.next_pending(cursor) {
            cursor = Some(key);
            self.fill_job(job);
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
        if !self.nodes.get(&node)?.fits(job, j.req.memory_limit) {
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
        self.nodes
            .iter()
            .any(|(&id, n)| !j.failed_on(chunk, id) && n.can_ever_run(job, j.req.memory_limit))
    }

    fn any_eligible(&self, job: JobId, j: &Job) -> bool {
        self.nodes.values().any(|n| n.can_ever_run(job, j.req.memory_limit))
    }

    /// Creates an attempt for a chosen chunk, starting the job on the node first if needed.
    ///
    /// Returns whether this filled the node's last running position while queued positions
    /// remain: from then on a job only needs its own memory limit to fit (see `Node::fits`), so
    /// jobs skipped for want of memory must be offered the node again.
    fn assign(&mut self, job: JobId, node: NodeId, pick: Pick) -> bool {
        let (Some(j), Some(n)) = (self.jobs.get_mut(&job), self.nodes.get_mut(&node)) else {
            return false;
        };
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
        j.in_flight += 1;
        if let Some(at) = j.placement_deadline.take() {
            self.timers.remove(&(at, Timer::Placement(job)));
        }
        if let Entry::Vacant(entry) = n.jobs.entry(job) {
            entry.insert(NodeJob::Started);
            j.started_on.insert(node);
            self.actions.push_back(Action::StartJob { node, job });
        }
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        let memory = j.req.memory_limit;
        n.attempts.insert(attempt);
        n.in_flight_memory = n.in_flight_memory.saturating_add(memory);
        set_in_flight(&mut self.free, node, n, n.in_flight + 1);
        self.attempts.insert(attempt, Attempt { job, chunk, node, memory });
        self.actions.push_back(Action::Assign { node, job, chunk, attempt });
        let crossed = n.in_flight == n.slots && n.in_flight < n.capacity;
        self.sync_pending(job);
        crossed
    }

    /// Forgets a live attempt and frees its node position and job count.
    fn release_attempt(&mut self, attempt: AttemptId) -> Option<Attempt> {
        let a = self.attempts.remove(&attempt)?;
        if let Some(n) = self.nodes.get_mut(&a.node) {
            n.attempts.remove(&attempt);
            n.in_flight_memory = n.in_flight_memory.saturating_sub(a.memory);
            set_in_flight(&mut self.free, a.node, n, n.in_flight.saturating_sub(1));
        }
        if let Some(j) = self.jobs.get_mut(&a.job) {
            j.in_flight = j.in_flight.saturating_sub(1);
        }
        Some(a)
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

    /// Removes a node, requeues its attempts and re-places work; the common part of a closed
    /// connection and a heartbeat timeout.
    fn lose_node(&mut self, now: Instant, node: NodeId) {
        let Some(n) = self.nodes.remove(&node) else { return };
        self.timers.remove(&(n.deadline, Timer::Heartbeat(node)));
        let free = n.capacity.saturating_sub(n.in_flight);
        if free > 0 {
            self.free.remove(&(free, Reverse(node)));
        }
        let mut requeue: Vec<(JobId, ChunkIndex)> = n
            .attempts
            .iter()
            .filter_map(|a| self.attempts.remove(a))
            .map(|a| (a.job, a.chunk))
            .collect();
        requeue.sort_unstable();
        for (job, chunk) in requeue {
            if let Some(j) = self.jobs.get_mut(&job) {
                j.in_flight = j.in_flight.saturating_sub(1);
            }
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
            self.end_job(job, Some(Verdict::Failed(JobFailure::Rejected { error })));
        }
        self.fill_all();
        let waiting: Vec<JobId> = self.pending.values().copied().collect();
        for job in waiting {
            self.refresh_clock(now, job);
        }
    }

    /// Ends a job: cancels its attempts, sends `EndJob` to its nodes, emits the verdict (none
    /// for a cancellation), forgets the job and gives the freed positions to other jobs.
    fn end_job(&mut self, job: JobId, verdict: Option<Verdict>) {
        let Some(mut j) = self.jobs.remove(&job) else { return };
        if j.in_pending {
            self.pending.remove(&j.key);
        }
        if let Some(at) = j.placement_deadline {
            self.timers.remove(&(at, Timer::Placement(job)));
        }
        let mut nodes: Vec<NodeId> = j.started_on.drain().collect();
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
            if let Some(a) = self.release_attempt(attempt) {
                self.actions.push_back(Action::CancelAttempt { node: a.node, attempt });
            }
        }
        for &node in &nodes {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.jobs.remove(&job);
            }
            self.actions.push_back(Action::EndJob { node, job });
        }
        match verdict {
            Some(Verdict::Succeeded) => self.actions.push_back(Action::JobSucceeded { job }),
            Some(Verdict::Failed(failure)) => {
                self.actions.push_back(Action::JobFailed { job, failure })
            }
            None => {}
        }
        for node in nodes {
            self.fill_node(node);
        }
    }

    /// Explains why no node is eligible, e.g. "2 connected, 2 lack 4.0 GiB free memory, 0
    /// eligible".
    fn no_eligible_reason(&self, job: JobId, j: &Job) -> String {
        if self.nodes.is_empty() {
            return "0 nodes connected".to_owned();
        }
        let limit = j.req.memory_limit;
        let (mut rejected, mut no_slots, mut small, mut lack, mut eligible) = (0, 0, 0, 0, 0);
        for n in self.nodes.values() {
            if n.rejected(job) {
                rejected += 1;
            } else if n.capacity == 0 {
                no_slots += 1;
            } else if limit <= n.memory_available {
                eligible += 1;
            } else if n.memory_total < limit {
                small += 1;
            } else {
                lack += 1;
            }
        }
        let size = format_size(limit);
        let mut reason = format!("{} connected", self.nodes.len());
        // Writing to a String cannot fail.
        if rejected > 0 {
            let _ = write!(reason, ", {rejected} rejected the job");
            if let Some(error) = &j.last_rejection {
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
        if lack > 0 {
            let _ = write!(reason, ", {lack} {} {size} free memory", verb(lack, "lacks", "lack"));
        }
        let _ = write!(reason, ", {eligible} eligible");
        reason
    }

    /// Panics if the scheduler's redundant bookkeeping disagrees with itself.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut job_in_flight: HashMap<JobId, u64> = HashMap::new();
        for (id, a) in &self.attempts {
            let n = &self.nodes[&a.node];
            assert!(n.attempts.contains(id), "attempt {id} missing from node {}", a.node);
            assert!(self.jobs.contains_key(&a.job), "attempt {id} of ended job {}", a.job);
            assert!(n.jobs.contains_key(&a.job), "attempt {id} on node without StartJob");
            *job_in_flight.entry(a.job).or_default() += 1;
        }
        for (id, n) in &self.nodes {
            assert_eq!(n.in_flight as usize, n.attempts.len(), "node {id} in_flight");
            assert!(n.in_flight <= n.capacity, "node {id} over capacity");
            let memory: u64 = n.attempts.iter().map(|a| self.attempts[a].memory).sum();
            assert_eq!(n.in_flight_memory, memory, "node {id} in_flight_memory");
            let free = n.capacity - n.in_flight;
            assert_eq!(self.free.contains(&(free, Reverse(*id))), free > 0, "node {id} free");
            assert!(self.timers.contains(&(n.deadline, Timer::Heartbeat(*id))));
            for job in n.jobs.keys() {
                let j = &self.jobs[job];
                assert!(j.started_on.contains(id), "node {id} job {job} not in started_on");
            }
        }
        let free_entries = self.free.len();
        let nodes_with_room = self.nodes.values().filter(|n| n.in_flight < n.capacity).count();
        assert_eq!(free_entries, nodes_with_room, "stale free entries");
        let mut clocks = 0;
        for (id, j) in &self.jobs {
            assert_eq!(j.in_flight, job_in_flight.get(id).copied().unwrap_or(0), "job {id}");
            assert_eq!(j.in_pending, j.has_pending(), "job {id} in_pending");
            assert_eq!(self.pending.get(&j.key) == Some(id), j.in_pending, "job {id} pending");
            assert!(j.next_fresh <= j.total);
            assert!(
                j.done + j.in_flight + j.requeued.len() as u64 + (j.total - j.next_fresh)
                    == j.total,
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
                assert!(j.has_pending() && j.in_flight == 0, "job {id} clock while placeable");
            }
        }
        assert_eq!(self.pending.len(), self.jobs.values().filter(|j| j.in_pending).count());
        // Eager placement: no pending chunk fits a node with a free position.
        for &job in self.pending.values() {
            for &(_, Reverse(node)) in &self.free {
                let pick = self.choose(job, node);
                assert!(pick.is_none(), "job {job} could place {pick:?} on idle node {node}");
            }
        }
        assert_eq!(self.timers.len(), self.nodes.len() + clocks, "stale timers");
    }

    /// Whether the scheduler has forgotten every job and attempt.
    #[cfg(test)]
    fn is_empty_of_jobs(&self) -> bool {
        self.jobs.is_empty() && self.attempts.is_empty() && self.pending.is_empty()
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
