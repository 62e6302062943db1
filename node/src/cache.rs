//! The content-addressed payload cache: payload bytes on disk named by their blake3 hash, and
//! compiled modules in memory, so a payload crosses the network and the compiler once per node.
//!
//! The cache is bounded: once its payload files exceed `cache_max_bytes`, the least recently
//! used payloads that no running job holds a [`PayloadLease`] on are deleted, with their compiled
//! modules, and the dispatcher is told so it ships them again when a job needs them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wire::proto::PayloadHash;
use thiserror::Error;
use tokio::sync::Notify;

use crate::exec::Payload;

/// Caps the hashes listed at registration, so the hello message stays small.
const MAX_ADVERTISED: usize = 1024;

/// What temporary files end with, so a crash's leftovers are recognised and removed.
const PARTIAL: &str = ".partial";

/// A cache operation that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The bytes do not hash to the name they were sent under.
    #[error("payload bytes hash to {actual}, not {expected}")]
    HashMismatch {
        /// The announced hash.
        expected: PayloadHash,
        /// The hash of what arrived.
        actual: PayloadHash,
    },
    /// The cache directory could not be read or written.
    #[error("payload cache {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl CacheError {
    /// Whether the cached file is gone or was damaged (and removed): fetching the payload again
    /// fixes it.
    pub(crate) fn is_missing_or_damaged(&self) -> bool {
        match self {
            CacheError::HashMismatch { .. } => true,
            CacheError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

/// Payload bytes on disk plus compiled modules in memory.
#[derive(Debug)]
pub(crate) struct PayloadCache {
    dir: PathBuf,
    compiled: Mutex<HashMap<PayloadHash, Payload>>,
    arrived: Notify,
    /// What is cached, what jobs use, and the bound eviction keeps; shared with the leases.
    usage: Arc<Mutex<Usage>>,
    /// Makes each temporary file name unique, so concurrent stores never share one.
    temporaries: AtomicU64,
    /// Whether jobs found their payloads here, for `/metrics`.
    metrics: crate::metrics::CacheMetrics,
}

/// Keeps a payload in the cache while a job on this node uses it; clones count as users too.
#[derive(Debug)]
pub(crate) struct PayloadLease {
    hash: PayloadHash,
    usage: Arc<Mutex<Usage>>,
}

/// The cache's payload files, least recently used first out, and their users.
#[derive(Debug)]
struct Usage {
    max_bytes: u64,
    /// Bytes of the files in `files`.
    held: u64,
    /// Each cached payload's size and when it was last used.
    files: HashMap<PayloadHash, (u64, u64)>,
    /// The cached payloads by last use, oldest first.
    by_use: BTreeMap<u64, PayloadHash>,
    /// Leases per payload (cached or awaited); a payload with any is never evicted.
    users: HashMap<PayloadHash, usize>,
    clock: u64,
}

impl PayloadCache {
    /// Opens (creating if needed) the cache in `dir`, holding at most `max_bytes` of payloads
    /// that no job uses; temporary files a crash left are removed, and payloads beyond the bound
    /// (set lower since the last run) evicted.
    ///
    /// # Errors
    /// [`CacheError::Io`] if the directory cannot be created or listed.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Self, CacheError> {
        let io = |source| CacheError::Io { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(PARTIAL) {
                // Only this process writes here, and it has not started storing yet.
                let _ = std::fs::remove_file(entry.path());
            } else if let (Some(hash), Ok(meta)) = (PayloadHash::from_hex(name), entry.metadata()) {
                found.push((meta.modified().ok(), hash, meta.len()));
            }
        }
        // Oldest first, so the least recently stored go first.
        found.sort();
        let mut usage = Usage {
            max_bytes,
            held: 0,
            files: HashMap::new(),
            by_use: BTreeMap::new(),
            users: HashMap::new(),
            clock: 0,
        };
        for (_, hash, len) in found {
            usage.add(hash, len);
        }
        let cache = Self {
            dir: dir.to_owned(),
            compiled: Mutex::default(),
            arrived: Notify::new(),
            usage: Arc::new(Mutex::new(usage)),
            temporaries: AtomicU64::new(0),
            metrics: crate::metrics::CacheMetrics::default(),
        };
        cache.evict(None);
        Ok(cache)
    }

    /// Marks the payload as used by a job until the lease (and every clone) is dropped: it is
    /// not evicted meanwhile, whether it is cached yet or still on its way.
    pub(crate) fn lease(&self, hash: PayloadHash) -> PayloadLease {
        let mut usage = lock_usage(&self.usage);
        *usage.users.entry(hash).or_default() += 1;
        usage.touch(&hash);
        PayloadLease { hash, usage: Arc::clone(&self.usage) }
    }

    /// Counts a job looking for its payload: a hit when its bytes or compiled module are here.
    pub(crate) fn note_lookup(&self, hash: &PayloadHash) {
        let hit = self.contains(hash) || self.lock().contains_key(hash);
        let counter = if hit { &self.metrics.hits } else { &self.metrics.misses };
        counter.inc();
    }

    /// The hit and miss counters, for the node's registry.
    pub(crate) fn metrics(&self) -> &crate::metrics::CacheMetrics {
        &self.metrics
    }

    /// Bytes of payload files in the cache.
    pub(crate) fn held(&self) -> u64 {
        lock_usage(&self.usage).held
    }

    /// Hashes of the payloads on disk (at most a thousand or so), for registration.
    pub(crate) fn list(&self) -> Vec<PayloadHash> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str().and_then(PayloadHash::from_hex))
            .take(MAX_ADVERTISED)
            .collect()
    }

    /// Whether the payload's bytes are on disk.
    pub(crate) fn contains(&self, hash: &PayloadHash) -> bool {
        self.path(hash).exists()
    }

    /// Verifies and stores payload bytes (under a temporary name of this store's own, then
    /// renamed, so concurrent stores of one payload all succeed), wakes every job waiting for a
    /// payload, and evicts what no job uses beyond the bound. Returns the evicted payloads, for
    /// the dispatcher to hear of.
    ///
    /// # Errors
    /// [`CacheError::HashMismatch`] for bytes that are not what was announced, or an I/O error.
    pub(crate) fn store(&self, hash: PayloadHash, bytes: &[u8]) -> Result<Vec<PayloadHash>, CacheError> {
        let actual = PayloadHash::of(bytes);
        if actual != hash {
            return Err(CacheError::HashMismatch { expected: hash, actual });
        }
        let path = self.path(&hash);
        let unique = self.temporaries.fetch_add(1, Ordering::Relaxed);
        let temporary = self.dir.join(format!(".{}.{unique}{PARTIAL}", hash.to_hex()));
        let io = |source| CacheError::Io { path: path.clone(), source };
        let written = std::fs::write(&temporary, bytes).and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(io(e));
        }
        lock_usage(&self.usage).add(hash, bytes.len() as u64);
        self.arrived.notify_waiters();
        // The payload just stored stays: the job it came for may not hold its lease yet.
        Ok(self.evict(Some(hash)))
    }

    /// Deletes the least recently used payloads (and their compiled modules) that no lease holds,
    /// other than `keep`, until the cache is within its bound; returns them.
    fn evict(&self, keep: Option<PayloadHash>) -> Vec<PayloadHash> {
        let mut usage = lock_usage(&self.usage);
        let mut evicted = Vec::new();
        let candidates: Vec<PayloadHash> = usage.by_use.values().copied().collect();
        for hash in candidates {
            if usage.held <= usage.max_bytes {
                break;
            }
            if Some(hash) == keep || usage.users.contains_key(&hash) {
                continue;
            }
            // Deleted under the lock, so no lease is taken on a payload half gone.
            let path = self.path(&hash);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot evict a cached payload");
                    continue;
                }
            }
            usage.remove(&hash);
            self.lock().remove(&hash);
            evicted.push(hash);
        }
        if !evicted.is_empty() {
            tracing::debug!(evicted = evicted.len(), held = usage.held, "payload cache evicted unused payloads");
        }
        evicted
    }

    /// Where a payload's bytes live on disk.
    pub(crate) fn path(&self, hash: &PayloadHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    /// Reads payload bytes from disk and verifies them against their hash, every time: a file
    /// that no longer matches (a damaged disk, a tampered file) is removed, and its compiled
    /// module forgotten, so the payload is fetched again.
    ///
    /// # Errors
    /// [`CacheError::HashMismatch`] for a damaged file (now removed), [`CacheError::Io`] if the
    /// file is missing or unreadable.
    pub(crate) fn read(&self, hash: &PayloadHash) -> Result<Vec<u8>, CacheError> {
        let path = self.path(hash);
        let bytes = std::fs::read(&path).map_err(|source| CacheError::Io { path: path.clone(), source })?;
        let actual = PayloadHash::of(&bytes);
        if actual != *hash {
            self.lock().remove(hash);
            std::fs::remove_file(&path).map_err(|source| CacheError::Io { path, source })?;
            return Err(CacheError::HashMismatch { expected: *hash, actual });
        }
        Ok(bytes)
    }

    /// Waits until the payload is on disk, or `timeout` passes; returns whether it arrived.
    pub(crate) async fn wait_for(&self, hash: &PayloadHash, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so an arrival in between is not missed.
            let arrived = self.arrived.notified();
            if self.contains(hash) {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.contains(hash);
            }
        }
    }

    /// The compiled module for `hash`, if compiled before.
    pub(crate) fn compiled(&self, hash: &PayloadHash) -> Option<Payload> {
        self.lock().get(hash).cloned()
    }

    /// Remembers a compiled module.
    pub(crate) fn insert_compiled(&self, hash: PayloadHash, payload: Payload) {
        self.lock().insert(hash, payload);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PayloadHash, Payload>> {
        // Only inserts, removals and clones happen under this lock, so a poisoned map is still
        // consistent.
        self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clone for PayloadLease {
    fn clone(&self) -> Self {
        *lock_usage(&self.usage).users.entry(self.hash).or_default() += 1;
        Self { hash: self.hash, usage: Arc::clone(&self.usage) }
    }
}

impl Drop for PayloadLease {
    fn drop(&mut self) {
        let mut usage = lock_usage(&self.usage);
        if let Some(users) = usage.users.get_mut(&self.hash) {
            *users -= 1;
            if *users == 0 {
                usage.users.remove(&self.hash);
            }
        }
    }
}

impl Usage {
    /// Records a cached payload (again) as the most recently used.
    fn add(&mut self, hash: PayloadHash, len: u64) {
        if !self.touch(&hash) {
            self.clock += 1;
            self.held += len;
            self.files.insert(hash, (len, self.clock));
            self.by_use.insert(self.clock, hash);
        }
    }

    /// Makes a cached payload the most recently used; false if it is not cached.
    fn touch(&mut self, hash: &PayloadHash) -> bool {
        self.clock += 1;
        let Some((_, used)) = self.files.get_mut(hash) else { return false };
        self.by_use.remove(used);
        *used = self.clock;
        self.by_use.insert(self.clock, *hash);
        true
    }

    fn remove(&mut self, hash: &PayloadHash) {
        if let Some((len, used)) = self.files.remove(hash) {
            self.by_use.remove(&used);
            self.held -= len;
        }
    }
}

fn lock_usage(usage: &Mutex<Usage>) -> std::sync::MutexGuard<'_, Usage> {
    // Every change under this lock leaves the maps consistent, so a poisoned one still is.
    usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_verifies_and_wakes() {
        let dir = std::env::temp_dir().join(format!("dispy-cache-test-{}", std::process::id()));
        let cache = PayloadCache::open(&dir, 1 << 20).expect("open");
        let bytes = b"(module)";
        let hash = PayloadHash::of(bytes);
        assert!(!cache.contains(&hash));
        let wrong = PayloadHash::of(b"other");
        assert!(matches!(cache.store(wrong, bytes), Err(CacheError::HashMismatch { .. })));
        let waiter = cache.wait_for(&hash, Duration::from_secs(5));
        let (arrived, stored) = tokio::join!(waiter, async { cache.store(hash, bytes) });
        stored.expect("stored");
        assert!(arrived);
        assert_eq!(cache.list(), vec![hash]);
        assert_eq!(cache.read(&hash).expect("read"), bytes);
        std::fs::write(cache.path(&hash), b"(module) ").expect("damage the file");
        assert!(matches!(cache.read(&hash), Err(CacheError::HashMismatch { .. })));
        assert!(!cache.contains(&hash), "a damaged file is removed");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn payload(seed: u8, len: usize) -> (PayloadHash, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
        (PayloadHash::of(&bytes), bytes)
    }

    #[test]
    fn concurrent_stores_of_one_payload_all_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = PayloadCache::open(dir.path(), 1 << 30).expect("open");
        let (hash, bytes) = payload(0, 128 << 10);
        let barrier = std::sync::Barrier::new(16);
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    barrier.wait();
                    for _ in 0..4 {
                        cache.store(hash, &bytes).expect("store");
                    }
                });
            }
        });
        assert_eq!(cache.read(&hash).expect("read"), bytes);
        assert_eq!(cache.held(), bytes.len() as u64, "counted once");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1, "no temporary left");
    }

    #[test]
    fn evicts_the_least_recently_used_payloads_no_job_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = PayloadCache::open(dir.path(), 3000).expect("open");
        let p: Vec<_> = (0..6).map(|i| payload(i, 1000)).collect();
        for (hash, bytes) in &p[..3] {
            assert_eq!(cache.store(*hash, bytes).expect("store"), []);
        }
        // 0 is in use and 1 was used again since: 2 is the least recently used one free to go.
        let lease = cache.lease(p[0].0);
        drop(cache.lease(p[1].0));
        assert_eq!(cache.store(p[3].0, &p[3].1).expect("store"), [p[2].0]);
        assert!(!cache.contains(&p[2].0) && cache.contains(&p[0].0));
        // A payload awaited by a job is not evicted once it arrives, even above the bound.
        let awaited = cache.lease(p[4].0);
        assert_eq!(cache.store(p[4].0, &p[4].1).expect("store"), [p[1].0]);
        // Held: 0 (leased), 3, 4 (leased). The newest store stays even when all else is leased.
        let _more = cache.lease(p[3].0);
        assert_eq!(cache.store(p[5].0, &p[5].1).expect("store"), []);
        assert_eq!(cache.held(), 4000, "above the bound only by what jobs hold");
        drop((lease, awaited, _more));
        let (q, q_bytes) = payload(9, 500);
        let evicted = cache.store(q, &q_bytes).expect("store");
        // Last used: 0 (lease), 4 (stored), 3 (lease), 5 (stored), q.
        assert_eq!(evicted, [p[0].0, p[4].0], "oldest unused first, until within the bound");
        assert!(cache.held() <= 3000);
    }

    #[test]
    fn reopening_with_a_smaller_bound_evicts_and_removes_temporaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = PayloadCache::open(dir.path(), 1 << 20).expect("open");
        for i in 0..4 {
            let (hash, bytes) = payload(i, 1000);
            cache.store(hash, &bytes).expect("store");
        }
        std::fs::write(dir.path().join(".stale.3.partial"), b"x").expect("write");
        drop(cache);
        let cache = PayloadCache::open(dir.path(), 2500).expect("reopen");
        assert_eq!(cache.held(), 2000);
        assert_eq!(cache.list().len(), 2);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 2);
    }
}
