//! Split rules: how a job's input is cut into chunks.
//!
//! A [`SplitRule`] is parsed from the text users write (`bytes:4MiB`, `lines:1000`, `files`,
//! `range:0..1024:16`) and turned into a lazy [`Chunks`] iterator over the chunk inputs by
//! [`SplitRule::chunks`]. Streams are cut by the sans-IO [`Splitter`] ([`ByteSplitter`],
//! [`LineSplitter`]), which the file-reading iterator drives, so the cutting logic exists once and
//! can be fed from any source. Memory stays bounded by about one chunk plus a read buffer,
//! whatever the size of the input.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::iter::FusedIterator;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use common::messages::io_message;
use thiserror::Error;
use wire::chunk::{ChunkRef, Segment};
use wire::units::parse_size;

pub mod auto;

pub use auto::AutoSize;
use auto::Unit;

/// How a job's input is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SplitRule {
    /// Fixed-size chunks of this many bytes (greater than zero); only the last may be shorter.
    Bytes(u64),
    /// This many lines a chunk (greater than zero); a line is never cut.
    Lines(u64),
    /// Each input file is one chunk; a directory contributes its files recursively.
    Files,
    /// No input data: the numbers `start..end` cut into steps of `step` (greater than zero); each
    /// chunk's input is its `[start, end)` as two little-endian `u64`.
    Range {
        /// First number of the first chunk.
        start: u64,
        /// One past the last number; `start == end` gives no chunks.
        end: u64,
        /// Numbers per chunk; the last chunk may have fewer.
        step: u64,
    },
    /// Chunk sizes chosen while the job runs, so each chunk runs for about a target duration
    /// (see [`auto`]).
    Auto(AutoSplit),
}

/// What an `auto` rule cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AutoSplit {
    /// `bytes:auto` (or plain `auto`): byte chunks of a size measured to fit the target.
    Bytes,
    /// `lines:auto`: whole lines, cut at the first line end after the measured size in bytes.
    Lines,
    /// `range:START..END:auto`: a range cut into steps measured to fit the target.
    Range {
        /// First number of the first chunk.
        start: u64,
        /// One past the last number.
        end: u64,
    },
}

/// Why a split rule could not be parsed or its input could not be cut.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SplitError {
    /// The text is not one of the split rule forms.
    #[error("invalid split rule {text:?}: {expected}")]
    Syntax {
        /// The offending text.
        text: String,
        /// The form(s) that would have been accepted.
        expected: &'static str,
    },
    /// A chunk size, line count or step is zero, which would never make progress.
    #[error("invalid split rule {text:?}: {what} must be greater than zero")]
    Zero {
        /// The offending rule.
        text: String,
        /// Which number is zero: "chunk size", "lines per chunk" or "step".
        what: &'static str,
    },
    /// A range starts after it ends.
    #[error("invalid split rule {text:?}: start {start} is greater than end {end}")]
    StartAfterEnd {
        /// The offending rule.
        text: String,
        /// The range start.
        start: u64,
        /// The range end.
        end: u64,
    },
    /// An input could not be opened, listed or read.
    #[error("failed to read input {}: {}", path.display(), io_message(error))]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying error; its text is already part of this error's message.
        error: io::Error,
    },
    /// A `bytes` or `lines` input is a directory; only the `files` rule reads directories.
    #[error(
        "input {} is a directory, but the {rule} split rule reads files (use the files rule \
         for a directory)",
        path.display()
    )]
    IsDirectory {
        /// The directory.
        path: PathBuf,
        /// The rule, as text.
        rule: String,
    },
    /// A rule that cuts input data was given no input.
    #[error("the {rule} split rule needs an input file or directory")]
    MissingInput {
        /// The rule, as text.
        rule: String,
    },
    /// Shared input was asked for with a rule other than `bytes`.
    #[error(
        "shared input needs a bytes split rule (bytes:SIZE or bytes:auto), not {rule}: other \
         rules must read the input to find where chunks end"
    )]
    NotShareable {
        /// The rule, as text.
        rule: String,
    },
    /// A `range` rule was given input paths, which it would ignore.
    #[error("the {rule} split rule takes no input, but {count} input path(s) were given")]
    UnexpectedInput {
        /// The rule, as text.
        rule: String,
        /// How many paths were given.
        count: usize,
    },
}

