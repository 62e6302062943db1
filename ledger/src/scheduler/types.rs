//! What goes in and out of the [`Scheduler`](super::Scheduler): node and job descriptions, the
//! actions the driver carries out, and the counts and states it reads back.

use std::fmt;
use std::time::Duration;

use wire::proto::{AttemptId, ChunkIndex, JobFailure, JobId};

use super::JobStats;

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

/// What holds a node *name* back from new work, whatever session it connects with: an
/// operator's drain, a quarantine, or both. Released together by an operator's undrain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHold {
    /// An operator drained the name.
    pub drained: bool,
    /// Why the name is quarantined, if it is (see [`Notice::NodeQuarantined`]).
    pub quarantine: Option<String>,
}

impl NodeHold {
    /// Whether anything holds the node back.
    pub fn is_held(&self) -> bool {
        self.drained || self.quarantine.is_some()
    }
}

/// What the scheduler needs to know about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequirements {
    /// Memory one attempt may use, in bytes; placement keeps the sum of running attempts'
    /// limits within a node's available memory.
    pub memory_limit: u64,
    /// Failed attempts one chunk may use up before the job fails; 0 counts as 1.
    pub max_attempts: u32,
    /// Among its tenant's jobs, higher is served first; equal priorities share nodes
    /// round-robin. It orders nothing between tenants.
    pub priority: i32,
    /// How long the job may sit with pending chunks, nothing in flight and no node that could
    /// ever take it before it fails with [`JobFailure::NoEligibleNode`]; `None` (the default a
    /// submitter gets) waits as long as it takes, saying why in [`Scheduler::blocked_reason`].
    pub placement_timeout: Option<Duration>,
    /// The `(os, arch)` the payload needs, compared exactly with [`NodeResources::os`] and
    /// [`NodeResources::arch`]; `None` (WebAssembly) runs anywhere.
    pub platform: Option<(String, String)>,
    /// Who owns the job (the certificate name of the client that submitted it): slots are
    /// shared fairly between tenants, by [`SchedulerConfig::tenants`].
    pub tenant: String,
    /// Fresh chunks go to nodes in pairs `2k`, `2k + 1` when a node has room for both: a reduce
    /// job's node pre-combines such a pair.
    pub paired: bool,
}


/// Something the driver must do, returned by [`Scheduler::poll_action`] in the order to do it.
/// Changes the driver only reports come separately, as [`Notice`]s.
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
    /// Attempts started, speculative copies and reruns included.
    pub attempts: u64,
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
    /// The node is stopping (it sent `Leaving`): finishing the attempts it holds, taking no new
    /// ones, and then leaving.
    Stopping,
    /// Takes no new work until undrained; see [`Notice::NodeQuarantined`].
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
            NodeState::Stopping => f.write_str("stopping"),
            NodeState::Quarantined { reason } => write!(f, "quarantined: {reason}"),
            NodeState::Suspect => f.write_str("suspect"),
        }
    }
}
