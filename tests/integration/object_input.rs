//! Object input (`--input s3://BUCKET/KEY`) against an S3-compatible server the test starts on
//! loopback (moto): every split rule's output equals the same job on a local copy, nodes read
//! only their `object_store_buckets` (the submitter is told which can, and a node without the
//! bucket rejects the job instead of running its chunks), and missing objects, unreadable
//! buckets and a store lost mid-job fail clearly while the daemons stay up. And `https://` input
//! read from a live HTTPS server on loopback whose private CA the node trusts through
//! `object_store_ca_file` (the submitter, which sizes the object, through `SSL_CERT_FILE`).

use std::path::{Path, PathBuf};

use tests::https::HttpsFileServer;
use tests::s3::S3Server;
use tests::{check_same_bytes, example, pseudo_random_bytes, serial_output, Cluster, Job, Run, COMMAND_TIMEOUT};

/// Text of lines of varying length (some long enough to cross several ranges), ending without
/// a newline.
fn text(lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..lines {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = if i % 97 == 0 { 5_000 } else { (state % 120) as usize };
        out.extend((0..len).map(|j| b"abcdefghij klmnopqrstuvwxyz"[(j + i) % 27]));
        out.push(b'\n');
    }
    out.extend_from_slice(b"the last line has no newline");
    out
}

fn url(text: &str) -> PathBuf {
    PathBuf::from(text)
}

#[test]
fn object_input_matches_a_local_copy_and_only_allowed_nodes_read_it() {
    let Some(mut server) = S3Server::start("object_input_matches_a_local_copy_and_only_allowed_nodes_read_it") else {
        return;
    };
    server.create_bucket("data");
    server.create_bucket("secret");
    let data = text(2_000);
    server.put("data", "text.txt", &data);
    server.put("secret", "x.txt", b"hidden\n");
    let parts: [(&str, &[u8]); 3] = [("a.txt", b"first part\n"), ("b.txt", b""), ("c.txt", b"third\npart")];
    for (name, bytes) in parts {
        server.put("data", &format!("parts/{name}"), bytes);
    }

    let mut builder = Cluster::builder().nodes(3).node_env("n1", "DISPY_OBJECT_STORE_BUCKETS", "data");
    builder = builder.node_env("n2", "DISPY_OBJECT_STORE_BUCKETS", "other,data");
    builder = builder.node_env("n3", "DISPY_OBJECT_STORE_BUCKETS", "other");
    for (key, value) in server.env() {
        builder = builder.env(key, &value);
    }
    let mut cluster = builder.start();
    let local = cluster.dir().join("text.txt");
    std::fs::write(&local, &data).expect("local copy");
    let local_parts = cluster.dir().join("parts");
    std::fs::create_dir(&local_parts).expect("dir");
    for (name, bytes) in parts {
        std::fs::write(local_parts.join(name), bytes).expect("local copy");
    }

    let nodes = cluster.nodes_json().expect("nodes --json");
    let n1 = nodes.iter().find(|n| n["name"] == "n1").expect("n1 listed");
    assert_eq!(n1["object_store_buckets"], serde_json::json!(["data"]), "{nodes:?}");

    let checksum = example("checksum.wat");
    let upper = example("upper.wat");
    let cases: [(&Path, &str, &str, Vec<u8>); 4] = [
        (&checksum, "bytes:7KiB", "s3://data/text.txt", serial_output(&checksum, b"", "bytes:7KiB", std::slice::from_ref(&local))),
        (&checksum, "lines:150", "s3://data/text.txt", serial_output(&checksum, b"", "lines:150", std::slice::from_ref(&local))),
        (&upper, "lines:auto", "s3://data/text.txt", data.to_ascii_uppercase()),
        (&checksum, "files", "s3://data/parts/", serial_output(&checksum, b"", "files", std::slice::from_ref(&local_parts))),
    ];
    for (i, (payload, split, input, want)) in cases.into_iter().enumerate() {
        let output = cluster.output_dir(&format!("case-{i}")).join("out.bin");
        let run = cluster.run_job(&Job::new(payload, split, &output).input(&url(input)).flag("--chunk-target", "50ms"));
        run.check_success();
        run.check_stderr_mentions(&[&format!(
            "input {input}: readable by n1, n2; not by n3 (data not in its object_store_buckets)"
        )]);
        check_same_bytes(&std::fs::read(&output).expect("output"), &want, &format!("{split}\n{run}"));
    }
    // n3 was handed chunks (assignments go out before a node answers) and rejected the job
    // instead of reading them; its chunks ran on n1 and n2.
    let n3 = cluster.node(2).log();
    assert!(n3.contains("data is not in this node's object_store_buckets"), "{n3}");

    // A missing object and a bucket no node may read are refused before submitting.
    let output = cluster.output_dir("refused").join("out.bin");
    let run = cluster.run_job(&Job::new(&checksum, "bytes:1KiB", &output).input(&url("s3://data/missing.txt")));
    run.check_code(64);
    run.check_stderr_mentions(&["object input s3://data/missing.txt: no such object"]);
    let run = cluster.run_job(&Job::new(&checksum, "bytes:1KiB", &output).input(&url("s3://secret/x.txt")));
    run.check_code(2);
    run.check_stderr_mentions(&["input s3://secret/x.txt: readable by no connected node; not by n1, n2, n3"]);
    // Files and objects do not mix in one job.
    let run = cluster.run_job(&Job::new(&checksum, "bytes:1KiB", &output).input(&url("s3://data/text.txt")).input(&local));
    run.check_code(64);
    run.check_stderr_mentions(&["cannot be mixed in one job"]);

    // The store is lost after the job is submitted (its readers drained meanwhile, so no chunk
    // runs before): its chunks fail with the store's error, retried, and the job fails; the
    // daemons stay up.
    let admin = cluster.pki().issue_admin("ops");
    for node in ["n1", "n2"] {
        cluster.submit_as(&admin, &[&"drain", &node]).check_success();
    }
    let args = Job::new(&checksum, "bytes:1KiB", &output).input(&url("s3://data/text.txt")).flag("--max-attempts", "2");
    let mut args = args.to_args();
    args[0] = "submit".into();
    let submit = cluster.submit_with(cluster.client_dir(), args, std::time::Duration::from_secs(120));
    submit.check_success();
    server.kill();
    for node in ["n1", "n2"] {
        cluster.submit_as(&admin, &[&"undrain", &node]).check_success();
    }
    let id = submit.stdout.trim().to_owned();
    let wait = cluster.submit(&[&"wait", &id]);
    wait.check_code(1);
    wait.check_stderr_mentions(&["object input s3://data/text.txt"]);
    assert!(!output.exists(), "{wait}");
    cluster.check_all_alive();
}

