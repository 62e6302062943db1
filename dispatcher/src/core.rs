//! The dispatcher's core: one task that owns the [`Scheduler`], the node registry and every
//! job's data, fed by a closed [`Event`] enum from the connection tasks.
//!
//! Connection tasks never touch shared state: they turn what they read into events, and the core
//! answers through each connection's unbounded command channel, so the core never waits on a slow
//! peer. The core reads the clock once per turn and hands `now` to the scheduler.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use common::proto::{
    Assignment, ChunkIndex, ChunkReport, ClientEvent, DispatcherToNode, JobId,
    JobProgress, JobSpec, JobSubmission, NodeInfo, NodeStatus, NodeToDispatcher, PayloadHash,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::scheduler::{
    Action, JobRequirements, NodeId, NodeResources, Scheduler, SchedulerConfig,
};

/// How often running jobs' progress is sent to their clients.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// What the core tells a node connection to do.
#[derive(Debug)]
pub(crate) enum NodeCommand {
    /// Send on the work stream.
    Send(DispatcherToNode),
    /// Open a payload stream with these bytes.
    Payload(PayloadHash, Bytes),
    /// Close the connection.
    Close(String),
}

/// What the core tells a client connection to do.
#[derive(Debug)]
pub(crate) enum ClientCommand {
    /// Send on the control stream.
    Event(ClientEvent),
    /// Append the next chunk result, in chunk order, to the output stream.
    Output(Bytes),
    /// Every result has been sent; finish the output stream.
    OutputEnd,
}

/// Everything that can happen to the core.
#[derive(Debug)]
pub(crate) enum Event {
    /// A node finished its handshake and registration.
    NodeRegistered {
        info: NodeInfo,
        address: String,
        commands: mpsc::UnboundedSender<NodeCommand>,
        reply: oneshot::Sender<NodeId>,
    },
    /// A control message from a registered node.
    NodeMessage { node: NodeId, msg: NodeToDispatcher },
    /// A chunk report from a registered node.
    NodeReport { node: NodeId, report: ChunkReport },
    /// A node's connection ended.
    NodeClosed { node: NodeId, reason: String },
    /// Does the dispatcher hold this payload?
    HasPayload { hash: PayloadHash, reply: oneshot::Sender<bool> },
    /// A client uploaded a (verified) payload.
    PayloadUploaded { hash: PayloadHash, bytes: Bytes },
    /// A client submits a job.
    Submit {
        submission: JobSubmission,
        commands: mpsc::UnboundedSender<ClientCommand>,
        reply: oneshot::Sender<Result<JobId, String>>,
    },
    /// The next chunk input of a job.
    Input { job: JobId, input: Bytes },
    /// A job's input ended.
    InputEnd { job: JobId },
    /// A job's client went away.
    ClientGone { job: JobId },
    /// `dispy-submit nodes`.
    ListNodes { reply: oneshot::Sender<Vec<NodeStatus>> },
}

struct NodeEntry {
    info: NodeInfo,
    address: String,
    commands: mpsc::UnboundedSender<NodeCommand>,
    payloads: HashSet<PayloadHash>,
    last_heartbeat: Instant,
    busy: u32,
    load: f32,
    memory_available: u64,
}

struct JobEntry {
    submission: JobSubmission,
    payload: Bytes,
    commands: mpsc::UnboundedSender<ClientCommand>,
    /// Inputs of chunks without an accepted result; dropped once accepted.
    inputs: HashMap<ChunkIndex, Bytes>,
    chunks: u64,
    /// Accepted results waiting for an earlier chunk, so output leaves in order.
    reorder: BTreeMap<ChunkIndex, Bytes>,
    next_output: ChunkIndex,
    /// What the client was last told, so unchanged progress is not resent.
    last_progress: Option<JobProgress>,
}

/// The core's state.
pub(crate) struct Core {
    scheduler: Scheduler,
    nodes: HashMap<NodeId, NodeEntry>,
    jobs: HashMap<JobId, JobEntry>,
    payloads: HashMap<PayloadHash, Bytes>,
    next_node: u64,
    next_job: u64,
}

