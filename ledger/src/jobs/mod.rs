//! The job ledger: the dispatcher's decisions about jobs, nodes and clients as one sans-IO state
//! machine that owns the [`Scheduler`].
//!
//! Like quinn-proto's `Connection`, a [`Ledger`] owns no sockets, channels, files or clocks. The
//! driver (the dispatcher's core task) must:
//! - feed it every input through a `handle_*` method, passing the current [`Time`];
//! - end each turn (a burst of inputs) with [`Ledger::end_turn`], then drain
//!   [`Ledger::poll_effect`] and carry out every [`Effect`] in order;
//! - call [`Ledger::handle_timeout`] once [`Ledger::poll_timeout`] has passed;
//! - report what it did with effects that have an outcome: [`Ledger::handle_result_stored`] for
//!   [`Effect::StoreResult`], [`Ledger::handle_committed`] or [`Ledger::handle_commit_failed`]
//!   for [`Effect::Commit`].
//!
//! It keeps one registry of jobs and nodes, the attachments and each one's next result, and the
//! promise ledger: an acknowledgement, `InputStored` or answer is released only with the commit
//! that makes what it says durable (see `crate::promises`). Peers are named by ids the driver
//! maps to its channels: [`NodeId`] (assigned here), [`ClientId`] (a client connection),
//! [`AttachId`] (one attachment) and [`RequestId`] (a question awaiting its answer).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};
use tracing::{debug, info, warn};
use wire::proto::{
    AttemptId, ChunkIndex, ChunkReport, ClientEvent, DispatcherToNode, JobFailure, JobId, JobState, JobSubmission,
    JobSummary, NodeInfo, NodeStatus, NodeToDispatcher, PayloadHash, PayloadKind,
};

use crate::promises::{CommitPolicy, Promises};
use crate::record::{Batch, Extent, JobRecord};
use crate::scheduler::{NodeHold, NodeId, NodeResources, Scheduler, SchedulerConfig};

mod clients;
mod durability;
mod entries;
mod observations;
mod observe;
mod payloads;
mod reduce;
mod refusal;
mod restore;
mod tenants;
#[cfg(test)]
mod tests;

use entries::{requirements, JobEntry, NodeEntry};
pub use observations::{FailedAttempt, JobView, Observation};
pub use observe::{LogQuery, LogRecord};
pub use reduce::{reduce_output_task, COMBINE_BASE};
pub use refusal::Refusal;
pub use restore::{ReadError, Recovered, RestoredJob, Resumed};
pub use tenants::{Caller, Exceeded, Quota, Quotas};

/// Promises held for a batch: acknowledgements, `InputStored`, answers and spool removals.
type Held = Promises<(RequestId, Question)>;

/// A question whose answer waits for durability: answered from the state when it was asked once
/// the batch holding that state is durable, or with [`Refusal::Unrecorded`] if that batch fails.
#[derive(Debug)]
enum Question {
    /// `status` or `cancel` of a job by a caller, with its answer.
    Summary(Caller, JobId, Result<JobSummary, Refusal>),
    /// `jobs` by a caller, with its answer.
    Jobs(Caller, Vec<JobSummary>),
    /// `drain` or `undrain`, answered with the nodes table.
    Nodes(Vec<NodeStatus>),
    /// A resumed upload, with where it resumes.
    Resume(Result<Resumed, Refusal>),
}

/// The ledger logs as part of the dispatcher, so operators' `dispatcher=...` filters and
/// `target` queries keep finding job and node lifecycle lines wherever the code lives.
const LOG_TARGET: &str = "dispatcher::ledger";

/// How often (in progress ticks) expired jobs are purged.
const PURGE_EVERY: u32 = 50;

