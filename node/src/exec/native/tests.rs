//! Tests of native payloads, with C fixtures built at test time (see `exec::fixtures`): every
//! fault fixture against the failure it must produce (and the worker process gone, no zombie),
//! the load-time checks, and the same payload as `.so`, `.wasm` and WAT giving byte-identical
//! output. Each test that needs `cc` or `clang` skips (with a `SKIPPED` line) without it, or fails
//! under `DISPY_TEST_STRICT=1` (see `exec::fixtures`).

use std::path::Path;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use wire::proto::{FailureKind, PayloadKind};

use super::platform;
use crate::exec::fixtures::{build_sdk_example, root, Fixtures, Target};
use crate::exec::{CancelFlag, ExecError, Executor, Limits, Payload, Worker};

const MIB: u64 = 1 << 20;

/// One executor for all tests, as in the daemon.
fn executor() -> &'static Executor {
    static EXECUTOR: OnceLock<Executor> = OnceLock::new();
    EXECUTOR.get_or_init(|| Executor::new().expect("the executor starts"))
}

fn limits(memory: u64, timeout: Duration) -> Limits {
    Limits { memory, chunk_timeout: timeout }
}

/// Generous limits for payloads that should succeed.
fn roomy() -> Limits {
    limits(256 * MIB, Duration::from_secs(30))
}

/// Loads a payload file as the daemon does: its kind from its bytes, then `Executor::load`.
fn load(path: &Path) -> Result<Payload, ExecError> {
    let bytes = std::fs::read(path).expect("the fixture is readable");
    let kind = wire::abi::detect_kind(&bytes).expect("a known payload kind");
    executor().load(&kind, &bytes, path)
}

#[track_caller]
fn loaded(path: &Path) -> Payload {
    load(path).unwrap_or_else(|e| panic!("loading {} failed: {e}", path.display()))
}

#[track_caller]
fn worker(payload: &Payload, args: &[u8], limits: Limits) -> Worker {
    executor()
        .worker(payload, args, limits, CancelFlag::default())
        .unwrap_or_else(|e| panic!("worker setup failed: {e:?}"))
}

