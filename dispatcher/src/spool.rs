//! The dispatcher's spool: each job's chunk inputs and accepted results in append-only files under
//! `STATE_DIR/jobs/ID/`, so memory stays bounded however large the input, and a restarted
//! dispatcher still has them. Which bytes belong to which chunk is recorded in the
//! [`Journal`](crate::journal::Journal) as `Extent`s. Beside them, the job's attempt logs
//! (`logs`, self-describing: see [`crate::logstore`]) stay after the input and results go
//! ([`Spool::remove_data`]) until the job is forgotten ([`Spool::remove`]).

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use bytes::Bytes;
use ledger::record::Extent;
use wire::proto::JobId;

/// Which of a job's two spool files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpoolFile {
    /// Chunk inputs, in chunk order.
    Input,
    /// Accepted results, in the order they were accepted.
    Results,
}

impl SpoolFile {
    fn name(self) -> &'static str {
        match self {
            SpoolFile::Input => "input",
            SpoolFile::Results => "results",
        }
    }
}

/// The spool directory.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Opens (creating) the spool under `state_dir`.
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub(crate) fn open(state_dir: &std::path::Path) -> std::io::Result<Self> {
        let root = state_dir.join("jobs");
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    /// Opens one of a job's files for appending, creating the job's directory.
    ///
    /// # Errors
    /// If the file cannot be opened.
    pub(crate) fn appender(&self, job: JobId, file: SpoolFile) -> std::io::Result<Appender> {
        let dir = self.root.join(job.0.to_string());
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(file.name());
        let handle = OpenOptions::new().create(true).append(true).read(true).open(&path)?;
        let len = handle.metadata()?.len();
        // Where the filesystem refuses `O_DIRECT` (tmpfs), every input chunk goes through the
        // page cache, as results always do.
        let direct = match file {
            SpoolFile::Input => OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&path).ok(),
            SpoolFile::Results => None,
        };
        Ok(Appender { file: handle, len, direct: direct.map(|file| Direct { file, scratch: Vec::new() }) })
    }

    /// Opens one of a job's files for reading extents.
    ///
    /// # Errors
    /// If the file does not exist or cannot be opened.
    pub(crate) fn reader(&self, job: JobId, file: SpoolFile) -> std::io::Result<Reader> {
        Ok(Reader { file: File::open(self.root.join(job.0.to_string()).join(file.name()))? })
    }

    /// Deletes the files of every job for which `known` says false.
    pub(crate) fn remove_unknown(&self, known: impl Fn(JobId) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return };
        for entry in entries.flatten() {
            let Some(job) = entry.file_name().to_str().and_then(|name| name.parse().ok()).map(JobId) else { continue };
            if !known(job) {
                // The next job's input file, created ahead of a submission that never came, holds
                // nothing: not worth an operator's attention.
                let holds_data = std::fs::read_dir(entry.path())
                    .map(|files| files.flatten().any(|f| f.metadata().is_ok_and(|m| m.len() > 0)))
                    .unwrap_or(true);
                if holds_data {
                    tracing::info!(%job, "deleting the spooled data of a job the journal does not know");
                } else {
                    tracing::debug!(%job, "deleting the empty spool directory of a job the journal does not know");
                }
                self.remove(job);
            }
        }
    }

    /// The path of a job's `logs` file (see [`crate::logstore`]), creating the job's directory
    /// when `create` says so.
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub(crate) fn logs_path(&self, job: JobId, create: bool) -> std::io::Result<PathBuf> {
        let dir = self.root.join(job.0.to_string());
        if create {
            std::fs::create_dir_all(&dir)?;
        }
        Ok(dir.join("logs"))
    }

    /// Deletes a job's input and results files; its logs stay (the directory goes when it is
    /// left empty).
    pub(crate) fn remove_data(&self, job: JobId) {
        let dir = self.root.join(job.0.to_string());
        for file in [SpoolFile::Input, SpoolFile::Results] {
            if let Err(e) = std::fs::remove_file(dir.join(file.name())) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%job, error = %e, "failed to delete spooled data");
                }
            }
        }
        // Fails, as it should, while the job has logs.
        let _ = std::fs::remove_dir(&dir);
    }

    /// Whether a job has its input or results file (its logs aside).
    pub(crate) fn has_data(&self, job: JobId) -> bool {
        let dir = self.root.join(job.0.to_string());
        [SpoolFile::Input, SpoolFile::Results].iter().any(|file| dir.join(file.name()).is_file())
    }

    /// Deletes a job's files, its logs included.
    pub(crate) fn remove(&self, job: JobId) {
        let dir = self.root.join(job.0.to_string());
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%job, error = %e, "failed to delete spooled data");
            }
        }
    }
}