const ALL_FORMS: &str =
    "expected bytes:SIZE, lines:N, files, range:START..END:STEP or auto (also bytes:auto, \
     lines:auto, range:START..END:auto)";
const BYTES_FORM: &str = "expected bytes:SIZE with a size such as 4MiB or 65536";
const LINES_FORM: &str = "expected lines:N with N a whole number, such as lines:1000";
const FILES_FORM: &str = "expected files, with no argument";
const RANGE_FORM: &str =
    "expected range:START..END:STEP with whole numbers, such as range:0..1024:16";

/// The first chunk size of `bytes:auto` and `lines:auto`.
const PROBE: NonZeroU64 = match NonZeroU64::new(auto::PROBE_BYTES) {
    Some(size) => size,
    None => panic!("the probe size is not zero"),
};

/// Size of the read buffer for `bytes` and `lines` inputs.
const READ_BUFFER: usize = 256 * 1024;

/// The most a splitter reserves ahead for a chunk, so a huge rule on a small input does not
/// allocate the rule's size.
const MAX_RESERVE: usize = 64 * 1024 * 1024;

impl SplitRule {
    /// Checks the numbers of a rule built directly rather than parsed: sizes, counts and steps
    /// must be non-zero and a range must not start after it ends.
    ///
    /// # Errors
    /// [`SplitError::Zero`] or [`SplitError::StartAfterEnd`].
    pub fn validate(&self) -> Result<(), SplitError> {
        let zero = |what| {
            Err(SplitError::Zero {
                text: self.to_string(),
                what,
            })
        };
        match *self {
            SplitRule::Bytes(0) => zero("chunk size"),
            SplitRule::Lines(0) => zero("lines per chunk"),
            SplitRule::Range { step: 0, .. } => zero("step"),
            SplitRule::Range { start, end, .. } | SplitRule::Auto(AutoSplit::Range { start, end })
                if start > end =>
            {
                Err(SplitError::StartAfterEnd {
                    text: self.to_string(),
                    start,
                    end,
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether the rule reads input paths (every rule but `range`).
    pub fn needs_input(&self) -> bool {
        !matches!(self, SplitRule::Range { .. } | SplitRule::Auto(AutoSplit::Range { .. }))
    }

    /// The sans-IO stream cutter for `bytes` and `lines`; `None` for `files` and `range`, which
    /// do not cut a stream, and for a zero size or count (see [`SplitRule::validate`]).
    pub fn splitter(&self) -> Option<Splitter> {
        match *self {
            SplitRule::Bytes(size) => NonZeroU64::new(size).map(|n| ByteSplitter::new(n).into()),
            SplitRule::Lines(lines) => NonZeroU64::new(lines).map(|n| LineSplitter::new(n).into()),
            SplitRule::Auto(AutoSplit::Bytes) => Some(ByteSplitter::new(PROBE).into()),
            SplitRule::Auto(AutoSplit::Lines) => Some(ByteSplitter::whole_lines(PROBE).into()),
            SplitRule::Files | SplitRule::Range { .. } | SplitRule::Auto(AutoSplit::Range { .. }) => {
                None
            }
        }
    }

    /// Opens the inputs and returns an iterator over chunk inputs, in order.
    ///
    /// - `bytes` and `lines`: the input paths are read in order as one concatenated stream (one
    ///   file is the usual case), so a file without a trailing newline joins its last line to the
    ///   next file's first, as `cat` would.
    /// - `files`: each path that is not a directory is one chunk; a directory contributes its
    ///   regular files (recursively, following symbolic links to files but not to directories),
    ///   sorted by path so the order is deterministic. An empty directory gives no chunks.
    /// - `range`: no input; each chunk's input is 16 bytes: its `[start, min(start+step, end))`
    ///   as two little-endian `u64`.
    /// - `auto` rules cut like their fixed forms, with sizes set by [`Chunks::auto`]'s tuner:
    ///   after a few probe chunks the iterator blocks until the tuner decides.
    ///
    /// Paths are checked here (they exist; no directory for `bytes`/`lines`) and directories are
    /// listed here; file contents are read lazily as the iterator advances.
    ///
    /// # Errors
    /// An invalid rule ([`SplitRule::validate`]), [`SplitError::MissingInput`],
    /// [`SplitError::UnexpectedInput`], [`SplitError::IsDirectory`], or [`SplitError::Io`] when
    /// a path is missing or a directory cannot be listed.
    pub fn chunks(&self, inputs: &[PathBuf]) -> Result<Chunks, SplitError> {
        self.validate()?;
        if !self.needs_input() {
            if !inputs.is_empty() {
                return Err(SplitError::UnexpectedInput {
                    rule: self.to_string(),
                    count: inputs.len(),
                });
            }
        } else if inputs.is_empty() {
            return Err(SplitError::MissingInput {
                rule: self.to_string(),
            });
        }
        match *self {
            SplitRule::Range { start, end, step } => Ok(Chunks {
                source: Source::Range {
                    next: start,
                    end,
                    step,
                },
                total: Some((end - start).div_ceil(step)),
                auto: None,
            }),
            SplitRule::Auto(AutoSplit::Range { start, end }) => {
                let auto = AutoSize::new(Unit::Numbers, Some(end - start));
                Ok(Chunks {
                    source: Source::Range {
                        next: start,
                        end,
                        step: auto::Unit::Numbers.probe_size(Some(end - start)),
                    },
                    total: None,
                    auto: Some(auto),
                })
            }
            SplitRule::Files => {
                let files = list_files(inputs)?;
                Ok(Chunks {
                    total: Some(files.len() as u64),
                    source: Source::Files(files.into_iter()),
                    auto: None,
                })
            }
            SplitRule::Bytes(_)
            | SplitRule::Lines(_)
            | SplitRule::Auto(AutoSplit::Bytes | AutoSplit::Lines) => {
                let mut total_bytes = Some(0u64);
                for path in inputs {
                    let meta = fs::metadata(path).map_err(|error| io_error(path, error))?;
                    if meta.is_dir() {
                        return Err(SplitError::IsDirectory {
                            path: path.clone(),
                            rule: self.kind().to_owned(),
                        });
                    }
                    // A pipe or device has no meaningful length.
                    total_bytes = total_bytes
                        .filter(|_| meta.is_file())
                        .and_then(|total| total.checked_add(meta.len()));
                }
                let total = match *self {
                    SplitRule::Bytes(size) => total_bytes.map(|bytes| bytes.div_ceil(size)),
                    _ => None,
                };
                let splitter = self.splitter().ok_or_else(|| SplitError::Zero {
                    text: self.to_string(),
                    what: "chunk size",
                })?;
                let auto = matches!(self, SplitRule::Auto(_))
                    .then(|| AutoSize::new(Unit::Bytes, total_bytes));
                Ok(Chunks {
                    source: Source::Stream {
                        paths: Vec::from(inputs).into_iter(),
                        reader: None,
                        splitter,
                    },
                    total,
                    auto,
                })
            }
        }
    }

    /// Like [`SplitRule::chunks`] for input every node can read at the same path: each chunk is
    /// an encoded [`ChunkRef`] naming the bytes, which nodes read themselves. Only
    /// `bytes` rules qualify, since their cuts need no reading.
    ///
    /// # Errors
    /// [`SplitError::NotShareable`] for other rules; otherwise as [`SplitRule::chunks`].
    pub fn shared_chunks(&self, inputs: &[PathBuf]) -> Result<Chunks, SplitError> {
        let size = match *self {
            SplitRule::Bytes(size) => size,
            SplitRule::Auto(AutoSplit::Bytes) => auto::PROBE_BYTES,
            _ => return Err(SplitError::NotShareable { rule: self.to_string() }),
        };
        // Checks the rule and the paths as the unshared form does.
        drop(self.chunks(inputs)?);
        let mut files = Vec::with_capacity(inputs.len());
        for path in inputs {
            let canonical = fs::canonicalize(path).map_err(|error| io_error(path, error))?;
            let len = fs::metadata(&canonical).map_err(|error| io_error(path, error))?.len();
            files.push((canonical, len));
        }
        let total_bytes: u64 = files.iter().map(|(_, len)| len).sum();
        let auto = matches!(self, SplitRule::Auto(_)).then(|| AutoSize::new(Unit::Bytes, Some(total_bytes)));
        Ok(Chunks {
            total: (auto.is_none()).then(|| total_bytes.div_ceil(size)),
            source: Source::Shared { files: files.into_iter(), current: None, size },
            auto,
        })
    }

    /// The rule's name without arguments: "bytes", "lines", "files" or "range".
    fn kind(&self) -> &'static str {
        match self {
            SplitRule::Bytes(_) | SplitRule::Auto(AutoSplit::Bytes) => "bytes",
            SplitRule::Lines(_) | SplitRule::Auto(AutoSplit::Lines) => "lines",
            SplitRule::Files => "files",
            SplitRule::Range { .. } | SplitRule::Auto(AutoSplit::Range { .. }) => "range",
        }
    }
}

impl FromStr for SplitRule {
    type Err = SplitError;

    fn from_str(text: &str) -> Result<Self, SplitError> {
        let syntax = |expected| SplitError::Syntax {
            text: text.to_owned(),
            expected,
        };
        let trimmed = text.trim();
        let (kind, arg) = match trimmed.split_once(':') {
            Some((kind, arg)) => (kind.trim(), Some(arg.trim())),
            None => (trimmed, None),
        };
        let auto = |arg: &str| arg.eq_ignore_ascii_case("auto");
        let rule = match (kind.to_ascii_lowercase().as_str(), arg) {
            ("auto", None) => SplitRule::Auto(AutoSplit::Bytes),
            ("bytes", Some(arg)) if auto(arg) => SplitRule::Auto(AutoSplit::Bytes),
            ("lines", Some(arg)) if auto(arg) => SplitRule::Auto(AutoSplit::Lines),
            ("bytes", Some(arg)) => {
                SplitRule::Bytes(parse_size(arg).map_err(|_| syntax(BYTES_FORM))?)
            }
            ("bytes", None) => return Err(syntax(BYTES_FORM)),
            ("lines", Some(arg)) => SplitRule::Lines(parse_whole(arg).ok_or(syntax(LINES_FORM))?),
            ("lines", None) => return Err(syntax(LINES_FORM)),
            ("files", None) => SplitRule::Files,
            ("files", Some(_)) => return Err(syntax(FILES_FORM)),
            ("range", Some(arg)) => parse_range(arg).ok_or(syntax(RANGE_FORM))?,
            ("range", None) => return Err(syntax(RANGE_FORM)),
            _ => return Err(syntax(ALL_FORMS)),
        };
        // Report the text as written rather than the normalised rule.
        rule.validate().map_err(|error| match error {
            SplitError::Zero { what, .. } => SplitError::Zero {
                text: text.to_owned(),
                what,
            },
            SplitError::StartAfterEnd { start, end, .. } => SplitError::StartAfterEnd {
                text: text.to_owned(),
                start,
                end,
            },
            other => other,
        })?;
        Ok(rule)
    }
}

impl fmt::Display for SplitRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SplitRule::Bytes(size) => write!(f, "bytes:{}", size_text(size)),
            SplitRule::Lines(lines) => write!(f, "lines:{lines}"),
            SplitRule::Files => f.write_str("files"),
            SplitRule::Range { start, end, step } => write!(f, "range:{start}..{end}:{step}"),
            SplitRule::Auto(AutoSplit::Bytes) => f.write_str("bytes:auto"),
            SplitRule::Auto(AutoSplit::Lines) => f.write_str("lines:auto"),
            SplitRule::Auto(AutoSplit::Range { start, end }) => {
                write!(f, "range:{start}..{end}:auto")
            }
        }
    }
}

/// The chunk inputs of one job, produced lazily by [`SplitRule::chunks`].
///
/// Yields each chunk's bytes in order. After the first error it yields nothing more. It holds at
/// most one chunk plus a read buffer in memory.
#[derive(Debug)]
pub struct Chunks {
    source: Source,
    total: Option<u64>,
    auto: Option<AutoSize>,
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
            Source::Stream { .. } | Source::Shared { .. } => (0, None),
        }
    }
}