/// The present, as the driver reads it: a monotonic instant for timers and the wall clock for
/// the times a job record keeps.
#[derive(Debug, Clone, Copy)]
pub struct Time {
    /// For timers and ages.
    pub at: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

/// A client connection, as the driver names it: where its events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

/// One attachment (a client following a job), as the driver names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttachId(pub u64);

/// A question whose answer waits until what it says is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Something the driver must do.
#[derive(Debug)]
pub enum Effect {
    /// Tell a node something.
    Node {
        /// The node.
        node: NodeId,
        /// What to tell it.
        command: NodeCommand,
    },
    /// Send an event to a client connection (a submitter).
    Client {
        /// The connection.
        client: ClientId,
        /// The event.
        event: ClientEvent,
    },
    /// Tell an attachment something; a verdict ends it.
    Attachment {
        /// The attachment.
        attach: AttachId,
        /// What to tell it.
        command: AttachCommand,
    },
    /// Answer a question.
    Answer {
        /// The question.
        request: RequestId,
        /// Its answer.
        answer: Answer,
    },
    /// Append an accepted result to the job's results spool, then report with
    /// [`Ledger::handle_result_stored`].
    StoreResult {
        /// What to hand back with the outcome.
        ticket: StoreTicket,
        /// The result's bytes.
        output: Bytes,
    },
    /// Make a batch durable: sync the named jobs' spool files, commit the batch, then report with
    /// [`Ledger::handle_committed`] or [`Ledger::handle_commit_failed`].
    Commit {
        /// The changes.
        batch: Batch,
        /// Jobs whose input spool file the batch points into and must be synced first.
        sync_inputs: Vec<JobId>,
        /// Jobs whose results spool file the batch points into and must be synced first.
        sync_results: Vec<JobId>,
    },
    /// Close a job's input and results files and delete them (its output was fetched, or it
    /// failed or was cancelled); its logs stay.
    RemoveSpool(JobId),
    /// Delete every spool file of a forgotten job, its logs included.
    ForgetSpool(JobId),
    /// Append an attempt's log to the job's `logs` spool file (before the next commit).
    StoreLog(LogRecord),
}

/// What to tell a node.
#[derive(Debug, PartialEq)]
pub enum NodeCommand {
    /// Send on its work stream.
    Send(DispatcherToNode),
    /// Send a chunk on its work stream, reading its input from the job's input spool.
    Assign {
        /// The job.
        job: JobId,
        /// The chunk.
        chunk: ChunkIndex,
        /// The attempt.
        attempt: AttemptId,
        /// Where the chunk's input is spooled.
        input: Extent,
    },
    /// Send a reduce job's combine task on its work stream, its input the two results at these
    /// extents of the job's results spool (packed by `wire::abi::combine_input`).
    Combine {
        /// The job.
        job: JobId,
        /// The combine's chunk index (beyond the job's input chunks).
        chunk: ChunkIndex,
        /// The attempt.
        attempt: AttemptId,
        /// Where its left and right inputs are spooled.
        inputs: (Extent, Extent),
    },
    /// Ship it the payload's bytes.
    Payload(PayloadHash),
    /// Close its connection.
    Close(String),
}

/// What to tell an attachment.
#[derive(Debug, PartialEq)]
pub enum AttachCommand {
    /// Send the next result, in chunk order; its bytes are at this extent of the results spool.
    Output(Extent),
    /// Send the next result, in chunk order: these bytes, accepted and on their way to the spool.
    Result(Bytes),
    /// Every result has been sent; finish the output stream.
    OutputEnd,
    /// Send on the control stream; a verdict ends the attachment.
    Event(ClientEvent),
}

/// An answer held until what it says is durable.
#[derive(Debug)]
pub enum Answer {
    /// To `status` or `cancel`.
    Summary(Result<JobSummary, Refusal>),
    /// To `jobs`.
    Jobs(Result<Vec<JobSummary>, Refusal>),
    /// To `drain` or `undrain`: the nodes table once the change is durable.
    Nodes(Result<Vec<NodeStatus>, Refusal>),
    /// To a resumed upload: where it goes on. The driver then takes the input from there.
    Resume(Result<Resumed, Refusal>),
    /// To `logs`: which logs to read from the job's `logs` spool file.
    Logs(Result<LogQuery, Refusal>),
    /// To `explain`.
    Explain(Result<Box<wire::observe::Explanation>, Refusal>),
}

/// Which result a [`Effect::StoreResult`] stores, and for whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTicket {
    /// The job.
    pub job: JobId,
    /// The chunk.
    pub chunk: ChunkIndex,
    /// The node that reported it, to acknowledge once stored.
    pub node: NodeId,
    /// The attempt.
    pub attempt: AttemptId,
    /// How long it ran on its node.
    pub run_nanos: u64,
}