/// Runs `job` on `cluster` with a submitter that trusts the CA in `ca`: it sizes the object with
/// a HEAD request, and rustls-native-certs reads `SSL_CERT_FILE`.
fn submit_trusting(cluster: &Cluster, ca: &str, job: &Job) -> Run {
    let mut command = cluster.submit_command(cluster.client_dir(), job.to_args());
    command.env("SSL_CERT_FILE", ca);
    Run::capture(command, COMMAND_TIMEOUT)
}

#[test]
fn https_input_is_read_from_a_live_server_the_node_trusts_through_its_ca_file() {
    let files = tempfile::tempdir().expect("a directory");
    let local = files.path().join("data.bin");
    std::fs::write(&local, pseudo_random_bytes(100_000, 9)).expect("write the data");
    let server = HttpsFileServer::start(files.path(), files.path());
    let ca = server.ca_file().display().to_string();
    let mut cluster = Cluster::builder()
        .nodes(1)
        .node_args(&["--object-store-buckets", &server.prefix(), "--object-store-ca-file", &ca])
        .start();
    let submit = |job: Job| submit_trusting(&cluster, &ca, &job);
    let checksum = example("checksum.wat");
    let output = cluster.output_dir("https").join("sums.bin");
    let run = submit(Job::new(&checksum, "bytes:7KiB", &output).input(&url(&server.url("data.bin"))));
    run.check_success();
    let want = serial_output(&checksum, b"", "bytes:7KiB", &[local]);
    check_same_bytes(&std::fs::read(&output).expect("output"), &want, &run);
    // A HEAD from the submitter, then one ranged GET per chunk (14) from the node.
    assert!(server.requests() >= 15, "{} requests\n{run}", server.requests());

    let output = cluster.output_dir("missing").join("sums.bin");
    let run = submit(Job::new(&checksum, "bytes:7KiB", &output).input(&url(&server.url("missing.bin"))));
    run.check_code(64);
    run.check_stderr_mentions(&[&format!("object input {}: no such object", server.url("missing.bin"))]);
    assert!(!output.exists(), "{run}");
    cluster.check_all_alive();

    // Without the CA file the node does not trust the server: its chunk fails, and says why.
    let untrusting = Cluster::builder().nodes(1).node_args(&["--object-store-buckets", &server.prefix()]).start();
    let output = untrusting.output_dir("untrusted").join("sums.bin");
    let job = Job::new(&checksum, "bytes:7KiB", &output).input(&url(&server.url("data.bin"))).flag("--max-attempts", "1");
    let run = submit_trusting(&untrusting, &ca, &job);
    run.check_code(1);
    run.check_stderr_mentions(&["certificate"]);
    assert!(!output.exists(), "{run}");
}
