//! Tests of attempt-log capture on every path: the optional `dispy.log` import, a WASI filter's
//! stderr, and a native payload's stdout and stderr; each bounded with its truncation marker, and
//! kept for a failing (trapping, crashing) attempt.

use std::time::Duration;

use wire::observe::ATTEMPT_LOG_MAX;
use wire::proto::{FailureKind, PayloadKind};

use crate::exec::fixtures::{Fixtures, Target};
use crate::exec::{CancelFlag, Executor, Limits, Worker};

const LOGGER: &str = include_str!("../../../tests/fixtures/logger.wat");
const UPPER: &str = include_str!("../../../examples/upper.wat");

fn limits() -> Limits {
    Limits { memory: 256 << 20, chunk_timeout: Duration::from_secs(30) }
}

#[track_caller]
fn worker_for(executor: &Executor, kind: &PayloadKind, bytes: &[u8], path: &std::path::Path) -> Worker {
    let payload = executor.load(kind, bytes, path).expect("the payload loads");
    executor.worker(&payload, b"", limits(), CancelFlag::default()).expect("the worker starts")
}

fn wasm_worker(wat: &str) -> Worker {
    let executor = Executor::new().expect("the executor starts");
    worker_for(&executor, &PayloadKind::Wasm, wat.as_bytes(), std::path::Path::new("/nonexistent"))
}

fn text(log: &[u8]) -> String {
    String::from_utf8_lossy(log).into_owned()
}

#[test]
fn dispy_log_lines_are_the_attempt_log_and_each_chunk_has_its_own() {
    let mut worker = wasm_worker(LOGGER);
    assert_eq!(worker.run(b"alpha").expect("runs"), b"alpha");
    assert_eq!(text(&worker.take_log()), "starting\nalpha\n");
    assert_eq!(worker.run(b"beta\n").expect("runs"), b"beta\n");
    assert_eq!(text(&worker.take_log()), "starting\nbeta\n", "a line keeps its own newline");
}

#[test]
fn a_module_without_the_import_keeps_working_and_logs_nothing() {
    let mut worker = wasm_worker(UPPER);
    assert_eq!(worker.run(b"abc").expect("runs"), b"ABC");
    assert!(worker.take_log().is_empty());
}

#[test]
fn a_trapping_attempt_keeps_what_it_logged() {
    let mut worker = wasm_worker(LOGGER);
    let failure = worker.run(b"!boom").expect_err("traps");
    assert_eq!(failure.kind, FailureKind::Trap);
    assert_eq!(text(&worker.take_log()), "starting\n!boom\n");
}

#[test]
fn a_long_log_is_cut_with_a_marker() {
    let mut worker = wasm_worker(LOGGER);
    worker.run(b"*0123456789").expect("runs");
    let log = worker.take_log();
    let total = "starting\n".len() + 6_001 * "*0123456789\n".len();
    let dropped = total - ATTEMPT_LOG_MAX;
    assert!(log.starts_with(b"starting\n*0123456789\n"));
    let marker = format!("\n[dispy: log truncated, {dropped} bytes dropped]\n");
    assert_eq!(text(&log[ATTEMPT_LOG_MAX..]), marker, "the first 64 KiB, then the marker on a line of its own");
}

#[test]
fn a_bad_log_range_traps() {
    let wat = LOGGER.replace("(call $log (i32.const 0) (i32.const 8))", "(call $log (i32.const 65530) (i32.const 100))");
    let mut worker = wasm_worker(&wat);
    let failure = worker.run(b"x").expect_err("traps");
    assert_eq!(failure.kind, FailureKind::Trap);
    assert!(failure.message.contains("dispy.log(0xfffa, 100) reads outside"), "{failure:?}");
}

#[test]
fn a_log_import_of_the_wrong_type_is_refused() {
    let wat = r#"(module
        (import "dispy" "log" (func (param i32)))
        (memory (export "memory") 1)
        (func (export "dispy_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "dispy_run") (param i32 i32 i32 i32) (result i32) (i32.const 0)))"#;
    let executor = Executor::new().expect("the executor starts");
    let error = executor.load(&PayloadKind::Wasm, wat.as_bytes(), std::path::Path::new("/x")).expect_err("refused");
    assert_eq!(error.to_string(), "payload imports `dispy.log` as (i32) -> () but the dispy ABI v1 provides (i32, i32) -> ()");
}

/// A WASI filter that writes "warn: filter ran" to stderr and copies nothing to stdout; with
/// `trap`, it traps after that.
fn stderr_filter(trap: bool) -> String {
    let end = if trap { "(unreachable)" } else { "" };
    format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 64) "warn: filter ran\n")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 64))
            (i32.store (i32.const 4) (i32.const 17))
            (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 16)))
            {end}))"#
    )
}

