//! Native payloads through the whole system: the same C source built as a shared library and as
//! WebAssembly gives the same job output as the hand-written WAT on a real cluster, and a library
//! built for another architecture is refused when it is submitted. Without `cc` (or, for the
//! `.wasm` build, `clang`) a test skips (see `tests::skip`).

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{check_same_bytes, example, pseudo_random_bytes, skip, Cluster, Job};

/// Compiles `source` with `compiler` and `flags` into `out`; `None` when the compiler is missing,
/// after [`skip`] reported it for `test` (the test's function name), so the test can return.
#[track_caller]
fn build(test: &str, compiler: &str, flags: &[&str], source: &Path, out: &Path) -> Option<PathBuf> {
    let include = example("c");
    let status = Command::new(compiler)
        .args(flags)
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(out)
        .arg(source)
        .status();
    match status {
        Ok(s) if s.success() => Some(out.to_owned()),
        Ok(s) => panic!("{compiler} failed on {} ({s})", source.display()),
        Err(e) => {
            skip(test, &format!("{compiler} is not available ({e})"));
            None
        }
    }
}

fn run_to_bytes(cluster: &Cluster, name: &str, payload: &Path, input: &Path) -> Vec<u8> {
    let output = cluster.output_dir(name).join("sums.bin");
    let run = cluster.run_job(&Job::new(payload, "bytes:4KiB", &output).input(input));
    run.check_success();
    std::fs::read(&output).unwrap_or_else(|e| panic!("no output: {e}\n{run}"))
}

#[test]
fn c_checksum_as_so_and_wasm_matches_the_wat() {
    const TEST: &str = "c_checksum_as_so_and_wasm_matches_the_wat";
    let cluster = Cluster::start(2);
    let input = cluster.dir().join("input.bin");
    std::fs::write(&input, pseudo_random_bytes(100_003, 7)).expect("write the input");
    let source = example("c/checksum.c");
    let Some(library) = build(TEST, "cc", &["-O2", "-shared", "-fPIC"], &source, &cluster.dir().join("checksum.so")) else {
        return;
    };
    let wat = run_to_bytes(&cluster, "wat", &example("checksum.wat"), &input);
    let native = run_to_bytes(&cluster, "so", &library, &input);
    check_same_bytes(&native, &wat, &"native .so against WAT");
    let wasm_flags = [
        "--target=wasm32",
        "-O2",
        "-nostdlib",
        "-Wl,--no-entry",
        "-Wl,--export=dispy_run",
        "-Wl,--export=dispy_alloc",
        "-Wl,--export=dispy_abi_version",
    ];
    if let Some(module) = build(TEST, "clang", &wasm_flags, &source, &cluster.dir().join("checksum.wasm")) {
        let wasm = run_to_bytes(&cluster, "wasm", &module, &input);
        check_same_bytes(&wasm, &wat, &"C compiled to wasm32 against WAT");
    }
}

#[test]
fn library_for_another_architecture_is_refused_at_submit() {
    const TEST: &str = "library_for_another_architecture_is_refused_at_submit";
    let cluster = Cluster::start(1);
    let source = example("c/checksum.c");
    let Some(library) = build(TEST, "cc", &["-O2", "-shared", "-fPIC"], &source, &cluster.dir().join("native.so")) else {
        return;
    };
    // Claim aarch64 (or x86_64 on an aarch64 host) in the ELF header's e_machine field.
    let mut bytes = std::fs::read(&library).expect("read the library");
    let foreign: u16 = if std::env::consts::ARCH == "aarch64" { 62 } else { 183 };
    bytes[18..20].copy_from_slice(&foreign.to_le_bytes());
    let foreign_library = cluster.dir().join("foreign.so");
    std::fs::write(&foreign_library, bytes).expect("write the patched library");
    let input = cluster.dir().join("input.bin");
    std::fs::write(&input, b"some bytes").expect("write the input");
    let output = cluster.output_dir("foreign").join("out.bin");
    let run = cluster.run_job(&Job::new(&foreign_library, "bytes:4KiB", &output).input(&input));
    assert_ne!(run.code, Some(0), "a foreign library must not run\n{run}");
    run.check_stderr_mentions(&["linux/", "payload"]);
    assert!(!output.exists(), "no output for a refused job\n{run}");
}

#[test]
fn crashing_library_fails_its_job_and_the_node_serves_the_next() {
    const TEST: &str = "crashing_library_fails_its_job_and_the_node_serves_the_next";
    let cluster = Cluster::start(1);
    let Some(crasher) =
        build(TEST, "cc", &["-O2", "-shared", "-fPIC"], &example("c/faults/segfault.c"), &cluster.dir().join("segfault.so"))
    else {
        return;
    };
    let input = cluster.dir().join("input.bin");
    std::fs::write(&input, pseudo_random_bytes(10_000, 3)).expect("write the input");
    let output = cluster.output_dir("crash").join("out.bin");
    let run = cluster.run_job(&Job::new(&crasher, "bytes:4KiB", &output).input(&input).flag("--max-attempts", "2"));
    run.check_code(1);
    run.check_stderr_mentions(&["SIGSEGV", "after 2 attempt"]);
    assert!(!output.exists(), "no output for a failed job\n{run}");
    // The node is still there and runs the next job.
    let wat = run_to_bytes(&cluster, "after", &example("checksum.wat"), &input);
    assert_eq!(wat.len(), 3 * 8, "one checksum per 4 KiB chunk");
}
