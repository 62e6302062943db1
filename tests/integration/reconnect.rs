//! Issue 19, items 3 and 7, with real processes on 127.0.0.1: clients reconnect by themselves.
//! The dispatcher is SIGKILLed mid-job and restarted on the same port and state, and `run` exits
//! 0 on its own with byte-identical output and a final `--json` object whose counts add up; a
//! `run` whose upload is cut by the restart resumes it from the last stored chunk; `wait` and
//! `stream` carry on across a restart; a dispatcher that does not come back within
//! `--reconnect-timeout` ends the command with a clear error and exit code 2.
//!
//! Across the kill, `attempts` equals `chunks` plus the speculative copies the dispatchers logged:
//! the nodes keep running what they held and the restarted dispatcher adopts it, so no chunk
//! runs again.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tests::durable::{BlockPattern, DurableCluster};
use tests::{assert_eventually, check_same_bytes, example, fixture, serial_output, Run};

/// Spin iterations per chunk of `count.wat` (about 0.2 s each here), so the job is still
/// running when the dispatcher is killed. Not a timing assertion: every wait polls.
const SPIN: &str = "100000000";
/// Chunks of the slow job.
const CHUNKS: u64 = 30;
/// A guard for commands that wait for a whole slow job across a restart.
const LONG: Duration = Duration::from_secs(600);

fn split() -> String {
    format!("range:0..{CHUNKS}:1")
}

fn reference() -> &'static [u8] {
    static REFERENCE: OnceLock<Vec<u8>> = OnceLock::new();
    REFERENCE.get_or_init(|| serial_output(&fixture("count.wat"), SPIN.as_bytes(), &split(), &[]))
}

/// `dispy-submit VERB` of the slow job writing to `output`, with `extra` arguments.
fn slow_job(cluster: &DurableCluster, verb: &str, output: &Path, extra: &[&str]) -> Command {
    let payload = fixture("count.wat");
    let split = split();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&verb, &"--payload", &payload, &"--split", &split, &"--args", &SPIN, &"--output", &output];
    args.extend(extra.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
    cluster.submit_command(&args)
}

/// Runs `command` on a thread, so the test can kill and restart the dispatcher meanwhile.
fn in_background(command: Command) -> std::thread::JoinHandle<Run> {
    std::thread::spawn(move || Run::capture(command, LONG))
}

/// Waits until some job is running with at least `done` chunks done; returns its id.
fn running_job(cluster: &DurableCluster, done: u64) -> u64 {
    let mut job = None;
    assert_eventually!(
        {
            job = cluster.jobs_json().ok().and_then(|jobs| {
                jobs.iter().find(|j| j["state"] == "running" && j["done"].as_u64() >= Some(done)).and_then(|j| j["job"].as_u64())
            });
            job.is_some()
        },
        "no job got going\n{}",
        cluster.logs()
    );
    job.unwrap_or_default()
}

/// SIGKILLs the dispatcher and starts it again on the same port and state directory.
fn crash_and_restart(cluster: &mut DurableCluster) {
    cluster.kill_dispatcher();
    cluster.start_dispatcher();
}

#[test]
fn run_finishes_by_itself_across_a_dispatcher_sigkill_and_restart() {
    let mut cluster = DurableCluster::builder().nodes(2).start();
    let output = cluster.path("run.bin");
    let run = in_background(slow_job(&cluster, "run", &output, &["--json"]));
    let job = running_job(&cluster, 3);
    crash_and_restart(&mut cluster);
    let run = run.join().expect("the run thread");
    run.check_success();
    run.check_stderr_mentions(&[&format!("job {job} accepted"), "reconnecting"]);
    let got = std::fs::read(&output).unwrap_or_else(|e| panic!("no output {}: {e}\n{run}", output.display()));
    check_same_bytes(&got, reference(), &run);
    let last = run.stdout.lines().last().unwrap_or_default();
    let summary: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("final line is not JSON ({e})\n{run}"));
    assert_eq!(summary["job"].as_u64(), Some(job), "{summary}");
    assert_eq!(summary["chunks"].as_u64(), Some(CHUNKS), "{summary}");
    let (attempts, retries) = (summary["attempts"].as_u64().unwrap_or(0), summary["retries"].as_u64());
    let copies: u64 = (1..=cluster.lifetimes())
        .map(|lifetime| cluster.dispatcher_log(lifetime).matches("speculative copy of a straggling chunk").count() as u64)
        .sum();
    assert_eq!(attempts, CHUNKS + copies, "a chunk ran again across the restart ({copies} speculative copies): {summary}");
    assert!(retries.is_some(), "{summary}");
    println!("run across a restart: {summary}");
}

