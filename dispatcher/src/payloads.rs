//! The dispatcher's payload store: payload files named by their blake3 hash under
//! `STATE_DIR/payloads`, with the ones in use kept in memory for shipping to nodes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wire::proto::PayloadHash;

/// Content-addressed payloads on disk; clones share one memory cache.
#[derive(Debug, Clone)]
pub(crate) struct PayloadStore {
    dir: PathBuf,
    cache: Arc<Mutex<HashMap<PayloadHash, Bytes>>>,
}

impl PayloadStore {
    /// Opens (creating) the store under `state_dir`.
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub(crate) fn open(state_dir: &std::path::Path) -> std::io::Result<Self> {
        let dir = state_dir.join("payloads");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, cache: Arc::default() })
    }

    /// Whether the payload is stored.
    pub(crate) fn contains(&self, hash: &PayloadHash) -> bool {
        self.lock().contains_key(hash) || self.path(hash).exists()
    }

    /// Stores verified payload bytes durably (write, sync, rename).
    ///
    /// # Errors
    /// If the bytes do not match `hash` or cannot be written.
    pub(crate) fn store(&self, hash: PayloadHash, bytes: Bytes) -> std::io::Result<()> {
        if PayloadHash::of(&bytes) != hash {
            return Err(std::io::Error::other("payload bytes do not match their hash"));
        }
        let path = self.path(&hash);
        let temporary = path.with_extension("partial");
        let file = std::fs::File::create(&temporary)?;
        std::io::Write::write_all(&mut &file, &bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        self.lock().insert(hash, bytes);
        Ok(())
    }

    /// The payload's bytes, from memory or disk.
    ///
    /// # Errors
    /// If the payload is not stored or cannot be read.
    pub(crate) fn load(&self, hash: &PayloadHash) -> std::io::Result<Bytes> {
        if let Some(bytes) = self.lock().get(hash) {
            return Ok(bytes.clone());
        }
        let bytes = Bytes::from(std::fs::read(self.path(hash))?);
        self.lock().insert(*hash, bytes.clone());
        Ok(bytes)
    }

    fn path(&self, hash: &PayloadHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PayloadHash, Bytes>> {
        // Only map operations happen under the lock, so a poisoned map is still consistent.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
