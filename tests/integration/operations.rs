//! Operations (issue 23): the one-command node install enrols against a real dispatcher and the
//! node runs a job; the dispatcher's certificate is re-issued and reloaded with SIGHUP while a
//! job runs, which finishes on the same connections; certificates issued with `--days 10` are
//! warned about by every daemon, `dispy-submit` and the dispatcher, and `nodes` shows when they
//! end; `check-config` passes a good setup and names each problem of broken ones.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tests::{
    assert_eventually, binary, check_same_bytes, command, example, fixture, free_udp_port, serial_output, skip,
    workspace_root, Cluster, Daemon, Job, Pki, Run, COMMAND_TIMEOUT,
};
use wire::proto::Role;

/// Seconds from now until `unix`, in whole days.
fn days_until(unix: u64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    unix.saturating_sub(now) / 86_400
}

/// Runs `deploy/install-node.sh ARGS`.
fn install_node(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    let mut install = std::process::Command::new("sh");
    install.arg(workspace_root().join("deploy/install-node.sh"));
    for arg in args {
        install.arg(arg);
    }
    Run::capture(install, COMMAND_TIMEOUT)
}

#[test]
fn one_command_install_enrols_and_the_node_runs_a_job() {
    let cluster = Cluster::builder().nodes(0).enrolment().start();
    let ca_dir = cluster.pki().dir().display().to_string();
    let token = cluster.manage(&["token", "create", "--name", "joined", "--ca-dir", &ca_dir]);
    token.check_success();
    let token = token.stdout.trim().to_owned();
    let root = cluster.dir().join("staged");
    let node_binary = binary("dispy-node");
    let install = install_node(&[&"--root", &root, &"--dispatcher", &cluster.address(), &"--token", &token, &node_binary]);
    install.check_success();
    let tls = root.join("etc/dispy/node");
    let certificate = tests::certificate_of(&tls);
    assert_eq!((certificate.name.as_str(), certificate.role), ("joined", Role::Node), "{install:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tls.join("key.pem")).expect("key.pem").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the node's key must be private");
    let config = root.join("etc/dispy/node.toml");
    let text = std::fs::read_to_string(&config).expect("node.toml");
    assert!(text.contains(&format!("dispatcher = \"{}\"", cluster.address())), "{text}");
    assert!(root.join("usr/local/share/dispy/dispy-node-setup.sh").exists(), "no setup script for the root steps");

    // Again, with the now spent token: nothing changes, and nothing is redeemed.
    let again = install_node(&[&"--root", &root, &"--dispatcher", &cluster.address(), &"--token", &token, &node_binary]);
    again.check_success();
    assert!(again.stdout.contains("already enrolled") && again.stdout.contains("nothing changed"), "{again:?}");

    // The node as the staged tree would run it: its binary and config, plus this test's
    // writable directories (the config's defaults are under /var/lib and /etc).
    let mut node = std::process::Command::new(root.join("usr/local/bin/dispy-node"));
    node.arg("--config")
        .arg(&config)
        .arg("--tls-dir")
        .arg(&tls)
        .arg("--cache-dir")
        .arg(cluster.dir().join("cache-joined"))
        .arg("--scratch-dir")
        .arg(cluster.dir().join("scratch-joined"))
        .arg("--slots")
        .arg("1")
        .env_remove("RUST_LOG");
    let node = Daemon::spawn("node joined", node, &cluster.dir().join("node-joined.log"));
    let joined = tests::poll_until(tests::EVENTUALLY_TIMEOUT, || cluster.ready_nodes().is_some_and(|n| n == ["joined"]));
    assert!(joined, "the installed node never joined\n{}\n{}", node.log(), cluster.logs());
    let output = cluster.output_dir("joined").join("sums.bin");
    let input = example("data/lorem.txt");
    cluster.run_job(&Job::new(&example("checksum.wat"), "bytes:1KiB", &output).input(&input)).check_success();
    let expected = serial_output(&example("checksum.wat"), b"", "bytes:1KiB", &[input]);
    check_same_bytes(&std::fs::read(&output).expect("output"), &expected, &cluster.logs());
}

