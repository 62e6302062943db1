//! Fault tolerance on a multi-host test bed (`tests::netns`): the dispatcher and three one-slot
//! nodes each in their own network namespace, and a job whose chunks keep every node busy for a
//! few seconds (`tests/fixtures/slow.wat`). Mid-job a node is SIGKILLed or has its cable pulled
//! and plugged back in; every node is killed and new ones started; one node crawls; a chunk traps
//! on every attempt; a job is cancelled; a node is drained. Each job that succeeds writes output
//! byte-identical to the serial run, with every chunk counted once, and each failure is reported
//! as the user sees it. Outcomes are polled for, never timed: a test asserts what happened, not
//! how fast. The faults land mid-job because the test waits, through `jobs --json`, for a moment
//! when chunks are still pending, not because it sleeps.
//!
//! The bed needs root and `ip netns`; without them every test here prints `SKIPPED` and why and
//! passes, or fails under `DISPY_TEST_STRICT=1` (see `tests::skip`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use tests::netns::NetCluster;
use tests::{assert_eventually, check_same_bytes, dir_entries, example, fixture, poll_until, serial_output, Job, Run};

/// Spin rounds per chunk of `slow.wat`: under 0.1 s of CPU on an idle machine, a few tenths on a
/// loaded one, so a job of [`CHUNKS`] chunks keeps three nodes busy for a few seconds.
const SPIN: &str = "30000000";

/// Chunks of the standard job.
const CHUNKS: u64 = 60;

/// Attempts a one-slot node holds at once: one running plus one queued, the depth the dispatcher's
/// adaptive pipeline gives chunks this long (`pipeline_depth` in `docs/operations.md`).
const POSITIONS_PER_NODE: u64 = 2;

/// How long a node cut off or killed may take to be written off and to come back: node_timeout
/// (5 s), the QUIC idle timeout (10 s) and the node's reconnect backoff (up to 5 s), with room
/// for a loaded machine. A bound on a hang, not an expectation.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The standard job's split rule: one chunk per row of `0..CHUNKS`.
fn split() -> String {
    format!("range:0..{CHUNKS}:1")
}

/// `dispy-submit run` of the standard job (or another `args` for `slow.wat`) into `output`,
/// plus `flags`.
fn slow_job(args: &str, output: &Path, flags: &[(&str, &str)]) -> Vec<OsString> {
    let mut job = Job::new(&fixture("slow.wat"), &split(), output).payload_args(args);
    for (flag, value) in flags {
        job = job.flag(flag, value);
    }
    job.to_args()
}

/// The serial run of `slow.wat` with `args` over the standard split, computed once per process
/// (after a job, while the bed is idle) and shared by the scenarios.
fn reference(args: &str) -> Vec<u8> {
    static CACHE: Mutex<Vec<(String, Vec<u8>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, bytes)) = cache.iter().find(|(a, _)| a == args) {
        return bytes.clone();
    }
    let bytes = serial_output(&fixture("slow.wat"), args.as_bytes(), &split(), &[]);
    cache.push((args.to_owned(), bytes.clone()));
    bytes
}

/// Joins a background `dispy-submit`.
fn join(handle: JoinHandle<Run>) -> Run {
    handle.join().unwrap_or_else(|_| panic!("the thread running dispy-submit panicked"))
}

/// Checks a successful `run` of the standard job: exit 0, output equal to the serial run, and
/// the final line "job N done: C chunks, R retries" with every chunk. Returns (N, R).
#[track_caller]
fn check_standard_run(run: &Run, output: &Path) -> (u64, u64) {
    run.check_success();
    let got = std::fs::read(output).unwrap_or_else(|e| panic!("no output file {}: {e}\n{run}", output.display()));
    check_same_bytes(&got, &reference(SPIN), run);
    let (job, chunks, retries) = done_line(run);
    assert_eq!(chunks, CHUNKS, "every chunk should be counted once\n{run}");
    (job, retries)
}

