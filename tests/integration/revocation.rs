//! Certificates as an operator manages them, with the real commands: `pki issue-admin` writes an
//! operator identity laid out like a client's, `--days` sets the lifetime of everything `pki`
//! issues and refuses nonsense, and `nodes|clients|admins revoke NAME` turns a certificate away at
//! connection and closes its open connections within seconds, each role with its own list, until
//! `unrevoke` lets it back.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tests::{assert_eventually, certificate_of, fixture, Cluster, Daemon, Job, Pki, EVENTUALLY_TIMEOUT};
use wire::proto::Role;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A scratch directory for a CA of its own.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("dispy-test-pki-").tempdir().expect("create a temporary directory")
}

/// The certificate in `dir` is valid for `days` days from about now.
#[track_caller]
fn check_valid_for(dir: &Path, days: u32) {
    let want = SystemTime::now() + DAY * days;
    let got = certificate_of(dir).not_after;
    let off = got.duration_since(want).or_else(|_| want.duration_since(got)).unwrap_or_default();
    assert!(off < Duration::from_secs(600), "{} is valid until {got:?}, not {days} days from now", dir.display());
}

#[test]
fn issue_admin_writes_an_operator_identity_laid_out_like_a_client() {
    let temp = scratch();
    let pki = Pki::init(&temp.path().join("ca"));
    let admin = pki.issue_admin("root");
    let client = pki.issue_client("alice");
    assert_eq!(admin, pki.dir().join("admins").join("root"));
    for dir in [&admin, &client] {
        assert_eq!(tests::dir_entries(dir), ["ca.pem", "cert.pem", "key.pem"], "{}", dir.display());
        let mode = std::fs::metadata(dir.join("key.pem")).expect("key.pem").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}/key.pem", dir.display());
        let ca = std::fs::read(dir.join("ca.pem")).expect("ca.pem");
        assert_eq!(ca, std::fs::read(pki.dir().join("ca.pem")).expect("the CA"), "{}", dir.display());
    }
    let (admin, client) = (certificate_of(&admin), certificate_of(&client));
    assert_eq!((admin.name.as_str(), admin.role), ("root", Role::Operator));
    assert_eq!((client.name.as_str(), client.role), ("alice", Role::Client));

    let elsewhere = temp.path().join("elsewhere");
    let out = elsewhere.to_str().expect("a UTF-8 path");
    pki.try_issue("issue-admin", "ops", &["--out", out]).check_success();
    assert_eq!(certificate_of(&elsewhere).role, Role::Operator);
}

#[test]
fn days_sets_the_lifetime_of_every_certificate_pki_issues() {
    let temp = scratch();
    let pki = Pki::init_with(&temp.path().join("ca"), &["--days", "30"]);
    check_valid_for(&pki.dispatcher_dir(), 30);
    check_valid_for(&pki.issue_client("default"), 365);
    for (action, folder, days) in [("issue-node", "nodes", "2"), ("issue-client", "clients", "3650"), ("issue-admin", "admins", "400")] {
        let run = pki.try_issue(action, "n", &["--days", days]);
        run.check_success();
        assert!(run.stdout.contains(&format!("valid for {days} days")), "{run}");
        check_valid_for(&pki.dir().join(folder).join("n"), days.parse().expect("a number"));
    }

    for (days, why) in [("0", "1 to 3650 days"), ("3651", "1 to 3650 days"), ("a year", "not a whole number of days")] {
        let run = pki.try_issue("issue-admin", "never", &["--days", days]);
        run.check_code(64);
        run.check_stderr_mentions(&["--days", why]);
        assert!(!pki.dir().join("admins").join("never").exists(), "a refused --days wrote a certificate\n{run}");
    }
    let mut init = tests::command("dispy-dispatcher");
    init.args(["pki", "init", "--days", "0", "--dir"]).arg(temp.path().join("no-ca"));
    tests::Run::capture(init, tests::COMMAND_TIMEOUT).check_code(64);
    assert!(!temp.path().join("no-ca").exists(), "a refused --days made a CA");
}

