//! Issue 20, parts 1 and 2, with real processes on 127.0.0.1: `--http-listen` serves Prometheus
//! `/metrics` whose counters, parsed by two Prometheus text parsers of their own (the
//! `prometheus-parse` crate, and the Prometheus project's Python OpenMetrics parser, which checks
//! the whole exposition), equal a job's known chunk count and input size, and a node's
//! `--metrics-listen` does the same for the chunks it ran; a non-loopback address without
//! `http_token_file` stops both daemons at start (and `check-config` says why), and with a token
//! every request needs it; the status page, loaded in headless Chromium, shows the nodes and
//! the jobs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tests::{
    assert_eventually, command, example, fixture, free_tcp_port, free_udp_port, http_get, pseudo_random_bytes, skip,
    Cluster, Job, Pki, Run, COMMAND_TIMEOUT,
};

/// Chunks of the job the metrics test runs: 24 KiB of input cut into 1 KiB chunks.
const CHUNKS: u64 = 24;

/// The samples of `text` as (name, labels, value) by the `prometheus-parse` crate.
fn parse(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("a Prometheus text exposition").samples
}

/// The value of sample `name` with label `label` (`key=value`, or none), as the parser read it.
fn value(samples: &[prometheus_parse::Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let sample = samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(key, want)| s.labels.get(key) == Some(want)))?;
    match sample.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => Some(v),
        _ => None,
    }
}

/// Debian's Python with its `python3-prometheus-client`, whose OpenMetrics parser is the
/// Prometheus project's own; `None` (after a `SKIPPED` line, or a failure when strict) without.
fn openmetrics_python(test: &str) -> Option<PathBuf> {
    let python = PathBuf::from("/usr/bin/python3");
    let found = Command::new(&python)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip(test, "the OpenMetrics check needs /usr/bin/python3 with python3-prometheus-client (apt)");
        return None;
    }
    Some(python)
}

/// Parses `text` with the Python OpenMetrics parser (strict: families, `_total`, `# EOF`) and
/// returns the value of the counter family `family` with `tenant`-like label `label`.
fn openmetrics_counter(python: &Path, text: &str, family: &str, label: (&str, &str)) -> f64 {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
family, key, want = sys.argv[1:4]
found = None
for metric in text_string_to_metric_families(sys.stdin.read()):
    for sample in metric.samples:
        if metric.name == family and metric.type == "counter" and sample.name == family + "_total" and sample.labels.get(key) == want:
            found = sample.value
print(found)
"#;
    let mut child = Command::new(python)
        .args(["-c", script, family, label.0, label.1])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut stdin = child.stdin.take().expect("a piped stdin");
    let exposition = text.to_owned();
    // Written from a thread, so a full pipe cannot stall both ends.
    let writer = std::thread::spawn(move || stdin.write_all(exposition.as_bytes()));
    let output = child.wait_with_output().expect("python3 ran");
    writer.join().expect("the writer thread").expect("write the exposition");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the OpenMetrics parser refused /metrics: {}\n{text}", String::from_utf8_lossy(&output.stderr));
    stdout.trim().parse().unwrap_or_else(|_| panic!("no counter {family} {label:?} in\n{text}\n(parser said {stdout:?})"))
}

/// Scrapes `http://addr/metrics`.
fn scrape(addr: &str) -> String {
    let reply = http_get(addr, "/metrics", &[]).unwrap_or_else(|e| panic!("GET {addr}/metrics: {e}"));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.headers.contains("application/openmetrics-text"), "{}", reply.headers);
    reply.body
}

