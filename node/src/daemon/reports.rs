//! Reports on their way to the dispatcher: every report a slot thread makes is kept in the
//! node's [`Outbox`] until the dispatcher acknowledges it, across sessions, and the current
//! session's writer sends each new one (and, when it starts, those an earlier session left
//! unacknowledged).

use std::collections::BTreeMap;

use common::net::FramedSend;
use tokio::sync::mpsc;
use tracing::{info, warn};
use wire::proto::{AttemptId, ChunkReport};

use super::{Node, SessionError};

/// Reports kept for resending at most; beyond this the oldest are dropped.
const MAX_UNACKED: usize = 10_000;

/// Reports waiting for their acknowledgement.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) unacked: BTreeMap<AttemptId, ChunkReport>,
    /// The current session's report writer, if one runs.
    pub(super) session: Option<mpsc::UnboundedSender<ChunkReport>>,
}

impl Node {
    /// Keeps every report from the slot threads until it is acknowledged, and hands it to the
    /// current session's writer if one runs.
    pub(super) async fn collect_reports(&self, mut reports: mpsc::UnboundedReceiver<ChunkReport>) {
        while let Some(report) = reports.recv().await {
            if report.outcome.is_err() {
                self.work().failed(report.attempt);
            }
            let mut outbox = self.outbox();
            if let Some(session) = &outbox.session {
                if session.send(report.clone()).is_err() {
                    outbox.session = None;
                }
            }
            outbox.unacked.insert(report.attempt, report);
            while outbox.unacked.len() > MAX_UNACKED {
                // A dispatcher that never acknowledges must not exhaust our memory.
                if let Some((attempt, _)) = outbox.unacked.pop_first() {
                    warn!(%attempt, "dropping an unacknowledged report: too many outstanding");
                }
            }
        }
    }

    /// Sends reports, first any left unacknowledged by an earlier session, then each new one as
    /// it comes; each is kept until the dispatcher acknowledges it.
    pub(super) async fn write_reports(&self, mut send: FramedSend) -> Result<(), SessionError> {
        let (session, mut reports) = mpsc::unbounded_channel();
        let resend: Vec<ChunkReport> = {
            let mut outbox = self.outbox();
            outbox.session = Some(session);
            outbox.unacked.values().cloned().collect()
        };
        if !resend.is_empty() {
            info!(reports = resend.len(), "resending unacknowledged reports");
        }
        for report in &resend {
            send.queue_frame(report)?;
        }
        send.flush().await?;
        while let Some(report) = reports.recv().await {
            let mut batch = vec![report];
            while let Ok(more) = reports.try_recv() {
                batch.push(more);
            }
            for report in &batch {
                send.queue_frame(report)?;
            }
            send.flush().await?;
        }
        Ok(())
    }

    pub(super) fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // Only map operations happen under this lock; a poisoned map is still consistent.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}
