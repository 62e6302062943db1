//! The core's disk: one blocking thread that owns the spool's open files and reads the payload
//! store, so no disk call of the core runs on the async runtime. Commits go on from it to the
//! journal writer thread, so a commit's syncs never hold up a result being stored.
//!
//! Requests are carried out in order, which the core relies on: a job's input file is handed
//! over before the commit that syncs it, a result is appended before the ledger puts its extent
//! in a batch (it does so only once told the result is stored), and an attempt's log is appended
//! before the commit that acknowledges its report, which syncs every `logs` file that grew.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use ledger::jobs::{LogQuery, LogRecord, StoreTicket};
use ledger::record::{Batch, Extent};
use ledger::scheduler::NodeId;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use wire::observe::LogPage;
use wire::proto::{Assignment, AttemptId, ChunkIndex, ClientEvent, JobId, PayloadHash};

use super::commit::CommitRequest;
use super::{Attachment, ClientCommand, Refusal, Upload};
use crate::logstore::{self, LogFile};
use crate::payloads::{PayloadStore, UNUSED_PAYLOAD_GRACE};
use crate::spool::{Appender, Reader, Spool, SpoolFile};

/// An attachment waiting for its job's results file to be opened.
pub(crate) struct PendingAttach {
    pub(super) caller: ledger::jobs::Caller,
    pub(super) job: JobId,
    pub(super) commands: mpsc::UnboundedSender<ClientCommand>,
    pub(super) client: mpsc::UnboundedSender<ClientEvent>,
    pub(super) reply: oneshot::Sender<Result<Attachment, Refusal>>,
}

/// What the core asks of the disk.
pub(super) enum DiskRequest {
    /// Create a submitted job's input file and answer the submitter with its appender; the core
    /// hears `InputReady` (or `InputFailed`) first.
    CreateInput {
        job: JobId,
        payload: PayloadHash,
        stopped: oneshot::Receiver<()>,
        reply: oneshot::Sender<Result<Upload, Refusal>>,
    },
    /// Open a job's input file for a resumed upload, and answer the submitter with its appender
    /// (or the core with `InputFailed`).
    OpenInput {
        job: JobId,
        resumed: ledger::jobs::Resumed,
        stopped: oneshot::Receiver<()>,
        reply: oneshot::Sender<Result<(ledger::jobs::Resumed, Option<Upload>), Refusal>>,
    },
    /// Create the input file of the job id the next submission gets, ahead of it, and hand it
    /// to the core (`InputPrepared`): that submission is then accepted without waiting for the
    /// disk. Its payload was found by the submitter's connection, which refreshed its time.
    PrepareInput { job: JobId },
    /// Open (creating if need be) a job's results file for an attachment.
    OpenResults(PendingAttach),
    /// Append accepted results, in order (those of one turn of the core: one request, and one
    /// write per job, for many small results).
    Store(Vec<(StoreTicket, Bytes)>),
    /// A job's input file, to sync with the commit that records its input complete.
    InputEnded { job: JobId, sync: std::fs::File },
    /// Sync the named files and commit the batch (on the journal writer thread).
    Commit { batch: Batch, sync_inputs: Vec<JobId>, sync_results: Vec<JobId> },
    /// Close a job's input and results files and delete them; its logs stay.
    Remove(JobId),
    /// Close and delete every file of a forgotten job, its logs included.
    Forget(JobId),
    /// Append an attempt's log to its job's `logs` file.
    StoreLog(LogRecord),
    /// Read a job's logs and answer the client.
    ReadLogs { query: LogQuery, reply: oneshot::Sender<Result<LogPage, Refusal>> },
    /// Read a payload to ship to a node.
    LoadPayload { node: NodeId, payload: PayloadHash },
    /// Read the two results a reduce job's combine task takes and pack them into its
    /// assignment for `node`.
    ReadCombine { node: NodeId, job: JobId, chunk: ChunkIndex, attempt: AttemptId, inputs: (Extent, Extent) },
    /// Remove the payload files no unfinished job uses (`in_use` names those that are) and no
    /// one stored or asked for within [`UNUSED_PAYLOAD_GRACE`].
    CollectPayloads { in_use: HashSet<PayloadHash> },
}