/// Parses `dispy-submit run`'s final line, "job N done: C chunks, R retries; output ...".
#[track_caller]
fn done_line(run: &Run) -> (u64, u64, u64) {
    let parse = || -> Option<(u64, u64, u64)> {
        let line = run.stderr.lines().rev().find(|l| l.starts_with("job ") && l.contains(" done: "))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        // ["job", N, "done:", C, "chunks,", R, "retries;", ...]
        (words.get(4) == Some(&"chunks,") && words.get(6) == Some(&"retries;"))
            .then_some(())
            .and_then(|()| Some((words[1].parse().ok()?, words[3].parse().ok()?, words[5].parse().ok()?)))
    };
    parse().unwrap_or_else(|| panic!("no \"job N done: C chunks, R retries\" line\n{run}"))
}

/// Whether some line of `log` contains every one of `needles`.
fn log_has(log: &str, needles: &[&str]) -> bool {
    log.lines().any(|line| needles.iter().all(|n| line.contains(n)))
}

/// How many lines of `log` contain every one of `needles`.
fn log_count(log: &str, needles: &[&str]) -> usize {
    log.lines().filter(|line| needles.iter().all(|n| line.contains(n))).count()
}

/// The cluster's only job as `jobs --json` lists it.
fn only_job(cluster: &NetCluster) -> Option<serde_json::Value> {
    let jobs = cluster.jobs_json().ok()?;
    match <[serde_json::Value; 1]>::try_from(jobs) {
        Ok([job]) => Some(job),
        Err(_) => None,
    }
}

/// Waits until the cluster's only job (on three one-slot nodes) has at least `done` chunks
/// finished and more unfinished than the nodes can hold, so some are still pending. The
/// scheduler never leaves a pending chunk while a node has a free position, so at that moment
/// every node holds a full pipeline of the job's chunks, and a fault injected now hits the job
/// mid-way with work on the faulty node. Returns the job id.
#[track_caller]
fn wait_mid_job(cluster: &NetCluster, done: u64) -> u64 {
    let mut last = None;
    let caught = poll_until(Duration::from_secs(60), || {
        last = only_job(cluster);
        let Some(job) = &last else { return false };
        let (Some(finished), Some(total)) = (job["done"].as_u64(), job["total"].as_u64()) else { return false };
        job["state"] == "running"
            && job["input_complete"] == true
            && finished >= done
            && total - finished > 3 * POSITIONS_PER_NODE
    });
    assert!(caught, "never caught the job with {done} chunks done and some still pending; last: {last:?}");
    last.and_then(|job| job["job"].as_u64()).unwrap_or_else(|| panic!("a listed job has an id"))
}

/// Asserts the cluster's only job has not finished yet, so the fault just injected happened
/// mid-job.
#[track_caller]
fn check_still_running(cluster: &NetCluster) {
    let job = only_job(cluster);
    assert!(
        job.as_ref().is_some_and(|j| j["state"] == "running" && j["done"].as_u64() < j["total"].as_u64()),
        "the job should still be running after the fault (raise SPIN): {job:?}"
    );
}

#[test]
fn killed_node_loses_its_chunks_to_the_others() {
    let Some(mut cluster) = NetCluster::builder().start("killed_node_loses_its_chunks_to_the_others") else {
        return;
    };
    let output = cluster.output_dir("kill").join("result.bin");
    let job = cluster.submit_in_background(slow_job(SPIN, &output, &[]));
    wait_mid_job(&cluster, 1);
    cluster.kill_node("n2");
    check_still_running(&cluster);
    let run = join(job);
    let (_, retries) = check_standard_run(&run, &output);
    // n2 held chunks when it died. Whichever comes first takes them over: the requeue when the
    // dispatcher writes n2 off (heartbeat silence, or its connection timing out), or speculative
    // copies once the queue is empty and n2's chunks are the stragglers.
    let log = cluster.dispatcher_log();
    let before_end = log.split("job succeeded").next().unwrap_or_default();
    let lost = |log: &str| log_has(log, &["node lost", "node=n2"]) || log_has(log, &["node left", "node=n2"]);
    let requeued = lost(before_end);
    let copied = log_count(before_end, &["speculative copy of a straggling chunk"]);
    assert!(retries > 0 || requeued || copied > 0, "nothing took over n2's chunks\n{run}\n{log}");
    println!("n2's chunks: requeued when written off: {requeued}; copied: {copied}; retries: {retries}");
    // Either way the dispatcher notices the death and stops listing n2.
    let log = || cluster.dispatcher_log();
    assert_eventually!(lost(&log()), "the dispatcher never noticed n2 died\n{}", log());
    assert!(cluster.node_status("n2").is_none(), "dead n2 is still listed");
    assert!(cluster.node_alive("n1") && cluster.node_alive("n3") && cluster.dispatcher_alive());
}

