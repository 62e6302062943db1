//! The dispatcher's journal: a redb database in the state directory recording every job, where
//! each chunk's input is spooled and which chunks have a stored result. It is what a restarted
//! dispatcher resumes from.
//!
//! The core collects changes in a [`Batch`] during one turn and commits it in one durable
//! transaction at the end of the turn (group commit), after syncing the spool files the batch
//! points into, so an extent in the journal always names bytes that are on disk.
//!
//! Keeping it healthy: redb rolls a torn last transaction back to the last complete commit when
//! the file is opened. Forgotten jobs' rows are deleted and redb reuses their pages, so the file
//! stays as large as the most the journal ever held at once; it is compacted when it is opened
//! and after every [`COMPACT_AFTER_DELETED`] forgotten jobs, which shrinks it back to what it
//! holds. A file redb cannot open (damaged outside redb) stops the dispatcher with a message
//! naming `dispy-dispatcher journal check` and `journal repair`.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;
use ledger::record::{Batch, Extent, JobRecord, NodeHold};
use wire::proto::{ChunkIndex, JobId};

mod extents;
pub mod maintenance;
mod migrate;
mod row;

/// Jobs forgotten between two compactions while the dispatcher runs.
pub(crate) const COMPACT_AFTER_DELETED: usize = 1024;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
/// Operators' holds on node names (drain, quarantine), by name; rows are `row::encode_hold`.
const HOLDS: TableDefinition<&str, &[u8]> = TableDefinition::new("node_holds");
const NEXT_JOB: &str = "next_job";
const INCARNATION: &str = "incarnation";
/// The version of the rows in `JOBS`; a journal from before the key existed holds version 1.
const ROW_VERSION: &str = "row_version";

/// A journal failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The database could not be opened, read or written (including a full disk).
    #[error("journal {path}: {source}")]
    Database {
        /// The journal file.
        path: String,
        /// The underlying error.
        source: Box<redb::Error>,
    },
    /// A stored record could not be decoded: the journal is corrupt or from another version.
    #[error("journal {path}: job {job} has an unreadable record: {reason}")]
    Corrupt {
        /// The journal file.
        path: String,
        /// The job.
        job: u64,
        /// What went wrong.
        reason: String,
    },
    /// A stored node hold could not be decoded.
    #[error("journal {path}: node {node:?} has an unreadable hold: {reason}")]
    CorruptHold {
        /// The journal file.
        path: String,
        /// The node name.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// Another process has the journal open: a dispatcher already runs on this state directory.
    #[error("journal {path} is in use by another process (does a dispatcher already run on this state directory?)")]
    InUse {
        /// The journal file.
        path: String,
    },
    /// redb panicked reading the file: it was damaged outside redb.
    #[error("journal {path} is damaged: {reason}")]
    Damaged {
        /// The journal file.
        path: String,
        /// What redb said.
        reason: String,
    },
    /// The journal was written by a newer dispatcher whose rows this one cannot read.
    #[error("journal {path} holds job rows of version {version}; this dispatcher reads version 1 only")]
    Version {
        /// The journal file.
        path: String,
        /// The version found.
        version: u64,
    },
}

/// What the journal held when it was opened.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The next job id to hand out.
    pub next_job: u64,
    /// How many times this journal has been opened, this time included; it keeps attempt ids
    /// of different dispatcher lifetimes apart.
    pub incarnation: u64,
    /// Every remembered job.
    pub jobs: Vec<(JobId, JobRecord)>,
    /// Node names held (drained or quarantined) until an operator releases them.
    pub holds: Vec<(String, NodeHold)>,
}