/// How the ledger is set up.
#[derive(Debug, Clone, Default)]
pub struct LedgerConfig {
    /// The scheduler's settings, tenants' shares of the slots included.
    pub scheduler: SchedulerConfig,
    /// Finished jobs are forgotten this long after they end.
    pub retention: Duration,
    /// What each tenant may hold at once.
    pub quotas: Quotas,
    /// How long a job whose input is incomplete waits for its submitter to resume the upload
    /// after losing it (the dispatcher restarted, the connection dropped) before it fails; zero
    /// fails it at once.
    pub input_grace: Duration,
}

/// The dispatcher's job ledger.
#[derive(Debug)]
pub struct Ledger {
    scheduler: Scheduler,
    nodes: FxHashMap<NodeId, NodeEntry>,
    jobs: FxHashMap<JobId, JobEntry>,
    /// The journal changes gathering.
    batch: Batch,
    /// Promises to keep once `batch` is durable.
    promises: Held,
    /// Promises of the batch being committed, and the jobs it concerns.
    in_flight: Option<(Held, Vec<JobId>)>,
    /// For each job whose input the batch being committed records, its chunks with input once
    /// that batch is durable.
    in_flight_inputs: Vec<(JobId, u64)>,
    /// Jobs waiting for their submitter to resume their upload, by deadline.
    resume_deadlines: BTreeSet<(Instant, JobId)>,
    input_grace: Duration,
    policy: CommitPolicy,
    /// Jobs whose results file gained bytes that `batch` points at.
    dirty_results: FxHashSet<JobId>,
    /// Jobs whose input ended this turn: their input file is synced before `batch` commits.
    input_syncs: Vec<JobId>,
    /// Jobs whose results, input or state changed this turn: their clients hear of it.
    touched: FxHashSet<JobId>,
    effects: VecDeque<Effect>,
    /// News for the driver's metrics (see `observe`).
    observations: observations::Observations,
    next_node: u64,
    next_job: u64,
    retention: Duration,
    quotas: Quotas,
    /// Bytes each tenant holds in the spool (see `tenants`).
    spool_use: HashMap<String, u64>,
    /// Names of every node that ever registered, so a returning node is logged as rejoined.
    seen_nodes: HashSet<String>,
    /// Nodes whose connection was lost and whose attempts the scheduler holds for them, by
    /// name, until they register again or are dropped as silent.
    away: FxHashMap<NodeId, String>,
    ticks: u32,
    /// Reduce jobs' results on their way to the journal, and those just made durable.
    partials: reduce::Partials,
}

impl Ledger {
    /// Builds the ledger from what the journal recovered, resuming every unfinished job whose
    /// input was complete and failing the rest.
    pub fn new(config: LedgerConfig, recovered: Recovered, now: Time) -> Self {
        let mut ledger = Self {
            scheduler: Scheduler::new(config.scheduler),
            nodes: FxHashMap::default(),
            jobs: FxHashMap::default(),
            batch: Batch::default(),
            promises: Promises::default(),
            in_flight: None,
            in_flight_inputs: Vec::new(),
            resume_deadlines: BTreeSet::new(),
            input_grace: config.input_grace,
            policy: CommitPolicy::default(),
            dirty_results: FxHashSet::default(),
            input_syncs: Vec::new(),
            touched: FxHashSet::default(),
            effects: VecDeque::new(),
            observations: observations::Observations::default(),
            next_node: 1,
            next_job: recovered.next_job,
            retention: config.retention,
            quotas: config.quotas,
            spool_use: HashMap::new(),
            seen_nodes: HashSet::new(),
            away: FxHashMap::default(),
            ticks: 0,
            partials: reduce::Partials::default(),
        };
        // Attempt ids of earlier lifetimes may still arrive from nodes resending reports.
        ledger.scheduler.set_attempt_base(recovered.incarnation << 40);
        for (name, hold) in recovered.holds {
            ledger.seen_nodes.insert(name.clone());
            ledger.scheduler.restore_hold(&name, hold);
        }
        for job in recovered.jobs {
            ledger.restore(now, job);
        }
        ledger
    }

