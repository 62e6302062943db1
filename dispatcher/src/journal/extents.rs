//! Where chunks' inputs and results are spooled, as the journal keeps them: one row per job and
//! commit (a run of extents), keyed `(job, run)`, rather than one row per chunk. A commit under
//! load carries hundreds of tiny chunks, and a B-tree insert per chunk was the journal writer's
//! main cost (row version 5; version 4 journals are converted when opened).
//!
//! A run is a sequence of `(chunk, offset, len)` entries, each three little-endian `u64`s. Runs
//! of a job are read in key order and a later entry for a chunk replaces an earlier one, as a
//! second insert of the chunk's row did before.

use std::collections::BTreeMap;

use ledger::record::Extent;
use redb::{ReadTransaction, ReadableTable, StorageError, Table, TableDefinition, WriteTransaction};
use wire::proto::{ChunkIndex, JobId};

use super::maintenance::optional;

/// Runs of chunk input extents.
pub(super) const INPUT_RUNS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("input_runs");
/// Runs of accepted result extents.
pub(super) const RESULT_RUNS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("result_runs");
/// Row version 4's tables, one row per chunk; read only to convert them.
pub(super) const LEGACY_INPUTS: TableDefinition<(u64, u64), (u64, u64)> = TableDefinition::new("inputs");
pub(super) const LEGACY_RESULTS: TableDefinition<(u64, u64), (u64, u64)> = TableDefinition::new("results");

/// Bytes of one entry.
const ENTRY: usize = 24;

/// Encodes `(chunk, extent)` entries as a run.
fn encode(entries: &[(ChunkIndex, Extent)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY);
    for (chunk, extent) in entries {
        bytes.extend_from_slice(&chunk.to_le_bytes());
        bytes.extend_from_slice(&extent.offset.to_le_bytes());
        bytes.extend_from_slice(&extent.len.to_le_bytes());
    }
    bytes
}

/// Decodes a run.
///
/// # Errors
/// When its length is not a whole number of entries.
pub(super) fn decode(bytes: &[u8]) -> Result<impl Iterator<Item = (ChunkIndex, Extent)> + '_, String> {
    if !bytes.len().is_multiple_of(ENTRY) {
        return Err(format!("an extents row of {} bytes is not a whole number of {ENTRY}-byte entries", bytes.len()));
    }
    let word = |entry: &[u8], at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
    Ok(bytes.chunks_exact(ENTRY).map(move |e| (word(e, 0), Extent { offset: word(e, 8), len: word(e, 16) })))
}

/// Appends one run per job of `entries` (in their order) to `table`.
pub(super) fn put_runs(
    table: &mut Table<(u64, u64), &[u8]>,
    entries: &[(JobId, ChunkIndex, Extent)],
) -> Result<(), StorageError> {
    let mut by_job: BTreeMap<u64, Vec<(ChunkIndex, Extent)>> = BTreeMap::new();
    for (job, chunk, extent) in entries {
        by_job.entry(job.0).or_default().push((*chunk, *extent));
    }
    for (job, run) in by_job {
        let next = table.range((job, 0)..=(job, u64::MAX))?.next_back().transpose()?.map_or(0, |(key, _)| key.value().1 + 1);
        table.insert((job, next), encode(&run).as_slice())?;
    }
    Ok(())
}

/// Removes every run of `job`.
pub(super) fn remove_job(table: &mut Table<(u64, u64), &[u8]>, job: u64) -> Result<(), StorageError> {
    table.retain_in((job, 0)..=(job, u64::MAX), |_, _| false)
}

/// A job's extents in chunk order, the last recorded for each chunk.
///
/// # Errors
/// A storage error, or (as `Err(Ok(reason))`) a run that does not decode.
pub(super) fn read_job(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    job: u64,
) -> Result<Result<Vec<(ChunkIndex, Extent)>, String>, StorageError> {
    let mut extents = BTreeMap::new();
    for entry in table.range((job, 0)..=(job, u64::MAX))? {
        let (_, run) = entry?;
        match decode(run.value()) {
            Ok(run) => extents.extend(run),
            Err(reason) => return Ok(Err(reason)),
        };
    }
    Ok(Ok(extents.into_iter().collect()))
}

