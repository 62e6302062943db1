//! Test fixtures built at test time, never committed: the C examples and fault payloads in
//! `examples/c/` compiled with `cc` to `.so` and with `clang` to wasm32 and wasm32-wasi, and the
//! Rust SDK's example built with cargo, all into one temporary directory per test run.
//!
//! The commands are those of `examples/c/Makefile`. A test names the targets it builds up front
//! ([`Fixtures::new`]); when a toolchain is missing (no `cc`, no `clang`, or a clang without the
//! wasm32 linker or the WASI sysroot) [`skip`] prints one `SKIPPED <test>: <why>` line, or fails
//! the test under `DISPY_TEST_STRICT=1`, and [`Fixtures::build`] returns `None` for that target,
//! so the test skips that part. A fixture that fails to build with a working toolchain fails the
//! test.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// What a fixture is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// A shared library for this machine: `cc -O2 -shared -fPIC`.
    Native,
    /// A dispy ABI WebAssembly module: `clang --target=wasm32 -nostdlib`.
    Wasm32,
    /// A WASI command (a filter): `clang --target=wasm32-wasi` with wasi-libc.
    Wasi,
}

/// The workspace root.
pub(crate) fn root() -> &'static Path {
    // Invariant: the node crate sits one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("node/ has a parent")
}

/// The temporary directory every fixture of this run is built into.
fn out_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new().prefix("dispy-fixtures-").tempdir().expect("a temporary directory")
    })
    .path()
}

/// The fixtures of one test: the targets it builds, whose toolchains were probed when it began.
#[derive(Debug)]
pub(crate) struct Fixtures {
    /// The test's function name, for messages.
    test: &'static str,
    /// Each target the test declared, and whether its toolchain works here.
    targets: Vec<(Target, bool)>,
}

impl Fixtures {
    /// Probes the toolchains of `targets` for `test` (the test's function name) and reports the
    /// missing ones, all in one line, through [`skip`].
    ///
    /// # Panics
    /// Under `DISPY_TEST_STRICT=1`, when a toolchain is missing.
    #[track_caller]
    pub(crate) fn new(test: &'static str, targets: &[Target]) -> Fixtures {
        let targets: Vec<(Target, bool)> = targets.iter().map(|&target| (target, toolchain(target))).collect();
        let missing: Vec<String> = targets
            .iter()
            .filter(|(_, works)| !works)
            .map(|(target, _)| format!("its {target:?} fixtures need {}", needs(*target)))
            .collect();
        if !missing.is_empty() {
            skip(test, &format!("{}, which this machine lacks", missing.join(" and ")));
        }
        Fixtures { test, targets }
    }

    /// Builds `examples/c/<source>` for `target` (once per run) and returns the artifact, or
    /// `None` when the toolchain for `target` is missing (already reported by [`Fixtures::new`]).
    ///
    /// # Panics
    /// When the toolchain works but the fixture does not build, or `target` was not declared.
    #[track_caller]
    pub(crate) fn build(&self, source: &str, target: Target) -> Option<PathBuf> {
        let Some(&(_, works)) = self.targets.iter().find(|(declared, _)| *declared == target) else {
            panic!("{} builds {target:?} fixtures without naming the target in Fixtures::new", self.test);
        };
        works.then(|| build(source, target))
    }
}