/// What the disk tells the core.
pub(super) enum DiskDone {
    /// A job's input file exists; chunks are read back through this reader.
    InputReady { job: JobId, reader: Arc<Reader> },
    /// The input file of the next job id, created ahead (or why it could not be).
    InputPrepared(std::io::Result<PreparedInput>),
    /// A job's input file could not be created; the submitter was refused.
    InputFailed { job: JobId, error: String },
    /// An attachment's results file is open, or could not be.
    Attach { pending: PendingAttach, results: std::io::Result<Reader> },
    /// Results were appended, or could not be; in the order asked.
    Stored(Vec<(StoreTicket, std::io::Result<Extent>)>),
    /// A payload to ship, or why it could not be read.
    Payload { node: NodeId, payload: PayloadHash, bytes: std::io::Result<Bytes> },
    /// A combine's assignment to send to `node`, or why its inputs could not be read.
    Combine { node: NodeId, attempt: AttemptId, assignment: std::io::Result<Assignment> },
}

/// A new input file with its appender and the reader chunks are read back through: created
/// for a submission, or ahead of the next one.
pub(crate) struct PreparedInput {
    pub(super) job: JobId,
    pub(super) appender: Appender,
    pub(super) reader: Arc<Reader>,
}

/// A job's open spool files.
#[derive(Default)]
struct JobFiles {
    results: Option<Appender>,
    /// The input file, synced with every commit that records its chunks (so a resumed upload
    /// may go on after the last chunk journaled) and the one that records the input complete.
    input_sync: Option<std::fs::File>,
    /// The `logs` file, once an attempt log arrived.
    logs: Option<LogFile>,
    /// Whether `logs` grew since the last commit, which syncs it.
    logs_dirty: bool,
}

/// Creates `job`'s input file with its appender and reader, keeping a handle to sync it.
fn create_input(spool: &Spool, files: &mut HashMap<JobId, JobFiles>, job: JobId) -> std::io::Result<PreparedInput> {
    let appender = spool.appender(job, SpoolFile::Input)?;
    let reader = Arc::new(spool.reader(job, SpoolFile::Input)?);
    files.entry(job).or_default().input_sync = appender.sync_handle().ok();
    Ok(PreparedInput { job, appender, reader })
}

