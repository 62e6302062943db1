//! Ownership, operators and quotas, driven call by call: another tenant's job answers exactly as
//! a job that does not exist; operators see and cancel everything and alone manage nodes; each
//! quota refuses with its name, limit and use, and a spool quota reached mid-upload fails only
//! that job.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wire::proto::{JobId, JobState};

use super::super::{
    Answer, Caller, ClientId, Effect, Ledger, LedgerConfig, Quota, Quotas, Recovered, Refusal, RequestId, Time,
};
use super::harness::{config, info, submission};
use crate::record::Extent;

fn caller(name: &str) -> Caller {
    Caller { name: name.into(), operator: false }
}

fn operator() -> Caller {
    Caller { name: "root".into(), operator: true }
}

/// A ledger with one node, commits that succeed at once, and the answers it gave.
struct Desk {
    ledger: Ledger,
    now: Time,
    next: u64,
    answers: HashMap<RequestId, Answer>,
    removed: Vec<JobId>,
}

impl Desk {
    fn new(quotas: Quotas) -> Self {
        let now = Time { at: Instant::now(), unix_ms: 1_000_000 };
        let config = LedgerConfig { scheduler: config(), retention: Duration::from_secs(3600), quotas, input_grace: Duration::ZERO };
        let mut ledger = Ledger::new(config, Recovered { next_job: 1, incarnation: 1, jobs: Vec::new() }, now);
        ledger.handle_node_registered(now, info("node-a"), "10.0.0.1:1".into());
        let mut desk = Self { ledger, now, next: 0, answers: HashMap::new(), removed: Vec::new() };
        desk.turn();
        desk
    }

    /// Ends a turn and commits what it gathered at once, as a graceful stop would.
    fn turn(&mut self) {
        self.ledger.end_turn(self.now);
        self.ledger.flush(self.now);
        while let Some(effect) = self.ledger.poll_effect() {
            match effect {
                Effect::Commit { .. } => self.ledger.handle_committed(),
                Effect::Answer { request, answer } => drop(self.answers.insert(request, answer)),
                Effect::RemoveSpool(job) => self.removed.push(job),
                _ => {}
            }
        }
    }

    fn submit(&mut self, who: &Caller) -> Result<JobId, Refusal> {
        self.next += 1;
        let job = self.ledger.handle_submit(self.now, ClientId(self.next), who, submission());
        self.turn();
        job
    }

    fn input(&mut self, job: JobId, len: u64) {
        self.ledger.handle_input(self.now, job, Extent { offset: 0, len });
        self.turn();
    }

    fn request(&mut self) -> RequestId {
        self.next += 1;
        RequestId(self.next)
    }

    fn status(&mut self, who: &Caller, job: JobId) -> Result<JobState, String> {
        let request = self.request();
        self.ledger.handle_status(request, who, job);
        self.turn();
        match self.answers.remove(&request) {
            Some(Answer::Summary(summary)) => summary.map(|s| s.state).map_err(|r| r.to_string()),
            other => panic!("status answered with {other:?}"),
        }
    }

    fn cancel(&mut self, who: &Caller, job: JobId) -> Result<JobState, String> {
        let request = self.request();
        self.ledger.handle_cancel(self.now, request, who, job);
        self.turn();
        match self.answers.remove(&request) {
            Some(Answer::Summary(summary)) => summary.map(|s| s.state).map_err(|r| r.to_string()),
            other => panic!("cancel answered with {other:?}"),
        }
    }

    fn jobs(&mut self, who: &Caller) -> Vec<(JobId, String)> {
        let request = self.request();
        self.ledger.handle_list_jobs(request, who);
        self.turn();
        match self.answers.remove(&request) {
            Some(Answer::Jobs(Ok(jobs))) => jobs.into_iter().map(|s| (s.job, s.owner)).collect(),
            other => panic!("jobs answered with {other:?}"),
        }
    }
}

#[test]
fn another_tenants_job_answers_as_one_that_does_not_exist() {
    let mut desk = Desk::new(Quotas::default());
    let (alice, bob) = (caller("alice"), caller("bob"));
    let job = desk.submit(&alice).expect("submitted");
    let missing = JobId(99);
    let unknown = desk.status(&bob, missing).expect_err("no such job");
    assert_eq!(desk.status(&bob, job).expect_err("bob cannot see it"), unknown.replace("99", &job.0.to_string()));
    assert_eq!(desk.cancel(&bob, job).expect_err("bob cannot cancel it"), unknown.replace("99", &job.0.to_string()));
    assert!(desk.ledger.attachable(&bob, job).is_err(), "bob cannot follow it");
    assert!(desk.jobs(&bob).is_empty(), "bob's list shows none of alice's jobs");
    assert_eq!(desk.status(&alice, job), Ok(JobState::Running), "bob's cancel did nothing");
    assert_eq!(desk.jobs(&alice), vec![(job, "alice".to_owned())]);

    assert_eq!(desk.cancel(&alice, job), Ok(JobState::Cancelled));
    desk.ledger.handle_release(&bob, job);
    desk.turn();
    assert_eq!(desk.status(&alice, job), Ok(JobState::Cancelled), "bob's release forgot nothing");
    desk.ledger.handle_release(&alice, job);
    desk.turn();
    assert!(desk.status(&alice, job).is_err(), "alice's release forgets it");
}

