//! A virtual-time harness for scheduler tests, after quinn-proto's `Pair`: a [`Sim`] holds a
//! [`Scheduler`] and fake nodes that compile jobs and run assigned chunks, routes every action to
//! them (with every notice, in the order the scheduler emitted them), checks the scheduler's
//! promises on the way (capacity, exactly-once results, silence after cancel, no messages to
//! dropped nodes, no new work for drained, quarantined or suspect nodes, at most one speculative
//! copy per chunk) and jumps virtual time to the next event.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use wire::proto::{AttemptId, ChunkFailure, ChunkIndex, FailureKind, JobFailure, JobId};

use super::{Action, JobRequirements, NodeId, NodeResources, Notice, Scheduler, SchedulerConfig};

/// One gibibyte.
pub(super) const GIB: u64 = 1 << 30;

/// How often fake nodes heartbeat, as real nodes do.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(1);

/// Requirements used unless a test says otherwise: 1 GiB, 3 attempts, priority 0, 30 s, any
/// platform, tenant "alice".
pub(super) fn req() -> JobRequirements {
    JobRequirements {
        memory_limit: GIB,
        max_attempts: 3,
        priority: 0,
        placement_timeout: Some(Duration::from_secs(30)),
        platform: None,
        tenant: "alice".to_owned(),
        paired: false,
    }
}

/// A failure of `kind` with a short lowercase message, as a node would report it.
pub(super) fn failure(kind: FailureKind) -> ChunkFailure {
    let message = match &kind {
        FailureKind::PayloadError(code) => format!("payload error {code}"),
        FailureKind::Trap => "trap".to_owned(),
        FailureKind::Crash => "worker crashed".to_owned(),
        FailureKind::Timeout => "chunk timed out".to_owned(),
        FailureKind::MemoryLimit => "memory limit exceeded".to_owned(),
        FailureKind::Setup => "setup failed".to_owned(),
        FailureKind::Node => "node error".to_owned(),
    };
    ChunkFailure { kind, message }
}

/// Something the scheduler emitted: a command or a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Output {
    /// A command for the driver.
    Action(Action),
    /// Something for the driver to report.
    Notice(Notice),
}

impl Scheduler {
    /// The next action or notice, whichever the scheduler emitted first; `None` once both
    /// queues are empty.
    pub(super) fn poll_output(&mut self) -> Option<Output> {
        let action = self.out.actions.front().map(|&(n, _)| n);
        let notice = self.out.notices.front().map(|&(n, _)| n);
        match (action, notice) {
            (Some(a), Some(n)) if n < a => self.poll_notice().map(Output::Notice),
            (Some(_), _) => self.poll_action().map(Output::Action),
            (None, _) => self.poll_notice().map(Output::Notice),
        }
    }
}

/// One action or notice as a line of text, for trace comparisons.
pub(super) fn render(output: &Output) -> String {
    match output {
        Output::Action(action) => render_action(action),
        Output::Notice(Notice::NodeSuspect { node, silent }) => {
            format!("suspect n{node}: silent {silent:?}")
        }
        Output::Notice(Notice::NodeRecovered { node }) => format!("recovered n{node}"),
        Output::Notice(Notice::NodeQuarantined { node, reason }) => {
            format!("quarantined n{node}: {reason}")
        }
    }
}

fn render_action(action: &Action) -> String {
    match action {
        Action::StartJob { node, job } => format!("start-job n{node} j{job}"),
        Action::Assign { node, job, chunk, attempt, speculative: false } => {
            format!("assign n{node} j{job} c{chunk} a{attempt}")
        }
        Action::Assign { node, job, chunk, attempt, speculative: true } => {
            format!("copy n{node} j{job} c{chunk} a{attempt}")
        }
        Action::CancelAttempt { node, attempt } => format!("cancel n{node} a{attempt}"),
        Action::EndJob { node, job } => format!("end-job n{node} j{job}"),
        Action::DropNode { node, reason } => format!("drop n{node}: {reason}"),
        Action::JobSucceeded { job, .. } => format!("succeeded j{job}"),
        Action::JobFailed { job, failure, .. } => format!("failed j{job}: {failure}"),
    }
}

