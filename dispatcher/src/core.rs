//! The dispatcher's core: one task that drives the sans-IO [`Ledger`], fed by a closed [`Event`]
//! enum from the connection tasks. Every decision is the ledger's; this driver only moves events
//! in and carries [`Effect`]s out, and owns what the ledger may not: channels to connections, the
//! disk thread (spool files, payloads) and the journal writer behind it, and the clock.
//!
//! Connection tasks never touch shared state: they turn what they read into events, and the core
//! answers through each connection's unbounded command channel, so the core never waits on a slow
//! peer. Bulk bytes stay out of the core's memory but for a bounded write-through cache: chunk
//! inputs are spooled by the uploading connection task, and the core keeps up to 64 MiB of them
//! (`core::input_cache`) so a chunk assigned soon after its upload goes from memory; others are
//! read back by the node's connection task when assigned. Results are appended to the spool as
//! they are accepted and read back by the attached client's task.
//!
//! Each turn (a burst of events, a timeout or a tick) ends with [`Ledger::end_turn`]. Disk work
//! goes to the disk thread (`core::disk`) and its outcome comes back as input: a stored result,
//! an opened file. When the ledger hands over a journal batch ([`Effect::Commit`]), the disk
//! thread passes it, with the spool files to sync, to the journal writer thread, which commits it
//! in one transaction while the core goes on; the ledger keeps the promises the batch carries
//! until the writer reports it durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ledger::jobs::{
    AttachCommand, AttachId, ClientId, Effect, Ledger, LedgerConfig, NodeCommand as LedgerCommand, RequestId,
    RestoredJob, StoreTicket, Time,
};
use ledger::scheduler::NodeId;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;
use wire::observe::{Explanation, LogPage};
use wire::proto::{ChunkFailure, ChunkReport, ClientEvent, DispatcherToNode, FailureKind, JobId, JobSummary, NodeStatus};

use crate::journal::{Journal, Recovered};
use crate::liveness::LastHeard;
use crate::payloads::PayloadStore;
use crate::spool::{Reader, Spool, SpoolFile};

mod commit;
mod disk;
mod events;
mod input_cache;
mod observe;
use commit::{journal_writer, Committed};
use disk::{disk_thread, DiskDone, DiskRequest, PendingAttach, PreparedInput};
use input_cache::{InputCache, INPUT_CACHE_BUDGET, SMALLEST_CACHED};
pub(crate) use events::{Attachment, ClientCommand, Event, InputRef, NodeCommand, Upload};
pub(crate) use observe::Observer;
pub(crate) use ledger::jobs::Refusal;

/// How often running jobs' progress is sent to their clients.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// How often payload files no job uses are looked for (`PayloadStore::collect`).
const PAYLOAD_COLLECTION_INTERVAL: Duration = Duration::from_secs(600);

/// A question waiting for the ledger's answer.
enum Pending {
    Summary(oneshot::Sender<Result<JobSummary, Refusal>>),
    Jobs(oneshot::Sender<Result<Vec<JobSummary>, Refusal>>),
    Nodes(oneshot::Sender<Result<Vec<NodeStatus>, Refusal>>),
    /// A resumed upload of this job, answered with where it goes on and its appender.
    Resume(JobId, oneshot::Sender<Result<(ledger::jobs::Resumed, Option<Upload>), Refusal>>),
    /// `logs`, answered by the disk once the ledger allowed it.
    Logs(oneshot::Sender<Result<LogPage, Refusal>>),
    /// `explain`.
    Explain(oneshot::Sender<Result<Box<Explanation>, Refusal>>),
}

