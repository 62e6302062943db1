//! Unit tests of the executors: the example payloads against independent Rust references, each
//! failure fixture against its [`FailureKind`], and the ABI checks of `compile`. No sockets.

use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use wire::proto::FailureKind;

use crate::exec::wasm::{run_serial, CancelFlag, Limits, WasmEngine, WasmPayload, WasmWorker};

const MANDELBROT: &str = include_str!("../../../examples/mandelbrot.wat");
const CHECKSUM: &str = include_str!("../../../examples/checksum.wat");
const UPPER: &str = include_str!("../../../examples/upper.wat");
const TRAP: &str = include_str!("../../../tests/fixtures/trap.wat");
const LOOP: &str = include_str!("../../../tests/fixtures/loop.wat");
const MEMORY_HOG: &str = include_str!("../../../tests/fixtures/memory_hog.wat");
const FAIL_CODE: &str = include_str!("../../../tests/fixtures/fail_code.wat");
const NO_RUN_EXPORT: &str = include_str!("../../../tests/fixtures/no_run_export.wat");

const MIB: u64 = 1 << 20;

/// One engine for all tests, as in the daemon.
fn engine() -> &'static WasmEngine {
    static ENGINE: OnceLock<WasmEngine> = OnceLock::new();
    ENGINE.get_or_init(|| WasmEngine::new().expect("the engine starts"))
}

/// Small limits, so a runaway test fails fast.
fn limits() -> Limits {
    Limits {
        memory: 2 * MIB,
        chunk_timeout: Duration::from_secs(30),
    }
}

#[track_caller]
fn compile(wat: &str) -> WasmPayload {
    match engine().compile(wat.as_bytes()) {
        Ok(payload) => payload,
        Err(e) => panic!("compile failed: {e}"),
    }
}

#[track_caller]
fn worker(wat: &str, args: &[u8], limits: Limits) -> WasmWorker {
    match WasmWorker::new(engine(), &compile(wat), args, limits, CancelFlag::default()) {
        Ok(worker) => worker,
        Err(e) => panic!("worker setup failed: {e}"),
    }
}

/// Runs `inputs` through one worker (2 MiB memory) and compares the concatenated output.
#[track_caller]
fn check_output(wat: &str, args: &[u8], inputs: &[Vec<u8>], expect: &[u8]) {
    let mut worker = worker(wat, args, limits());
    let mut output = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        match worker.run(input) {
            Ok(bytes) => output.extend_from_slice(&bytes),
            Err(e) => panic!("chunk {i} failed: {e:?}"),
        }
    }
    assert_eq!(output.len(), expect.len(), "output length");
    assert!(output == expect, "output differs from the reference");
    // The serial helper agrees.
    let serial = run_serial(engine(), wat.as_bytes(), args, inputs.iter().cloned());
    assert_eq!(serial.ok().as_deref(), Some(expect), "run_serial output");
}

/// Runs one chunk and expects it to fail with `kind` and a message containing `message`.
#[track_caller]
fn check_failure(wat: &str, limits: Limits, input: &[u8], kind: FailureKind, message: &str) {
    let mut worker = worker(wat, b"", limits);
    let failure = match worker.run(input) {
        Ok(output) => panic!("chunk succeeded with {} bytes of output", output.len()),
        Err(failure) => failure,
    };
    assert_eq!(failure.kind, kind, "{failure:?}");
    assert!(
        failure.message.contains(message),
        "{failure:?} lacks {message:?}"
    );
    assert!(
        !failure.message.contains('\n'),
        "{failure:?} is not one line"
    );
    // A failed worker refuses further chunks.
    let again = worker
        .run(input)
        .expect_err("a failed worker is not reused");
    assert_eq!(again.kind, FailureKind::Node);
}

/// Expects `WasmWorker::new` to fail with `kind` and a message containing `message`.
#[track_caller]
fn check_setup_failure(wat: &str, args: &[u8], limits: Limits, kind: FailureKind, message: &str) {
    let payload = compile(wat);
    let failure = match WasmWorker::new(engine(), &payload, args, limits, CancelFlag::default()) {
        Ok(_) => panic!("worker setup succeeded"),
        Err(failure) => failure,
    };
    assert_eq!(failure.kind, kind, "{failure:?}");
    assert!(
        failure.message.contains(message),
        "{failure:?} lacks {message:?}"
    );
}

