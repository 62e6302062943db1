//! Shared input on the node: a chunk arrives as a [`ChunkRef`] naming bytes on storage every node
//! mounts, and the slot reads them itself.
//!
//! A node reads only below the directories its operator listed (`shared_input_roots`), after
//! resolving `..` and symbolic links, so a submitter cannot make it read anything else. Each
//! segment carries the [`Fingerprint`] the submitter saw, and a file that no longer matches it
//! (rewritten since, or another host's file at the same path) is refused, never read.
//!
//! Submitters use this module too: [`fingerprint`] when they cut chunks, and [`host_id`] to tell
//! nodes on their own host from nodes that see the path on shared storage.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use wire::chunk::{ChunkRef, Fingerprint, FINGERPRINT_EDGE};

/// Where the host identity comes from: the kernel's random identity of the current boot. Unlike
/// `/etc/machine-id` it is not copied along with a cloned disk image or a container image, so two
/// machines never share it; processes of one kernel (containers included) do.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

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
        // Checked on the open file, so a change after the assignment's check is caught too.
        if let Some(expected) = &segment.fingerprint {
            check_fingerprint(&path, fingerprint_of(&file), expected)?;
        }
        let end = at + segment.len as usize;
        file.read_exact_at(&mut bytes[at..end], segment.offset).map_err(|e| {
            format!("cannot read {} bytes at {} of shared input {}: {e}", segment.len, segment.offset, path.display())
        })?;
        at = end;
    }
    Ok(bytes)
}

/// Why this node will not read `chunk`'s files, if it will not: one lies outside `roots` (as
/// [`resolve_roots`] gives them) or no longer matches the fingerprint it was cut with. The node
/// then rejects the job, so the dispatcher places its chunks on nodes that can read them. Object
/// segments are left to `object_input`.
pub fn refusal(chunk: &ChunkRef, roots: &[PathBuf]) -> Option<String> {
    let mut checked: Vec<&str> = Vec::new();
    for segment in &chunk.segments {
        if wire::chunk::is_object_url(&segment.path) || checked.contains(&segment.path.as_str()) {
            continue;
        }
        checked.push(&segment.path);
        let path = match allowed(Path::new(&segment.path), roots) {
            Ok(path) => path,
            Err(refused) => return Some(refused),
        };
        if let Some(expected) = &segment.fingerprint {
            if let Err(mismatch) = check_fingerprint(&path, fingerprint(&path), expected) {
                return Some(mismatch);
            }
        }
    }
    None
}

/// The fingerprint of the file at `path`, as a submitter records it and a node checks it.
///
/// # Errors
/// When the file cannot be opened or read.
pub fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    fingerprint_of(&File::open(path)?)
}

/// This host's identity: a hash of the kernel's boot id (see [`BOOT_ID`] for why not the machine
/// id), the same for a node and a submitter on one machine; empty when it cannot be read.
pub fn host_id() -> String {
    match std::fs::read_to_string(BOOT_ID) {
        Ok(boot) => blake3::hash(boot.trim().as_bytes()).to_hex()[..16].to_owned(),
        Err(_) => String::new(),
    }
}

fn fingerprint_of(file: &File) -> std::io::Result<Fingerprint> {
    let meta = file.metadata()?;
    let len = meta.len();
    let modified_ns = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX));
    let edge = len.min(FINGERPRINT_EDGE);
    // Both ends, the same bytes twice for a small file: cheap, and unambiguous.
    let mut edges = vec![0; 2 * edge as usize];
    let (head, tail) = edges.split_at_mut(edge as usize);
    file.read_exact_at(head, 0)?;
    file.read_exact_at(tail, len - edge)?;
    let hash = blake3::hash(&edges);
    let mut first = [0; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    Ok(Fingerprint { len, modified_ns, edges: u64::from_le_bytes(first) })
}

/// Compares what a node found at `path` with what the submitter saw.
fn check_fingerprint(path: &Path, found: std::io::Result<Fingerprint>, expected: &Fingerprint) -> Result<(), String> {
    let found = found.map_err(|e| format!("cannot fingerprint shared input {}: {e}", path.display()))?;
    if found == *expected {
        return Ok(());
    }
    Err(format!(
        "shared input {} is not the file the job was submitted with (changed since, or another file at \
         that path on this host): submitted {expected}, found {found}; resubmit, or ship the input with --ship-input",
        path.display()
    ))
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
        let segment = |path: &Path, offset, len| Segment { path: path.display().to_string(), offset, len, fingerprint: None };
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
        assert_eq!(refusal(&chunk, &roots), None);
        let refused = refusal(&escape, &roots).expect("outside the roots");
        assert!(refused.ends_with("is outside this node's shared_input_roots"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_the_submitted_one_is_refused_and_not_read() {
        let dir = std::env::temp_dir().join(format!("dispy-fingerprint-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("input");
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &big).expect("file");
        let roots = resolve_roots(std::slice::from_ref(&dir));
        let submitted = fingerprint(&path).expect("fingerprint");
        assert_eq!(submitted.len, 20_000);
        assert_eq!(fingerprint(&path).expect("again"), submitted, "a fingerprint is stable");
        let segment = Segment { path: path.display().to_string(), offset: 10, len: 5, fingerprint: Some(submitted) };
        let chunk = ChunkRef { segments: vec![segment], align: None };
        assert_eq!(refusal(&chunk, &roots), None);
        assert_eq!(read(&chunk, &roots, 100), Ok(big[10..15].to_vec()));

        // One byte different near the end, with the size and time as they were: the edges tell.
        let mut changed = big.clone();
        changed[19_990] ^= 1;
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).expect("mtime");
        std::fs::write(&path, &changed).expect("rewrite");
        File::options().write(true).open(&path).and_then(|f| f.set_modified(modified)).expect("set mtime");
        let refused = refusal(&chunk, &roots).expect("the edges differ");
        assert!(refused.contains("is not the file the job was submitted with"), "{refused}");
        assert!(read(&chunk, &roots, 100).expect_err("not read").contains("is not the file the job was submitted"));

        // The same bytes rewritten later: the time tells.
        std::fs::write(&path, &big).expect("rewrite");
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(modified + std::time::Duration::from_secs(1)))
            .expect("set mtime");
        assert!(refusal(&chunk, &roots).is_some(), "a newer modification time");
        // A small file hashes its bytes whole.
        std::fs::write(&path, b"tiny").expect("rewrite");
        assert_eq!(fingerprint(&path).expect("small").len, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_host_id_is_stable_and_opaque() {
        let id = host_id();
        assert_eq!(id, host_id());
        if std::path::Path::new(BOOT_ID).exists() {
            assert_eq!(id.len(), 16, "{id}");
            assert!(!std::fs::read_to_string(BOOT_ID).expect("boot id").contains(&id));
        }
    }
}