/// The open journal.
pub(crate) struct Journal {
    db: Database,
    path: String,
    /// Jobs forgotten since the last compaction.
    deleted: usize,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens or creates the journal at `path` and reads every job record.
    ///
    /// # Errors
    /// [`JournalError`] when the file cannot be opened or is corrupt.
    pub(crate) fn open(path: &Path) -> Result<(Self, Recovered), JournalError> {
        let display = path.display().to_string();
        let (db, _) = open_database(path, true)?;
        let mut journal = Self { db, path: display, deleted: 0 };
        let recovered = journal.read_all()?;
        journal.compact();
        Ok((journal, recovered))
    }

    /// Compacts the file, so it shrinks back to what the journal holds. A failure is logged and
    /// harmless: the file only stays larger.
    pub(crate) fn compact(&mut self) {
        self.deleted = 0;
        let before = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let compacted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut rounds = 0;
            while self.db.compact()? && rounds < 8 {
                rounds += 1;
            }
            Ok::<_, redb::CompactionError>(())
        }));
        let after = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        match compacted {
            Ok(Ok(())) => tracing::debug!(journal = %self.path, before, after, "journal compacted"),
            Ok(Err(e)) => tracing::warn!(journal = %self.path, error = %e, "journal compaction failed"),
            Err(_) => tracing::warn!(journal = %self.path, "journal compaction panicked"),
        }
    }

    fn read_all(&self) -> Result<Recovered, JournalError> {
        let err = |e: redb::Error| database_error(&self.path, e);
        // Creating the tables up front lets readers assume they exist.
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        let incarnation = {
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            let incarnation = meta.get(INCARNATION).map_err(|e| err(e.into()))?.map_or(0, |v| v.value()) + 1;
            meta.insert(INCARNATION, incarnation).map_err(|e| err(e.into()))?;
            let version = meta.get(ROW_VERSION).map_err(|e| err(e.into()))?.map_or(1, |v| v.value());
            if version > row::CURRENT_VERSION {
                return Err(JournalError::Version { path: self.path.clone(), version });
            }
            if version < row::CURRENT_VERSION {
                // Every row is rewritten in the current version with the same transaction, so a
                // journal is never half migrated.
                {
                    let mut jobs = txn.open_table(JOBS).map_err(|e| err(e.into()))?;
                    let mut results = txn.open_table(extents::LEGACY_RESULTS).map_err(|e| err(e.into()))?;
                    let mut rows = Vec::new();
                    for entry in jobs.iter().map_err(|e| err(e.into()))? {
                        let (key, value) = entry.map_err(|e| err(e.into()))?;
                        let record = row::decode(version, value.value()).map_err(|reason| JournalError::Corrupt {
                            path: self.path.clone(),
                            job: key.value(),
                            reason,
                        })?;
                        rows.push((key.value(), record));
                    }
                    for (key, record) in rows {
                        migrate::results_to_current(&mut results, version, key, &record).map_err(|e| err(e.into()))?;
                        jobs.insert(key, row::encode(&record).as_slice()).map_err(|e| err(e.into()))?;
                    }
                }
                extents::convert_legacy(&txn).map_err(err)?;
            }
            meta.insert(ROW_VERSION, row::CURRENT_VERSION).map_err(|e| err(e.into()))?;
            incarnation
        };
        txn.open_table(JOBS).map_err(|e| err(e.into()))?;
        txn.open_table(extents::INPUT_RUNS).map_err(|e| err(e.into()))?;
        txn.open_table(extents::RESULT_RUNS).map_err(|e| err(e.into()))?;
        txn.open_table(HOLDS).map_err(|e| err(e.into()))?;
        txn.commit().map_err(|e| err(e.into()))?;

        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let next_job = meta.get(NEXT_JOB).map_err(|e| err(e.into()))?.map_or(1, |v| v.value());
        let jobs_table = txn.open_table(JOBS).map_err(|e| err(e.into()))?;
        let mut jobs = Vec::new();
        for entry in jobs_table.iter().map_err(|e| err(e.into()))? {
            let (key, value) = entry.map_err(|e| err(e.into()))?;
            let record = row::decode(row::CURRENT_VERSION, value.value()).map_err(|reason| JournalError::Corrupt {
                path: self.path.clone(),
                job: key.value(),
                reason,
            })?;
            jobs.push((JobId(key.value()), record));
        }
        let holds_table = txn.open_table(HOLDS).map_err(|e| err(e.into()))?;
        let mut holds = Vec::new();
        for entry in holds_table.iter().map_err(|e| err(e.into()))? {
            let (key, value) = entry.map_err(|e| err(e.into()))?;
            let hold = row::decode_hold(value.value()).map_err(|reason| JournalError::CorruptHold {
                path: self.path.clone(),
                node: key.value().to_owned(),
                reason,
            })?;
            holds.push((key.value().to_owned(), hold));
        }
        Ok(Recovered { next_job, incarnation, jobs, holds })
    }

    /// Reads the spooled inputs of a job, in chunk order.
    ///
    /// # Errors
    /// [`JournalError::Database`] on a read failure.
    pub(crate) fn inputs(&self, job: JobId) -> Result<Vec<Extent>, JournalError> {
        Ok(self.extents(extents::INPUT_RUNS, job)?.into_iter().map(|(_, e)| e).collect())
    }

    /// Reads the stored results of a job.
    ///
    /// # Errors
    /// [`JournalError::Database`] on a read failure.
    pub(crate) fn results(&self, job: JobId) -> Result<Vec<(ChunkIndex, Extent)>, JournalError> {
        self.extents(extents::RESULT_RUNS, job)
    }

    fn extents(&self, table: TableDefinition<(u64, u64), &[u8]>, job: JobId) -> Result<Vec<(ChunkIndex, Extent)>, JournalError> {
        let err = |e: redb::Error| database_error(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = txn.open_table(table).map_err(|e| err(e.into()))?;
        extents::read_job(&table, job.0)
            .map_err(|e| err(e.into()))?
            .map_err(|reason| JournalError::Corrupt { path: self.path.clone(), job: job.0, reason })
    }

    /// Commits a batch durably and empties it.
    ///
    /// # Errors
    /// [`JournalError::Database`]; the batch is left as it was.
    pub(crate) fn commit(&mut self, batch: &mut Batch) -> Result<(), JournalError> {
        let err = |e: redb::Error| database_error(&self.path, e);
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            if let Some(next) = batch.next_job {
                txn.open_table(META).map_err(|e| err(e.into()))?.insert(NEXT_JOB, next).map_err(|e| err(e.into()))?;
            }
            let mut jobs = txn.open_table(JOBS).map_err(|e| err(e.into()))?;
            for (job, record) in &batch.jobs {
                jobs.insert(job.0, row::encode(record).as_slice()).map_err(|e| err(e.into()))?;
            }
            let mut inputs = txn.open_table(extents::INPUT_RUNS).map_err(|e| err(e.into()))?;
            extents::put_runs(&mut inputs, &batch.inputs).map_err(|e| err(e.into()))?;
            let mut results = txn.open_table(extents::RESULT_RUNS).map_err(|e| err(e.into()))?;
            extents::put_runs(&mut results, &batch.results).map_err(|e| err(e.into()))?;
            for job in &batch.deleted {
                jobs.remove(job.0).map_err(|e| err(e.into()))?;
            }
            for job in batch.released.iter().chain(&batch.deleted) {
                extents::remove_job(&mut inputs, job.0).map_err(|e| err(e.into()))?;
                extents::remove_job(&mut results, job.0).map_err(|e| err(e.into()))?;
            }
            let mut holds = txn.open_table(HOLDS).map_err(|e| err(e.into()))?;
            for (name, hold) in &batch.holds {
                match hold {
                    Some(hold) => holds.insert(name.as_str(), row::encode_hold(hold).as_slice()).map(drop),
                    None => holds.remove(name.as_str()).map(drop),
                }
                .map_err(|e| err(e.into()))?;
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        self.deleted += batch.deleted.len();
        *batch = Batch::default();
        if self.deleted >= COMPACT_AFTER_DELETED {
            self.compact();
        }
        Ok(())
    }
}

/// Opens (or with `create`, creates) the redb file at `path`, logging a recovery from an unclean
/// stop and turning a panic of redb's on a damaged file into [`JournalError::Damaged`]. Returns
/// the database and whether redb had to recover it (an unclean stop, a torn last transaction).
pub(crate) fn open_database(path: &Path, create: bool) -> Result<(Database, bool), JournalError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let display = path.display().to_string();
    let recovered = Arc::new(AtomicBool::new(false));
    let opened = std::panic::catch_unwind(|| {
        let mut builder = Database::builder();
        let (logged, noted) = (display.clone(), recovered.clone());
        builder.set_repair_callback(move |_| {
            if !noted.swap(true, Ordering::Relaxed) {
                tracing::warn!(journal = %logged, "journal was not closed cleanly; rolling back to its last complete commit");
            }
        });
        if create {
            builder.create(path)
        } else {
            builder.open(path)
        }
    });
    match opened {
        Ok(Ok(db)) => Ok((db, recovered.load(Ordering::Relaxed))),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(JournalError::InUse { path: display }),
        Ok(Err(e)) => Err(database_error(&display, e)),
        Err(panic) => Err(JournalError::Damaged { path: display, reason: panic_message(&panic) }),
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "redb panicked".to_owned())
}

