//! Tests for split rules: syntax round-trips and errors, the sans-IO splitters, and the
//! file-reading [`Chunks`] iterator for every rule, including edge cases.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A scratch directory under the system temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let name = format!(
            "dispy-test-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` (which may contain `/`) and returns its path.
    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dir");
        }
        fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax

/// Parses `text` and compares with `expect`: a rule (whose `Display` must parse back to the same
/// rule) or an error message.
#[track_caller]
fn check_rule(text: &str, expect: Result<SplitRule, &str>) {
    match (text.parse::<SplitRule>(), expect) {
        (Ok(rule), Ok(expect)) => {
            assert_eq!(rule, expect, "{text:?}");
            let shown = rule.to_string();
            let again: SplitRule = shown.parse().expect("display output parses");
            assert_eq!(again, rule, "{text:?} displayed as {shown:?}");
        }
        (Err(error), Err(expect)) => assert_eq!(error.to_string(), expect, "{text:?}"),
        (got, expect) => panic!("{text:?}: got {got:?}, expected {expect:?}"),
    }
}

#[test]
fn rule_syntax() {
    check_rule("bytes:4MiB", Ok(SplitRule::Bytes(4 << 20)));
    check_rule("bytes:65536", Ok(SplitRule::Bytes(65536)));
    check_rule("bytes:1000", Ok(SplitRule::Bytes(1000)));
    check_rule("bytes:1GB", Ok(SplitRule::Bytes(1_000_000_000)));
    check_rule("bytes:1", Ok(SplitRule::Bytes(1)));
    check_rule(" bytes: 16 KiB ", Ok(SplitRule::Bytes(16 << 10)));
    check_rule("lines:1000", Ok(SplitRule::Lines(1000)));
    check_rule("LINES:1", Ok(SplitRule::Lines(1)));
    check_rule("files", Ok(SplitRule::Files));
    check_rule(
        "range:0..1024:16",
        Ok(SplitRule::Range {
            start: 0,
            end: 1024,
            step: 16,
        }),
    );
    check_rule(
        "range:5..5:1",
        Ok(SplitRule::Range {
            start: 5,
            end: 5,
            step: 1,
        }),
    );
    check_rule("auto", Ok(SplitRule::Auto(AutoSplit::Bytes)));
    check_rule("bytes:auto", Ok(SplitRule::Auto(AutoSplit::Bytes)));
    check_rule(" Lines : AUTO ", Ok(SplitRule::Auto(AutoSplit::Lines)));
    check_rule(
        "range:0..1024:auto",
        Ok(SplitRule::Auto(AutoSplit::Range { start: 0, end: 1024 })),
    );
    check_rule(
        "range:0..18446744073709551615:18446744073709551615",
        Ok(SplitRule::Range {
            start: 0,
            end: u64::MAX,
            step: u64::MAX,
        }),
    );
}

#[test]
fn rule_display() {
    #[track_caller]
    fn check(rule: SplitRule, expect: &str) {
        assert_eq!(rule.to_string(), expect);
        check_rule(expect, Ok(rule));
    }
    check(SplitRule::Bytes(4 << 20), "bytes:4MiB");
    check(SplitRule::Bytes(3 << 30), "bytes:3GiB");
    check(SplitRule::Bytes(1 << 40), "bytes:1TiB");
    check(SplitRule::Bytes(3072), "bytes:3KiB");
    check(SplitRule::Bytes(1536), "bytes:1536");
    check(SplitRule::Bytes(65537), "bytes:65537");
    check(SplitRule::Bytes(u64::MAX), "bytes:18446744073709551615");
    check(SplitRule::Lines(7), "lines:7");
    check(SplitRule::Files, "files");
    check(SplitRule::Auto(AutoSplit::Bytes), "bytes:auto");
    check(SplitRule::Auto(AutoSplit::Lines), "lines:auto");
    check(SplitRule::Auto(AutoSplit::Range { start: 3, end: 10 }), "range:3..10:auto");
    check(
        SplitRule::Range {
            start: 3,
            end: 10,
            step: 4,
        },
        "range:3..10:4",
    );
}

