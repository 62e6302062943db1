//! Tests for the text form of split rules: parsing, printing back, the syntax errors, and
//! validating rules built directly.

use crate::split::{AutoSplit, SplitRule};

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
