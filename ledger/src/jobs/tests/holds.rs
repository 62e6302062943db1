//! Operator state and waiting jobs, driven call by call: a drain belongs to the node's name, so it
//! holds across the node's reconnects and (journaled) across dispatcher restarts until undrained,
//! and its answer waits until it is durable; a job waits for a node as long as it takes, saying
//! why, and is refused at once only when the connected nodes could never run it. A stopping node
//! (`Leaving`) is drained for its session only, and what it still holds when it leaves is requeued
//! at once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use wire::proto::{JobFailure, JobId, JobState, NodeStatus, NodeToDispatcher};

use super::super::{
    Answer, Caller, ClientId, Effect, Ledger, LedgerConfig, NodeCommand, Recovered, Refusal, RequestId, Time,
};
use super::harness::{config, info, submission};
use crate::record::{Extent, NodeHold};
use crate::scheduler::NodeId;

fn operator() -> Caller {
    Caller { name: "root".into(), operator: true }
}

fn alice() -> Caller {
    Caller { name: "alice".into(), operator: false }
}

/// A ledger whose commits succeed when [`Office::turn`] says so, the holds its journal keeps,
/// the answers it gave and the chunks it assigned, by node name.
struct Office {
    ledger: Ledger,
    now: Time,
    next: u64,
    /// The journal's `node_holds` table.
    holds: BTreeMap<String, NodeHold>,
    nodes: HashMap<NodeId, String>,
    answers: HashMap<RequestId, Answer>,
    assigned: Vec<(String, JobId)>,
    /// Whether commits fail.
    disk_on_fire: bool,
}

impl Office {
    fn new() -> Self {
        let now = Time { at: Instant::now(), unix_ms: 1_000_000 };
        let mut office = Self {
            ledger: Ledger::new(ledger_config(), Recovered { next_job: 1, incarnation: 1, ..Recovered::default() }, now),
            now,
            next: 0,
            holds: BTreeMap::new(),
            nodes: HashMap::new(),
            answers: HashMap::new(),
            assigned: Vec::new(),
            disk_on_fire: false,
        };
        office.turn();
        office
    }

    /// The dispatcher restarts from what its journal holds; no node is connected.
    fn restart(&mut self) {
        let holds = self.holds.iter().map(|(n, h)| (n.clone(), h.clone())).collect();
        let recovered = Recovered { next_job: 1, incarnation: 2, holds, ..Recovered::default() };
        self.ledger = Ledger::new(ledger_config(), recovered, self.now);
        self.nodes.clear();
        self.turn();
    }

    /// Ends a turn and commits what it gathered at once, as a graceful stop would.
    fn turn(&mut self) {
        self.ledger.end_turn(self.now);
        self.ledger.flush(self.now);
        while let Some(effect) = self.ledger.poll_effect() {
            match effect {
                Effect::Commit { batch, .. } if self.disk_on_fire => {
                    drop(batch);
                    self.ledger.handle_commit_failed(self.now, &"disk on fire");
                }
                Effect::Commit { batch, .. } => {
                    for (name, hold) in batch.holds {
                        match hold {
                            Some(hold) => self.holds.insert(name, hold),
                            None => self.holds.remove(&name),
                        };
                    }
                    self.ledger.handle_committed();
                }
                Effect::Answer { request, answer } => drop(self.answers.insert(request, answer)),
                Effect::Node { node, command: NodeCommand::Assign { job, .. } } => {
                    self.assigned.push((self.nodes[&node].clone(), job));
                }
                _ => {}
            }
        }
    }

    fn connect(&mut self, name: &str) -> NodeId {
        let id = self.ledger.handle_node_registered(self.now, info(name), "10.0.0.1:1".into());
        self.nodes.insert(id, name.to_owned());
        self.turn();
        id
    }

    fn disconnect(&mut self, id: NodeId) {
        self.ledger.handle_node_closed(self.now, id, "connection lost");
        self.turn();
    }

    fn drain(&mut self, name: &str, drain: bool) -> Result<Vec<NodeStatus>, String> {
        self.next += 1;
        let request = RequestId(self.next);
        self.ledger.handle_drain(self.now, request, &operator(), name, drain);
        self.turn();
        match self.answers.remove(&request) {
            Some(Answer::Nodes(nodes)) => nodes.map_err(|r| r.to_string()),
            other => panic!("drain answered {other:?}"),
        }
    }

