//! Tests for `range` chunks: the decoded bounds of each chunk, hints, the byte layout, and a
//! property that the chunks cover the range exactly.

use proptest::prelude::*;

use crate::split::SplitRule;

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

proptest! {
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
