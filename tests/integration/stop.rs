//! Graceful node stops (issue 23, item 4): SIGTERM to a node mid-job drains it, so the chunks it
//! runs finish, are acknowledged and never run again; a second SIGTERM, or its `stop_timeout`,
//! cancels what is left, and the dispatcher runs those chunks elsewhere at once (its
//! `node_timeout` here is an hour, so only an immediate requeue lets the job finish);
//! `dispy-submit drain NODE --wait` returns once the node is idle.
//!
//! Chunk executions are counted from the nodes' logs: the `node stopped` line of a stopped node
//! and the last idle `node health` line of the other, each with the node's `chunks_done`.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use tests::durable::{field_u64, last_health, log_events};
use tests::{assert_eventually, fixture, poll_until, Cluster, Run, COMMAND_TIMEOUT};

/// Spin iterations per chunk of `count.wat` for the graceful stops: about a second of guest time
/// here, so a node is surely running a chunk when it gets SIGTERM. Not a timing assertion.
const SPIN: &str = "500000000";
/// Chunks that outlast any stop a test makes, so cancelling is what ends them.
const LONG_SPIN: &str = "2000000000";
/// How long a drained stop may take: the chunks the node holds, on a loaded machine.
const STOP_WAIT: Duration = Duration::from_secs(120);

/// Two one-slot nodes logging JSON with a `node health` line every second.
fn cluster(node_args: &[&str], dispatcher_args: &[&str]) -> Cluster {
    let mut args = vec!["--log-format", "json", "--health-log-interval", "1s"];
    args.extend_from_slice(node_args);
    Cluster::builder().nodes(2).node_args(&args).dispatcher_args(dispatcher_args).start()
}

/// Submits `count.wat` over `chunks` one-wide ranges, detached; returns the job id.
fn submit(cluster: &Cluster, chunks: u64, spin: &str, output: &Path) -> u64 {
    let split = format!("range:0..{chunks}:1");
    let payload = fixture("count.wat");
    let args: [&dyn AsRef<OsStr>; 9] =
        [&"submit", &"--payload", &payload, &"--split", &split, &"--args", &spin, &"--output", &output];
    let run = cluster.submit(&args);
    run.check_success();
    run.stdout.trim().parse().unwrap_or_else(|_| panic!("`submit` printed no job id\n{run}"))
}

/// What `count.wat` outputs for `chunks` one-wide ranges: each chunk's [start, end) as two
/// little-endian u64.
fn expected(chunks: u64) -> Vec<u8> {
    (0..chunks).flat_map(|i| [i.to_le_bytes(), (i + 1).to_le_bytes()]).flatten().collect()
}

/// Waits until the dispatcher lists `node` with a slot busy: it is running a chunk.
#[track_caller]
fn wait_until_running(cluster: &Cluster, node: &str) {
    assert_eventually!(
        cluster
            .nodes_json()
            .is_ok_and(|nodes| nodes.iter().any(|n| n["name"] == node && n["busy"].as_u64().is_some_and(|b| b > 0))),
        "{node} never ran a chunk\n{}",
        cluster.logs()
    );
}

/// `wait JOB`: checks it succeeded with the output `count.wat` gives for `chunks` chunks.
#[track_caller]
fn check_job(cluster: &Cluster, job: u64, chunks: u64, output: &Path) -> Run {
    let wait = cluster.submit_with(cluster.client_dir(), vec!["wait".into(), job.to_string().into()], COMMAND_TIMEOUT);
    wait.check_success();
    let bytes = std::fs::read(output).unwrap_or_else(|e| panic!("no output at {}: {e}\n{wait}", output.display()));
    assert!(bytes == expected(chunks), "wrong output ({} bytes)\n{wait}", bytes.len());
    wait
}

/// `chunks_done` and `drained` of a stopped node's `node stopped` line.
#[track_caller]
fn stopped(log: &str) -> (u64, bool) {
    let events = log_events(log);
    let line = events.iter().rfind(|e| e["message"] == "node stopped").unwrap_or_else(|| panic!("no `node stopped` line\n{log}"));
    let done = field_u64(line, "chunks_done").expect("chunks_done");
    (done, line["drained"] == true || line["drained"] == "true")
}

/// `chunks_done` of the first idle `node health` line node `index` logs from now on: its final
/// count once the job is over.
#[track_caller]
fn settled(cluster: &mut Cluster, index: usize) -> u64 {
    let after = log_events(&cluster.node(index).log()).len().checked_sub(1);
    let mut found = None;
    let settled = poll_until(Duration::from_secs(30), || {
        found = last_health(&cluster.node(index).log(), after).filter(|h| h.busy == 0);
        found.is_some()
    });
    assert!(settled, "node {index} logged no idle `node health` line\n{}", cluster.logs());
    found.map_or(0, |h| h.chunks_done)
}

/// Lines of the dispatcher's log that mention `what` and the node `name`.
fn dispatcher_says(cluster: &Cluster, what: &str, name: &str) -> bool {
    cluster.dispatcher_log().lines().any(|l| l.contains(what) && l.contains(name))
}

