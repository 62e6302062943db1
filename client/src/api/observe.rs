//! `logs` and `explain` on [`Client`]: a job's attempt logs page by page (and followed until the
//! job ends), and why a job waits and how its chunks failed. Rendering for people and for
//! `--json` is in [`crate::report`].

use std::time::Duration;

use wire::observe::{Explanation, LogEntry, LogPage};
use wire::proto::{ChunkIndex, ClientEvent, ClientRequest, JobId};

use super::{unexpected, Client, ClientError};

/// How often `logs --follow` asks for newer logs.
pub(crate) const FOLLOW_POLL: Duration = Duration::from_millis(250);

impl Client {
    /// One page of `job`'s attempt logs (of `chunk` only, when given) stored after cursor `from`
    /// (0: from the start); ask again from the page's `next` for newer ones.
    ///
    /// # Errors
    /// [`ClientError::Refused`] for an unknown job (another tenant's job answers the same), or a
    /// connection problem.
    pub async fn logs_page(&mut self, job: JobId, chunk: Option<ChunkIndex>, from: u64) -> Result<LogPage, ClientError> {
        match self.request(&ClientRequest::Logs { job, chunk, from }).await? {
            ClientEvent::Logs(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// Hands every stored attempt log of `job` (of `chunk` only, when given) to `each`, in the
    /// order the dispatcher stored them. With `follow`, keeps asking (every 250 ms)
    /// until the job has ended and every log it has is handed over.
    ///
    /// # Errors
    /// As [`Client::logs_page`].
    pub async fn logs(
        &mut self,
        job: JobId,
        chunk: Option<ChunkIndex>,
        follow: bool,
        mut each: impl FnMut(LogEntry),
    ) -> Result<(), ClientError> {
        let mut from = 0;
        loop {
            let page = self.logs_page(job, chunk, from).await?;
            let caught_up = page.next == from;
            from = page.next;
            page.entries.into_iter().for_each(&mut each);
            if caught_up && (!follow || page.finished) {
                return Ok(());
            }
            if caught_up {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    }

    /// Why `job` waits (each node's reason) and every failed attempt of its chunks.
    ///
    /// # Errors
    /// [`ClientError::Refused`] for an unknown job (another tenant's job answers the same), or a
    /// connection problem.
    pub async fn explain(&mut self, job: JobId) -> Result<Explanation, ClientError> {
        match self.request(&ClientRequest::Explain { job }).await? {
            ClientEvent::Explanation(explanation) => Ok(*explanation),
            other => Err(unexpected(&other)),
        }
    }
}