    fn state_of(&self, name: &str) -> Option<String> {
        self.ledger.node_statuses(self.now).into_iter().find(|n| n.name == name).map(|n| n.state)
    }

    /// Submits a job of `chunks` chunks with its whole input, with `placement_timeout`.
    fn submit(&mut self, chunks: u64, memory_limit: u64, placement_timeout: Option<Duration>) -> Result<JobId, Refusal> {
        self.next += 1;
        let mut sub = submission();
        sub.memory_limit = memory_limit;
        sub.placement_timeout_ms = placement_timeout.map(|t| t.as_millis() as u64);
        let job = self.ledger.handle_submit(self.now, ClientId(self.next), &alice(), sub)?;
        for chunk in 0..chunks {
            self.ledger.handle_input(self.now, job, Extent { offset: chunk, len: 1 });
        }
        self.ledger.handle_input_end(self.now, job);
        self.turn();
        Ok(job)
    }

    fn wait(&mut self, by: Duration) {
        self.now.at += by;
        self.now.unix_ms += by.as_millis() as u64;
        if self.ledger.poll_timeout().is_some_and(|t| t <= self.now.at) {
            self.ledger.handle_timeout(self.now);
        }
        self.turn();
    }

    fn job(&self, job: JobId) -> (JobState, Option<String>) {
        let summary = self.ledger.summary(&alice(), job).expect("a known job");
        (summary.state, summary.blocked)
    }
}

fn ledger_config() -> LedgerConfig {
    LedgerConfig { scheduler: config(), retention: Duration::from_secs(3600), quotas: Default::default(), input_grace: Duration::ZERO }
}

#[test]
fn a_drain_holds_across_reconnects_and_restarts_until_undrained() {
    let mut office = Office::new();
    let a = office.connect("node-a");
    office.connect("node-b");
    let nodes = office.drain("node-a", true).expect("an operator drains");
    assert_eq!(nodes.iter().find(|n| n.name == "node-a").map(|n| n.state.as_str()), Some("drained"));
    assert_eq!(office.holds.get("node-a"), Some(&NodeHold { drained: true, quarantine: None }), "journaled");

    // The node's connection drops and it comes back: a new session of a drained name.
    office.disconnect(a);
    assert_eq!(office.state_of("node-a").as_deref(), Some("drained, not connected"));
    office.connect("node-a");
    assert_eq!(office.state_of("node-a").as_deref(), Some("drained"));
    office.submit(6, 1 << 20, None).expect("submitted");
    assert!(office.assigned.iter().all(|(node, _)| node == "node-b"), "a drained node got work: {:?}", office.assigned);

    // The dispatcher restarts; the drained node registers again before the other one.
    office.restart();
    assert_eq!(office.state_of("node-a").as_deref(), Some("drained, not connected"), "held names are listed");
    office.assigned.clear();
    office.connect("node-a");
    office.submit(2, 1 << 20, None).expect("submitted");
    assert_eq!(office.state_of("node-a").as_deref(), Some("drained"));
    assert!(office.assigned.is_empty(), "a drained node got work after a restart: {:?}", office.assigned);

    // Undrained, it takes the waiting work at once, and the journal forgets the hold.
    let nodes = office.drain("node-a", false).expect("an operator undrains");
    assert!(nodes.iter().any(|n| n.name == "node-a" && n.state != "drained"), "{nodes:?}");
    assert!(office.holds.is_empty(), "the release is journaled: {:?}", office.holds);
    assert!(office.assigned.iter().any(|(node, _)| node == "node-a"), "the undrained node took work");
}

#[test]
fn a_disconnected_drained_name_can_be_undrained_but_an_unknown_one_is_refused() {
    let mut office = Office::new();
    let a = office.connect("node-a");
    office.drain("node-a", true).expect("drained");
    office.disconnect(a);
    office.restart();
    let refused = office.drain("node-z", true).expect_err("an unknown name");
    assert!(refused.contains("node-z") && refused.contains("connected"), "{refused}");
    let nodes = office.drain("node-a", false).expect("a held name that is away can be undrained");
    assert!(nodes.iter().all(|n| n.name != "node-a"), "released and not connected, so not listed: {nodes:?}");
    assert!(office.holds.is_empty());
    office.connect("node-a");
    assert_eq!(office.state_of("node-a").as_deref(), Some("ready"));
}

