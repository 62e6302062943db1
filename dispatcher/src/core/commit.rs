//! The journal writer thread and what travels to and from it: each batch with the promises to
//! keep once it is durable, and the answer saying whether it is.

use ledger::promises::Promises;
use tokio::sync::{mpsc, oneshot};
use wire::proto::{JobId, JobSummary};

use super::Refusal;
use crate::journal::{Batch, Journal};

/// A batch on its way to the journal writer, with the promises to keep once it is durable.
pub(super) struct CommitRequest {
    pub(super) batch: Batch,
    /// Spool files to sync before the commit.
    pub(super) sync: Vec<std::fs::File>,
    pub(super) promises: Promises<Answer>,
}

/// An answer to `status`, `cancel` or `jobs`, held until what it says survives a crash.
pub(super) enum Answer {
    Summary(oneshot::Sender<Result<JobSummary, Refusal>>, Result<JobSummary, Refusal>),
    Jobs(oneshot::Sender<Vec<JobSummary>>, Vec<JobSummary>),
}

impl Answer {
    pub(super) fn send(self) {
        // A client that went away no longer needs its answer.
        match self {
            Answer::Summary(reply, summary) => drop(reply.send(summary)),
            Answer::Jobs(reply, jobs) => drop(reply.send(jobs)),
        }
    }
}

/// The journal writer's answer.
pub(super) struct Committed {
    pub(super) promises: Promises<Answer>,
    /// The failure, and the jobs the failed batch concerned.
    pub(super) failed: Option<(CommitError, Vec<JobId>)>,
}

/// Why a batch could not be made durable.
#[derive(Debug, thiserror::Error)]
pub(super) enum CommitError {
    /// A spool file the batch points into could not be synced.
    #[error("cannot sync a spool file: {0}")]
    Sync(std::io::Error),
    /// The journal transaction failed.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

/// Runs on its own thread: syncs and commits each batch it is given, in order.
pub(super) fn journal_writer(journal: Journal, mut requests: mpsc::Receiver<CommitRequest>, done: mpsc::Sender<Committed>) {
    while let Some(mut request) = requests.blocking_recv() {
        let jobs = request.batch.touched_jobs();
        let result = request
            .sync
            .iter()
            .try_for_each(std::fs::File::sync_data)
            .map_err(CommitError::Sync)
            .and_then(|()| Ok(journal.commit(&mut request.batch)?));
        let committed = Committed { promises: request.promises, failed: result.err().map(|e| (e, jobs)) };
        if done.blocking_send(committed).is_err() {
            return;
        }
    }
}
