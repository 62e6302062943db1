//! Things going wrong, as a user sees them: payloads that trap, loop, allocate past the limit or
//! return an error code fail their job (exit 1) with a per-chunk report naming the failure, the
//! chunk and the node, leave no output or temporary file behind, and leave the nodes serving the
//! next job. Broken payloads, an unreachable dispatcher and unplaceable jobs give a clear error
//! and the documented exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tests::{
    check_same_bytes, command, dir_entries, example, fixture, free_udp_port, pseudo_random_bytes, serial_output,
    Cluster, Job, Pki, Run,
};

/// A file that `lines:100` makes into exactly one chunk (chunk 0).
fn one_chunk_input(cluster: &Cluster) -> PathBuf {
    let input = cluster.dir().join("one-chunk.txt");
    std::fs::write(&input, "a single chunk\n").expect("write the input");
    input
}

/// Runs `payload` over one chunk with `flags` and checks the job fails with exit code 1, a report
/// naming chunk 0, a node and every word of `expect`, and an empty output directory. Then checks
/// the nodes still serve a good job.
#[track_caller]
fn check_chunk_failure(payload: &str, flags: &[(&str, &str)], expect: &[&str]) {
    let mut cluster = Cluster::start(2);
    let out_dir = cluster.output_dir("failing");
    let mut job = Job::new(&fixture(payload), "lines:100", &out_dir.join("out.bin")).input(&one_chunk_input(&cluster));
    for (flag, value) in flags {
        job = job.flag(flag, value);
    }
    let run = cluster.run_job(&job);
    run.check_code(1);
    run.check_stderr_mentions(&["chunk 0"]);
    run.check_stderr_mentions(expect);
    assert!(
        ["node n1", "node n2"].iter().any(|node| run.stderr.contains(node)),
        "the report should name the node\n{run}"
    );
    assert_eq!(dir_entries(&out_dir), Vec::<String>::new(), "no output and no temporary file may remain\n{run}");
    check_nodes_keep_serving(&mut cluster);
}

/// Both nodes are alive and listed, and a job with many chunks still produces the right output.
#[track_caller]
fn check_nodes_keep_serving(cluster: &mut Cluster) {
    cluster.check_all_alive();
    cluster.wait_for_nodes(&["n1", "n2"]);
    let input = cluster.dir().join("after.bin");
    std::fs::write(&input, pseudo_random_bytes(64 * 1024, 7)).expect("write the input");
    let output = cluster.output_dir("after").join("after.out");
    let payload = example("checksum.wat");
    let run = cluster.run_job(&Job::new(&payload, "bytes:1KiB", &output).input(&input));
    run.check_success();
    let got = std::fs::read(&output).unwrap_or_else(|e| panic!("no output file: {e}\n{run}"));
    check_same_bytes(&got, &serial_output(&payload, b"", "bytes:1KiB", &[input]), &run);
}

/// `dispy-submit run` with `payload` fails before running anything: exit code 64, one line
/// mentioning every word of `expect`, no output.
#[track_caller]
fn check_usage_error(payload: &Path, expect: &[&str]) {
    let cluster = Cluster::start(0);
    let out_dir = cluster.output_dir("usage");
    let run =
        cluster.run_job(&Job::new(payload, "bytes:1KiB", &out_dir.join("out.bin")).input(&example("data/lorem.txt")));
    run.check_code(64);
    run.check_one_line_error();
    run.check_stderr_mentions(expect);
    assert_eq!(dir_entries(&out_dir), Vec::<String>::new(), "no output may be written\n{run}");
}

/// A job no node can take fails after the placement timeout with exit code 1 and a reason.
#[track_caller]
fn check_unplaceable(cluster: &Cluster, job_file: &str, expect: &[&str]) {
    let path = cluster.dir().join("job.toml");
    std::fs::write(&path, job_file).expect("write the job file");
    let run = cluster.submit(&[&"run", &path]);
    run.check_code(1);
    run.check_stderr_mentions(expect);
    let results = cluster.dir().join("results");
    if results.exists() {
        assert_eq!(dir_entries(&results), Vec::<String>::new(), "no output may be written\n{run}");
    }
}

/// A job file running checksum.wat over the example text into `results/`, with `extra` lines.
fn job_file(extra: &str) -> String {
    format!(
        "payload = {:?}\ninput = {:?}\nsplit = \"bytes:1KiB\"\noutput = \"results/sums.bin\"\n{extra}\n",
        example("checksum.wat"),
        example("data/lorem.txt"),
    )
}

#[test]
fn trapping_payload_fails_its_job_and_nodes_keep_serving() {
    check_chunk_failure("trap.wat", &[], &["trap"]);
}

#[test]
fn looping_payload_hits_the_time_limit() {
    check_chunk_failure("loop.wat", &[("--chunk-timeout", "1s")], &["time limit"]);
}

