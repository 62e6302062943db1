//! The dispatcher's payload store: payload files named by their blake3 hash under
//! `STATE_DIR/payloads`, and the bytes of payloads that live jobs ship to nodes kept in memory
//! under a cap (`payload_memory_cap`), least recently used first out.
//!
//! Any number of submissions may store the same payload at once: each writes its own temporary
//! file and renames it into place, and a payload already there is stored.
//!
//! Files do not pile up: [`PayloadStore::collect`] removes those no unfinished job uses that were
//! neither stored nor asked for within [`UNUSED_PAYLOAD_GRACE`]; a submission that finds its
//! payload here refreshes the file's time, so it is not collected between that check and the
//! job's creation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use wire::proto::PayloadHash;

/// What temporary files end with, so a crash's leftovers are recognised and removed.
const PARTIAL: &str = ".partial";

/// How long a payload file no unfinished job uses stays, counted from when it was stored or a
/// submission last asked for it: a client resubmitting the same module within this long uploads
/// nothing.
pub(crate) const UNUSED_PAYLOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Content-addressed payloads on disk; clones share one memory cache.
#[derive(Debug, Clone)]
pub(crate) struct PayloadStore {
    dir: PathBuf,
    memory: Arc<Mutex<Memory>>,
    /// Makes each temporary file name unique within this process.
    temporaries: Arc<AtomicU64>,
}

/// Payload bytes in memory, at most `cap` of them, least recently used first out.
#[derive(Debug)]
struct Memory {
    cap: usize,
    /// Bytes held, summed over `bytes`.
    held: usize,
    /// Each payload's bytes and when it was last used.
    bytes: HashMap<PayloadHash, (Bytes, u64)>,
    /// The payloads by last use, oldest first.
    by_use: BTreeMap<u64, PayloadHash>,
    clock: u64,
}

impl PayloadStore {
    /// Opens (creating) the store under `state_dir`, keeping at most `memory_cap` bytes of
    /// payloads in memory, and removes temporary files a crash left behind.
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub(crate) fn open(state_dir: &Path, memory_cap: usize) -> std::io::Result<Self> {
        let dir = state_dir.join("payloads");
        std::fs::create_dir_all(&dir)?;
        // Only this process writes here, and it has not started yet: every partial file is stale.
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry.file_name().to_str().is_some_and(|name| name.ends_with(PARTIAL)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let memory = Memory { cap: memory_cap, held: 0, bytes: HashMap::new(), by_use: BTreeMap::new(), clock: 0 };
        Ok(Self { dir, memory: Arc::new(Mutex::new(memory)), temporaries: Arc::default() })
    }

    /// Whether the payload is stored; a stored file's time is refreshed, since a job is about to
    /// use it (see [`PayloadStore::collect`]).
    pub(crate) fn contains(&self, hash: &PayloadHash) -> bool {
        let file = std::fs::File::options().append(true).open(self.path(hash));
        match file {
            Ok(file) => {
                // Best effort: at worst the file is collected early and the submission refused.
                let _ = file.set_modified(std::time::SystemTime::now());
                true
            }
            Err(_) => false,
        }
    }

    /// Removes the payload files that `in_use` does not name and that were last stored or asked
    /// for before `unused_since`, and their bytes in memory; returns how many went. A file that
    /// cannot be examined or removed stays for the next round.
    pub(crate) fn collect(&self, in_use: &HashSet<PayloadHash>, unused_since: SystemTime) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut removed = 0;
        for entry in entries.flatten() {
            let Some(hash) = entry.file_name().to_str().and_then(PayloadHash::from_hex) else { continue };
            let stale = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < unused_since);
            if in_use.contains(&hash) || !stale {
                continue;
            }
            self.lock().remove(&hash);
            if std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Stores verified payload bytes durably (write a temporary file of its own, sync, rename);
    /// a payload already stored is left as it is. Safe under any number of concurrent stores,
    /// of the same payload or others. The bytes are not kept in memory: a job is not yet using
    /// them, and the first shipment reads them back from the page cache.
    ///
    /// # Errors
    /// If the bytes do not match `hash` or cannot be written.
    pub(crate) fn store(&self, hash: PayloadHash, bytes: &[u8]) -> std::io::Result<()> {
        if PayloadHash::of(bytes) != hash {
            return Err(std::io::Error::other("payload bytes do not match their hash"));
        }
        let path = self.path(&hash);
        if path.exists() {
            return Ok(());
        }
        let unique = self.temporaries.fetch_add(1, Ordering::Relaxed);
        let temporary = self.dir.join(format!(".{}.{unique}{PARTIAL}", hash.to_hex()));
        let written = (|| {
            let file = std::fs::File::create(&temporary)?;
            std::io::Write::write_all(&mut &file, bytes)?;
            file.sync_all()?;
            // Another store of the same bytes may have renamed first: replacing its file with the
            // same content is harmless, and rename is atomic, so a reader sees one or the other.
            std::fs::rename(&temporary, &path)?;
            // The new name is durable once the directory is.
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }

    /// The payload's bytes, from memory or disk; read from disk, they are kept in memory (within
    /// the cap) until [`PayloadStore::forget_unneeded`] finds no live job using them.
    ///
    /// # Errors
    /// If the payload is not stored or cannot be read.
    pub(crate) fn load(&self, hash: &PayloadHash) -> std::io::Result<Bytes> {
        if let Some(bytes) = self.lock().touch(hash) {
            return Ok(bytes);
        }
        let bytes = Bytes::from(std::fs::read(self.path(hash))?);
        self.lock().insert(*hash, bytes.clone());
        Ok(bytes)
    }

    /// Drops from memory every payload for which `needed` says false (no live job uses it).
    pub(crate) fn forget_unneeded(&self, needed: impl Fn(&PayloadHash) -> bool) {
        let mut memory = self.lock();
        let unneeded: Vec<PayloadHash> = memory.bytes.keys().filter(|hash| !needed(hash)).copied().collect();
        for hash in unneeded {
            memory.remove(&hash);
        }
    }

    /// Bytes of payloads held in memory.
    #[cfg(test)]
    pub(crate) fn memory_held(&self) -> usize {
        self.lock().held
    }

    fn path(&self, hash: &PayloadHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // Only map operations happen under the lock, and each leaves the maps consistent.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Memory {
    /// The payload's bytes, now the most recently used.
    fn touch(&mut self, hash: &PayloadHash) -> Option<Bytes> {
        self.clock += 1;
        let clock = self.clock;
        let (bytes, used) = self.bytes.get_mut(hash)?;
        self.by_use.remove(used);
        *used = clock;
        self.by_use.insert(clock, *hash);
        Some(bytes.clone())
    }

    /// Keeps the bytes as the most recently used, evicting the least recently used until the rest
    /// fit under the cap; bytes larger than the cap are not kept.
    fn insert(&mut self, hash: PayloadHash, bytes: Bytes) {
        if bytes.len() > self.cap || self.touch(&hash).is_some() {
            return;
        }
        while self.held + bytes.len() > self.cap {
            let Some((_, oldest)) = self.by_use.first_key_value() else { break };
            let oldest = *oldest;
            self.remove(&oldest);
        }
        self.clock += 1;
        self.held += bytes.len();
        self.by_use.insert(self.clock, hash);
        self.bytes.insert(hash, (bytes, self.clock));
    }

    fn remove(&mut self, hash: &PayloadHash) {
        if let Some((bytes, used)) = self.bytes.remove(hash) {
            self.by_use.remove(&used);
            self.held -= bytes.len();
        }
    }
}

#[cfg(test)]
mod tests;
