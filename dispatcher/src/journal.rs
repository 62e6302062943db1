//! The dispatcher's journal: a redb database in the state directory recording every job, where
//! each chunk's input is spooled and which chunks have a stored result. It is what a restarted
//! dispatcher resumes from.
//!
//! The core collects changes in a [`Batch`] during one turn and commits it in one durable
//! transaction at the end of the turn (group commit), after syncing the spool files the batch
//! points into, so an extent in the journal always names bytes that are on disk.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;
use ledger::record::{Batch, Extent, JobRecord};
use wire::proto::{ChunkIndex, JobId};

mod row;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const INPUTS: TableDefinition<(u64, u64), (u64, u64)> = TableDefinition::new("inputs");
const RESULTS: TableDefinition<(u64, u64), (u64, u64)> = TableDefinition::new("results");
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
}

/// The open journal.
pub(crate) struct Journal {
    db: Database,
    path: String,
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
        let db = Database::create(path).map_err(|e| database_error(&display, e))?;
        let journal = Self { db, path: display };
        let recovered = journal.read_all()?;
        Ok((journal, recovered))
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
                let mut jobs = txn.open_table(JOBS).map_err(|e| err(e.into()))?;
                let mut rows = Vec::new();
                for entry in jobs.iter().map_err(|e| err(e.into()))? {
                    let (key, value) = entry.map_err(|e| err(e.into()))?;
                    let record = row::decode(version, value.value()).map_err(|reason| JournalError::Corrupt {
                        path: self.path.clone(),
                        job: key.value(),
                        reason,
                    })?;
                    rows.push((key.value(), row::encode(&record)));
                }
                for (key, bytes) in rows {
                    jobs.insert(key, bytes.as_slice()).map_err(|e| err(e.into()))?;
                }
            }
            meta.insert(ROW_VERSION, row::CURRENT_VERSION).map_err(|e| err(e.into()))?;
            incarnation
        };
        txn.open_table(JOBS).map_err(|e| err(e.into()))?;
        txn.open_table(INPUTS).map_err(|e| err(e.into()))?;
        txn.open_table(RESULTS).map_err(|e| err(e.into()))?;
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
        Ok(Recovered { next_job, incarnation, jobs })
    }

    /// Reads the spooled inputs of a job, in chunk order.
    ///
    /// # Errors
    /// [`JournalError::Database`] on a read failure.
    pub(crate) fn inputs(&self, job: JobId) -> Result<Vec<Extent>, JournalError> {
        Ok(self.extents(INPUTS, job)?.into_iter().map(|(_, e)| e).collect())
    }

    /// Reads the stored results of a job.
    ///
    /// # Errors
    /// [`JournalError::Database`] on a read failure.
    pub(crate) fn results(&self, job: JobId) -> Result<Vec<(ChunkIndex, Extent)>, JournalError> {
        self.extents(RESULTS, job)
    }

    fn extents(
        &self,
        table: TableDefinition<(u64, u64), (u64, u64)>,
        job: JobId,
    ) -> Result<Vec<(ChunkIndex, Extent)>, JournalError> {
        let err = |e: redb::Error| database_error(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = txn.open_table(table).map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        for entry in table.range((job.0, 0)..=(job.0, u64::MAX)).map_err(|e| err(e.into()))? {
            let (key, value) = entry.map_err(|e| err(e.into()))?;
            let (offset, len) = value.value();
            out.push((key.value().1, Extent { offset, len }));
        }
        Ok(out)
    }

    /// Commits a batch durably and empties it.
    ///
    /// # Errors
    /// [`JournalError::Database`]; the batch is left as it was.
    pub(crate) fn commit(&self, batch: &mut Batch) -> Result<(), JournalError> {
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
            let mut inputs = txn.open_table(INPUTS).map_err(|e| err(e.into()))?;
            for (job, chunk, extent) in &batch.inputs {
                inputs.insert((job.0, *chunk), (extent.offset, extent.len)).map_err(|e| err(e.into()))?;
            }
            let mut results = txn.open_table(RESULTS).map_err(|e| err(e.into()))?;
            for (job, chunk, extent) in &batch.results {
                results.insert((job.0, *chunk), (extent.offset, extent.len)).map_err(|e| err(e.into()))?;
            }
            for job in &batch.deleted {
                jobs.remove(job.0).map_err(|e| err(e.into()))?;
                inputs.retain_in((job.0, 0)..=(job.0, u64::MAX), |_, _| false).map_err(|e| err(e.into()))?;
                results.retain_in((job.0, 0)..=(job.0, u64::MAX), |_, _| false).map_err(|e| err(e.into()))?;
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        *batch = Batch::default();
        Ok(())
    }
}

fn database_error(path: &str, e: impl Into<redb::Error>) -> JournalError {
    JournalError::Database { path: path.to_owned(), source: Box::new(e.into()) }
}

#[cfg(test)]
mod tests {
    use wire::proto::{FailureKind, JobFailure, JobState, JobSubmission, PayloadHash, PayloadKind, ResultMode};

    use super::*;

    fn record(chunks: u64) -> JobRecord {
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
                placement_timeout_ms: 1000,
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
            let (journal, recovered) = Journal::open(&path).expect("open");
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
        let newer = row::decode(3, &bytes).expect_err("an unknown version is refused");
        assert!(newer.contains("row version 3"), "{newer}");
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
}
