//! Object-input chunks: for `s3://` and `https://` inputs a chunk is an encoded [`ChunkRef`]
//! naming byte ranges of objects, which the nodes read themselves with ranged GETs, so nothing
//! of the input passes through the dispatcher. `bytes` cuts ranges from the objects' sizes (a
//! HEAD each); `lines:N` streams the objects once, holding one piece at a time, to find every
//! N-th line end; `lines:auto` cuts approximate ranges the nodes move to whole lines
//! ([`LineAlign`]); `files` lists a prefix and makes each object one chunk.

use std::sync::Arc;

use node::object_input::{ObjectStores, ObjectStream, ObjectUrl};
use wire::chunk::{ChunkRef, LineAlign, Segment};

use super::error::SplitError;
use super::splitter::find_nth_newline;

/// `lines:N` over objects read as one concatenated stream (as `cat` would join them).
#[derive(Debug)]
pub(super) struct ObjectLines {
    stores: Arc<ObjectStores>,
    objects: Vec<(ObjectUrl, u64)>,
    lines: u64,
    /// Where the chunk being scanned starts: object index and offset.
    start: (usize, u64),
    /// Where the scan has reached.
    at: (usize, u64),
    /// The object being read, and the unscanned rest of its current piece.
    reading: Option<(ObjectStream, bytes::Bytes)>,
    /// Newlines in the chunk being scanned, fewer than `lines`.
    seen: u64,
}

impl ObjectLines {
    pub(super) fn new(stores: Arc<ObjectStores>, objects: Vec<(ObjectUrl, u64)>, lines: u64) -> Self {
        Self { stores, objects, lines, start: (0, 0), at: (0, 0), reading: None, seen: 0 }
    }

    /// The next chunk of `lines` lines (the last may have fewer), or `None` at the end.
    pub(super) fn next_chunk(&mut self) -> Option<Result<Vec<u8>, SplitError>> {
        loop {
            let Some((stream, piece)) = &mut self.reading else {
                let Some((url, _)) = self.objects.get(self.at.0) else {
                    // The end: what is left is the last chunk, once.
                    let chunk = self.cut(self.at);
                    self.start = self.at;
                    return (!chunk.is_empty()).then(|| Ok(chunk.encode()));
                };
                match self.stores.stream(url) {
                    Ok(stream) => self.reading = Some((stream, bytes::Bytes::new())),
                    Err(e) => return Some(Err(e.into())),
                }
                continue;
            };
            if piece.is_empty() {
                match stream.next() {
                    Some(Ok(next)) => *piece = next,
                    Some(Err(e)) => return Some(Err(e.into())),
                    None => {
                        self.reading = None;
                        self.at = (self.at.0 + 1, 0);
                    }
                }
                continue;
            }
            match find_nth_newline(piece, self.lines - self.seen) {
                Ok(end) => {
                    let _ = piece.split_to(end);
                    self.at.1 += end as u64;
                    self.seen = 0;
                    let chunk = self.cut(self.at);
                    self.start = self.at;
                    return Some(Ok(chunk.encode()));
                }
                Err(newlines) => {
                    self.seen += newlines;
                    self.at.1 += piece.len() as u64;
                    piece.clear();
                }
            }
        }
    }

    /// The reference from `self.start` to `end` across objects.
    fn cut(&self, end: (usize, u64)) -> ChunkRef {
        let mut segments = Vec::new();
        for (index, (url, len)) in self.objects.iter().enumerate().take(end.0 + 1).skip(self.start.0) {
            let from = if index == self.start.0 { self.start.1 } else { 0 };
            let to = if index == end.0 { end.1 } else { *len };
            if to > from {
                segments.push(Segment { path: url.to_string(), offset: from, len: to - from, fingerprint: None });
            }
        }
        ChunkRef { segments, align: None }
    }
}

/// The next `lines:auto` range of one object, of `size` bytes from `next`, marked for the node
/// to move to whole lines.
pub(super) fn next_aligned_chunk(url: &ObjectUrl, object_len: u64, next: &mut u64, size: u64) -> Option<Vec<u8>> {
    if *next >= object_len {
        return None;
    }
    let len = size.max(1).min(object_len - *next);
    let segment = Segment { path: url.to_string(), offset: *next, len, fingerprint: None };
    *next += len;
    Some(ChunkRef { segments: vec![segment], align: Some(LineAlign { object_len }) }.encode())
}

/// One object as one chunk (`files`).
pub(super) fn whole_object(url: &ObjectUrl, len: u64) -> Vec<u8> {
    ChunkRef { segments: vec![Segment { path: url.to_string(), offset: 0, len, fingerprint: None }], align: None }.encode()
}