impl FusedIterator for Chunks {}

/// Where a [`Chunks`] iterator takes its chunks from.
#[derive(Debug)]
enum Source {
    /// `bytes` and `lines`: the paths still to open, the file being read, and the cutter.
    Stream {
        paths: std::vec::IntoIter<PathBuf>,
        reader: Option<(PathBuf, BufReader<File>)>,
        splitter: Splitter,
    },
    /// `bytes` over shared input: the files still to describe, the one being described with the
    /// offset reached, and the chunk size.
    Shared {
        files: std::vec::IntoIter<(PathBuf, u64)>,
        current: Option<(PathBuf, u64, u64)>,
        size: u64,
    },
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
            Source::Range { step, .. } | Source::Shared { size: step, .. } => *step = size.get(),
            Source::Files(_) | Source::Done => {}
        }
    }

    /// A chunk's size in the rule's unit: its numbers for a range, its bytes otherwise.
    fn units(&self, chunk: &[u8]) -> u64 {
        match (self, chunk.get(..16)) {
            (Source::Range { .. }, Some(bounds)) => {
                let number = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
                number(&bounds[8..]).saturating_sub(number(&bounds[..8]))
            }
            (Source::Shared { .. }, _) => ChunkRef::decode(chunk).map_or(0, |chunk| chunk.len()),
            _ => chunk.len() as u64,
        }
    }
}

