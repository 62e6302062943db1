//! Getting a job's payload ready on this node: from the cache or the dispatcher's stream,
//! verified, compiled once per node, and wrapped in the job's context.

use std::sync::Arc;
use std::time::Duration;

use common::net::FramedRecv;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use wire::proto::{NodeToDispatcher, PayloadHash, PayloadKind};

use super::{Node, PendingContext, Session, SessionError};
use crate::cache::CacheError;
use crate::exec::Payload;
use crate::pool::JobContext;

/// Largest payload a node accepts.
const MAX_PAYLOAD: usize = 256 << 20;
/// How long a started job waits for its payload stream.
const PAYLOAD_WAIT: Duration = Duration::from_secs(120);

/// Finds the payload (cache or incoming stream), compiles it once per node, and builds the job's
/// context. The error is the user-facing reason for `JobRejected`.
///
/// A native payload is loaded from disk by every worker, so its file is verified against its hash
/// for every job even when it was checked before; a WebAssembly module is verified when it is read
/// to be compiled, and runs from memory after that. A damaged file is removed, logged, and
/// fetched again from the dispatcher (once per job).
pub(super) async fn prepare(session: &Session, pending: &PendingContext) -> Result<Arc<JobContext>, String> {
    let node = &session.node;
    let spec = &pending.spec;
    if let PayloadKind::Native { .. } = spec.kind {
        if let Some(refusal) = node.executor.native_policy().refusal() {
            return Err(refusal);
        }
    }
    let hash = spec.payload;
    node.cache.note_lookup(&hash);
    let mut fetched_again = false;
    let payload = loop {
        let compiled = node.cache.compiled(&hash);
        if let Some(payload @ Payload::Wasm(_)) = compiled {
            break payload;
        }
        if !node.cache.wait_for(&hash, PAYLOAD_WAIT).await {
            return Err(format!("payload {hash:?} did not arrive within {PAYLOAD_WAIT:?}"));
        }
        // Reading (up to 256 MiB), hashing and compiling stay off the runtime, which may be this
        // node's only thread and must keep heartbeating.
        let loader = Arc::clone(node);
        let kind = spec.kind.clone();
        let loaded = tokio::task::spawn_blocking(move || -> Result<Result<Payload, String>, CacheError> {
            let bytes = loader.cache.read(&hash)?;
            match compiled {
                Some(payload) => Ok(Ok(payload)),
                None => Ok(loader.executor.load(&kind, &bytes, &loader.cache.path(&hash)).map_err(|e| e.to_string())),
            }
        })
        .await
        .map_err(|e| format!("compiler task failed: {e}"))?;
        match loaded {
            Ok(payload) => {
                let payload = payload?;
                node.cache.insert_compiled(hash, payload.clone());
                break payload;
            }
            // A damaged file (removed now), or one another job found damaged and removed first.
            Err(e) if !fetched_again && e.is_missing_or_damaged() => {
                if let CacheError::HashMismatch { expected, actual } = &e {
                    warn!(payload = ?expected, found = ?actual, "cached payload does not match its hash; removed it and fetching it again");
                }
                fetched_again = true;
                session
                    .to_dispatcher
                    .send(NodeToDispatcher::NeedPayload { hash })
                    .await
                    .map_err(|_| "the session ended while fetching the payload again".to_owned())?;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    if spec.reduce && !payload.has_combine() {
        return Err(format!(
            "the job reduces its results (--results reduce) but its payload does not export `{}`",
            wire::abi::EXPORT_COMBINE
        ));
    }
    Ok(Arc::new(JobContext {
        job: spec.job,
        _lease: pending.lease.clone(),
        payload,
        args: spec.args.clone(),
        memory_limit: spec.memory_limit,
        chunk_timeout: Duration::from_millis(spec.chunk_timeout_ms),
        cancel: pending.cancel.clone(),
        shared_input_roots: spec
            .shared_input
            .then(|| crate::shared_input::resolve_roots(&node.config.shared_input_roots)),
        objects: node.objects.clone(),
        reduce: spec.reduce,
    }))
}

/// Stores a payload the dispatcher sent, and tells it which payloads the cache evicted to make
/// room, so it ships them again when a job needs them.
pub(super) async fn receive_payload(
    mut recv: FramedRecv,
    node: Arc<Node>,
    hash: PayloadHash,
    len: u64,
    to_dispatcher: mpsc::Sender<NodeToDispatcher>,
) -> Result<(), SessionError> {
    if len > MAX_PAYLOAD as u64 {
        recv.stop(1);
        warn!(?hash, len, "payload larger than this node accepts");
        return Ok(());
    }
    let bytes = recv.read_to_end(MAX_PAYLOAD).await?;
    // Hashing and writing up to 256 MiB would stall the runtime (heartbeats included).
    let stored = tokio::task::spawn_blocking(move || node.cache.store(hash, &bytes).map(|evicted| (bytes.len(), evicted))).await;
    match stored {
        Ok(Ok((len, evicted))) => {
            debug!(?hash, len, "payload cached");
            if !evicted.is_empty() {
                // A closed channel means the session is ending; the next one lists the cache anew.
                let _ = to_dispatcher.send(NodeToDispatcher::PayloadsEvicted { payloads: evicted }).await;
            }
        }
        Ok(Err(e)) => warn!(error = %e, "payload not cached"),
        Err(e) => warn!(error = %e, "payload store task failed"),
    }
    Ok(())
}