/// Reports that `test` cannot run (all or part of it) because of `why`: prints the one line
/// `SKIPPED <test>: <why>` straight to stderr, past libtest's capture so every run shows it.
///
/// # Panics
/// With the same reason when `DISPY_TEST_STRICT=1` is set (as `.ci/run` does), where a test
/// that cannot run is a failure rather than a silent pass.
#[track_caller]
fn skip(test: &str, why: &str) {
    let strict = std::env::var("DISPY_TEST_STRICT").is_ok_and(|v| v == "1");
    assert!(!strict, "{test} cannot run: {why} (DISPY_TEST_STRICT=1 makes this a failure, not a skip)");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Builds `examples/c/<source>` for `target` (once per run) and returns the artifact.
///
/// # Panics
/// When the fixture does not build.
#[track_caller]
fn build(source: &str, target: Target) -> PathBuf {
    type Slot = Arc<OnceLock<Result<PathBuf, String>>>;
    static BUILT: OnceLock<Mutex<HashMap<(String, Target), Slot>>> = OnceLock::new();
    let slot = {
        let mut built = BUILT.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(built.entry((source.to_string(), target)).or_default())
    };
    match slot.get_or_init(|| compile(source, target)) {
        Ok(path) => path.clone(),
        Err(error) => panic!("{error}"),
    }
}

/// Runs the build command for one fixture.
fn compile(source: &str, target: Target) -> Result<PathBuf, String> {
    let input = root().join("examples/c").join(source);
    let stem = Path::new(source).file_stem().and_then(|s| s.to_str()).unwrap_or("fixture");
    let (extension, mut command) = match target {
        Target::Native => {
            let mut cc = Command::new("cc");
            cc.args(["-O2", "-ffp-contract=off", "-shared", "-fPIC"]);
            ("so", cc)
        }
        Target::Wasm32 => {
            let mut clang = Command::new("clang");
            clang.args(["--target=wasm32", "-O2", "-ffp-contract=off", "-nostdlib", "-Wl,--no-entry"]);
            ("wasm", clang)
        }
        Target::Wasi => {
            let mut clang = Command::new("clang");
            clang.args(["--target=wasm32-wasi", "-O2"]);
            ("wasi.wasm", clang)
        }
    };
    let output = out_dir().join(format!("{stem}.{extension}"));
    let result = command.arg("-o").arg(&output).arg(&input).output();
    match result {
        Ok(done) if done.status.success() => Ok(output),
        Ok(done) => Err(format!(
            "building {} for {target:?} failed: {}",
            input.display(),
            String::from_utf8_lossy(&done.stderr)
        )),
        Err(e) => Err(format!("building {} for {target:?}: {e}", input.display())),
    }
}

/// What building fixtures for `target` takes.
fn needs(target: Target) -> &'static str {
    match target {
        Target::Native => "cc (gcc or clang)",
        Target::Wasm32 => "clang and lld",
        Target::Wasi => "clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (or your clang's wasm32 builtins)",
    }
}

/// Whether the toolchain for `target` works, probed once per run with a trivial program.
fn toolchain(target: Target) -> bool {
    static PROBES: OnceLock<Mutex<HashMap<Target, bool>>> = OnceLock::new();
    let mut probes = PROBES.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    *probes.entry(target).or_insert_with(|| {
        let (program, flags): (&str, &[&str]) = match target {
            Target::Native => ("int f(void) { return 0; }", &["-shared", "-fPIC"]),
            Target::Wasm32 => (
                "__attribute__((export_name(\"f\"))) int f(void) { return 0; }",
                &["--target=wasm32", "-nostdlib", "-Wl,--no-entry"],
            ),
            Target::Wasi => (
                "#include <stdio.h>\nint main(void) { return puts(\"\") < 0; }",
                &["--target=wasm32-wasi"],
            ),
        };
        let compiler = if target == Target::Native { "cc" } else { "clang" };
        let dir = out_dir().join(format!("probe-{target:?}"));
        std::fs::create_dir_all(&dir).is_ok()
            && std::fs::write(dir.join("probe.c"), program).is_ok()
            && Command::new(compiler)
                .args(flags)
                .arg("-o")
                .arg(dir.join("probe.out"))
                .arg(dir.join("probe.c"))
                .output()
                .is_ok_and(|out| out.status.success())
    })
}

/// Builds the Rust SDK's example payload (`sdk/examples/checksum.rs`, a cdylib) and returns the
/// `.so`. Cargo runs in its own target directory, since the one running these tests is locked.
pub(crate) fn build_sdk_example() -> PathBuf {
    sdk_examples().join("libchecksum.so")
}

/// Builds the Rust SDK's reducing example (`sdk/examples/wordcount.rs`) and returns the `.so`.
pub(crate) fn build_sdk_reduce_example() -> PathBuf {
    sdk_examples().join("libwordcount.so")
}

/// Builds every SDK example once per run; returns the directory of the `.so` files.
fn sdk_examples() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let target_dir = out_dir().join("sdk-target");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--offline", "--quiet", "--example", "checksum", "--example", "wordcount", "--manifest-path"])
            .arg(root().join("sdk/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .output()
            .map_err(|e| format!("running cargo: {e}"))?;
        if !output.status.success() {
            return Err(format!("cargo build of the SDK examples failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        Ok(target_dir.join("debug/examples"))
    });
    match built {
        Ok(path) => path.clone(),
        Err(error) => panic!("{error}"),
    }
}