/// How a fake node behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Behavior {
    /// Runs every chunk successfully (unless the sim's fail plan says otherwise).
    Healthy,
    /// Fails every chunk with this kind.
    Failing(FailureKind),
    /// Rejects every job with this error.
    Rejecting(String),
    /// Stops answering anything, heartbeats included, as a frozen machine would.
    Frozen,
}

/// A fake node to add to the sim.
#[derive(Debug, Clone)]
pub(super) struct NodeSpec {
    pub(super) slots: u32,
    pub(super) memory_total: u64,
    pub(super) memory_available: u64,
    pub(super) behavior: Behavior,
    pub(super) os: &'static str,
    pub(super) arch: &'static str,
    /// How many times the sim's `run_time` a chunk takes here.
    pub(super) slowdown: u32,
}

impl NodeSpec {
    /// A healthy linux/x86_64 node with 16 GiB, all of it available, running at normal speed.
    pub(super) fn new(slots: u32) -> Self {
        Self {
            slots,
            memory_total: 16 * GIB,
            memory_available: 16 * GIB,
            behavior: Behavior::Healthy,
            os: "linux",
            arch: "x86_64",
            slowdown: 1,
        }
    }
}

/// The outcome of a job as the sim saw it.
pub(super) type Outcome = Result<(), JobFailure>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Heartbeat(NodeId),
    Compiled(NodeId, JobId),
    Finished(NodeId, AttemptId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FakeJob {
    Compiling,
    Ready,
    Rejected,
}

#[derive(Debug)]
struct FakeNode {
    spec: NodeSpec,
    jobs: HashMap<JobId, FakeJob>,
    /// Every attempt the node holds, queued or running.
    attempts: HashMap<AttemptId, (JobId, ChunkIndex)>,
    queue: VecDeque<AttemptId>,
    running: HashSet<AttemptId>,
    /// Every chunk assigned to the node, in order.
    assigned: Vec<(JobId, ChunkIndex)>,
}

#[derive(Debug, Default)]
struct SimJob {
    total: u64,
    input_complete: bool,
}

/// The scheduler plus a fake cluster in virtual time.
#[derive(Debug)]
pub(super) struct Sim {
    pub(super) sched: Scheduler,
    pub(super) now: Instant,
    start: Instant,
    config: SchedulerConfig,
    /// How long a chunk runs once started.
    pub(super) run_time: Duration,
    /// How long a node takes to answer `StartJob`.
    pub(super) compile_time: Duration,
    /// Whether to check the scheduler's internal invariants after every call (slow for big runs).
    pub(super) check_invariants: bool,
    /// Connected nodes; a dropped or killed node is removed.
    nodes: BTreeMap<NodeId, FakeNode>,
    /// Nodes the scheduler dropped or the sim killed: no action may name them again.
    gone: HashSet<NodeId>,
    /// Nodes drained or quarantined and not undrained since: no `Assign` may name them.
    closed: HashSet<NodeId>,
    /// Nodes the scheduler called suspect and not recovered since: no `Assign` may name them.
    suspect: HashSet<NodeId>,
    jobs: BTreeMap<JobId, SimJob>,
    outcomes: BTreeMap<JobId, Outcome>,
    cancelled: HashSet<JobId>,
    accepted: HashMap<(JobId, ChunkIndex), u32>,
    attempt_jobs: HashMap<AttemptId, JobId>,
    fail_plan: HashMap<(JobId, ChunkIndex), VecDeque<FailureKind>>,
    events: BinaryHeap<Reverse<(Instant, u64, Event)>>,
    seq: u64,
    next_node: u64,
    next_job: u64,
    /// When each job's first attempt started running on a node.
    first_started: HashMap<JobId, Instant>,
    /// Every action and notice emitted, with its virtual time since the start.
    log: Vec<(Duration, Output)>,
    traced: usize,
}

impl Sim {
    /// A sim with the default configuration.
    pub(super) fn new() -> Self {
        Self::with_config(SchedulerConfig::default())
    }

    pub(super) fn with_config(config: SchedulerConfig) -> Self {
        let start = Instant::now();
        Self {
            sched: Scheduler::new(config.clone()),
            now: start,
            start,
            config,
            run_time: Duration::from_millis(10),
            compile_time: Duration::from_millis(1),
            check_invariants: true,
            nodes: BTreeMap::new(),
            gone: HashSet::new(),
            closed: HashSet::new(),
            suspect: HashSet::new(),
            jobs: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            cancelled: HashSet::new(),
            accepted: HashMap::new(),
            attempt_jobs: HashMap::new(),
            fail_plan: HashMap::new(),
            events: BinaryHeap::new(),
            seq: 0,
            next_node: 1,
            next_job: 1,
            first_started: HashMap::new(),
            log: Vec::new(),
            traced: 0,
        }
    }

    /// Adds a healthy node with `slots` slots and 16 GiB.
    pub(super) fn add_node(&mut self, slots: u32) -> NodeId {
        self.add_node_with(NodeSpec::new(slots))
    }

    pub(super) fn add_node_with(&mut self, spec: NodeSpec) -> NodeId {
        let id = NodeId(self.next_node);
        self.next_node += 1;
        let resources = NodeResources {
            name: format!("n{id}"),
            slots: spec.slots,
            memory_total: spec.memory_total,
            memory_available: spec.memory_available,
            os: spec.os.to_owned(),
            arch: spec.arch.to_owned(),
        };
        self.nodes.insert(
            id,
            FakeNode {
                spec,
                jobs: HashMap::new(),
                attempts: HashMap::new(),
                queue: VecDeque::new(),
                running: HashSet::new(),
                assigned: Vec::new(),
            },
        );
        self.schedule(self.now + HEARTBEAT, Event::Heartbeat(id));
        self.sched.handle_node_joined(self.now, id, resources);
        self.flush();
        id
    }

    /// The node's connection closes.
    pub(super) fn kill(&mut self, node: NodeId) {
        self.disconnect(node);
        self.sched.handle_node_lost(self.now, node);
        self.flush();
    }

    /// A frozen node comes back to life: it heartbeats again and finishes what it was running.
    pub(super) fn thaw(&mut self, node: NodeId) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&node) else { return };
        if n.spec.behavior != Behavior::Frozen {
            return;
        }
        n.spec.behavior = Behavior::Healthy;
        let run_time = self.run_time * n.spec.slowdown;
        let mut running: Vec<AttemptId> = n.running.iter().copied().collect();
        running.sort_unstable();
        let compiling: Vec<JobId> =
            n.jobs.iter().filter(|(_, s)| **s == FakeJob::Compiling).map(|(&j, _)| j).collect();
        self.schedule(now, Event::Heartbeat(node));
        for attempt in running {
            self.schedule(now + run_time, Event::Finished(node, attempt));
        }
        for job in compiling {
            self.schedule(now + self.compile_time, Event::Compiled(node, job));
        }
        self.try_start(node);
        self.flush();
    }

    /// An operator drains the node.
    pub(super) fn drain(&mut self, node: NodeId) {
        self.sched.handle_drain(self.now, node);
        if self.nodes.contains_key(&node) {
            self.closed.insert(node);
        }
        self.flush();
    }

    /// An operator undrains the node (or releases it from quarantine).
    pub(super) fn undrain(&mut self, node: NodeId) {
        self.sched.handle_undrain(self.now, node);
        self.closed.remove(&node);
        self.flush();
    }

    /// The node stops answering, heartbeats included.
    pub(super) fn freeze(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.spec.behavior = Behavior::Frozen;
        }
    }

    /// The node behaves like this from now on (a frozen node stays frozen).
    pub(super) fn set_behavior(&mut self, node: NodeId, behavior: Behavior) {
        if let Some(n) = self.nodes.get_mut(&node) {
            if n.spec.behavior != Behavior::Frozen {
                n.spec.behavior = behavior;
            }
        }
    }

    /// The node reports this much available memory from its next heartbeat on.
    pub(super) fn set_memory(&mut self, node: NodeId, available: u64) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.spec.memory_available = available;
        }
    }

    /// Connected nodes, oldest first.
    pub(super) fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Submits a job; its chunks come with [`Sim::add_chunks`].
    pub(super) fn submit(&mut self, req: JobRequirements) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        self.jobs.insert(id, SimJob::default());
        self.sched.handle_job_submitted(self.now, id, req);
        self.flush();
        id
    }

    /// Submits a job with `chunks` chunks and complete input.
    pub(super) fn submit_chunks(&mut self, req: JobRequirements, chunks: u64) -> JobId {
        let job = self.submit(req);
        self.add_chunks(job, chunks);
        self.complete_input(job);
        job
    }

    pub(super) fn add_chunks(&mut self, job: JobId, count: u64) {
        if let Some(j) = self.jobs.get_mut(&job) {
            if !j.input_complete {
                j.total += count;
            }
        }
        self.sched.handle_chunks_added(self.now, job, count);
        self.flush();
    }

    pub(super) fn complete_input(&mut self, job: JobId) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.input_complete = true;
        }
        self.sched.handle_input_complete(self.now, job);
        self.flush();
    }

    pub(super) fn cancel(&mut self, job: JobId) {
        self.sched.handle_cancel(self.now, job);
        self.flush();
        if !self.outcomes.contains_key(&job) {
            self.cancelled.insert(job);
        }
    }

    /// The chunk's next attempts fail with these kinds, whichever node runs them.
    pub(super) fn fail_next(&mut self, job: JobId, chunk: ChunkIndex, kinds: &[FailureKind]) {
        self.fail_plan.entry((job, chunk)).or_default().extend(kinds.iter().cloned());
    }

    pub(super) fn outcome(&self, job: JobId) -> Option<&Outcome> {
        self.outcomes.get(&job)
    }

    /// Every job submitted so far.
    pub(super) fn job_ids(&self) -> Vec<JobId> {
        self.jobs.keys().copied().collect()
    }

    /// Attempts the node holds, queued or running.
    pub(super) fn in_flight(&self, node: NodeId) -> usize {
        self.nodes.get(&node).map_or(0, |n| n.attempts.len())
    }

    /// Every speculative copy assigned so far, as `(node, job, chunk)`.
    pub(super) fn copies(&self) -> Vec<(NodeId, JobId, ChunkIndex)> {
        let copy = |a: &Action| match *a {
            Action::Assign { node, job, chunk, speculative: true, .. } => Some((node, job, chunk)),
            _ => None,
        };
        self.actions().filter_map(copy).collect()
    }

    /// When the job's first attempt started running, if one did.
    pub(super) fn first_started(&self, job: JobId) -> Option<Instant> {
        self.first_started.get(&job).copied()
    }

    /// When the job's verdict was emitted, if it was.
    pub(super) fn ended_at(&self, job: JobId) -> Option<Instant> {
        self.log.iter().find_map(|(at, output)| match output {
            Output::Action(Action::JobSucceeded { job: j, .. } | Action::JobFailed { job: j, .. }) if *j == job => {
                Some(self.start + *at)
            }
            _ => None,
        })
    }

    /// Attempts the node is running.
    pub(super) fn running(&self, node: NodeId) -> usize {
        self.nodes.get(&node).map_or(0, |n| n.running.len())
    }

    /// Every chunk ever assigned to the node, in order.
    pub(super) fn assigned(&self, node: NodeId) -> Vec<(JobId, ChunkIndex)> {
        self.nodes.get(&node).map_or_else(Vec::new, |n| n.assigned.clone())
    }

    /// The actions and notices emitted since the last call, one per line as `[time] action`.
    pub(super) fn take_trace(&mut self) -> String {
        let mut out = String::new();
        for (at, output) in &self.log[self.traced..] {
            out.push_str(&format!("[{}ms] {}\n", at.as_millis(), render(output)));
        }
        self.traced = self.log.len();
        out
    }

    /// Every action emitted so far.
    pub(super) fn actions(&self) -> impl Iterator<Item = &Action> {
        self.log.iter().filter_map(|(_, output)| match output {
            Output::Action(action) => Some(action),
            Output::Notice(_) => None,
        })
    }

    /// Runs the cluster for `duration` of virtual time.
    pub(super) fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.step(until) {}
        self.now = until;
    }

    /// Runs until every job has succeeded, failed or been cancelled; panics after an hour.
    pub(super) fn drive(&mut self) {
        let done = self.drive_bounded(Duration::from_secs(3600));
        let unfinished: Vec<JobId> = self.unfinished().collect();
        assert!(done, "jobs {unfinished:?} still unfinished after an hour");
    }

    /// Runs until every job has ended or `limit` of virtual time has passed; returns whether
    /// every job ended.
    pub(super) fn drive_bounded(&mut self, limit: Duration) -> bool {
        let until = self.now + limit;
        loop {
            if self.unfinished().next().is_none() {
                return true;
            }
            if !self.step(until) {
                return false;
            }
        }
    }

    /// Checks that a successful job had every chunk accepted exactly once and that the
    /// scheduler forgot everything once all jobs ended.
    pub(super) fn check_final(&self) {
        for (job, outcome) in &self.outcomes {
            if outcome.is_ok() {
                let total = self.jobs[job].total;
                for chunk in 0..total {
                    let n = self.accepted.get(&(*job, chunk)).copied().unwrap_or(0);
                    assert_eq!(n, 1, "job {job} chunk {chunk} accepted {n} times");
                }
            }
        }
        if self.unfinished().next().is_none() {
            assert!(self.sched.is_empty_of_jobs(), "scheduler kept state of ended jobs");
            for (id, n) in &self.nodes {
                assert!(n.attempts.is_empty() && n.jobs.is_empty(), "node {id} kept work");
            }
        }
    }

    fn unfinished(&self) -> impl Iterator<Item = JobId> + '_ {
        self.jobs
            .keys()
            .copied()
            .filter(|j| !self.outcomes.contains_key(j) && !self.cancelled.contains(j))
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, event)));
    }

    /// Handles the next node event or scheduler timeout due by `until`; false if there is none.
    fn step(&mut self, until: Instant) -> bool {
        let next_event = self.events.peek().map(|Reverse((at, _, _))| *at);
        let next_timeout = self.sched.poll_timeout();
        let next = match (next_event, next_timeout) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(next) => next,
                None => return false,
            },
        };
        if next > until {
            return false;
        }
        self.now = self.now.max(next);
        if next_event.is_some_and(|at| at <= self.now) {
            if let Some(Reverse((_, _, event))) = self.events.pop() {
                self.fire(event);
            }
        } else {
            self.sched.handle_timeout(self.now);
            self.flush();
        }
        true
    }

    fn fire(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Heartbeat(id) => {
                let Some(n) = self.nodes.get(&id) else { return };
                if n.spec.behavior == Behavior::Frozen {
                    return;
                }
                let memory = n.spec.memory_available;
                self.schedule(now + HEARTBEAT, Event::Heartbeat(id));
                self.sched.handle_heartbeat(now, id, memory);
            }
            Event::Compiled(id, job) => {
                let Some(n) = self.nodes.get_mut(&id) else { return };
                if n.spec.behavior == Behavior::Frozen
                    || n.jobs.get(&job) != Some(&FakeJob::Compiling)
                {
                    return;
                }
                if let Behavior::Rejecting(error) = &n.spec.behavior {
                    let error = error.clone();
                    n.jobs.insert(job, FakeJob::Rejected);
                    // The node drops the job's assignments without reporting them.
                    n.attempts.retain(|_, (j, _)| *j != job);
                    let attempts = &n.attempts;
                    n.queue.retain(|a| attempts.contains_key(a));
                    self.sched.handle_job_rejected(now, id, job, error);
                } else {
                    n.jobs.insert(job, FakeJob::Ready);
                    self.sched.handle_job_ready(now, id, job);
                    self.try_start(id);
                }
            }
            Event::Finished(id, attempt) => {
                let Some(n) = self.nodes.get_mut(&id) else { return };
                if n.spec.behavior == Behavior::Frozen || !n.running.remove(&attempt) {
                    return;
                }
                let Some((job, chunk)) = n.attempts.remove(&attempt) else { return };
                let ran = self.run_time * n.spec.slowdown;
                let planned = self.fail_plan.get_mut(&(job, chunk)).and_then(|p| p.pop_front());
                let kind = match (planned, &n.spec.behavior) {
                    (Some(kind), _) => Some(kind),
                    (None, Behavior::Failing(kind)) => Some(kind.clone()),
                    _ => None,
                };
                self.try_start(id);
                match kind {
                    Some(kind) => self.sched.handle_chunk_failed(now, id, attempt, failure(kind)),
                    None => {
                        // As the core does: the node's measured run time first.
                        self.sched.handle_run_time(now, id, attempt, ran);
                        let accepted = self.sched.handle_chunk_succeeded(now, id, attempt);
                        // The scheduler never forgets an attempt without telling the node.
                        assert_eq!(accepted, Some((job, chunk)), "live attempt {attempt} refused");
                        let count = self.accepted.entry((job, chunk)).or_default();
                        *count += 1;
                        assert_eq!(*count, 1, "job {job} chunk {chunk} accepted twice");
                    }
                }
            }
        }
        self.flush();
    }

    /// Starts queued attempts of ready jobs while the node has idle slots.
    fn try_start(&mut self, id: NodeId) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&id) else { return };
        let run_time = self.run_time * n.spec.slowdown;
        if n.spec.behavior == Behavior::Frozen {
            return;
        }
        let mut started = Vec::new();
        while n.running.len() < n.spec.slots as usize {
            let ready = n.queue.iter().position(|a| {
                n.attempts.get(a).is_some_and(|(job, _)| n.jobs.get(job) == Some(&FakeJob::Ready))
            });
            let Some(attempt) = ready.and_then(|i| n.queue.remove(i)) else { break };
            n.running.insert(attempt);
            started.push((attempt, n.attempts.get(&attempt).map(|&(job, _)| job)));
        }
        for (attempt, job) in started {
            if let Some(job) = job {
                self.first_started.entry(job).or_insert(now);
            }
            self.schedule(now + run_time, Event::Finished(id, attempt));
        }
    }

    fn disconnect(&mut self, node: NodeId) {
        self.nodes.remove(&node);
        self.gone.insert(node);
        self.closed.remove(&node);
        self.suspect.remove(&node);
    }

    /// Routes every queued action and notice in the order they were emitted, then checks the
    /// scheduler's own bookkeeping.
    fn flush(&mut self) {
        let mut dropped = Vec::new();
        while let Some(output) = self.sched.poll_output() {
            match &output {
                Output::Action(action) => {
                    if let Action::DropNode { node, .. } = action {
                        dropped.push(*node);
                    }
                    self.route(action);
                }
                Output::Notice(notice) => self.note(notice),
            }
            self.log.push((self.now - self.start, output));
        }
        for node in dropped {
            // The driver closes the connection and reports it closed; that must be a no-op.
            self.sched.handle_node_lost(self.now, node);
            assert!(self.sched.poll_output().is_none(), "late loss of n{node} emitted actions");
        }
        if self.check_invariants {
            self.sched.check_invariants(self.now);
        }
    }

    fn node_mut(&mut self, node: NodeId, action: &dyn fmt::Debug) -> &mut FakeNode {
        assert!(!self.gone.contains(&node), "action for a node already gone: {action:?}");
        match self.nodes.get_mut(&node) {
            Some(n) => n,
            None => panic!("action for an unknown node: {action:?}"),
        }
    }

    /// Applies a notice to the sim's view of the node: a suspect or quarantined node may get no
    /// `Assign` until it recovers or is undrained.
    fn note(&mut self, notice: &Notice) {
        match notice {
            Notice::NodeSuspect { node, .. } => {
                self.node_mut(*node, notice);
                assert!(self.suspect.insert(*node), "{notice:?} twice");
            }
            Notice::NodeRecovered { node } => {
                self.node_mut(*node, notice);
                assert!(self.suspect.remove(node), "{notice:?} of a node not suspect");
            }
            Notice::NodeQuarantined { node, .. } => {
                self.node_mut(*node, notice);
                self.closed.insert(*node);
            }
        }
    }

    fn route(&mut self, action: &Action) {
        let job = match action {
            Action::StartJob { job, .. }
            | Action::Assign { job, .. }
            | Action::EndJob { job, .. }
            | Action::JobSucceeded { job, .. }
            | Action::JobFailed { job, .. } => Some(*job),
            Action::CancelAttempt { attempt, .. } => self.attempt_jobs.get(attempt).copied(),
            Action::DropNode { .. } => None,
        };
        if let Some(job) = job {
            assert!(!self.cancelled.contains(&job), "action for cancelled job: {action:?}");
            assert!(!self.outcomes.contains_key(&job), "action for ended job: {action:?}");
        }
        let capacity = self.config.pipeline_depth as usize + 1;
        let now = self.now;
        match action {
            Action::StartJob { node, job } => {
                let compile_time = self.compile_time;
                let n = self.node_mut(*node, action);
                assert!(n.jobs.insert(*job, FakeJob::Compiling).is_none(), "second {action:?}");
                self.schedule(now + compile_time, Event::Compiled(*node, *job));
            }
            Action::Assign { node, job, chunk, attempt, speculative } => {
                assert!(!self.closed.contains(node), "{action:?} to a drained or quarantined node");
                assert!(!self.suspect.contains(node), "{action:?} to a suspect node");
                // At most two live attempts of a chunk, and only as an original and its copy.
                let live: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.attempts.values().any(|&(j, c)| (j, c) == (*job, *chunk)))
                    .map(|(&id, _)| id)
                    .collect();
                match (speculative, &live[..]) {
                    (false, []) => {}
                    (true, [original]) => assert_ne!(original, node, "{action:?} on its own node"),
                    _ => panic!("{action:?} while the chunk is live on {live:?}"),
                }
                let n = self.node_mut(*node, action);
                assert!(n.jobs.contains_key(job), "{action:?} before StartJob");
                assert!(
                    n.attempts.len() < n.spec.slots as usize * capacity,
                    "{action:?} beyond the node's capacity"
                );
                if n.jobs.get(job) == Some(&FakeJob::Rejected) {
                    panic!("{action:?} to a node that rejected the job");
                }
                n.attempts.insert(*attempt, (*job, *chunk));
                n.queue.push_back(*attempt);
                n.assigned.push((*job, *chunk));
                self.attempt_jobs.insert(*attempt, *job);
                self.try_start(*node);
            }
            Action::CancelAttempt { node, attempt } => {
                let n = self.node_mut(*node, action);
                assert!(n.attempts.remove(attempt).is_some(), "{action:?} of an unknown attempt");
                n.queue.retain(|a| a != attempt);
                n.running.remove(attempt);
                self.try_start(*node);
            }
            Action::EndJob { node, job } => {
                let n = self.node_mut(*node, action);
                assert!(n.jobs.remove(job).is_some(), "{action:?} without StartJob");
                assert!(
                    n.attempts.values().all(|(j, _)| j != job),
                    "{action:?} while its attempts are in flight"
                );
            }
            Action::DropNode { node, .. } => {
                self.node_mut(*node, action);
                self.disconnect(*node);
            }
            Action::JobSucceeded { job, .. } => {
                let j = &self.jobs[job];
                assert!(j.input_complete, "{action:?} before input completed");
                for chunk in 0..j.total {
                    let n = self.accepted.get(&(*job, chunk)).copied().unwrap_or(0);
                    assert_eq!(n, 1, "{action:?} with chunk {chunk} accepted {n} times");
                }
                self.outcomes.insert(*job, Ok(()));
            }
            Action::JobFailed { job, failure, .. } => {
                self.outcomes.insert(*job, Err(failure.clone()));
            }
        }
    }
}
