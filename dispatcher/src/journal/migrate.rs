//! What a row version change needs beyond the rows themselves. Version 4 keys a reduce job's
//! combines' results as its combine forest numbers them (`ledger::jobs::COMBINE_BASE + c`,
//! known while the input still arrives), where version 3 keyed them `n + t` over a fixed tree of
//! its `n` chunks: the output of a succeeded job moves to its new key, and a running job's old
//! partials go (the job combines its chunks' results again; no chunk runs again).

use ledger::jobs::reduce_output_task;
use ledger::record::JobRecord;
use redb::{ReadableTable, StorageError, Table};
use wire::proto::{JobState, ResultMode};

/// Moves the results of job `job`, journaled by a dispatcher writing row `version`, to where
/// the current version keys them.
pub(super) fn results_to_current(
    results: &mut Table<(u64, u64), (u64, u64)>,
    version: u64,
    job: u64,
    record: &JobRecord,
) -> Result<(), StorageError> {
    if version >= 4 || record.submission.results != ResultMode::Reduce {
        return Ok(());
    }
    let chunks = record.chunks;
    let old_output = (chunks > 1 && record.state == JobState::Succeeded).then(|| 2 * chunks - 2);
    let output = match old_output {
        Some(key) => results.get((job, key))?.map(|extent| extent.value()),
        None => None,
    };
    results.retain_in((job, chunks)..=(job, u64::MAX), |_, _| false)?;
    if let (Some(extent), Some(task)) = (output, reduce_output_task(chunks)) {
        results.insert((job, task), extent)?;
    }
    Ok(())
}
