//! Issue 20, parts 3 and 4, with real processes: attempt logs from a WAT payload's `dispy.log`
//! and a native payload's stdout and stderr reach `dispy-submit logs` (each line after its chunk
//! index, one chunk with `--chunk`, all of a detached job with `--follow`), also after the output
//! was fetched; `explain` says which node lacks what for a waiting job and lists every attempt of
//! a failed one with its node, error and log tail, as the failed `run` does; every `--json` output
//! parses; another tenant's job answers `logs` and `explain` as a job that does not exist; a
//! fetched job's logs survive a dispatcher restart and go when the job expires.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{example, fixture, Cluster, Run};

/// The input every job here runs over: three chunks with `lines:1`.
const WORDS: &str = "alpha\nbeta\ngamma\n";

fn words(cluster: &Cluster) -> PathBuf {
    let input = cluster.dir().join("words.txt");
    std::fs::write(&input, WORDS).expect("write the input");
    input
}

/// `dispy-submit run` of `payload` over `input` (lines:1) with `extra` flags, as the cluster's
/// client; returns the run.
fn run(cluster: &Cluster, payload: &Path, input: &Path, name: &str, extra: &[&str]) -> Run {
    let output = cluster.dir().join(format!("{name}.out"));
    let mut args: Vec<&dyn AsRef<OsStr>> =
        vec![&"run", &"--payload", &payload, &"--input", &input, &"--split", &"lines:1", &"--output", &output];
    args.extend(extra.iter().map(|a| a as &dyn AsRef<OsStr>));
    cluster.submit(&args)
}

/// The job id of a successful `run --json`.
#[track_caller]
fn job_of(run: &Run) -> String {
    run.check_success();
    let object: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e})\n{run}"));
    object["job"].as_u64().unwrap_or_else(|| panic!("no job id\n{run}")).to_string()
}

/// The lines `logs ARGS` printed, sorted (attempts of different chunks may arrive in any order).
#[track_caller]
fn log_lines(cluster: &Cluster, args: &[&dyn AsRef<OsStr>]) -> Vec<String> {
    let mut full: Vec<&dyn AsRef<OsStr>> = vec![&"logs"];
    full.extend_from_slice(args);
    let run = cluster.submit(&full);
    run.check_success();
    let mut lines: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// What `logs JOB --json` printed: one object per attempt log, as (chunk, node, failed, lines),
/// sorted.
#[track_caller]
fn log_objects(cluster: &Cluster, tls: &Path, job: &str) -> Vec<(u64, String, bool, Vec<String>)> {
    let run = cluster.submit_as(tls, &[&"logs", &job, &"--json"]);
    run.check_success();
    let mut objects: Vec<_> = run
        .stdout
        .lines()
        .map(|line| {
            let o: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{run}"));
            let lines = o["lines"].as_array().expect("lines").iter().map(|l| l.as_str().expect("a line").to_owned()).collect();
            (o["chunk"].as_u64().expect("chunk"), o["node"].as_str().expect("node").to_owned(), o["failed"] == true, lines)
        })
        .collect();
    objects.sort();
    objects
}

/// `CMD ARGS --json` as `tls`, parsed as one JSON value.
#[track_caller]
fn json(cluster: &Cluster, tls: &Path, args: &[&dyn AsRef<OsStr>]) -> serde_json::Value {
    let mut full = args.to_vec();
    full.push(&"--json");
    let run = cluster.submit_as(tls, &full);
    run.check_success();
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e})\n{run}"))
}

/// Builds `examples/c/faults/logs.c` into the cluster's directory; `None` (after a `SKIPPED`
/// line) without `cc`.
fn native_logger(test: &str, cluster: &Cluster) -> Option<PathBuf> {
    let out = cluster.dir().join("logs.so");
    match Command::new("cc").args(["-O2", "-shared", "-fPIC", "-o"]).arg(&out).arg(example("c/faults/logs.c")).status() {
        Ok(status) => {
            assert!(status.success(), "cc failed on logs.c ({status})");
            Some(out)
        }
        Err(e) => {
            tests::skip(test, &format!("cc is not available ({e})"));
            None
        }
    }
}

/// Bob's refusal for `CMD JOB` is exactly his refusal for a job that does not exist.
#[track_caller]
fn check_unknown_to(cluster: &Cluster, bob: &Path, command: &str, job: &str) {
    let missing = cluster.submit_as(bob, &[&command, &"999999"]);
    let seen = cluster.submit_as(bob, &[&command, &job]);
    for run in [&missing, &seen] {
        assert!(!run.timed_out && run.code == Some(2), "expected a refusal\n{run}");
        assert!(run.stdout.trim().is_empty(), "a refusal prints nothing\n{run}");
    }
    assert_eq!(seen.stderr.trim(), missing.stderr.trim().replace("999999", job), "bob can tell the job exists");
}

