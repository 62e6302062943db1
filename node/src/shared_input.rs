//! Shared input on the node: a chunk arrives as a [`ChunkRef`] naming bytes on storage every node
//! mounts, and the slot reads them itself.
//!
//! A node reads only below the directories its operator listed (`shared_input_roots`), after
//! resolving `..` and symbolic links, so a submitter cannot make it read anything else.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use wire::chunk::ChunkRef;

/// Reads `chunk`'s bytes, refusing any file that is not below one of `roots` (resolved
/// by [`resolve_roots`]) and any chunk larger than `max` bytes.
///
/// # Errors
/// Text for the user naming the file and why.
pub fn read(chunk: &ChunkRef, roots: &[PathBuf], max: u64) -> Result<Vec<u8>, String> {
    let total = chunk.len();
    if total > max {
        return Err(format!("shared-input chunk of {total} bytes exceeds the {max}-byte limit"));
    }
    let mut bytes = vec![0; usize::try_from(total).map_err(|_| "chunk too large".to_owned())?];
    let mut at = 0;
    for segment in &chunk.segments {
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
    use wire::chunk::Segment;

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

        let chunk = ChunkRef { segments: vec![segment(&inside.join("a"), 7, 3), segment(&inside.join("b"), 0, 2)], align: None };
        let chunk = ChunkRef::decode(&chunk.encode()).expect("round trip");
        assert_eq!(read(&chunk, &roots, 100), Ok(b"789ab".to_vec()));
        assert_eq!(read(&chunk, &roots, 4), Err("shared-input chunk of 5 bytes exceeds the 4-byte limit".into()));

        let escape = ChunkRef { segments: vec![segment(&inside.join("../outside/secret"), 0, 6)], align: None };
        let refused = read(&escape, &roots, 100).expect_err("outside the roots");
        assert!(refused.ends_with("is outside this node's shared_input_roots"), "{refused}");
        let none = read(&escape, &[], 100).expect_err("no roots");
        assert!(none.contains("serves no shared input"), "{none}");
        let short = ChunkRef { segments: vec![segment(&inside.join("b"), 4, 10)], align: None };
        assert!(read(&short, &roots, 100).expect_err("past the end").starts_with("cannot read 10 bytes at 4"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