#[test]
fn metrics_count_a_jobs_chunks_on_the_dispatcher_and_on_its_node() {
    let python = openmetrics_python("metrics_count_a_jobs_chunks_on_the_dispatcher_and_on_its_node");
    let http = format!("127.0.0.1:{}", free_tcp_port());
    let node_http = format!("127.0.0.1:{}", free_tcp_port());
    let cluster = Cluster::builder()
        .nodes(1)
        .slots(2)
        .dispatcher_args(&["--http-listen", &http])
        .node_args(&["--metrics-listen", &node_http])
        .start();
    let input = cluster.dir().join("input.bin");
    std::fs::write(&input, pseudo_random_bytes(CHUNKS as usize * 1024, 5)).expect("write the input");
    let output = cluster.output_dir("metrics").join("sums.bin");
    let run = cluster.run_job(&Job::new(&example("checksum.wat"), "bytes:1KiB", &output).input(&input));
    run.check_success();

    // Counters move as results are stored; the gauges within a second.
    let mut text = String::new();
    assert_eventually!(
        {
            text = scrape(&http);
            let samples = parse(&text);
            value(&samples, "dispy_jobs", Some(("state", "succeeded"))) == Some(1.0)
        },
        "the job never showed as succeeded:\n{text}"
    );
    let samples = parse(&text);
    let completed = value(&samples, "dispy_chunks_completed_total", Some(("tenant", "tester")));
    assert_eq!(completed, Some(CHUNKS as f64), "{text}");
    assert_eq!(value(&samples, "dispy_received_bytes_total", Some(("stream", "input"))), Some((CHUNKS * 1024) as f64), "{text}");
    assert_eq!(value(&samples, "dispy_chunk_run_seconds_count", None), Some(CHUNKS as f64), "{text}");
    assert_eq!(value(&samples, "dispy_chunk_queue_wait_seconds_count", None), Some(CHUNKS as f64), "{text}");
    assert_eq!(value(&samples, "dispy_nodes", Some(("state", "ready"))), Some(1.0), "{text}");
    assert_eq!(value(&samples, "dispy_slots", None), Some(2.0), "{text}");
    assert!(value(&samples, "dispy_journal_commit_seconds_count", None).is_some_and(|n| n >= 1.0), "{text}");
    assert!(value(&samples, "dispy_connections", Some(("role", "node"))) == Some(1.0), "{text}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as f64;
    let own = value(&samples, "dispy_certificate_expiry_seconds", Some(("certificate", "dispatcher")));
    assert!(own.is_some_and(|end| end > now), "{text}");
    let node_cert = value(&samples, "dispy_certificate_expiry_seconds", Some(("certificate", "n1")));
    assert!(node_cert.is_some_and(|end| end > now), "{text}");
    assert!(!text.contains("chunk=") && !text.contains("attempt="), "no chunk or attempt labels:\n{text}");
    if let Some(python) = &python {
        let parsed = openmetrics_counter(python, &text, "dispy_chunks_completed", ("tenant", "tester"));
        assert_eq!(parsed, CHUNKS as f64);
    }

    // The node ran every chunk, and had to be shipped the payload once.
    let node_text = scrape(&node_http);
    let node = parse(&node_text);
    assert_eq!(value(&node, "dispy_node_chunks_total", Some(("outcome", "succeeded"))), Some(CHUNKS as f64), "{node_text}");
    assert_eq!(value(&node, "dispy_node_chunks_total", Some(("outcome", "failed"))), Some(0.0), "{node_text}");
    assert_eq!(value(&node, "dispy_node_cache_misses_total", None), Some(1.0), "{node_text}");
    assert_eq!(value(&node, "dispy_node_slots", None), Some(2.0), "{node_text}");
    assert!(value(&node, "dispy_node_cache_bytes", None).is_some_and(|b| b > 0.0), "{node_text}");
    assert!(value(&node, "dispy_node_slot_busy_seconds_total", None).is_some_and(|s| s > 0.0), "{node_text}");
    let node_own = value(&node, "dispy_certificate_expiry_seconds", Some(("certificate", "n1")));
    assert_eq!(node_own, node_cert, "the node and the dispatcher agree on its certificate's end");
    if let Some(python) = &python {
        let parsed = openmetrics_counter(python, &node_text, "dispy_node_chunks", ("outcome", "succeeded"));
        assert_eq!(parsed, CHUNKS as f64);
    }
}

/// An empty config file in `dir`, so nothing in `/etc/dispy` changes what a test sees.
fn empty_config(dir: &Path) -> PathBuf {
    let config = dir.join("empty.toml");
    std::fs::write(&config, "").expect("write config");
    config
}

/// `dispy-dispatcher [SUBCOMMAND] ARGS` with `pki`'s dispatcher identity, run until it exits.
fn start_dispatcher(pki: &Pki, dir: &Path, subcommand: Option<&str>, args: &[&str]) -> Run {
    let mut run = command("dispy-dispatcher");
    run.args(subcommand)
        .arg("--config")
        .arg(empty_config(dir))
        .arg("--tls-dir")
        .arg(pki.dispatcher_dir())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_udp_port()))
        .args(args);
    Run::capture(run, COMMAND_TIMEOUT)
}

