//! Shared input: for input on storage every node mounts at the same path, a chunk travels as a
//! [`ChunkRef`] (where its bytes lie: path, offset, length) instead of as the bytes, and the node
//! running it reads them itself. The bytes then never cross the network twice (submitter to
//! dispatcher to node), as data-local engines arrange.
//!
//! A node reads only below the directories its operator listed (`shared_input_roots`), after
//! resolving `..` and symbolic links, so a submitter cannot make it read anything else.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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

    /// Reads the chunk's bytes, refusing any file that is not below one of `roots` (resolved
    /// by [`resolve_roots`]) and any chunk larger than `max` bytes.
    ///
    /// # Errors
    /// Text for the user naming the file and why.
    pub fn read(&self, roots: &[PathBuf], max: u64) -> Result<Vec<u8>, String> {
        let total = self.len();
        if total > max {
            return Err(format!("shared-input chunk of {total} bytes exceeds the {max}-byte limit"));
        }
        let mut bytes = vec![0; usize::try_from(total).map_err(|_| "chunk too large".to_owned())?];
        let mut at = 0;
        for segment in &self.segments {
            let path = allowed(Path::new(&segment.path), roots)?;
            let file = File::open(&path).map_err(|e| format!("cannot open shared input {}: {e}", path.display()))?;
            let end = at + segment.len as usize;
            file.read_exact_at(&mut bytes[at..end], segment.offset).map_err(|e| {
                format!("cannot read {} bytes at {} of shared input {}: {e}", segment.len, segment.offset, path.display())
            })?;
            at = end;
        }
        Ok(bytes)
    }
}

/// The configured roots with `..` and symbolic links resolved, once per job rather than per
/// chunk; roots that do not exist (yet: a share not mounted) are left out.
pub fn resolve_roots(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots.iter().filter_map(|root| root.canonicalize().ok()).collect()
}

/// `path` resolved, if it lies below one of the resolved `roots`.
fn allowed(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, String> {
    if roots.is_empty() {
        return Err(
            "this node serves no shared input (its shared_input_roots setting is empty or names no existing directory)"
                .into(),
        );
    }
    let resolved = path.canonicalize().map_err(|e| format!("shared input {}: {e}", path.display()))?;
    let inside = roots.iter().any(|root| resolved.starts_with(root));
    if inside {
        Ok(resolved)
    } else {
        Err(format!("shared input {} is outside this node's shared_input_roots", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_segments_below_the_roots_only() {
        let dir = std::env::temp_dir().join(format!("dispy-shared-test-{}", std::process::id()));
        let (inside, outside) = (dir.join("inside"), dir.join("outside"));
        std::fs::create_dir_all(&inside).expect("dir");
        std::fs::create_dir_all(&outside).expect("dir");
        std::fs::write(inside.join("a"), b"0123456789").expect("file");
        std::fs::write(inside.join("b"), b"abcdef").expect("file");
        std::fs::write(outside.join("secret"), b"secret").expect("file");
        let segment = |path: &Path, offset, len| Segment { path: path.display().to_string(), offset, len };
        let roots = resolve_roots(&[inside.clone(), dir.join("not-mounted")]);
        assert_eq!(roots.len(), 1, "a missing root is left out");

        let chunk = ChunkRef { segments: vec![segment(&inside.join("a"), 7, 3), segment(&inside.join("b"), 0, 2)] };
        let chunk = ChunkRef::decode(&chunk.encode()).expect("round trip");
        assert_eq!(chunk.read(&roots, 100), Ok(b"789ab".to_vec()));
        assert_eq!(chunk.read(&roots, 4), Err("shared-input chunk of 5 bytes exceeds the 4-byte limit".into()));

        let escape = ChunkRef { segments: vec![segment(&inside.join("../outside/secret"), 0, 6)] };
        let refused = escape.read(&roots, 100).expect_err("outside the roots");
        assert!(refused.ends_with("is outside this node's shared_input_roots"), "{refused}");
        let none = escape.read(&[], 100).expect_err("no roots");
        assert!(none.contains("serves no shared input"), "{none}");
        let short = ChunkRef { segments: vec![segment(&inside.join("b"), 4, 10)] };
        assert!(short.read(&roots, 100).expect_err("past the end").starts_with("cannot read 10 bytes at 4"));
        assert!(ChunkRef::decode(b"\xc1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
