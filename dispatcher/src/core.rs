//! The dispatcher's core: one task that owns the [`Scheduler`], the node registry, the journal
//! and every job's bookkeeping, fed by a closed [`Event`] enum from the connection tasks.
//!
//! Connection tasks never touch shared state: they turn what they read into events, and the core
//! answers through each connection's unbounded command channel, so the core never waits on a slow
//! peer. Bulk bytes stay out of the core's memory: chunk inputs are spooled by the uploading
//! connection task and read back when assigned; results are appended to the spool as they are
//! accepted and read back by the attached client's task.
//!
//! Each turn (a batch of events, a timeout or a tick) ends with [`Core::commit`]: the turn's
//! journal [`Batch`] goes to the journal writer thread, which syncs the spool files it points into
//! and commits it in one transaction, while the core goes on scheduling (group commit: one commit
//! in flight, the next batch gathering behind it). Only when a commit is durable are nodes told
//! that their reports are stored (`Ack`), submitters that their input is (`InputStored`), and
//! clients what `status`, `cancel` and `jobs` found, so no promise is made that a crash could
//! take back. When a batch goes is the pure [`CommitPolicy`]'s decision (a batch nobody waits
//! for gathers longer: each sync costs the chunks running beside the dispatcher). Results stream to attached clients at once:
//! a client that sees a dispatcher crash reattaches and gets them again from the spool.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ledger::promises::{CommitPolicy, Promises};
use ledger::scheduler::{Action, JobRequirements, NodeId, NodeResources, Notice, Scheduler, SchedulerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use wire::proto::{
    AttemptId, ChunkIndex, ChunkReport, ClientEvent, DispatcherToNode, JobFailure, JobId, JobProgress, JobSpec,
    JobState, JobSubmission, JobSummary, NodeInfo, NodeStatus, NodeToDispatcher, PayloadHash, PayloadKind,
};

use crate::journal::{Batch, JobRecord, Journal, Recovered};
use crate::liveness::LastHeard;
use crate::payloads::PayloadStore;
use crate::spool::{Appender, Extent, Reader, Spool, SpoolFile};

mod commit;
use commit::{journal_writer, Answer, CommitRequest, Committed};
mod refusal;
pub(crate) use refusal::Refusal;



/// How often running jobs' progress is sent to their clients.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// How often expired jobs are purged.
const PURGE_EVERY: u32 = 50;

/// A chunk's input in the spool, read by the node connection task just before it is sent, so
/// inputs waiting for a slow link take no memory.
#[derive(Debug, Clone)]
pub(crate) struct InputRef {
    reader: Arc<Reader>,
    extent: Extent,
}

impl InputRef {
    /// Reads the input's bytes.
    pub(crate) fn read(&self) -> std::io::Result<Bytes> {
        self.reader.read(self.extent)
    }
}

/// What the core tells a node connection to do.
#[derive(Debug)]
pub(crate) enum NodeCommand {
    /// Send on the work stream.
    Send(DispatcherToNode),
    /// Send a chunk on the work stream, reading its input from the spool first.
    Assign { job: JobId, chunk: ChunkIndex, attempt: AttemptId, input: InputRef },
    /// Open a payload stream with these bytes.
    Payload(PayloadHash, Bytes),
    /// Close the connection.
    Close(String),
}

/// What the core tells a client's attach task to do.
#[derive(Debug)]
pub(crate) enum ClientCommand {
    /// Send the next result, in chunk order; its bytes are at this extent of the results spool.
    Output(Extent),
    /// Every result has been sent; finish the output stream.
    OutputEnd,
    /// Send on the control stream; a verdict ends the attachment.
    Event(ClientEvent),
}

/// What an attaching client needs besides the command stream.
#[derive(Debug)]
pub(crate) struct Attachment {
    /// Where the job's results are.
    pub(crate) results: Option<Reader>,
}

/// Everything that can happen to the core.
#[derive(Debug)]
pub(crate) enum Event {
    /// A node finished its handshake and registration.
    NodeRegistered {
        info: NodeInfo,
        address: String,
        commands: mpsc::UnboundedSender<NodeCommand>,
        /// Stamped by the connection task as frames arrive.
        heard: LastHeard,
        reply: oneshot::Sender<NodeId>,
    },
    /// A control message from a registered node.
    NodeMessage { node: NodeId, msg: NodeToDispatcher },
    /// A chunk report from a registered node.
    NodeReport { node: NodeId, report: ChunkReport },
    /// A node's connection ended.
    NodeClosed { node: NodeId, reason: String },
    /// A client submits a job; the reply carries the job id and where to spool its input.
    Submit {
        submission: JobSubmission,
        submitter: mpsc::UnboundedSender<ClientEvent>,
        reply: oneshot::Sender<Result<(JobId, Appender), Refusal>>,
    },
    /// The next chunk input of a job was spooled here.
    Input { job: JobId, extent: Extent },
    /// A job's input ended; `sync` is its spool file, made durable by the journal writer with
    /// the commit that records the input complete (not on the job's path: chunks already run).
    InputEnd { job: JobId, sync: std::fs::File },
    /// A job's input could not be received or stored.
    InputFailed { job: JobId, error: String },
    /// A client follows a job.
    Attach {
        job: JobId,
        commands: mpsc::UnboundedSender<ClientCommand>,
        /// The connection's events, the same channel a submitter on it gave.
        client: mpsc::UnboundedSender<ClientEvent>,
        reply: oneshot::Sender<Result<Attachment, Refusal>>,
    },
    /// A client has a job's whole output.
    Release { job: JobId },
    /// A client cancels a job.
    Cancel { job: JobId, reply: oneshot::Sender<Result<JobSummary, Refusal>> },
    /// `dispy-submit status`.
    Status { job: JobId, reply: oneshot::Sender<Result<JobSummary, Refusal>> },
    /// `dispy-submit jobs`.
    ListJobs { reply: oneshot::Sender<Vec<JobSummary>> },
    /// `dispy-submit nodes`.
    ListNodes { reply: oneshot::Sender<Vec<NodeStatus>> },
    /// `dispy-submit drain` / `undrain`.
    Drain { node: String, drain: bool, reply: oneshot::Sender<Result<Vec<NodeStatus>, Refusal>> },
}

struct NodeEntry {
    info: NodeInfo,
    address: String,
    commands: mpsc::UnboundedSender<NodeCommand>,
    payloads: HashSet<PayloadHash>,
    /// When its connection last received a frame, maybe not yet handled here.
    heard: LastHeard,
    last_heartbeat: Instant,
    busy: u32,
    load: f32,
    memory_available: u64,
}

struct Attacher {
    commands: mpsc::UnboundedSender<ClientCommand>,
    /// The attaching connection's event channel, to tell a submitter that follows its own job.
    client: mpsc::UnboundedSender<ClientEvent>,
    /// The next chunk whose result this client has not been sent.
    next: ChunkIndex,
}

struct JobEntry {
    record: JobRecord,
    /// Where each chunk's input is spooled, by chunk index.
    inputs: Vec<Extent>,
    input_reader: Option<Arc<Reader>>,
    /// Where each chunk's accepted result is spooled (committed or about to be).
    results: Vec<Option<Extent>>,
    results_appender: Option<Appender>,
    done: u64,
    retries: u64,
    /// Node run time of the results accepted since this dispatcher started.
    run_nanos: u64,
    submitter: Option<mpsc::UnboundedSender<ClientEvent>>,
    attachers: Vec<Attacher>,
    last_progress: Option<JobProgress>,
    /// Why the job last could not place its chunks, so a changed reason is sent once.
    last_blocked: Option<String>,
}

impl JobEntry {
    fn new(record: JobRecord) -> Self {
        Self {
            record,
            inputs: Vec::new(),
            input_reader: None,
            results: Vec::new(),
            results_appender: None,
            done: 0,
            retries: 0,
            run_nanos: 0,
            submitter: None,
            attachers: Vec::new(),
            last_progress: None,
            last_blocked: None,
        }
    }

    /// Whether every chunk received so far has its result while more input is to come.
    fn awaits_input(&self) -> bool {
        !self.record.input_complete && self.done == self.record.chunks
    }

    fn progress(&self, running: u64) -> JobProgress {
        JobProgress {
            done: self.done,
            total: self.record.chunks,
            input_complete: self.record.input_complete,
            running,
            retries: self.retries,
            run_nanos: self.run_nanos,
        }
    }
}

/// The core's state.
pub(crate) struct Core {
    scheduler: Scheduler,
    nodes: HashMap<NodeId, NodeEntry>,
    jobs: HashMap<JobId, JobEntry>,
    payloads: PayloadStore,
    spool: Spool,
    batch: Batch,
    /// Promises to keep once `batch` is durable.
    promises: Promises<Answer>,
    /// Jobs whose results file gained bytes that `batch` points at.
    dirty_results: HashSet<JobId>,
    /// Input spool files of jobs whose input ended this turn, to sync before `batch` commits.
    input_syncs: Vec<std::fs::File>,
    /// Jobs whose results, input or state changed this turn: their clients hear of it.
    touched: HashSet<JobId>,
    commits: mpsc::Sender<CommitRequest>,
    committed: mpsc::Receiver<Committed>,
    /// When the gathering batch goes to the writer.
    policy: CommitPolicy,
    next_node: u64,
    next_job: u64,
    retention: Duration,
    /// Names of every node that ever registered, so a returning node is logged as rejoined.
    seen_nodes: HashSet<String>,
}

impl Core {
    /// Builds the core from what the journal recovered, resuming unfinished jobs, and starts the
    /// journal writer thread.
    ///
    /// # Errors
    /// If the thread cannot be started.
    pub(crate) fn new(
        config: SchedulerConfig,
        journal: Journal,
        recovered: Recovered,
        spool: Spool,
        payloads: PayloadStore,
        retention: Duration,
    ) -> std::io::Result<Self> {
        let (commits, commit_rx) = mpsc::channel(1);
        let (committed_tx, committed) = mpsc::channel(1);
        let mut core = Self {
            scheduler: Scheduler::new(config),
            nodes: HashMap::new(),
            jobs: HashMap::new(),
            payloads,
            spool,
            batch: Batch::default(),
            promises: Promises::default(),
            dirty_results: HashSet::new(),
            input_syncs: Vec::new(),
            touched: HashSet::new(),
            commits,
            committed,
            policy: CommitPolicy::default(),
            next_node: 1,
            next_job: recovered.next_job,
            retention,
            seen_nodes: HashSet::new(),
        };
        // Attempt ids of earlier lifetimes may still arrive from nodes resending reports.
        core.scheduler.set_attempt_base(recovered.incarnation << 40);
        for (job, record) in recovered.jobs {
            core.restore(&journal, job, record);
        }
        // A crash between forgetting a job and deleting its files leaves them behind.
        core.spool.remove_unknown(|job| core.jobs.contains_key(&job));
        if let Err(e) = journal.commit(&mut core.batch) {
            warn!(error = %e, "cannot record the jobs resumed after the restart");
        }
        // The writer thread ends when the core drops its request channel.
        std::thread::Builder::new()
            .name("dispy-journal".into())
            .spawn(move || journal_writer(journal, commit_rx, committed_tx))?;
        Ok(core)
    }

    fn restore(&mut self, journal: &Journal, job: JobId, record: JobRecord) {
        let mut entry = JobEntry::new(record);
        if entry.record.state != JobState::Running {
            if entry.record.state == JobState::Succeeded {
                // Its results wait to be fetched: `wait` streams them from the spool.
                match journal.results(job) {
                    Ok(results) => {
                        entry.results = vec![None; entry.record.chunks as usize];
                        for (chunk, extent) in results {
                            if let Some(slot) = entry.results.get_mut(chunk as usize) {
                                *slot = Some(extent);
                            }
                        }
                        entry.done = entry.record.chunks;
                    }
                    Err(e) => warn!(%job, error = %e, "cannot read a finished job's results"),
                }
            }
            self.jobs.insert(job, entry);
            return;
        }
        if !entry.record.input_complete {
            self.jobs.insert(job, entry);
            self.finish(job, JobState::Failed(JobFailure::Other {
                message: "the dispatcher restarted before the job's input was complete; submit it again".into(),
            }));
            return;
        }
        let loaded = journal.inputs(job).and_then(|inputs| Ok((inputs, journal.results(job)?)));
        let (inputs, results) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                self.jobs.insert(job, entry);
                self.finish(job, JobState::Failed(JobFailure::Other { message: format!("cannot resume: {e}") }));
                return;
            }
        };
        entry.inputs = inputs;
        entry.results = vec![None; entry.inputs.len()];
        for (chunk, extent) in results {
            if let Some(slot) = entry.results.get_mut(chunk as usize) {
                *slot = Some(extent);
                entry.done += 1;
            }
        }
        entry.record.chunks = entry.inputs.len() as u64;
        let done: Vec<bool> = entry.results.iter().map(Option::is_some).collect();
        info!(%job, chunks = entry.record.chunks, done = entry.done, "resuming job");
        self.scheduler.handle_job_restored(now(), job, requirements(&entry.record.submission), &done);
        self.jobs.insert(job, entry);
        self.touched.insert(job);
    }

    /// Runs until every event sender is gone.
    pub(crate) async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            let deadline = self.scheduler.poll_timeout().map(Instant::from_std);
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else {
                        self.flush().await;
                        return;
                    };
                    self.handle_event(event);
                    // Take whatever else is already queued before acting, so a burst of reports
                    // becomes one round of assignments and one journal commit.
                    self.handle_queued(&mut events);
                }
                () = sleep_until(deadline) => {
                    // Queued events came before the deadline was noticed: under load a node's
                    // heartbeat may be among them, and must count before it is judged silent.
                    self.handle_queued(&mut events);
                    for (node, entry) in &self.nodes {
                        self.scheduler.handle_sign_of_life(entry.heard.get(), *node);
                    }
                    self.scheduler.handle_timeout(now());
                }
                Some(committed) = self.committed.recv() => self.handle_committed(committed),
                // `commit` below sends the held-back batch.
                () = sleep_until(self.policy.poll_timeout().map(Instant::from_std)) => {}
                _ = progress.tick() => {
                    self.send_progress();
                    ticks = ticks.wrapping_add(1);
                    if ticks.is_multiple_of(PURGE_EVERY) {
                        self.purge_expired();
                    }
                }
            }
            self.apply_actions();
            self.commit();
        }
    }

    /// Handles events already queued, up to a bound so the rest of the loop keeps its turn.
    fn handle_queued(&mut self, events: &mut mpsc::Receiver<Event>) {
        for _ in 0..1024 {
            match events.try_recv() {
                Ok(event) => self.handle_event(event),
                Err(_) => break,
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        let now = now();
        match event {
            Event::NodeRegistered { info, address, commands, heard, reply } => {
                let node = NodeId(self.next_node);
                self.next_node += 1;
                let event = if self.seen_nodes.insert(info.name.clone()) { "node joined" } else { "node rejoined" };
                info!(node = %info.name, %address, slots = info.slots, cores = info.cores,
                    memory = %wire::units::format_size(info.memory_total), os = %info.os, arch = %info.arch,
                    "{event}");
                self.scheduler.handle_node_joined(now, node, NodeResources {
                    name: info.name.clone(),
                    slots: info.slots,
                    memory_total: info.memory_total,
                    memory_available: info.memory_available,
                    os: info.os.clone(),
                    arch: info.arch.clone(),
                });
                let entry = NodeEntry {
                    payloads: info.cached_payloads.iter().copied().collect(),
                    memory_available: info.memory_available,
                    info,
                    address,
                    commands,
                    heard,
                    last_heartbeat: Instant::now(),
                    busy: 0,
                    load: 0.0,
                };
                self.nodes.insert(node, entry);
                let _ = reply.send(node);
            }
            Event::NodeMessage { node, msg } => self.handle_node_message(now, node, msg),
            Event::NodeReport { node, report } => self.handle_report(now, node, report),
            Event::NodeClosed { node, reason } => {
                if let Some(entry) = self.nodes.remove(&node) {
                    info!(node = %entry.info.name, %reason, "node left");
                    self.scheduler.handle_node_lost(now, node);
                }
            }
            Event::Submit { submission, submitter, reply } => {
                let _ = reply.send(self.submit(now, submission, submitter));
            }
            Event::Input { job, extent } => {
                if let Some(entry) = self.jobs.get_mut(&job).filter(|e| e.record.state == JobState::Running) {
                    let chunk = entry.inputs.len() as ChunkIndex;
                    entry.inputs.push(extent);
                    entry.results.push(None);
                    entry.record.chunks += 1;
                    self.batch.put_input(job, chunk, extent);
                    self.scheduler.handle_chunks_added(now, job, 1);
                }
            }
            Event::InputEnd { job, sync } => {
                if let Some(entry) = self.jobs.get_mut(&job).filter(|e| e.record.state == JobState::Running) {
                    self.input_syncs.push(sync);
                    debug!(%job, chunks = entry.record.chunks, "input complete");
                    entry.record.input_complete = true;
                    self.batch.put_job(job, entry.record.clone());
                    self.promises.stored.push(job);
                    self.touched.insert(job);
                    self.scheduler.handle_input_complete(now, job);
                }
            }
            Event::InputFailed { job, error } => {
                if self.jobs.get(&job).is_some_and(|e| e.record.state == JobState::Running) {
                    warn!(%job, %error, "job input failed");
                    self.scheduler.handle_cancel(now, job);
                    self.finish(job, JobState::Failed(JobFailure::Other { message: format!("job input failed: {error}") }));
                }
            }
            Event::Attach { job, commands, client, reply } => {
                let _ = reply.send(self.attach(job, commands, client));
            }
            Event::Release { job } => {
                if self.jobs.get(&job).is_some_and(|e| e.record.state.is_finished()) {
                    debug!(%job, "job released by its client");
                    self.forget(job);
                }
            }
            Event::Cancel { job, reply } => {
                let known = self.jobs.get(&job).map(|e| e.record.state.clone());
                if known == Some(JobState::Running) {
                    info!(%job, "job cancelled");
                    self.scheduler.handle_cancel(now, job);
                    self.finish(job, JobState::Cancelled);
                }
                self.answer(Answer::Summary(reply, self.summary(job)));
            }
            Event::Status { job, reply } => self.answer(Answer::Summary(reply, self.summary(job))),
            Event::ListJobs { reply } => {
                let mut ids: Vec<JobId> = self.jobs.keys().copied().collect();
                ids.sort_unstable();
                let jobs = ids.into_iter().filter_map(|j| self.summary(j).ok()).collect();
                self.answer(Answer::Jobs(reply, jobs));
            }
            Event::ListNodes { reply } => {
                let _ = reply.send(self.node_statuses());
            }
            Event::Drain { node: name, drain, reply } => {
                let ids: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| n.info.name == name).map(|(id, _)| *id).collect();
                if ids.is_empty() {
                    let _ = reply.send(Err(Refusal::UnknownNode(name)));
                    return;
                }
                for id in ids {
                    if drain {
                        info!(node = %name, "node drained by an operator");
                        self.scheduler.handle_drain(now, id);
                    } else {
                        info!(node = %name, "node undrained by an operator");
                        self.scheduler.handle_undrain(now, id);
                    }
                }
                let _ = reply.send(Ok(self.node_statuses()));
            }
        }
    }

    fn submit(
        &mut self,
        now: std::time::Instant,
        submission: JobSubmission,
        submitter: mpsc::UnboundedSender<ClientEvent>,
    ) -> Result<(JobId, Appender), Refusal> {
        if !self.payloads.contains(&submission.payload) {
            return Err(Refusal::PayloadNotUploaded);
        }
        if let PayloadKind::Native { os, arch } = &submission.kind {
            // A native payload for a platform no connected node has is refused now, not after
            // its placement timeout; with no node connected yet it may still find one.
            if !self.nodes.is_empty() && !self.scheduler.platform_available(os, arch) {
                let reason = self.scheduler.eligible_summary(&requirements(&submission)).err().map(|b| b.to_string()).unwrap_or_default();
                return Err(Refusal::NoPlatform { os: os.clone(), arch: arch.clone(), reason });
            }
        }
        let job = JobId(self.next_job);
        let appender = self
            .spool
            .appender(job, SpoolFile::Input)
            .map_err(Refusal::InputStorage)?;
        self.next_job += 1;
        self.batch.set_next_job(self.next_job);
        info!(%job, name = %submission.name, payload = ?submission.payload, "job submitted");
        self.scheduler.handle_job_submitted(now, job, requirements(&submission));
        let record = JobRecord {
            submission,
            state: JobState::Running,
            chunks: 0,
            input_complete: false,
            submitted_unix_ms: unix_ms(),
            finished_unix_ms: None,
        };
        self.batch.put_job(job, record.clone());
        let mut entry = JobEntry::new(record);
        entry.submitter = Some(submitter);
        self.jobs.insert(job, entry);
        Ok((job, appender))
    }

    fn attach(
        &mut self,
        job: JobId,
        commands: mpsc::UnboundedSender<ClientCommand>,
        client: mpsc::UnboundedSender<ClientEvent>,
    ) -> Result<Attachment, Refusal> {
        let Some(entry) = self.jobs.get_mut(&job) else {
            return Err(Refusal::UnknownJob(job));
        };
        let results = match entry.record.state {
            JobState::Running | JobState::Succeeded => {
                Some(self.spool.reader(job, SpoolFile::Results).or_else(|_| {
                    // No result yet: create the file so the reader has something to open.
                    entry.results_appender.get_or_insert(self.spool.appender(job, SpoolFile::Results)?);
                    self.spool.reader(job, SpoolFile::Results)
                }).map_err(Refusal::ResultsUnreadable)?)
            }
            JobState::Failed(_) | JobState::Cancelled => None,
        };
        entry.attachers.push(Attacher { commands, client, next: 0 });
        self.touched.insert(job);
        Ok(Attachment { results })
    }

    fn handle_node_message(&mut self, now: std::time::Instant, node: NodeId, msg: NodeToDispatcher) {
        match msg {
            NodeToDispatcher::Heartbeat(beat) => {
                if let Some(entry) = self.nodes.get_mut(&node) {
                    entry.last_heartbeat = Instant::now();
                    entry.busy = beat.busy_slots;
                    entry.load = beat.load;
                    entry.memory_available = beat.memory_available;
                    self.scheduler.handle_heartbeat(now, node, beat.memory_available);
                }
            }
            NodeToDispatcher::JobReady { job } => self.scheduler.handle_job_ready(now, node, job),
            NodeToDispatcher::JobRejected { job, error } => {
                warn!(%job, node = %self.node_name(node), %error, "node rejected job");
                self.scheduler.handle_job_rejected(now, node, job, error);
            }
            NodeToDispatcher::Register(_) => {
                if let Some(entry) = self.nodes.remove(&node) {
                    let _ = entry.commands.send(NodeCommand::Close("registered twice".into()));
                    self.scheduler.handle_node_lost(now, node);
                }
            }
        }
    }

    fn handle_report(&mut self, now: std::time::Instant, node: NodeId, report: ChunkReport) {
        self.promises.ack(node, report.attempt);
        match report.outcome {
            Ok(output) => {
                let ran = std::time::Duration::from_nanos(report.run_nanos);
                self.scheduler.handle_run_time(now, node, report.attempt, ran);
                let Some((job, chunk)) = self.scheduler.handle_chunk_succeeded(now, node, report.attempt) else {
                    debug!(attempt = %report.attempt, "late or duplicate result discarded");
                    return;
                };
                if let Err(e) = self.store_result(job, chunk, &output, report.run_nanos) {
                    warn!(%job, chunk, error = %e, "cannot store a result");
                    self.scheduler.handle_cancel(now, job);
                    self.finish(job, JobState::Failed(JobFailure::Other {
                        message: format!("dispatcher storage failed while storing chunk {chunk}'s result: {e}"),
                    }));
                } else if self.jobs.get(&job).is_some_and(JobEntry::awaits_input) {
                    // Everything sent so far is done and the submitter holds the rest back (an
                    // `auto` rule measuring its probe): tell it now rather than at the next tick.
                    self.send_progress_of(job);
                }
            }
            Err(failure) => {
                warn!(node = %self.node_name(node), attempt = %report.attempt, kind = ?failure.kind, "attempt failed: {failure}");
                self.scheduler.handle_chunk_failed(now, node, report.attempt, failure);
            }
        }
    }

    /// Spools an accepted result, which ran for `run_nanos` on its node.
    fn store_result(&mut self, job: JobId, chunk: ChunkIndex, output: &[u8], run_nanos: u64) -> std::io::Result<()> {
        let Some(entry) = self.jobs.get_mut(&job) else { return Ok(()) };
        let appender = match &mut entry.results_appender {
            Some(appender) => appender,
            slot => slot.insert(self.spool.appender(job, SpoolFile::Results)?),
        };
        let extent = appender.append(output)?;
        if let Some(slot) = entry.results.get_mut(chunk as usize) {
            *slot = Some(extent);
            entry.done += 1;
            entry.run_nanos = entry.run_nanos.saturating_add(run_nanos);
        }
        self.batch.put_result(job, chunk, extent);
        self.dirty_results.insert(job);
        self.touched.insert(job);
        Ok(())
    }

    fn apply_actions(&mut self) {
        while let Some(action) = self.scheduler.poll_action() {
            match action {
                Action::StartJob { node, job } => self.start_job(node, job),
                Action::Assign { node, job, chunk, attempt, speculative } => match self.input_ref(job, chunk) {
                    Ok(input) => {
                        if speculative {
                            info!(%job, chunk, node = %self.node_name(node), "speculative copy of a straggling chunk");
                        } else {
                            debug!(%job, chunk, %attempt, node = %self.node_name(node), "chunk assigned");
                        }
                        self.send_node(node, NodeCommand::Assign { job, chunk, attempt, input });
                    }
                    Err(e) => {
                        warn!(%job, chunk, error = %e, "cannot read a chunk's input");
                        self.scheduler.handle_cancel(now(), job);
                        self.finish(job, JobState::Failed(JobFailure::Other {
                            message: format!("dispatcher storage failed while reading chunk {chunk}'s input: {e}"),
                        }));
                    }
                },
                Action::CancelAttempt { node, attempt } => {
                    self.send_node(node, NodeCommand::Send(DispatcherToNode::CancelAttempt { attempt }));
                }
                Action::EndJob { node, job } => {
                    self.send_node(node, NodeCommand::Send(DispatcherToNode::EndJob { job }));
                }
                Action::DropNode { node, reason } => {
                    // The scheduler has already requeued the node's attempts.
                    if let Some(entry) = self.nodes.remove(&node) {
                        info!(node = %entry.info.name, %reason, "node lost");
                        let _ = entry.commands.send(NodeCommand::Close(reason));
                    }
                }
                Action::JobSucceeded { job, stats } => {
                    info!(%job, retries = stats.retries, speculative = stats.speculative, "job succeeded");
                    self.record_stats(job, stats.retries);
                    self.finish(job, JobState::Succeeded);
                }
                Action::JobFailed { job, failure, stats } => {
                    warn!(%job, retries = stats.retries, "job failed: {failure}");
                    self.record_stats(job, stats.retries);
                    self.finish(job, JobState::Failed(failure));
                }
            }
        }
        while let Some(notice) = self.scheduler.poll_notice() {
            match notice {
                Notice::NodeSuspect { node, silent } => {
                    warn!(node = %self.node_name(node), silent_ms = silent.as_millis() as u64, "node suspect: heartbeats late");
                }
                Notice::NodeRecovered { node } => info!(node = %self.node_name(node), "node recovered"),
                Notice::NodeQuarantined { node, reason } => {
                    warn!(node = %self.node_name(node), %reason, "node quarantined");
                }
            }
        }
    }

    fn record_stats(&mut self, job: JobId, retries: u64) {
        if let Some(entry) = self.jobs.get_mut(&job) {
            entry.retries = retries;
        }
    }

    fn input_ref(&mut self, job: JobId, chunk: ChunkIndex) -> std::io::Result<InputRef> {
        let entry = self.jobs.get_mut(&job).ok_or_else(|| std::io::Error::other("unknown job"))?;
        let extent = *entry.inputs.get(chunk as usize).ok_or_else(|| std::io::Error::other("unknown chunk"))?;
        let reader = match &mut entry.input_reader {
            Some(reader) => reader,
            slot => slot.insert(Arc::new(self.spool.reader(job, SpoolFile::Input)?)),
        };
        Ok(InputRef { reader: Arc::clone(reader), extent })
    }

    /// Records a job's end; clients hear of it after the commit. Failed and cancelled jobs'
    /// spooled data goes at once; a succeeded job's results stay until fetched or expired.
    fn finish(&mut self, job: JobId, state: JobState) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        if entry.record.state.is_finished() {
            return;
        }
        if state != JobState::Succeeded {
            entry.input_reader = None;
            entry.results_appender = None;
            entry.results.iter_mut().for_each(|r| *r = None);
            self.spool.remove(job);
        }
        entry.record.state = state;
        entry.record.finished_unix_ms = Some(unix_ms());
        self.batch.put_job(job, entry.record.clone());
        self.touched.insert(job);
    }

    /// Ends a turn: tells clients what changed, and hands the turn's journal changes to the
    /// writer thread unless a commit is already in flight (then they wait for the next one).
    fn commit(&mut self) {
        let touched: Vec<JobId> = self.touched.drain().collect();
        for job in touched {
            self.notify(job);
        }
        let pending = !self.batch.is_empty() || !self.promises.is_empty();
        if self.policy.poll_commit(now(), pending, self.promises.awaited()) {
            self.send_batch();
        }
    }

    /// Hands the gathered batch and its promises to the journal writer.
    fn send_batch(&mut self) {
        let mut sync = std::mem::take(&mut self.input_syncs);
        for job in self.dirty_results.drain() {
            if let Some(appender) = self.jobs.get(&job).and_then(|e| e.results_appender.as_ref()) {
                match appender.sync_handle() {
                    Ok(file) => sync.push(file),
                    Err(e) => warn!(%job, error = %e, "cannot sync a results file"),
                }
            }
        }
        let request = CommitRequest {
            batch: std::mem::take(&mut self.batch),
            sync,
            promises: std::mem::take(&mut self.promises),
        };
        // The writer lives as long as the core; a full channel cannot happen with one commit in
        // flight at a time.
        if self.commits.try_send(request).is_err() {
            warn!("the journal writer is gone; changes are no longer durable");
            self.policy.handle_committed();
        }
    }

    /// Sends `answer` once the state it describes is durable: at once when nothing is waiting
    /// to be committed, otherwise with the commit of the batch gathering now.
    fn answer(&mut self, answer: Answer) {
        if self.batch.is_empty() && !self.policy.in_flight() {
            answer.send();
        } else {
            self.promises.answers.push(answer);
        }
    }

    /// On shutdown: commits what is still gathering, so a graceful stop loses nothing.
    async fn flush(&mut self) {
        self.await_commit().await;
        if (!self.batch.is_empty() || !self.promises.is_empty()) && self.policy.force(now()) {
            self.send_batch();
            self.await_commit().await;
        }
    }

    async fn await_commit(&mut self) {
        if self.policy.in_flight() {
            if let Some(committed) = self.committed.recv().await {
                self.handle_committed(committed);
            }
        }
    }

    /// A commit is durable (or failed): keep its promises, then start the next one.
    fn handle_committed(&mut self, committed: Committed) {
        self.policy.handle_committed();
        let durable = committed.failed.is_none();
        if let Some((error, jobs)) = committed.failed {
            warn!(%error, "journal commit failed; failing the jobs it concerned");
            for job in jobs {
                self.scheduler.handle_cancel(now(), job);
                self.finish(job, JobState::Failed(JobFailure::Other { message: format!("dispatcher storage failed: {error}") }));
            }
        }
        for (node, attempts) in committed.promises.acks {
            self.send_node(node, NodeCommand::Send(DispatcherToNode::Ack { attempts }));
        }
        // After a failed commit the journal may still hold these jobs: their files stay, for a
        // restarted dispatcher to restore (and expire) them.
        if durable {
            for job in committed.promises.removals {
                self.spool.remove(job);
            }
        }
        for answer in committed.promises.answers {
            answer.send();
        }
        for job in committed.promises.stored {
            let Some(entry) = self.jobs.get_mut(&job) else { continue };
            if entry.record.state != JobState::Running && entry.record.state != JobState::Succeeded {
                continue;
            }
            if let Some(submitter) = entry.submitter.take() {
                let _ = submitter.send(ClientEvent::InputStored { job, chunks: entry.record.chunks });
            }
        }
    }

    /// Sends a job's clients what changed: results in order, the verdict, and to a submitter
    /// still waiting for `InputStored` the news that the job failed first.
    fn notify(&mut self, job: JobId) {
        let running = self.scheduler.progress(job).map_or(0, |p| p.running);
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let failed = match &entry.record.state {
            JobState::Failed(failure) => Some(ClientEvent::JobFailed { failure: failure.clone() }),
            JobState::Cancelled => Some(ClientEvent::Error { message: format!("job {job} was cancelled") }),
            JobState::Running | JobState::Succeeded => None,
        };
        if let Some(event) = failed {
            if let Some(submitter) = entry.submitter.take() {
                // A submitter following its own job hears the verdict once, from the attachment.
                if !entry.attachers.iter().any(|a| a.client.same_channel(&submitter)) {
                    let _ = submitter.send(event);
                }
            }
        }
        let progress = entry.progress(running);
        let state = entry.record.state.clone();
        let results = &entry.results;
        entry.attachers.retain_mut(|attacher| {
            if !matches!(state, JobState::Failed(_) | JobState::Cancelled) {
                while let Some(Some(extent)) = results.get(attacher.next as usize) {
                    if attacher.commands.send(ClientCommand::Output(*extent)).is_err() {
                        return false;
                    }
                    attacher.next += 1;
                }
            }
            let verdict = match &state {
                JobState::Running => return true,
                JobState::Succeeded => {
                    let _ = attacher.commands.send(ClientCommand::OutputEnd);
                    ClientEvent::JobSucceeded { progress }
                }
                JobState::Failed(failure) => ClientEvent::JobFailed { failure: failure.clone() },
                JobState::Cancelled => ClientEvent::JobFailed { failure: JobFailure::Other { message: format!("job {job} was cancelled") } },
            };
            let _ = attacher.commands.send(ClientCommand::Event(verdict));
            false
        });
    }

    fn start_job(&mut self, node: NodeId, job: JobId) {
        let (Some(job_entry), Some(node_entry)) = (self.jobs.get(&job), self.nodes.get_mut(&node)) else {
            return;
        };
        let sub = &job_entry.record.submission;
        let spec = JobSpec {
            job,
            payload: sub.payload,
            kind: sub.kind.clone(),
            args: sub.args.clone(),
            memory_limit: sub.memory_limit,
            chunk_timeout_ms: sub.chunk_timeout_ms,
            shared_input: sub.shared_input,
        };
        let _ = node_entry.commands.send(NodeCommand::Send(DispatcherToNode::StartJob(spec)));
        if !node_entry.payloads.contains(&sub.payload) {
            match self.payloads.load(&sub.payload) {
                Ok(bytes) => {
                    debug!(node = %node_entry.info.name, payload = ?sub.payload, "shipping payload");
                    node_entry.payloads.insert(sub.payload);
                    let _ = node_entry.commands.send(NodeCommand::Payload(sub.payload, bytes));
                }
                Err(e) => warn!(%job, error = %e, "cannot load the job's payload"),
            }
        }
    }

    fn send_progress(&mut self) {
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in jobs {
            self.send_progress_of(job);
        }
    }

    /// Sends a running job's progress, if it changed, to its attached clients, or while it has
    /// none to its submitter (which may be sizing `auto` chunks from it); and why it waits, if
    /// that changed, to its attached clients.
    fn send_progress_of(&mut self, job: JobId) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        if (entry.attachers.is_empty() && entry.submitter.is_none()) || entry.record.state != JobState::Running {
            return;
        }
        let Some(scheduled) = self.scheduler.progress(job) else { return };
        entry.retries = scheduled.retries;
        let progress = entry.progress(scheduled.running);
        if entry.last_progress != Some(progress) {
            entry.last_progress = Some(progress);
            for attacher in &entry.attachers {
                let _ = attacher.commands.send(ClientCommand::Event(ClientEvent::Progress(progress)));
            }
            if let (true, Some(submitter)) = (entry.attachers.is_empty(), &entry.submitter) {
                let _ = submitter.send(ClientEvent::Progress(progress));
            }
        }
        let blocked = self.scheduler.blocked_reason(job).map(|b| b.to_string());
        if blocked != entry.last_blocked {
            if let Some(reason) = &blocked {
                for attacher in &entry.attachers {
                    let _ = attacher.commands.send(ClientCommand::Event(ClientEvent::Waiting { reason: reason.clone() }));
                }
            }
            entry.last_blocked = blocked;
        }
    }

    fn summary(&self, job: JobId) -> Result<JobSummary, Refusal> {
        let entry = self.jobs.get(&job).ok_or(Refusal::UnknownJob(job))?;
        let running = self.scheduler.progress(job).map_or(0, |p| p.running);
        Ok(JobSummary {
            job,
            name: entry.record.submission.name.clone(),
            state: entry.record.state.clone(),
            progress: entry.progress(running),
            submitted_unix_ms: entry.record.submitted_unix_ms,
            blocked: self.scheduler.blocked_reason(job).map(|b| b.to_string()),
            output: entry.record.submission.output.clone(),
            results: entry.record.submission.results,
        })
    }

    fn purge_expired(&mut self) {
        let cutoff = unix_ms().saturating_sub(self.retention.as_millis() as u64);
        let expired: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, e)| e.record.finished_unix_ms.is_some_and(|t| t < cutoff))
            .map(|(j, _)| *j)
            .collect();
        for job in expired {
            debug!(%job, "job expired");
            self.forget(job);
        }
    }

    fn forget(&mut self, job: JobId) {
        self.jobs.remove(&job);
        self.batch.delete_job(job);
        self.promises.removals.push(job);
    }

    fn node_statuses(&self) -> Vec<NodeStatus> {
        let mut list: Vec<NodeStatus> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeStatus {
                name: n.info.name.clone(),
                address: n.address.clone(),
                hostname: n.info.hostname.clone(),
                slots: n.info.slots,
                busy: n.busy,
                memory_total: n.info.memory_total,
                memory_available: n.memory_available,
                load: n.load,
                last_heartbeat_ms: n.last_heartbeat.elapsed().as_millis() as u64,
                state: self.scheduler.node_state(*id).map_or_else(|| "unknown".into(), |s| s.to_string()),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    fn send_node(&self, node: NodeId, command: NodeCommand) {
        if let Some(entry) = self.nodes.get(&node) {
            let _ = entry.commands.send(command);
        }
    }

    fn node_name(&self, node: NodeId) -> String {
        self.nodes.get(&node).map_or_else(|| format!("#{}", node.0), |n| n.info.name.clone())
    }
}

fn requirements(submission: &JobSubmission) -> JobRequirements {
    JobRequirements {
        memory_limit: submission.memory_limit,
        max_attempts: submission.max_attempts,
        priority: submission.priority,
        placement_timeout: Duration::from_millis(submission.placement_timeout_ms),
        platform: match &submission.kind {
            PayloadKind::Wasm => None,
            PayloadKind::Native { os, arch } => Some((os.clone(), arch.clone())),
        },
    }
}

/// The core's clock: tokio's, so tests can pause and advance it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