#[test]
fn node_cut_off_is_written_off_and_its_late_results_count_once() {
    let Some(cluster) =
        NetCluster::builder().start("node_cut_off_is_written_off_and_its_late_results_count_once")
    else {
        return;
    };
    let output = cluster.output_dir("cut").join("result.bin");
    let job = cluster.submit_in_background(slow_job(SPIN, &output, &[("--placement-timeout", "60s")]));
    wait_mid_job(&cluster, 1);
    cluster.cut_link("n1");
    // n2 and n3 finish what they hold and take nothing more, so the job is still running when
    // n1 comes back, and the results n1 finished while cut off meet a live job.
    for node in ["n2", "n3"] {
        cluster.operate(["drain", node]).check_success();
    }
    check_still_running(&cluster);
    // Heartbeat silence for node_timeout: the dispatcher writes n1 off and requeues its chunks.
    assert_eventually!(
        log_has(&cluster.dispatcher_log(), &["node lost", "node=n1"]),
        "the dispatcher never declared the silent n1 lost\n{}",
        cluster.dispatcher_log()
    );
    check_still_running(&cluster);
    cluster.restore_link("n1");
    // Back on the wire, n1 notices its old connection is dead, dials again and registers anew.
    cluster.wait_for_ready_within(&["n1"], REJOIN_TIMEOUT);
    for node in ["n2", "n3"] {
        cluster.operate(["undrain", node]).check_success();
    }
    let run = join(job);
    // Exact output and every chunk counted once: the results n1 sent again for attempts lost
    // with its old session completed their chunks at most once.
    check_standard_run(&run, &output);
    let log = cluster.dispatcher_log();
    assert!(log_has(&log, &["node rejoined", "node=n1"]), "the dispatcher should log n1's return\n{log}");
    let n1 = cluster.node_log("n1");
    assert!(
        log_has(&n1, &["resending unacknowledged reports"]),
        "n1 held chunks when it was cut off and should have sent their results again\n{n1}"
    );
    // The dispatcher requeued n1's chunks when it wrote n1 off and, n2 and n3 being drained,
    // gave them back to n1 on its return; the results n1 sent again then completed those chunks
    // and the dispatcher cancelled the reruns. A cancelled attempt that had not started must not
    // run: only one per slot may already have been running when its cancellation came.
    // The check reads the dispatcher's debug lines; without them it would pass vacuously.
    assert!(log_has(&log, &["chunk assigned", "node=n1"]), "the dispatcher's debug lines are missing\n{log}");
    let wasted = cancelled_reruns_that_ran(&log, "n1");
    assert!(
        wasted.len() <= 1,
        "n1 ran {} reruns the dispatcher had cancelled (attempts {wasted:?}); their results were \
         discarded, so the output is right, but the node ignored CancelAttempt\n{log}",
        wasted.len()
    );
}