/// Expects `compile` to fail with exactly `expect` (or, ending in `...`, starting with it).
#[track_caller]
fn check_compile_error(bytes: &[u8], expect: &str) {
    let error = match engine().compile(bytes) {
        Ok(_) => panic!("compile succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(!error.contains('\n'), "not one line: {error:?}");
    match expect.strip_suffix("...") {
        Some(prefix) => assert!(
            error.starts_with(prefix),
            "{error:?} does not start with {prefix:?}"
        ),
        None => assert_eq!(error, expect),
    }
}

/// A `dispy_run` that succeeds with no output.
const RUN: &str =
    r#"(func (export "dispy_run") (param i32 i32 i32 i32) (result i32) (i32.const 0))"#;

/// A module with the ABI's required exports plus `extra` fields.
fn module_with(extra: &str) -> String {
    format!(
        r#"(module
            (memory (export "memory") 1)
            (func (export "dispy_alloc") (param i32) (result i32) (i32.const 1024))
            {extra})"#
    )
}

/// A range split's chunk input: start and end as two little-endian u64.
fn range(start: u64, end: u64) -> Vec<u8> {
    [start.to_le_bytes(), end.to_le_bytes()].concat()
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no extra crate.
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

/// Independent reference for examples/checksum.wat.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Independent reference for one row of examples/mandelbrot.wat.
fn mandelbrot_row(width: u32, height: u32, max_iter: u32, y: u32) -> Vec<u8> {
    let cy = -1.5 + (3.0 * f64::from(y)) / f64::from(height);
    (0..width)
        .map(|x| {
            let cx = -2.0 + (3.0 * f64::from(x)) / f64::from(width);
            let (mut zr, mut zi, mut i) = (0.0f64, 0.0f64, 0u32);
            while i < max_iter {
                let (zr2, zi2) = (zr * zr, zi * zi);
                if zr2 + zi2 > 4.0 {
                    break;
                }
                zi = 2.0 * zr * zi + cy;
                zr = zr2 - zi2 + cx;
                i += 1;
            }
            (255 - i * 255 / max_iter) as u8
        })
        .collect()
}

#[test]
fn checksum_matches_fnv1a() {
    let data = noise(100_000, 7);
    let chunks: Vec<Vec<u8>> = [0..0, 0..1, 1..4096, 4096..70_000, 70_000..100_000]
        .map(|r| data[r].to_vec())
        .into();
    let expect: Vec<u8> = chunks
        .iter()
        .flat_map(|c| fnv1a64(c).to_le_bytes())
        .collect();
    check_output(CHECKSUM, b"", &chunks, &expect);
    // Known vectors of FNV-1a 64, so the reference itself is right.
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn upper_matches_rust_and_reuses_memory() {
    let text = "Hello, wörld! abc xyz ABC {|}~ `@[\n"
        .repeat(300)
        .into_bytes();
    // 100 chunks of ~10 KiB through one worker with 2 MiB: only works if the heap is reset.
    let mut chunks: Vec<Vec<u8>> = (0..100).map(|_| text.clone()).collect();
    chunks.push(noise(50_000, 3));
    chunks.push(Vec::new());
    let expect: Vec<u8> = chunks.concat().to_ascii_uppercase();
    check_output(UPPER, b"", &chunks, &expect);
}

#[test]
fn mandelbrot_matches_reference() {
    let (width, height, max_iter) = (64, 48, 50);
    let chunks: Vec<Vec<u8>> = (0..48)
        .step_by(5)
        .map(|s| range(s, (s + 5).min(48)))
        .collect();
    let mut expect = b"P5\n64 48\n255\n".to_vec();
    for y in 0..height {
        expect.extend(mandelbrot_row(width, height, max_iter, y));
    }
    check_output(MANDELBROT, b" 64 48\t50\n", &chunks, &expect);
}

#[test]
fn mandelbrot_defaults() {
    let mut worker = worker(MANDELBROT, b"", limits());
    let first = worker.run(&range(0, 1)).expect("row 0 renders");
    let header = b"P5\n1024 1024\n255\n";
    assert_eq!(&first[..header.len()], header);
    assert_eq!(first[header.len()..], mandelbrot_row(1024, 1024, 256, 0));
    let middle = worker
        .run(&range(512, 514))
        .expect("rows 512 and 513 render");
    assert_eq!(middle.len(), 2 * 1024);
    assert_eq!(middle[..1024], mandelbrot_row(1024, 1024, 256, 512));
    // (-0.5, 0) and (-2, 0) are in the set: black.
    assert_eq!((middle[512], middle[0]), (0, 0));
    let empty = worker
        .run(&range(7, 7))
        .expect("an empty range renders nothing");
    assert!(empty.is_empty());
}

#[test]
fn mandelbrot_errors() {
    check_setup_failure(
        MANDELBROT,
        b"64 48",
        limits(),
        FailureKind::Setup,
        "error code 1",
    );
    check_setup_failure(
        MANDELBROT,
        b"64 0 50",
        limits(),
        FailureKind::Setup,
        "error code 1",
    );
    check_setup_failure(
        MANDELBROT,
        b"64 48 50 x",
        limits(),
        FailureKind::Setup,
        "error code 1",
    );
    let args = b"8 8 10";
    let mut w = worker(MANDELBROT, args, limits());
    assert_eq!(
        w.run(&range(0, 9)).map_err(|f| f.kind),
        Err(FailureKind::PayloadError(4))
    );
    let mut w = worker(MANDELBROT, args, limits());
    assert_eq!(
        w.run(b"short").map_err(|f| f.kind),
        Err(FailureKind::PayloadError(3))
    );
}

#[test]
fn setup_runs_once_per_worker() {
    let wat = r#"(module
        (import "dispy" "emit" (func $emit (param i32 i32)))
        (memory (export "memory") 1)
        (global $setups (mut i32) (i32.const 0))
        (global $heap (mut i32) (i32.const 16))
        (func (export "dispy_alloc") (param $len i32) (result i32)
            (global.get $heap)
            (global.set $heap (i32.add (global.get $heap) (local.get $len))))
        (func (export "dispy_setup") (param i32 i32) (result i32)
            (global.set $setups (i32.add (global.get $setups) (i32.const 1)))
            (i32.const 0))
        (func (export "dispy_run") (param $in i32) (param $in_len i32)
                (param $args i32) (param $args_len i32) (result i32)
            (i32.store8 (i32.const 0) (global.get $setups))
            (call $emit (i32.const 0) (i32.const 1))
            (call $emit (local.get $args) (local.get $args_len))
            (call $emit (local.get $in) (local.get $in_len))
            (i32.const 0)))"#;
    let inputs = [b"a".to_vec(), Vec::new(), b"ccc".to_vec()];
    check_output(wat, b"ARGS", &inputs, b"\x01ARGSa\x01ARGS\x01ARGSccc");
}

#[test]
fn fixtures_fail_with_their_kind() {
    check_failure(
        TRAP,
        limits(),
        b"x",
        FailureKind::Trap,
        "wasm trap: wasm `unreachable`",
    );
    check_failure(
        FAIL_CODE,
        limits(),
        b"x",
        FailureKind::PayloadError(7),
        "error code 7",
    );
    let short = Limits {
        chunk_timeout: Duration::from_millis(200),
        ..limits()
    };
    check_failure(
        LOOP,
        short,
        b"x",
        FailureKind::Timeout,
        "time limit of 200ms",
    );
    check_failure(
        MEMORY_HOG,
        limits(),
        b"",
        FailureKind::MemoryLimit,
        "memory limit of 2.0 MiB",
    );
    check_compile_error(
        NO_RUN_EXPORT.as_bytes(),
        "payload does not export `dispy_run`",
    );
}

#[test]
fn memory_hog_without_a_limit_sees_grow_fail() {
    // Under the largest 32-bit memory, `memory.grow` fails normally and the guest returns 1.
    let limits = Limits {
        memory: 1 << 32,
        ..limits()
    };
    check_failure(
        MEMORY_HOG,
        limits,
        b"",
        FailureKind::PayloadError(1),
        "error code 1",
    );
}

#[test]
fn initial_memory_over_the_limit() {
    // 100 pages are 6.25 MiB, over the 2 MiB limit.
    let wat = module_with(RUN).replace(
        r#"(memory (export "memory") 1)"#,
        r#"(memory (export "memory") 100)"#,
    );
    check_setup_failure(
        &wat,
        b"",
        limits(),
        FailureKind::MemoryLimit,
        "memory limit of 2.0 MiB",
    );
}

#[test]
fn cancel_stops_a_loop() {
    let cancel = CancelFlag::default();
    let limits = Limits {
        chunk_timeout: Duration::from_secs(60),
        ..limits()
    };
    let mut worker = WasmWorker::new(engine(), &compile(LOOP), b"", limits, cancel.clone())
        .expect("worker starts");
    let canceller = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        cancel.cancel();
    });
    let failure = worker.run(b"").expect_err("the loop is cancelled");
    assert_eq!(
        (failure.kind, failure.message.as_str()),
        (FailureKind::Node, "cancelled")
    );
    canceller.join().expect("canceller thread");
}