#[test]
fn run_whose_upload_is_cut_by_a_restart_resumes_it_and_finishes() {
    let mut cluster = DurableCluster::builder().nodes(1).start();
    let input = cluster.path("upload.bin");
    let pattern = BlockPattern::new(1 << 20, 384);
    pattern.write_to(&input).expect("write the 384 MiB input");
    let output = cluster.path("upload.sums");
    let run = cluster.submit_command(&[
        &"run",
        &"--payload",
        &example("checksum.wat"),
        &"--input",
        &input,
        &"--split",
        &"bytes:1MiB",
        &"--output",
        &output,
        &"--json",
    ]);
    let run = in_background(run);
    // Kill while the input is still arriving, once some of it is stored.
    let job = cluster.job_mid_upload(8, || cluster.logs());
    crash_and_restart(&mut cluster);
    let status = cluster.status_json(job);
    let run = run.join().expect("the run thread");
    run.check_success();
    run.check_stderr_mentions(&["reconnecting"]);
    let got = std::fs::read(&output).unwrap_or_else(|e| panic!("no output {}: {e}\n{run}", output.display()));
    check_same_bytes(&got, &pattern.checksums(), &run);
    let log = cluster.dispatcher_log(cluster.lifetimes());
    assert!(log.contains("job input resumed by its submitter"), "the upload was not resumed\n{log}");
    println!("upload resumed after the restart; status right after it: {status:?}");
}

#[test]
fn wait_and_stream_carry_on_across_a_restart() {
    let mut cluster = DurableCluster::builder().nodes(2).start();
    // `wait` follows a detached job.
    let waited = cluster.path("waited.bin");
    let job = cluster.submit_detached(&[
        &"--payload",
        &fixture("count.wat"),
        &"--split",
        &split(),
        &"--args",
        &SPIN,
        &"--output",
        &waited,
    ]);
    let wait = in_background(cluster.submit_command(&[&"wait", &job.to_string()]));
    running_job(&cluster, 3);
    // `stream` gets half its input before the restart and half after.
    let mut stream = cluster.submit_command(&[&"stream", &"--payload", &example("upper.wat"), &"--split", &"lines:1"]);
    let mut child = stream.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start stream");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let lines: Vec<String> = (0..40).map(|i| format!("line {i} of the stream\n")).collect();
    for line in &lines[..20] {
        stdin.write_all(line.as_bytes()).expect("write to stream");
    }
    stdin.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(500));
    crash_and_restart(&mut cluster);
    for line in &lines[20..] {
        stdin.write_all(line.as_bytes()).expect("write to stream");
    }
    drop(stdin);
    let streamed = child.wait_with_output().expect("stream output");
    let stderr = String::from_utf8_lossy(&streamed.stderr);
    assert!(streamed.status.success(), "stream failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&streamed.stdout), lines.concat().to_uppercase(), "stderr: {stderr}");

    let wait = wait.join().expect("the wait thread");
    wait.check_success();
    let got = std::fs::read(&waited).unwrap_or_else(|e| panic!("no output {}: {e}\n{wait}", waited.display()));
    check_same_bytes(&got, reference(), &wait);
}

#[test]
fn a_dispatcher_that_stays_away_ends_run_with_exit_code_2() {
    let mut cluster = DurableCluster::builder().nodes(1).start();
    let output = cluster.path("never.bin");
    let run = in_background(slow_job(&cluster, "run", &output, &["--reconnect-timeout", "2s"]));
    running_job(&cluster, 1);
    cluster.kill_dispatcher();
    let run = run.join().expect("the run thread");
    run.check_code(2);
    run.check_stderr_mentions(&["could not reconnect within 2s", "dispy-submit wait"]);
    assert!(!output.exists(), "a partial output was left as if complete");
}
