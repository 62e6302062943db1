//! Shared input: for input on storage every node mounts at the same path, a chunk travels as a
//! [`ChunkRef`] (where its bytes lie: path, offset, length) instead of as the bytes, and the node
//! running it reads them itself. The bytes then never cross the network twice (submitter to
//! dispatcher to node), as data-local engines arrange.

use serde::{Deserialize, Serialize};

/// Where one piece of a chunk's bytes lies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Absolute, canonical path of the file.
    pub path: String,
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

/// A chunk of shared input: the concatenation of its segments (more than one when a chunk
/// spans the end of one input file and the start of the next).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The pieces, in order.
    pub segments: Vec<Segment>,
}

impl ChunkRef {
    /// The chunk's size in bytes.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|segment| segment.len).sum()
    }

    /// Whether the chunk has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The form a chunk input takes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    /// Reads a chunk input sent for a shared-input job.
    ///
    /// # Errors
    /// Text for the user when the bytes are not a chunk reference.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(bytes).map_err(|e| format!("malformed shared-input chunk reference: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_reference_round_trips_and_garbage_is_refused() {
        let chunk = ChunkRef {
            segments: vec![
                Segment { path: "/data/a".into(), offset: 7, len: 3 },
                Segment { path: "/data/b".into(), offset: 0, len: 2 },
            ],
        };
        assert_eq!(ChunkRef::decode(&chunk.encode()), Ok(chunk.clone()));
        assert_eq!(chunk.len(), 5);
        assert!(ChunkRef::decode(b"\xc1").is_err());
    }
}