#[test]
fn dispatcher_certificate_reissued_and_reloaded_under_a_running_job() {
    let mut cluster = Cluster::start(1);
    let output = cluster.output_dir("reload").join("out.bin");
    let job = Job::new(&fixture("slow.wat"), "range:0..30:1", &output).payload_args("30000000");
    let mut run = Daemon::spawn(
        "dispy-submit run",
        cluster.submit_command(cluster.client_dir(), job.to_args()),
        &cluster.dir().join("run.log"),
    );
    assert_eventually!(cluster.dispatcher_log().contains("job submitted"), "the job never started");
    let before = tests::certificate_of(&cluster.pki().dispatcher_dir());

    // Re-issued under the same CA, valid for ten days, straight into the dispatcher's tls_dir.
    let mut issue = command("dispy-dispatcher");
    issue.args(["pki", "issue-dispatcher", "--days", "10", "--dir"]).arg(cluster.pki().dir());
    Run::capture(issue, COMMAND_TIMEOUT).check_success();
    let after = tests::certificate_of(&cluster.pki().dispatcher_dir());
    assert!(after.not_after < before.not_after && after.role == Role::Dispatcher, "{before:?} {after:?}");
    let pid = cluster.dispatcher().pid();
    assert!(run.is_alive(), "the job ended before the reload:\n{}", run.log());
    signal_hup(pid);
    assert_eventually!(
        cluster.dispatcher_log().contains("reloaded the dispatcher's certificate"),
        "no reload logged:\n{}",
        cluster.dispatcher_log()
    );
    let log = cluster.dispatcher_log();
    assert!(log.contains("certificate expires soon") && log.contains("this dispatcher's"), "{log}");

    // The job finishes on the connections it had: the node never rejoined.
    let status = run.wait_for_exit(COMMAND_TIMEOUT).expect("the job finishes");
    assert!(status.success(), "the job failed after the reload:\n{}", run.log());
    let expected = serial_output(&fixture("slow.wat"), b"30000000", "range:0..30:1", &[]);
    check_same_bytes(&std::fs::read(&output).expect("output"), &expected, &cluster.logs());
    let log = cluster.dispatcher_log();
    assert!(log.matches("node joined").count() == 1 && !log.contains("node rejoined") && !log.contains("node left"), "{log}");
    // New connections get the new certificate and work.
    cluster.submit(&[&"nodes"]).check_success();

    // A certificate from another CA is refused on reload, and the current one stays.
    let foreign = Pki::init(&cluster.dir().join("other-ca"));
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(foreign.dispatcher_dir().join(file), cluster.pki().dispatcher_dir().join(file)).expect("copy");
    }
    signal_hup(pid);
    assert_eventually!(cluster.dispatcher_log().contains("kept the current certificate"), "no refusal logged");
    cluster.submit(&[&"nodes"]).check_success();
    cluster.check_all_alive();
}

fn signal_hup(pid: u32) {
    let sent = std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status().expect("run kill");
    assert!(sent.success(), "kill -HUP {pid} failed");
}

#[test]
fn certificates_issued_for_ten_days_are_warned_about() {
    let mut cluster = Cluster::start(0);
    let short_node = cluster.pki().try_issue("issue-node", "short", &["--days", "10"]);
    short_node.check_success();
    let node_dir = cluster.pki().dir().join("nodes/short");
    cluster.start_node("short", &node_dir);
    cluster.wait_for_nodes(&["short"]);
    let nodes = cluster.nodes_json().expect("nodes --json");
    let expires = nodes[0]["cert_expires_unix"].as_u64().expect("cert_expires_unix");
    assert!((9..=10).contains(&days_until(expires)), "{nodes:?}");
    let table = cluster.submit(&[&"nodes"]);
    // Ten days less the moments since it was issued, shown in whole days, rounded either way.
    assert!(table.stdout.contains("CERT") && (table.stdout.contains(" 9d ") || table.stdout.contains(" 10d ")), "{table:?}");
    assert_eventually!(cluster.node(0).log().contains("certificate expires soon"), "the node did not warn");
    let log = cluster.dispatcher_log();
    assert!(log.contains("peer certificate expires soon") && log.contains("short"), "{log}");

    cluster.pki().try_issue("issue-client", "brief", &["--days", "10"]).check_success();
    let brief = cluster.pki().dir().join("clients/brief");
    let run = cluster.submit_as(&brief, &[&"jobs"]);
    run.check_success();
    assert!(run.stderr.contains("warning: the client certificate \"brief\" expires at"), "{run:?}");
    assert_eventually!(
        cluster.dispatcher_log().matches("peer certificate expires soon").count() >= 2,
        "the dispatcher did not warn about the client"
    );
    // A year-long certificate is not warned about.
    let quiet = cluster.submit(&[&"jobs"]);
    assert!(!quiet.stderr.contains("warning"), "{quiet:?}");
}

