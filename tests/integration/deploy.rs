//! Operations artefacts: the systemd units pass `systemd-analyze verify`, and the install scripts
//! stage an idempotent install into a temporary root and uninstall cleanly. Both checks are shell
//! scripts in `deploy/` so operators can run them too; these tests run them. Without
//! `systemd-analyze` the units test skips (see `tests::skip`). The node unit waits out the node's
//! default `stop_timeout`.

use std::process::Command;

use tests::{skip, workspace_root};

/// Runs `script` for `test` (the test's function name): passes when it exits 0, skips when it
/// exits 2 because `systemd-analyze` is missing, and fails otherwise.
#[track_caller]
fn check_script(test: &str, script: &str) {
    let path = workspace_root().join(script);
    let out = Command::new("sh").arg(&path).output().unwrap_or_else(|e| panic!("cannot run sh {script}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(2) && text.contains("systemd-analyze") {
        skip(test, &format!("systemd-analyze is not installed (.ci/run installs systemd): {}", text.trim()));
        return;
    }
    assert!(out.status.success(), "{script} failed ({}):\n{text}", out.status);
}

#[test]
fn systemd_units_verify() {
    check_script("systemd_units_verify", "deploy/test-units.sh");
}

#[test]
fn staged_install_is_idempotent_and_uninstalls() {
    check_script("staged_install_is_idempotent_and_uninstalls", "deploy/test-install.sh");
}

/// systemd must wait longer for a stopping node than the node lets its chunks finish, or it
/// kills the node before it gives back what it holds.
#[test]
fn node_unit_outwaits_the_default_stop_timeout() {
    let unit = std::fs::read_to_string(workspace_root().join("systemd/dispy-node.service")).expect("read the node unit");
    let timeout = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().strip_suffix('s')?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no TimeoutStopSec=Ns in the node unit\n{unit}"));
    let stop_timeout = common::config::DEFAULT_STOP_TIMEOUT.as_secs();
    assert!(timeout > stop_timeout, "TimeoutStopSec={timeout}s does not exceed the node's stop_timeout ({stop_timeout}s)");
}
