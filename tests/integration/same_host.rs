//! Issue 22 part 3, the same-host shortcut, with real processes on 127.0.0.1: `run` without
//! `--shared-input` has the nodes read an input file below every node's `shared_input_roots` in
//! place (the dispatcher's `dispy_received_bytes_total{stream="input"}` shows only the small
//! chunk references crossing QUIC), `--ship-input` ships the bytes, a node whose roots do not
//! cover the file makes the submitter ship, a node that joins later without the root rejects the
//! job and the others run it, and a file changed after submission is refused by the node, never
//! read: the job fails with a clear error and writes no output.

use std::path::Path;

use tests::{
    assert_eventually, check_same_bytes, example, free_tcp_port, http_get, pseudo_random_bytes, serial_output, Cluster,
    Job, Run,
};

/// The input's size: 19 chunks of 16 KiB, whose references are a few KiB in all.
const INPUT_LEN: usize = 300_000;
const SPLIT: &str = "bytes:16KiB";

/// The dispatcher's count of chunk input bytes received from submitters (no sample yet: none).
fn received_input_bytes(http: &str) -> u64 {
    let reply = http_get(http, "/metrics", &[]).unwrap_or_else(|e| panic!("GET {http}/metrics: {e}"));
    assert_eq!(reply.status, 200, "{reply:?}");
    let sample = reply.body.lines().find(|line| line.starts_with("dispy_received_bytes_total{stream=\"input\"}"));
    let value = sample.map(|line| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()));
    match value {
        None => 0,
        Some(Some(value)) => value as u64,
        Some(None) => panic!("an unreadable input byte count in\n{}", reply.body),
    }
}

/// The `input` field of a `--json` run's last line.
fn input_field(run: &Run) -> String {
    let last = run.stdout.lines().last().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON: {e}\n{run}"));
    json["input"].as_str().unwrap_or_else(|| panic!("no input field\n{run}")).to_owned()
}

/// A cluster of two nodes with the dispatcher's metrics on a free port, and its address.
fn cluster_with_metrics(builder: tests::ClusterBuilder) -> (Cluster, String) {
    let http = format!("127.0.0.1:{}", free_tcp_port());
    (builder.dispatcher_args(&["--http-listen", &http]).start(), http)
}

/// Runs the checksum payload over `input` with `extra` flags and `--json`, checks the output
/// against the serial run, and returns the run with the input bytes the dispatcher received.
#[track_caller]
fn run_checksum(cluster: &Cluster, http: &str, name: &str, input: &Path, extra: &[&str]) -> (Run, u64) {
    let before = received_input_bytes(http);
    let output = cluster.output_dir(name).join("sums.bin");
    let job = Job::new(&example("checksum.wat"), SPLIT, &output).input(input).switch("--json");
    let run = cluster.run_job(&extra.iter().fold(job, |job, flag| job.switch(flag)));
    run.check_success();
    let want = serial_output(&example("checksum.wat"), b"", SPLIT, &[input.to_owned()]);
    check_same_bytes(&std::fs::read(&output).expect("output"), &want, &run);
    let received = received_input_bytes(http) - before;
    (run, received)
}

#[test]
fn input_every_node_can_read_is_read_in_place_unless_shipped() {
    let (cluster, http) = cluster_with_metrics(Cluster::builder());
    let input = cluster.shared_dir().join("input.bin");
    std::fs::write(&input, pseudo_random_bytes(INPUT_LEN, 3)).expect("write the input");

    let (run, received) = run_checksum(&cluster, &http, "in-place", &input, &[]);
    run.check_stderr_mentions(&["input read in place by the nodes, not shipped: n1, n2 on this host"]);
    assert_eq!(input_field(&run), "in place", "{run}");
    assert!(received < INPUT_LEN as u64 / 10, "{received} input bytes crossed QUIC for a file read in place\n{run}");

    let (run, received) = run_checksum(&cluster, &http, "shipped", &input, &["--ship-input"]);
    run.check_stderr_mentions(&["input shipped through the dispatcher (--ship-input)"]);
    assert_eq!(input_field(&run), "shipped", "{run}");
    assert!(received >= INPUT_LEN as u64, "only {received} input bytes crossed QUIC for shipped input\n{run}");

    // Both ways at once is a usage error.
    let output = cluster.output_dir("both").join("sums.bin");
    let job = Job::new(&example("checksum.wat"), SPLIT, &output).input(&input);
    let run = cluster.run_job(&job.switch("--ship-input").switch("--shared-input"));
    run.check_code(64);
    run.check_stderr_mentions(&["--ship-input", "--shared-input"]);
}