/// A dispatcher and a node setup for `check-config`, each problem made in a copy of it.
struct Setup {
    _temp: tempfile::TempDir,
    dir: PathBuf,
    pki: Pki,
    config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let temp = tempfile::Builder::new().prefix("dispy-check-").tempdir().expect("temp dir");
        let dir = temp.path().to_owned();
        let pki = Pki::init(&dir.join("ca"));
        pki.issue_node("n1");
        pki.issue_node("other");
        let config = dir.join("empty.toml");
        std::fs::write(&config, "").expect("write config");
        Setup { _temp: temp, dir, pki, config }
    }

    fn dispatcher(&self, tls: &Path, state: &Path, extra: &[&str]) -> Run {
        let mut check = command("dispy-dispatcher");
        check
            .arg("check-config")
            .arg("--config")
            .arg(&self.config)
            .arg("--tls-dir")
            .arg(tls)
            .arg("--state-dir")
            .arg(state)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_udp_port()))
            .args(extra);
        Run::capture(check, COMMAND_TIMEOUT)
    }

    fn node(&self, tls: &Path, config: Option<&Path>) -> Run {
        let mut check = command("dispy-node");
        check
            .arg("check-config")
            .arg("--config")
            .arg(config.unwrap_or(&self.config))
            .arg("--tls-dir")
            .arg(tls)
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .arg("--scratch-dir")
            .arg(self.dir.join("scratch"));
        Run::capture(check, COMMAND_TIMEOUT)
    }

    /// A copy of identity `from` in a new directory `name`.
    fn copy_identity(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.dir.join(name);
        std::fs::create_dir_all(&to).expect("create dir");
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::copy(from.join(file), to.join(file)).expect("copy");
        }
        to
    }
}

/// Checks a failed check: exit 64, one `problem:` line naming each of `needles` in order.
#[track_caller]
fn check_problems(run: &Run, needles: &[&str]) {
    run.check_code(64);
    let problems: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("problem: ")).collect();
    assert_eq!(problems.len(), needles.len(), "{run:?}");
    for (line, needle) in problems.iter().zip(needles) {
        assert!(line.contains(needle) && line.contains("the daemon would"), "{line:?} lacks {needle:?}");
    }
}

#[test]
fn check_config_passes_a_good_setup_and_names_each_problem() {
    let setup = Setup::new();
    let state = setup.dir.join("state");
    let node_dir = setup.pki.dir().join("nodes/n1");
    let good = setup.dispatcher(&setup.pki.dispatcher_dir(), &state, &[]);
    good.check_success();
    assert!(good.stdout.trim().is_empty() && good.stderr.contains("would start cleanly"), "{good:?}");
    setup.node(&node_dir, None).check_success();

    // The wrong key: another node's.
    let wrong_key = setup.copy_identity(&node_dir, "wrong-key");
    std::fs::copy(setup.pki.dir().join("nodes/other/key.pem"), wrong_key.join("key.pem")).expect("copy key");
    check_problems(&setup.node(&wrong_key, None), &["key.pem is not the key of"]);

    // An expired certificate, under the right CA.
    let expired = setup.dir.join("expired");
    let ca = common::pki::CertificateAuthority::load(setup.pki.dir()).expect("load the CA");
    let now = SystemTime::now();
    let issued = ca
        .issue_between(Role::Dispatcher, "dispatcher", now - Duration::from_secs(40 * 86_400), now - Duration::from_secs(86_400))
        .expect("issue");
    ca.write_to_dir(&issued, &expired).expect("write");
    check_problems(&setup.dispatcher(&expired, &state, &[]), &["cert.pem expired at"]);

    // An unknown key, with its origin and a suggestion, and an invalid value: all at once.
    let bad = setup.dir.join("bad.toml");
    std::fs::write(&bad, "slot = 2\nheartbeat_interval = \"fast\"\n").expect("write");
    let run = setup.node(&node_dir, Some(&bad));
    check_problems(&run, &["unknown key \"slot\" (did you mean \"slots\"?)", "key \"heartbeat_interval\""]);
    assert!(run.stdout.contains(bad.to_str().expect("utf-8 path")), "{run:?}");

    // An unwritable state directory: a read-only tmpfs as root (root writes anywhere else),
    // mode 0555 otherwise.
    let locked = setup.dir.join("locked");
    std::fs::create_dir(&locked).expect("create dir");
    let _mount;
    if is_root() {
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "dispy-test-ro"])
            .arg(&locked)
            .output();
        match output {
            Ok(o) if o.status.success() => _mount = Unmount(locked.clone()),
            other => {
                skip(
                    "check_config_passes_a_good_setup_and_names_each_problem",
                    &format!("cannot mount a read-only tmpfs as root for the unwritable state dir: {other:?}"),
                );
                return;
            }
        }
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        _mount = Unmount(PathBuf::new());
    }
    let run = setup.dispatcher(&setup.pki.dispatcher_dir(), &locked.join("state"), &[]);
    check_problems(&run, &["key \"state_dir\": "]);
    assert!(run.stdout.contains("cannot be created"), "{run:?}");
    assert!(run.stdout.contains("flag --state-dir"), "{run:?}");
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Unmounts a mount point on drop (an empty path: nothing).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
}