fn database_error(path: &str, e: impl Into<redb::Error>) -> JournalError {
    JournalError::Database { path: path.to_owned(), source: Box::new(e.into()) }
}

#[cfg(test)]
mod tests {
    use wire::proto::{FailureKind, JobFailure, JobState, JobSubmission, PayloadHash, PayloadKind, ResultMode};

    use super::*;

    pub(super) fn record(chunks: u64) -> JobRecord {
        JobRecord {
            owner: "alice".into(),
            submission: JobSubmission {
                name: "t".into(),
                payload: PayloadHash::of(b"p"),
                payload_len: 1,
                kind: PayloadKind::Wasm,
                args: Vec::new(),
                max_attempts: 3,
                chunk_timeout_ms: 1000,
                memory_limit: 1 << 20,
                priority: 0,
                placement_timeout_ms: Some(1000),
                output: "out".into(),
                results: ResultMode::Concat,
            shared_input: false,
            },
            state: JobState::Running,
            chunks,
            input_complete: true,
            submitted_unix_ms: 1,
            finished_unix_ms: None,
        }
    }

    #[test]
    fn survives_reopen_and_deletes_whole_jobs() {
        let dir = std::env::temp_dir().join(format!("dispy-journal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("journal.redb");
        {
            let (mut journal, recovered) = Journal::open(&path).expect("open");
            assert_eq!(recovered.next_job, 1);
            let mut batch = Batch::default();
            batch.set_next_job(3);
            for job in [JobId(1), JobId(2)] {
                batch.put_job(job, record(2));
                batch.put_input(job, 0, Extent { offset: 0, len: 5 });
                batch.put_input(job, 1, Extent { offset: 5, len: 7 });
                batch.put_result(job, 1, Extent { offset: 0, len: 8 });
            }
            journal.commit(&mut batch).expect("commit");
            assert!(batch.is_empty());
            batch.delete_job(JobId(1));
            journal.commit(&mut batch).expect("delete");
        }
        let (journal, recovered) = Journal::open(&path).expect("reopen");
        assert_eq!(recovered.next_job, 3);
        assert_eq!(recovered.incarnation, 2);
        assert_eq!(recovered.jobs, vec![(JobId(2), record(2))]);
        assert_eq!(journal.inputs(JobId(2)).expect("inputs"), vec![Extent { offset: 0, len: 5 }, Extent { offset: 5, len: 7 }]);
        assert_eq!(journal.results(JobId(2)).expect("results"), vec![(1, Extent { offset: 0, len: 8 })]);
        assert!(journal.inputs(JobId(1)).expect("inputs").is_empty());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A row as a dispatcher wrote it when the job record was still a wire type: every enum
    /// variant with data and every optional field set.
    const LEGACY_ROW: &str = "969da174dc002007070707070707070707070707070707070707070707070707070707070707070181a64e\
        617469766592a56c696e7578a67838365f3634c402010203cd03e8ce00100000ffcd03e8a36f7574a546696c6573c3\
        81a64661696c656481a54368756e6b92049192a16e9281ac5061796c6f61644572726f72fda16d05c30b0c";

    #[test]
    fn rows_written_before_the_row_had_its_own_type_read_as_version_1() {
        let bytes: Vec<u8> = (0..LEGACY_ROW.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&LEGACY_ROW[i..i + 2], 16).expect("hex"))
            .collect();
        let record = row::decode(1, &bytes).expect("a legacy row decodes");
        assert_eq!(record.submission.kind, PayloadKind::Native { os: "linux".into(), arch: "x86_64".into() });
        assert_eq!(record.submission.results, ResultMode::Files);
        let JobState::Failed(JobFailure::Chunk { chunk: 4, attempts }) = &record.state else {
            panic!("unexpected state {:?}", record.state);
        };
        assert_eq!(attempts[0].failure.kind, FailureKind::PayloadError(-3));
        assert_eq!(record.finished_unix_ms, Some(12));
        assert_eq!(record.owner, "", "a job from before owners belongs to nobody");
        let newer = row::decode(6, &bytes).expect_err("an unknown version is refused");
        assert!(newer.contains("row version 6"), "{newer}");
    }

    #[test]
    fn a_version_1_journal_is_rewritten_as_version_2_with_unowned_jobs() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("journal.redb");
        let legacy: Vec<u8> = (0..LEGACY_ROW.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&LEGACY_ROW[i..i + 2], 16).expect("hex"))
            .collect();
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(JOBS).expect("jobs").insert(7, legacy.as_slice()).expect("insert");
            txn.open_table(META).expect("meta").insert(ROW_VERSION, 1).expect("version");
            txn.commit().expect("commit");
        }
        let (journal, recovered) = Journal::open(&path).expect("migrated");
        let mut expected = row::decode(1, &legacy).expect("legacy");
        assert_eq!(recovered.jobs, vec![(JobId(7), expected.clone())]);
        drop(journal);
        let (_, again) = Journal::open(&path).expect("reopened at version 2");
        assert_eq!(again.jobs, vec![(JobId(7), expected.clone())]);
        expected.owner = "alice".into();
        assert_eq!(row::decode(2, &row::encode(&expected)).expect("round trip"), expected);
        expected.submission.results = ResultMode::Reduce;
        assert_eq!(row::decode(3, &row::encode(&expected)).expect("a reduce job round-trips"), expected);
    }

    #[test]
    fn a_version_3_journal_moves_reduce_outputs_to_their_forest_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("journal.redb");
        let extent = |offset| Extent { offset, len: 8 };
        let reduce = |chunks, state| {
            let mut record = record(chunks);
            record.submission.results = ResultMode::Reduce;
            record.state = state;
            record
        };
        {
            let (mut journal, _) = Journal::open(&path).expect("open");
            let mut batch = Batch::default();
            // Job 1 succeeded: 5 chunks, old tree combines 5..=8, its output at 8 (2n - 2).
            // Job 2 runs: 4 chunks, old combines 4 and 5 stored. Job 3 concatenates 9 chunks.
            batch.put_job(JobId(1), reduce(5, JobState::Succeeded));
            batch.put_job(JobId(2), reduce(4, JobState::Running));
            batch.put_job(JobId(3), record(9));
            journal.commit(&mut batch).expect("commit");
            // Version 3 kept one row per chunk.
            let txn = journal.db.begin_write().expect("txn");
            {
                let mut results = txn.open_table(extents::LEGACY_RESULTS).expect("per-chunk table");
                for (job, chunks) in [(1, 9), (3, 9), (2, 6)] {
                    for chunk in 0..chunks {
                        results.insert((job, chunk), (chunk, 8)).expect("row");
                    }
                }
            }
            txn.open_table(META).expect("meta").insert(ROW_VERSION, 3).expect("version");
            txn.commit().expect("commit");
        }
        let (journal, recovered) = Journal::open(&path).expect("migrated");
        assert_eq!(recovered.jobs.len(), 3);
        let output = ledger::jobs::reduce_output_task(5).expect("an output");
        let mut expected: Vec<_> = (0..5).map(|c| (c, extent(c))).collect();
        expected.push((output, extent(8)));
        assert_eq!(journal.results(JobId(1)).expect("results"), expected, "the output moved, the old partials went");
        let chunks: Vec<_> = (0..4).map(|c| (c, extent(c))).collect();
        assert_eq!(journal.results(JobId(2)).expect("results"), chunks, "a running job combines again");
        assert_eq!(journal.results(JobId(3)).expect("results").len(), 9, "other jobs keep every result");
    }

    #[test]
    fn a_version_4_journal_keeps_its_extents_as_runs() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("journal.redb");
        let extent = |chunk: u64| Extent { offset: chunk * 10, len: 10 };
        {
            let (mut journal, _) = Journal::open(&path).expect("open");
            let mut batch = Batch::default();
            batch.put_job(JobId(1), record(3));
            journal.commit(&mut batch).expect("commit");
            let txn = journal.db.begin_write().expect("txn");
            txn.delete_table(extents::INPUT_RUNS).expect("no runs in version 4");
            txn.delete_table(extents::RESULT_RUNS).expect("no runs in version 4");
            {
                let mut inputs = txn.open_table(extents::LEGACY_INPUTS).expect("inputs");
                let mut results = txn.open_table(extents::LEGACY_RESULTS).expect("results");
                for chunk in 0..3 {
                    inputs.insert((1, chunk), (chunk * 10, 10)).expect("input row");
                }
                results.insert((1, 1), (10, 10)).expect("result row");
            }
            txn.open_table(META).expect("meta").insert(ROW_VERSION, 4).expect("version");
            txn.commit().expect("commit");
        }
        let (mut journal, recovered) = Journal::open(&path).expect("converted");
        assert_eq!(recovered.jobs.len(), 1);
        assert_eq!(journal.inputs(JobId(1)).expect("inputs"), (0..3).map(extent).collect::<Vec<_>>());
        assert_eq!(journal.results(JobId(1)).expect("results"), vec![(1, extent(1))]);
        let mut batch = Batch::default();
        batch.put_result(JobId(1), 0, extent(0));
        batch.put_result(JobId(1), 2, extent(2));
        journal.commit(&mut batch).expect("a later commit adds a run");
        assert_eq!(journal.results(JobId(1)).expect("results"), (0..3).map(|c| (c, extent(c))).collect::<Vec<_>>());
        let txn = journal.db.begin_read().expect("txn");
        assert!(txn.open_table(extents::LEGACY_INPUTS).is_err(), "the per-chunk tables are gone");
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("dispy-journal-garbage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("journal.redb");
        std::fs::write(&path, vec![0x5a; 8192]).expect("garbage");
        let err = Journal::open(&path).expect_err("corrupt journal refused");
        assert!(err.to_string().contains("journal.redb"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A journal in `dir` with jobs 1 and 2 (two chunks each, input complete) whose spool
    /// files hold `spooled` input bytes each, and `holds`.
    fn journal_with_jobs(dir: &Path, spooled: usize, holds: &[(&str, NodeHold)]) -> std::path::PathBuf {
        let path = dir.join("journal.redb");
        let (mut journal, _) = Journal::open(&path).expect("open");
        let mut batch = Batch::default();
        batch.set_next_job(3);
        for job in [JobId(1), JobId(2)] {
            batch.put_job(job, record(2));
            batch.put_input(job, 0, Extent { offset: 0, len: 5 });
            batch.put_input(job, 1, Extent { offset: 5, len: 5 });
            let spool = dir.join("jobs").join(job.0.to_string());
            std::fs::create_dir_all(&spool).expect("spool");
            std::fs::write(spool.join("input"), vec![1; spooled]).expect("input");
            std::fs::write(spool.join("results"), b"").expect("results");
        }
        for (name, hold) in holds {
            batch.put_hold(name, Some(hold.clone()));
        }
        journal.commit(&mut batch).expect("commit");
        path
    }

    #[test]
    fn holds_survive_a_reopen_and_a_release_deletes_them() {
        let dir = tempfile::tempdir().expect("dir");
        let drained = NodeHold { drained: true, quarantine: None };
        let quarantined = NodeHold { drained: false, quarantine: Some("3 attempts failed here".into()) };
        let path = journal_with_jobs(dir.path(), 10, &[("node-a", drained.clone()), ("node-b", quarantined.clone())]);
        let (mut journal, recovered) = Journal::open(&path).expect("reopen");
        let mut holds = recovered.holds;
        holds.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(holds, vec![("node-a".to_owned(), drained), ("node-b".to_owned(), quarantined)]);
        let mut batch = Batch::default();
        batch.put_hold("node-a", None);
        journal.commit(&mut batch).expect("release");
        drop(journal);
        let (_, recovered) = Journal::open(&path).expect("reopen");
        assert_eq!(recovered.holds.len(), 1);
    }

    #[test]
    fn check_refuses_a_journal_in_use_and_passes_a_healthy_one() {
        let dir = tempfile::tempdir().expect("dir");
        let path = journal_with_jobs(dir.path(), 10, &[("node-a", NodeHold { drained: true, quarantine: None })]);
        let open = Journal::open(&path).expect("open");
        let err = maintenance::check(dir.path()).expect_err("a dispatcher has it open");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(open);
        let report = maintenance::check(dir.path()).expect("checked");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.jobs.get("running"), report.holds), (Some(&2), 1));
    }

    #[test]
    fn check_finds_extents_past_the_spool_and_repair_fails_those_jobs() {
        let dir = tempfile::tempdir().expect("dir");
        let path = journal_with_jobs(dir.path(), 10, &[]);
        // Job 2's input file lost its last bytes (a disk that lied about a sync, say).
        std::fs::write(dir.path().join("jobs/2/input"), vec![1; 7]).expect("shorten");
        let before = std::fs::read(&path).expect("read");
        let report = maintenance::check(dir.path()).expect("checked");
        assert_eq!(report.problems, vec!["job 2: chunk 1's input ends at byte 10 of its input spool file, which has 7".to_owned()]);
        assert_eq!(std::fs::read(&path).expect("read"), before, "check changed the journal");
        let repaired = maintenance::repair(dir.path(), 5_000_000).expect("repaired");
        assert!(repaired.changes.iter().any(|c| c.starts_with("recorded job 2 as failed")), "{:?}", repaired.changes);
        assert_eq!(std::fs::read(&repaired.backup).expect("backup"), before, "the backup is the journal as it was");
        assert!(maintenance::check(dir.path()).expect("checked").problems.is_empty());
        let (_, recovered) = Journal::open(&path).expect("opens");
        let states: Vec<_> = recovered.jobs.iter().map(|(job, r)| (job.0, r.state.is_finished())).collect();
        assert_eq!(states, vec![(1, false), (2, true)], "job 1 resumes, job 2 is failed");
    }

    #[test]
    fn a_torn_end_is_found_by_check_and_rolled_back_by_repair() {
        let dir = tempfile::tempdir().expect("dir");
        let path = journal_with_jobs(dir.path(), 10, &[]);
        let len = std::fs::metadata(&path).expect("len").len();
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(len - 100).expect("truncate");
        let err = Journal::open(&path).expect_err("a torn file is refused");
        assert!(err.to_string().contains("journal.redb"), "{err}");
        let report = maintenance::check(dir.path()).expect("checked");
        assert!(report.problems.iter().any(|p| p.contains("its end was lost")), "{:?}", report.problems);
        let repaired = maintenance::repair(dir.path(), 5_000_000).expect("repaired");
        assert!(repaired.changes[0].contains("extended the file"), "{:?}", repaired.changes);
        let (_, recovered) = Journal::open(&path).expect("opens after the repair");
        assert!(recovered.next_job >= 1, "{recovered:?}");
        assert!(maintenance::check(dir.path()).expect("checked").problems.is_empty());
    }

    #[test]
    fn a_journal_redb_cannot_open_is_set_aside_and_replaced() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("journal.redb");
        std::fs::write(&path, vec![0x5a; 8192]).expect("garbage");
        std::fs::create_dir_all(dir.path().join("jobs/41")).expect("a spooled job");
        let report = maintenance::check(dir.path()).expect("checked");
        assert!(report.problems.iter().any(|p| p.contains("redb cannot open it")), "{:?}", report.problems);
        let repaired = maintenance::repair(dir.path(), 5_000_000).expect("repaired");
        assert_eq!(std::fs::read(&repaired.backup).expect("backup"), vec![0x5a; 8192]);
        assert!(dir.path().join("jobs.bad-5000/41").is_dir(), "spooled jobs are moved aside: {:?}", repaired.changes);
        let (_, recovered) = Journal::open(&path).expect("a fresh journal");
        assert_eq!(recovered.next_job, 42, "job ids continue above the spooled ones");
        assert!(recovered.incarnation > 1 << 23, "attempt ids of the lost lifetime are not reused");
    }

    #[test]
    fn the_file_stays_bounded_over_many_jobs_and_shrinks_after_a_peak() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("journal.redb");
        let (mut journal, _) = Journal::open(&path).expect("open");
        let size = || std::fs::metadata(&path).expect("size").len();
        let mut job = 0;
        let mut cycle = |journal: &mut Journal, jobs: u64, chunks: u64| {
            let mut batch = Batch::default();
            let first = job;
            for _ in 0..jobs {
                job += 1;
                batch.put_job(JobId(job), record(chunks));
                for chunk in 0..chunks {
                    batch.put_input(JobId(job), chunk, Extent { offset: chunk, len: 1 });
                    batch.put_result(JobId(job), chunk, Extent { offset: chunk, len: 1 });
                }
            }
            journal.commit(&mut batch).expect("commit");
            for j in first + 1..=job {
                batch.delete_job(JobId(j));
            }
            journal.commit(&mut batch).expect("forget");
        };
        cycle(&mut journal, 20, 50);
        let steady = size();
        for _ in 0..200 {
            cycle(&mut journal, 20, 50);
        }
        assert!(size() <= steady * 2, "4,000 finished jobs grew the journal from {steady} to {} bytes", size());
        // A peak of live jobs grows the file; forgetting them compacts it back.
        let mut batch = Batch::default();
        for j in 0..COMPACT_AFTER_DELETED as u64 {
            batch.put_job(JobId(1_000_000 + j), record(100));
            for chunk in 0..100 {
                batch.put_input(JobId(1_000_000 + j), chunk, Extent { offset: chunk, len: 1 });
            }
        }
        journal.commit(&mut batch).expect("peak");
        let peak = size();
        for j in 0..COMPACT_AFTER_DELETED as u64 {
            batch.delete_job(JobId(1_000_000 + j));
        }
        journal.commit(&mut batch).expect("forget the peak");
        assert!(size() < peak / 4, "forgetting {COMPACT_AFTER_DELETED} jobs left {} of {peak} bytes", size());
    }
}