#[test]
fn logs_show_each_line_after_its_chunk_for_wasm_and_native_payloads() {
    let cluster = Cluster::start(1);
    let input = words(&cluster);

    let job = job_of(&run(&cluster, &fixture("logger.wat"), &input, "wasm", &["--json"]));
    let expect: Vec<String> = {
        let mut lines: Vec<String> = WORDS
            .lines()
            .enumerate()
            .flat_map(|(i, word)| [format!("{i}: starting"), format!("{i}: {word}")])
            .collect();
        lines.sort();
        lines
    };
    // The run fetched the output (and released the job): the logs stay.
    assert_eq!(log_lines(&cluster, &[&job]), expect);
    assert_eq!(log_lines(&cluster, &[&job, &"--chunk", &"1"]), ["1: beta", "1: starting"]);
    assert_eq!(log_lines(&cluster, &[&job, &"--chunk", &"7"]), Vec::<String>::new(), "a chunk with no logs");
    let objects = log_objects(&cluster, cluster.client_dir(), &job);
    let chunks: Vec<(u64, &str, bool, Vec<String>)> =
        objects.iter().map(|(c, n, f, l)| (*c, n.as_str(), *f, l.clone())).collect();
    assert_eq!(
        chunks,
        WORDS.lines().enumerate().map(|(i, w)| (i as u64, "n1", false, vec!["starting".to_owned(), w.to_owned()])).collect::<Vec<_>>()
    );
    let wait = cluster.submit(&[&"wait", &job]);
    assert!(wait.code == Some(2) && wait.stderr.contains("output was already fetched"), "a released job's output is gone\n{wait}");

    let bob = cluster.pki().issue_client("bob");
    check_unknown_to(&cluster, &bob, "logs", &job);
    check_unknown_to(&cluster, &bob, "explain", &job);

    let Some(native) = native_logger("logs_show_each_line_after_its_chunk_for_wasm_and_native_payloads", &cluster) else {
        return;
    };
    let job = job_of(&run(&cluster, &native, &input, "native", &["--json"]));
    let mut expect: Vec<String> = WORDS
        .lines()
        .enumerate()
        .flat_map(|(i, word)| [format!("{i}: stdout: {word}"), format!("{i}: stderr: {word}")])
        .collect();
    expect.sort();
    assert_eq!(log_lines(&cluster, &[&job]), expect);
    assert_eq!(log_lines(&cluster, &[&job, &"--chunk", &"2"]), ["2: stderr: gamma", "2: stdout: gamma"]);
}

#[test]
fn logs_follow_prints_a_detached_jobs_logs_until_it_ends() {
    let cluster = Cluster::start(1);
    let input = words(&cluster);
    let output = cluster.dir().join("follow.out");
    let submit = cluster.submit(&[
        &"submit", &"--payload", &fixture("logger.wat"), &"--input", &input, &"--split", &"lines:1", &"--output", &output,
    ]);
    submit.check_success();
    let job = submit.stdout.trim().to_owned();
    // Started at once, while the job may still run: --follow returns only once it has ended,
    // with every chunk's lines.
    let lines = log_lines(&cluster, &[&job, &"--follow"]);
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(WORDS.lines().enumerate().all(|(i, w)| lines.contains(&format!("{i}: {w}"))), "{lines:?}");
    let status = json(&cluster, cluster.client_dir(), &[&"status", &job]);
    assert_eq!(status["state"], "succeeded");
}