    /// The id the next accepted submission gets, so the driver may prepare its files ahead.
    pub fn next_job(&self) -> JobId {
        JobId(self.next_job)
    }

    /// Whether the ledger knows `job` (a spool directory of any other job is stale).
    pub fn knows(&self, job: JobId) -> bool {
        self.jobs.contains_key(&job)
    }

    /// The next thing the driver must do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Ledger::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.scheduler.poll_timeout(), self.policy.poll_timeout(), self.resume_deadlines.first().map(|(at, _)| *at)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether one of the scheduler's timers (heartbeats, placement, speculation) is due, so the
    /// driver feeds it the nodes' signs of life first.
    pub fn scheduler_due(&self, now: Time) -> bool {
        self.scheduler.poll_timeout().is_some_and(|at| at <= now.at)
    }

    /// A timeout passed: the scheduler's timers fire, and a held-back batch may go at the end of
    /// the turn.
    pub fn handle_timeout(&mut self, now: Time) {
        self.scheduler.handle_timeout(now.at);
        while let Some(&(at, job)) = self.resume_deadlines.first() {
            if at > now.at {
                break;
            }
            self.resume_deadlines.pop_first();
            let Some(entry) = self.jobs.get_mut(&job) else { continue };
            if entry.uploading || entry.record.state != JobState::Running || entry.record.input_complete {
                continue;
            }
            let Some((_, message)) = entry.resume.take() else { continue };
            warn!(target: LOG_TARGET, %job, "job input was not resumed in time");
            self.fail(now, job, message);
        }
    }

    /// A node's connection saw a frame at `at`, maybe before the ledger handled it: a node behind
    /// the driver's own backlog is not judged silent.
    pub fn handle_sign_of_life(&mut self, at: Instant, node: NodeId) {
        self.scheduler.handle_sign_of_life(at, node);
    }

    /// Ends a turn: carries out the scheduler's decisions, tells clients what changed, and
    /// starts a commit when the policy says so.
    pub fn end_turn(&mut self, now: Time) {
        self.release_combines(now);
        self.apply_actions(now);
        self.commit(now);
    }

    /// The progress tick: clients hear how running jobs are doing, and now and then expired jobs
    /// are forgotten.
    pub fn handle_tick(&mut self, now: Time) {
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in jobs {
            self.send_progress_of(job);
        }
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(PURGE_EVERY) {
            self.purge_expired(now);
        }
    }

    /// A node finished its handshake and registration; returns its id. It supersedes an earlier
    /// session of the same name and takes over the attempts it claims (see
    /// [`Scheduler::handle_node_rejoined`]).
    pub fn handle_node_registered(&mut self, now: Time, info: NodeInfo, address: String) -> NodeId {
        let node = NodeId(self.next_node);
        self.next_node += 1;
        let event = if self.seen_nodes.insert(info.name.clone()) { "node joined" } else { "node rejoined" };
        info!(target: LOG_TARGET, node = %info.name, %address, slots = info.slots, cores = info.cores,
            memory = %wire::units::format_size(info.memory_total), os = %info.os, arch = %info.arch,
            claims = info.claims.len(), "{event}");
        // The scheduler supersedes a disconnected session of this name: nothing is left to log.
        self.away.retain(|_, name| *name != info.name);
        self.scheduler.handle_node_rejoined(now.at, node, NodeResources {
            name: info.name.clone(),
            slots: info.slots,
            memory_total: info.memory_total,
            memory_available: info.memory_available,
            os: info.os.clone(),
            arch: info.arch.clone(),
        }, &info.claims);
        self.nodes.insert(node, NodeEntry::new(info, address, now.at));
        node
    }

