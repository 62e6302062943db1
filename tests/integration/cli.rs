//! `dispy-submit` as a script sees it, on a real cluster: every command's `--json` output parses
//! (`logs` one object per line),
//! `last` names the caller's newest job, and the exit codes are those the README promises (0 done,
//! 1 the job failed, 2 a refusal or connection problem, 64 bad arguments). Also the shell
//! completions and the manual page.

use std::ffi::OsStr;

use tests::{command, example, fixture, Cluster, Job, Run, COMMAND_TIMEOUT};

/// Parses a command's standard output as one JSON value.
#[track_caller]
fn json_of(run: &Run) -> serde_json::Value {
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON value: {e}\n{run}"))
}

/// Runs `dispy-submit ARGS --json` as the cluster's client, expecting exit `code`, and returns
/// what it printed, parsed.
#[track_caller]
fn json(cluster: &Cluster, code: i32, args: &[&dyn AsRef<OsStr>]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push(&"--json");
    let run = cluster.submit(&args);
    assert_eq!(run.code, Some(code), "exit code\n{run}");
    json_of(&run)
}

/// Runs `dispy-submit ARGS` with no cluster: for what is answered before connecting.
fn offline(args: &[&str]) -> Run {
    let mut submit = command("dispy-submit");
    submit.args(args);
    Run::capture(submit, COMMAND_TIMEOUT)
}

#[test]
fn bad_arguments_exit_64_and_help_exits_0() {
    // The README's example of a bad argument: a zero chunk size.
    let run = offline(&["run", "--payload", "x", "--split", "bytes:0", "--output", "o"]);
    assert_eq!(run.code, Some(64), "{run}");
    assert!(run.stderr.contains("chunk size must be greater than zero"), "{run}");
    for args in [&["status", "seven"][..], &["run", "--no-such-flag"], &["frobnicate"], &["run"]] {
        let run = offline(args);
        assert_eq!(run.code, Some(64), "{run}");
    }
    let run = offline(&["status", "seven", "--json"]);
    assert_eq!(run.code, Some(64), "{run}");
    assert_eq!(json_of(&run)["exit"], 64, "{run}");
    for help in ["--help", "--version"] {
        let run = offline(&[help]);
        assert_eq!(run.code, Some(0), "{run}");
        assert!(run.stdout.contains("dispy-submit"), "{run}");
    }
}