impl Core {
    pub(crate) fn new(config: SchedulerConfig) -> Self {
        Self {
            scheduler: Scheduler::new(config),
            nodes: HashMap::new(),
            jobs: HashMap::new(),
            payloads: HashMap::new(),
            next_node: 1,
            next_job: 1,
        }
    }

    /// Runs until every event sender is gone.
    pub(crate) async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.scheduler.poll_timeout().map(Instant::from_std);
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { return };
                    self.handle_event(event);
                    // Take whatever else is already queued before acting, so a burst of reports
                    // becomes one round of assignments.
                    for _ in 0..1024 {
                        match events.try_recv() {
                            Ok(event) => self.handle_event(event),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep_until(deadline) => self.scheduler.handle_timeout(now()),
                _ = progress.tick() => self.send_progress(),
            }
            self.apply_actions();
        }
    }

    fn handle_event(&mut self, event: Event) {
        let now = now();
        match event {
            Event::NodeRegistered { info, address, commands, reply } => {
                let node = NodeId(self.next_node);
                self.next_node += 1;
                info!(node = %info.name, %address, slots = info.slots, cores = info.cores,
                    memory = %common::units::format_size(info.memory_total), os = %info.os, arch = %info.arch,
                    "node joined");
                self.scheduler.handle_node_joined(now, node, NodeResources {
                    name: info.name.clone(),
                    slots: info.slots,
                    memory_total: info.memory_total,
                    memory_available: info.memory_available,
                });
                let entry = NodeEntry {
                    payloads: info.cached_payloads.iter().copied().collect(),
                    memory_available: info.memory_available,
                    info,
                    address,
                    commands,
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
            Event::HasPayload { hash, reply } => {
                let _ = reply.send(self.payloads.contains_key(&hash));
            }
            Event::PayloadUploaded { hash, bytes } => {
                self.payloads.insert(hash, bytes);
            }
            Event::Submit { submission, commands, reply } => {
                let Some(payload) = self.payloads.get(&submission.payload).cloned() else {
                    let _ = reply.send(Err("payload was not uploaded".into()));
                    return;
                };
                let job = JobId(self.next_job);
                self.next_job += 1;
                info!(%job, name = %submission.name, payload = ?submission.payload, "job submitted");
                self.scheduler.handle_job_submitted(now, job, JobRequirements {
                    memory_limit: submission.memory_limit,
                    max_attempts: submission.max_attempts,
                    priority: submission.priority,
                    placement_timeout: Duration::from_millis(submission.placement_timeout_ms),
                });
                self.jobs.insert(job, JobEntry {
                    submission,
                    payload,
                    commands,
                    inputs: HashMap::new(),
                    chunks: 0,
                    reorder: BTreeMap::new(),
                    next_output: 0,
                    last_progress: None,
                });
                let _ = reply.send(Ok(job));
            }
            Event::Input { job, input } => {
                if let Some(entry) = self.jobs.get_mut(&job) {
                    entry.inputs.insert(entry.chunks, input);
                    entry.chunks += 1;
                    self.scheduler.handle_chunks_added(now, job, 1);
                }
            }
            Event::InputEnd { job } => {
                if let Some(entry) = self.jobs.get(&job) {
                    debug!(%job, chunks = entry.chunks, "input complete");
                    self.scheduler.handle_input_complete(now, job);
                }
            }
            Event::ClientGone { job } => {
                if self.jobs.remove(&job).is_some() {
                    info!(%job, "client went away; job cancelled");
                    self.scheduler.handle_cancel(now, job);
                }
            }
            Event::ListNodes { reply } => {
                let _ = reply.send(self.node_statuses());
            }
        }
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
                self.close_node(node, "registered twice".into());
            }
        }
    }

    fn handle_report(&mut self, now: std::time::Instant, node: NodeId, report: ChunkReport) {
        match report.outcome {
            Ok(output) => {
                let Some((job, chunk)) = self.scheduler.handle_chunk_succeeded(now, node, report.attempt) else {
                    debug!(attempt = %report.attempt, "late or duplicate result discarded");
                    return;
                };
                let Some(entry) = self.jobs.get_mut(&job) else { return };
                entry.inputs.remove(&chunk);
                entry.reorder.insert(chunk, output);
                while let Some(output) = entry.reorder.remove(&entry.next_output) {
                    let _ = entry.commands.send(ClientCommand::Output(output));
                    entry.next_output += 1;
                }
            }
            Err(failure) => {
                warn!(node = %self.node_name(node), attempt = %report.attempt, kind = ?failure.kind, "attempt failed: {failure}");
                self.scheduler.handle_chunk_failed(now, node, report.attempt, failure);
            }
        }
    }

    fn apply_actions(&mut self) {
        while let Some(action) = self.scheduler.poll_action() {
            match action {
                Action::StartJob { node, job } => self.start_job(node, job),
                Action::Assign { node, job, chunk, attempt } => {
                    let input = self.jobs.get(&job).and_then(|j| j.inputs.get(&chunk)).cloned();
                    match (input, self.nodes.get(&node)) {
                        (Some(input), Some(entry)) => {
                            let assignment = Assignment { job, chunk, attempt, input };
                            let _ = entry.commands.send(NodeCommand::Send(DispatcherToNode::Assign(assignment)));
                        }
                        // The scheduler only assigns chunks of live jobs to live nodes.
                        _ => warn!(%job, chunk, "assignment for a job or node the core no longer has"),
                    }
                }
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
                Action::JobSucceeded { job } => {
                    if let Some(entry) = self.jobs.remove(&job) {
                        info!(%job, chunks = entry.chunks, "job succeeded");
                        let progress = JobProgress { done: entry.chunks, total: entry.chunks, input_complete: true, ..JobProgress::default() };
                        let _ = entry.commands.send(ClientCommand::OutputEnd);
                        let _ = entry.commands.send(ClientCommand::Event(ClientEvent::JobSucceeded { progress }));
                    }
                }
                Action::JobFailed { job, failure } => {
                    if let Some(entry) = self.jobs.remove(&job) {
                        warn!(%job, "job failed: {failure}");
                        let _ = entry.commands.send(ClientCommand::Event(ClientEvent::JobFailed { failure }));
                    }
                }
            }
        }
    }

    fn start_job(&mut self, node: NodeId, job: JobId) {
        let (Some(job_entry), Some(node_entry)) = (self.jobs.get(&job), self.nodes.get_mut(&node)) else {
            return;
        };
        let sub = &job_entry.submission;
        let spec = JobSpec {
            job,
            payload: sub.payload,
            kind: sub.kind.clone(),
            args: sub.args.clone(),
            memory_limit: sub.memory_limit,
            chunk_timeout_ms: sub.chunk_timeout_ms,
        };
        let _ = node_entry.commands.send(NodeCommand::Send(DispatcherToNode::StartJob(spec)));
        if node_entry.payloads.insert(sub.payload) {
            debug!(node = %node_entry.info.name, payload = ?sub.payload, "shipping payload");
            let _ = node_entry.commands.send(NodeCommand::Payload(sub.payload, job_entry.payload.clone()));
        }
    }

    fn send_progress(&mut self) {
        for (job, entry) in &mut self.jobs {
            let Some(progress) = self.scheduler.progress(*job) else { continue };
            if entry.last_progress != Some(progress) {
                entry.last_progress = Some(progress);
                let _ = entry.commands.send(ClientCommand::Event(ClientEvent::Progress(progress)));
            }
        }
    }

    fn node_statuses(&self) -> Vec<NodeStatus> {
        let mut list: Vec<NodeStatus> = self
            .nodes
            .values()
            .map(|n| NodeStatus {
                name: n.info.name.clone(),
                address: n.address.clone(),
                hostname: n.info.hostname.clone(),
                slots: n.info.slots,
                busy: n.busy,
                memory_total: n.info.memory_total,
                memory_available: n.memory_available,
                load: n.load,
                last_heartbeat_ms: n.last_heartbeat.elapsed().as_millis() as u64,
                state: "ready".into(),
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

    fn close_node(&mut self, node: NodeId, reason: String) {
        if let Some(entry) = self.nodes.remove(&node) {
            let _ = entry.commands.send(NodeCommand::Close(reason));
            self.scheduler.handle_node_lost(now(), node);
        }
    }

    fn node_name(&self, node: NodeId) -> String {
        self.nodes.get(&node).map_or_else(|| format!("#{}", node.0), |n| n.info.name.clone())
    }
}

/// The core's clock: tokio's, so tests can pause and advance it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