    /// A control message from a registered node.
    pub fn handle_node_message(&mut self, now: Time, node: NodeId, msg: NodeToDispatcher) {
        match msg {
            NodeToDispatcher::Heartbeat(beat) => {
                if let Some(entry) = self.nodes.get_mut(&node) {
                    entry.last_heartbeat = now.at;
                    entry.busy = beat.busy_slots;
                    entry.load = beat.load;
                    entry.memory_available = beat.memory_available;
                    self.scheduler.handle_heartbeat(now.at, node, beat.memory_available);
                }
            }
            NodeToDispatcher::JobReady { job } => self.scheduler.handle_job_ready(now.at, node, job),
            NodeToDispatcher::JobRejected { job, error } => {
                let name = self.node_name(node);
                warn!(target: LOG_TARGET, %job, node = %name, %error, "node rejected job");
                // The name comes from the node's certificate, so the submitter learns who refused.
                self.scheduler.handle_job_rejected(now.at, node, job, format!("node {name}: {error}"));
            }
            NodeToDispatcher::NeedPayload { hash } => {
                // Only a payload of a live job: a node cannot fetch arbitrary payloads by hash.
                let live = self.jobs.values().any(|j| j.record.submission.payload == hash);
                let name = self.node_name(node);
                if live && self.nodes.contains_key(&node) {
                    warn!(target: LOG_TARGET, node = %name, payload = ?hash, "node's cached payload was damaged; shipping it again");
                    self.send_node(node, NodeCommand::Payload(hash));
                } else {
                    debug!(target: LOG_TARGET, node = %name, payload = ?hash, "payload asked for by no live job; ignored");
                }
            }
            NodeToDispatcher::PayloadsEvicted { payloads } => self.handle_payloads_evicted(node, &payloads),
            NodeToDispatcher::Leaving => {
                if self.nodes.contains_key(&node) {
                    let held = self.scheduler.node_in_flight(node).unwrap_or(0);
                    info!(target: LOG_TARGET, node = %self.node_name(node), attempts = held, "node stopping: finishing its attempts, taking no new ones");
                    self.scheduler.handle_node_leaving(now.at, node);
                }
            }
            NodeToDispatcher::Register(_) => {
                if self.nodes.remove(&node).is_some() {
                    self.send_node(node, NodeCommand::Close("registered twice".into()));
                    self.scheduler.handle_node_lost(now.at, node);
                }
            }
        }
    }

    /// A node closed its connection on purpose (it is stopping): its attempts are requeued now.
    pub fn handle_node_closed(&mut self, now: Time, node: NodeId, reason: &str) {
        if let Some(entry) = self.nodes.remove(&node) {
            info!(target: LOG_TARGET, node = %entry.info.name, %reason, "node left");
            self.scheduler.handle_node_lost(now.at, node);
        }
    }

    /// A node's connection was lost (timed out, reset, cut off): the node may still be running
    /// its attempts, so they stay its own until it registers again or stays silent for
    /// `node_timeout` (see [`Scheduler::handle_node_disconnected`]).
    pub fn handle_node_disconnected(&mut self, now: Time, node: NodeId, reason: &str) {
        if let Some(entry) = self.nodes.remove(&node) {
            info!(target: LOG_TARGET, node = %entry.info.name, %reason, "node disconnected; keeping its chunks until it returns or times out");
            self.away.insert(node, entry.info.name);
            self.scheduler.handle_node_disconnected(now.at, node);
        }
    }

