//! Shared-input chunks: for input every node can read at the same path, a chunk is an encoded
//! [`ChunkRef`] naming a run of bytes across the concatenated files, cut without reading them.

use std::path::PathBuf;

use wire::chunk::{ChunkRef, Fingerprint, Segment};

use super::error::SplitError;

/// One input a shared-input job's chunks are cut from.
#[derive(Debug)]
pub(super) struct SharedFile {
    /// The canonical path, or an object's URL.
    pub(super) path: PathBuf,
    /// Its size in bytes.
    pub(super) len: u64,
    /// What the submitter saw of a file (`None` for an object), for nodes to check.
    pub(super) fingerprint: Option<Fingerprint>,
}

/// Describes the next `size` bytes of the concatenated files (fewer at the end), or `None` when
/// every byte is described. Empty files contribute nothing. `current` is the file being
/// described and the offset reached in it.
pub(super) fn next_shared_chunk(
    files: &mut std::vec::IntoIter<SharedFile>,
    current: &mut Option<(SharedFile, u64)>,
    size: u64,
) -> Option<Result<Vec<u8>, SplitError>> {
    let mut chunk = ChunkRef { segments: Vec::new(), align: None };
    let mut missing = size;
    while missing > 0 {
        let Some((file, offset)) = current else {
            let Some(file) = files.next() else { break };
            *current = Some((file, 0));
            continue;
        };
        let take = missing.min(file.len - *offset);
        if take > 0 {
            let path = file.path.display().to_string();
            chunk.segments.push(Segment { path, offset: *offset, len: take, fingerprint: file.fingerprint });
        }
        *offset += take;
        missing -= take;
        if *offset == file.len {
            *current = None;
        }
    }
    (!chunk.segments.is_empty()).then(|| Ok(chunk.encode()))
}
