//! Native payload confinement on real nodes: a hostile `.so` (tests/fixtures/hostile.c) tries
//! to read the node's key, the dispatcher's key and the payload cache, to write into the cache,
//! to open a TCP connection, to send a UDP datagram and to connect to a Unix socket by its path,
//! and is denied each, while reading under /usr and writing its
//! scratch directory work; nodes with `allow_native = false`, or that cannot confine (running as
//! root with a `payload_user` that does not exist, the one honest way to lose confinement on a
//! kernel with Landlock), refuse native jobs and the submitter's error names them and says why;
//! `allow_unconfined_native = true` runs them anyway, and the node's health line and
//! `dispy-submit nodes` say so. A cached payload damaged on disk between two jobs is noticed,
//! fetched again, and the second job's output is right. Without `cc` (or root, where needed) a
//! test skips.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tests::{assert_eventually, example, native_fixture, skip, Cluster, Job};

/// Runs the hostile payload with `probes` as its args on one chunk; returns the run and the
/// output (empty when the job failed).
fn probe(cluster: &Cluster, name: &str, library: &Path, probes: &str) -> (tests::Run, String) {
    let input = cluster.dir().join(format!("{name}.in"));
    std::fs::write(&input, b"x").expect("write the input");
    let output = cluster.output_dir(name).join("report.txt");
    let run = cluster.run_job(&Job::new(library, "bytes:4KiB", &output).input(&input).payload_args(probes));
    let report = std::fs::read_to_string(&output).unwrap_or_default();
    (run, report)
}

/// The line of `report` for `label`.
#[track_caller]
fn outcome<'a>(report: &'a str, label: &str) -> &'a str {
    let prefix = format!("{label}: ");
    report
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no line for {label} in the payload's report:\n{report}"))
}

#[track_caller]
fn check_denied(report: &str, label: &str) {
    let outcome = outcome(report, label);
    assert!(outcome.starts_with("denied"), "{label} should be denied, was {outcome:?}\n{report}");
}

#[track_caller]
fn check_allowed(report: &str, label: &str) {
    let outcome = outcome(report, label);
    assert_eq!(outcome, "allowed", "{label} should be allowed\n{report}");
}