#[test]
fn a_non_loopback_http_address_needs_a_token_and_a_token_is_then_required() {
    let temp = tempfile::Builder::new().prefix("dispy-http-").tempdir().expect("temp dir");
    let pki = Pki::init(&temp.path().join("ca"));
    // Port 0 on every address: refused before anything is bound, so nothing listens.
    let refused = start_dispatcher(&pki, temp.path(), None, &["--http-listen", "0.0.0.0:0"]);
    refused.check_code(64);
    refused.check_stderr_mentions(&["http_listen", "not a loopback address", "http_token_file"]);
    let check = start_dispatcher(&pki, temp.path(), Some("check-config"), &["--http-listen", "0.0.0.0:0"]);
    check.check_code(64);
    let problem = check.stdout.lines().find(|l| l.starts_with("problem: ")).unwrap_or_default();
    assert!(problem.contains("http_listen") && problem.contains("http_token_file"), "{check:?}");

    let node_dir = pki.issue_node("n1");
    let mut node = command("dispy-node");
    node.arg("--config").arg(empty_config(temp.path())).arg("--tls-dir").arg(&node_dir).arg("--cache-dir").arg(temp.path().join("cache")).args(["--metrics-listen", "[::]:0"]);
    let node = Run::capture(node, COMMAND_TIMEOUT);
    node.check_code(64);
    node.check_stderr_mentions(&["metrics_listen", "not a loopback address"]);

    // With a token, every request must carry it, on loopback too.
    let token = temp.path().join("token");
    std::fs::write(&token, "s3cret-token\n").expect("write the token");
    let http = format!("127.0.0.1:{}", free_tcp_port());
    let token_path = token.display().to_string();
    let cluster = Cluster::builder().nodes(1).dispatcher_args(&["--http-listen", &http, "--http-token-file", &token_path]).start();
    for path in ["/metrics", "/api/status", "/api/status?token=wrong"] {
        let reply = http_get(&http, path, &[]).expect("GET");
        assert_eq!(reply.status, 401, "{path}: {reply:?}");
        let wrong = http_get(&http, path, &["Authorization: Bearer s3cret-tokeN"]).expect("GET");
        assert_eq!(wrong.status, 401, "{path}: {wrong:?}");
        let right = http_get(&http, path, &["Authorization: Bearer s3cret-token"]).expect("GET");
        assert_eq!(right.status, 200, "{path}: {right:?}");
    }
    let queried = http_get(&http, "/api/status?token=s3cret-token", &[]).expect("GET");
    assert_eq!(queried.status, 200, "{queried:?}");
    assert!(queried.body.contains("\"nodes\""), "{queried:?}");
    // The page's files hold no data: served to anyone, and the page asks for the token.
    for path in ["/", "/status.js", "/status.css"] {
        let reply = http_get(&http, path, &[]).expect("GET");
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
    }

    // A browser opening the page with the token in its address sees the nodes; without, it is
    // told a token is needed.
    let test = "a_non_loopback_http_address_needs_a_token_and_a_token_is_then_required";
    let Some(chromium) = chromium(test) else { return };
    let profile = cluster.dir().join("chromium-profile");
    let mut dom = String::new();
    assert_eventually!(
        {
            dom = headless(&chromium, &profile, &["--dump-dom"], &format!("http://{http}/?token=s3cret-token")).stdout;
            dom.contains("data-node=\"n1\"")
        },
        "the page opened with the token never showed the node:\n{dom}"
    );
    let refused = headless(&chromium, &profile, &["--dump-dom"], &format!("http://{http}/")).stdout;
    assert!(refused.contains("a token is required") && !refused.contains("data-node="), "{refused}");
}