#[test]
fn bad_emits_trap() {
    let run = |body: &str| {
        let fields = format!(
            r#"(import "dispy" "emit" (func $emit (param i32 i32)))
               (func (export "dispy_run") (param i32 i32 i32 i32) (result i32) {body} (i32.const 0))"#
        );
        // The import must come first in a module.
        module_with("").replace("(module", &format!("(module {fields}"))
    };
    let out_of_bounds = run("(call $emit (i32.const 65530) (i32.const 100))");
    check_failure(
        &out_of_bounds,
        limits(),
        b"",
        FailureKind::Trap,
        "dispy.emit(0xfffa, 100)",
    );
    let negative = run("(call $emit (i32.const -1) (i32.const -1))");
    check_failure(
        &negative,
        limits(),
        b"",
        FailureKind::Trap,
        "outside the payload's memory",
    );

    let big = run(
        "(call $emit (i32.const 0) (i32.const 600)) (call $emit (i32.const 0) (i32.const 600))",
    );
    let mut worker = worker(&big, b"", limits());
    worker.set_output_limit(1000);
    let failure = worker.run(b"").expect_err("output over the cap");
    assert_eq!(failure.kind, FailureKind::Trap);
    assert_eq!(
        failure.message,
        "payload emitted more than 1000 B of output for one chunk"
    );
}