#[test]
fn rule_errors() {
    let all = "expected bytes:SIZE, lines:N, files, range:START..END:STEP or auto (also \
               bytes:auto, lines:auto, range:START..END:auto)";
    check_rule(
        "chunks:4",
        Err(&format!("invalid split rule \"chunks:4\": {all}")),
    );
    check_rule("", Err(&format!("invalid split rule \"\": {all}")));
    check_rule(
        "byte:4",
        Err(&format!("invalid split rule \"byte:4\": {all}")),
    );
    check_rule(
        "bytes",
        Err("invalid split rule \"bytes\": expected bytes:SIZE with a size such as 4MiB or 65536"),
    );
    check_rule(
        "bytes:4 parsecs",
        Err(
            "invalid split rule \"bytes:4 parsecs\": expected bytes:SIZE with a size such as \
             4MiB or 65536",
        ),
    );
    check_rule(
        "bytes:-1",
        Err(
            "invalid split rule \"bytes:-1\": expected bytes:SIZE with a size such as 4MiB or \
             65536",
        ),
    );
    check_rule(
        "lines:ten",
        Err(
            "invalid split rule \"lines:ten\": expected lines:N with N a whole number, such as \
             lines:1000",
        ),
    );
    check_rule(
        "lines:+5",
        Err(
            "invalid split rule \"lines:+5\": expected lines:N with N a whole number, such as \
             lines:1000",
        ),
    );
    check_rule(
        "lines",
        Err(
            "invalid split rule \"lines\": expected lines:N with N a whole number, such as \
             lines:1000",
        ),
    );
    check_rule(
        "files:2",
        Err("invalid split rule \"files:2\": expected files, with no argument"),
    );
    let range = "expected range:START..END:STEP with whole numbers, such as range:0..1024:16";
    check_rule(
        "range",
        Err(&format!("invalid split rule \"range\": {range}")),
    );
    check_rule(
        "range:0..10",
        Err(&format!("invalid split rule \"range:0..10\": {range}")),
    );
    check_rule(
        "range:0-10:1",
        Err(&format!("invalid split rule \"range:0-10:1\": {range}")),
    );
    check_rule(
        "range:a..10:1",
        Err(&format!("invalid split rule \"range:a..10:1\": {range}")),
    );
    check_rule(
        "range:0..10:1:2",
        Err(&format!("invalid split rule \"range:0..10:1:2\": {range}")),
    );
    check_rule(
        "bytes:0",
        Err("invalid split rule \"bytes:0\": chunk size must be greater than zero"),
    );
    check_rule(
        "bytes:0MiB",
        Err("invalid split rule \"bytes:0MiB\": chunk size must be greater than zero"),
    );
    check_rule(
        "lines:0",
        Err("invalid split rule \"lines:0\": lines per chunk must be greater than zero"),
    );
    check_rule(
        "range:0..10:0",
        Err("invalid split rule \"range:0..10:0\": step must be greater than zero"),
    );
    check_rule(
        "range:10..5:1",
        Err("invalid split rule \"range:10..5:1\": start 10 is greater than end 5"),
    );
}

#[test]
fn validate_built_rules() {
    #[track_caller]
    fn check(rule: SplitRule, expect: Option<&str>) {
        assert_eq!(
            rule.validate()
                .err()
                .map(|error| error.to_string())
                .as_deref(),
            expect
        );
    }
    check(SplitRule::Bytes(1), None);
    check(SplitRule::Files, None);
    check(
        SplitRule::Bytes(0),
        Some("invalid split rule \"bytes:0\": chunk size must be greater than zero"),
    );
    check(
        SplitRule::Lines(0),
        Some("invalid split rule \"lines:0\": lines per chunk must be greater than zero"),
    );
    check(
        SplitRule::Range {
            start: 0,
            end: 1,
            step: 0,
        },
        Some("invalid split rule \"range:0..1:0\": step must be greater than zero"),
    );
    check(
        SplitRule::Range {
            start: 2,
            end: 1,
            step: 1,
        },
        Some("invalid split rule \"range:2..1:1\": start 2 is greater than end 1"),
    );
    assert!(SplitRule::Bytes(0).splitter().is_none());
    assert!(SplitRule::Lines(0).splitter().is_none());
    assert!(SplitRule::Files.splitter().is_none());
}

// ---------------------------------------------------------------------------------------------
// Splitters