#[test]
fn a_node_that_cannot_read_the_file_makes_the_submitter_ship_it() {
    let (cluster, http) = cluster_with_metrics(Cluster::builder().node_shared_root("n2", Path::new("/nonexistent")));
    let nodes = cluster.nodes_json().unwrap_or_else(|run| panic!("nodes --json failed\n{run}"));
    let roots = |name: &str| nodes.iter().find(|n| n["name"] == name).map(|n| n["shared_input_roots"].clone());
    let shared = cluster.shared_dir().canonicalize().expect("canonical").display().to_string();
    assert_eq!(roots("n1"), Some(serde_json::json!([shared])), "{nodes:?}");
    assert_eq!(roots("n2"), Some(serde_json::json!([])), "a missing root is not advertised: {nodes:?}");
    assert!(nodes.iter().all(|n| n["host_id"].as_str().is_some_and(|id| !id.is_empty())), "{nodes:?}");

    let input = cluster.shared_dir().join("input.bin");
    std::fs::write(&input, pseudo_random_bytes(INPUT_LEN, 4)).expect("write the input");
    let (run, received) = run_checksum(&cluster, &http, "shipped", &input, &[]);
    run.check_stderr_mentions(&["input shipped through the dispatcher (n2 cannot read it in place"]);
    assert_eq!(input_field(&run), "shipped", "{run}");
    assert!(received >= INPUT_LEN as u64, "only {received} input bytes crossed QUIC for shipped input\n{run}");
}

#[test]
fn a_node_joining_without_the_root_rejects_the_job_and_the_others_run_it() {
    let elsewhere = tempfile::tempdir().expect("a directory");
    let mut cluster = Cluster::builder().nodes(1).node_shared_root("n2", elsewhere.path()).start();
    let admin = cluster.pki().issue_admin("ops");
    let input = cluster.shared_dir().join("input.bin");
    std::fs::write(&input, pseudo_random_bytes(INPUT_LEN, 5)).expect("write the input");
    // n1, which can read the file, is drained while the job is submitted and n2 joins.
    cluster.submit_as(&admin, &[&"drain", &"n1"]).check_success();
    let output = cluster.output_dir("late").join("sums.bin");
    let mut args = Job::new(&example("checksum.wat"), SPLIT, &output).input(&input).to_args();
    args[0] = "submit".into();
    let submit = cluster.submit_with(cluster.client_dir(), args, std::time::Duration::from_secs(120));
    submit.check_success();
    submit.check_stderr_mentions(&["input read in place by the nodes"]);
    let n2 = cluster.pki().issue_node("n2");
    cluster.start_node("n2", &n2);
    let log = cluster.dir().join("node-n2.log");
    assert_eventually!(
        std::fs::read_to_string(&log).is_ok_and(|log| log.contains("job rejected") && log.contains("outside this node's shared_input_roots")),
        "n2 never rejected the job:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    cluster.submit_as(&admin, &[&"undrain", &"n1"]).check_success();
    let wait = cluster.submit(&[&"wait", &submit.stdout.trim()]);
    wait.check_success();
    let want = serial_output(&example("checksum.wat"), b"", SPLIT, &[input]);
    check_same_bytes(&std::fs::read(&output).expect("output"), &want, &wait);
}

#[test]
fn a_file_changed_after_submission_is_refused_not_read() {
    let mut cluster = Cluster::start(1);
    let admin = cluster.pki().issue_admin("ops");
    let input = cluster.shared_dir().join("input.bin");
    let original = pseudo_random_bytes(INPUT_LEN, 6);
    std::fs::write(&input, &original).expect("write the input");
    // No chunk runs before the file changes: its only node is drained meanwhile.
    cluster.submit_as(&admin, &[&"drain", &"n1"]).check_success();
    let output = cluster.output_dir("changed").join("sums.bin");
    let mut args = Job::new(&example("checksum.wat"), SPLIT, &output).input(&input).switch("--json").to_args();
    args[0] = "submit".into();
    let submit = cluster.submit_with(cluster.client_dir(), args, std::time::Duration::from_secs(120));
    submit.check_success();
    assert_eq!(input_field(&submit), "in place", "{submit}");
    let json: serde_json::Value = serde_json::from_str(submit.stdout.trim()).expect("JSON");
    let id = json["job"].as_u64().expect("a job id").to_string();

    // The same size, other bytes: another file at the same path as far as the node can tell.
    let changed: Vec<u8> = original.iter().map(|b| b ^ 0xff).collect();
    std::fs::write(&input, changed).expect("rewrite the input");
    cluster.submit_as(&admin, &[&"undrain", &"n1"]).check_success();
    let wait = cluster.submit(&[&"wait", &id]);
    wait.check_code(1);
    wait.check_stderr_mentions(&["is not the file the job was submitted with", "input.bin"]);
    assert!(!output.exists(), "no output from a changed input\n{wait}");
    cluster.check_all_alive();
}