/// Describes the next `size` bytes of the concatenated files (fewer at the end), or `None` when
/// every byte is described. Empty files contribute nothing.
fn next_shared_chunk(
    files: &mut std::vec::IntoIter<(PathBuf, u64)>,
    current: &mut Option<(PathBuf, u64, u64)>,
    size: u64,
) -> Option<Result<Vec<u8>, SplitError>> {
    let mut chunk = ChunkRef { segments: Vec::new() };
    let mut missing = size;
    while missing > 0 {
        let Some((path, offset, len)) = current else {
            let Some((path, len)) = files.next() else { break };
            *current = Some((path, 0, len));
            continue;
        };
        let take = missing.min(*len - *offset);
        if take > 0 {
            chunk.segments.push(Segment { path: path.display().to_string(), offset: *offset, len: take });
        }
        *offset += take;
        missing -= take;
        if *offset == *len {
            *current = None;
        }
    }
    (!chunk.segments.is_empty()).then(|| Ok(chunk.encode()))
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

/// A sans-IO stream cutter for the `bytes` and `lines` rules: feed it the stream's bytes in
/// pieces of any size and it hands back complete chunks, the same ones whatever the pieces.
#[derive(Debug, Clone)]
pub enum Splitter {
    /// Cuts fixed-size chunks.
    Bytes(ByteSplitter),
    /// Cuts chunks of whole lines.
    Lines(LineSplitter),
}

impl Splitter {
    /// Takes bytes from the front of `data` until a chunk is complete or `data` runs out.
    /// Returns how many bytes were taken (more than zero unless `data` is empty) and the chunk
    /// completed, if any. Call again with the rest of `data`.
    pub fn feed(&mut self, data: &[u8]) -> (usize, Option<Vec<u8>>) {
        match self {
            Splitter::Bytes(splitter) => splitter.feed(data),
            Splitter::Lines(splitter) => splitter.feed(data),
        }
    }

    /// Sets the size of the next chunk in the splitter's unit (bytes, or lines for `lines`).
    /// Call it between chunks: a chunk in progress keeps the size it started with only if no
    /// bytes of it are pending.
    pub fn resize(&mut self, size: NonZeroU64) {
        match self {
            Splitter::Bytes(splitter) => splitter.size = size,
            Splitter::Lines(splitter) => splitter.lines = size,
        }
    }

    /// Takes all of `data`, appending each chunk it completes to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) {
        push_with(data, out, |data| self.feed(data));
    }

    /// Ends the stream: returns the last, partial chunk if any bytes are pending, and leaves the
    /// splitter empty, ready for a new stream.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        match self {
            Splitter::Bytes(splitter) => splitter.finish(),
            Splitter::Lines(splitter) => splitter.finish(),
        }
    }
}