    /// A chunk report from a registered node. An accepted result is stored first
    /// ([`Effect::StoreResult`]); every other report is acknowledged with the next commit.
    pub fn handle_report(&mut self, now: Time, node: NodeId, mut report: ChunkReport) {
        let log = std::mem::take(&mut report.log);
        let log_tail = self.store_log(node, report.attempt, report.outcome.is_err(), log);
        match report.outcome {
            Ok(output) => {
                if let Some(right) = report.combined_with {
                    return self.handle_precombined(now, node, (report.attempt, right), report.run_nanos, output);
                }
                self.scheduler.handle_run_time(now.at, node, report.attempt, Duration::from_nanos(report.run_nanos));
                let Some((job, chunk)) = self.scheduler.handle_chunk_succeeded(now.at, node, report.attempt) else {
                    debug!(target: LOG_TARGET, attempt = %report.attempt, "late or duplicate result discarded");
                    self.promises.ack(node, report.attempt);
                    return;
                };
                let Some(entry) = self.jobs.get_mut(&job) else {
                    self.promises.ack(node, report.attempt);
                    return;
                };
                entry.unstored += 1;
                self.stream_accepted(job, chunk, &output);
                let ticket = StoreTicket { job, chunk, node, attempt: report.attempt, run_nanos: report.run_nanos };
                self.effects.push_back(Effect::StoreResult { ticket, output });
            }
            Err(failure) => {
                self.promises.ack(node, report.attempt);
                warn!(target: LOG_TARGET, node = %self.node_name(node), attempt = %report.attempt, kind = ?failure.kind, "attempt failed: {failure}");
                self.chunk_failed_observed(now, node, report.attempt, failure, log_tail);
            }
        }
    }

    /// `caller` submits a job whose payload the driver holds, on connection `client`; returns
    /// its id. The driver then spools its input and reports each chunk with
    /// [`Ledger::handle_input`].
    ///
    /// # Errors
    /// [`Refusal::Quota`] when the caller has its most jobs at once or a full spool,
    /// [`Refusal::NoPlatform`] for a native payload no connected node can run,
    /// [`Refusal::NoEligibleNode`] when nodes are connected and none could ever run the job
    /// (too little memory in total, no slots). With no node connected every job waits.
    pub fn handle_submit(
        &mut self,
        now: Time,
        client: ClientId,
        caller: &Caller,
        submission: JobSubmission,
    ) -> Result<JobId, Refusal> {
        self.check_submission_quota(&caller.name).map_err(Refusal::Quota)?;
        // A job no connected node could ever run (platform, memory, slots) is refused now; with
        // no node connected, or nodes only drained, quarantined or short of memory for now, it
        // waits and says why.
        if !self.nodes.is_empty() {
            if let Err(blocked) = self.scheduler.eligible_summary(&requirements(&caller.name, &submission)) {
                if blocked.is_permanent() {
                    let reason = blocked.to_string();
                    return Err(match &submission.kind {
                        PayloadKind::Native { os, arch } if !self.scheduler.platform_available(os, arch) => {
                            Refusal::NoPlatform { os: os.clone(), arch: arch.clone(), reason }
                        }
                        _ => Refusal::NoEligibleNode(reason),
                    });
                }
            }
        }
        let job = JobId(self.next_job);
        self.next_job += 1;
        self.batch.next_job = Some(self.next_job);
        info!(target: LOG_TARGET, %job, owner = %caller.name, name = %submission.name, payload = ?submission.payload, "job submitted");
        let record = JobRecord {
            owner: caller.name.clone(),
            submission,
            state: JobState::Running,
            chunks: 0,
            input_complete: false,
            submitted_unix_ms: now.unix_ms,
            finished_unix_ms: None,
        };
        self.scheduler.handle_job_submitted(now.at, job, requirements(&record.owner, &record.submission));
        self.batch.jobs.push((job, record.clone()));
        let mut entry = JobEntry::new(record);
        entry.submitter = Some(client);
        entry.uploading = true;
        self.jobs.insert(job, entry);
        Ok(job)
    }