#[test]
fn every_command_speaks_json_and_last_names_the_newest_job() {
    let cluster = Cluster::start(1);
    let output = cluster.output_dir("json").join("out.bin");
    let job = Job::new(&example("upper.wat"), "lines:8", &output).input(&example("data/lorem.txt"));

    // `run --json` ends with one summary object.
    let mut args = job.to_args();
    args.push("--json".into());
    let run = cluster.submit_with(cluster.client_dir(), args, COMMAND_TIMEOUT);
    assert_eq!(run.code, Some(0), "{run}");
    let done = json_of(&run);
    assert_eq!(done["state"], "done", "{run}");
    let chunks = done["chunks"].as_u64().unwrap_or(0);
    assert!(chunks > 1, "{run}");
    assert_eq!(done["output"], output.display().to_string(), "{run}");
    let first = done["job"].as_u64().unwrap_or_else(|| panic!("no job id\n{run}"));

    // `submit --json` gives the id; `last` is now that job, everywhere a job id goes.
    let mut args = job.to_args();
    args[0] = "submit".into();
    args.push("--json".into());
    let submitted = cluster.submit_with(cluster.client_dir(), args.clone(), COMMAND_TIMEOUT);
    assert_eq!(submitted.code, Some(0), "{submitted}");
    let second = json_of(&submitted)["job"].as_u64().unwrap_or_else(|| panic!("no job id\n{submitted}"));
    assert!(second > first, "{submitted}");
    let status = json(&cluster, 0, &[&"status", &"last"]);
    assert_eq!(status["job"].as_u64(), Some(second), "{status}");
    let jobs = json(&cluster, 0, &[&"jobs"]);
    let ids: Vec<u64> = jobs.as_array().into_iter().flatten().filter_map(|j| j["job"].as_u64()).collect();
    assert!(ids.contains(&second), "{jobs}");
    let waited = json(&cluster, 0, &[&"wait", &"last"]);
    assert_eq!((waited["job"].as_u64(), waited["state"].as_str()), (Some(second), Some("done")), "{waited}");
    assert_eq!(waited["chunks"].as_u64(), Some(chunks), "{waited}");
    let explained = json(&cluster, 0, &[&"explain", &"last"]);
    assert!(explained.is_object(), "{explained}");
    let logs = cluster.submit(&[&"logs", &"last", &"--json"]);
    assert_eq!(logs.code, Some(0), "{logs}");
    for line in logs.stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON: {e}: {line}\n{logs}"));
    }
    let third = cluster.submit_with(cluster.client_dir(), args, COMMAND_TIMEOUT);
    assert_eq!(third.code, Some(0), "{third}");
    let cancelled = json(&cluster, 0, &[&"cancel", &"last"]);
    assert_eq!(cancelled["job"], json_of(&third)["job"], "{cancelled}");

    // `nodes` has cores, platform and version.
    let nodes = json(&cluster, 0, &[&"nodes"]);
    let node = &nodes[0];
    assert!(node["cores"].as_u64().unwrap_or(0) >= 1, "{nodes}");
    assert_eq!((node["os"].as_str(), node["arch"].as_str()), (Some(std::env::consts::OS), Some(std::env::consts::ARCH)), "{nodes}");
    assert!(!node["version"].as_str().unwrap_or_default().is_empty(), "{nodes}");
    let table = cluster.submit(&[&"nodes"]);
    table.check_success();
    for column in ["CORES", "PLATFORM", "VERSION"] {
        assert!(table.stdout.lines().next().unwrap_or_default().contains(column), "{table}");
    }
    let platform = format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH);
    assert!(table.stdout.contains(&platform), "{table}");

    // A refusal (another job id, a client draining) is exit 2 with an error object.
    let unknown = json(&cluster, 2, &[&"status", &(second + 100).to_string()]);
    assert_eq!(unknown["exit"], 2, "{unknown}");
    assert!(unknown["error"].as_str().is_some_and(|e| e.contains(&(second + 100).to_string())), "{unknown}");
    let refused = json(&cluster, 2, &[&"drain", &"n1"]);
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("operator")), "{refused}");
}

#[test]
fn a_failed_job_exits_1_with_a_failed_summary() {
    let cluster = Cluster::start(1);
    let output = cluster.output_dir("failed").join("out.bin");
    let job = Job::new(&fixture("trap.wat"), "lines:8", &output).input(&example("data/lorem.txt")).flag("--max-attempts", "1");
    let mut args = job.to_args();
    args.push("--json".into());
    let run = cluster.submit_with(cluster.client_dir(), args, COMMAND_TIMEOUT);
    assert_eq!(run.code, Some(1), "{run}");
    let failed = json_of(&run);
    assert_eq!((failed["state"].as_str(), failed["exit"].as_u64()), (Some("failed"), Some(1)), "{run}");
    assert!(failed["job"].as_u64().is_some(), "{run}");
    assert!(!output.exists(), "a failed job writes no output\n{run}");
    // With no job of its own, `last` is a refusal, not a guess.
    let admin = cluster.pki().issue_admin("root");
    let none = cluster.submit_as(&admin, &[&"status", &"last"]);
    assert_eq!(none.code, Some(2), "{none}");
    assert!(none.stderr.contains("no job submitted as root"), "{none}");
}

#[test]
fn completions_and_manual_page() {
    for shell in ["bash", "zsh", "fish"] {
        let run = offline(&["completions", shell]);
        run.check_success();
        assert!(run.stdout.contains("dispy-submit") && run.stdout.contains("wait"), "{run}");
    }
    let run = offline(&["manpage"]);
    run.check_success();
    assert!(run.stdout.contains(".TH dispy-submit 1") && run.stdout.contains("\\-\\-json"), "{run}");
}
