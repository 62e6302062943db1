//! Outcomes: what the scheduler does when an attempt ends (an accepted result, a failure to retry
//! or to fail the job with, a node rejecting the job) and when a job ends, with the actions that
//! cancel its attempts, end it on its nodes and announce its verdict.

use std::cmp::Reverse;
use std::time::Instant;

use wire::proto::{AttemptFailure, AttemptId, ChunkFailure, ChunkIndex, JobFailure, JobId};

use super::job::{FailedAttempt, Job};
use super::node::NodeJob;
use super::{Action, NodeId, Scheduler, Timer};

/// Past this length a job's rejection text takes no more nodes' reasons (a thousand nodes that
/// refuse a payload for the same reason say it once each otherwise).
const MAX_REJECTIONS_TEXT: usize = 2000;

/// A job's end, as announced to the driver.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Every chunk has an accepted result.
    Succeeded,
    /// The job failed, and why.
    Failed(JobFailure),
}

impl Scheduler {
    /// The body of [`Scheduler::handle_job_rejected`].
    pub(super) fn job_rejected(&mut self, now: Instant, node: NodeId, job: JobId, error: String) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        match n.jobs.get_mut(&job) {
            Some(state @ (NodeJob::Started | NodeJob::Ready)) => *state = NodeJob::Rejected,
            _ => return,
        }
        let Some(j) = self.jobs.get_mut(&job) else {
            // Invariant: a node's job map only names live jobs; end_job removes them.
            debug_assert!(false, "node {node} knows ended job {job}");
            return;
        };
        j.rejected_live += 1;
        j.last_rejection = Some(match j.last_rejection.take() {
            Some(earlier) if earlier.split("; ").any(|e| e == error) => earlier,
            Some(earlier) if earlier.len() < MAX_REJECTIONS_TEXT => format!("{earlier}; {error}"),
            Some(earlier) => earlier,
            None => error,
        });
        let error = j.last_rejection.clone().unwrap_or_default();
        let mut ours: Vec<AttemptId> = n
            .attempts
            .iter()
            .filter(|a| self.attempts.get(a).is_some_and(|a| a.job == job))
            .copied()
            .collect();
        ours.sort_unstable();
        for attempt in ours {
            if let Some(a) = self.release_attempt(now, attempt) {
                if a.twin.is_none() {
                    self.requeue(a.job, a.chunk);
                }
            }
        }
        let everyone_rejected =
            self.jobs.get(&job).is_some_and(|j| j.rejected_live >= self.nodes.len());
        if everyone_rejected {
            // This also offers the node's freed positions to other jobs.
            self.end_job(now, job, Some(Verdict::Failed(JobFailure::Rejected { error })));
        } else {
            self.fill_node(now, node);
            self.fill_job(now, job);
            self.refresh_clock(now, job);
        }
        self.settle(now);
    }

    /// The body of [`Scheduler::handle_chunk_succeeded`].
    pub(super) fn chunk_succeeded(
        &mut self,
        now: Instant,
        node: NodeId,
        attempt: AttemptId,
    ) -> Option<(JobId, ChunkIndex)> {
        self.handle_sign_of_life(now, node);
        let Some(live) = self.attempts.get(&attempt) else {
            return self.recover_lost_result(now, node, attempt);
        };
        if live.node != node {
            return None;
        }
        let a = self.release_attempt(now, attempt)?;
        // Invariant: attempts only exist for live jobs; end_job releases them.
        let job = self.jobs.get_mut(&a.job)?;
        job.done += 1;
        if let Some(since) = a.running_since {
            job.durations.insert(job.done, now.saturating_duration_since(since));
        }
        if a.speculative {
            job.speculative_wins += 1;
        }
        let history = if job.failures.is_empty() { None } else { job.failures.remove(&a.chunk) };
        if !job.crashes.is_empty() {
            job.crashes.remove(&a.chunk);
        }
        let mut loser = None;
        if let Some(twin) = a.twin {
            if let Some(t) = self.release_attempt(now, twin) {
                self.out.act(Action::CancelAttempt { node: t.node, attempt: twin });
                loser = Some(t.node);
            }
        }
        if let Some(history) = history {
            self.blame(now, node, a.job, a.chunk, history);
        }
        if self.jobs.get(&a.job).is_some_and(Job::is_finished) {
            // This also offers the freed positions to other jobs.
            self.end_job(now, a.job, Some(Verdict::Succeeded));
        } else {
            self.mark_spec(a.job);
            self.fill_node(now, node);
            if let Some(loser) = loser {
                self.fill_node(now, loser);
            }
            self.refresh_clock(now, a.job);
        }
        self.settle(now);
        Some((a.job, a.chunk))
    }

    /// The body of [`Scheduler::handle_chunk_failed`].
    pub(super) fn chunk_failed(
        &mut self,
        now: Instant,
        node: NodeId,
        attempt: AttemptId,
        failure: ChunkFailure,
        log_tail: Vec<String>,
    ) {
        self.handle_sign_of_life(now, node);
        if self.attempts.get(&attempt).is_none_or(|a| a.node != node) {
            return;
        }
        let Some(a) = self.release_attempt(now, attempt) else { return };
        let name = self.nodes.get(&node).map(|n| n.name.clone()).unwrap_or_default();
        // Invariant: attempts only exist for live jobs; end_job releases them.
        let Some(job) = self.jobs.get_mut(&a.job) else { return };
        let retryable = failure.kind.is_retryable();
        let history = job.failures.entry(a.chunk).or_default();
        history.push(FailedAttempt { node, report: AttemptFailure { node: name, failure, log_tail } });
        if !retryable || history.len() >= job.req.max_attempts.max(1) as usize {
            let attempts = job
                .failures
                .remove(&a.chunk)
                .unwrap_or_default()
                .into_iter()
                .map(|f| f.report)
                .collect();
            let failure = JobFailure::Chunk { chunk: a.chunk, attempts };
            // This also offers the node's freed position to other jobs.
            self.end_job(now, a.job, Some(Verdict::Failed(failure)));
            self.settle(now);
            return;
        }
        if a.twin.is_none() {
            job.retries += 1;
            self.requeue(a.job, a.chunk);
        }
        // The freed position goes by priority first; then the retry looks for another node.
        self.fill_node(now, node);
        self.fill_job(now, a.job);
        self.refresh_clock(now, a.job);
        self.settle(now);
    }

    /// Ends a job: cancels its attempts, sends `EndJob` to its nodes, emits the verdict (none
    /// for a cancellation), forgets the job and gives the freed positions to other jobs.
    pub(super) fn end_job(&mut self, now: Instant, job: JobId, verdict: Option<Verdict>) {
        let Some(j) = self.jobs.get(&job) else { return };
        let mut nodes: Vec<NodeId> = j.started_on.iter().copied().collect();
        nodes.sort_unstable();
        let mut cancelled: Vec<AttemptId> = Vec::new();
        for node in &nodes {
            // Invariant: `started_on` only names connected nodes; lose_node removes them.
            let Some(n) = self.nodes.get(node) else { continue };
            let attempts = &self.attempts;
            cancelled.extend(
                n.attempts.iter().filter(|a| attempts.get(a).is_some_and(|a| a.job == job)),
            );
        }
        cancelled.sort_unstable();
        for attempt in cancelled {
            if let Some(a) = self.release_attempt(now, attempt) {
                self.out.act(Action::CancelAttempt { node: a.node, attempt });
            }
        }
        let Some(j) = self.jobs.remove(&job) else { return };
        if j.in_pending {
            self.update_tenant(j.tenant, |t| {
                t.pending.remove(&j.key);
            });
        }
        self.tenant_job_ended(j.tenant);
        if let Some(at) = j.placement_deadline {
            self.timers.remove(&(at, Timer::Placement(job)));
        }
        if let Some(at) = j.spec_deadline {
            self.timers.remove(&(at, Timer::Speculate(job)));
        }
        if j.spec_waiting {
            self.spec_waiting.remove(&(Reverse(j.req.priority), job));
        }
        for &node in &nodes {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.jobs.remove(&job);
                n.shares.remove(&job);
            }
            self.refresh_capacity(node);
            self.out.act(Action::EndJob { node, job });
        }
        let stats = j.stats();
        match verdict {
            Some(Verdict::Succeeded) => self.out.act(Action::JobSucceeded { job, stats }),
            Some(Verdict::Failed(failure)) => {
                self.out.act(Action::JobFailed { job, failure, stats })
            }
            None => {}
        }
        for node in nodes {
            self.fill_node(now, node);
        }
    }
}