/// Runs `inputs` through one worker of the payload at `path` and returns the concatenated output.
#[track_caller]
fn run_all(path: &Path, args: &[u8], inputs: &[Vec<u8>]) -> Vec<u8> {
    let payload = loaded(path);
    match executor().run_serial(&payload, args, inputs.iter().cloned()) {
        Ok(output) => output,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// Whether process `pid` is a zombie (exited but not reaped).
fn is_zombie(pid: u32) -> bool {
    // `/proc/PID/stat` is "PID (COMM) STATE ..."; COMM may contain spaces, STATE follows the ')'.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// FNV-1a 64, the reference for every checksum payload.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Runs one chunk of the fault fixture `source` under `limits` and expects a failure of `kind`
/// whose one-line message contains `message`; then checks the worker is dead, reaped and refuses
/// reuse, and that a fresh worker of a good payload still runs.
#[track_caller]
fn check_fault(test: &'static str, source: &str, limits: Limits, kind: FailureKind, message: &str) {
    let fixtures = Fixtures::new(test, &[Target::Native]);
    let Some(path) = fixtures.build(source, Target::Native) else { return };
    let payload = loaded(&path);
    let mut worker = worker(&payload, b"", limits);
    let Worker::Native(native) = &worker else { panic!("not a native worker") };
    let pid = native.pid();
    let failure = match worker.run(b"chunk") {
        Ok(output) => panic!("{source}: the chunk succeeded with {} bytes", output.len()),
        Err(failure) => failure,
    };
    eprintln!("{source}: {failure:?}");
    assert_eq!(failure.kind, kind, "{source}: {failure:?}");
    assert!(failure.message.contains(message), "{source}: {failure:?} lacks {message:?}");
    assert!(!failure.message.contains('\n'), "{source}: {failure:?} is not one line");
    assert!(!is_zombie(pid), "{source}: worker {pid} left a zombie");
    let again = worker.run(b"chunk").expect_err("a failed worker is not reused");
    assert_eq!(again.kind, FailureKind::Node);
    // The node (this process) is unaffected: a fresh worker runs a good chunk.
    if let Some(good) = fixtures.build("checksum.c", Target::Native) {
        let mut fresh = self::worker(&loaded(&good), b"", roomy());
        let output = fresh.run(b"hello").expect("a fresh worker runs");
        assert_eq!(output, fnv1a64(b"hello").to_le_bytes());
    }
}

#[test]
fn segfault_is_a_crash() {
    check_fault("segfault_is_a_crash", "faults/segfault.c", roomy(), FailureKind::Crash, "worker crashed with SIGSEGV");
}

#[test]
fn abort_is_a_crash_with_its_output() {
    check_fault(
        "abort_is_a_crash_with_its_output",
        "faults/abort.c",
        roomy(),
        FailureKind::Crash,
        "worker crashed with SIGABRT (output: abort.c: giving up on purpose)",
    );
}

#[test]
fn spin_times_out() {
    let started = Instant::now();
    check_fault(
        "spin_times_out",
        "faults/spin.c",
        limits(256 * MIB, Duration::from_secs(1)),
        FailureKind::Timeout,
        "chunk exceeded its time limit of 1s",
    );
    assert!(started.elapsed() < Duration::from_secs(20), "the timeout took {:?}", started.elapsed());
}

#[test]
fn hog_hits_the_memory_limit() {
    check_fault(
        "hog_hits_the_memory_limit",
        "faults/hog.c",
        limits(64 * MIB, Duration::from_secs(30)),
        FailureKind::MemoryLimit,
        "payload exceeded its memory limit of 64.0 MiB",
    );
}

#[test]
fn exit_is_reported() {
    check_fault("exit_is_reported", "faults/exit.c", roomy(), FailureKind::Crash, "payload called exit(3)");
}

#[test]
fn cancel_kills_a_spinning_worker() {
    let fixtures = Fixtures::new("cancel_kills_a_spinning_worker", &[Target::Native]);
    let Some(path) = fixtures.build("faults/spin.c", Target::Native) else { return };
    let cancel = CancelFlag::default();
    let mut worker = executor()
        .worker(&loaded(&path), b"", limits(256 * MIB, Duration::from_secs(60)), cancel.clone())
        .expect("worker starts");
    let canceller = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        cancel.cancel();
    });
    let started = Instant::now();
    let failure = worker.run(b"").expect_err("the chunk is cancelled");
    assert_eq!((failure.kind, failure.message.as_str()), (FailureKind::Node, "cancelled"));
    assert!(started.elapsed() < Duration::from_secs(10));
    canceller.join().expect("canceller thread");
}

#[test]
fn workers_stay_warm_and_drop_cleanly() {
    let fixtures = Fixtures::new("workers_stay_warm_and_drop_cleanly", &[Target::Native]);
    let Some(path) = fixtures.build("mandelbrot.c", Target::Native) else { return };
    let payload = loaded(&path);
    let Payload::Native(native) = &payload else { panic!("not native") };
    assert!(native.has_setup());
    let mut worker = worker(&payload, b"8 4 10", roomy());
    let Worker::Native(inner) = &worker else { panic!("not a native worker") };
    let pid = inner.pid();
    // Setup ran once in this process; every chunk is served by the same process.
    let header = worker.run(&range(0, 1)).expect("row 0");
    assert!(header.starts_with(b"P5\n8 4\n255\n"));
    for _ in 0..20 {
        assert_eq!(worker.run(&range(1, 3)).expect("rows 1..3").len(), 16);
    }
    let Worker::Native(inner) = &worker else { panic!("not a native worker") };
    assert_eq!(inner.pid(), pid);
    // Bad input is the payload's own error code, not a crash.
    let failure = worker.run(b"short").expect_err("not 16 bytes");
    assert_eq!(failure.kind, FailureKind::PayloadError(3));
    assert!(!is_zombie(pid));
    // Dropping a healthy worker kills and reaps it too.
    let mut healthy = self::worker(&payload, b"8 4 10", roomy());
    let Worker::Native(inner) = &healthy else { panic!("not a native worker") };
    let pid = inner.pid();
    healthy.run(&range(0, 4)).expect("renders");
    drop(healthy);
    assert!(!is_zombie(pid));
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || !is_zombie(pid));
}

