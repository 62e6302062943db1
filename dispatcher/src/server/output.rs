//! A job's results on their way to one attached client: in chunk order on an output stream,
//! read back from the spool or, just accepted, straight from memory; progress and the verdict
//! go on the control stream.

use common::net::{open_uni, FramedSend};
use tokio::sync::mpsc;
use wire::proto::{ClientEvent, JobId, StreamHeader};

use super::ConnError;
use crate::core::ClientCommand;

/// Follows one job for one client: results in chunk order on an output stream, progress and the
/// verdict on the control stream (through the outbox).
pub(super) async fn stream_results(
    conn: &quinn::Connection,
    job: JobId,
    results: Option<crate::spool::Reader>,
    mut commands: mpsc::UnboundedReceiver<ClientCommand>,
    outbox: &mpsc::UnboundedSender<ClientEvent>,
) -> Result<(), ConnError> {
    let mut output = open_uni(conn, &StreamHeader::JobOutput { job }).await?;
    output.flush().await?;
    while let Some(first) = commands.recv().await {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                ClientCommand::Output(extent) => {
                    let Some(reader) = &results else { continue };
                    let bytes = reader.read(extent).map_err(|e| ConnError::Refused(format!("cannot read a stored result: {e}")))?;
                    queue_result(&mut output, &bytes).await?;
                }
                ClientCommand::Result(bytes) => queue_result(&mut output, &bytes).await?,
                ClientCommand::OutputEnd => output.finish().await?,
                ClientCommand::Event(event) => {
                    output.flush().await?;
                    let last = matches!(event, ClientEvent::JobSucceeded { .. } | ClientEvent::JobFailed { .. });
                    let _ = outbox.send(event);
                    if last {
                        return Ok(());
                    }
                }
            }
            next = commands.try_recv().ok();
        }
        output.flush().await?;
    }
    Ok(())
}

/// Queues a result on a job's output stream, flushing every MiB.
async fn queue_result(output: &mut FramedSend, bytes: &[u8]) -> Result<(), ConnError> {
    output.queue_raw(bytes)?;
    if output.queued() >= 1 << 20 {
        output.flush().await?;
    }
    Ok(())
}