/// Debian's `chromium`, or `None` after a `SKIPPED` line (a failure when strict).
fn chromium(test: &str) -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        skip(test, "needs Debian's chromium for the headless browser (apt)");
    }
    found
}

/// Runs headless Chromium on `url` with `args`, returning what it printed.
fn headless(chromium: &Path, profile: &Path, args: &[&str], url: &str) -> Run {
    let mut run = Command::new(chromium);
    run.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url);
    Run::capture(run, COMMAND_TIMEOUT)
}

#[test]
fn the_status_page_shows_the_nodes_and_the_jobs_in_headless_chromium() {
    let test = "the_status_page_shows_the_nodes_and_the_jobs_in_headless_chromium";
    let Some(chromium) = chromium(test) else { return };
    let http = format!("127.0.0.1:{}", free_tcp_port());
    let cluster = Cluster::builder().nodes(2).slots(2).dispatcher_args(&["--http-listen", &http]).start();
    // A job that succeeds, one whose chunk traps on every attempt, and one still running (for
    // minutes: it is killed with the cluster).
    let out = cluster.output_dir("page");
    let sums = out.join("sums.bin");
    cluster.run_job(&Job::new(&example("checksum.wat"), "bytes:512", &sums).input(&example("data/lorem.txt"))).check_success();
    let trapped = out.join("trap.bin");
    let failed = cluster.run_job(&Job::new(&fixture("trap.wat"), "bytes:1KiB", &trapped).input(&example("data/lorem.txt")));
    failed.check_code(1);
    let slow = out.join("slow.bin");
    let running = cluster.submit(&[
        &"submit",
        &"--payload",
        &fixture("count.wat"),
        &"--split",
        &"range:0..4000:1",
        &"--args",
        &"40000000",
        &"--output",
        &slow,
    ]);
    running.check_success();

    let url = format!("http://{http}/");
    let profile = cluster.dir().join("chromium-profile");
    let mut dom = String::new();
    assert_eventually!(
        {
            let run = headless(&chromium, &profile, &["--dump-dom"], &url);
            dom = run.stdout;
            dom.contains("data-node=\"n2\"") && dom.contains("data-job=\"3\"") && dom.contains("unreachable")
        },
        "the page never showed both nodes, the three jobs and the failure:\n{dom}"
    );
    for (what, needle) in [
        ("node n1", "data-node=\"n1\""),
        ("node n2", "data-node=\"n2\""),
        ("the succeeded job", "data-job=\"1\""),
        ("the failed job", "data-job=\"2\""),
        ("the running job", "data-job=\"3\""),
        ("the running job's name", ">count<"),
        ("a running state", ">running<"),
        ("the jobs' owner", ">tester<"),
        ("a succeeded state", ">succeeded<"),
        ("a failed state", ">failed<"),
        ("the throughput chart", "<rect"),
    ] {
        assert!(dom.contains(needle), "the rendered page lacks {what} ({needle}):\n{dom}");
    }

    // A screenshot, as docs/status-page.png was made; DISPY_STATUS_SCREENSHOT keeps a copy.
    let png = cluster.dir().join("status.png");
    let shot = headless(&chromium, &profile, &[&format!("--screenshot={}", png.display()), "--window-size=1280,900"], &url);
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}):\n{shot}"));
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "not a screenshot of a page:\n{shot}");
    if let Some(keep) = std::env::var_os("DISPY_STATUS_SCREENSHOT") {
        std::fs::copy(&png, keep).expect("keep the screenshot");
    }
}
