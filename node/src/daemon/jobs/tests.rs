//! The node's job table without sockets, payloads or threads: scenarios of each rule, and random
//! histories checked against a model of what the node must hold and may run.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::*;

/// A job's context in tests: a name and the cancel flag the slot threads would see.
#[derive(Clone, Debug)]
struct Context {
    job: JobId,
    cancelled: Arc<AtomicBool>,
}

impl Context {
    fn new(job: JobId) -> Self {
        Self {
            job,
            cancelled: Arc::default(),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

impl PartialEq for Context {
    fn eq(&self, other: &Self) -> bool {
        self.job == other.job && Arc::ptr_eq(&self.cancelled, &other.cancelled)
    }
}

impl Eq for Context {}

impl Cancel for Context {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

type Table = JobTable<Context, Context>;

fn assignment(job: u64, chunk: u64, attempt: u64) -> Assignment {
    Assignment {
        job: JobId(job),
        chunk,
        attempt: AttemptId(attempt),
        input: Bytes::new(),
        combine: false,
    }
}

/// Starts `job` and returns the context its preparation got.
fn start(table: &mut Table, job: u64) -> Context {
    match table.start_job(JobId(job), || Context::new(JobId(job))) {
        (Start::Prepare(context), actions) => {
            assert!(actions.is_empty());
            context
        }
        (Start::Kept, _) => panic!("job {job} was held already"),
    }
}

/// A table in its first session holding job 1, still preparing, and the context its
/// preparation got.
fn table_preparing_job() -> (Table, Context) {
    let mut table = Table::default();
    table.begin_session();
    let pending = start(&mut table, 1);
    (table, pending)
}

/// A table in its first session holding job 1, ready, and that job's context.
fn table_with_ready_job() -> (Table, Context) {
    let (mut table, _) = table_preparing_job();
    let ready = Context::new(JobId(1));
    table.prepared(JobId(1), Ok(ready.clone()));
    (table, ready)
}

fn runs(actions: &[Action<Context>]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Run(_, work) = a {
                Some(work.attempt.0)
            } else {
                None
            }
        })
        .collect()
}

fn told(actions: &[Action<Context>]) -> Vec<&NodeToDispatcher> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Tell(msg) = a {
                Some(msg)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn chunks_assigned_while_preparing_run_once_the_job_is_ready() {
    let (mut table, pending) = table_preparing_job();
    assert!(
        table.assign(assignment(1, 0, 10)).is_empty(),
        "nothing runs before the payload is ready"
    );
    assert!(table.assign(assignment(1, 1, 11)).is_empty());
    let ready = Context::new(JobId(1));
    let actions = table.prepared(JobId(1), Ok(ready.clone()));
    assert_eq!(runs(&actions), [10, 11]);
    assert!(matches!(
        told(&actions)[..],
        [NodeToDispatcher::JobReady { job: JobId(1) }]
    ));
    assert!(!pending.is_cancelled());
    assert_eq!(
        runs(&table.assign(assignment(1, 2, 12))),
        [12],
        "a ready job's chunks run at once"
    );
    assert_eq!(table.held(), 3);
}

#[test]
fn a_failed_preparation_rejects_the_job_and_forgets_its_attempts() {
    let (mut table, _) = table_preparing_job();
    table.assign(assignment(1, 0, 10));
    let actions = table.prepared(JobId(1), Err("bad module".into()));
    assert!(runs(&actions).is_empty());
    assert!(
        matches!(told(&actions)[..], [NodeToDispatcher::JobRejected { job: JobId(1), error }] if error == "bad module")
    );
    assert_eq!(table.held(), 0);
    assert!(
        table.assign(assignment(1, 1, 11)).is_empty(),
        "later chunks of a rejected job are dropped"
    );
    assert_eq!(table.held(), 0);
}

#[test]
fn a_job_ended_while_preparing_never_runs() {
    let (mut table, pending) = table_preparing_job();
    table.assign(assignment(1, 0, 10));
    let actions = table.end_job(JobId(1));
    assert!(matches!(actions[..], [Action::StopJob(JobId(1))]));
    assert!(pending.is_cancelled(), "the preparation is told to stop");
    assert!(
        table
            .prepared(JobId(1), Ok(Context::new(JobId(1))))
            .is_empty(),
        "a late preparation is ignored"
    );
    assert_eq!(table.held(), 0);
}

#[test]
fn a_cancelled_queued_attempt_does_not_run_when_the_job_is_ready() {
    let (mut table, _) = table_preparing_job();
    table.assign(assignment(1, 0, 10));
    table.assign(assignment(1, 1, 11));
    assert!(matches!(
        table.cancel_attempt(AttemptId(10))[..],
        [Action::StopAttempt(AttemptId(10))]
    ));
    assert_eq!(
        runs(&table.prepared(JobId(1), Ok(Context::new(JobId(1))))),
        [11]
    );
    assert_eq!(table.held(), 1);
}

#[test]
fn ready_jobs_outlive_their_session_and_preparing_ones_do_not() {
    let (mut table, ready) = table_with_ready_job();
    table.assign(assignment(1, 0, 10));
    let preparing = start(&mut table, 2);
    table.assign(assignment(2, 0, 20));

    let actions = table.end_session();
    assert!(matches!(actions[..], [Action::StopJob(JobId(2))]));
    assert!(preparing.is_cancelled());
    assert!(
        !ready.is_cancelled(),
        "a ready job keeps running without a connection"
    );

    let (claims, actions) = table.begin_session();
    assert!(actions.is_empty());
    assert_eq!(
        claims,
        [Claim {
            job: JobId(1),
            chunk: 0,
            attempt: AttemptId(10)
        }]
    );
    // The dispatcher confirms job 1: it is ready at once, no second preparation.
    let (start, actions) = table.start_job(JobId(1), || panic!("a kept job is not prepared again"));
    assert_eq!(start, Start::Kept);
    assert!(matches!(
        told(&actions)[..],
        [NodeToDispatcher::JobReady { job: JobId(1) }]
    ));
    table.acknowledged(&[AttemptId(10)]);
    assert!(
        table.job(JobId(1)).is_some(),
        "a confirmed job stays after its last attempt"
    );
}

#[test]
fn a_job_the_next_session_does_not_confirm_goes_with_its_last_attempt() {
    let (mut table, ready) = table_with_ready_job();
    table.assign(assignment(1, 0, 10));
    table.assign(assignment(1, 1, 11));
    table.end_session();
    let (claims, _) = table.begin_session();
    assert_eq!(claims.len(), 2);
    assert!(
        table.acknowledged(&[AttemptId(10)]).is_empty(),
        "one attempt is still held"
    );
    assert!(!ready.is_cancelled());
    let actions = table.acknowledged(&[AttemptId(11)]);
    assert!(matches!(actions[..], [Action::StopJob(JobId(1))]));
    assert!(ready.is_cancelled());
    assert!(table.job(JobId(1)).is_none());
}

#[test]
fn a_session_start_drops_jobs_without_attempts() {
    let (mut table, ready) = table_with_ready_job();
    table.assign(assignment(1, 0, 10));
    table.failed(AttemptId(10));
    let (claims, actions) = table.begin_session();
    assert!(claims.is_empty(), "a failed attempt is not claimed");
    assert!(matches!(actions[..], [Action::StopJob(JobId(1))]));
    assert!(ready.is_cancelled());
}

#[test]
fn a_rejected_job_stops_and_says_why() {
    let (mut table, ready) = table_with_ready_job();
    table.assign(assignment(1, 0, 10));
    let actions = table.reject(JobId(1), "bucket not allowed".into());
    assert!(matches!(actions[0], Action::StopJob(JobId(1))));
    assert!(matches!(
        told(&actions)[..],
        [NodeToDispatcher::JobRejected { job: JobId(1), .. }]
    ));
    assert!(ready.is_cancelled());
    assert_eq!(table.held(), 0);
}

#[test]
fn cancel_all_stops_everything() {
    let (mut table, ready) = table_with_ready_job();
    table.assign(assignment(1, 0, 10));
    let preparing = start(&mut table, 2);
    let actions = table.cancel_all();
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::StopAttempt(AttemptId(10)))));
    assert!(ready.is_cancelled() && preparing.is_cancelled());
    assert_eq!(table.held(), 0);
}

