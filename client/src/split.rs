//! Split rules: how a job's input is cut into chunks.
//!
//! A [`SplitRule`] is parsed from the text users write (`bytes:4MiB`, `lines:1000`, `files`,
//! `range:0..1024:16`) and turned into a lazy [`Chunks`] iterator over the chunk inputs by
//! [`SplitRule::chunks`]. Streams are cut by the sans-IO [`Splitter`] ([`ByteSplitter`],
//! [`LineSplitter`]), which the file-reading iterator drives, so the cutting logic exists once and
//! can be fed from any source. Memory stays bounded by about one chunk plus a read buffer,
//! whatever the size of the input.
//!
//! The API lives here: [`SplitRule`] and what it opens. Each concern has its own file beside it:
//! `syntax` parses and prints rules, `splitter` holds the sans-IO cutters, `chunks` the
//! [`Chunks`] iterator that reads inputs, `shared` describes shared-input chunks without reading
//! them, `error` the [`SplitError`] they all return, and [`auto`] the adaptive chunk sizes.

use std::fs;
use std::num::NonZeroU64;
use std::path::PathBuf;

pub mod auto;
mod chunks;
mod error;
mod object;
mod shared;
mod splitter;
mod syntax;

pub use auto::AutoSize;
use auto::Unit;
pub use chunks::Chunks;
use chunks::{list_files, Source};
pub use error::SplitError;
use error::io_error;
use shared::SharedFile;
pub use splitter::{ByteSplitter, LineSplitter, Splitter};

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

/// The first chunk size of `bytes:auto` and `lines:auto`.
const PROBE: NonZeroU64 = match NonZeroU64::new(auto::PROBE_BYTES) {
    Some(size) => size,
    None => panic!("the probe size is not zero"),
};

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
    /// an encoded [`ChunkRef`](wire::chunk::ChunkRef) naming the bytes, which nodes read
    /// themselves. Only `bytes` rules qualify, since their cuts need no reading.
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
            let fingerprint = node::shared_input::fingerprint(&canonical).map_err(|error| io_error(path, error))?;
            files.push(SharedFile { path: canonical, len: fingerprint.len, fingerprint: Some(fingerprint) });
        }
        let total_bytes: u64 = files.iter().map(|file| file.len).sum();
        let auto = matches!(self, SplitRule::Auto(_)).then(|| AutoSize::new(Unit::Bytes, Some(total_bytes)));
        Ok(Chunks {
            total: (auto.is_none()).then(|| total_bytes.div_ceil(size)),
            source: Source::Shared { files: files.into_iter(), current: None, size },
            auto,
        })
    }

    /// Like [`SplitRule::shared_chunks`] for object inputs (`s3://BUCKET/KEY`, `https://…`):
    /// each chunk is an encoded [`ChunkRef`](wire::chunk::ChunkRef) naming byte ranges of the
    /// objects, which nodes read with ranged GETs. `bytes` rules cut ranges from the objects'
    /// sizes, `lines:N` streams the objects once to find every N-th line end, `lines:auto` (one
    /// object) cuts ranges the nodes move to whole lines, and `files` lists `s3://BUCKET/PREFIX/`
    /// URLs and makes each object one chunk. Blocks on requests: call it off the async runtime.
    ///
    /// # Errors
    /// As [`SplitRule::chunks`]; [`SplitError::Object`] when an object cannot be listed or
    /// sized, [`SplitError::ObjectInput`] for a prefix given to a rule other than `files` or
    /// several objects given to `lines:auto`.
    pub fn object_chunks(&self, inputs: &[PathBuf], stores: std::sync::Arc<node::object_input::ObjectStores>) -> Result<Chunks, SplitError> {
        use node::object_input::ObjectUrl;
        self.validate()?;
        if !self.needs_input() {
            return Err(SplitError::UnexpectedInput { rule: self.to_string(), count: inputs.len() });
        }
        if inputs.is_empty() {
            return Err(SplitError::MissingInput { rule: self.to_string() });
        }
        let urls = inputs.iter().map(|path| ObjectUrl::parse(&path.to_string_lossy())).collect::<Result<Vec<_>, _>>()?;
        if let SplitRule::Files = self {
            let mut objects = Vec::new();
            for url in &urls {
                objects.extend(stores.list(url)?);
            }
            return Ok(Chunks { total: Some(objects.len() as u64), source: Source::ObjectFiles(objects.into_iter()), auto: None });
        }
        let mut objects = Vec::with_capacity(urls.len());
        for url in urls {
            if url.is_prefix() {
                return Err(SplitError::ObjectInput {
                    reason: format!(
                        "input {url} is a prefix, but the {} split rule reads objects (use the files rule for a prefix)",
                        self.kind()
                    ),
                });
            }
            let len = stores.size(&url)?;
            objects.push((url, len));
        }
        let total_bytes: u64 = objects.iter().map(|(_, len)| len).sum();
        let auto = matches!(self, SplitRule::Auto(_)).then(|| AutoSize::new(Unit::Bytes, Some(total_bytes)));
        let shared = |objects: Vec<(ObjectUrl, u64)>, size| Source::Shared {
            files: objects
                .into_iter()
                .map(|(url, len)| SharedFile { path: PathBuf::from(url.to_string()), len, fingerprint: None })
                .collect::<Vec<_>>()
                .into_iter(),
            current: None,
            size,
        };
        Ok(match *self {
            SplitRule::Bytes(size) => Chunks { total: Some(total_bytes.div_ceil(size)), source: shared(objects, size), auto },
            SplitRule::Auto(AutoSplit::Bytes) => Chunks { total: None, source: shared(objects, auto::PROBE_BYTES), auto },
            SplitRule::Lines(lines) => {
                Chunks { total: None, source: Source::ObjectLines(object::ObjectLines::new(stores, objects, lines)), auto }
            }
            _ => {
                let [(url, object_len)] = <[_; 1]>::try_from(objects).map_err(|objects| SplitError::ObjectInput {
                    reason: format!(
                        "lines:auto reads one object at a time ({} given): each object's lines are aligned on its own;                          use lines:N or submit one job per object",
                        objects.len()
                    ),
                })?;
                Chunks { total: None, source: Source::Aligned { url, object_len, next: 0, size: auto::PROBE_BYTES }, auto }
            }
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

#[cfg(test)]
mod tests;
