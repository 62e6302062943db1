//! Pre-combining on the node: when this node runs both chunks `2k` and `2k + 1` of a reduce job,
//! the slot that finishes second combines the two results with the payload's `dispy_combine`
//! and sends one report for both attempts (`ChunkReport::combined_with`), the result of the
//! block combine over them: one result travels instead of two, and the dispatcher schedules one
//! combine task fewer.
//!
//! A chunk's result waits (is *parked*) only while its sibling is queued or runs here; it goes
//! on its own as soon as the sibling fails, is cancelled or leaves the pool. A pre-combine that
//! fails costs nothing but time: both results are then reported as they are, and the
//! dispatcher's own combine task, which fails and retries like any chunk, gives the job its
//! report. A parked attempt the dispatcher cancels (a speculative copy won elsewhere) is
//! dropped without a report, as any cancelled attempt.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;
use wire::proto::{AttemptId, ChunkIndex, ChunkReport, JobId};

use super::{lock, JobContext, Shared, Work};
use crate::exec::{CancelFlag, Worker};

/// A reduce job's chunks in the pool and the results waiting for their siblings.
#[derive(Debug, Default)]
pub(super) struct Pairs {
    /// Chunks (not combines) of reduce jobs queued or running here, with their attempts.
    in_pool: HashMap<(JobId, ChunkIndex), AttemptId>,
    /// Results waiting for their sibling's.
    parked: HashMap<(JobId, ChunkIndex), Parked>,
}

/// A result waiting for its sibling's, with the context of the job it ran for and where its
/// report goes.
#[derive(Debug)]
struct Parked {
    job: Arc<JobContext>,
    reports: UnboundedSender<ChunkReport>,
    report: ChunkReport,
}

/// What to do with a finished attempt's report.
enum Next {
    Send(Vec<ChunkReport>),
    Park,
    /// Combine with the sibling's parked report.
    Combine(ChunkReport),
}

impl Pairs {
    /// A chunk of a reduce job ([`may_pair`]) joins the pool (call before it is queued).
    pub(super) fn submitted(&mut self, work: &Work) {
        self.in_pool.insert((work.job.job, work.assignment.chunk), work.assignment.attempt);
    }

    /// Attempts leave the pool without a report (cancelled, or their job ended): their parked
    /// results go, and their siblings' parked results are sent alone.
    pub(super) fn cancelled(&mut self, gone: impl Fn(JobId, AttemptId) -> bool) {
        let leaving: Vec<(JobId, ChunkIndex)> =
            self.in_pool.iter().filter(|((job, _), attempt)| gone(*job, **attempt)).map(|(key, _)| *key).collect();
        self.parked.retain(|(job, _), parked| !gone(*job, parked.report.attempt));
        for (job, chunk) in leaving {
            self.in_pool.remove(&(job, chunk));
            if let Some(parked) = self.parked.remove(&(job, chunk ^ 1)) {
                let _ = parked.reports.send(parked.report);
            }
        }
    }

    /// What to do with `report`, the outcome of `work` (a chunk that may pair), which leaves the
    /// pool.
    fn finished(&mut self, work: &Work, report: ChunkReport) -> (Next, Option<ChunkReport>) {
        let key = (work.job.job, work.assignment.chunk);
        if self.in_pool.get(&key) != Some(&report.attempt) {
            return (Next::Send(vec![report]), None);
        }
        self.in_pool.remove(&key);
        let sibling = (key.0, key.1 ^ 1);
        let parked = self.parked.remove(&sibling).filter(|p| Arc::ptr_eq(&p.job, &work.job)).map(|p| p.report);
        match (report.outcome.is_ok(), parked) {
            (true, Some(parked)) => (Next::Combine(parked), Some(report)),
            (false, parked) => (Next::Send([Some(report), parked].into_iter().flatten().collect()), None),
            (true, None) if self.in_pool.contains_key(&sibling) => {
                let parked = Parked { job: Arc::clone(&work.job), reports: work.reports.clone(), report };
                self.parked.insert(key, parked);
                (Next::Park, None)
            }
            (true, None) => (Next::Send(vec![report]), None),
        }
    }
}

/// Whether `work` is a chunk of a reduce job, whose result may wait for its sibling's; any other
/// report goes straight to the dispatcher without the pairs' lock.
pub(super) fn may_pair(work: &Work) -> bool {
    work.job.reduce && !work.assignment.combine
}

/// Sends the report of `work`, which just ran on this slot's worker (`current`), pre-combined
/// with its sibling's when that is parked, or parks it when the sibling is still to come.
pub(super) fn deliver(shared: &Shared, current: &mut Option<(Arc<JobContext>, Worker, CancelFlag)>, work: &Work, report: ChunkReport) {
    if !may_pair(work) {
        // A closed channel means the session ended; the dispatcher requeues the attempt.
        let _ = work.reports.send(report);
        return;
    }
    let (next, mine) = lock(&shared.pairs).finished(work, report);
    let reports = match (next, mine) {
        (Next::Send(reports), _) => reports,
        (Next::Park, _) => return,
        (Next::Combine(parked), Some(mine)) => {
            let (left, right) = if work.assignment.chunk.is_multiple_of(2) { (mine, parked) } else { (parked, mine) };
            let reports = combine(current, &work.job, left, right);
            if reports.len() == 1 {
                // A combine run like a dispatcher's combine task: counted with the slots' work.
                shared.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            reports
        }
        (Next::Combine(parked), None) => vec![parked],
    };
    for report in reports {
        // A closed channel means the session ended; the dispatcher requeues the attempt.
        let _ = work.reports.send(report);
    }
}

/// The one report for the results of chunks `2k` (`left`) and `2k + 1`, or both reports as they
/// are when the combine fails (the slot's worker then goes, as after any failure).
fn combine(
    current: &mut Option<(Arc<JobContext>, Worker, CancelFlag)>,
    job: &Arc<JobContext>,
    left: ChunkReport,
    right: ChunkReport,
) -> Vec<ChunkReport> {
    let Some((_, worker, _)) = current.as_mut().filter(|(context, _, _)| Arc::ptr_eq(context, job)) else {
        return vec![left, right];
    };
    let (Ok(left_out), Ok(right_out)) = (&left.outcome, &right.outcome) else { return vec![left, right] };
    let started = std::time::Instant::now();
    let combined = worker.combine(left_out, right_out);
    let log = [left.log.as_ref(), right.log.as_ref(), &worker.take_log()].concat();
    match combined {
        Ok(output) => {
            tracing::debug!(job = %job.job, left = %left.attempt, right = %right.attempt, "results pre-combined");
            let run = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            vec![ChunkReport {
                attempt: left.attempt,
                outcome: Ok(output.into()),
                run_nanos: left.run_nanos.saturating_add(right.run_nanos).saturating_add(run),
                log: log.into(),
                combined_with: Some(right.attempt),
            }]
        }
        Err(failure) => {
            tracing::debug!(job = %job.job, "pre-combine failed, results reported as they are: {failure}");
            *current = None;
            vec![left, right]
        }
    }
}