impl From<ByteSplitter> for Splitter {
    fn from(splitter: ByteSplitter) -> Self {
        Splitter::Bytes(splitter)
    }
}

impl From<LineSplitter> for Splitter {
    fn from(splitter: LineSplitter) -> Self {
        Splitter::Lines(splitter)
    }
}


/// Cuts a stream into chunks of exactly `size` bytes; only the last may be shorter, and an empty
/// stream gives no chunk. Made by [`ByteSplitter::whole_lines`], it cuts whole lines instead:
/// each chunk ends at the first line end at or after `size` bytes (a line longer than `size` is
/// one chunk).
#[derive(Debug, Clone)]
pub struct ByteSplitter {
    size: NonZeroU64,
    whole_lines: bool,
    current: Vec<u8>,
}

impl ByteSplitter {
    /// A splitter for chunks of `size` bytes.
    pub fn new(size: NonZeroU64) -> Self {
        Self {
            size,
            whole_lines: false,
            current: Vec::new(),
        }
    }

    /// A splitter for chunks of whole lines, at least `size` bytes each but the last
    /// (`lines:auto`).
    pub fn whole_lines(size: NonZeroU64) -> Self {
        Self {
            whole_lines: true,
            ..Self::new(size)
        }
    }

    /// See [`Splitter::feed`].
    pub fn feed(&mut self, data: &[u8]) -> (usize, Option<Vec<u8>>) {
        if self.current.capacity() == 0 && !data.is_empty() {
            self.current.reserve(reserve_for(self.size.get()));
        }
        if self.whole_lines {
            return self.feed_lines(data);
        }
        let missing = self.size.get() - self.current.len() as u64;
        let take = usize::try_from(missing).map_or(data.len(), |missing| missing.min(data.len()));
        self.current.extend_from_slice(&data[..take]);
        if self.current.len() as u64 == self.size.get() {
            (take, Some(std::mem::take(&mut self.current)))
        } else {
            (take, None)
        }
    }

