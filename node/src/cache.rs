//! The content-addressed payload cache: payload bytes on disk named by their blake3 hash, and
//! compiled modules in memory, so a payload crosses the network and the compiler once per node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use wire::proto::PayloadHash;
use thiserror::Error;
use tokio::sync::Notify;

use crate::exec::Payload;

/// Caps the hashes listed at registration, so the hello message stays small.
const MAX_ADVERTISED: usize = 1024;

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

/// Payload bytes on disk plus compiled modules in memory.
#[derive(Debug)]
pub(crate) struct PayloadCache {
    dir: PathBuf,
    compiled: Mutex<HashMap<PayloadHash, Payload>>,
    arrived: Notify,
}

impl PayloadCache {
    /// Opens (creating if needed) the cache in `dir`.
    ///
    /// # Errors
    /// [`CacheError::Io`] if the directory cannot be created.
    pub(crate) fn open(dir: &Path) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| CacheError::Io { path: dir.to_owned(), source })?;
        Ok(Self { dir: dir.to_owned(), compiled: Mutex::default(), arrived: Notify::new() })
    }

    /// Hashes of the payloads on disk (at most a thousand or so), for registration.
    pub(crate) fn list(&self) -> Vec<PayloadHash> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str().and_then(parse_hash))
            .take(MAX_ADVERTISED)
            .collect()
    }

    /// Whether the payload's bytes are on disk.
    pub(crate) fn contains(&self, hash: &PayloadHash) -> bool {
        self.path(hash).exists()
    }

    /// Verifies and stores payload bytes, then wakes every job waiting for a payload.
    ///
    /// # Errors
    /// [`CacheError::HashMismatch`] for bytes that are not what was announced, or an I/O error.
    pub(crate) fn store(&self, hash: PayloadHash, bytes: &[u8]) -> Result<(), CacheError> {
        let actual = PayloadHash::of(bytes);
        if actual != hash {
            return Err(CacheError::HashMismatch { expected: hash, actual });
        }
        let path = self.path(&hash);
        let temporary = path.with_extension("partial");
        let io = |source| CacheError::Io { path: path.clone(), source };
        std::fs::write(&temporary, bytes).map_err(io)?;
        std::fs::rename(&temporary, &path).map_err(io)?;
        self.arrived.notify_waiters();
        Ok(())
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
        // Only inserts and clones happen under this lock, so a poisoned map is still consistent.
        self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn parse_hash(name: &str) -> Option<PayloadHash> {
    blake3::Hash::from_hex(name).ok().map(|h| PayloadHash(*h.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_verifies_and_wakes() {
        let dir = std::env::temp_dir().join(format!("dispy-cache-test-{}", std::process::id()));
        let cache = PayloadCache::open(&dir).expect("open");
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
}
