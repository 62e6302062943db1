//! Shared input: for input on storage every node mounts at the same path, a chunk travels as a
//! [`ChunkRef`] (where its bytes lie: path, offset, length) instead of as the bytes, and the node
//! running it reads them itself. The bytes then never cross the network twice (submitter to
//! dispatcher to node), as data-local engines arrange.
//!
//! Object inputs travel the same way: a segment whose path is a URL (`s3://BUCKET/KEY`,
//! `https://…`, see [`is_object_url`]) names a byte range of an object, which the node reads with
//! a ranged GET. A chunk of a `lines:auto` object input carries [`LineAlign`]: its range is only
//! approximate, and the node moves both ends to line boundaries (Hadoop's rule) so that
//! consecutive ranges hand out every line exactly once.

use serde::{Deserialize, Serialize};

/// Whether `path` names an object (`s3://`, `https://` or `http://`) rather than a file.
pub fn is_object_url(path: &str) -> bool {
    ["s3://", "https://", "http://"].iter().any(|scheme| path.starts_with(scheme))
}

/// Where one piece of a chunk's bytes lies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Absolute, canonical path of the file, or the URL of an object.
    pub path: String,
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
    /// What the submitter saw of the file when it cut the chunk, so a node reading a different
    /// file at the same path (another host's, or the file rewritten since) refuses instead of
    /// returning wrong output. `None` for objects, and from submitters that predate it.
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
}

/// A cheap identity of a file's contents: its size, its modification time, and a hash of its
/// first and last 4 KiB ([`FINGERPRINT_EDGE`]). Equal fingerprints do not prove equal bytes, but
/// a file rewritten since (a new modification time) or another file at the same path (other
/// size, time or edges) is told apart without reading it whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The file's size in bytes.
    pub len: u64,
    /// Its modification time, nanoseconds since the Unix epoch.
    pub modified_ns: u64,
    /// The first 8 bytes of the BLAKE3 hash of its first and last [`FINGERPRINT_EDGE`] bytes.
    pub edges: u64,
}

/// How many bytes at each end of a file [`Fingerprint::edges`] hashes.
pub const FINGERPRINT_EDGE: u64 = 4096;

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, modified at {} ns, edges {:016x}", self.len, self.modified_ns, self.edges)
    }
}

/// A chunk of shared input: the concatenation of its segments (more than one when a chunk
/// spans the end of one input file and the start of the next).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The pieces, in order.
    pub segments: Vec<Segment>,
    /// Set for a `lines:auto` chunk of an object input (then it has one segment): the range
    /// is moved to whole lines on the node. `None` for exact ranges.
    #[serde(default)]
    pub align: Option<LineAlign>,
}

/// How the node turns a `lines:auto` chunk's range `[offset, offset + len)` into whole lines:
/// the chunk starts just after the first newline at or after byte `offset - 1` (at 0 for the
/// first range) and ends just after the first newline at or after byte `offset + len - 1` (at
/// the object's end if there is none). Consecutive ranges so hand out each line exactly once (a
/// line belongs to the range holding the byte just before it), as Hadoop's `LineRecordReader`
/// does; a range inside one long line gives an empty chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineAlign {
    /// The object's size, so the node knows where the last line ends without asking.
    pub object_len: u64,
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
                Segment { path: "/data/a".into(), offset: 7, len: 3, fingerprint: None },
                Segment {
                    path: "/data/b".into(),
                    offset: 0,
                    len: 2,
                    fingerprint: Some(Fingerprint { len: 2, modified_ns: 5, edges: 9 }),
                },
            ],
            align: None,
        };
        assert_eq!(ChunkRef::decode(&chunk.encode()), Ok(chunk.clone()));
        assert_eq!(chunk.len(), 5);
        assert!(ChunkRef::decode(b"\xc1").is_err());
        let aligned = ChunkRef { align: Some(LineAlign { object_len: 9 }), ..chunk };
        assert_eq!(ChunkRef::decode(&aligned.encode()), Ok(aligned));
    }

    #[test]
    fn object_urls_are_told_from_paths() {
        assert!(is_object_url("s3://bucket/key"));
        assert!(is_object_url("https://example.org/data.txt"));
        assert!(is_object_url("http://127.0.0.1:9000/b/k"));
        assert!(!is_object_url("/data/s3://x"));
        assert!(!is_object_url("s3:/bucket"));
    }
}
