//! The dispatcher's core: one task that drives the sans-IO [`Ledger`], fed by a closed [`Event`]
//! enum from the connection tasks. Every decision is the ledger's; this driver only moves events
//! in and carries [`Effect`]s out, and owns what the ledger may not: channels to connections,
//! spool files, the payload store, the journal writer thread and the clock.
//!
//! Connection tasks never touch shared state: they turn what they read into events, and the core
//! answers through each connection's unbounded command channel, so the core never waits on a slow
//! peer. Bulk bytes stay out of the core's memory: chunk inputs are spooled by the uploading
//! connection task and read back by the node's connection task when assigned; results are
//! appended to the spool as they are accepted and read back by the attached client's task.
//!
//! Each turn (a burst of events, a timeout or a tick) ends with [`Ledger::end_turn`]. When the
//! ledger hands over a journal batch ([`Effect::Commit`]), the journal writer thread syncs the
//! spool files it points into and commits it in one transaction while the core goes on; the
//! ledger keeps the promises the batch carries until the writer reports it durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ledger::jobs::{
    AttachCommand, AttachId, ClientId, Effect, Ledger, NodeCommand as LedgerCommand, RequestId, RestoredJob, Time,
};
use ledger::record::Extent;
use ledger::scheduler::{NodeId, SchedulerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;
use wire::proto::{ClientEvent, JobId, JobSubmission, JobSummary};

use crate::journal::{Journal, Recovered};
use crate::liveness::LastHeard;
use crate::payloads::PayloadStore;
use crate::spool::{Appender, Reader, Spool, SpoolFile};

mod commit;
mod events;
use commit::{journal_writer, CommitRequest, Committed};
pub(crate) use events::{Attachment, ClientCommand, Event, InputRef, NodeCommand};
pub(crate) use ledger::jobs::Refusal;

/// How often running jobs' progress is sent to their clients.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// A question waiting for the ledger's answer.
enum Pending {
    Summary(oneshot::Sender<Result<JobSummary, Refusal>>),
    Jobs(oneshot::Sender<Result<Vec<JobSummary>, Refusal>>),
}

/// A job's open spool files.
#[derive(Default)]
struct JobFiles {
    input: Option<Arc<Reader>>,
    results: Option<Appender>,
    /// The input file, to sync with the commit that records the input complete.
    input_sync: Option<std::fs::File>,
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
    files: HashMap<JobId, JobFiles>,
    spool: Spool,
    payloads: PayloadStore,
    commits: mpsc::Sender<CommitRequest>,
    committed: mpsc::Receiver<Committed>,
    commit_in_flight: bool,
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
        let jobs = recovered
            .jobs
            .into_iter()
            .map(|(job, record)| {
                let (inputs, results) = RestoredJob::reads(&record);
                // A job failed just before a crash lost its files before its end was durable.
                let gone = (inputs || results) && !spool.has(job);
                RestoredJob {
                    job,
                    inputs: if gone {
                        Err("its spool files are gone".into())
                    } else if inputs {
                        journal.inputs(job).map_err(Into::into)
                    } else {
                        Ok(Vec::new())
                    },
                    results: if results { journal.results(job).map_err(Into::into) } else { Ok(Vec::new()) },
                    record,
                }
            })
            .collect();
        let restored = ledger::jobs::Recovered { next_job: recovered.next_job, incarnation: recovered.incarnation, jobs };
        let ledger = Ledger::new(config, retention, restored, now());
        // A crash between forgetting a job and deleting its files leaves them behind.
        spool.remove_unknown(|job| ledger.knows(job));
        let (commits, commit_rx) = mpsc::channel(1);
        let (committed_tx, committed) = mpsc::channel(1);
        // The writer thread ends when the core drops its request channel.
        std::thread::Builder::new()
            .name("dispy-journal".into())
            .spawn(move || journal_writer(journal, commit_rx, committed_tx))?;
        let mut core = Self {
            ledger,
            nodes: HashMap::new(),
            clients: Vec::new(),
            attachments: HashMap::new(),
            requests: HashMap::new(),
            next_id: 1,
            files: HashMap::new(),
            spool,
            payloads,
            commits,
            committed,
            commit_in_flight: false,
        };
        // Records what the restore decided (resumed and failed jobs).
        core.end_turn();
        Ok(core)
    }

    /// Runs until every event sender is gone.
    pub(crate) async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.ledger.poll_timeout().map(Instant::from_std);
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
                    for (node, (_, heard)) in &self.nodes {
                        self.ledger.handle_sign_of_life(heard.get(), *node);
                    }
                    self.ledger.handle_timeout(now());
                }
                Some(committed) = self.committed.recv() => self.handle_committed(committed),
                _ = progress.tick() => {
                    self.ledger.handle_tick(now());
                    self.clients.retain(|(_, events)| !events.is_closed());
                }
            }
            self.end_turn();
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

    /// Carries out what the turn's inputs caused (storing results first, so they join this
    /// turn's batch), then ends the ledger's turn and carries out its decisions.
    fn end_turn(&mut self) {
        self.carry_out();
        loop {
            self.ledger.end_turn(now());
            if !self.carry_out() {
                break;
            }
        }
    }

    /// Carries out every pending effect; returns whether doing so fed the ledger new inputs.
    fn carry_out(&mut self) -> bool {
        let mut fed_back = false;
        while let Some(effect) = self.ledger.poll_effect() {
            fed_back |= self.carry_out_one(effect);
        }
        fed_back
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
                _ => warn!(request = request.0, "an answer for no such question"),
            },
            Effect::StoreResult { ticket, output } => {
                let stored = self.store_result(ticket.job, &output);
                self.ledger.handle_result_stored(now(), ticket, stored);
                return true;
            }
            Effect::Commit { batch, sync_inputs, sync_results } => {
                let mut sync: Vec<std::fs::File> =
                    sync_inputs.iter().filter_map(|job| self.files.get_mut(job)?.input_sync.take()).collect();
                for job in sync_results {
                    if let Some(appender) = self.files.get(&job).and_then(|f| f.results.as_ref()) {
                        match appender.sync_handle() {
                            Ok(file) => sync.push(file),
                            Err(e) => warn!(%job, error = %e, "cannot sync a results file"),
                        }
                    }
                }
                // The writer lives as long as the core; the ledger has one commit in flight.
                if self.commits.try_send(CommitRequest { batch, sync }).is_ok() {
                    self.commit_in_flight = true;
                } else {
                    self.ledger.handle_commit_failed(now(), &"the journal writer is gone");
                    return true;
                }
            }
            Effect::RemoveSpool(job) => {
                self.files.remove(&job);
                self.spool.remove(job);
            }
        }
        false
    }

    fn command_node(&mut self, node: NodeId, command: LedgerCommand) -> bool {
        if !self.nodes.contains_key(&node) {
            return false;
        }
        let command = match command {
            LedgerCommand::Send(msg) => NodeCommand::Send(msg),
            LedgerCommand::Assign { job, chunk, attempt, input } => match self.input_ref(job, input) {
                Ok(input) => NodeCommand::Assign { job, chunk, attempt, input },
                Err(e) => {
                    self.ledger.handle_input_unreadable(now(), job, chunk, &e);
                    return true;
                }
            },
            LedgerCommand::Payload(hash) => match self.payloads.load(&hash) {
                Ok(bytes) => NodeCommand::Payload(hash, bytes),
                Err(e) => {
                    warn!(payload = ?hash, error = %e, "cannot load a payload to ship");
                    return false;
                }
            },
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
            Event::NodeClosed { node, reason } => {
                self.ledger.handle_node_closed(now, node, &reason);
                self.nodes.remove(&node);
            }
            Event::Submit { submission, submitter, reply } => {
                let _ = reply.send(self.submit(now, submission, submitter));
            }
            Event::Input { job, extent } => self.ledger.handle_input(now, job, extent),
            Event::InputEnd { job, sync } => {
                self.files.entry(job).or_default().input_sync = Some(sync);
                self.ledger.handle_input_end(now, job);
            }
            Event::InputFailed { job, error } => self.ledger.handle_input_failed(now, job, &error),
            Event::Attach { job, commands, client, reply } => {
                let _ = reply.send(self.attach(job, commands, client));
            }
            Event::Release { job } => self.ledger.handle_release(job),
            Event::Cancel { job, reply } => {
                let request = self.pending(Pending::Summary(reply));
                self.ledger.handle_cancel(now, request, job);
            }
            Event::Status { job, reply } => {
                let request = self.pending(Pending::Summary(reply));
                self.ledger.handle_status(request, job);
            }
            Event::ListJobs { reply } => {
                let request = self.pending(Pending::Jobs(reply));
                self.ledger.handle_list_jobs(request);
            }
            Event::ListNodes { reply } => {
                let _ = reply.send(self.ledger.node_statuses(now));
            }
            Event::Drain { node, drain, reply } => {
                let _ = reply.send(self.ledger.handle_drain(now, &node, drain));
            }
        }
    }

    fn submit(
        &mut self,
        now: Time,
        submission: JobSubmission,
        submitter: mpsc::UnboundedSender<ClientEvent>,
    ) -> Result<(JobId, Appender), Refusal> {
        if !self.payloads.contains(&submission.payload) {
            return Err(Refusal::PayloadNotUploaded);
        }
        let client = self.client_id(submitter);
        let job = self.ledger.handle_submit(now, client, submission)?;
        match self.spool.appender(job, SpoolFile::Input) {
            Ok(appender) => Ok((job, appender)),
            Err(e) => {
                self.ledger.handle_input_failed(now, job, &format!("cannot create its spool file: {e}"));
                Err(Refusal::InputStorage(e))
            }
        }
    }

    fn attach(
        &mut self,
        job: JobId,
        commands: mpsc::UnboundedSender<ClientCommand>,
        client: mpsc::UnboundedSender<ClientEvent>,
    ) -> Result<Attachment, Refusal> {
        let results = if self.ledger.attachable(job)? {
            let files = self.files.entry(job).or_default();
            let reader = self.spool.reader(job, SpoolFile::Results).or_else(|_| {
                // No result yet: create the file so the reader has something to open.
                if files.results.is_none() {
                    files.results = Some(self.spool.appender(job, SpoolFile::Results)?);
                }
                self.spool.reader(job, SpoolFile::Results)
            });
            Some(reader.map_err(Refusal::ResultsUnreadable)?)
        } else {
            None
        };
        let attach = AttachId(self.fresh_id());
        self.attachments.insert(attach, (job, commands));
        let client = self.client_id(client);
        self.ledger.handle_attach(job, attach, client);
        Ok(Attachment { results })
    }

    /// Appends a result to the job's results spool.
    fn store_result(&mut self, job: JobId, output: &[u8]) -> std::io::Result<Extent> {
        let files = self.files.entry(job).or_default();
        let appender = match &mut files.results {
            Some(appender) => appender,
            slot => slot.insert(self.spool.appender(job, SpoolFile::Results)?),
        };
        appender.append(output)
    }

    fn input_ref(&mut self, job: JobId, extent: Extent) -> std::io::Result<InputRef> {
        let files = self.files.entry(job).or_default();
        let reader = match &mut files.input {
            Some(reader) => reader,
            slot => slot.insert(Arc::new(self.spool.reader(job, SpoolFile::Input)?)),
        };
        Ok(InputRef { reader: Arc::clone(reader), extent })
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
        match committed.failed {
            None => self.ledger.handle_committed(),
            Some(error) => self.ledger.handle_commit_failed(now(), &error),
        }
    }

    /// On shutdown: commits what is still gathering, so a graceful stop loses nothing.
    async fn flush(&mut self) {
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