/// Spin rounds per chunk of `slow.wat` (see `faults`): a job of [`LONG_CHUNKS`] of them on one
/// one-slot node runs far longer than these tests.
const SPIN: &str = "30000000";
const LONG_CHUNKS: u32 = 2000;

/// Revokes `alice` with `dispy-dispatcher COMMAND revoke` while `identity` (role `role`) has a
/// long `dispy-submit run` going, then checks the run is cut off with the reason, new connections
/// are refused with it, the list shows it, and `unrevoke` lets the certificate back.
#[track_caller]
fn check_revocation(cluster: &Cluster, command: &str, role: &str, identity: &Path) {
    // A node of the same name is another certificate: revoking it does not touch this one.
    cluster.manage(&["nodes", "revoke", "alice"]).check_success();
    cluster.submit_as(identity, &[&"nodes"]).check_success();

    let output = cluster.output_dir(command).join("out.bin");
    let job = Job::new(&fixture("slow.wat"), &format!("range:0..{LONG_CHUNKS}:1"), &output).payload_args(SPIN);
    let log = cluster.dir().join(format!("run-{command}.log"));
    let mut run = Daemon::spawn("dispy-submit run", cluster.submit_command(identity, job.to_args()), &log);
    assert_eventually!(run.log().contains("progress:"), "the long job never made progress\n{}", run.log());

    let revoke = cluster.manage(&[command, "revoke", "alice"]);
    revoke.check_success();
    assert!(revoke.stdout.contains(&format!("revoked {role} \"alice\"")), "{revoke}");
    let status = run.wait_for_exit(EVENTUALLY_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "the open run was not cut off with exit code 2\n{}", run.log());
    let reason = format!("{role} \"alice\" is revoked");
    assert!(run.log().contains(&reason), "the cut-off run does not say why\n{}", run.log());

    let refused = cluster.submit_as(identity, &[&"nodes"]);
    refused.check_code(2);
    refused.check_stderr_mentions(&[&reason]);
    refused.check_one_line_error();
    assert!(refused.stdout.is_empty(), "a revoked certificate got a listing\n{refused}");
    assert_eq!(cluster.manage(&[command, "revoked"]).stdout, "alice\n");
    cluster.submit(&[&"nodes"]).check_success();

    cluster.manage(&[command, "unrevoke", "alice"]).check_success();
    cluster.submit_as(identity, &[&"nodes"]).check_success();
    let again = cluster.manage(&[command, "unrevoke", "alice"]);
    again.check_code(1);
    again.check_stderr_mentions(&[&format!("{role} \"alice\" is not revoked")]);
}

#[test]
fn a_revoked_client_is_cut_off_and_refused_until_unrevoked() {
    let cluster = Cluster::start(1);
    let alice = cluster.pki().issue_client("alice");
    check_revocation(&cluster, "clients", "client", &alice);
}

#[test]
fn a_revoked_operator_is_cut_off_and_refused_until_unrevoked() {
    let cluster = Cluster::start(1);
    let alice = cluster.pki().issue_admin("alice");
    check_revocation(&cluster, "admins", "operator", &alice);
}

#[test]
fn a_revoked_node_is_dropped_and_rejoins_once_unrevoked() {
    let mut cluster = Cluster::start(1);
    let alice = cluster.pki().issue_node("alice");
    cluster.start_node("alice", &alice);
    cluster.wait_for_nodes(&["alice", "n1"]);
    // A client of the same name is another certificate.
    cluster.manage(&["clients", "revoke", "alice"]).check_success();
    cluster.manage(&["nodes", "revoke", "alice"]).check_success();
    cluster.wait_for_nodes(&["n1"]);
    assert_eventually!(
        cluster.dispatcher_log().contains("refusing a revoked certificate"),
        "the node's reconnection was not refused"
    );
    cluster.manage(&["nodes", "unrevoke", "alice"]).check_success();
    cluster.wait_for_nodes(&["alice", "n1"]);
    cluster.check_all_alive();
}