    /// The next chunk input of a running job was spooled at `extent`. Input beyond the owner's
    /// spool quota fails the job (and [`Effect::RemoveSpool`] tells the driver to stop its upload).
    pub fn handle_input(&mut self, now: Time, job: JobId, extent: Extent) {
        if !self.jobs.get(&job).is_some_and(|e| e.record.state == JobState::Running) {
            return;
        }
        if let Err(exceeded) = self.charge_spool(job, extent.len) {
            warn!(target: LOG_TARGET, %job, "job input over quota: {exceeded}");
            self.fail(now, job, format!("job input failed: {exceeded}"));
            return;
        }
        if let Some(entry) = self.jobs.get_mut(&job) {
            let chunk = entry.inputs.len() as ChunkIndex;
            entry.inputs.push(extent);
            entry.results.push(None);
            entry.record.chunks += 1;
            self.batch.inputs.push((job, chunk, extent));
            self.scheduler.handle_chunks_added(now.at, job, 1);
            self.reduce_input(now, job);
            self.observe_queued(job, chunk, now.at);
            self.observe(Observation::InputStored { bytes: extent.len });
        }
    }

    /// A job's input ended. Its spool file is synced with the commit that records the input
    /// complete, and the submitter hears `InputStored` once that commit is durable.
    pub fn handle_input_end(&mut self, now: Time, job: JobId) {
        if let Some(entry) = self.jobs.get_mut(&job).filter(|e| e.record.state == JobState::Running) {
            debug!(target: LOG_TARGET, %job, chunks = entry.record.chunks, "input complete");
            entry.uploading = false;
            entry.record.input_complete = true;
            self.batch.jobs.push((job, entry.record.clone()));
            self.input_syncs.push(job);
            self.promises.stored.push(job);
            self.touched.insert(job);
            self.reduce_input_end(now, job);
            self.scheduler.handle_input_complete(now.at, job);
        }
    }