/// Input chunks at least this long are written with `O_DIRECT`: the device reads them from our
/// memory, where a write through the page cache copies every byte into freshly allocated cache
/// pages, which cost ~2 ns a byte of CPU on the benchmark's VM, more than the dispatcher's whole
/// budget per byte (bench/RESULTS.md, issue 22 part 2). Smaller ones would waste most of their
/// aligned block.
const DIRECT_MIN: usize = 256 << 10;

/// What `O_DIRECT` asks offsets, lengths and buffers to be multiples of: 4 KiB covers every
/// device's logical block.
const DIRECT_ALIGN: usize = 4096;

/// Appends to a spool file and says where each piece went.
#[derive(Debug)]
pub(crate) struct Appender {
    file: File,
    /// The file's length: the next piece goes here (or at the next aligned offset, direct).
    len: u64,
    /// The same file opened with `O_DIRECT`, for large input chunks.
    direct: Option<Direct>,
}

/// A file opened with `O_DIRECT` and an aligned buffer to write from.
#[derive(Debug)]
struct Direct {
    file: File,
    scratch: Vec<u8>,
}

impl Direct {
    /// Writes `bytes` at `offset` (aligned), padded with zeros to a whole block; returns the
    /// padded length.
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> std::io::Result<u64> {
        let padded = bytes.len().next_multiple_of(DIRECT_ALIGN);
        self.scratch.resize(padded + DIRECT_ALIGN, 0);
        let start = self.scratch.as_ptr().align_offset(DIRECT_ALIGN);
        let block = &mut self.scratch[start..start + padded];
        block[..bytes.len()].copy_from_slice(bytes);
        block[bytes.len()..].fill(0);
        self.file.write_all_at(block, offset)?;
        Ok(padded as u64)
    }
}

impl Appender {
    /// Appends `bytes` and returns their extent. A large input chunk goes at the next multiple
    /// of 4 KiB, written directly (the gap reads as zeros, and no extent points at it).
    ///
    /// # Errors
    /// If the write fails (for example the disk is full); the file may then hold a partial
    /// piece at its end, which no extent points at.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> std::io::Result<Extent> {
        if let Some(direct) = self.direct.as_mut().filter(|_| bytes.len() >= DIRECT_MIN) {
            let offset = self.len.next_multiple_of(DIRECT_ALIGN as u64);
            match direct.write_at(bytes, offset) {
                Ok(padded) => {
                    self.len = offset + padded;
                    return Ok(Extent { offset, len: bytes.len() as u64 });
                }
                // The filesystem opened the file so but does not write it so: the page cache
                // from now on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        self.file.write_all(bytes)?;
        let extent = Extent { offset: self.len, len: bytes.len() as u64 };
        self.len += extent.len;
        Ok(extent)
    }

    /// Appends `pieces` one after another with as few writes as the kernel allows (one
    /// `writev` for a batch of small results) and returns their extents, in order. A file that
    /// writes large input chunks directly appends them one by one.
    ///
    /// # Errors
    /// As [`Appender::append`]: if a write fails, no extent is returned, and the pieces written
    /// before the failure lie at the file's end where no extent points at them.
    pub(crate) fn append_all(&mut self, pieces: &[Bytes]) -> std::io::Result<Vec<Extent>> {
        if self.direct.is_some() {
            return pieces.iter().map(|piece| self.append(piece)).collect();
        }
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|piece| IoSlice::new(piece)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match self.file.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(written) => IoSlice::advance_slices(&mut rest, written),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let extents = pieces
            .iter()
            .map(|piece| {
                let extent = Extent { offset: self.len, len: piece.len() as u64 };
                self.len += extent.len;
                extent
            })
            .collect();
        Ok(extents)
    }

    /// Another handle on the file, so a different thread can sync it.
    ///
    /// # Errors
    /// If the descriptor cannot be duplicated.
    pub(crate) fn sync_handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }
}

/// Reads extents of a spool file.
#[derive(Debug)]
pub(crate) struct Reader {
    file: File,
}

impl Reader {
    /// Reads one extent.
    ///
    /// # Errors
    /// If the read fails or the file is shorter than the extent.
    pub(crate) fn read(&self, extent: Extent) -> std::io::Result<Bytes> {
        let len = usize::try_from(extent.len).map_err(std::io::Error::other)?;
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, extent.offset)?;
        Ok(buf.into())
    }
}

#[cfg(test)]
mod tests;