/// Converts row version 4's per-chunk tables into runs (one per job) and deletes them; a
/// journal without them is left as it is.
pub(super) fn convert_legacy(txn: &WriteTransaction) -> Result<(), redb::Error> {
    for (legacy, runs) in [(LEGACY_INPUTS, INPUT_RUNS), (LEGACY_RESULTS, RESULT_RUNS)] {
        let Some(table) = optional(txn.open_table(legacy))? else { continue };
        let mut entries = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let ((job, chunk), (offset, len)) = (key.value(), value.value());
            entries.push((JobId(job), chunk, Extent { offset, len }));
        }
        drop(table);
        put_runs(&mut txn.open_table(runs)?, &entries)?;
        txn.delete_table(legacy)?;
    }
    Ok(())
}

/// One extent as `journal check` reads it: the job, and its chunk and extent or why its run
/// does not decode.
pub(super) type CheckedEntry = (u64, Result<(ChunkIndex, Extent), String>);

/// Every input (or result) extent the journal holds, by job, from version 4's per-chunk table
/// and from runs, whichever exist (`journal check` reads journals of either); a run that does
/// not decode stands as one `Err` entry of its job.
pub(super) fn all_entries(
    txn: &ReadTransaction,
    inputs: bool,
) -> Result<Vec<CheckedEntry>, redb::Error> {
    let (legacy, runs) = if inputs { (LEGACY_INPUTS, INPUT_RUNS) } else { (LEGACY_RESULTS, RESULT_RUNS) };
    let mut entries = Vec::new();
    if let Some(table) = optional(txn.open_table(legacy))? {
        for entry in table.iter()? {
            let (key, value) = entry?;
            let ((job, chunk), (offset, len)) = (key.value(), value.value());
            entries.push((job, Ok((chunk, Extent { offset, len }))));
        }
    }
    if let Some(table) = optional(txn.open_table(runs))? {
        for entry in table.iter()? {
            let (key, run) = entry?;
            let job = key.value().0;
            match decode(run.value()) {
                Ok(run) => entries.extend(run.map(|entry| (job, Ok(entry)))),
                Err(reason) => entries.push((job, Err(reason))),
            };
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;

    #[test]
    fn runs_read_back_in_chunk_order_with_the_last_entry_winning() {
        let dir = tempfile::tempdir().expect("dir");
        let db = redb::Database::create(dir.path().join("j.redb")).expect("db");
        let at = |offset| Extent { offset, len: 3 };
        let txn = db.begin_write().expect("txn");
        {
            let mut table = txn.open_table(RESULT_RUNS).expect("table");
            put_runs(&mut table, &[(JobId(1), 2, at(0)), (JobId(2), 0, at(9)), (JobId(1), 0, at(3))]).expect("first run");
            put_runs(&mut table, &[(JobId(1), 1, at(6)), (JobId(1), 2, at(12))]).expect("second run");
            assert_eq!(table.len().expect("len"), 3, "one row per job and commit");
            let read = read_job(&table, 1).expect("storage").expect("decodes");
            assert_eq!(read, vec![(0, at(3)), (1, at(6)), (2, at(12))]);
            remove_job(&mut table, 1).expect("remove");
            assert_eq!(read_job(&table, 1).expect("storage").expect("decodes"), vec![]);
            assert_eq!(read_job(&table, 2).expect("storage").expect("decodes"), vec![(0, at(9))]);
            table.insert((3, 0), [0u8; 25].as_slice()).expect("torn row");
            let torn = read_job(&table, 3).expect("storage").expect_err("refused");
            assert!(torn.contains("25 bytes"), "{torn}");
        }
        txn.commit().expect("commit");
    }
}
