//! What this node holds for the dispatcher, as a sans-IO state machine: its jobs (preparing or
//! ready) and the attempts assigned to it, across sessions.
//!
//! The daemon's session tasks feed it what arrives (`StartJob`, `Assign`, `EndJob`,
//! `CancelAttempt`, `Ack`, a finished preparation, a session's start and end) and carry out the
//! [`Action`]s it returns: run a chunk on the pool, stop a job's or an attempt's chunks there,
//! tell the dispatcher something. It does no I/O, holds no lock and reads no clock, so its rules
//! are tested here without sockets, payloads or threads:
//!
//! - A job waits in `Preparing` until its payload is compiled; chunks assigned meanwhile queue and
//!   run when it is `Ready`, or are forgotten with it when preparing fails.
//! - Work outlives sessions: a ready job keeps running when the connection is lost, and the next
//!   session claims every attempt still held. A job the new session does not confirm with
//!   `StartJob` is dropped once it holds no attempt; jobs still preparing end with their session.
//! - An attempt is held from its assignment until it is acknowledged, cancelled, failed or its
//!   job ends.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use wire::proto::{Assignment, AttemptId, ChunkIndex, Claim, JobId, NodeToDispatcher};

/// Stops a job's work in progress (its preparation or its running chunks): an atomic flag the
/// slot threads and the compiler look at, so setting it is not I/O.
pub(super) trait Cancel {
    fn cancel(&self);
}

/// What the driver does after a call, in order.
#[derive(Debug)]
pub(super) enum Action<R> {
    /// Run a chunk of a ready job on the pool.
    Run(R, Assignment),
    /// Stop every chunk of a job on the pool, queued or running, without reports.
    StopJob(JobId),
    /// Stop one attempt on the pool, without a report.
    StopAttempt(AttemptId),
    /// Send this to the dispatcher.
    Tell(NodeToDispatcher),
}

/// A job as this node knows it; `P` is its context while preparing, `R` once ready.
pub(super) enum JobState<P, R> {
    /// Waiting for the payload or the compiler; chunks queue here.
    Preparing {
        context: P,
        waiting: Vec<Assignment>,
    },
    /// Chunks go straight to the pool.
    Ready(R),
}

impl<P: Cancel, R: Cancel> JobState<P, R> {
    fn cancel(&self) {
        match self {
            JobState::Preparing { context, .. } => context.cancel(),
            JobState::Ready(context) => context.cancel(),
        }
    }
}

/// A job and the session that last started or confirmed it.
struct HeldJob<P, R> {
    state: JobState<P, R>,
    session: u64,
}

/// What a `StartJob` asks of the driver.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Start<P> {
    /// A new job: prepare its payload with this context, then call [`JobTable::prepared`].
    Prepare(P),
    /// The job is held already (from an earlier session, or started twice); see the actions.
    Kept,
}

/// The jobs and attempts this node holds.
pub(super) struct JobTable<P, R> {
    /// Keyed by ids the dispatcher assigns, so a fast hash will do.
    jobs: FxHashMap<JobId, HeldJob<P, R>>,
    /// Attempts assigned and neither acknowledged nor cancelled, with their job and chunk: the
    /// claims of the next registration (a failed attempt leaves at once: there is nothing to
    /// claim, its report is only resent to be acknowledged).
    attempts: BTreeMap<AttemptId, (JobId, ChunkIndex)>,
    /// The current session's number; jobs remember the one that last confirmed them.
    session: u64,
}

impl<P, R> Default for JobTable<P, R> {
    fn default() -> Self {
        Self {
            jobs: FxHashMap::default(),
            attempts: BTreeMap::new(),
            session: 0,
        }
    }
}

impl<P: Cancel + Clone, R: Cancel + Clone> JobTable<P, R> {
    /// A new session starts: jobs that hold no attempt are dropped (the dispatcher starts them
    /// again if it wants them), and the attempts to claim in its registration are returned.
    pub(super) fn begin_session(&mut self) -> (Vec<Claim>, Vec<Action<R>>) {
        self.session += 1;
        let Self { jobs, attempts, .. } = self;
        attempts.retain(|_, (job, _)| jobs.contains_key(job));
        let mut actions = Vec::new();
        jobs.retain(|job, held| {
            let keep = attempts.values().any(|(j, _)| j == job);
            if !keep {
                held.state.cancel();
                actions.push(Action::StopJob(*job));
            }
            keep
        });
        let claims = attempts
            .iter()
            .map(|(&attempt, &(job, chunk))| Claim {
                job,
                chunk,
                attempt,
            })
            .collect();
        (claims, actions)
    }

    /// The session ended: jobs still preparing end with it (their preparation stops, and the
    /// dispatcher places their chunks again); ready jobs keep running.
    pub(super) fn end_session(&mut self) -> Vec<Action<R>> {
        let Self { jobs, attempts, .. } = self;
        let mut actions = Vec::new();
        jobs.retain(|job, held| {
            if matches!(held.state, JobState::Ready(_)) {
                return true;
            }
            held.state.cancel();
            actions.push(Action::StopJob(*job));
            attempts.retain(|_, (j, _)| j != job);
            false
        });
        actions
    }

    /// `StartJob`: a new job is prepared with the context `pending` makes; one held already is
    /// confirmed for this session, and a ready one is reported ready again.
    pub(super) fn start_job(
        &mut self,
        job: JobId,
        pending: impl FnOnce() -> P,
    ) -> (Start<P>, Vec<Action<R>>) {
        if let Some(held) = self.jobs.get_mut(&job) {
            held.session = self.session;
            let actions = match held.state {
                JobState::Ready(_) => vec![Action::Tell(NodeToDispatcher::JobReady { job })],
                JobState::Preparing { .. } => Vec::new(),
            };
            return (Start::Kept, actions);
        }
        let context = pending();
        let state = JobState::Preparing {
            context: context.clone(),
            waiting: Vec::new(),
        };
        self.jobs.insert(
            job,
            HeldJob {
                state,
                session: self.session,
            },
        );
        (Start::Prepare(context), Vec::new())
    }

