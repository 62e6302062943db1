//! Tests of WASI filters: hand-written WAT filters (always) and the C filters of `examples/c/`
//! (when clang with wasi-libc is installed; otherwise a `SKIPPED` line, or a failure under
//! `DISPY_TEST_STRICT=1`) round-trip chunks, see their arguments as argv, and
//! are denied files, sockets and sleeping; limits and exit codes map to their failure kinds.

use std::sync::OnceLock;
use std::time::Duration;

use wire::proto::FailureKind;

use crate::exec::fixtures::{root, Fixtures, Target};
use crate::exec::wasm::{run_serial, WasmEngine, WasmFlavour, WasmPayload, WasmWorker};
use crate::exec::{CancelFlag, Limits};

const MIB: u64 = 1 << 20;

fn engine() -> &'static WasmEngine {
    static ENGINE: OnceLock<WasmEngine> = OnceLock::new();
    ENGINE.get_or_init(|| WasmEngine::new().expect("the engine starts"))
}

fn limits() -> Limits {
    Limits { memory: 2 * MIB, chunk_timeout: Duration::from_secs(30) }
}

#[track_caller]
fn compile(bytes: &[u8]) -> WasmPayload {
    engine().compile(bytes).unwrap_or_else(|e| panic!("compile failed: {e}"))
}

#[track_caller]
fn worker(bytes: &[u8], args: &[u8], limits: Limits) -> WasmWorker {
    WasmWorker::new(engine(), &compile(bytes), args, limits, CancelFlag::default())
        .unwrap_or_else(|e| panic!("worker setup failed: {e:?}"))
}

/// Runs `inputs` through one filter worker and compares the concatenated output; `run_serial`
/// must agree.
#[track_caller]
fn check_output(bytes: &[u8], args: &[u8], inputs: &[Vec<u8>], expect: &[u8]) {
    let mut worker = worker(bytes, args, limits());
    let mut output = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        match worker.run(input) {
            Ok(chunk) => output.extend_from_slice(&chunk),
            Err(e) => panic!("chunk {i} failed: {e:?}"),
        }
    }
    assert_eq!(String::from_utf8_lossy(&output), String::from_utf8_lossy(expect));
    let serial = run_serial(engine(), bytes, args, inputs.iter().cloned());
    assert_eq!(serial.ok().as_deref(), Some(expect), "run_serial output");
}

/// Runs one chunk and expects a failure of `kind` with a one-line message containing `message`.
#[track_caller]
fn check_failure(bytes: &[u8], limits: Limits, kind: FailureKind, message: &str) {
    let mut worker = worker(bytes, b"", limits);
    let failure = match worker.run(b"input") {
        Ok(output) => panic!("the chunk succeeded with {:?}", String::from_utf8_lossy(&output)),
        Err(failure) => failure,
    };
    assert_eq!(failure.kind, kind, "{failure:?}");
    assert!(failure.message.contains(message), "{failure:?} lacks {message:?}");
    assert!(!failure.message.contains('\n'), "{failure:?} is not one line");
    let again = worker.run(b"input").expect_err("a failed worker is not reused");
    assert_eq!(again.kind, FailureKind::Node);
}

#[track_caller]
fn check_compile_error(wat: &str, expect: &str) {
    match engine().compile(wat.as_bytes()) {
        Ok(_) => panic!("compile succeeded"),
        Err(e) => assert_eq!(e.to_string(), expect),
    }
}

/// A filter that copies stdin to stdout with `a`-`z` uppercased, 64 KiB at a time.
const UPPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  ;; 0..8: an iovec; 16: the byte count; 65536..131072: the buffer.
  (memory (export "memory") 2)
  (func (export "_start")
    (local $n i32) (local $p i32) (local $end i32) (local $c i32)
    (loop $chunk
      (i32.store (i32.const 0) (i32.const 65536))
      (i32.store (i32.const 4) (i32.const 65536))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16))
        (then (call $proc_exit (i32.const 70))))
      (local.set $n (i32.load (i32.const 16)))
      (if (i32.eqz (local.get $n)) (then (return)))
      (local.set $p (i32.const 65536))
      (local.set $end (i32.add (i32.const 65536) (local.get $n)))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
          (local.set $c (i32.load8_u (local.get $p)))
          (if (i32.lt_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 26))
            (then (i32.store8 (local.get $p) (i32.sub (local.get $c) (i32.const 32)))))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br $next)))
      (i32.store (i32.const 4) (local.get $n))
      (block $written
        (loop $more
          (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16))
            (then (call $proc_exit (i32.const 74))))
          (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.load (i32.const 16))))
          (i32.store (i32.const 4) (i32.sub (i32.load (i32.const 4)) (i32.load (i32.const 16))))
          (br_if $more (i32.ne (i32.load (i32.const 4)) (i32.const 0)))))
      (br $chunk))))"#;