#[test]
fn explain_says_why_a_job_waits_and_lists_a_failed_jobs_attempts() {
    let cluster = Cluster::start(1);
    let client = cluster.client_dir().to_owned();
    let root = cluster.pki().issue_admin("root");
    let input = words(&cluster);

    // Waiting: the only node is drained.
    cluster.submit_as(&root, &[&"drain", &"n1"]).check_success();
    let output = cluster.dir().join("waits.out");
    let submit = cluster.submit(&[&"submit", &"--payload", &fixture("logger.wat"), &"--input", &input, &"--split", &"lines:1", &"--output", &output]);
    submit.check_success();
    let waiting = submit.stdout.trim().to_owned();
    let text = cluster.submit(&[&"explain", &waiting]);
    text.check_success();
    assert!(text.stdout.contains("waiting: 1 connected, 1 drained, 0 eligible"), "{text}");
    assert!(text.stdout.contains("  n1: is drained"), "{text}");
    let explained = json(&cluster, &client, &[&"explain", &waiting]);
    assert_eq!(explained["waiting"], true, "{explained}");
    assert_eq!(explained["state"], "running");
    assert_eq!(explained["nodes"], serde_json::json!([{ "node": "n1", "reason": "is drained" }]));
    assert_eq!(explained["failed_chunks"], serde_json::json!([]));
    cluster.submit(&[&"cancel", &waiting]).check_success();
    cluster.submit_as(&root, &[&"undrain", &"n1"]).check_success();

    // Failed: every attempt of the chunk traps after logging.
    let bad = cluster.dir().join("bad.txt");
    std::fs::write(&bad, "!boom\n").expect("write the input");
    let failed = run(&cluster, &fixture("logger.wat"), &bad, "bad", &["--max-attempts", "2"]);
    failed.check_code(1);
    for line in ["chunk 0, attempt 1 on n1: last lines of its log:", "chunk 0, attempt 2 on n1: last lines of its log:", "  0: !boom"] {
        assert!(failed.stderr.contains(line), "the failed run shows its log tails: {line:?}\n{failed}");
    }
    let jobs = json(&cluster, &client, &[&"jobs"]);
    let job = jobs
        .as_array()
        .expect("a list")
        .iter()
        .find(|j| j["state"] == "failed")
        .and_then(|j| j["job"].as_u64())
        .unwrap_or_else(|| panic!("no failed job in {jobs}"))
        .to_string();
    let text = cluster.submit(&[&"explain", &job]);
    text.check_success();
    for line in ["chunk 0: 2 failed attempt(s)", "  attempt 1 on n1: ", "  attempt 2 on n1: ", "    0: starting", "    0: !boom"] {
        assert!(text.stdout.contains(line), "explain lacks {line:?}\n{text}");
    }
    let explained = json(&cluster, &client, &[&"explain", &job]);
    assert_eq!((explained["state"].as_str(), explained["waiting"].as_bool()), (Some("failed"), Some(false)), "{explained}");
    let attempts = explained["failed_chunks"][0]["attempts"].as_array().unwrap_or_else(|| panic!("no attempts in {explained}"));
    assert_eq!(attempts.len(), 2, "{explained}");
    for attempt in attempts {
        assert_eq!(attempt["node"], "n1");
        assert_eq!(attempt["kind"], "Trap");
        assert!(attempt["error"].as_str().is_some_and(|e| e.contains("unreachable")), "{attempt}");
        assert_eq!(attempt["log_tail"], serde_json::json!(["starting", "!boom"]));
    }
    // Both attempts' whole logs, marked failed.
    let objects = log_objects(&cluster, &client, &job);
    let expect = (0, "n1".to_owned(), true, vec!["starting".to_owned(), "!boom".to_owned()]);
    assert_eq!(objects, [expect.clone(), expect]);
}

#[test]
fn a_fetched_jobs_logs_survive_a_dispatcher_restart_and_go_when_it_expires() {
    let mut cluster = tests::durable::DurableCluster::builder().nodes(1).retention("20s").start();
    let input = cluster.path("words.txt");
    std::fs::write(&input, WORDS).expect("write the input");
    let output = cluster.path("words.out");
    let run = cluster.submit(&[
        &"run", &"--payload", &fixture("logger.wat"), &"--input", &input, &"--split", &"lines:1", &"--output", &output, &"--json",
    ]);
    let job = job_of(&run);
    let logs = |cluster: &tests::durable::DurableCluster| cluster.submit(&[&"logs", &job, &"--chunk", &"2"]);
    let before = logs(&cluster);
    before.check_success();
    assert_eq!(before.stdout, "2: starting\n2: gamma\n");

    // A graceful restart: the release is journaled by then. (Killed at once, the dispatcher may
    // not have journaled the job's end yet, and it reruns the job, as a crash before any fetch.)
    cluster.stop_dispatcher();
    cluster.start_dispatcher();
    let after = logs(&cluster);
    after.check_success();
    assert_eq!(after.stdout, before.stdout, "the logs survive the restart");
    let status = cluster.status_json(job.parse().expect("an id")).unwrap_or_else(|run| panic!("forgotten\n{run}"));
    assert_eq!(status["state"], "succeeded", "a fetched job stays known across a restart: {status}");
    let spool = cluster.state_dir().join("jobs").join(&job);
    assert!(spool.join("logs").is_file() && !spool.join("results").exists(), "only the logs stay in {}", spool.display());

    // At the end of its retention (20 s, checked every 10 s) the job, its logs with it, is
    // forgotten.
    let forgotten = tests::poll_until(std::time::Duration::from_secs(90), || logs(&cluster).stderr.contains("no job"));
    assert!(forgotten, "job {job}'s logs outlived its retention");
    assert!(!spool.exists(), "the expired job's spool {} is still there", spool.display());
}