/// Opens `path` and each of its ancestors to everyone (files readable, directories writable),
/// so that file permissions would let any user at it and only the confinement can deny.
fn open_to_everyone(path: &Path) {
    let mut current = Some(path);
    while let Some(p) = current {
        if p == Path::new("/") || p == std::env::temp_dir() {
            break;
        }
        let mode = if p.is_dir() { 0o777 } else { 0o666 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
        current = p.parent();
    }
}

#[test]
fn hostile_native_payload_is_confined() {
    const TEST: &str = "hostile_native_payload_is_confined";
    let cluster = Cluster::start(1);
    let Some(library) = native_fixture(TEST, "hostile", cluster.dir()) else {
        return;
    };
    let nodes = cluster.nodes_json().unwrap_or_else(|run| panic!("nodes failed\n{run}"));
    assert_eq!(nodes[0]["confinement"], "landlock", "the node confines native payloads: {nodes:?}");

    // Another job's payload in the cache, to go after (the payload's own file it may read).
    let input = cluster.dir().join("warm.in");
    std::fs::write(&input, b"some bytes").expect("write the input");
    let output = cluster.output_dir("warm").join("sums.bin");
    cluster.run_job(&Job::new(&example("checksum.wat"), "bytes:4KiB", &output).input(&input)).check_success();
    let cache = cluster.cache_dir("n1");
    let cached = std::fs::read_dir(&cache)
        .expect("list the cache")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_none())
        .expect("the WebAssembly job's payload in the cache");
    let node_key = cluster.pki().dir().join("nodes/n1/key.pem");
    let dispatcher_key = cluster.pki().dispatcher_dir().join("key.pem");
    // Nothing but the confinement stands in the way (the node may switch to `nobody` as root).
    for path in [&node_key, &dispatcher_key, &cached, &cache] {
        open_to_everyone(path);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let port = listener.local_addr().expect("its address").port();
    let datagrams = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    let udp_port = datagrams.local_addr().expect("its address").port();
    // A Unix socket anyone may connect to, as a local service's would be.
    let unix_path = cluster.dir().join("service.sock");
    let _service = std::os::unix::net::UnixListener::bind(&unix_path).expect("bind a Unix socket");
    open_to_everyone(&unix_path);
    let planted = cache.join("planted");
    let probes = [
        format!("read node-key {}", node_key.display()),
        format!("read dispatcher-key {}", dispatcher_key.display()),
        format!("read cache {}", cached.display()),
        format!("write cache-write {}", planted.display()),
        format!("connect tcp {port}"),
        format!("udp udp {udp_port}"),
        format!("unix unix {}", unix_path.display()),
        "read usr /usr/include/stdio.h".to_owned(),
        "read os-release /etc/os-release".to_owned(),
        "read passwd /etc/passwd".to_owned(),
        "write scratch probe.txt".to_owned(),
        "read scratch-back probe.txt".to_owned(),
        "cwd where -".to_owned(),
    ];
    let (run, report) = probe(&cluster, "hostile", &library, &probes.join("\n"));
    run.check_success();
    check_denied(&report, "node-key");
    check_denied(&report, "dispatcher-key");
    check_denied(&report, "cache");
    check_denied(&report, "cache-write");
    check_denied(&report, "tcp");
    check_denied(&report, "udp");
    check_denied(&report, "unix");
    datagrams.set_nonblocking(true).expect("a non-blocking UDP socket");
    let mut datagram = [0; 16];
    assert!(datagrams.recv(&mut datagram).is_err(), "a datagram escaped the worker\n{report}");
    check_denied(&report, "passwd");
    check_allowed(&report, "usr");
    check_allowed(&report, "scratch");
    check_allowed(&report, "scratch-back");
    // Each chunk runs in its own directory inside its worker's scratch directory.
    let cwd = outcome(&report, "where");
    assert!(cwd.contains("scratch-n1/worker-") && cwd.ends_with("/attempt-1"), "not a per-attempt directory: {cwd}\n{report}");
    if Path::new("/etc/os-release").exists() {
        check_allowed(&report, "os-release");
    }
    assert!(!planted.exists(), "the payload planted a file in the cache\n{report}");
    // Each worker's scratch directory is gone once the job ends on the node.
    let scratch = cluster.dir().join("scratch-n1");
    assert_eventually!(
        std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0) == 0,
        "scratch directories left in {}",
        scratch.display()
    );
}

#[test]
fn nodes_with_native_disabled_refuse_and_are_named() {
    const TEST: &str = "nodes_with_native_disabled_refuse_and_are_named";
    let cluster = Cluster::builder().nodes(2).node_args(&["--allow-native", "false"]).start();
    let Some(library) = native_fixture(TEST, "hostile", cluster.dir()) else {
        return;
    };
    let nodes = cluster.nodes_json().unwrap_or_else(|run| panic!("nodes failed\n{run}"));
    assert!(nodes.iter().all(|n| n["confinement"] == "native disabled"), "{nodes:?}");
    let (run, _) = probe(&cluster, "refused", &library, "read usr /usr/include/stdio.h");
    run.check_code(1);
    run.check_stderr_mentions(&["node n1", "node n2", "allow_native = false"]);
    // WebAssembly still runs there.
    let input = cluster.dir().join("wasm.in");
    std::fs::write(&input, b"some bytes").expect("write the input");
    let output = cluster.output_dir("wasm").join("sums.bin");
    cluster.run_job(&Job::new(&example("checksum.wat"), "bytes:4KiB", &output).input(&input)).check_success();
}

