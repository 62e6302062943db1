//! Issue 17, tenants, with real processes and certificates from the real `pki` commands (two
//! clients, alice and bob, and an operator, root): a client sees, follows, cancels and fetches
//! only its own jobs, and another client's job answers exactly as a job that does not exist; only
//! operators drain nodes; operators see every job with its owner and cancel any; the owner
//! survives a dispatcher restart; each quota refuses with its name, limit and use, and an upload
//! over the spool quota fails only its own job; with alice's long job running, bob's short job
//! finishes long before hers.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tests::durable::DurableCluster;
use tests::{assert_eventually, fixture, poll_until, pseudo_random_bytes, Run};

/// Spin iterations per chunk of `count.wat` (about 0.2 s on this class of machine): a job of a
/// few dozen chunks runs for seconds, long enough to act on it. Not a timing assertion.
const SPIN: &str = "100000000";

/// How long a node may take to notice a restarted dispatcher (its QUIC idle timeout, 10 s) and
/// rejoin, with room for a loaded machine.
const NODE_REJOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The identity directories of alice, bob and the operator root.
struct People {
    alice: PathBuf,
    bob: PathBuf,
    root: PathBuf,
}

fn people(cluster: &DurableCluster) -> People {
    People {
        alice: cluster.pki().issue_client("alice"),
        bob: cluster.pki().issue_client("bob"),
        root: cluster.pki().issue_admin("root"),
    }
}

/// `dispy-submit submit` of `count.wat` over `chunks` chunks as `who`; returns the job id.
#[track_caller]
fn submit_slow(cluster: &DurableCluster, who: &Path, chunks: u64, output: &Path) -> u64 {
    submit_slow_with(cluster, who, &slow_args(chunks, output, "submit"))
}

#[track_caller]
fn submit_slow_with(cluster: &DurableCluster, who: &Path, args: &[std::ffi::OsString]) -> u64 {
    let run = cluster.submit_as(who, &args.iter().map(|a| a as &dyn AsRef<OsStr>).collect::<Vec<_>>());
    run.check_success();
    run.stdout.trim().parse().unwrap_or_else(|_| panic!("`submit` did not print a job id\n{run}"))
}

fn slow_args(chunks: u64, output: &Path, verb: &str) -> Vec<std::ffi::OsString> {
    let split = format!("range:0..{chunks}:1");
    [verb, "--payload"]
        .map(Into::into)
        .into_iter()
        .chain([fixture("count.wat").into(), "--split".into(), split.into(), "--args".into(), SPIN.into()])
        .chain(["--output".into(), output.into()])
        .collect()
}

/// `CMD ARGS --json` as `who`, parsed.
#[track_caller]
fn json(cluster: &DurableCluster, who: &Path, args: &[&dyn AsRef<OsStr>]) -> serde_json::Value {
    let mut full = args.to_vec();
    full.push(&"--json");
    let run = cluster.submit_as(who, &full);
    run.check_success();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{run}"))
}

/// The run failed (not a timeout) and said `message` on stderr, and printed nothing.
#[track_caller]
fn check_refused(run: &Run, message: &str) {
    assert!(!run.timed_out && run.code.is_some_and(|c| c != 0), "expected a refusal\n{run}");
    assert!(run.stderr.contains(message), "expected {message:?} on stderr\n{run}");
    assert!(run.stdout.trim().is_empty(), "a refusal prints nothing on stdout\n{run}");
}

/// What the dispatcher answers about a job id that does not exist, with `job`'s id in place.
fn unknown_job_message(cluster: &DurableCluster, who: &Path, job: u64) -> String {
    let run = cluster.submit_as(who, &[&"status", &"999999"]);
    assert!(run.code.is_some_and(|c| c != 0), "job 999999 exists?\n{run}");
    let line = run.stderr.lines().find(|l| l.contains("999999")).unwrap_or_else(|| panic!("no message\n{run}"));
    line.replace("999999", &job.to_string())
}