#[test]
fn chatty_payloads_do_not_block() {
    let fixtures = Fixtures::new("chatty_payloads_do_not_block", &[Target::Native]);
    let Some(path) = fixtures.build("faults/chatty.c", Target::Native) else { return };
    let mut worker = worker(&loaded(&path), b"", limits(256 * MIB, Duration::from_secs(30)));
    for input in [&b"first"[..], b"second"] {
        let output = worker.run(input).expect("the chunk succeeds");
        assert_eq!(output.len(), (4 << 20) + input.len());
        assert!(output.ends_with(input));
        assert_eq!(&output[..4], &[0, 1, 2, 3]);
    }
}

#[test]
fn setup_failure_is_reported() {
    let fixtures = Fixtures::new("setup_failure_is_reported", &[Target::Native]);
    let Some(path) = fixtures.build("mandelbrot.c", Target::Native) else { return };
    let failure = executor()
        .worker(&loaded(&path), b"8 0 10", roomy(), CancelFlag::default())
        .expect_err("height 0 is refused");
    assert_eq!(failure.kind, FailureKind::Setup);
    assert_eq!(failure.message, "dispy_setup returned error code 1");
}

/// Expects `Executor::load` of `bytes` (written to a file) claiming `kind` to fail with a message
/// containing every one of `expect`.
#[track_caller]
fn check_load_error(bytes: &[u8], kind: &PayloadKind, expect: &[&str]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("payload.so");
    std::fs::write(&path, bytes).expect("written");
    let error = match executor().load(kind, bytes, &path) {
        Ok(payload) => panic!("loaded {payload:?}"),
        Err(e) => e.to_string(),
    };
    assert!(!error.contains('\n'), "not one line: {error:?}");
    for part in expect {
        assert!(error.contains(part), "{error:?} lacks {part:?}");
    }
}

#[test]
fn load_checks_symbols_version_and_platform() {
    let fixtures = Fixtures::new("load_checks_symbols_version_and_platform", &[Target::Native]);
    let (Some(bad_version), Some(no_run), Some(good)) = (
        fixtures.build("faults/bad_version.c", Target::Native),
        fixtures.build("faults/no_run.c", Target::Native),
        fixtures.build("checksum.c", Target::Native),
    ) else {
        return;
    };
    assert_eq!(
        load(&bad_version).map(drop).map_err(|e| e.to_string()),
        Err("payload is built for dispy ABI v2, this node supports v1".to_string())
    );
    assert_eq!(
        load(&no_run).map(drop).map_err(|e| e.to_string()),
        Err("payload does not export `dispy_run`".to_string())
    );
    let bytes = std::fs::read(&good).expect("readable");
    let here = platform();
    // The same library with another CPU in its ELF header (e_machine at offset 18).
    let (foreign, machine): (&str, u16) = if std::env::consts::ARCH == "aarch64" { ("x86_64", 62) } else { ("aarch64", 183) };
    let mut patched = bytes.clone();
    patched[18..20].copy_from_slice(&machine.to_le_bytes());
    let detected = wire::abi::detect_kind(&patched).expect("still an ELF shared library");
    let foreign_platform = format!("linux/{foreign}");
    check_load_error(&patched, &detected, &["payload is a shared library for", &foreign_platform, &here]);
    // A lying kind is caught by the header too, and a foreign kind by itself.
    let native_here = PayloadKind::Native {
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
    };
    check_load_error(&patched, &native_here, &[&foreign_platform, &here]);
    let riscv = PayloadKind::Native { os: "linux".into(), arch: "riscv64".into() };
    check_load_error(&bytes, &riscv, &["linux/riscv64", &here]);
    // Not an ELF file, and an ELF file cut short that the dynamic loader refuses.
    check_load_error(b"(module)", &native_here, &["not a loadable shared library"]);
    // (Mapping the missing part of the file kills the checker with SIGBUS; the node lives on.)
    check_load_error(
        &bytes[..4096.min(bytes.len())],
        &native_here,
        &["payload is not a loadable shared library: loading it crashed the checker process"],
    );
}