/// The core's state: the ledger and the I/O it cannot do.
pub(crate) struct Core {
    ledger: Ledger,
    nodes: HashMap<NodeId, (mpsc::UnboundedSender<NodeCommand>, LastHeard)>,
    /// Client connections' event channels, named for the ledger.
    clients: Vec<(ClientId, mpsc::UnboundedSender<ClientEvent>)>,
    attachments: HashMap<AttachId, (JobId, mpsc::UnboundedSender<ClientCommand>)>,
    requests: HashMap<RequestId, Pending>,
    next_id: u64,
    /// Each job's input file, for node connections to read chunks from.
    inputs: HashMap<JobId, Arc<Reader>>,
    /// Chunk inputs just uploaded, sent from memory when assigned while still here.
    input_cache: InputCache,
    /// Uploads in progress: dropping a job's sender stops its upload.
    uploads: HashMap<JobId, oneshot::Sender<()>>,
    /// The input file of the next job id, created ahead so a submission is accepted without a
    /// round trip to the disk thread; `preparing` while the disk creates it.
    prepared: Option<PreparedInput>,
    preparing: bool,
    disk: mpsc::UnboundedSender<DiskRequest>,
    /// Accepted results to append, sent to the disk together at the end of a turn.
    results_to_store: Vec<(StoreTicket, Bytes)>,
    disk_done: mpsc::UnboundedReceiver<DiskDone>,
    committed: mpsc::Receiver<Committed>,
    commit_in_flight: bool,
    /// The payload store the disk thread loads from, whose memory the core empties of payloads
    /// no running job uses.
    payloads: PayloadStore,
    /// Metrics and the status page's snapshots, from what the ledger observes.
    observer: Observer,
}

impl Core {
    /// Builds the core from what the journal recovered, resuming unfinished jobs, and starts the
    /// journal writer thread.
    ///
    /// # Errors
    /// If the thread cannot be started.
    pub(crate) fn new(
        config: LedgerConfig,
        journal: Journal,
        recovered: Recovered,
        spool: Spool,
        payloads: PayloadStore,
        observer: Observer,
    ) -> std::io::Result<Self> {
        let mut resumed = Vec::new();
        let jobs = recovered
            .jobs
            .into_iter()
            .map(|(job, record)| {
                let (inputs, results) = RestoredJob::reads(&record);
                if inputs {
                    resumed.push(job);
                }
                // A job failed just before a crash lost its files before its end was durable; a
                // succeeded one whose results are gone was fetched (released) just before.
                let gone = (inputs || results) && !spool.has_data(job);
                let released_before = gone && !inputs;
                RestoredJob {
                    job,
                    inputs: if gone {
                        Err("its spool files are gone".into())
                    } else if inputs {
                        journal.inputs(job).map_err(Into::into)
                    } else {
                        Ok(Vec::new())
                    },
                    results: if results && !released_before {
                        journal.results(job).map_err(Into::into)
                    } else {
                        Ok(Vec::new())
                    },
                    record,
                }
            })
            .collect();
        let restored = ledger::jobs::Recovered {
            next_job: recovered.next_job,
            incarnation: recovered.incarnation,
            jobs,
            holds: recovered.holds,
        };
        let ledger = Ledger::new(config, restored, now());
        // A crash between forgetting a job and deleting its files leaves them behind.
        spool.remove_unknown(|job| ledger.knows(job));
        // Resumed jobs' chunks are read back from their input files.
        let inputs = resumed.into_iter().filter_map(|job| Some((job, Arc::new(spool.reader(job, SpoolFile::Input).ok()?)))).collect();
        let (commits, commit_rx) = mpsc::channel(1);
        let (committed_tx, committed) = mpsc::channel(1);
        let (disk, disk_rx) = mpsc::unbounded_channel();
        let (disk_done_tx, disk_done) = mpsc::unbounded_channel();
        // Both threads end when the core drops its request channel.
        std::thread::Builder::new()
            .name("dispy-journal".into())
            .spawn(move || journal_writer(journal, commit_rx, committed_tx))?;
        std::thread::Builder::new()
            .name("dispy-disk".into())
            .spawn({
                let payloads = payloads.clone();
                move || disk_thread(spool, payloads, disk_rx, disk_done_tx, commits)
            })?;
        let mut core = Self {
            ledger,
            nodes: HashMap::new(),
            clients: Vec::new(),
            attachments: HashMap::new(),
            requests: HashMap::new(),
            next_id: 1,
            inputs,
            input_cache: InputCache::new(INPUT_CACHE_BUDGET, SMALLEST_CACHED),
            uploads: HashMap::new(),
            prepared: None,
            preparing: false,
            disk,
            results_to_store: Vec::new(),
            disk_done,
            committed,
            commit_in_flight: false,
            payloads,
            observer,
        };
        // Records what the restore decided (resumed and failed jobs).
        core.end_turn();
        core.prepare_input();
        Ok(core)
    }

