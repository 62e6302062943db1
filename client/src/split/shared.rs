//! Shared-input chunks: for input every node can read at the same path, a chunk is an encoded
//! [`ChunkRef`] naming a run of bytes across the concatenated files, cut without reading them.

use std::path::PathBuf;

use wire::chunk::{ChunkRef, Segment};

use super::error::SplitError;

/// Describes the next `size` bytes of the concatenated files (fewer at the end), or `None` when
/// every byte is described. Empty files contribute nothing.
pub(super) fn next_shared_chunk(
    files: &mut std::vec::IntoIter<(PathBuf, u64)>,
    current: &mut Option<(PathBuf, u64, u64)>,
    size: u64,
) -> Option<Result<Vec<u8>, SplitError>> {
    let mut chunk = ChunkRef { segments: Vec::new(), align: None };
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