#[test]
fn sigterm_mid_job_lets_the_running_chunks_finish_and_none_runs_again() {
    const CHUNKS: u64 = 10;
    let mut cluster = cluster(&[], &[]);
    let output = cluster.output_dir("graceful").join("out.bin");
    let job = submit(&cluster, CHUNKS, SPIN, &output);
    wait_until_running(&cluster, "n1");

    // One SIGTERM: n1 finishes what it holds, waits for the acknowledgements, and exits 0.
    let exit = cluster.node(0).terminate(STOP_WAIT);
    assert!(exit.success(), "n1 exited with {exit}\n{}", cluster.logs());
    let (n1_done, drained) = stopped(&cluster.node(0).log());
    assert!(drained && n1_done >= 1, "n1 stopped with {n1_done} chunks done, drained: {drained}\n{}", cluster.logs());
    assert!(dispatcher_says(&cluster, "node stopping", "n1"), "n1 never said it was leaving\n{}", cluster.logs());
    assert!(dispatcher_says(&cluster, "node left", "n1"), "n1 did not leave on purpose\n{}", cluster.logs());
    assert!(!dispatcher_says(&cluster, "node lost", "n1"), "n1 was written off\n{}", cluster.logs());

    check_job(&cluster, job, CHUNKS, &output);
    let n2_done = settled(&mut cluster, 1);
    let copies = cluster.dispatcher_log().matches("speculative copy of a straggling chunk").count() as u64;
    println!("n1 ran {n1_done} chunks before it stopped, n2 {n2_done}; {copies} speculative copies");
    assert!(
        (CHUNKS..=CHUNKS + copies).contains(&(n1_done + n2_done)),
        "the nodes ran {} chunks for a job of {CHUNKS} (plus at most {copies} speculative copies): the stop \
         cost chunk runs\n{}",
        n1_done + n2_done,
        cluster.logs()
    );
}

/// SIGTERM to n1 with a chunk far from done, then `hurry` it; checks the chunks it held ran on n2
/// at once (the dispatcher's `node_timeout` is an hour).
fn cancelled_stop(node_args: &[&str], hurry: impl FnOnce(&mut Cluster), says: &str) {
    const CHUNKS: u64 = 4;
    let mut cluster = cluster(node_args, &["--node-timeout", "1h"]);
    let output = cluster.output_dir("cancelled").join("out.bin");
    let job = submit(&cluster, CHUNKS, LONG_SPIN, &output);
    wait_until_running(&cluster, "n1");
    cluster.node(0).send_sigterm();
    assert_eventually!(dispatcher_says(&cluster, "node stopping", "n1"), "n1 never said it was leaving\n{}", cluster.logs());
    hurry(&mut cluster);
    let exit = cluster.node(0).terminate(Duration::from_secs(30));
    assert!(exit.success(), "n1 exited with {exit}\n{}", cluster.logs());
    let log = cluster.node(0).log();
    assert!(log.contains(says), "n1 did not say {says:?}\n{}", cluster.logs());
    let (_, drained) = stopped(&log);
    assert!(!drained, "n1 finished a chunk of {LONG_SPIN} spins before it was cut short\n{}", cluster.logs());
    assert!(dispatcher_says(&cluster, "node left", "n1"), "n1 did not leave on purpose\n{}", cluster.logs());
    // Within `wait`'s timeout, far below node_timeout: the dispatcher requeued n1's chunks at once.
    check_job(&cluster, job, CHUNKS, &output);
}

#[test]
fn a_second_sigterm_cancels_what_is_left_and_it_runs_elsewhere_at_once() {
    // `terminate` itself sends the second SIGTERM.
    cancelled_stop(&[], |_| {}, "stopping at once");
}

#[test]
fn stop_timeout_cancels_what_is_left_and_it_runs_elsewhere_at_once() {
    let wait_out = |cluster: &mut Cluster| {
        assert!(
            poll_until(Duration::from_secs(30), || !cluster.node(0).is_alive()),
            "n1 outlived its stop_timeout\n{}",
            cluster.logs()
        );
    };
    cancelled_stop(&["--stop-timeout", "1s"], wait_out, "stop_timeout passed");
}

#[test]
fn drain_wait_returns_once_the_node_is_idle() {
    const CHUNKS: u64 = 8;
    let mut cluster = cluster(&[], &[]);
    let root = cluster.pki().issue_admin("root");
    let output = cluster.output_dir("drained").join("out.bin");
    let job = submit(&cluster, CHUNKS, SPIN, &output);
    wait_until_running(&cluster, "n1");
    let drain = cluster.submit_as(&root, &[&"drain", &"n1", &"--wait"]);
    drain.check_success();
    assert!(drain.stderr.contains("waiting for n1") && drain.stderr.contains("n1 is idle"), "{drain}");
    let nodes = cluster.nodes_json().unwrap_or_else(|run| panic!("{run}"));
    let n1 = nodes.iter().find(|n| n["name"] == "n1").unwrap_or_else(|| panic!("n1 not listed: {nodes:?}"));
    assert_eq!((n1["state"].as_str(), n1["busy"].as_u64(), n1["in_flight"].as_u64()), (Some("drained"), Some(0), Some(0)), "{n1}");
    check_job(&cluster, job, CHUNKS, &output);
    cluster.check_all_alive();
}