/// A small xorshift generator: histories come from a seed, so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What a history has done to the table, to check its actions against.
#[derive(Default)]
struct Model {
    /// Jobs started and not ended, rejected or dropped, with whether they are ready.
    jobs: HashMap<JobId, bool>,
    /// Attempts the table must hold (what the next session claims).
    held: BTreeSet<AttemptId>,
    attempt_job: HashMap<AttemptId, JobId>,
    /// Attempts that must never run (again): ended, cancelled, or run once already.
    spent: HashSet<AttemptId>,
    /// Contexts handed to preparations, by job, not yet prepared.
    preparing: HashMap<JobId, Context>,
}

impl Model {
    fn check(&mut self, actions: &[Action<Context>], step: &str) {
        for action in actions {
            match action {
                Action::Run(context, work) => {
                    assert!(
                        !context.is_cancelled(),
                        "{step}: ran attempt {} of a cancelled job",
                        work.attempt
                    );
                    assert_eq!(
                        self.jobs.get(&work.job),
                        Some(&true),
                        "{step}: ran a chunk of a job not ready"
                    );
                    assert!(
                        self.spent.insert(work.attempt),
                        "{step}: attempt {} ran twice or after it ended",
                        work.attempt
                    );
                }
                Action::StopJob(job) => {
                    self.jobs.remove(job);
                    self.forget_job(*job);
                }
                Action::StopAttempt(_) | Action::Tell(_) => {}
            }
        }
    }