#[test]
fn node_that_cannot_confine_refuses_unless_allowed() {
    const TEST: &str = "node_that_cannot_confine_refuses_unless_allowed";
    match tests::netns::effective_uid() {
        Some(0) => {}
        uid => return skip(TEST, &format!("losing confinement needs a root node, this runs as uid {uid:?}")),
    }
    let no_user = "dispy-test-no-such-user";
    let cluster = Cluster::builder()
        .nodes(1)
        .node_args(&["--payload-user", no_user])
        .node_args(&["--health-log-interval", "1s"])
        .start();
    let Some(library) = native_fixture(TEST, "hostile", cluster.dir()) else {
        return;
    };
    let nodes = cluster.nodes_json().unwrap_or_else(|run| panic!("nodes failed\n{run}"));
    assert_eq!(nodes[0]["confinement"], "none: native refused", "{nodes:?}");
    let table = cluster.submit(&[&"nodes"]);
    assert!(table.stdout.contains("none: native refused"), "{table}");
    let (run, _) = probe(&cluster, "refused", &library, "read usr /usr/include/stdio.h");
    run.check_code(1);
    run.check_stderr_mentions(&["node n1", "cannot confine", "does not exist", "allow_unconfined_native = false"]);
    let mut cluster = cluster;
    assert_eventually!(
        cluster.node(0).log().lines().any(|l| l.contains("node health") && l.contains("none: native refused")),
        "no health line saying native payloads are refused"
    );

    let unconfined = Cluster::builder()
        .nodes(1)
        .node_args(&["--payload-user", no_user])
        .node_args(&["--allow-unconfined-native", "true"])
        .node_args(&["--health-log-interval", "1s"])
        .start();
    let nodes = unconfined.nodes_json().unwrap_or_else(|run| panic!("nodes failed\n{run}"));
    assert_eq!(nodes[0]["confinement"], "unconfined (allowed)", "{nodes:?}");
    let (run, report) = probe(&unconfined, "unconfined", &library, "read usr /usr/include/stdio.h");
    run.check_success();
    check_allowed(&report, "usr");
    let mut unconfined = unconfined;
    assert_eventually!(
        unconfined.node(0).log().lines().any(|l| l.contains("node health") && l.contains("unconfined (allowed)")),
        "no health line saying native payloads run unconfined"
    );
}

#[test]
fn corrupted_cached_payload_is_fetched_again() {
    const TEST: &str = "corrupted_cached_payload_is_fetched_again";
    let mut cluster = Cluster::start(1);
    let Some(library) = native_fixture(TEST, "hostile", cluster.dir()) else {
        return;
    };
    let (run, first) = probe(&cluster, "first", &library, "read usr /usr/include/stdio.h");
    run.check_success();
    assert_eq!(first, "usr: allowed\n");
    let cache = cluster.cache_dir("n1");
    let cached: Vec<PathBuf> = std::fs::read_dir(&cache)
        .expect("list the cache")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_none())
        .collect();
    assert_eq!(cached.len(), 1, "one cached payload: {cached:?}");
    // Flip bytes in the middle of the library, as a failing disk would.
    let mut bytes = std::fs::read(&cached[0]).expect("read the cached payload");
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xff;
    }
    std::fs::write(&cached[0], &bytes).expect("damage the cached payload");

    let (run, second) = probe(&cluster, "second", &library, "read usr /usr/include/stdio.h");
    run.check_success();
    assert_eq!(second, first, "the second job's output");
    let log = cluster.node(0).log();
    assert!(log.contains("cached payload does not match its hash"), "the node never said so:\n{log}");
    assert!(cluster.dispatcher_log().contains("shipping it again"), "{}", cluster.dispatcher_log());
    let repaired = std::fs::read(&cached[0]).expect("the payload is cached again");
    assert_eq!(repaired, std::fs::read(&library).expect("read the library"), "the cache holds the real payload again");
}
