//! `dispy_combine` in both executors: the examples that reduce (examples/sum.wat and
//! examples/c/histogram.c, native and wasm32) against Rust references, an order-sensitive combine
//! (tests/fixtures/concat_combine.wat) against its input, the Rust SDK's word count (a combine
//! that must join words cut between chunks), a trapping combine, and the ABI checks.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use wire::proto::FailureKind;

use super::fixtures::{build_sdk_reduce_example, Fixtures, Target};
use super::{CancelFlag, ExecError, Executor, Limits, Payload};

const SUM: &str = include_str!("../../../examples/sum.wat");
const CHECKSUM: &str = include_str!("../../../examples/checksum.wat");
const CONCAT: &str = include_str!("../../../tests/fixtures/concat_combine.wat");

fn executor() -> &'static Executor {
    static EXECUTOR: OnceLock<Executor> = OnceLock::new();
    EXECUTOR.get_or_init(|| Executor::new().expect("the executor starts"))
}

fn limits() -> Limits {
    Limits { memory: 64 << 20, chunk_timeout: Duration::from_secs(30) }
}

#[track_caller]
fn load(bytes: &[u8], path: &Path) -> Result<Payload, ExecError> {
    let kind = wire::abi::detect_kind(bytes).expect("a known payload kind");
    executor().load(&kind, bytes, path)
}

#[track_caller]
fn wat(text: &str) -> Payload {
    load(text.as_bytes(), Path::new("inline.wat")).unwrap_or_else(|e| panic!("compile failed: {e}"))
}

/// Deterministic bytes (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// `data` cut into chunks of `size` bytes.
fn chunks(data: &[u8], size: usize) -> Vec<Vec<u8>> {
    data.chunks(size).map(<[u8]>::to_vec).collect()
}

/// Reduces `inputs` serially and compares with `expect`; also checks a tree-shaped reduction
/// (right-leaning) gives the same bytes, as associativity promises.
#[track_caller]
fn check_reduce(payload: &Payload, inputs: &[Vec<u8>], expect: &[u8]) {
    let serial = executor().reduce_serial(payload, b"", inputs.iter().cloned()).expect("the reduce succeeds");
    assert_eq!(serial, expect, "serial reduce of {} chunks", inputs.len());
    let mut worker = executor().worker(payload, b"", limits(), CancelFlag::default()).expect("worker");
    let results: Vec<Vec<u8>> = inputs.iter().map(|i| worker.run(i).expect("run")).collect();
    let Some((last, rest)) = results.split_last() else { return };
    let folded = rest.iter().rev().fold(last.clone(), |right, left| worker.combine(left, &right).expect("combine"));
    assert_eq!(folded, expect, "right-leaning reduce of {} chunks", inputs.len());
}

#[test]
fn sum_reduces_to_the_sum_of_every_byte() {
    let payload = wat(SUM);
    assert!(payload.has_combine());
    let data = noise(100_003, 5);
    let sum = |bytes: &[u8]| bytes.iter().map(|&b| u64::from(b)).sum::<u64>().to_le_bytes();
    check_reduce(&payload, &chunks(&data[..3_000], 1), &sum(&data[..3_000]));
    for size in [7, 4_096, 100_003] {
        check_reduce(&payload, &chunks(&data, size), &sum(&data));
    }
    // No chunks: an empty output.
    assert_eq!(executor().reduce_serial(&payload, b"", Vec::<Vec<u8>>::new()).expect("empty"), b"");
}

#[test]
fn concatenation_keeps_the_order_of_the_chunks() {
    let payload = wat(CONCAT);
    let data = noise(10_000, 9);
    for size in [1, 3, 100, 9_999] {
        check_reduce(&payload, &chunks(&data, size), &data);
    }
}

#[test]
fn a_trapping_combine_fails_like_a_chunk_and_the_worker_is_not_reused() {
    let payload = wat(CONCAT);
    let mut worker = executor().worker(&payload, b"", limits(), CancelFlag::default()).expect("worker");
    assert_eq!(worker.combine(b"ab", b"cd").expect("combine"), b"abcd");
    let failure = worker.combine(b"TRAP!", b"y").expect_err("the combine traps");
    assert_eq!(failure.kind, FailureKind::Trap, "{failure:?}");
    let again = worker.combine(b"a", b"b").expect_err("a failed worker is not reused");
    assert_eq!(again.kind, FailureKind::Node);
}

#[test]
fn combine_is_optional_and_checked_when_present() {
    let payload = wat(CHECKSUM);
    assert!(!payload.has_combine(), "checksum.wat has no dispy_combine");
    let mut worker = executor().worker(&payload, b"", limits(), CancelFlag::default()).expect("worker");
    let failure = worker.combine(b"a", b"b").expect_err("no dispy_combine");
    assert_eq!(failure.kind, FailureKind::Setup);
    assert!(failure.message.contains("dispy_combine"), "{failure:?}");
    let wrong = CHECKSUM.replacen(
        "(func (export \"dispy_abi_version\")",
        "(func (export \"dispy_combine\") (param i32) (result i32) (i32.const 0))\n  (func (export \"dispy_abi_version\")",
        1,
    );
    let error = load(wrong.as_bytes(), Path::new("inline.wat")).expect_err("a dispy_combine of the wrong type");
    assert!(error.to_string().contains("dispy_combine"), "{error}");
}

/// examples/c/histogram.c: 256 little-endian u64 counts.
fn histogram(data: &[u8]) -> Vec<u8> {
    let mut counts = [0u64; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    counts.iter().flat_map(|c| c.to_le_bytes()).collect()
}

#[test]
fn the_c_histogram_reduces_natively_and_as_wasm() {
    let fixtures = Fixtures::new("the_c_histogram_reduces_natively_and_as_wasm", &[Target::Native, Target::Wasm32]);
    let data = noise(50_000, 11);
    for target in [Target::Native, Target::Wasm32] {
        let Some(path) = fixtures.build("histogram.c", target) else { continue };
        let bytes = std::fs::read(&path).expect("the fixture is readable");
        let payload = load(&bytes, &path).unwrap_or_else(|e| panic!("{target:?}: {e}"));
        assert!(payload.has_combine(), "{target:?}");
        for size in [1_000, 4_096, 50_000] {
            check_reduce(&payload, &chunks(&data, size), &histogram(&data));
        }
        // Two results that are not histograms: the payload's own error code.
        let mut worker = executor().worker(&payload, b"", limits(), CancelFlag::default()).expect("worker");
        let failure = worker.combine(b"short", b"short").expect_err("not histograms");
        assert_eq!(failure.kind, FailureKind::PayloadError(1), "{target:?}: {failure:?}");
    }
}

#[test]
fn the_sdk_word_count_joins_words_cut_between_chunks() {
    let path = build_sdk_reduce_example();
    let bytes = std::fs::read(&path).expect("the example is readable");
    let payload = load(&bytes, &path).unwrap_or_else(|e| panic!("{e}"));
    assert!(payload.has_combine());
    let text: Vec<u8> = noise(20_000, 3).into_iter().map(|b| if b % 5 == 0 { b' ' } else { b'a' + b % 26 }).collect();
    let words = text.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()).count() as u64;
    for size in [1, 2, 7, 1_000, 20_000] {
        let reduced = executor().reduce_serial(&payload, b"", chunks(&text, size)).expect("the reduce succeeds");
        assert_eq!(reduced[..8], words.to_le_bytes(), "chunks of {size} bytes");
    }
}