    fn forget_job(&mut self, job: JobId) {
        let gone: Vec<AttemptId> = self
            .held
            .iter()
            .copied()
            .filter(|a| self.attempt_job[a] == job)
            .collect();
        for attempt in gone {
            self.held.remove(&attempt);
            self.spent.insert(attempt);
        }
        self.preparing.remove(&job);
    }
}

/// Random histories of everything a dispatcher and the node's own tasks can do: no attempt runs
/// twice or after it was stopped, none runs before its job is ready, and each session claims
/// exactly the attempts the node still holds.
#[test]
fn random_histories_keep_the_node_rules() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut table = Table::default();
        let mut model = Model::default();
        let mut next_attempt = 0u64;
        let (claims, _) = table.begin_session();
        assert!(claims.is_empty());
        for step in 0..200 {
            let job = JobId(rng.below(4));
            let step = format!("seed {seed} step {step}");
            match rng.below(9) {
                0 => {
                    let (start, actions) = table.start_job(job, || Context::new(job));
                    if let Start::Prepare(context) = start {
                        assert!(
                            !model.jobs.contains_key(&job),
                            "{step}: a held job was prepared again"
                        );
                        model.jobs.insert(job, false);
                        model.preparing.insert(job, context);
                    }
                    model.check(&actions, &step);
                }
                1 | 2 => {
                    next_attempt += 1;
                    let attempt = AttemptId(next_attempt);
                    let actions = table.assign(assignment(job.0, next_attempt, next_attempt));
                    if model.jobs.contains_key(&job) {
                        model.held.insert(attempt);
                        model.attempt_job.insert(attempt, job);
                    }
                    model.check(&actions, &step);
                }
                3 => {
                    let Some(context) = model.preparing.remove(&job) else {
                        continue;
                    };
                    let ok = rng.below(4) != 0;
                    let result = if ok {
                        Ok(Context::new(job))
                    } else {
                        Err("no".into())
                    };
                    let was_preparing =
                        !context.is_cancelled() && model.jobs.get(&job) == Some(&false);
                    if was_preparing && ok {
                        model.jobs.insert(job, true);
                    }
                    let actions = table.prepared(job, result);
                    if was_preparing && !ok {
                        model.jobs.remove(&job);
                        model.forget_job(job);
                    }
                    model.check(&actions, &step);
                }
                4 => {
                    let actions = table.end_job(job);
                    model.jobs.remove(&job);
                    model.forget_job(job);
                    model.check(&actions, &step);
                }
                choice @ (5 | 6) => {
                    let Some(&attempt) = model.held.iter().nth(rng.below(model.held.len() as u64 + 1) as usize) else {
                        continue;
                    };
                    model.held.remove(&attempt);
                    let actions = if choice == 5 {
                        model.spent.insert(attempt);
                        table.cancel_attempt(attempt)
                    } else {
                        table.acknowledged(&[attempt])
                    };
                    model.check(&actions, &step);
                }
                7 => {
                    let actions = table.end_session();
                    for (&j, &ready) in &model.jobs.clone() {
                        if !ready {
                            model.jobs.remove(&j);
                            model.forget_job(j);
                        }
                    }
                    model.check(&actions, &step);
                    let (claims, actions) = table.begin_session();
                    model.check(&actions, &step);
                    let claimed: BTreeSet<AttemptId> = claims.iter().map(|c| c.attempt).collect();
                    assert_eq!(
                        claimed, model.held,
                        "{step}: the session claims what the node holds"
                    );
                }
                _ => {
                    // Only an attempt that ran can fail.
                    let Some(&attempt) = model.held.iter().find(|a| model.spent.contains(a)) else {
                        continue;
                    };
                    model.held.remove(&attempt);
                    table.failed(attempt);
                }
            }
            assert_eq!(table.held(), model.held.len(), "{step}: held attempts");
        }
    }
}
