//! Jobs fed chunk by chunk through the client API (`Client::open`, `JobStream`) on a real
//! cluster: results come back in chunk order whether the caller waits for each one or sends
//! ahead, equal to the serial run of the same chunks; a failing chunk surfaces as the job's
//! failure and leaves the client usable; an abandoned stream makes the client refuse requests.
//! And `dispy-submit stream`, which pipes standard input through such a job.

use client::job::JobDescription;
use common::pki::Identity;
use wire::proto::JobState;
use client::split::SplitRule;
use client::{Client, ClientError};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tests::{block_on, example, fixture, pseudo_random_bytes, serial_output, Cluster};

/// A job description for `payload`; the split rule and output are not used by a stream.
fn streamed_job(cluster: &Cluster, payload: std::path::PathBuf) -> JobDescription {
    JobDescription::new(payload, SplitRule::Bytes(1), cluster.dir().join("unused.out"))
}

async fn connect(cluster: &Cluster) -> Client {
    let identity = Identity::load(cluster.client_dir()).expect("load the client identity");
    Client::connect(cluster.address(), &identity).await.expect("connect to the dispatcher")
}

#[test]
fn streamed_chunks_come_back_in_order_and_match_the_serial_run() {
    let cluster = Cluster::start(2);
    let payload = example("checksum.wat");
    let chunks: Vec<Vec<u8>> = (1..=40u64).map(|seed| pseudo_random_bytes(100 + 37 * seed as usize, seed)).collect();
    // The serial reference, one chunk at a time: each result on its own.
    let input = cluster.dir().join("one-chunk.bin");
    let expect: Vec<Vec<u8>> = chunks
        .iter()
        .map(|chunk| {
            std::fs::write(&input, chunk).expect("write a chunk");
            serial_output(&payload, &[], &format!("bytes:{}", chunk.len()), std::slice::from_ref(&input))
        })
        .collect();
    block_on(async {
        let mut client = connect(&cluster).await;
        let mut stream = client.open(&streamed_job(&cluster, payload)).await.expect("open a stream");
        // Request and response: each chunk after the previous result.
        for (chunk, want) in chunks[..10].iter().zip(&expect) {
            stream.send(chunk).await.expect("send a chunk");
            let got = stream.recv().await.expect("a result").expect("one result outstanding");
            assert_eq!(got.as_ref(), want.as_slice());
        }
        assert!(stream.recv().await.expect("nothing outstanding").is_none());
        // Sent ahead: twenty in flight, received in chunk order.
        for chunk in &chunks[10..30] {
            stream.send(chunk).await.expect("send a chunk");
        }
        for want in &expect[10..30] {
            let got = stream.recv().await.expect("a result").expect("results outstanding");
            assert_eq!(got.as_ref(), want.as_slice());
        }
        // Finishing with results not yet received hands them over.
        for chunk in &chunks[30..] {
            stream.send(chunk).await.expect("send a chunk");
        }
        let (rest, progress) = stream.finish().await.expect("the job succeeds");
        let rest: Vec<Vec<u8>> = rest.iter().map(|r| r.to_vec()).collect();
        assert_eq!(rest, expect[30..]);
        assert_eq!((progress.done, progress.total), (40, 40));
        // The connection is clean for the next request.
        assert_eq!(client.nodes().await.expect("list nodes").len(), 2);
        client.close().await;
    });
}

#[test]
fn a_failing_chunk_fails_the_stream_and_an_abandoned_stream_retires_the_client() {
    let cluster = Cluster::start(1);
    block_on(async {
        let mut client = connect(&cluster).await;
        let mut stream = client.open(&streamed_job(&cluster, fixture("fail_code.wat"))).await.expect("open a stream");
        stream.send(b"any input").await.expect("send a chunk");
        match stream.recv().await {
            Err(ClientError::JobFailed { failure, .. }) => {
                assert!(failure.to_string().contains("code 7"), "{failure}");
            }
            other => panic!("expected the job to fail, got {other:?}"),
        }
        drop(stream);
        // The verdict was read: the client goes on.
        assert_eq!(client.nodes().await.expect("list nodes").len(), 1);

        let mut stream = client.open(&streamed_job(&cluster, example("checksum.wat"))).await.expect("open a stream");
        stream.send(b"some bytes").await.expect("send a chunk");
        let job = stream.id();
        drop(stream);
        match client.nodes().await {
            Err(ClientError::Abandoned(abandoned)) => assert_eq!(abandoned, job),
            other => panic!("expected the client to refuse, got {other:?}"),
        }
        // A new client sees the abandoned job run its one chunk to the end.
        let mut fresh = connect(&cluster).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let summary = fresh.status(job).await.expect("status");
            match summary.state {
                JobState::Running => {}
                JobState::Succeeded => break,
                other => panic!("job {job} ended {other:?}"),
            }
            assert!(Instant::now() < deadline, "job {job} still running: {summary:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        fresh.close().await;
    });
}

/// A job every node rejects fails at once, often before the client's `Attach` arrives; either
/// way the connection hears the failure once, so the same client goes on to the next request.
#[test]
fn a_rejected_payload_fails_each_job_once() {
    let cluster = Cluster::start(1);
    block_on(async {
        let mut client = connect(&cluster).await;
        for _ in 0..10 {
            let mut stream =
                client.open(&streamed_job(&cluster, fixture("no_run_export.wat"))).await.expect("open a stream");
            match stream.send(b"input").await {
                Ok(()) => match stream.recv().await {
                    Err(ClientError::JobFailed { .. }) => {}
                    other => panic!("expected the job to fail, got {other:?}"),
                },
                Err(ClientError::JobFailed { .. }) => {}
                Err(other) => panic!("expected the job to fail, got {other:?}"),
            }
            drop(stream);
            assert_eq!(client.nodes().await.expect("list nodes").len(), 1);
        }
        client.close().await;
    });
}

/// `dispy-submit stream` answers each line of its standard input on its standard output before
/// the next line is even written: chunks go out as they are cut and results come back at once.
#[test]
fn dispy_submit_stream_answers_each_line_before_the_next() {
    let cluster = Cluster::start(1);
    let mut child = tests::command("dispy-submit")
        .arg("--dispatcher")
        .arg(cluster.address())
        .arg("--tls-dir")
        .arg(cluster.client_dir())
        .arg("stream")
        .arg("--payload")
        .arg(example("upper.wat"))
        .args(["--split", "lines:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start dispy-submit stream");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    // Lines are read on a thread, so a missing answer fails the test instead of hanging it.
    let (answers, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if answers.send(line).is_err() {
                break;
            }
        }
    });
    for word in ["alpha", "beta", "gamma delta"] {
        writeln!(stdin, "{word}").and_then(|()| stdin.flush()).expect("write a line");
        let got = answer.recv_timeout(Duration::from_secs(30)).expect("an answer before the next line").expect("a line");
        assert_eq!(got, word.to_uppercase());
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll dispy-submit") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("dispy-submit stream did not end after its input did");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "dispy-submit stream exited {status}");
}

#[test]
fn dispy_submit_stream_refuses_rules_and_flags_that_need_files() {
    let cluster = Cluster::start(1);
    let upper = example("upper.wat");
    let run = cluster.submit(&[&"stream", &"--payload", &upper, &"--split", &"files"]);
    run.check_code(64);
    run.check_stderr_mentions(&["cannot cut a stream", "bytes:SIZE or lines:N"]);
    let run = cluster.submit(&[&"stream", &"--payload", &upper, &"--split", &"lines:1", &"--output", &"out.txt"]);
    run.check_code(64);
    run.check_stderr_mentions(&["standard output", "--output"]);
}
