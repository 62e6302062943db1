//! Write-through for chunk inputs: the bytes of chunks just uploaded (and already appended to the
//! spool) stay in memory, up to a byte budget, so a chunk assigned while it is still here goes
//! to its node without being read back from the spool. An entry goes once its chunk is assigned
//! (a second attempt, a retry or a speculative copy, is rare and reads the spool as before) or
//! its job's spool is removed.
//!
//! Chunks smaller than [`SMALLEST_CACHED`] are not kept: reading a few bytes back costs one
//! `pread`, less than keeping them (an allocation and two map operations on the core's thread,
//! per chunk), and their rate, not their bytes, is what limits a job of tiny chunks.
//!
//! A full cache keeps what it holds and lets the newest chunk go to the spool only: chunks are
//! assigned about in upload order, so when the upload runs ahead of the nodes by more than the
//! budget, the oldest entries are the next to be assigned, and evicting them for the newest
//! would make every assignment miss. Nothing here says anything is durable: the ledger still
//! sends `InputStored` only after the commit that syncs the spool file.

use std::collections::HashMap;

use bytes::Bytes;
use ledger::record::Extent;
use wire::proto::JobId;

/// What the cache holds at most: 64 chunks of 1 MiB between their upload and their assignment.
pub(crate) const INPUT_CACHE_BUDGET: usize = 64 << 20;

/// The smallest chunk kept. Small chunks are slices of their connection's receive buffer, so
/// keeping one would also keep that whole buffer; a kept chunk is kept as it came.
pub(crate) const SMALLEST_CACHED: u64 = 64 << 10;

/// What an entry costs beyond its bytes (map entries, the `Bytes` handle), so that a flood of
/// tiny chunks is bounded by count as well.
const ENTRY_OVERHEAD: usize = 128;

/// Recently uploaded chunk inputs, by job and extent.
#[derive(Debug)]
pub(crate) struct InputCache {
    budget: usize,
    /// Chunks smaller than this are neither kept nor looked for.
    smallest: u64,
    held: usize,
    /// Each chunk's bytes, keyed by job and offset in its input file.
    entries: HashMap<(JobId, u64), Bytes>,
}

impl InputCache {
    /// An empty cache holding at most `budget` bytes (counting [`ENTRY_OVERHEAD`] per entry)
    /// of chunks of at least `smallest` bytes.
    pub(crate) fn new(budget: usize, smallest: u64) -> Self {
        Self { budget, smallest, held: 0, entries: HashMap::new() }
    }

    /// Keeps the bytes of `job`'s chunk at `extent`, already appended to its spool file, if
    /// they fit in what is left of the budget. Bytes that do not match the extent's length, and
    /// chunks smaller than the cache's smallest, are not kept.
    pub(crate) fn insert(&mut self, job: JobId, extent: Extent, bytes: Bytes) {
        if extent.len < self.smallest {
            return;
        }
        // An extent is never appended twice, but a stale entry must not survive one that was.
        self.remove((job, extent.offset));
        let cost = bytes.len() + ENTRY_OVERHEAD;
        if extent.len != bytes.len() as u64 || self.held + cost > self.budget {
            return;
        }
        self.entries.insert((job, extent.offset), bytes);
        self.held += cost;
    }

    /// Takes the bytes of `job`'s chunk at `extent`, if they are still here and are exactly
    /// that extent.
    pub(crate) fn take(&mut self, job: JobId, extent: Extent) -> Option<Bytes> {
        if extent.len < self.smallest {
            return None;
        }
        match self.entries.get(&(job, extent.offset)) {
            Some(bytes) if bytes.len() as u64 == extent.len => self.remove((job, extent.offset)),
            _ => None,
        }
    }

    /// Drops everything held for `job` (its spool is removed).
    pub(crate) fn forget_job(&mut self, job: JobId) {
        self.entries.retain(|(j, _), bytes| {
            let keep = *j != job;
            if !keep {
                self.held -= bytes.len() + ENTRY_OVERHEAD;
            }
            keep
        });
    }

    /// Bytes held, with each entry's overhead.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held
    }

    fn remove(&mut self, key: (JobId, u64)) -> Option<Bytes> {
        let bytes = self.entries.remove(&key)?;
        self.held -= bytes.len() + ENTRY_OVERHEAD;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests;
