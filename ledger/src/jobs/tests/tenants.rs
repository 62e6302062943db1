//! Ownership, operators and quotas, driven call by call: another tenant's job answers exactly as
//! a job that does not exist; operators see and cancel everything and alone manage nodes; each
//! quota refuses with its name, limit and use, and a spool quota reached mid-upload fails only
//! that job.

use std::collections::HashMap;

use wire::proto::{JobId, JobState, NodeStatus};

use super::super::{Answer, Caller, Quota, Quotas, Refusal, RequestId};
use super::desk::Desk;

fn caller(name: &str) -> Caller {
    Caller { name: name.into(), operator: false }
}

fn operator() -> Caller {
    Caller { name: "root".into(), operator: true }
}

impl Desk {
    fn drain(&mut self, who: &Caller, node: &str, drain: bool) -> Result<Vec<NodeStatus>, Refusal> {
        let request = self.request();
        self.ledger.handle_drain(self.now, request, who, node, drain);
        self.turn();
        match self.answers.remove(&request) {
            Some(Answer::Nodes(nodes)) => nodes,
            other => panic!("drain answered {other:?}"),
        }
    }

    fn request(&mut self) -> RequestId {
        RequestId(self.fresh())
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
    let job = desk.submit(&alice, None).expect("submitted");
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
    assert!(desk.ledger.attachable(&alice, job).is_ok(), "bob's release released nothing");
    desk.ledger.handle_release(&alice, job);
    desk.turn();
    // The record (and its logs) stay until it expires; its output is gone.
    assert_eq!(desk.status(&alice, job), Ok(JobState::Cancelled));
    assert!(matches!(desk.ledger.attachable(&alice, job), Err(Refusal::OutputFetched(_))), "alice's release releases it");
}

#[test]
fn operators_see_and_cancel_every_job_and_alone_manage_nodes() {
    let mut desk = Desk::new(Quotas::default());
    let (alice, bob) = (caller("alice"), caller("bob"));
    let a = desk.submit(&alice, None).expect("submitted");
    let b = desk.submit(&bob, None).expect("submitted");
    assert_eq!(desk.jobs(&operator()), vec![(a, "alice".to_owned()), (b, "bob".to_owned())]);
    assert_eq!(desk.cancel(&operator(), b), Ok(JobState::Cancelled));
    assert!(desk.ledger.attachable(&operator(), a).is_ok());

    let refused = desk.drain(&alice, "node-a", true).expect_err("a client cannot drain");
    assert!(matches!(refused, Refusal::NotOperator(..)), "{refused}");
    assert!(refused.to_string().contains("only an operator may drain nodes"), "{refused}");
    let nodes = desk.drain(&operator(), "node-a", true).expect("an operator drains");
    assert_eq!(nodes[0].state, "drained");
    assert!(desk.drain(&bob, "node-a", false).is_err(), "a client cannot undrain");
    let nodes = desk.drain(&operator(), "node-a", false).expect("an operator undrains");
    assert_ne!(nodes[0].state, "drained");
}

#[test]
fn the_jobs_quota_refuses_with_its_limit_and_use_until_a_job_ends() {
    let limited = Quota { max_jobs: Some(2), max_spool: None };
    let mut desk = Desk::new(Quotas { default: limited, by_name: HashMap::from([("carol".into(), Quota::default())]) });
    let alice = caller("alice");
    let first = desk.submit(&alice, None).expect("first");
    desk.submit(&alice, None).expect("second");
    let refused = desk.submit(&alice, None).expect_err("third is over the quota").to_string();
    assert!(refused.contains("max_jobs") && refused.contains("is 2") && refused.contains("2 are"), "{refused}");
    desk.submit(&caller("bob"), None).expect("bob has his own quota");
    for _ in 0..3 {
        desk.submit(&caller("carol"), None).expect("carol's override has no limit");
    }
    desk.cancel(&alice, first).expect("cancelled");
    desk.submit(&alice, None).expect("a finished job frees its place");
}

#[test]
fn the_spool_quota_refuses_submissions_and_fails_only_the_upload_that_crosses_it() {
    let quota = Quota { max_jobs: None, max_spool: Some(1000) };
    let mut desk = Desk::new(Quotas { default: quota, by_name: HashMap::new() });
    let (alice, bob) = (caller("alice"), caller("bob"));
    let small = desk.submit(&alice, None).expect("submitted");
    desk.input(small, 600);
    let big = desk.submit(&alice, None).expect("600 of 1000 bytes used");
    let theirs = desk.submit(&bob, None).expect("submitted");
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
    let refused = desk.submit(&alice, None).expect_err("a full spool refuses submissions").to_string();
    assert!(refused.contains("max_spool") && refused.contains("1000 B"), "{refused}");
    desk.cancel(&alice, small).expect("cancelled");
    desk.submit(&alice, None).expect("a cancelled job's files no longer count");
}