/// A filter that writes its argv, one argument a line.
const ARGS: &str = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $size i32) (local $p i32) (local $end i32)
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (local.set $size (i32.load (i32.const 4)))
    (drop (call $args (i32.const 1024) (i32.const 4096)))
    ;; The strings are NUL-terminated, back to back: turn each NUL into a newline.
    (local.set $p (i32.const 4096))
    (local.set $end (i32.add (i32.const 4096) (local.get $size)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (if (i32.eqz (i32.load8_u (local.get $p))) (then (i32.store8 (local.get $p) (i32.const 10))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (local.get $size))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#;

/// A filter whose `_start` body is `body`, with `imports` before the memory.
fn filter(imports: &str, body: &str) -> String {
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            {imports}
            (memory (export "memory") 1)
            (data (i32.const 64) "etc/passwd")
            (func (export "_start") (local $fd i32) (local $errno i32) {body}))"#
    )
}

/// Tries `attempt` (which sets `$errno`) on descriptors 0 to 9; exits 0 ("escaped") if any
/// succeeds, otherwise with the last errno.
fn every_descriptor(attempt: &str) -> String {
    format!(
        r#"(block $failed
             (loop $next
               {attempt}
               (if (i32.eqz (local.get $errno)) (then (call $exit (i32.const 0))))
               (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
               (br_if $next (i32.lt_u (local.get $fd) (i32.const 10)))))
           (call $exit (local.get $errno))"#
    )
}

#[test]
fn flavour_is_detected() {
    assert_eq!(compile(UPPER.as_bytes()).flavour(), WasmFlavour::Filter);
    let abi = std::fs::read(root().join("examples/upper.wat")).expect("examples/upper.wat");
    assert_eq!(compile(&abi).flavour(), WasmFlavour::Abi);
}

#[test]
fn upper_filter_round_trips_lines_like_upper_wat() {
    let fixtures = Fixtures::new("upper_filter_round_trips_lines_like_upper_wat", &[Target::Wasi]);
    let text = "Hello, wörld! abc xyz ABC {|}~ `@[\n".repeat(3000);
    // `lines:N`-style chunks: whole lines, the last chunk empty; some larger than one read.
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut chunks: Vec<Vec<u8>> = lines.chunks(700).map(|c| c.concat().into_bytes()).collect();
    chunks.push(Vec::new());
    let expect = text.to_ascii_uppercase().into_bytes();
    check_output(UPPER.as_bytes(), b"", &chunks, &expect);
    // The ABI example gives the same bytes.
    let abi = std::fs::read(root().join("examples/upper.wat")).expect("examples/upper.wat");
    assert_eq!(run_serial(engine(), &abi, b"", chunks.clone()).ok(), Some(expect.clone()));
    if let Some(c_filter) = fixtures.build("upper_filter.c", Target::Wasi) {
        let c_filter = std::fs::read(c_filter).expect("built");
        check_output(&c_filter, b"", &chunks, &expect);
        check_output(&c_filter, b" --lower ", &[b"MiXeD\n".to_vec()], b"mixed\n");
        let mut worker = worker(&c_filter, b"--shout", limits());
        let failure = worker.run(b"x").expect_err("unknown argument");
        assert_eq!(failure.kind, FailureKind::PayloadError(64));
        assert_eq!(
            failure.message,
            "payload exited with code 64 (stderr: upper_filter: unknown argument --shout)"
        );
    }
}

#[test]
fn args_become_argv() {
    let fixtures = Fixtures::new("args_become_argv", &[Target::Wasi]);
    check_output(ARGS.as_bytes(), b"", &[Vec::new()], b"payload\n");
    check_output(ARGS.as_bytes(), b"  -n 3\t--mode  fast\n", &[Vec::new()], b"payload\n-n\n3\n--mode\nfast\n");
    if let Some(c_filter) = fixtures.build("faults/wasi_args.c", Target::Wasi) {
        let c_filter = std::fs::read(c_filter).expect("built");
        check_output(&c_filter, b"a b", &[b"stdin\n".to_vec()], b"[0]=payload\n[1]=a\n[2]=b\nstdin\n");
    }
}

#[test]
fn files_sockets_and_sleep_are_denied() {
    let fixtures = Fixtures::new("files_sockets_and_sleep_are_denied", &[Target::Wasi]);
    // path_open(fd, dirflags 0, "etc/passwd", oflags 0, rights read, inheriting 0, fdflags 0).
    let open = filter(
        r#"(import "wasi_snapshot_preview1" "path_open"
              (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#,
        &every_descriptor(
            "(local.set $errno (call $open (local.get $fd) (i32.const 0) (i32.const 64) (i32.const 10)
                 (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 128)))",
        ),
    );
    check_failure(open.as_bytes(), limits(), FailureKind::PayloadError(8), "payload exited with code 8");
    let accept = filter(
        r#"(import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))"#,
        &every_descriptor("(local.set $errno (call $accept (local.get $fd) (i32.const 0) (i32.const 128)))"),
    );
    let mut accepter = worker(accept.as_bytes(), b"", limits());
    let failure = accepter.run(b"").expect_err("no socket to accept on");
    assert!(matches!(failure.kind, FailureKind::PayloadError(code) if code != 0), "{failure:?}");
    // poll_oneoff (how a WASI program sleeps) fails with ENOTSUP (58) instead of blocking.
    let sleep = filter(
        r#"(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))"#,
        "(call $exit (call $poll (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 1024)))",
    );
    check_failure(sleep.as_bytes(), limits(), FailureKind::PayloadError(58), "payload exited with code 58");
    // Preview 1 has no call that creates a socket; another module's is refused up front.
    check_compile_error(
        &filter(r#"(import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))"#, ""),
        "WASI filter imports `wasi_snapshot_preview1.sock_open`, which filters do not get \
         (only `wasi_snapshot_preview1` functions)",
    );
    check_compile_error(
        &filter(r#"(import "env" "socket" (func (param i32) (result i32)))"#, ""),
        "WASI filter imports `env.socket`, which filters do not get (only `wasi_snapshot_preview1` functions)",
    );
    if let Some(c_filter) = fixtures.build("faults/wasi_open.c", Target::Wasi) {
        let c_filter = std::fs::read(c_filter).expect("built");
        let mut worker = worker(&c_filter, b"", limits());
        let failure = worker.run(b"").expect_err("no file can be opened");
        assert_eq!(failure.kind, FailureKind::PayloadError(2), "{failure:?}");
        assert!(failure.message.starts_with("payload exited with code 2 (stderr: open denied: "), "{failure:?}");
    }
}

#[test]
fn exit_codes_traps_and_limits() {
    check_output(filter("", "(call $exit (i32.const 0))").as_bytes(), b"", &[b"x".to_vec()], b"");
    check_failure(
        filter("", "(call $exit (i32.const 3))").as_bytes(),
        limits(),
        FailureKind::PayloadError(3),
        "payload exited with code 3",
    );
    check_failure(filter("", "(unreachable)").as_bytes(), limits(), FailureKind::Trap, "wasm trap: wasm `unreachable`");
    let short = Limits { chunk_timeout: Duration::from_millis(200), ..limits() };
    check_failure(
        filter("", "(loop $forever (br $forever))").as_bytes(),
        short,
        FailureKind::Timeout,
        "chunk exceeded its time limit of 200ms",
    );
    check_failure(
        filter("", "(loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))").as_bytes(),
        limits(),
        FailureKind::MemoryLimit,
        "payload exceeded its memory limit of 2.0 MiB",
    );
    let mut worker = worker(UPPER.as_bytes(), b"", limits());
    worker.set_output_limit(1000);
    let failure = worker.run(&[b'a'; 5000]).expect_err("stdout over the cap");
    assert_eq!(failure.kind, FailureKind::Trap);
    assert_eq!(failure.message, "payload wrote more than 1000 B to stdout for one chunk");
}

#[test]
fn filter_compile_errors() {
    check_compile_error(
        r#"(module (memory (export "memory") 1) (func (export "_start") (param i32)))"#,
        "`_start` has type (i32) -> () but the dispy ABI v1 needs () -> ()",
    );
    check_compile_error(
        r#"(module (func (export "_start")))"#,
        "payload does not export `memory`",
    );
}