    /// The whole-lines form of [`ByteSplitter::feed`].
    fn feed_lines(&mut self, data: &[u8]) -> (usize, Option<Vec<u8>>) {
        // Bytes still needed before a line end may close the chunk; the byte that reaches the
        // size may itself be that line end.
        let short = usize::try_from(self.size.get() - 1)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.current.len());
        let skip = short.min(data.len());
        match data[skip..].iter().position(|&byte| byte == b'\n') {
            Some(index) => {
                let end = skip + index + 1;
                self.current.extend_from_slice(&data[..end]);
                (end, Some(std::mem::take(&mut self.current)))
            }
            None => {
                self.current.extend_from_slice(data);
                (data.len(), None)
            }
        }
    }

    /// See [`Splitter::push`].
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) {
        push_with(data, out, |data| self.feed(data));
    }

    /// See [`Splitter::finish`].
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        Some(std::mem::take(&mut self.current)).filter(|chunk| !chunk.is_empty())
    }
}

/// Cuts a stream into chunks of `lines` lines each, never cutting a line. Lines end with `\n`
/// (a `\r\n` ending is kept as is); a final line without a newline is still a line; an empty
/// stream gives no chunk. Only the last chunk may have fewer lines.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    lines: NonZeroU64,
    /// Newlines already in `current`, always fewer than `lines`.
    seen: u64,
    current: Vec<u8>,
    /// Length of the last chunk cut, to reserve about as much for the next one.
    last_len: usize,
}

