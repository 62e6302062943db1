//! The sans-IO stream cutters for the `bytes` and `lines` rules: [`Splitter`] over
//! [`ByteSplitter`] and [`LineSplitter`]. They are fed bytes in pieces of any size and hand back
//! the same chunks whatever the pieces, so the cutting logic exists once for every source.

use std::num::NonZeroU64;

/// The most a splitter reserves ahead for a chunk, so a huge rule on a small input does not
/// allocate the rule's size.
const MAX_RESERVE: usize = 64 * 1024 * 1024;

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
pub(super) fn find_nth_newline(data: &[u8], n: u64) -> Result<usize, u64> {
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

/// How much to reserve for a chunk of `size` bytes.
fn reserve_for(size: u64) -> usize {
    usize::try_from(size).map_or(MAX_RESERVE, |size| size.min(MAX_RESERVE))
}