/// Cuts `input` with a fresh splitter for `rule` in three ways (all at once, one byte at a time,
/// and through a file with [`SplitRule::chunks`]) and compares each with `expect`.
#[track_caller]
fn check_stream(rule: &str, input: &[u8], expect: &[&[u8]]) {
    let rule: SplitRule = rule.parse().expect("valid rule");
    let expect: Vec<Vec<u8>> = expect.iter().map(|chunk| chunk.to_vec()).collect();
    assert_eq!(cut_whole(&rule, input), expect, "{rule}: all at once");
    assert_eq!(
        cut_bytewise(&rule, input),
        expect,
        "{rule}: one byte at a time"
    );

    let dir = TempDir::new();
    let path = dir.file("input", input);
    let chunks = rule.chunks(&[path]).expect("chunks");
    if let SplitRule::Bytes(_) = rule {
        assert_eq!(
            chunks.total_hint(),
            Some(expect.len() as u64),
            "{rule}: total hint"
        );
    }
    let got: Vec<Vec<u8>> = chunks.map(|chunk| chunk.expect("chunk reads")).collect();
    assert_eq!(got, expect, "{rule}: from a file");
}

fn cut_whole(rule: &SplitRule, input: &[u8]) -> Vec<Vec<u8>> {
    let mut splitter = rule.splitter().expect("stream rule");
    let mut out = Vec::new();
    splitter.push(input, &mut out);
    out.extend(splitter.finish());
    out
}

fn cut_bytewise(rule: &SplitRule, input: &[u8]) -> Vec<Vec<u8>> {
    let mut splitter = rule.splitter().expect("stream rule");
    let mut out = Vec::new();
    for byte in input {
        splitter.push(std::slice::from_ref(byte), &mut out);
    }
    out.extend(splitter.finish());
    out
}

/// Cuts `input` pushed in the pieces given by `cuts` (sorted offsets).
fn cut_pieces(rule: &SplitRule, input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    cut_pieces_with(rule.splitter().expect("stream rule"), input, cuts)
}

/// [`cut_pieces`] with a given splitter.
fn cut_pieces_with(mut splitter: Splitter, input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(start, input.len());
        splitter.push(&input[start..cut], &mut out);
        start = cut;
    }
    out.extend(splitter.finish());
    out
}

#[test]
fn bytes_cutting() {
    check_stream("bytes:4", b"", &[]);
    check_stream("bytes:4", b"abc", &[b"abc"]);
    check_stream("bytes:4", b"abcd", &[b"abcd"]);
    check_stream("bytes:4", b"abcdefgh", &[b"abcd", b"efgh"]);
    check_stream("bytes:4", b"abcdefghi", &[b"abcd", b"efgh", b"i"]);
    check_stream("bytes:1", b"ab\n", &[b"a", b"b", b"\n"]);
    check_stream("bytes:1GiB", b"small", &[b"small"]);
    check_stream("bytes:3", b"a\nb\r\nc", &[b"a\nb", b"\r\nc"]);
}

#[test]
fn lines_cutting() {
    check_stream("lines:2", b"", &[]);
    check_stream("lines:1", b"\n", &[b"\n"]);
    check_stream("lines:2", b"a\nb\n", &[b"a\nb\n"]);
    check_stream("lines:2", b"a\nb\nc\nd\n", &[b"a\nb\n", b"c\nd\n"]);
    check_stream("lines:2", b"a\nb\nc", &[b"a\nb\n", b"c"]);
    check_stream("lines:2", b"a\nb\nc\n", &[b"a\nb\n", b"c\n"]);
    check_stream("lines:1", b"a\nb", &[b"a\n", b"b"]);
    check_stream("lines:3", b"no newline at all", &[b"no newline at all"]);
    check_stream("lines:2", b"\n\n\n\n\n", &[b"\n\n", b"\n\n", b"\n"]);
    check_stream("lines:1", b"a\r\nb\r\n", &[b"a\r\n", b"b\r\n"]);
    check_stream("lines:2", b"a\r\nb\r\nc\r", &[b"a\r\nb\r\n", b"c\r"]);
    check_stream("lines:100", b"x\ny\n", &[b"x\ny\n"]);
}

#[test]
fn lines_spanning_blocks() {
    // Newlines on both sides of the 64-byte counting blocks.
    let line = [b'x'; 63];
    let mut input = Vec::new();
    for _ in 0..10 {
        input.extend_from_slice(&line);
        input.push(b'\n');
    }
    let whole = cut_whole(&SplitRule::Lines(3), &input);
    assert_eq!(whole.len(), 4);
    assert_eq!(whole[0].len(), 3 * 64);
    assert_eq!(whole[3].len(), 64);
    assert_eq!(cut_bytewise(&SplitRule::Lines(3), &input), whole);
}

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
// Range

