//! [`Chunks`]: the lazy iterator over a job's chunk inputs, reading files as it goes. `bytes` and
//! `lines` inputs are read as one concatenated stream through a [`Splitter`], `files` inputs one
//! file a chunk (directories listed up front), and `range` chunks are computed without input.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::iter::FusedIterator;
use std::num::NonZeroU64;
use std::path::PathBuf;

use wire::chunk::ChunkRef;

use super::auto::AutoSize;
use super::error::{io_error, SplitError};
use super::object::{next_aligned_chunk, whole_object, ObjectLines};
use super::shared::{next_shared_chunk, SharedFile};
use super::splitter::Splitter;

/// Size of the read buffer for `bytes` and `lines` inputs.
pub(super) const READ_BUFFER: usize = 256 * 1024;

/// The chunk inputs of one job, produced lazily by
/// [`SplitRule::chunks`](super::SplitRule::chunks).
///
/// Yields each chunk's bytes in order. After the first error it yields nothing more. It holds at
/// most one chunk plus a read buffer in memory.
#[derive(Debug)]
pub struct Chunks {
    pub(super) source: Source,
    pub(super) total: Option<u64>,
    pub(super) auto: Option<AutoSize>,
}

impl Chunks {
    /// The total number of chunks, when cheaply known up front: exact for `range` and `files`,
    /// computed from the file sizes for `bytes` (`None` if an input is a pipe or device), and
    /// `None` for `lines`.
    pub fn total_hint(&self) -> Option<u64> {
        self.total
    }

    /// For an `auto` rule, the chunk size the submitter tunes (see [`AutoSize::tuner`]).
    pub fn auto(&self) -> Option<&AutoSize> {
        self.auto.as_ref()
    }
}

impl Iterator for Chunks {
    type Item = Result<Vec<u8>, SplitError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let (Some(auto), false) = (&self.auto, matches!(self.source, Source::Done)) {
            self.source.resize(auto.next_size());
        }
        let item = match &mut self.source {
            Source::Done => None,
            Source::Range { next, end, step } => {
                if *next >= *end {
                    None
                } else {
                    let start = *next;
                    let stop = start.saturating_add(*step).min(*end);
                    *next = stop;
                    let mut input = Vec::with_capacity(16);
                    input.extend_from_slice(&start.to_le_bytes());
                    input.extend_from_slice(&stop.to_le_bytes());
                    Some(Ok(input))
                }
            }
            Source::Files(paths) => paths
                .next()
                .map(|path| fs::read(&path).map_err(|error| io_error(&path, error))),
            Source::Stream {
                paths,
                reader,
                splitter,
            } => next_stream_chunk(paths, reader, splitter),
            Source::Shared { files, current, size } => next_shared_chunk(files, current, *size),
            Source::ObjectLines(lines) => lines.next_chunk(),
            Source::Aligned { url, object_len, next, size } => next_aligned_chunk(url, *object_len, next, *size).map(Ok),
            Source::ObjectFiles(objects) => objects.next().map(|(url, len)| Ok(whole_object(&url, len))),
        };
        match (&item, &self.auto) {
            (Some(Ok(chunk)), Some(auto)) => auto.cut(self.source.units(chunk)),
            (Some(Ok(_)), None) => {}
            _ => self.source = Source::Done,
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.source {
            Source::Done => (0, Some(0)),
            Source::Range { next, end, step } => {
                let left = usize::try_from(end.saturating_sub(*next).div_ceil(*step)).ok();
                (left.unwrap_or(usize::MAX), left)
            }
            // A read error ends the iteration early, so only the upper bound is certain.
            Source::Files(paths) => (0, Some(paths.len())),
            Source::ObjectFiles(objects) => (0, Some(objects.len())),
            Source::Stream { .. } | Source::Shared { .. } | Source::ObjectLines(_) | Source::Aligned { .. } => (0, None),
        }
    }
}

impl FusedIterator for Chunks {}