#[test]
fn memory_hog_hits_the_memory_limit() {
    check_chunk_failure("memory_hog.wat", &[("--memory-limit", "16MiB")], &["memory limit"]);
}

#[test]
fn payload_error_code_is_reported_without_retry() {
    check_chunk_failure("fail_code.wat", &[], &["code 7", "after 1 attempt"]);
}

#[test]
fn missing_payload_file_is_a_usage_error() {
    check_usage_error(
        Path::new("/nonexistent/dispy/payload.wasm"),
        &["/nonexistent/dispy/payload.wasm", "no such file"],
    );
}

#[test]
fn invalid_webassembly_is_a_usage_error() {
    let temp = tempfile::tempdir().expect("create a temporary directory");
    let payload = temp.path().join("garbage.wasm");
    std::fs::write(&payload, b"\0asm but not really").expect("write the payload");
    check_usage_error(&payload, &["garbage.wasm", "not valid WebAssembly"]);
}

#[test]
fn missing_dispy_run_export_is_a_usage_error() {
    check_usage_error(&fixture("no_run_export.wat"), &["no_run_export.wat", "dispy_run"]);
}

#[test]
fn unreachable_dispatcher_is_a_connection_error() {
    let temp = tempfile::tempdir().expect("create a temporary directory");
    let client = Pki::init(&temp.path().join("ca")).issue_client("lonely");
    let address = format!("127.0.0.1:{}", free_udp_port());
    let mut nodes = command("dispy-submit");
    nodes.arg("--dispatcher").arg(&address).arg("--tls-dir").arg(&client).arg("nodes");
    // The product should give up well within this; the harness only guards against a hang.
    let run = Run::capture(nodes, Duration::from_secs(60));
    run.check_code(2);
    run.check_one_line_error();
    run.check_stderr_mentions(&["failed to connect", &address]);
    println!("dispy-submit gave up on an unreachable dispatcher after {:.1?}", run.elapsed);
}

#[test]
fn job_fails_when_no_node_is_connected() {
    let cluster = Cluster::start(0);
    check_unplaceable(&cluster, &job_file("placement_timeout = \"2s\""), &["no eligible node", "0 nodes"]);
}

/// A job no connected node could ever run (here: more memory than any machine has) is refused
/// at submission, without waiting out a placement timeout; a refusal exits 2 like every other.
#[test]
fn job_no_connected_node_could_run_is_refused_at_once() {
    let cluster = Cluster::start(2);
    let path = cluster.dir().join("job.toml");
    std::fs::write(&path, job_file("memory_limit = \"100TiB\"")).expect("write the job file");
    let run = cluster.submit(&[&"run", &path]);
    run.check_code(2);
    run.check_stderr_mentions(&["no connected node could ever run", "memory"]);
    let results = cluster.dir().join("results");
    assert!(!results.exists() || dir_entries(&results).is_empty(), "no output may be written\n{run}");
}

/// The name of the node whose last heartbeat reported a busy slot, if one did.
fn busy_node(cluster: &Cluster) -> Option<String> {
    let nodes = cluster.nodes_json().ok()?;
    nodes.iter().find(|n| n["busy"].as_u64().unwrap_or(0) > 0).and_then(|n| n["name"].as_str()).map(str::to_owned)
}

/// A chunk whose node is lost every time it runs it (here: the test kills it) is retried on the
/// next node until the crash limit (3 by default), then fails its job with a report naming the
/// three nodes, instead of taking node after node down.
#[test]
fn a_chunk_that_takes_down_every_node_it_runs_on_fails_its_job_naming_them() {
    let mut cluster = Cluster::builder().nodes(4).slots(1).start();
    let output = cluster.output_dir("poison").join("out.bin");
    let job = Job::new(&fixture("slow.wat"), "range:0..1:1", &output)
        .payload_args("100000000000")
        .flag("--chunk-timeout", "1h");
    let log = cluster.dir().join("poison-run.log");
    let mut run = tests::Daemon::spawn("poison run", cluster.submit_command(cluster.client_dir(), job.to_args()), &log);
    let mut killed = Vec::new();
    for _ in 0..3 {
        let mut busy = None;
        tests::assert_eventually!(
            {
                busy = busy_node(&cluster).filter(|name| !killed.contains(name));
                busy.is_some()
            },
            "no node ran the chunk after {killed:?} were killed\n{}",
            cluster.logs()
        );
        let name = busy.unwrap_or_default();
        let index: usize = name.trim_start_matches('n').parse::<usize>().expect("nodes are n1..n4") - 1;
        cluster.node(index).kill();
        killed.push(name);
    }
    let status = run.wait_for_exit(Duration::from_secs(120));
    let report = run.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "the job did not fail\n{report}");
    for name in &killed {
        assert!(report.contains(name.as_str()), "the report does not name {name}\n{report}");
    }
    assert!(report.contains("lost"), "the report does not say the nodes were lost\n{report}");
    assert!(!output.exists(), "a failed job wrote its output");
}
