//! Write-through for chunk inputs: the bytes of chunks just uploaded (and already appended to the
//! spool) stay in memory, up to a byte budget, so a chunk assigned while it is still here goes
//! to its node without being read back from the spool. The oldest go first when the budget is
//! full, and an entry goes once its chunk is assigned: a second attempt (a retry, a speculative
//! copy) is rare and reads the spool as before. Nothing here says anything is durable: the
//! ledger still sends `InputStored` only after the commit that syncs the spool file.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use ledger::record::Extent;
use wire::proto::JobId;

/// What the cache holds at most by default: a few hundred 1 MiB chunks in flight between the
/// upload and their assignment, enough for the nodes to keep up with a fast submitter.
pub(crate) const INPUT_CACHE_BUDGET: usize = 64 << 20;

/// Chunks smaller than this are copied into an allocation of their own when cached: a small
/// chunk is a slice of its connection's receive buffer, which it would otherwise keep whole.
const OWN_ALLOCATION_BELOW: usize = 64 << 10;

/// What an entry costs beyond its bytes (map entries, the `Bytes` handle), so that a flood of
/// tiny chunks is bounded by count as well.
const ENTRY_OVERHEAD: usize = 128;

/// Recently uploaded chunk inputs, by job and extent.
#[derive(Debug)]
pub(crate) struct InputCache {
    budget: usize,
    held: usize,
    /// Each chunk's bytes and its insertion number, keyed by job and offset in its input file.
    entries: HashMap<(JobId, u64), (u64, Bytes)>,
    /// Insertion number to key: the oldest first, for eviction.
    order: BTreeMap<u64, (JobId, u64)>,
    next: u64,
}

impl InputCache {
    /// An empty cache holding at most `budget` bytes (counting [`ENTRY_OVERHEAD`] per entry).
    pub(crate) fn new(budget: usize) -> Self {
        Self { budget, held: 0, entries: HashMap::new(), order: BTreeMap::new(), next: 0 }
    }

    /// Keeps the bytes of `job`'s chunk at `extent`, already appended to its spool file,
    /// evicting the oldest entries to make room. Bytes that do not match the extent's length,
    /// or that alone exceed the budget, are not kept.
    pub(crate) fn insert(&mut self, job: JobId, extent: Extent, bytes: Bytes) {
        let cost = bytes.len() + ENTRY_OVERHEAD;
        if extent.len != bytes.len() as u64 || cost > self.budget {
            return;
        }
        let bytes = if bytes.len() < OWN_ALLOCATION_BELOW { Bytes::copy_from_slice(&bytes) } else { bytes };
        // An extent is never appended twice, but a stale entry must not survive one that was.
        self.remove((job, extent.offset));
        while self.held + cost > self.budget {
            let Some((_, key)) = self.order.pop_first() else { break };
            if let Some((_, evicted)) = self.entries.remove(&key) {
                self.held -= evicted.len() + ENTRY_OVERHEAD;
            }
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, (job, extent.offset));
        self.entries.insert((job, extent.offset), (seq, bytes));
        self.held += cost;
    }

    /// Takes the bytes of `job`'s chunk at `extent`, if they are still here and are exactly
    /// that extent.
    pub(crate) fn take(&mut self, job: JobId, extent: Extent) -> Option<Bytes> {
        match self.entries.get(&(job, extent.offset)) {
            Some((_, bytes)) if bytes.len() as u64 == extent.len => self.remove((job, extent.offset)),
            _ => None,
        }
    }

    /// Drops everything held for `job` (its spool is removed).
    pub(crate) fn forget_job(&mut self, job: JobId) {
        let keys: Vec<_> = self.entries.keys().filter(|(j, _)| *j == job).copied().collect();
        for key in keys {
            self.remove(key);
        }
    }

    /// Bytes held, with each entry's overhead.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held
    }

    fn remove(&mut self, key: (JobId, u64)) -> Option<Bytes> {
        let (seq, bytes) = self.entries.remove(&key)?;
        self.order.remove(&seq);
        self.held -= bytes.len() + ENTRY_OVERHEAD;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests;
