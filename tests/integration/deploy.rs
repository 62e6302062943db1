//! Operations artefacts: the systemd units pass `systemd-analyze verify`, and the install scripts
//! stage an idempotent install into a temporary root and uninstall cleanly. Both checks are shell
//! scripts in `deploy/` so operators can run them too; these tests run them.

use std::process::Command;

use tests::workspace_root;

#[track_caller]
fn check_script(script: &str) {
    let path = workspace_root().join(script);
    let out = Command::new("sh").arg(&path).output().unwrap_or_else(|e| panic!("cannot run sh {script}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(2) && text.contains("systemd-analyze") {
        println!("SKIPPING {script}: systemd-analyze is not installed (.ci/run installs systemd)\n{text}");
        return;
    }
    assert!(out.status.success(), "{script} failed ({}):\n{text}", out.status);
}

#[test]
fn systemd_units_verify() {
    check_script("deploy/test-units.sh");
}

#[test]
fn staged_install_is_idempotent_and_uninstalls() {
    check_script("deploy/test-install.sh");
}
