//! Tests for the file-reading [`Chunks`] iterator: long lines and many chunks through the read
//! buffer, several files read as one stream, the `files` rule's listing, and input errors.

use std::fs;
use std::path::{Path, PathBuf};

use super::TempDir;
use crate::split::chunks::READ_BUFFER;
use crate::split::{Chunks, SplitError, SplitRule, Splitter};

#[test]
fn huge_line_longer_than_any_buffer() {
    let huge = vec![b'h'; 3 * READ_BUFFER + 17];
    let mut input = b"first\n".to_vec();
    input.extend_from_slice(&huge);
    input.extend_from_slice(b"\nsecond\nthird\n");
    let mut huge_line = huge.clone();
    huge_line.extend_from_slice(b"\n");
    let mut first_two = b"first\n".to_vec();
    first_two.extend_from_slice(&huge_line);

    let dir = TempDir::new();
    let path = dir.file("huge", &input);
    #[track_caller]
    fn check(rule: SplitRule, path: &Path, expect: &[&[u8]]) {
        let got: Vec<Vec<u8>> = rule
            .chunks(&[path.to_owned()])
            .expect("chunks")
            .map(|c| c.expect("read"))
            .collect();
        assert!(
            got == expect,
            "{rule}: chunk lengths {:?}",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
    check(
        SplitRule::Lines(2),
        &path,
        &[&first_two, b"second\nthird\n"],
    );
    check(
        SplitRule::Lines(1),
        &path,
        &[b"first\n", &huge_line, b"second\n", b"third\n"],
    );
}

#[test]
fn many_chunks_from_one_read() {
    // More chunks than fit in one read buffer, through the file iterator.
    let input: Vec<u8> = (0..600_000u32)
        .map(|i| if i % 3 == 2 { b'\n' } else { b'a' })
        .collect();
    let dir = TempDir::new();
    let path = dir.file("lines", &input);
    let chunks: Vec<Vec<u8>> = SplitRule::Lines(1)
        .chunks(&[path])
        .expect("chunks")
        .map(|c| c.expect("read"))
        .collect();
    assert_eq!(chunks.len(), 200_000);
    assert!(chunks.iter().all(|chunk| chunk == b"aa\n"));
}

#[test]
fn multi_file_concatenation() {
    let dir = TempDir::new();
    let first = dir.file("one", b"a\nb");
    let second = dir.file("two", b"c\nd\n");
    let empty = dir.file("empty", b"");
    let third = dir.file("three", b"e\n");
    let inputs = [first, empty, second, third];

    #[track_caller]
    fn check(rule: SplitRule, inputs: &[PathBuf], hint: Option<u64>, expect: &[&[u8]]) {
        let chunks = rule.chunks(inputs).expect("chunks");
        assert_eq!(chunks.total_hint(), hint, "{rule}");
        let got: Vec<Vec<u8>> = chunks.map(|c| c.expect("read")).collect();
        assert_eq!(got, expect, "{rule}");
    }
    // The first file has no trailing newline, so its last line joins the next file's first.
    check(SplitRule::Lines(2), &inputs, None, &[b"a\nbc\n", b"d\ne\n"]);
    check(
        SplitRule::Bytes(3),
        &inputs,
        Some(3),
        &[b"a\nb", b"c\nd", b"\ne\n"],
    );
    check(SplitRule::Bytes(100), &inputs, Some(1), &[b"a\nbc\nd\ne\n"]);
}

// ---------------------------------------------------------------------------------------------
// Files

/// Cuts `inputs` (relative to `dir`) with the files rule and compares the chunk contents.
#[track_caller]
fn check_files(dir: &TempDir, inputs: &[&str], expect: &[&str]) {
    let inputs: Vec<PathBuf> = inputs.iter().map(|input| dir.path().join(input)).collect();
    let chunks = SplitRule::Files.chunks(&inputs).expect("chunks");
    assert_eq!(chunks.total_hint(), Some(expect.len() as u64));
    let got: Vec<String> = chunks
        .map(|chunk| String::from_utf8(chunk.expect("read")).expect("utf-8 test data"))
        .collect();
    assert_eq!(got, expect);
}

#[test]
fn files_cutting() {
    let dir = TempDir::new();
    // Created out of order: the listing is sorted by path whatever the directory order.
    dir.file("tree/b.txt", b"b");
    dir.file("tree/sub/deeper/d.txt", b"d");
    dir.file("tree/a.txt", b"a");
    dir.file("tree/sub/c.txt", b"c");
    dir.file("tree/empty-file", b"");
    fs::create_dir_all(dir.path().join("tree/empty-dir")).expect("mkdir");
    fs::create_dir_all(dir.path().join("nothing")).expect("mkdir");
    dir.file("loose-2", b"loose 2");
    dir.file("loose-1", b"loose 1");

    check_files(&dir, &["tree"], &["a", "b", "", "c", "d"]);
    check_files(&dir, &["loose-2", "loose-1"], &["loose 2", "loose 1"]);
    check_files(
        &dir,
        &["loose-1", "tree/sub", "loose-2"],
        &["loose 1", "c", "d", "loose 2"],
    );
    check_files(&dir, &["nothing"], &[]);
    check_files(&dir, &["tree/empty-file"], &[""]);
}

#[cfg(unix)]
#[test]
fn files_follow_links_to_files_only() {
    let dir = TempDir::new();
    dir.file("tree/real", b"real");
    dir.file("elsewhere/target", b"target");
    std::os::unix::fs::symlink(
        dir.path().join("elsewhere/target"),
        dir.path().join("tree/link"),
    )
    .expect("symlink");
    // A link back up the tree would loop forever if followed.
    std::os::unix::fs::symlink(dir.path().join("tree"), dir.path().join("tree/loop"))
        .expect("symlink");
    std::os::unix::fs::symlink(dir.path().join("missing"), dir.path().join("tree/dangling"))
        .expect("symlink");
    check_files(&dir, &["tree"], &["target", "real"]);
}

// ---------------------------------------------------------------------------------------------
// Input errors

/// Calls [`SplitRule::chunks`] and expects an error whose message is `expect` after replacing
/// `{dir}` with the scratch directory.
#[track_caller]
fn check_input_error(rule: &str, dir: &TempDir, inputs: &[&str], expect: &str) {
    let rule: SplitRule = rule.parse().expect("valid rule");
    let inputs: Vec<PathBuf> = inputs.iter().map(|input| dir.path().join(input)).collect();
    let expect = expect.replace("{dir}", &dir.path().display().to_string());
    match rule.chunks(&inputs) {
        Ok(_) => panic!("{rule} {inputs:?}: expected error {expect:?}"),
        Err(error) => assert_eq!(error.to_string(), expect, "{rule} {inputs:?}"),
    }
}

#[test]
fn input_errors() {
    let dir = TempDir::new();
    dir.file("data/file", b"x");
    check_input_error(
        "bytes:4",
        &dir,
        &["missing"],
        "failed to read input {dir}/missing: No such file or directory",
    );
    check_input_error(
        "files",
        &dir,
        &["data", "missing"],
        "failed to read input {dir}/missing: No such file or directory",
    );
    check_input_error(
        "lines:1",
        &dir,
        &["data/file", "data"],
        "input {dir}/data is a directory, but the lines split rule reads files (use the files \
         rule for a directory)",
    );
    check_input_error(
        "bytes:1",
        &dir,
        &["data"],
        "input {dir}/data is a directory, but the bytes split rule reads files (use the files \
         rule for a directory)",
    );
    check_input_error(
        "lines:1",
        &dir,
        &[],
        "the lines:1 split rule needs an input file or directory",
    );
    check_input_error(
        "files",
        &dir,
        &[],
        "the files split rule needs an input file or directory",
    );
    check_input_error(
        "range:0..1:1",
        &dir,
        &["data/file"],
        "the range:0..1:1 split rule takes no input, but 1 input path(s) were given",
    );
    let built = SplitRule::Bytes(0).chunks(&[dir.path().join("data/file")]);
    assert!(matches!(built, Err(SplitError::Zero { .. })), "{built:?}");
}

#[test]
fn read_error_ends_iteration() {
    let dir = TempDir::new();
    let first = dir.file("first", b"1");
    let second = dir.file("second", b"2");
    let third = dir.file("third", b"3");
    let mut chunks = SplitRule::Files
        .chunks(&[first, second.clone(), third])
        .expect("chunks");
    fs::remove_file(&second).expect("remove");
    assert_eq!(chunks.next().map(|c| c.expect("read")), Some(b"1".to_vec()));
    let error = chunks
        .next()
        .expect("an item")
        .expect_err("second file is gone");
    assert_eq!(
        error.to_string(),
        format!(
            "failed to read input {}: No such file or directory",
            second.display()
        )
    );
    assert!(chunks.next().is_none(), "fused after the error");

    let gone = dir.file("gone", b"a\nb\n");
    let mut chunks = SplitRule::Lines(1)
        .chunks(std::slice::from_ref(&gone))
        .expect("chunks");
    fs::remove_file(&gone).expect("remove");
    assert!(matches!(chunks.next(), Some(Err(SplitError::Io { .. }))));
    assert!(chunks.next().is_none());
}

#[test]
fn chunks_can_move_to_another_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Chunks>();
    assert_send::<SplitError>();
    assert_send::<Splitter>();
}