    /// A job's preparation finished: its queued chunks run and the dispatcher hears it is ready,
    /// or it is rejected and its attempts forgotten. Nothing happens if the job ended meanwhile.
    pub(super) fn prepared(&mut self, job: JobId, prepared: Result<R, String>) -> Vec<Action<R>> {
        let Some(HeldJob {
            state: JobState::Preparing { waiting, .. },
            session,
        }) = self.jobs.remove(&job)
        else {
            return Vec::new();
        };
        match prepared {
            Ok(context) => {
                let mut actions: Vec<Action<R>> = waiting
                    .into_iter()
                    .map(|assignment| Action::Run(context.clone(), assignment))
                    .collect();
                self.jobs.insert(
                    job,
                    HeldJob {
                        state: JobState::Ready(context),
                        session,
                    },
                );
                actions.push(Action::Tell(NodeToDispatcher::JobReady { job }));
                actions
            }
            Err(error) => {
                self.attempts.retain(|_, (j, _)| *j != job);
                vec![Action::Tell(NodeToDispatcher::JobRejected { job, error })]
            }
        }
    }

    /// `Assign`: the chunk runs now (ready job), queues (preparing job), or is dropped (a job
    /// this node rejected or never heard of: the dispatcher already placed it elsewhere).
    pub(super) fn assign(&mut self, assignment: Assignment) -> Vec<Action<R>> {
        let (job, chunk, attempt) = (assignment.job, assignment.chunk, assignment.attempt);
        match self.jobs.get_mut(&job).map(|held| &mut held.state) {
            Some(JobState::Ready(context)) => {
                self.attempts.insert(attempt, (job, chunk));
                vec![Action::Run(context.clone(), assignment)]
            }
            Some(JobState::Preparing { waiting, .. }) => {
                self.attempts.insert(attempt, (job, chunk));
                waiting.push(assignment);
                Vec::new()
            }
            None => {
                tracing::debug!(%job, %attempt, "assignment for an unknown job dropped");
                Vec::new()
            }
        }
    }

    /// `EndJob`: the job stops here, with every attempt of it.
    pub(super) fn end_job(&mut self, job: JobId) -> Vec<Action<R>> {
        if let Some(held) = self.jobs.remove(&job) {
            held.state.cancel();
        }
        self.attempts.retain(|_, (j, _)| *j != job);
        vec![Action::StopJob(job)]
    }

    /// The node refuses a job it holds (it may not read its input): like [`JobTable::end_job`],
    /// and the dispatcher hears why, so it places the chunks elsewhere without counting a failure.
    pub(super) fn reject(&mut self, job: JobId, error: String) -> Vec<Action<R>> {
        let mut actions = self.end_job(job);
        actions.push(Action::Tell(NodeToDispatcher::JobRejected { job, error }));
        actions
    }

    /// `CancelAttempt`: the attempt may still wait for its job's payload, or already be queued.
    pub(super) fn cancel_attempt(&mut self, attempt: AttemptId) -> Vec<Action<R>> {
        for held in self.jobs.values_mut() {
            if let JobState::Preparing { waiting, .. } = &mut held.state {
                waiting.retain(|a| a.attempt != attempt);
            }
        }
        let mut actions = vec![Action::StopAttempt(attempt)];
        actions.extend(self.release(attempt).map(Action::StopJob));
        actions
    }

    /// `Ack`: the dispatcher stored these attempts' reports.
    pub(super) fn acknowledged(&mut self, attempts: &[AttemptId]) -> Vec<Action<R>> {
        attempts
            .iter()
            .filter_map(|&attempt| self.release(attempt))
            .map(Action::StopJob)
            .collect()
    }

    /// An attempt failed on a slot: there is nothing of it to claim any more (its report is still
    /// resent until acknowledged).
    pub(super) fn failed(&mut self, attempt: AttemptId) {
        self.attempts.remove(&attempt);
    }

    /// Stops everything this node holds (a stop's deadline passed).
    pub(super) fn cancel_all(&mut self) -> Vec<Action<R>> {
        let mut actions: Vec<Action<R>> = self
            .jobs
            .drain()
            .map(|(job, held)| {
                held.state.cancel();
                Action::StopJob(job)
            })
            .collect();
        actions.extend(
            std::mem::take(&mut self.attempts)
                .into_keys()
                .map(Action::StopAttempt),
        );
        actions
    }

    /// Attempts this node holds: assigned and neither acknowledged, cancelled nor failed.
    pub(super) fn held(&self) -> usize {
        self.attempts.len()
    }

    /// A job's state, if this node holds it.
    pub(super) fn job(&self, job: JobId) -> Option<&JobState<P, R>> {
        self.jobs.get(&job).map(|held| &held.state)
    }

    /// Forgets an attempt; its job goes too if an earlier session started it, the current one
    /// has not confirmed it, and it holds no other attempt. Returns the job dropped so.
    fn release(&mut self, attempt: AttemptId) -> Option<JobId> {
        let (job, _) = self.attempts.remove(&attempt)?;
        let stale = self
            .jobs
            .get(&job)
            .is_some_and(|j| j.session != self.session);
        if !stale || self.attempts.values().any(|(j, _)| *j == job) {
            return None;
        }
        let held = self.jobs.remove(&job)?;
        tracing::debug!(%job, "job not confirmed by the dispatcher and no attempt left; dropped");
        held.state.cancel();
        Some(job)
    }
}

#[cfg(test)]
mod tests;