#[test]
fn operators_see_and_cancel_every_job_and_alone_manage_nodes() {
    let mut desk = Desk::new(Quotas::default());
    let (alice, bob) = (caller("alice"), caller("bob"));
    let a = desk.submit(&alice).expect("submitted");
    let b = desk.submit(&bob).expect("submitted");
    assert_eq!(desk.jobs(&operator()), vec![(a, "alice".to_owned()), (b, "bob".to_owned())]);
    assert_eq!(desk.cancel(&operator(), b), Ok(JobState::Cancelled));
    assert!(desk.ledger.attachable(&operator(), a).is_ok());

    let refused = desk.ledger.handle_drain(desk.now, &alice, "node-a", true).expect_err("a client cannot drain");
    assert!(matches!(refused, Refusal::NotOperator(..)), "{refused}");
    assert!(refused.to_string().contains("only an operator may drain nodes"), "{refused}");
    let nodes = desk.ledger.handle_drain(desk.now, &operator(), "node-a", true).expect("an operator drains");
    assert_eq!(nodes[0].state, "drained");
    assert!(desk.ledger.handle_drain(desk.now, &bob, "node-a", false).is_err(), "a client cannot undrain");
    let nodes = desk.ledger.handle_drain(desk.now, &operator(), "node-a", false).expect("an operator undrains");
    assert_ne!(nodes[0].state, "drained");
}

#[test]
fn the_jobs_quota_refuses_with_its_limit_and_use_until_a_job_ends() {
    let limited = Quota { max_jobs: Some(2), max_spool: None };
    let mut desk = Desk::new(Quotas { default: limited, by_name: HashMap::from([("carol".into(), Quota::default())]) });
    let alice = caller("alice");
    let first = desk.submit(&alice).expect("first");
    desk.submit(&alice).expect("second");
    let refused = desk.submit(&alice).expect_err("third is over the quota").to_string();
    assert!(refused.contains("max_jobs") && refused.contains("is 2") && refused.contains("2 are"), "{refused}");
    desk.submit(&caller("bob")).expect("bob has his own quota");
    for _ in 0..3 {
        desk.submit(&caller("carol")).expect("carol's override has no limit");
    }
    desk.cancel(&alice, first).expect("cancelled");
    desk.submit(&alice).expect("a finished job frees its place");
}

#[test]
fn the_spool_quota_refuses_submissions_and_fails_only_the_upload_that_crosses_it() {
    let quota = Quota { max_jobs: None, max_spool: Some(1000) };
    let mut desk = Desk::new(Quotas { default: quota, by_name: HashMap::new() });
    let (alice, bob) = (caller("alice"), caller("bob"));
    let small = desk.submit(&alice).expect("submitted");
    desk.input(small, 600);
    let big = desk.submit(&alice).expect("600 of 1000 bytes used");
    let theirs = desk.submit(&bob).expect("submitted");
    desk.input(theirs, 900);
    desk.input(big, 300);
    assert_eq!(desk.status(&alice, big), Ok(JobState::Running), "900 bytes fit");
    desk.input(big, 200);
    let Ok(JobState::Failed(failure)) = desk.status(&alice, big) else { panic!("the upload over the quota fails its job") };
    let message = failure.to_string();
    assert!(message.contains("max_spool") && message.contains("1000 B") && message.contains("1.1 KiB"), "{message}");
    assert!(desk.removed.contains(&big), "its files go, so its bytes no longer count");
    assert_eq!(desk.status(&alice, small), Ok(JobState::Running), "alice's other job is untouched");
    assert_eq!(desk.status(&bob, theirs), Ok(JobState::Running), "bob's job is untouched");

    desk.input(small, 400);
    let refused = desk.submit(&alice).expect_err("a full spool refuses submissions").to_string();
    assert!(refused.contains("max_spool") && refused.contains("1000 B"), "{refused}");
    desk.cancel(&alice, small).expect("cancelled");
    desk.submit(&alice).expect("a cancelled job's files no longer count");
}