impl LineSplitter {
    /// A splitter for chunks of `lines` lines.
    pub fn new(lines: NonZeroU64) -> Self {
        Self {
            lines,
            seen: 0,
            current: Vec::new(),
            last_len: 0,
        }
    }

    /// See [`Splitter::feed`].
    pub fn feed(&mut self, data: &[u8]) -> (usize, Option<Vec<u8>>) {
        if self.current.capacity() == 0 && !data.is_empty() {
            self.current.reserve(self.last_len.min(MAX_RESERVE));
        }
        match find_nth_newline(data, self.lines.get() - self.seen) {
            Ok(end) => {
                self.current.extend_from_slice(&data[..end]);
                self.seen = 0;
                let chunk = std::mem::take(&mut self.current);
                self.last_len = chunk.len();
                (end, Some(chunk))
            }
            Err(newlines) => {
                self.current.extend_from_slice(data);
                self.seen += newlines;
                (data.len(), None)
            }
        }
    }

    /// See [`Splitter::push`].
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) {
        push_with(data, out, |data| self.feed(data));
    }

    /// See [`Splitter::finish`].
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.seen = 0;
        Some(std::mem::take(&mut self.current)).filter(|chunk| !chunk.is_empty())
    }
}

/// Feeds all of `data` through `feed`, collecting completed chunks.
fn push_with(
    mut data: &[u8],
    out: &mut Vec<Vec<u8>>,
    mut feed: impl FnMut(&[u8]) -> (usize, Option<Vec<u8>>),
) {
    while !data.is_empty() {
        let (used, chunk) = feed(data);
        out.extend(chunk);
        data = &data[used..];
    }
}

/// Returns the index just past the `n`-th newline of `data` (`n > 0`), or, when `data` has fewer,
/// how many it has.
///
/// Newlines are counted a block at a time without early exit, which the compiler vectorises;
/// only the block holding the wanted newline is scanned byte by byte.
fn find_nth_newline(data: &[u8], n: u64) -> Result<usize, u64> {
    const BLOCK: usize = 64;
    let mut wanted = n;
    let mut offset = 0;
    for block in data.chunks(BLOCK) {
        let count = block.iter().filter(|&&byte| byte == b'\n').count() as u64;
        if count >= wanted {
            for (index, &byte) in block.iter().enumerate() {
                if byte == b'\n' {
                    wanted -= 1;
                    if wanted == 0 {
                        return Ok(offset + index + 1);
                    }
                }
            }
        }
        wanted -= count;
        offset += block.len();
    }
    Err(n - wanted)
}

/// Lists the `files` rule's chunks: explicit paths as given, directories expanded.
fn list_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, SplitError> {
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

/// Parses `START..END:STEP` and `START..END:auto`.
fn parse_range(arg: &str) -> Option<SplitRule> {
    let (start, rest) = arg.split_once("..")?;
    let (end, step) = rest.split_once(':')?;
    let (start, end) = (parse_whole(start)?, parse_whole(end)?);
    if step.trim().eq_ignore_ascii_case("auto") {
        return Some(SplitRule::Auto(AutoSplit::Range { start, end }));
    }
    Some(SplitRule::Range {
        start,
        end,
        step: parse_whole(step)?,
    })
}

/// Parses a plain whole number (digits only, surrounding spaces allowed).
fn parse_whole(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Formats a size with the largest binary unit that divides it exactly, so `Display` output
/// reads like what users write and parses back to the same number.
fn size_text(size: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if size != 0 && size.trailing_zeros() >= shift {
            return format!("{}{unit}", size >> shift);
        }
    }
    size.to_string()
}

/// How much to reserve for a chunk of `size` bytes.
fn reserve_for(size: u64) -> usize {
    usize::try_from(size).map_or(MAX_RESERVE, |size| size.min(MAX_RESERVE))
}

fn io_error(path: &Path, error: io::Error) -> SplitError {
    SplitError::Io {
        path: path.to_owned(),
        error,
    }
}

#[cfg(test)]
mod tests;