/// Cuts `rule` and compares each chunk's decoded `[start, end)` with `expect`.
#[track_caller]
fn check_range(rule: &str, expect: &[(u64, u64)]) {
    let rule: SplitRule = rule.parse().expect("valid rule");
    let chunks = rule.chunks(&[]).expect("chunks");
    assert_eq!(
        chunks.total_hint(),
        Some(expect.len() as u64),
        "{rule}: total hint"
    );
    assert_eq!(
        chunks.size_hint(),
        (expect.len(), Some(expect.len())),
        "{rule}: size hint"
    );
    let got: Vec<(u64, u64)> = chunks
        .map(|chunk| {
            let chunk = chunk.expect("range chunks cannot fail");
            let (start, end) = chunk.split_at(8);
            let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
            assert_eq!(end.len(), 8);
            (word(start), word(end))
        })
        .collect();
    assert_eq!(got, expect, "{rule}");
}

#[test]
fn range_cutting() {
    check_range("range:0..64:16", &[(0, 16), (16, 32), (32, 48), (48, 64)]);
    check_range("range:0..10:4", &[(0, 4), (4, 8), (8, 10)]);
    check_range("range:3..4:100", &[(3, 4)]);
    check_range("range:7..7:1", &[]);
    check_range("range:0..3:1", &[(0, 1), (1, 2), (2, 3)]);
    check_range(
        "range:18446744073709551610..18446744073709551615:4",
        &[(u64::MAX - 5, u64::MAX - 1), (u64::MAX - 1, u64::MAX)],
    );
    check_range(
        "range:1..18446744073709551615:18446744073709551615",
        &[(1, u64::MAX)],
    );
}