#[test]
fn wasi_stderr_is_the_attempt_log_also_of_a_trapping_filter() {
    let mut worker = wasm_worker(&stderr_filter(false));
    assert_eq!(worker.run(b"input").expect("runs"), b"");
    assert_eq!(text(&worker.take_log()), "warn: filter ran\n");

    let mut worker = wasm_worker(&stderr_filter(true));
    let failure = worker.run(b"input").expect_err("traps");
    assert_eq!(failure.kind, FailureKind::Trap);
    assert!(failure.message.ends_with("(stderr: warn: filter ran)"), "{failure:?}");
    assert_eq!(text(&worker.take_log()), "warn: filter ran\n");
}

#[test]
fn native_stdout_and_stderr_are_the_attempt_log_also_of_a_crash() {
    let fixtures = Fixtures::new("native_stdout_and_stderr_are_the_attempt_log_also_of_a_crash", &[Target::Native]);
    let Some(path) = fixtures.build("faults/logs.c", Target::Native) else { return };
    let bytes = std::fs::read(&path).expect("the fixture is readable");
    let kind = wire::abi::detect_kind(&bytes).expect("a shared library");
    let executor = Executor::new().expect("the executor starts");
    let mut worker = worker_for(&executor, &kind, &bytes, &path);

    assert_eq!(worker.run(b"one\n").expect("runs"), b"one\n");
    let log = text(&worker.take_log());
    assert!(log.contains("stdout: one\n") && log.contains("stderr: one\n"), "{log:?}");
    assert_eq!(log.lines().count(), 2, "{log:?}");

    worker.run(b"two").expect("runs");
    let log = text(&worker.take_log());
    assert!(log.contains("stdout: two\n") && log.contains("stderr: two\n") && !log.contains("one"), "{log:?}");

    worker.run(b"*big").expect("runs");
    let log = worker.take_log();
    let tail = text(&log[ATTEMPT_LOG_MAX..]);
    assert!(tail.starts_with("\n[dispy: log truncated, ") && tail.ends_with(" bytes dropped]\n"), "{tail:?}");

    let failure = worker.run(b"!crash").expect_err("crashes");
    assert_eq!(failure.kind, FailureKind::Crash, "{failure:?}");
    let log = text(&worker.take_log());
    assert!(log.contains("stdout: !crash\n") && log.contains("stderr: !crash\n"), "{log:?}");
}

#[test]
fn the_sdks_log_lines_are_the_attempt_log() {
    let fixtures = Fixtures::new("the_sdks_log_lines_are_the_attempt_log", &[Target::Native]);
    if fixtures.build("checksum.c", Target::Native).is_none() {
        return;
    }
    let path = crate::exec::fixtures::build_sdk_example();
    let bytes = std::fs::read(&path).expect("the example is readable");
    let kind = wire::abi::detect_kind(&bytes).expect("a shared library");
    let executor = Executor::new().expect("the executor starts");
    let mut worker = worker_for(&executor, &kind, &bytes, &path);
    worker.run(b"hello").expect("runs");
    assert_eq!(text(&worker.take_log()), "hashed 5 bytes\n");
    worker.run(b"").expect("runs");
    assert_eq!(text(&worker.take_log()), "hashed 0 bytes\n");
}

#[test]
fn dispy_h_logs_through_the_import_on_wasm32_and_stderr_natively() {
    let test = "dispy_h_logs_through_the_import_on_wasm32_and_stderr_natively";
    let fixtures = Fixtures::new(test, &[Target::Native, Target::Wasm32]);
    let executor = Executor::new().expect("the executor starts");
    for target in [Target::Native, Target::Wasm32] {
        let Some(path) = fixtures.build("faults/log_lines.c", target) else { continue };
        let bytes = std::fs::read(&path).expect("the fixture is readable");
        let kind = wire::abi::detect_kind(&bytes).expect("a payload");
        let mut worker = worker_for(&executor, &kind, &bytes, &path);
        assert_eq!(worker.run(b"abc").expect("runs"), b"", "{target:?}");
        assert_eq!(text(&worker.take_log()), "got a chunk\nabc\n", "{target:?}");
    }
}