/// Runs on its own thread until the core drops its request channel.
pub(super) fn disk_thread(
    spool: Spool,
    payloads: PayloadStore,
    mut requests: mpsc::UnboundedReceiver<DiskRequest>,
    done: mpsc::UnboundedSender<DiskDone>,
    commits: mpsc::Sender<CommitRequest>,
) {
    let mut files: HashMap<JobId, JobFiles> = HashMap::new();
    while let Some(request) = requests.blocking_recv() {
        // The core may be gone while it shuts down; what is left is then moot.
        let _ = match request {
            DiskRequest::CreateInput { job, payload, stopped, reply } => {
                let created = if payloads.contains(&payload) {
                    create_input(&spool, &mut files, job).map_err(Refusal::InputStorage)
                } else {
                    Err(Refusal::PayloadNotUploaded)
                };
                // The core hears first: only once it has the reader may the submitter send input.
                match created {
                    Ok(PreparedInput { job, appender, reader }) => {
                        let told = done.send(DiskDone::InputReady { job, reader });
                        let _ = reply.send(Ok(Upload { job, appender, stopped }));
                        told
                    }
                    Err(refusal) => {
                        let told = done.send(DiskDone::InputFailed { job, error: refusal.to_string() });
                        let _ = reply.send(Err(refusal));
                        told
                    }
                }
            }
            DiskRequest::PrepareInput { job } => done.send(DiskDone::InputPrepared(create_input(&spool, &mut files, job))),
            DiskRequest::OpenInput { job, resumed, stopped, reply } => {
                match spool.appender(job, SpoolFile::Input) {
                    Ok(appender) => {
                        files.entry(job).or_default().input_sync = appender.sync_handle().ok();
                        let _ = reply.send(Ok((resumed, Some(Upload { job, appender, stopped }))));
                        Ok(())
                    }
                    Err(e) => {
                        let refusal = Refusal::InputStorage(e);
                        let told = done.send(DiskDone::InputFailed { job, error: refusal.to_string() });
                        let _ = reply.send(Err(refusal));
                        told
                    }
                }
            }
            DiskRequest::OpenResults(pending) => {
                let job = pending.job;
                let results = spool.reader(job, SpoolFile::Results).or_else(|_| {
                    // No result yet: create the file so the reader has something to open.
                    let entry = files.entry(job).or_default();
                    if entry.results.is_none() {
                        entry.results = Some(spool.appender(job, SpoolFile::Results)?);
                    }
                    spool.reader(job, SpoolFile::Results)
                });
                done.send(DiskDone::Attach { pending, results })
            }
            DiskRequest::Store(outputs) => {
                let mut stored = Vec::with_capacity(outputs.len());
                for run in outputs.chunk_by(|(a, _), (b, _)| a.job == b.job) {
                    let job = run[0].0.job;
                    let pieces: Vec<Bytes> = run.iter().map(|(_, output)| output.clone()).collect();
                    let entry = files.entry(job).or_default();
                    let appended = match &mut entry.results {
                        Some(appender) => appender.append_all(&pieces),
                        slot => spool.appender(job, SpoolFile::Results).and_then(|a| slot.insert(a).append_all(&pieces)),
                    };
                    match appended {
                        Ok(extents) => stored.extend(run.iter().map(|(ticket, _)| *ticket).zip(extents.into_iter().map(Ok))),
                        Err(e) => stored.extend(run.iter().map(|(ticket, _)| (*ticket, Err(std::io::Error::new(e.kind(), e.to_string()))))),
                    }
                }
                done.send(DiskDone::Stored(stored))
            }
            DiskRequest::ReadCombine { node, job, chunk, attempt, inputs: (left, right) } => {
                let assignment = spool.reader(job, SpoolFile::Results).and_then(|results| {
                    let input = wire::abi::combine_input(&results.read(left)?, &results.read(right)?);
                    Ok(Assignment { job, chunk, attempt, input: input.into(), combine: true })
                });
                done.send(DiskDone::Combine { node, attempt, assignment })
            }
            DiskRequest::InputEnded { job, sync } => {
                files.entry(job).or_default().input_sync = Some(sync);
                Ok(())
            }
            DiskRequest::Commit { batch, sync_inputs, sync_results } => {
                let mut sync: Vec<std::fs::File> = Vec::new();
                for job in sync_inputs {
                    if let Some(file) = files.get(&job).and_then(|f| f.input_sync.as_ref()) {
                        match file.try_clone() {
                            Ok(file) => sync.push(file),
                            Err(e) => warn!(%job, error = %e, "cannot sync an input file"),
                        }
                    }
                }
                for (job, entry) in files.iter_mut().filter(|(_, f)| f.logs_dirty) {
                    entry.logs_dirty = false;
                    if let Some(logs) = &entry.logs {
                        match logs.sync_handle() {
                            Ok(file) => sync.push(file),
                            Err(e) => warn!(%job, error = %e, "cannot sync a logs file"),
                        }
                    }
                }
                for job in sync_results {
                    if let Some(appender) = files.get(&job).and_then(|f| f.results.as_ref()) {
                        match appender.sync_handle() {
                            Ok(file) => sync.push(file),
                            Err(e) => warn!(%job, error = %e, "cannot sync a results file"),
                        }
                    }
                }
                // One commit is in flight at a time, so the writer's one-slot channel has room.
                if commits.blocking_send(CommitRequest { batch, sync }).is_err() {
                    return;
                }
                Ok(())
            }
            DiskRequest::Remove(job) => {
                if let Some(entry) = files.get_mut(&job) {
                    entry.results = None;
                    entry.input_sync = None;
                }
                spool.remove_data(job);
                Ok(())
            }
            DiskRequest::Forget(job) => {
                files.remove(&job);
                spool.remove(job);
                Ok(())
            }
            DiskRequest::StoreLog(record) => {
                let job = record.job;
                let entry = files.entry(job).or_default();
                let stored = match &mut entry.logs {
                    Some(logs) => logs.append(&record),
                    slot => spool
                        .logs_path(job, true)
                        .and_then(|path| LogFile::open(&path))
                        .and_then(|logs| slot.insert(logs).append(&record)),
                };
                match stored {
                    Ok(()) => entry.logs_dirty = true,
                    // A log is diagnostics: losing one costs no result, so the job goes on.
                    Err(e) => warn!(%job, chunk = record.chunk, error = %e, "cannot store an attempt's log"),
                }
                Ok(())
            }
            DiskRequest::ReadLogs { query, reply } => {
                let page = spool
                    .logs_path(query.job, false)
                    .and_then(|path| logstore::read(&path, query.chunk, query.from, query.finished))
                    .map_err(Refusal::LogsUnreadable);
                let _ = reply.send(page);
                Ok(())
            }
            DiskRequest::LoadPayload { node, payload } => {
                done.send(DiskDone::Payload { node, payload, bytes: payloads.load(&payload) })
            }
            DiskRequest::CollectPayloads { in_use } => {
                let unused_since = std::time::SystemTime::now() - UNUSED_PAYLOAD_GRACE;
                let removed = payloads.collect(&in_use, unused_since);
                if removed > 0 {
                    info!(removed, "removed payload files no job has used for an hour");
                }
                Ok(())
            }
        };
    }
}