    /// Runs until every event sender is gone.
    pub(crate) async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: a restarted dispatcher sheds what piled up while it ran before.
        let mut payload_collection = tokio::time::interval(PAYLOAD_COLLECTION_INTERVAL);
        payload_collection.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.ledger.poll_timeout().map(Instant::from_std);
            tokio::select! {
                // The disk's news first: an event may depend on it (input sent once the core
                // has the job's input file).
                biased;
                Some(done) = self.disk_done.recv() => self.handle_disk(done),
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
                    let now = now();
                    // Only the scheduler's timers judge silence; the commit policy's come often.
                    if self.ledger.scheduler_due(now) {
                        for (node, (_, heard)) in &self.nodes {
                            self.ledger.handle_sign_of_life(heard.get(), *node);
                        }
                    }
                    self.ledger.handle_timeout(now);
                }
                Some(committed) = self.committed.recv() => self.handle_committed(committed),
                _ = progress.tick() => {
                    let now = now();
                    self.ledger.handle_tick(now);
                    self.observer.tick(&self.ledger, now);
                    self.clients.retain(|(_, events)| !events.is_closed());
                    self.payloads.forget_unneeded(|payload| self.ledger.payload_needed(payload));
                }
                _ = payload_collection.tick() => {
                    self.ask_disk(DiskRequest::CollectPayloads { in_use: self.ledger.payloads_in_use() });
                }
            }
            self.end_turn();
        }
    }

    /// Handles events already queued, up to a bound so the rest of the loop keeps its turn; the
    /// disk's news before each, since an event may depend on it.
    fn handle_queued(&mut self, events: &mut mpsc::Receiver<Event>) {
        for _ in 0..1024 {
            while let Ok(done) = self.disk_done.try_recv() {
                self.handle_disk(done);
            }
            match events.try_recv() {
                Ok(event) => self.handle_event(event),
                Err(_) => break,
            }
        }
    }

    fn handle_disk(&mut self, done: DiskDone) {
        let now = now();
        match done {
            DiskDone::InputReady { job, reader } => {
                self.inputs.insert(job, reader);
            }
            DiskDone::InputPrepared(prepared) => {
                self.preparing = false;
                match prepared {
                    // Ids only grow: one taken meanwhile went through `CreateInput`.
                    Ok(prepared) if prepared.job == self.ledger.next_job() => self.prepared = Some(prepared),
                    Ok(_) => self.prepare_input(),
                    // The next submission creates its file itself, and says why if it cannot.
                    Err(e) => warn!(error = %e, "cannot create the next job's input file ahead"),
                }
            }
            DiskDone::InputFailed { job, error } => self.ledger.handle_input_failed(now, job, &error),
            DiskDone::Attach { pending, results } => {
                let PendingAttach { caller, job, commands, client, reply } = pending;
                let attached = match (results, self.ledger.attachable(&caller, job)) {
                    (_, Err(refusal)) => Err(refusal),
                    (Err(e), Ok(_)) => Err(Refusal::ResultsUnreadable(e)),
                    (Ok(results), Ok(_)) => {
                        self.attach(job, commands, client);
                        Ok(Attachment { results: Some(results) })
                    }
                };
                let _ = reply.send(attached);
            }
            DiskDone::Stored(stored) => {
                for (ticket, stored) in stored {
                    self.ledger.handle_result_stored(now, ticket, stored);
                }
            }
            DiskDone::Combine { node, attempt, assignment } => match assignment {
                Ok(assignment) => {
                    if let Some((commands, _)) = self.nodes.get(&node) {
                        let _ = commands.send(NodeCommand::Send(DispatcherToNode::Assign(assignment)));
                    }
                }
                Err(e) => {
                    // Counted as a failed attempt, as for an unreadable chunk input.
                    let message = format!("dispatcher could not read the results to combine: {e}");
                    let failure = ChunkFailure { kind: FailureKind::Node, message };
                    let report = ChunkReport { attempt, outcome: Err(failure), run_nanos: 0, log: Bytes::new(), combined_with: None };
                    self.ledger.handle_report(now, node, report);
                }
            },
            DiskDone::Payload { node, payload, bytes } => match bytes {
                Ok(bytes) => {
                    if let Some((commands, _)) = self.nodes.get(&node) {
                        let _ = commands.send(NodeCommand::Payload(payload, bytes));
                    }
                }
                Err(e) => warn!(?payload, error = %e, "cannot load a payload to ship"),
            },
        }
    }

    /// Ends the ledger's turn and carries out its decisions, again while doing so feeds it.
    fn end_turn(&mut self) {
        loop {
            self.ledger.end_turn(now());
            if !self.carry_out() {
                break;
            }
        }
        self.observer.drain(&mut self.ledger);
    }

    /// Carries out every pending effect; returns whether doing so fed the ledger new inputs.
    fn carry_out(&mut self) -> bool {
        let mut fed_back = false;
        while let Some(effect) = self.ledger.poll_effect() {
            fed_back |= self.carry_out_one(effect);
        }
        fed_back | self.store_results()
    }

    fn carry_out_one(&mut self, effect: Effect) -> bool {
        match effect {
            Effect::Node { node, command } => return self.command_node(node, command),
            Effect::Client { client, event } => {
                if let Some((_, events)) = self.clients.iter().find(|(id, _)| *id == client) {
                    let _ = events.send(event);
                }
            }
            Effect::Attachment { attach, command } => {
                let last = matches!(command, AttachCommand::Event(ClientEvent::JobSucceeded { .. } | ClientEvent::JobFailed { .. }));
                let Some((job, commands)) = self.attachments.get(&attach) else { return false };
                let job = *job;
                match &command {
                    AttachCommand::Output(extent) => self.observer.sent_result(extent.len),
                    AttachCommand::Result(bytes) => self.observer.sent_result(bytes.len() as u64),
                    AttachCommand::OutputEnd | AttachCommand::Event(_) => {}
                }
                let sent = commands.send(command).is_ok();
                if last || !sent {
                    self.attachments.remove(&attach);
                }
                if !sent && !last {
                    self.ledger.handle_attachment_closed(job, attach);
                    return true;
                }
            }
            Effect::Answer { request, answer } => match (self.requests.remove(&request), answer) {
                (Some(Pending::Summary(reply)), ledger::jobs::Answer::Summary(summary)) => drop(reply.send(summary)),
                (Some(Pending::Jobs(reply)), ledger::jobs::Answer::Jobs(jobs)) => drop(reply.send(jobs)),
                (Some(Pending::Nodes(reply)), ledger::jobs::Answer::Nodes(nodes)) => drop(reply.send(nodes)),
                (Some(Pending::Resume(job, reply)), ledger::jobs::Answer::Resume(resumed)) => match resumed {
                    Ok(resumed) if !resumed.complete => {
                        let (stop, stopped) = oneshot::channel();
                        self.uploads.insert(job, stop);
                        return self.ask_disk(DiskRequest::OpenInput { job, resumed, stopped, reply });
                    }
                    Ok(resumed) => drop(reply.send(Ok((resumed, None)))),
                    Err(refusal) => drop(reply.send(Err(refusal))),
                },
                (Some(Pending::Logs(reply)), ledger::jobs::Answer::Logs(query)) => match query {
                    Ok(query) => return self.ask_disk(DiskRequest::ReadLogs { query, reply }),
                    Err(refusal) => drop(reply.send(Err(refusal))),
                },
                (Some(Pending::Explain(reply)), ledger::jobs::Answer::Explain(explained)) => drop(reply.send(explained)),
                _ => warn!(request = request.0, "an answer for no such question"),
            },
            Effect::StoreResult { ticket, output } => self.results_to_store.push((ticket, output)),
            Effect::Commit { batch, sync_inputs, sync_results } => {
                self.commit_in_flight = true;
                return self.ask_disk(DiskRequest::Commit { batch, sync_inputs, sync_results });
            }
            Effect::RemoveSpool(job) => {
                self.inputs.remove(&job);
                self.input_cache.forget_job(job);
                self.uploads.remove(&job);
                return self.ask_disk(DiskRequest::Remove(job));
            }
            Effect::ForgetSpool(job) => {
                self.inputs.remove(&job);
                self.input_cache.forget_job(job);
                self.uploads.remove(&job);
                return self.ask_disk(DiskRequest::Forget(job));
            }
            Effect::StoreLog(record) => return self.ask_disk(DiskRequest::StoreLog(record)),
        }
        false
    }

    fn command_node(&mut self, node: NodeId, command: LedgerCommand) -> bool {
        if !self.nodes.contains_key(&node) {
            return false;
        }
        let command = match command {
            LedgerCommand::Send(msg) => NodeCommand::Send(msg),
            LedgerCommand::Assign { job, chunk, attempt, input: extent } => {
                let input = match (self.input_cache.take(job, extent), self.inputs.get(&job)) {
                    (Some(bytes), _) => Some(InputRef::Cached(bytes)),
                    (None, Some(reader)) => Some(InputRef::Spooled { reader: Arc::clone(reader), extent }),
                    (None, None) => None,
                };
                let Some(input) = input else {
                    self.ledger.handle_input_unreadable(now(), job, chunk, &"its input file is not open");
                    return true;
                };
                self.observer.sent_input(extent.len);
                NodeCommand::Assign { job, chunk, attempt, input }
            }
            LedgerCommand::Combine { job, chunk, attempt, inputs } => {
                return self.ask_disk(DiskRequest::ReadCombine { node, job, chunk, attempt, inputs });
            }
            LedgerCommand::Payload(payload) => return self.ask_disk(DiskRequest::LoadPayload { node, payload }),
            LedgerCommand::Close(reason) => NodeCommand::Close(reason),
        };
        let close = matches!(command, NodeCommand::Close(_));
        if let Some((commands, _)) = self.nodes.get(&node) {
            let _ = commands.send(command);
        }
        if close {
            self.nodes.remove(&node);
        }
        false
    }

    fn handle_event(&mut self, event: Event) {
        let now = now();
        match event {
            Event::NodeRegistered { info, address, commands, heard, reply } => {
                let node = self.ledger.handle_node_registered(now, info, address);
                self.nodes.insert(node, (commands, heard));
                let _ = reply.send(node);
            }
            Event::NodeMessage { node, msg } => self.ledger.handle_node_message(now, node, msg),
            Event::NodeReport { node, report } => self.ledger.handle_report(now, node, report),
            Event::NodeClosed { node, reason, lost } => {
                if lost {
                    self.ledger.handle_node_disconnected(now, node, &reason);
                } else {
                    self.ledger.handle_node_closed(now, node, &reason);
                }
                self.nodes.remove(&node);
            }
            Event::Submit { caller, submission, submitter, reply } => {
                let client = self.client_id(submitter);
                let payload = submission.payload;
                match self.ledger.handle_submit(now, client, &caller, submission) {
                    Ok(job) => {
                        let (stop, stopped) = oneshot::channel();
                        self.uploads.insert(job, stop);
                        match self.prepared.take() {
                            Some(PreparedInput { job: ready, appender, reader }) if ready == job => {
                                self.inputs.insert(job, reader);
                                let _ = reply.send(Ok(Upload { job, appender, stopped }));
                            }
                            // Two submissions in one turn: the second waits for the disk.
                            _ => {
                                self.ask_disk(DiskRequest::CreateInput { job, payload, stopped, reply });
                            }
                        }
                        self.prepare_input();
                    }
                    Err(refusal) => drop(reply.send(Err(refusal))),
                }
            }
            Event::Input { job, extent, bytes } => {
                self.input_cache.insert(job, extent, bytes);
                self.ledger.handle_input(now, job, extent);
            }
            Event::InputEnd { job, sync } => {
                self.uploads.remove(&job);
                // Handed over before the commit that syncs it: the disk keeps order.
                self.ask_disk(DiskRequest::InputEnded { job, sync });
                self.ledger.handle_input_end(now, job);
            }
            Event::InputFailed { job, error } => {
                self.uploads.remove(&job);
                self.ledger.handle_input_failed(now, job, &error);
            }
            Event::InputInterrupted { job } => {
                self.uploads.remove(&job);
                self.ledger.handle_input_interrupted(now, job);
            }
            Event::ResumeInput { caller, job, submitter, reply } => {
                let client = self.client_id(submitter);
                let request = self.pending(Pending::Resume(job, reply));
                self.ledger.handle_resume_input(request, client, &caller, job);
            }
            Event::Attach { caller, job, commands, client, reply } => match self.ledger.attachable(&caller, job) {
                Err(refusal) => drop(reply.send(Err(refusal))),
                Ok(true) => {
                    self.ask_disk(DiskRequest::OpenResults(PendingAttach { caller, job, commands, client, reply }));
                }
                Ok(false) => {
                    self.attach(job, commands, client);
                    let _ = reply.send(Ok(Attachment { results: None }));
                }
            },
            Event::Release { caller, job } => self.ledger.handle_release(&caller, job),
            Event::Cancel { caller, job, reply } => {
                let request = self.pending(Pending::Summary(reply));
                self.ledger.handle_cancel(now, request, &caller, job);
            }
            Event::Status { caller, job, reply } => {
                let request = self.pending(Pending::Summary(reply));
                self.ledger.handle_status(request, &caller, job);
            }
            Event::ListJobs { caller, reply } => {
                let request = self.pending(Pending::Jobs(reply));
                self.ledger.handle_list_jobs(request, &caller);
            }
            Event::ListNodes { reply } => {
                let _ = reply.send(self.ledger.node_statuses(now));
            }
            Event::Drain { caller, node, drain, reply } => {
                let request = self.pending(Pending::Nodes(reply));
                self.ledger.handle_drain(now, request, &caller, &node, drain);
            }
            Event::Logs { caller, job, chunk, from, reply } => {
                let request = self.pending(Pending::Logs(reply));
                self.ledger.handle_logs(request, &caller, job, chunk, from);
            }
            Event::Explain { caller, job, reply } => {
                let request = self.pending(Pending::Explain(reply));
                self.ledger.handle_explain(request, &caller, job);
            }
        }
    }

    /// Starts following `job` for a client.
    fn attach(
        &mut self,
        job: JobId,
        commands: mpsc::UnboundedSender<ClientCommand>,
        client: mpsc::UnboundedSender<ClientEvent>,
    ) {
        let attach = AttachId(self.fresh_id());
        self.attachments.insert(attach, (job, commands));
        let client = self.client_id(client);
        self.ledger.handle_attach(job, attach, client);
    }

    /// Hands the results accepted since the last call to the disk in one request; returns
    /// what [`Core::ask_disk`] does.
    fn store_results(&mut self) -> bool {
        if self.results_to_store.is_empty() {
            return false;
        }
        let results = std::mem::take(&mut self.results_to_store);
        self.ask_disk(DiskRequest::Store(results))
    }

    /// Asks the disk for the next job id's input file unless it is there or on its way.
    fn prepare_input(&mut self) {
        if self.prepared.is_none() && !self.preparing {
            self.preparing = true;
            let job = self.ledger.next_job();
            self.ask_disk(DiskRequest::PrepareInput { job });
        }
    }

    /// Hands the disk thread a request; returns whether the ledger heard something instead
    /// (the disk thread is gone, which only happens when the process is going down).
    fn ask_disk(&mut self, request: DiskRequest) -> bool {
        // The disk keeps the order of requests: results accepted before this one go first.
        if !matches!(request, DiskRequest::Store(_)) && self.store_results() {
            return true;
        }
        if self.disk.send(request).is_ok() {
            return false;
        }
        warn!("the disk thread is gone; nothing more is stored");
        if self.commit_in_flight {
            self.commit_in_flight = false;
            self.ledger.handle_commit_failed(now(), &"the disk thread is gone");
        }
        true
    }

    /// The ledger's name for a connection's event channel.
    fn client_id(&mut self, events: mpsc::UnboundedSender<ClientEvent>) -> ClientId {
        if let Some((id, _)) = self.clients.iter().find(|(_, known)| known.same_channel(&events)) {
            return *id;
        }
        let id = ClientId(self.fresh_id());
        self.clients.push((id, events));
        id
    }

    fn pending(&mut self, pending: Pending) -> RequestId {
        let request = RequestId(self.fresh_id());
        self.requests.insert(request, pending);
        request
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A commit is durable (or failed): the ledger keeps its promises.
    fn handle_committed(&mut self, committed: Committed) {
        self.commit_in_flight = false;
        self.observer.committed(committed.took);
        match committed.failed {
            None => self.ledger.handle_committed(),
            Some(error) => self.ledger.handle_commit_failed(now(), &error),
        }
    }

    /// On shutdown: commits what is still gathering, so a graceful stop loses nothing.
    async fn flush(&mut self) {
        while let Ok(done) = self.disk_done.try_recv() {
            self.handle_disk(done);
        }
        self.end_turn();
        self.await_commit().await;
        if self.ledger.flush(now()) {
            self.carry_out();
            self.await_commit().await;
        }
    }

    async fn await_commit(&mut self) {
        if self.commit_in_flight {
            if let Some(committed) = self.committed.recv().await {
                self.handle_committed(committed);
                self.carry_out();
            }
        }
    }
}

/// The core's clock: tokio's, so tests can pause and advance it, and the wall clock for records.
fn now() -> Time {
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Time { at: Instant::now().into_std(), unix_ms }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
