//! Tests for the sans-IO splitters: `bytes` and `lines` cutting fed whole, byte by byte, in random
//! pieces and through a file, with properties that the pieces never change the chunks.

use std::num::NonZeroU64;

use proptest::prelude::*;

use super::TempDir;
use crate::split::{AutoSplit, ByteSplitter, LineSplitter, SplitRule, Splitter};

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
}