/// Attempts of `node`'s second session that re-ran a chunk its first session had held and whose
/// results the dispatcher then discarded, from its debug lines "chunk assigned ... chunk=C
/// attempt=A node=N" and "late or duplicate result discarded attempt=A".
fn cancelled_reruns_that_ran(log: &str, node: &str) -> Vec<u64> {
    let field = |line: &str, key: &str| -> Option<u64> {
        line.split_whitespace().find_map(|word| word.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let node_field = format!("node={node}");
    let mut first_session = std::collections::HashSet::new();
    let mut reruns = std::collections::HashSet::new();
    let mut rejoined = false;
    let mut wasted = Vec::new();
    for line in log.lines() {
        let on_node = line.split_whitespace().any(|word| word == node_field);
        if line.contains("node rejoined") && on_node {
            rejoined = true;
        } else if line.contains("chunk assigned") && on_node {
            let (Some(chunk), Some(attempt)) = (field(line, "chunk"), field(line, "attempt")) else { continue };
            if !rejoined {
                first_session.insert(chunk);
            } else if first_session.contains(&chunk) {
                reruns.insert(attempt);
            }
        } else if line.contains("late or duplicate result discarded") {
            wasted.extend(field(line, "attempt").filter(|attempt| reruns.contains(attempt)));
        }
    }
    wasted
}

#[test]
fn job_waits_for_new_nodes_when_every_node_dies() {
    let Some(mut cluster) = NetCluster::builder().start("job_waits_for_new_nodes_when_every_node_dies") else {
        return;
    };
    let output = cluster.output_dir("all").join("result.bin");
    let job = cluster.submit_in_background(slow_job(SPIN, &output, &[("--placement-timeout", "60s")]));
    let id = wait_mid_job(&cluster, 1).to_string();
    for node in ["n1", "n2", "n3"] {
        cluster.kill_node(node);
    }
    check_still_running(&cluster);
    let mut last = None;
    let emptied = poll_until(REJOIN_TIMEOUT, || {
        last = cluster.nodes_json().ok();
        last.as_ref().is_some_and(Vec::is_empty)
    });
    assert!(emptied, "the dispatcher never wrote off the dead nodes; last listing: {last:?}");
    // With no node left the job waits for one instead of failing.
    let mut status = None;
    let waiting = poll_until(Duration::from_secs(20), || {
        let run = cluster.submit(["status", id.as_str()]);
        let blocked = run.code == Some(0) && run.stdout.contains("running") && run.stdout.contains("waiting:");
        status = Some(run);
        blocked
    });
    assert!(waiting, "the job should be running and waiting for a node: {status:?}");
    for node in ["n1", "n2", "n3"] {
        cluster.start_node(node);
    }
    let run = join(job);
    check_standard_run(&run, &output);
}

#[test]
fn chunk_that_always_traps_fails_the_job_naming_every_node() {
    let Some(cluster) =
        NetCluster::builder().start("chunk_that_always_traps_fails_the_job_naming_every_node")
    else {
        return;
    };
    let out_dir = cluster.output_dir("trap");
    // Chunk 5 traps on every attempt; the others succeed at once.
    let run = cluster.submit(slow_job("1000 5", &out_dir.join("result.bin"), &[("--max-attempts", "3")]));
    run.check_code(1);
    run.check_stderr_mentions(&["chunk 5", "after 3 attempt", "trap", "node n1", "node n2", "node n3"]);
    assert_eq!(dir_entries(&out_dir), Vec::<String>::new(), "no output and no temporary file may remain\n{run}");
}

#[test]
fn straggler_is_overtaken_by_a_speculative_copy() {
    let Some(mut cluster) = NetCluster::builder().start("straggler_is_overtaken_by_a_speculative_copy") else {
        return;
    };
    let output = cluster.output_dir("straggler").join("result.bin");
    let job = cluster.submit_in_background(slow_job(SPIN, &output, &[]));
    // Mid-job n3 runs 3 % of the time: its chunks take seconds, past the straggler threshold,
    // while it still heartbeats and n1 and n2 do the rest. (The adaptive pipeline keeps one chunk
    // queued behind n3's running one, so the copies are what spares the job a long wait.)
    wait_mid_job(&cluster, 0);
    let slow = cluster.slow_down("n3", 3);
    check_still_running(&cluster);
    let run = join(job);
    check_standard_run(&run, &output);
    // Once the queue ran dry, n3's chunks were far older than the median and were copied to an
    // idle node; the copies won, so the job did not wait for n3.
    let log = cluster.dispatcher_log();
    assert!(log_has(&log, &["speculative copy of a straggling chunk"]), "no speculative copy\n{run}\n{log}");
    assert!(
        !log_has(&log, &["node=n3", "node lost"]) && !log_has(&log, &["node=n3", "node left"]),
        "n3 was written off, so its chunks were requeued rather than copied\n{log}"
    );
    drop(slow);
    assert!(cluster.node_alive("n3"), "n3 should survive being slowed down");
    cluster.wait_for_ready(&["n3"]);
}

#[test]
fn cancel_stops_running_chunks_and_writes_nothing() {
    let Some(cluster) = NetCluster::builder().start("cancel_stops_running_chunks_and_writes_nothing") else {
        return;
    };
    let out_dir = cluster.output_dir("cancel");
    // Chunks that never end on their own: only the cancellation can free the slots.
    let mut args = Job::new(&fixture("loop.wat"), "range:0..6:1", &out_dir.join("result.bin")).to_args();
    args[0] = "submit".into();
    let submit = cluster.submit(args);
    submit.check_success();
    let id = submit.stdout.trim().to_owned();
    let busy = |cluster: &NetCluster| -> Option<u64> {
        let nodes = cluster.nodes_json().ok()?;
        Some(nodes.iter().filter_map(|n| n["busy"].as_u64()).sum())
    };
    assert_eventually!(busy(&cluster) == Some(3), "the job never kept all three slots busy");
    let cancel = cluster.submit(["cancel", id.as_str()]);
    cancel.check_success();
    assert!(cancel.stdout.contains("cancelled"), "`cancel` should show the job cancelled\n{cancel}");
    assert_eventually!(busy(&cluster) == Some(0), "slots still busy after the cancellation");
    let job_field = format!("job={id}");
    for node in ["n1", "n2", "n3"] {
        let log = cluster.node_log(node);
        assert!(log_has(&log, &["job ended", &job_field]), "{node} never heard the job ended\n{log}");
    }
    let wait = cluster.submit(["wait", id.as_str()]);
    wait.check_code(1);
    wait.check_stderr_mentions(&[&format!("job {id} was cancelled")]);
    assert_eq!(dir_entries(&out_dir), Vec::<String>::new(), "a cancelled job writes nothing\n{wait}");
}

#[test]
fn drained_node_gets_no_new_chunks_until_undrained() {
    let Some(cluster) = NetCluster::builder().start("drained_node_gets_no_new_chunks_until_undrained") else {
        return;
    };
    let started = |node: &str, job: u64| log_has(&cluster.node_log(node), &["job starting", &format!("job={job}")]);

    // Drained mid-job, n1 finishes what it holds and the job completes.
    let first = cluster.output_dir("first").join("result.bin");
    let job = cluster.submit_in_background(slow_job(SPIN, &first, &[]));
    wait_mid_job(&cluster, 1);
    let drain = cluster.operate(["drain", "n1"]);
    drain.check_success();
    let state = cluster.node_state("n1");
    assert!(
        matches!(state.as_deref(), Some("draining" | "drained")),
        "n1 should be draining, not {state:?}\n{drain}"
    );
    check_standard_run(&join(job), &first);
    assert_eventually!(cluster.node_state("n1").as_deref() == Some("drained"), "n1 never became drained");

    // A new job runs on n2 and n3 only: n1 is never even told it exists.
    let second = cluster.output_dir("second").join("result.bin");
    let (id, _) = check_standard_run(&cluster.submit(slow_job(SPIN, &second, &[])), &second);
    assert!(!started("n1", id), "drained n1 was given job {id}\n{}", cluster.node_log("n1"));
    assert!(started("n2", id) || started("n3", id), "no job-start log lines: the check above means nothing");
    assert_eq!(cluster.node_state("n1").as_deref(), Some("drained"));

    // Undrained, n1 takes work again.
    cluster.operate(["undrain", "n1"]).check_success();
    assert_eventually!(cluster.node_state("n1").as_deref() == Some("ready"), "n1 never became ready again");
    let third = cluster.output_dir("third").join("result.bin");
    let (id, _) = check_standard_run(&cluster.submit(slow_job(SPIN, &third, &[])), &third);
    assert!(started("n1", id), "undrained n1 got no chunk of job {id}\n{}", cluster.node_log("n1"));
}

/// The bed itself: each daemon in its own namespace reaches the dispatcher at its 10.x address
/// (checked by `NetCluster::start`), and a small job of another payload matches the serial run.
#[test]
fn test_bed_runs_a_job_across_namespaces() {
    let Some(cluster) = NetCluster::builder().start("test_bed_runs_a_job_across_namespaces") else {
        return;
    };
    let payload = example("mandelbrot.wat");
    let output: PathBuf = cluster.output_dir("bed").join("image.pgm");
    let run = cluster.submit(Job::new(&payload, "range:0..48:5", &output).payload_args("64 48 50").to_args());
    run.check_success();
    let got = std::fs::read(&output).unwrap_or_else(|e| panic!("no output file: {e}\n{run}"));
    check_same_bytes(&got, &serial_output(&payload, b"64 48 50", "range:0..48:5", &[]), &run);
}

/// Every `chunk assigned ... chunk=C attempt=A node=N` debug line of the dispatcher's log, as
/// (chunk, node), in order.
fn assignments(log: &str) -> Vec<(u64, String)> {
    log.lines()
        .filter(|line| line.contains("chunk assigned"))
        .filter_map(|line| {
            let word = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='));
            Some((word("chunk")?.parse().ok()?, word("node")?.to_owned()))
        })
        .collect()
}

/// The chunks the nodes in `logs` ran to completion more than once (from their `chunk done`
/// debug lines), each with how many times.
fn completed_twice(logs: &[String]) -> Vec<(u64, usize)> {
    let mut runs: std::collections::BTreeMap<u64, usize> = std::collections::BTreeMap::new();
    for line in logs.iter().flat_map(|log| log.lines()).filter(|line| line.contains("chunk done")) {
        let chunk = line.split_whitespace().find_map(|w| w.strip_prefix("chunk=")?.parse().ok());
        if let Some(chunk) = chunk {
            *runs.entry(chunk).or_default() += 1;
        }
    }
    runs.into_iter().filter(|(_, n)| *n > 1).collect()
}

/// The chunks the dispatcher assigned more than once, each with the node of its first assignment.
fn reassigned(log: &str) -> Vec<(u64, String)> {
    let mut first: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    let mut again = std::collections::BTreeMap::new();
    for (chunk, node) in assignments(log) {
        match first.get(&chunk) {
            Some(was) => {
                again.insert(chunk, was.clone());
            }
            None => {
                first.insert(chunk, node);
            }
        }
    }
    again.into_iter().collect()
}

#[test]
fn dispatcher_link_cut_for_three_seconds_runs_no_chunk_twice() {
    let Some(cluster) = NetCluster::builder().start("dispatcher_link_cut_for_three_seconds_runs_no_chunk_twice") else {
        return;
    };
    let output = cluster.output_dir("blip").join("result.bin");
    let job = cluster.submit_in_background(slow_job(SPIN, &output, &[("--placement-timeout", "60s")]));
    wait_mid_job(&cluster, 1);
    // Every node loses the dispatcher, and the submitter too; the nodes' dispatcher_timeout (2 s)
    // ends their sessions, and they keep running their chunks.
    cluster.bed().set_link(tests::netns::DISPATCHER_HOST, false).unwrap_or_else(|e| panic!("cannot cut: {e:#}"));
    std::thread::sleep(Duration::from_secs(3));
    cluster.bed().set_link(tests::netns::DISPATCHER_HOST, true).unwrap_or_else(|e| panic!("cannot restore: {e:#}"));
    check_still_running(&cluster);
    let run = join(job);
    let (_, retries) = check_standard_run(&run, &output);
    let log = cluster.dispatcher_log();
    // The check reads the dispatcher's debug lines; without them it would pass vacuously.
    assert!(log_has(&log, &["chunk assigned"]), "the dispatcher's debug lines are missing\n{log}");
    // An assignment lost in the cut is sent again, so assignments may repeat; runs must not.
    let node_logs: Vec<String> = ["n1", "n2", "n3"].iter().map(|n| cluster.node_log(n)).collect();
    assert!(node_logs.iter().any(|l| l.contains("chunk done")), "the nodes' debug lines are missing");
    let twice = completed_twice(&node_logs);
    let copies = log_count(&log, &["speculative copy of a straggling chunk"]);
    let disconnected = log_count(&log, &["node disconnected"]);
    let lost = log_count(&log, &["node lost"]);
    println!(
        "link cut 3 s: {disconnected} node sessions lost and taken back, {lost} nodes written off, \
         {} chunks run twice, {} assigned twice, {copies} speculative copies, {retries} retries",
        twice.len(),
        reassigned(&log).len()
    );
    assert!(twice.is_empty() && lost == 0, "the blip cost chunk runs: run twice {twice:?}, {lost} nodes lost\n{log}");
}

#[test]
fn node_killed_and_restarted_reruns_only_its_own_chunks() {
    let Some(mut cluster) = NetCluster::builder().start("node_killed_and_restarted_reruns_only_its_own_chunks") else {
        return;
    };
    let output = cluster.output_dir("restart").join("result.bin");
    let job = cluster.submit_in_background(slow_job(SPIN, &output, &[]));
    wait_mid_job(&cluster, 1);
    cluster.kill_node("n2");
    cluster.start_node("n2");
    let run = join(job);
    check_standard_run(&run, &output);
    let log = cluster.dispatcher_log();
    assert!(log_has(&log, &["chunk assigned"]), "the dispatcher's debug lines are missing\n{log}");
    let again = reassigned(&log);
    println!("n2 killed and restarted: chunks assigned again (with their first node): {again:?}");
    let others: Vec<&(u64, String)> = again.iter().filter(|(_, node)| node != "n2").collect();
    assert!(others.is_empty(), "chunks of other nodes ran again: {others:?}\n{log}");
}

/// Issue 19's first scenario on the bed: the dispatcher SIGKILLed mid-job and started again.
/// `run` reconnects and exits 0 by itself with the serial output; its `--json` counts have
/// attempts == chunks (plus any speculative copy logged), and no chunk ran twice on the nodes:
/// they kept running what they held and the restarted dispatcher adopted it.
#[test]
fn dispatcher_killed_and_restarted_mid_job_costs_no_chunk_run() {
    let Some(mut cluster) = NetCluster::builder().start("dispatcher_killed_and_restarted_mid_job_costs_no_chunk_run") else {
        return;
    };
    let output = cluster.output_dir("restart").join("result.bin");
    let mut args = slow_job(SPIN, &output, &[]);
    args.push("--json".into());
    let job = cluster.submit_in_background(args);
    wait_mid_job(&cluster, 1);
    cluster.restart_dispatcher();
    let run = join(job);
    check_standard_run(&run, &output);
    let last = run.stdout.lines().last().unwrap_or_default();
    let summary: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("final line is not JSON ({e})\n{run}"));
    let log = cluster.dispatcher_log();
    let copies = log_count(&log, &["speculative copy of a straggling chunk"]) as u64;
    assert_eq!(summary["chunks"].as_u64(), Some(CHUNKS), "{summary}");
    assert_eq!(summary["attempts"].as_u64(), Some(CHUNKS + copies), "a chunk ran again ({copies} copies): {summary}\n{run}");
    let node_logs: Vec<String> = ["n1", "n2", "n3"].iter().map(|n| cluster.node_log(n)).collect();
    let twice = completed_twice(&node_logs);
    println!("dispatcher SIGKILLed mid-job: {summary}, {copies} speculative copies, chunks run twice {twice:?}");
    assert!(twice.is_empty() || copies > 0, "chunks ran twice on the nodes: {twice:?}\n{log}");
}