#[test]
fn a_drain_is_answered_once_durable_and_an_unrecorded_one_is_an_error() {
    let mut office = Office::new();
    office.connect("node-a");
    office.disk_on_fire = true;
    let error = office.drain("node-a", true).expect_err("the commit failed");
    assert!(error.contains("storage failed"), "{error}");
    office.disk_on_fire = false;
    office.turn();
    assert_eq!(office.holds.get("node-a").map(|h| h.drained), Some(true), "the next commit records the hold");
    office.drain("node-a", true).expect("draining again answers at once");
}

#[test]
fn a_job_with_no_node_connected_waits_saying_why_and_runs_when_one_joins() {
    let mut office = Office::new();
    let job = office.submit(3, 1 << 20, None).expect("a job is accepted with no node connected");
    office.wait(Duration::from_secs(3600));
    assert_eq!(office.job(job), (JobState::Running, Some("0 nodes connected".into())));
    office.connect("node-a");
    assert!(office.assigned.iter().any(|(node, j)| node == "node-a" && *j == job), "the new node runs it");
    assert_eq!(office.job(job).1, None, "no longer blocked");
}

#[test]
fn a_job_waits_for_a_drained_node_and_fails_only_after_a_placement_timeout_its_submitter_set() {
    let mut office = Office::new();
    office.connect("node-a");
    office.drain("node-a", true).expect("drained");
    let patient = office.submit(1, 1 << 20, None).expect("a drained node may come back");
    let hasty = office.submit(1, 1 << 20, Some(Duration::from_secs(2))).expect("accepted");
    office.wait(Duration::from_secs(3));
    let (state, blocked) = office.job(patient);
    assert_eq!((state, blocked.as_deref()), (JobState::Running, Some("1 connected, 1 drained, 0 eligible")));
    let (JobState::Failed(JobFailure::NoEligibleNode { reason }), _) = office.job(hasty) else {
        panic!("the job with a placement timeout fails: {:?}", office.job(hasty));
    };
    assert!(reason.contains("drained"), "{reason}");
}

#[test]
fn a_job_no_connected_node_could_ever_run_is_refused_at_once() {
    let mut office = Office::new();
    office.connect("node-a");
    let too_big = 1 << 40;
    let refused = office.submit(1, too_big, None).expect_err("no connected node has 1 TiB");
    assert!(matches!(refused, Refusal::NoEligibleNode(_)), "{refused}");
    let text = refused.to_string();
    assert!(text.contains("no connected node could ever run this job") && text.contains("memory"), "{text}");
}

#[test]
fn a_stopping_node_takes_no_new_work_and_what_it_held_is_requeued_the_moment_it_leaves() {
    let mut office = Office::new();
    let a = office.connect("node-a");
    let chunks = u64::from(super::harness::SLOTS);
    office.submit(chunks, 1 << 20, None).expect("submitted");
    let on = |office: &Office, name: &str| office.assigned.iter().filter(|(node, _)| node == name).count();
    assert_eq!(on(&office, "node-a"), chunks as usize, "node-a runs every chunk");

    // SIGTERM on node-a: it says it is leaving, and this session takes no new work.
    office.ledger.handle_node_message(office.now, a, NodeToDispatcher::Leaving);
    office.turn();
    let status = office.ledger.node_statuses(office.now).into_iter().find(|n| n.name == "node-a").expect("listed");
    assert_eq!((status.state.as_str(), status.in_flight), ("stopping", chunks as u32));
    assert!(office.holds.is_empty(), "nothing is held against the name: {:?}", office.holds);
    office.connect("node-b");
    office.submit(2, 1 << 20, None).expect("submitted");
    assert_eq!(on(&office, "node-a"), chunks as usize, "a stopping node got new work: {:?}", office.assigned);
    assert_eq!(on(&office, "node-b"), 2, "the new job runs on node-b");

    // It closes its connection on purpose with its attempts unfinished (a second SIGTERM, or its
    // stop_timeout): they run on node-b at once, with no node_timeout to wait out.
    office.disconnect(a);
    assert_eq!(on(&office, "node-b"), 2 + chunks as usize, "requeued at once: {:?}", office.assigned);

    // Back after its restart, the name takes work as before.
    office.connect("node-a");
    assert_eq!(office.state_of("node-a").as_deref(), Some("ready"));
}
