//! Issue 19, items 4 to 6, with real processes on 127.0.0.1: a drain survives a SIGKILLed and
//! restarted dispatcher (the node reconnects drained, takes no work, and `undrain` releases it),
//! and a revoked node stays refused across the restart; a job submitted with no node connected
//! waits, saying why, and runs when a node joins; a journal whose end was torn off stops the
//! dispatcher with a message naming the file and the commands, `journal check` reports it and
//! `journal repair` lets the dispatcher start again.

use std::path::Path;

use tests::durable::{last_health, DurableCluster};
use tests::{assert_eventually, command, example, serial_output, check_same_bytes, Run, COMMAND_TIMEOUT};

/// The state of node `name` in `nodes --json`, with its address.
fn node_state(cluster: &DurableCluster, name: &str) -> Option<(String, String)> {
    let nodes = cluster.nodes_json().ok()?;
    let node = nodes.iter().find(|n| n["name"] == name)?;
    Some((node["state"].as_str()?.to_owned(), node["address"].as_str()?.to_owned()))
}

/// `dispy-dispatcher ARGS --state-dir STATE` (a maintenance command), run to completion.
fn dispatcher_command(cluster: &DurableCluster, args: &[&str]) -> Run {
    let mut run = command("dispy-dispatcher");
    run.args(args).arg("--state-dir").arg(cluster.state_dir());
    Run::capture(run, COMMAND_TIMEOUT)
}

#[test]
fn a_drain_survives_a_dispatcher_restart_and_so_does_a_revocation() {
    let mut cluster = DurableCluster::builder().nodes(2).start();
    let root = cluster.pki().issue_admin("root");
    let drain = cluster.submit_as(&root, &[&"drain", &"n1"]);
    drain.check_success();
    // A third node, revoked while the dispatcher runs: refused before and after the restart.
    let n3 = cluster.pki().issue_node("n3");
    dispatcher_command(&cluster, &["nodes", "revoke", "n3"]).check_success();

    // The drain was answered once durable: a SIGKILL right after it loses nothing.
    cluster.kill_dispatcher();
    cluster.start_dispatcher();
    cluster.start_node("n3", &n3);
    assert_eventually!(
        node_state(&cluster, "n1").is_some_and(|(state, address)| state == "drained" && address != "-"),
        "n1 never reconnected drained: {:?}",
        cluster.nodes_json()
    );
    cluster.wait_for_nodes(&["n2"]);

    // A job runs on n2 alone.
    let output = cluster.path("out.bin");
    let run = cluster.submit(&[
        &"run",
        &"--payload",
        &example("checksum.wat"),
        &"--input",
        &example("data/lorem.txt"),
        &"--split",
        &"bytes:512",
        &"--output",
        &output,
    ]);
    run.check_success();
    let n1_done = last_health(&cluster.node_log(0), None).map(|h| h.chunks_done);
    assert!(n1_done.is_none_or(|done| done == 0), "drained n1 ran {n1_done:?} chunks\n{}", cluster.node_log(0));
    assert!(node_state(&cluster, "n3").is_none(), "revoked n3 was let in after the restart");

    // Undrained, n1 is ready again, and stays so across another restart.
    cluster.submit_as(&root, &[&"undrain", &"n1"]).check_success();
    cluster.wait_for_nodes(&["n1", "n2"]);
    cluster.stop_dispatcher();
    cluster.start_dispatcher();
    cluster.wait_for_nodes(&["n1", "n2"]);
}

#[test]
fn a_job_submitted_with_no_node_connected_runs_when_a_node_joins() {
    let mut cluster = DurableCluster::builder().nodes(0).start();
    let output = cluster.path("sums.bin");
    let payload = example("checksum.wat");
    let input = example("data/lorem.txt");
    let job = cluster.submit_detached(&[&"--payload", &payload, &"--input", &input, &"--split", &"bytes:1KiB", &"--output", &output]);
    let status = cluster.status_json(job).unwrap_or_else(|run| panic!("`status` failed\n{run}"));
    assert_eq!(status["state"], "running", "a job waits for a node: {status}");
    assert!(status["blocked"].as_str().is_some_and(|b| b.contains("0 nodes connected")), "it says why: {status}");
    // Long past the 30 s the placement timeout used to default to would not be a test; that it
    // waits at all is what the ledger's virtual-time tests check over hours.
    let n1 = cluster.pki().issue_node("n1");
    cluster.start_node("n1", &n1);
    let wait = cluster.submit(&[&"wait", &job.to_string()]);
    wait.check_success();
    let want = serial_output(&payload, b"", "bytes:1KiB", std::slice::from_ref(&input));
    let got = std::fs::read(&output).unwrap_or_else(|e| panic!("no output: {e}\n{wait}"));
    check_same_bytes(&got, &want, &wait);
}

#[test]
fn a_torn_journal_is_named_checked_and_repaired() {
    let mut cluster = DurableCluster::builder().nodes(1).start();
    let output = cluster.path("sums.bin");
    let job = cluster.submit_detached(&[
        &"--payload",
        &example("checksum.wat"),
        &"--input",
        &example("data/lorem.txt"),
        &"--split",
        &"bytes:1KiB",
        &"--output",
        &output,
    ]);
    assert_eventually!(
        cluster.status_json(job).is_ok_and(|s| s["state"] == "succeeded"),
        "job {job} never succeeded"
    );
    cluster.stop_dispatcher();
    let journal = cluster.state_dir().join("journal.redb");
    tear_end(&journal);

    let start = Run::capture(cluster.dispatcher_command(), COMMAND_TIMEOUT);
    assert!(!start.timed_out && start.code.is_some_and(|c| c != 0), "a torn journal must stop the dispatcher\n{start}");
    start.check_stderr_mentions(&[&journal.display().to_string(), "journal check --state-dir", "journal repair --state-dir"]);

    let check = dispatcher_command(&cluster, &["journal", "check"]);
    check.check_code(1);
    assert!(check.stdout.contains("problem: ") && check.stdout.contains("its end was lost"), "{check}");
    let repair = dispatcher_command(&cluster, &["journal", "repair"]);
    repair.check_success();
    assert!(repair.stdout.contains("kept a copy") && repair.stdout.contains("no problems found"), "{repair}");
    dispatcher_command(&cluster, &["journal", "check"]).check_success();

    cluster.start_dispatcher();
    cluster.wait_for_nodes(&["n1"]);
}

/// Cuts the last page off the file, as a crash can when the file's growth was not yet durable.
fn tear_end(path: &Path) {
    let len = std::fs::metadata(path).expect("journal size").len();
    let file = std::fs::OpenOptions::new().write(true).open(path).expect("open the journal");
    file.set_len(len - 4096).expect("truncate the journal");
}