#[test]
fn range_chunk_bytes() {
    let chunk = SplitRule::Range {
        start: 1,
        end: 2,
        step: 1,
    }
    .chunks(&[])
    .expect("chunks")
    .next()
    .expect("one chunk")
    .expect("no error");
    assert_eq!(chunk, [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
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

// ---------------------------------------------------------------------------------------------
// Properties

fn line_heavy_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![3 => Just(b'\n'), 1 => Just(b'\r'), 6 => any::<u8>()],
        0..600,
    )
}

proptest! {
    #[test]
    fn lines_pieces_match_whole(
        input in line_heavy_bytes(),
        n in 1u64..6,
        mut cuts in proptest::collection::vec(0usize..600, 0..20),
    ) {
        cuts.sort_unstable();
        let rule = SplitRule::Lines(n);
        let whole = cut_whole(&rule, &input);
        prop_assert_eq!(&cut_pieces(&rule, &input, &cuts), &whole);
        prop_assert_eq!(&cut_bytewise(&rule, &input), &whole);
        prop_assert_eq!(whole.concat(), input);
        for (index, chunk) in whole.iter().enumerate() {
            let newlines = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            prop_assert!(!chunk.is_empty());
            if index + 1 < whole.len() {
                prop_assert_eq!(newlines, n);
                prop_assert_eq!(chunk.last(), Some(&b'\n'));
            } else {
                prop_assert!(newlines <= n);
            }
        }
    }

    #[test]
    fn sized_lines_pieces_match_whole(
        input in line_heavy_bytes(),
        size in 1u64..40,
        mut cuts in proptest::collection::vec(0usize..600, 0..20),
    ) {
        cuts.sort_unstable();
        let rule = SplitRule::Auto(AutoSplit::Lines);
        let mut splitter = rule.splitter().expect("stream rule");
        splitter.resize(NonZeroU64::new(size).expect("size > 0"));
        let whole = cut_pieces_with(splitter.clone(), &input, &[]);
        prop_assert_eq!(&cut_pieces_with(splitter, &input, &cuts), &whole);
        prop_assert_eq!(whole.concat(), input);
        for (index, chunk) in whole.iter().enumerate() {
            if index + 1 < whole.len() {
                // Whole lines, at least `size` bytes, and no earlier line end at or past `size`.
                prop_assert_eq!(chunk.last(), Some(&b'\n'));
                prop_assert!(chunk.len() as u64 >= size);
                let first_end = size as usize - 1 + chunk[size as usize - 1..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .expect("ends with a newline");
                prop_assert_eq!(first_end + 1, chunk.len());
            }
        }
    }

    #[test]
    fn bytes_pieces_match_whole(
        input in proptest::collection::vec(any::<u8>(), 0..600),
        size in 1u64..80,
        mut cuts in proptest::collection::vec(0usize..600, 0..20),
    ) {
        cuts.sort_unstable();
        let rule = SplitRule::Bytes(size);
        let whole = cut_whole(&rule, &input);
        prop_assert_eq!(&cut_pieces(&rule, &input, &cuts), &whole);
        prop_assert_eq!(&cut_bytewise(&rule, &input), &whole);
        prop_assert_eq!(whole.concat(), input.clone());
        prop_assert_eq!(whole.len() as u64, (input.len() as u64).div_ceil(size));
        for chunk in whole.iter().rev().skip(1) {
            prop_assert_eq!(chunk.len() as u64, size);
        }
    }

    #[test]
    fn range_covers_span(start in 0u64..1000, len in 0u64..1000, step in 1u64..50) {
        let rule = SplitRule::Range { start, end: start + len, step };
        let chunks = rule.chunks(&[]).expect("chunks");
        let total = chunks.total_hint();
        let mut next = start;
        let mut count = 0;
        for chunk in chunks {
            let chunk = chunk.expect("range chunks cannot fail");
            let (a, b) = chunk.split_at(8);
            let a = u64::from_le_bytes(a.try_into().expect("8 bytes"));
            let b = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            prop_assert_eq!(a, next);
            prop_assert!(b > a && b - a <= step);
            next = b;
            count += 1;
        }
        prop_assert_eq!(next, start + len);
        prop_assert_eq!(total, Some(count));
    }
}

#[test]
fn splitter_feed_reports_progress() {
    let mut splitter = LineSplitter::new(NonZeroU64::MIN);
    assert_eq!(splitter.feed(b""), (0, None));
    assert_eq!(splitter.feed(b"ab\ncd\n"), (3, Some(b"ab\n".to_vec())));
    assert_eq!(splitter.feed(b"cd"), (2, None));
    assert_eq!(splitter.finish(), Some(b"cd".to_vec()));
    assert_eq!(splitter.finish(), None);

    let mut splitter = ByteSplitter::new(NonZeroU64::new(2).expect("non-zero"));
    assert_eq!(splitter.feed(b"abc"), (2, Some(b"ab".to_vec())));
    assert_eq!(splitter.feed(b"c"), (1, None));
    assert_eq!(splitter.feed(b"de"), (1, Some(b"cd".to_vec())));
    assert_eq!(splitter.finish(), None);
}

#[test]
fn chunks_can_move_to_another_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Chunks>();
    assert_send::<SplitError>();
    assert_send::<Splitter>();
}

/// Runs an auto rule's chunks on a thread while a tuner decides from a fake run time: `nanos_per_unit`.
fn cut_auto(rule: SplitRule, inputs: &[PathBuf], slots: u64, nanos_per_unit: u64) -> (auto::Decision, Vec<Vec<u8>>) {
    let chunks = rule.chunks(inputs).expect("chunks");
    let tuner = chunks.auto().expect("an auto rule").tuner(Duration::from_millis(10), slots, u64::MAX);
    let (sent, seen) = std::sync::mpsc::channel();
    let cutter = std::thread::spawn(move || {
        for chunk in chunks {
            sent.send(chunk.expect("chunk reads")).expect("receiver alive");
        }
    });
    let mut got = Vec::new();
    let mut units = 0;
    let decision = loop {
        while let Ok(chunk) = seen.try_recv() {
            units += match rule {
                SplitRule::Auto(AutoSplit::Range { .. }) => {
                    let bound = |at: usize| u64::from_le_bytes(chunk[at..at + 8].try_into().expect("8 bytes"));
                    bound(8) - bound(0)
                }
                _ => chunk.len() as u64,
            };
            got.push(chunk);
        }
        if let Some(decision) = tuner.observe(got.len() as u64, units * nanos_per_unit) {
            break decision;
        }
        assert!(!cutter.is_finished(), "the cutter ended without waiting for a decision");
        std::thread::yield_now();
    };
    cutter.join().expect("cutter");
    got.extend(seen.try_iter());
    (decision, got)
}

#[test]
fn auto_range_sizes_steps_from_the_probe() {
    // 1,000,000 numbers at 1 us each; a 10 ms target is 10,000 numbers a chunk.
    let rule: SplitRule = "range:0..1000000:auto".parse().expect("rule");
    let (decision, chunks) = cut_auto(rule, &[], 2, 1000);
    // Two probes (the minimum) of 1000000/4096 numbers.
    assert_eq!((decision.probes, decision.probe_units), (2, 2 * 244));
    assert_eq!(decision.size, 10_000);
    let mut next = 0;
    for (index, chunk) in chunks.iter().enumerate() {
        let bound = |at: usize| u64::from_le_bytes(chunk[at..at + 8].try_into().expect("8 bytes"));
        assert_eq!(bound(0), next, "chunk {index} follows on");
        let expected = if index < 2 { 244 } else { 10_000 };
        assert_eq!(bound(8) - bound(0), expected.min(1_000_000 - next), "chunk {index}");
        next = bound(8);
    }
    assert_eq!(next, 1_000_000, "the whole range is covered");
}

#[test]
fn auto_lines_cut_whole_lines_of_the_measured_size() {
    let dir = TempDir::new();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789\n";
    let input: Vec<u8> = line.iter().copied().cycle().take(line.len() * 100_000).collect();
    let path = dir.file("lines.txt", &input);
    // 20 ns a byte: a 10 ms target is 500 kB, below the balance bound (8.2 MB / 16).
    let (decision, chunks) = cut_auto(SplitRule::Auto(AutoSplit::Lines), &[path], 2, 20);
    assert_eq!(decision.probes, 2);
    assert_eq!(decision.size, 500_000);
    assert_eq!(chunks.concat(), input, "nothing lost or repeated");
    for chunk in &chunks[..chunks.len() - 1] {
        assert_eq!(chunk.last(), Some(&b'\n'), "whole lines");
        assert!(chunk.len() % line.len() == 0);
    }
    assert!(chunks[2].len() >= 500_000 && chunks[2].len() < 500_000 + line.len());
}

#[test]
fn auto_bytes_of_a_small_input_do_not_wait_for_a_decision() {
    let dir = TempDir::new();
    let input = vec![7u8; 100_000];
    let path = dir.file("small.bin", &input);
    let chunks = SplitRule::Auto(AutoSplit::Bytes).chunks(&[path]).expect("chunks");
    let _tuner = chunks.auto().expect("auto").tuner(Duration::from_secs(1), 2, u64::MAX);
    // Two probes cover the input; the iterator ends without anyone deciding.
    let got: Vec<Vec<u8>> = chunks.map(|chunk| chunk.expect("reads")).collect();
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [65_536, 34_464]);
}

