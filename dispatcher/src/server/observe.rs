//! The client requests that only ask the core a question and relay its answer: `drain` and
//! `undrain`, `logs` and `explain`. Each sends one [`Event`] with a reply channel and puts the
//! answer (or the refusal, in words) in the connection's outbox.

use tokio::sync::{mpsc, oneshot};
use wire::proto::{ClientEvent, ClientRequest};

use super::{ClientConn, ConnError};
use crate::core::Event;

/// Serves `Drain`, `Undrain`, `Logs` or `Explain` (any other request is not for this function
/// and is ignored).
pub(super) async fn ask(events: &mpsc::Sender<Event>, client: &ClientConn<'_>, request: ClientRequest) -> Result<(), ConnError> {
    let caller = client.caller.clone();
    fn gone<E>(_: E) -> ConnError {
        ConnError::CoreGone
    }
    let drain = matches!(request, ClientRequest::Drain { .. });
    let answer = match request {
        ClientRequest::Drain { node } | ClientRequest::Undrain { node } => {
            let (reply, answer) = oneshot::channel();
            events.send(Event::Drain { caller, node, drain, reply }).await.map_err(gone)?;
            answer.await.map_err(gone)?.map(ClientEvent::Nodes)
        }
        ClientRequest::Logs { job, chunk, from } => {
            let (reply, answer) = oneshot::channel();
            events.send(Event::Logs { caller, job, chunk, from, reply }).await.map_err(gone)?;
            answer.await.map_err(gone)?.map(ClientEvent::Logs)
        }
        ClientRequest::Explain { job } => {
            let (reply, answer) = oneshot::channel();
            events.send(Event::Explain { caller, job, reply }).await.map_err(gone)?;
            answer.await.map_err(gone)?.map(ClientEvent::Explanation)
        }
        _ => return Ok(()),
    };
    let _ = client.outbox.send(answer.unwrap_or_else(|refusal| ClientEvent::Error { message: refusal.to_string() }));
    Ok(())
}
