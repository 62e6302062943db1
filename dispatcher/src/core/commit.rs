//! The journal writer thread and what travels to and from it: each batch with the spool files to
//! sync first, and the answer saying whether it is durable.

use ledger::record::Batch;
use tokio::sync::mpsc;

use crate::journal::Journal;

/// A batch on its way to the journal writer.
pub(super) struct CommitRequest {
    pub(super) batch: Batch,
    /// Spool files to sync before the commit.
    pub(super) sync: Vec<std::fs::File>,
}

/// The journal writer's answer.
pub(super) struct Committed {
    /// Why the batch is not durable, if it is not.
    pub(super) failed: Option<CommitError>,
    /// How long the syncs and the commit took.
    pub(super) took: std::time::Duration,
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
pub(super) fn journal_writer(mut journal: Journal, mut requests: mpsc::Receiver<CommitRequest>, done: mpsc::Sender<Committed>) {
    while let Some(mut request) = requests.blocking_recv() {
        let started = std::time::Instant::now();
        let result = request
            .sync
            .iter()
            .try_for_each(std::fs::File::sync_data)
            .map_err(CommitError::Sync)
            .and_then(|()| Ok(journal.commit(&mut request.batch)?));
        let committed = Committed { failed: result.err(), took: started.elapsed() };
        if done.blocking_send(committed).is_err() {
            return;
        }
    }
}