#[test]
fn shared_chunks_describe_the_same_bytes_as_chunks() {
    let dir = TempDir::new();
    let a = dir.file("a.bin", &pseudo_bytes(10));
    let empty = dir.file("empty.bin", b"");
    let b = dir.file("b.bin", &pseudo_bytes(7));
    let inputs = [a, empty, b];
    let rule = SplitRule::Bytes(4);
    let chunks = rule.shared_chunks(&inputs).expect("shared chunks");
    assert_eq!(chunks.total_hint(), Some(5));
    let refs: Vec<wire::chunk::ChunkRef> =
        chunks.map(|chunk| wire::chunk::ChunkRef::decode(&chunk.expect("describes")).expect("decodes")).collect();
    // The third chunk spans the end of a.bin and the start of b.bin.
    let spans: Vec<Vec<(u64, u64)>> =
        refs.iter().map(|chunk| chunk.segments.iter().map(|s| (s.offset, s.len)).collect()).collect();
    assert_eq!(spans, [vec![(0, 4)], vec![(4, 4)], vec![(8, 2), (0, 2)], vec![(2, 4)], vec![(6, 1)]]);
    let root = node::shared_input::resolve_roots(&[dir.path().to_owned()]);
    let read: Vec<Vec<u8>> = refs.iter().map(|chunk| node::shared_input::read(chunk, &root, 1 << 20).expect("reads")).collect();
    let direct: Vec<Vec<u8>> = rule.chunks(&inputs).expect("chunks").map(|chunk| chunk.expect("reads")).collect();
    assert_eq!(read, direct);

    let refused = SplitRule::Lines(3).shared_chunks(&inputs).expect_err("lines cannot be shared");
    assert!(refused.to_string().starts_with("shared input needs a bytes split rule"), "{refused}");
}

fn pseudo_bytes(len: u8) -> Vec<u8> {
    (0..len).map(|i| i.wrapping_mul(37) ^ 0x5a).collect()
}