/// A range split's chunk input: start and end as two little-endian u64.
fn range(start: u64, end: u64) -> Vec<u8> {
    [start.to_le_bytes(), end.to_le_bytes()].concat()
}

/// Runs the same chunks through every build of one payload and expects identical output.
#[track_caller]
fn check_identical(builds: &[(&str, Vec<u8>)], expect: Option<&[u8]>) {
    let (first_name, first) = &builds[0];
    for (name, output) in builds {
        assert_eq!(output.len(), first.len(), "{name} vs {first_name}: lengths differ");
        assert!(output == first, "{name} and {first_name} give different output");
    }
    if let Some(expect) = expect {
        assert!(first.as_slice() == expect, "{first_name} differs from the reference");
    }
}

#[test]
fn checksum_is_identical_as_so_wasm_wat_and_rust() {
    let fixtures = Fixtures::new("checksum_is_identical_as_so_wasm_wat_and_rust", &[Target::Native, Target::Wasm32]);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let chunks: Vec<Vec<u8>> = [0..0, 0..1, 1..4096, 4096..150_000, 150_000..200_000]
        .map(|r| data[r].to_vec())
        .into();
    let expect: Vec<u8> = chunks.iter().flat_map(|c| fnv1a64(c).to_le_bytes()).collect();
    let wat = root().join("examples/checksum.wat");
    let mut builds = vec![("checksum.wat", run_all(&wat, b"", &chunks))];
    if let Some(so) = fixtures.build("checksum.c", Target::Native) {
        builds.push(("checksum.so", run_all(&so, b"", &chunks)));
        builds.push(("libchecksum.so (Rust SDK)", run_all(&build_sdk_example(), b"", &chunks)));
    }
    if let Some(wasm) = fixtures.build("checksum.c", Target::Wasm32) {
        builds.push(("checksum.wasm", run_all(&wasm, b"", &chunks)));
    }
    check_identical(&builds, Some(&expect));
}

#[test]
fn mandelbrot_is_identical_as_so_wasm_and_wat() {
    let fixtures = Fixtures::new("mandelbrot_is_identical_as_so_wasm_and_wat", &[Target::Native, Target::Wasm32]);
    let args = b" 97 61\t120\n";
    let chunks: Vec<Vec<u8>> = (0..61).step_by(7).map(|s| range(s, (s + 7).min(61))).collect();
    let wat = root().join("examples/mandelbrot.wat");
    let mut builds = vec![("mandelbrot.wat", run_all(&wat, args, &chunks))];
    if let Some(so) = fixtures.build("mandelbrot.c", Target::Native) {
        builds.push(("mandelbrot.so", run_all(&so, args, &chunks)));
    }
    if let Some(wasm) = fixtures.build("mandelbrot.c", Target::Wasm32) {
        builds.push(("mandelbrot.wasm", run_all(&wasm, args, &chunks)));
    }
    check_identical(&builds, None);
    assert!(builds[0].1.starts_with(b"P5\n97 61\n255\n"));
    assert_eq!(builds[0].1.len(), b"P5\n97 61\n255\n".len() + 97 * 61);
}

#[test]
fn grepcount_counts_matching_lines_as_so_and_wasm() {
    let fixtures = Fixtures::new("grepcount_counts_matching_lines_as_so_and_wasm", &[Target::Native, Target::Wasm32]);
    let text = b"GET /a\nPOST /b\nGET /c\n\nget /d\nGET".to_vec();
    let chunks = vec![text.clone(), Vec::new(), b"no match here\n".to_vec()];
    let expect = b"3\n0\n0\n";
    let mut builds = Vec::new();
    if let Some(so) = fixtures.build("grepcount.c", Target::Native) {
        builds.push(("grepcount.so", run_all(&so, b"GET", &chunks)));
        assert_eq!(run_all(&so, b"", std::slice::from_ref(&text)), b"6\n", "empty arguments match every line");
    }
    if let Some(wasm) = fixtures.build("grepcount.c", Target::Wasm32) {
        builds.push(("grepcount.wasm", run_all(&wasm, b"GET", &chunks)));
    }
    if !builds.is_empty() {
        check_identical(&builds, Some(expect));
    }
}
