//! Where the test inputs and the workspace binaries are: [`workspace_root`], [`example`] and
//! [`fixture`] paths, and [`binary`], which builds every binary of the workspace once per test
//! process (`$CARGO build --workspace --bins`, with the test's profile) so a test never runs a
//! stale one. [`command`] starts a binary with the environment the harness promises.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The workspace root (where the root `Cargo.toml`, `examples/` and `tests/` are).
pub fn workspace_root() -> PathBuf {
    // This crate is `tests/` at the root of the workspace.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// A file in `examples/`, e.g. `example("checksum.wat")`.
pub fn example(name: &str) -> PathBuf {
    workspace_root().join("examples").join(name)
}

/// A file in `tests/fixtures/`, e.g. `fixture("trap.wat")`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// The path of a workspace binary (`dispy-dispatcher`, `dispy-node`, `dispy-submit`), built
/// fresh by the first call in this process.
///
/// # Panics
/// If the build fails or the binary is not where the build put the others.
pub fn binary(name: &str) -> PathBuf {
    let dir = match built_binaries() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "binary {} does not exist after building the workspace", path.display());
    path
}

/// Builds every binary of the workspace once per process and returns the directory holding them
/// (the test executable lives in its `deps/` subdirectory).
fn built_binaries() -> &'static Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| format!("cannot locate the test executable: {e}"))?;
        // target/<profile>/deps/integration-HASH -> target/<profile>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| format!("unexpected test executable location {}", exe.display()))?
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(&cargo);
        build
            .arg("build")
            .arg("--workspace")
            .arg("--bins")
            .arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"));
        // Cargo sets these for the test process. Build scripts (ring's) track some of them, so
        // passing them on would make this build, and the next ordinary one, rebuild half the tree.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            let set_by_cargo = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_", "CARGO_CRATE_NAME"]
                .iter()
                .any(|prefix| key_text.starts_with(prefix))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"]
                    .contains(&&*key_text);
            if set_by_cargo {
                build.env_remove(&key);
            }
        }
        // Build with the profile the tests were built with, so the binaries land in `dir`.
        match dir.file_name().and_then(OsStr::to_str) {
            Some("debug") | None => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) => {
                build.arg("--profile").arg(profile);
            }
        }
        let output = build.output().map_err(|e| format!("failed to run {cargo:?}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "`cargo build --workspace --bins` failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(dir)
    })
}

/// A command to run a workspace binary, with the environment the harness promises: `RUST_LOG`
/// from `DISPY_TEST_LOG` (default `info`), no inherited `DISPY_*` variables, no stdin.
pub fn command(binary_name: &str) -> Command {
    let mut command = Command::new(binary(binary_name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DISPY_") {
            command.env_remove(key);
        }
    }
    let log = std::env::var("DISPY_TEST_LOG").unwrap_or_else(|_| "info".to_owned());
    command.env("RUST_LOG", log).env("NO_COLOR", "1").stdin(Stdio::null());
    command
}

/// Builds the C fixture `tests/fixtures/NAME.c` into `dir/NAME.so` with `cc`, against
/// `examples/c/dispy.h`; `None` (after [`crate::skip`]) when `cc` is missing.
///
/// # Panics
/// If `cc` fails on the source.
pub fn native_fixture(test: &str, name: &str, dir: &Path) -> Option<PathBuf> {
    let out = dir.join(format!("{name}.so"));
    let status = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-I"])
        .arg(example("c"))
        .arg("-o")
        .arg(&out)
        .arg(fixture(&format!("{name}.c")))
        .status();
    match status {
        Ok(s) if s.success() => Some(out),
        Ok(s) => panic!("cc failed on {name}.c ({s})"),
        Err(e) => {
            crate::skip(test, &format!("cc is not available ({e})"));
            None
        }
    }
}