#[test]
fn a_tenant_sees_only_its_own_jobs_and_an_operator_sees_all_across_a_restart() {
    let mut cluster = DurableCluster::builder().nodes(1).slots(1).start();
    let People { alice, bob, root } = people(&cluster);
    let output = cluster.path("alice.out");
    let job = submit_slow(&cluster, &alice, 300, &output);
    let id = job.to_string();
    let unknown = unknown_job_message(&cluster, &bob, job);

    // Bob cannot see, follow, cancel or fetch alice's job: it answers as one that does not exist.
    check_refused(&cluster.submit_as(&bob, &[&"status", &id]), &unknown);
    check_refused(&cluster.submit_as(&bob, &[&"cancel", &id]), &unknown);
    let stolen = cluster.path("bob-stole.out");
    check_refused(&cluster.submit_as(&bob, &[&"wait", &id, &"--output", &stolen]), &unknown);
    assert!(!stolen.exists(), "bob's wait wrote an output");
    assert_eq!(json(&cluster, &bob, &[&"jobs"]), serde_json::json!([]), "bob lists none of alice's jobs");
    check_refused(&cluster.submit_as(&bob, &[&"drain", &"n1"]), "only an operator may drain nodes");
    check_refused(&cluster.submit_as(&alice, &[&"undrain", &"n1"]), "only an operator may undrain nodes");
    let listing = json(&cluster, &bob, &[&"nodes"]);
    let state = listing[0]["state"].as_str().unwrap_or_default();
    assert!(!state.starts_with("drain"), "clients may list nodes, and bob's drain changed nothing: {listing}");

    // Alice still has her job; the operator sees it with its owner.
    assert_eq!(json(&cluster, &alice, &[&"status", &id])["state"], "running");
    let all = json(&cluster, &root, &[&"jobs"]);
    assert_eq!((all[0]["job"].as_u64(), all[0]["owner"].as_str()), (Some(job), Some("alice")), "{all}");
    let table = cluster.submit_as(&root, &[&"jobs"]);
    table.check_success();
    assert!(table.stdout.contains("OWNER") && table.stdout.contains("alice"), "no owner column\n{table}");

    // The owner is journaled: after a SIGKILL and restart nothing changes hands.
    cluster.kill_dispatcher();
    cluster.start_dispatcher();
    check_refused(&cluster.submit_as(&bob, &[&"status", &id]), &unknown);
    assert_eq!(json(&cluster, &alice, &[&"status", &id])["owner"], "alice");
    assert_eq!(json(&cluster, &root, &[&"status", &id])["owner"], "alice");
    // The node notices the restart only at its idle timeout, then rejoins.
    let rejoined = poll_until(NODE_REJOIN_TIMEOUT, || json(&cluster, &root, &[&"nodes"]).as_array().is_some_and(|n| n.len() == 1));
    assert!(rejoined, "the node never rejoined the restarted dispatcher\n{}", cluster.logs());

    // Operators drain and undrain nodes, and cancel anyone's job.
    let drained = cluster.submit_as(&root, &[&"drain", &"n1"]);
    drained.check_success();
    let state = json(&cluster, &root, &[&"nodes"])[0]["state"].as_str().unwrap_or_default().to_owned();
    assert!(state.starts_with("drain"), "an operator's drain did not take: {state}");
    cluster.submit_as(&root, &[&"undrain", &"n1"]).check_success();
    let state = json(&cluster, &root, &[&"nodes"])[0]["state"].as_str().unwrap_or_default().to_owned();
    assert!(!state.starts_with("drain"), "an operator's undrain did not take: {state}");
    let cancelled = cluster.submit_as(&root, &[&"cancel", &id]);
    cancelled.check_success();
    assert_eq!(json(&cluster, &alice, &[&"status", &id])["state"], "cancelled");
    cluster.check_all_alive();
}

#[test]
fn quotas_refuse_with_their_limit_and_use_and_a_full_spool_fails_only_its_upload() {
    let mut cluster = DurableCluster::builder()
        .nodes(1)
        .slots(1)
        .dispatcher_args(&["--tenant-max-jobs", "1", "--tenant-max-spool", "64KiB", "--tenants", "{ bob = { max_jobs = 2 } }"])
        .start();
    let People { alice, bob, .. } = people(&cluster);

    let first = submit_slow(&cluster, &alice, 20, &cluster.path("a1.out"));
    let second = cluster.submit_as(&alice, &slow_args(2, &cluster.path("a2.out"), "submit").iter().map(|a| a as &dyn AsRef<OsStr>).collect::<Vec<_>>());
    check_refused(&second, "quota max_jobs of alice is 1 jobs queued or running at once, and 1 are");

    // Bob's override gives him two; his input is tiny.
    let bobs = [submit_slow(&cluster, &bob, 3, &cluster.path("b1.out")), submit_slow(&cluster, &bob, 3, &cluster.path("b2.out"))];

    // Carol's upload crosses the 64 KiB spool quota: her job fails with the quota's words.
    let carol = cluster.pki().issue_client("carol");
    let input = cluster.path("big.bin");
    std::fs::write(&input, pseudo_random_bytes(256 << 10, 17)).expect("write the input");
    let output = cluster.path("carol.out");
    let payload = tests::example("checksum.wat");
    let run = cluster.submit_as(&carol, &[&"run", &"--payload", &payload, &"--split", &"bytes:8KiB", &"--output", &output, &"--input", &input]);
    assert!(run.code.is_some_and(|c| c != 0), "an upload over the spool quota succeeded\n{run}");
    run.check_stderr_mentions(&["quota max_spool of carol is 64.0 KiB"]);
    assert!(!output.exists(), "a failed job leaves no output\n{run}");

    // Nobody else lost anything: alice's and bob's jobs run on and finish.
    cluster.check_all_alive();
    for job in [first].iter().chain(&bobs) {
        let id = job.to_string();
        let owner = if *job == first { &alice } else { &bob };
        assert_eventually!(
            json(&cluster, owner, &[&"status", &id])["state"] == "succeeded",
            "job {job} did not finish after carol's failed upload"
        );
    }
    // With alice's job finished, her quota has room again.
    submit_slow(&cluster, &alice, 1, &cluster.path("a3.out"));
}

/// Alice's long job has a higher priority than anything of bob's: priority orders only a
/// tenant's own jobs, so fair share between tenants still gives bob half of the slots.
#[test]
fn a_short_job_of_one_tenant_overtakes_a_long_high_priority_job_of_another() {
    let cluster = DurableCluster::builder().nodes(1).slots(2).start();
    let People { alice, bob, .. } = people(&cluster);
    let mut args = slow_args(400, &cluster.path("long.out"), "submit");
    args.extend(["--priority".into(), "10".into()]);
    let long = submit_slow_with(&cluster, &alice, &args);
    assert_eventually!(
        json(&cluster, &alice, &[&"status", &long.to_string()])["done"].as_u64().unwrap_or(0) >= 2,
        "alice's long job never got going"
    );
    let args = slow_args(6, &cluster.path("short.out"), "run");
    let short = cluster.submit_as(&bob, &args.iter().map(|a| a as &dyn AsRef<OsStr>).collect::<Vec<_>>());
    short.check_success();
    let status = json(&cluster, &alice, &[&"status", &long.to_string()]);
    let done = status["done"].as_u64().unwrap_or(u64::MAX);
    assert!(
        status["state"] == "running" && done < 200,
        "bob's 6-chunk job should finish long before alice's 400-chunk job, with fair sharing of the 2 slots; alice: {status}\n{short}"
    );
}