    /// The connection uploading a job's input was lost before the input ended: the job keeps
    /// what arrived and waits for its submitter to resume the upload
    /// ([`Ledger::handle_resume_input`]) for the input grace, then fails.
    pub fn handle_input_interrupted(&mut self, now: Time, job: JobId) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        entry.uploading = false;
        if entry.record.state == JobState::Running && !entry.record.input_complete {
            info!(target: LOG_TARGET, %job, chunks = entry.record.chunks, "job input interrupted; waiting for its submitter to resume it");
            self.await_resume(now, job, "the submitter disconnected before the job's input was complete; submit it again");
        }
    }

    /// `caller`, on connection `client`, resumes the upload of its job's input. The answer says
    /// from which chunk (every chunk before is durable); it is given once that is so, and the
    /// driver then takes the input from there with [`Ledger::handle_input`] as for a new job.
    /// Only the job's owner may resume it (an operator's certificate is no exception: an upload
    /// continues with the identity that started it). A job that needs no more input (complete,
    /// or ended) answers `complete`, and its submitter follows it to hear its verdict.
    pub fn handle_resume_input(&mut self, request: RequestId, client: ClientId, caller: &Caller, job: JobId) {
        let answer = self.resume_input(client, caller, job);
        self.answer(request, Question::Resume(answer));
    }

    fn resume_input(&mut self, client: ClientId, caller: &Caller, job: JobId) -> Result<Resumed, Refusal> {
        let entry = self.jobs.get_mut(&job).filter(|e| e.record.owner == caller.name).ok_or(Refusal::UnknownJob(job))?;
        let stored = entry.inputs.len() as u64;
        if entry.record.state != JobState::Running || entry.record.input_complete {
            return Ok(Resumed { stored, complete: true });
        }
        if entry.uploading {
            return Err(Refusal::UploadInProgress(job));
        }
        info!(target: LOG_TARGET, %job, stored, "job input resumed by its submitter");
        entry.uploading = true;
        entry.submitter = Some(client);
        if let Some((at, _)) = entry.resume.take() {
            self.resume_deadlines.remove(&(at, job));
        }
        Ok(Resumed { stored, complete: false })
    }

    /// A job whose input is incomplete lost its upload: it waits for the input grace, then
    /// fails with `message`.
    pub(super) fn await_resume(&mut self, now: Time, job: JobId, message: &str) {
        if self.input_grace.is_zero() {
            self.fail(now, job, message.to_owned());
            return;
        }
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let at = now.at + self.input_grace;
        if let Some((earlier, _)) = entry.resume.replace((at, message.to_owned())) {
            self.resume_deadlines.remove(&(earlier, job));
        }
        self.resume_deadlines.insert((at, job));
    }

    /// A job's input could not be received or stored: the job fails.
    pub fn handle_input_failed(&mut self, now: Time, job: JobId, error: &str) {
        if let Some(entry) = self.jobs.get_mut(&job) {
            entry.uploading = false;
        }
        if self.jobs.get(&job).is_some_and(|e| e.record.state == JobState::Running) {
            warn!(target: LOG_TARGET, %job, %error, "job input failed");
            self.fail(now, job, format!("job input failed: {error}"));
        }
    }

    /// `caller` cancels a job; the answer follows once the cancellation is durable.
    pub fn handle_cancel(&mut self, now: Time, request: RequestId, caller: &Caller, job: JobId) {
        if self.visible(caller, job).is_ok_and(|e| e.record.state == JobState::Running) {
            info!(target: LOG_TARGET, %job, by = %caller.name, "job cancelled");
            self.scheduler.handle_cancel(now.at, job);
            self.finish(now, job, JobState::Cancelled);
        }
        let question = Question::Summary(caller.clone(), job, self.summary(caller, job));
        self.answer(request, question);
    }

    /// `status`: answered once what it says is durable.
    pub fn handle_status(&mut self, request: RequestId, caller: &Caller, job: JobId) {
        let question = Question::Summary(caller.clone(), job, self.summary(caller, job));
        self.answer(request, question);
    }

    /// `jobs`: the jobs `caller` may see, answered once what it says is durable.
    pub fn handle_list_jobs(&mut self, request: RequestId, caller: &Caller) {
        let question = Question::Jobs(caller.clone(), self.summaries(caller));
        self.answer(request, question);
    }

    /// An operator drains (or undrains, which also releases a quarantine) the node `name`: every
    /// session of that name, connected now or later, and across dispatcher restarts (the hold is
    /// journaled). Answered with the nodes table once the change is durable.
    ///
    /// Refusals, answered at once: [`Refusal::NotOperator`] for a client,
    /// [`Refusal::UnknownNode`] when no node of that name is connected and the name is not held
    /// (so a drained or quarantined node that is away can still be undrained).
    pub fn handle_drain(&mut self, now: Time, request: RequestId, caller: &Caller, name: &str, drain: bool) {
        if !caller.operator {
            let refusal = Refusal::NotOperator(if drain { "drain nodes" } else { "undrain nodes" }, caller.name.clone());
            self.effects.push_back(Effect::Answer { request, answer: Answer::Nodes(Err(refusal)) });
            return;
        }
        let current = self.scheduler.hold(name).cloned().unwrap_or_default();
        let connected = self.nodes.values().any(|n| n.info.name == name);
        if !connected && !current.is_held() {
            let answer = Answer::Nodes(Err(Refusal::UnknownNode(name.to_owned())));
            self.effects.push_back(Effect::Answer { request, answer });
            return;
        }
        let hold = if drain { NodeHold { drained: true, ..current.clone() } } else { NodeHold::default() };
        if hold != current {
            if drain {
                info!(target: LOG_TARGET, node = %name, by = %caller.name, connected, "node drained by an operator");
            } else {
                info!(target: LOG_TARGET, node = %name, by = %caller.name, connected, "node undrained by an operator");
            }
            self.scheduler.handle_hold(now.at, name, hold.clone());
            self.batch.put_hold(name, Some(hold));
        }
        let nodes = self.node_statuses(now);
        self.answer(request, Question::Nodes(nodes));
    }

    /// Fails a running job with `message`, cancelling its attempts.
    fn fail(&mut self, now: Time, job: JobId, message: String) {
        self.scheduler.handle_cancel(now.at, job);
        self.finish(now, job, JobState::Failed(JobFailure::Other { message }));
    }

    fn send_node(&mut self, node: NodeId, command: NodeCommand) {
        self.effects.push_back(Effect::Node { node, command });
    }

    fn node_name(&self, node: NodeId) -> String {
        self.nodes.get(&node).map_or_else(|| format!("#{}", node.0), |n| n.info.name.clone())
    }
}
