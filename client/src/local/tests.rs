//! In-process tests of the whole path: a [`LocalCluster`] (real QUIC on loopback, real wasmtime)
//! driven through the public [`Client`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::job::JobDescription;
use wire::proto::{FailureKind, JobFailure};
use crate::split::SplitRule;
use node::exec::wasm::{run_serial, WasmEngine};

use super::LocalCluster;
use crate::api::{Client, ClientError};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

async fn client(cluster: &LocalCluster) -> Client {
    Client::connect(&cluster.address().to_string(), cluster.client_identity()).await.expect("connect")
}

async fn wait_for_nodes(cluster: &LocalCluster, count: usize) {
    for _ in 0..200 {
        if client(cluster).await.nodes().await.expect("nodes").len() == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{count} nodes never registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_match_a_serial_run_and_failures_are_reported() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let input = scratch.path().join("input.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&input, &data).expect("input");
    let cluster = LocalCluster::start(2).await.expect("cluster");
    wait_for_nodes(&cluster, 2).await;

    // Many small chunks over two nodes: output must come back complete and in order.
    let payload = repo("examples/checksum.wat");
    let split = SplitRule::Bytes(1000);
    let mut job = JobDescription::new(payload.clone(), split, scratch.path().join("sums.bin"));
    job.inputs = vec![input.clone()];
    let report = client(&cluster).await.run(&job, |_| {}).await.expect("job succeeds");
    assert_eq!(report.progress.done, 300);
    let chunks = split.chunks(&[input]).expect("split").map(|c| c.expect("chunk"));
    let serial = run_serial(&WasmEngine::new().expect("engine"), &std::fs::read(&payload).expect("payload"), b"", chunks)
        .expect("serial run");
    assert_eq!(std::fs::read(&report.output).expect("output"), serial);

    // A trapping payload uses up its attempts, fails with a report and leaves no output.
    let mut failing = JobDescription::new(repo("tests/fixtures/trap.wat"), SplitRule::Range { start: 0, end: 4, step: 1 }, scratch.path().join("never.bin"));
    failing.max_attempts = 2;
    match client(&cluster).await.run(&failing, |_| {}).await {
        Err(ClientError::JobFailed { failure: JobFailure::Chunk { attempts, .. }, .. }) => {
            assert_eq!(attempts.len(), 2);
            assert!(attempts.iter().all(|a| a.failure.kind == FailureKind::Trap), "{attempts:?}");
        }
        other => panic!("expected a chunk failure, got {other:?}"),
    }
    assert!(!failing.output.exists());
    let leftovers: Vec<_> = std::fs::read_dir(scratch.path()).expect("list").flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 2, "only the input and the first output remain: {leftovers:?}");

    // The nodes keep serving, and one client connection runs several jobs in turn.
    let mut reused = client(&cluster).await;
    for _ in 0..3 {
        let report = reused.run(&job, |_| {}).await.expect("job succeeds again");
        assert_eq!(std::fs::read(&report.output).expect("output"), serial);
    }
    reused.close().await;
    cluster.shutdown().await;
}

/// A local cluster's nodes read the submitter's files in place: the dispatcher spools chunk
/// references, not the bytes, and the output is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_nodes_read_input_files_in_place() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let input = scratch.path().join("input.bin");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(&input, &data).expect("input");
    let cluster = LocalCluster::start(2).await.expect("cluster");
    wait_for_nodes(&cluster, 2).await;

    let payload = repo("examples/checksum.wat");
    let split = SplitRule::Bytes(64 * 1024);
    let mut job = JobDescription::new(payload.clone(), split, scratch.path().join("sums.bin"));
    job.inputs = vec![input.clone()];
    LocalCluster::read_input_in_place(&mut job);
    assert!(job.shared_input, "a bytes split over a regular file is read in place");

    let mut submitter = client(&cluster).await;
    let id = submitter.submit(&job).await.expect("submitted");
    let spooled = cluster.root.join("dispatcher").join("jobs").join(id.0.to_string()).join("input");
    let spooled = std::fs::metadata(&spooled).map(|m| m.len()).unwrap_or_else(|e| panic!("{}: {e}", spooled.display()));
    assert!(spooled < 10_000, "the dispatcher spooled {spooled} bytes for a 1 MB input read in place");
    let report = submitter.wait(id, &job.output, job.results, |_| {}).await.expect("job succeeds");
    let chunks = split.chunks(&[input]).expect("split").map(|c| c.expect("chunk"));
    let serial = run_serial(&WasmEngine::new().expect("engine"), &std::fs::read(&payload).expect("payload"), b"", chunks)
        .expect("serial run");
    assert_eq!(std::fs::read(&report.output).expect("output"), serial);

    // A `lines` rule cuts at line ends it has to read: its chunks still travel as bytes.
    let mut lines = JobDescription::new(payload, SplitRule::Lines(10), scratch.path().join("lines.bin"));
    lines.inputs = vec![scratch.path().join("input.bin")];
    LocalCluster::read_input_in_place(&mut lines);
    assert!(!lines.shared_input);
    submitter.close().await;
    cluster.shutdown().await;
}

/// `Client::run` of a reduce job writes the one combined result; a payload without
/// `dispy_combine` (which `dispy-submit` would refuse before submitting) is refused by the nodes,
/// and the job fails saying why; `Client::open` refuses reduce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_jobs_through_the_client_api() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let input = scratch.path().join("input.bin");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&input, &data).expect("input");
    let cluster = LocalCluster::start(2).await.expect("cluster");
    wait_for_nodes(&cluster, 2).await;

    let mut job = JobDescription::new(repo("examples/sum.wat"), SplitRule::Bytes(3000), scratch.path().join("sum.bin"));
    job.inputs = vec![input.clone()];
    job.results = wire::proto::ResultMode::Reduce;
    let report = client(&cluster).await.run(&job, |_| {}).await.expect("the reduce succeeds");
    assert_eq!(report.progress.done, 34);
    let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(std::fs::read(&report.output).expect("output"), sum.to_le_bytes());

    let mut refused = job.clone();
    refused.payload = repo("examples/checksum.wat");
    refused.output = scratch.path().join("never.bin");
    match client(&cluster).await.run(&refused, |_| {}).await {
        Err(ClientError::JobFailed { failure: JobFailure::Rejected { error }, .. }) => {
            assert!(error.contains("does not export `dispy_combine`"), "{error}");
        }
        other => panic!("expected the nodes to refuse the job, got {other:?}"),
    }
    assert!(!refused.output.exists());

    let mut stream_client = client(&cluster).await;
    assert!(matches!(stream_client.open(&job).await, Err(ClientError::ReduceStream)));
    cluster.shutdown().await;
}