#[test]
fn setup_failures() {
    let setup = |body: &str| {
        module_with(&format!(
            r#"(func (export "dispy_setup") (param i32 i32) (result i32) {body})
               (func (export "dispy_run") (param i32 i32 i32 i32) (result i32) (i32.const 0))"#
        ))
    };
    check_setup_failure(
        &setup("(i32.const 3)"),
        b"",
        limits(),
        FailureKind::Setup,
        "code 3",
    );
    check_setup_failure(
        &setup("(unreachable)"),
        b"",
        limits(),
        FailureKind::Setup,
        "unreachable",
    );
    let short = Limits {
        chunk_timeout: Duration::from_millis(100),
        ..limits()
    };
    let forever = setup("(loop $l (br $l)) (i32.const 0)");
    check_setup_failure(
        &forever,
        b"",
        short,
        FailureKind::Timeout,
        "time limit of 100ms",
    );
    // dispy_alloc returning a pointer outside memory for the arguments.
    let bad_alloc = module_with(RUN).replace("(i32.const 1024))", "(i32.const -16))");
    check_setup_failure(
        &bad_alloc,
        b"args",
        limits(),
        FailureKind::Setup,
        "dispy_alloc(4)",
    );
}

#[test]
fn compile_errors() {
    let run = RUN;
    check_compile_error(b"not wasm", "payload is not valid WebAssembly: ...");
    check_compile_error(
        b"\0asm\x01\0\0\0\x07",
        "payload is not valid WebAssembly: ...",
    );
    check_compile_error(b"(module (func", "payload is not valid WebAssembly: ...");
    check_compile_error(
        module_with(r#"(func (export "dispy_run") (param i32) (result i32) (i32.const 0))"#)
            .as_bytes(),
        "`dispy_run` has type (i32) -> i32 but the dispy ABI v1 needs (i32, i32, i32, i32) -> i32",
    );
    check_compile_error(
        module_with(&format!(r#"{run} (func (export "dispy_setup"))"#)).as_bytes(),
        "`dispy_setup` has type () -> () but the dispy ABI v1 needs (i32, i32) -> i32",
    );
    check_compile_error(
        module_with(&format!(
            r#"{run} (global (export "dispy_abi_version") i32 (i32.const 1))"#
        ))
        .as_bytes(),
        "`dispy_abi_version` has type global but the dispy ABI v1 needs () -> i32",
    );
    check_compile_error(
        format!(
            r#"(module (func (export "dispy_alloc") (param i32) (result i32) (i32.const 0)) {run})"#
        )
        .as_bytes(),
        "payload does not export `memory`",
    );
    let forbidden = module_with(run).replace("(module", r#"(module (import "env" "foo" (func))"#);
    check_compile_error(
        forbidden.as_bytes(),
        "payload imports `env.foo`, only `dispy.emit` and `dispy.log` are provided",
    );
    let bad_emit = module_with(run).replace(
        "(module",
        r#"(module (import "dispy" "emit" (func (param i64)))"#,
    );
    check_compile_error(
        bad_emit.as_bytes(),
        "payload imports `dispy.emit` as (i64) -> () but the dispy ABI v1 provides (i32, i32) -> ()",
    );
    let v2 = module_with(&format!(
        r#"{run} (func (export "dispy_abi_version") (result i32) (i32.const 2))"#
    ));
    check_compile_error(
        v2.as_bytes(),
        "payload is built for dispy ABI v2, this node supports v1",
    );
    let trapping_version = module_with(&format!(
        r#"{run} (func (export "dispy_abi_version") (result i32) (unreachable))"#
    ));
    check_compile_error(
        trapping_version.as_bytes(),
        "calling `dispy_abi_version` failed: wasm trap: ...",
    );
    // The examples and the fixtures meant to compile do.
    for wat in [
        MANDELBROT, CHECKSUM, UPPER, TRAP, LOOP, MEMORY_HOG, FAIL_CODE,
    ] {
        compile(wat);
    }
    assert_eq!(compile(&module_with(run)).initial_memory(), 64 * 1024);
}

#[test]
fn types_can_move_to_worker_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<WasmEngine>();
    send_sync::<WasmPayload>();
    send_sync::<CancelFlag>();
    send::<WasmWorker>();
    send_sync::<crate::exec::Executor>();
    send_sync::<crate::exec::Payload>();
    send::<crate::exec::Worker>();
}