/// Where a [`Chunks`] iterator takes its chunks from.
#[derive(Debug)]
pub(super) enum Source {
    /// `bytes` and `lines`: the paths still to open, the file being read, and the cutter.
    Stream {
        paths: std::vec::IntoIter<PathBuf>,
        reader: Option<(PathBuf, BufReader<File>)>,
        splitter: Splitter,
    },
    /// `bytes` over shared input: the files still to describe, the one being described with the
    /// offset reached, and the chunk size.
    Shared {
        files: std::vec::IntoIter<SharedFile>,
        current: Option<(SharedFile, u64)>,
        size: u64,
    },
    /// `lines:N` over objects: the scan for every N-th line end.
    ObjectLines(ObjectLines),
    /// `lines:auto` over one object: its size, the next range's start and the range size.
    Aligned { url: node::object_input::ObjectUrl, object_len: u64, next: u64, size: u64 },
    /// `files` over objects: the objects still to describe, with their sizes.
    ObjectFiles(std::vec::IntoIter<(node::object_input::ObjectUrl, u64)>),
    /// `files`: the files still to read, one chunk each.
    Files(std::vec::IntoIter<PathBuf>),
    /// `range`: the next chunk's start.
    Range { next: u64, end: u64, step: u64 },
    /// Finished or failed.
    Done,
}

impl Source {
    /// Sets the size of the next chunk, in the rule's unit (bytes, or numbers of a range).
    fn resize(&mut self, size: u64) {
        let size = NonZeroU64::new(size).unwrap_or(NonZeroU64::MIN);
        match self {
            Source::Stream { splitter, .. } => splitter.resize(size),
            Source::Range { step, .. } | Source::Shared { size: step, .. } | Source::Aligned { size: step, .. } => {
                *step = size.get()
            }
            Source::Files(_) | Source::ObjectLines(_) | Source::ObjectFiles(_) | Source::Done => {}
        }
    }

    /// A chunk's size in the rule's unit: its numbers for a range, its bytes otherwise.
    fn units(&self, chunk: &[u8]) -> u64 {
        match (self, chunk.get(..16)) {
            (Source::Range { .. }, Some(bounds)) => {
                let number = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
                number(&bounds[8..]).saturating_sub(number(&bounds[..8]))
            }
            (Source::Shared { .. } | Source::Aligned { .. }, _) => ChunkRef::decode(chunk).map_or(0, |chunk| chunk.len()),
            _ => chunk.len() as u64,
        }
    }
}

/// Reads the concatenated stream until the splitter completes a chunk or the input ends.
fn next_stream_chunk(
    paths: &mut std::vec::IntoIter<PathBuf>,
    reader: &mut Option<(PathBuf, BufReader<File>)>,
    splitter: &mut Splitter,
) -> Option<Result<Vec<u8>, SplitError>> {
    loop {
        let Some((path, file)) = reader else {
            let Some(path) = paths.next() else {
                return splitter.finish().map(Ok);
            };
            match File::open(&path) {
                Ok(file) => *reader = Some((path, BufReader::with_capacity(READ_BUFFER, file))),
                Err(error) => return Some(Err(io_error(&path, error))),
            }
            continue;
        };
        let data = match file.fill_buf() {
            Ok(data) => data,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Some(Err(io_error(path, error))),
        };
        if data.is_empty() {
            *reader = None;
            continue;
        }
        let (used, chunk) = splitter.feed(data);
        file.consume(used);
        if let Some(chunk) = chunk {
            return Some(Ok(chunk));
        }
    }
}

/// Lists the `files` rule's chunks: explicit paths as given, directories expanded.
pub(super) fn list_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, SplitError> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = fs::metadata(input).map_err(|error| io_error(input, error))?;
        if !meta.is_dir() {
            files.push(input.clone());
            continue;
        }
        // An explicit stack rather than recursion, so a deep tree cannot overflow the stack.
        let mut found = Vec::new();
        let mut dirs = vec![input.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).map_err(|error| io_error(&dir, error))? {
                let entry = entry.map_err(|error| io_error(&dir, error))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(|error| io_error(&path, error))?;
                if kind.is_dir() {
                    dirs.push(path);
                } else if kind.is_file() {
                    found.push(path);
                } else if kind.is_symlink() {
                    // Links to files count; links to directories are skipped (they could form a
                    // cycle) and so are dangling links.
                    if fs::metadata(&path).is_ok_and(|meta| meta.is_file()) {
                        found.push(path);
                    }
                }
            }
        }
        found.sort();
        files.append(&mut found);
    }
    Ok(files)
}
