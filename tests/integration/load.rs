//! Issue 18, parts 3 and 4, with real processes: 100 `dispy-submit run` at once (one shared new
//! payload and many distinct ones, two tenants) all succeed with every output byte right; the
//! dispatcher's memory stays bounded by `payload_memory_cap` over 200 distinct payloads (its RSS
//! before and after is printed); a node with a small `cache_max_bytes` evicts and still runs
//! every job, including one whose payload it evicted.
//!
//! Distinct payloads are `checksum.wat` with a custom section of padding, so each hashes
//! differently and compiles to the same code; the known answer is the FNV-1a 64-bit hash of each
//! chunk, computed here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tests::{assert_eventually, check_same_bytes, example, proc_status_bytes, pseudo_random_bytes, Cluster, Run};

/// The chunk size every job here uses.
const CHUNK: usize = 4096;

/// `checksum.wat` with a custom section of `pad` bytes of text that depends on `seed`, so each
/// seed is a distinct payload of about `pad` bytes more.
fn padded_checksum(dir: &Path, seed: u64, pad: usize) -> PathBuf {
    let wat = std::fs::read_to_string(example("checksum.wat")).expect("read checksum.wat");
    let body = wat.trim_end().strip_suffix(')').expect("checksum.wat ends its module with ')'");
    // Letters only, so nothing needs escaping in the WAT string.
    let padding: String = pseudo_random_bytes(pad, seed).iter().map(|b| char::from(b'a' + b % 26)).collect();
    let path = dir.join(format!("checksum-{seed}.wat"));
    std::fs::write(&path, format!("{body}  (@custom \"dispy-test-padding\" \"{seed}:{padding}\")\n)\n"))
        .expect("write a padded payload");
    path
}

/// What `checksum.wat` emits for `input` cut into `CHUNK`-byte chunks.
fn checksums(input: &[u8]) -> Vec<u8> {
    input
        .chunks(CHUNK)
        .flat_map(|chunk| {
            let hash = chunk.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
            hash.to_le_bytes()
        })
        .collect()
}

/// One `dispy-submit run` to do and check.
struct Task {
    who: PathBuf,
    payload: PathBuf,
    input: PathBuf,
    output: PathBuf,
    want: Vec<u8>,
}

impl Task {
    fn new(cluster: &Cluster, who: &Path, payload: PathBuf, seed: u64, len: usize) -> Task {
        let bytes = pseudo_random_bytes(len, seed);
        let input = cluster.dir().join(format!("input-{seed}.bin"));
        std::fs::write(&input, &bytes).expect("write an input");
        let output = cluster.dir().join(format!("output-{seed}.bin"));
        Task { who: who.to_owned(), payload, input, output, want: checksums(&bytes) }
    }

    fn run(&self, cluster: &Cluster) -> Run {
        let args: Vec<OsString> = vec![
            "run".into(),
            "--payload".into(),
            self.payload.clone().into(),
            "--input".into(),
            self.input.clone().into(),
            "--split".into(),
            format!("bytes:{CHUNK}").into(),
            "--output".into(),
            self.output.clone().into(),
        ];
        cluster.submit_with(&self.who, args, tests::COMMAND_TIMEOUT)
    }

    #[track_caller]
    fn check(&self, run: &Run) {
        run.check_success();
        let got = std::fs::read(&self.output).unwrap_or_else(|e| panic!("no output file: {e}\n{run}"));
        check_same_bytes(&got, &self.want, run);
    }
}

/// Runs every task at once, each in its own `dispy-submit` process, and checks each output.
fn run_all_at_once(cluster: &Cluster, tasks: &[Task]) {
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = tasks.iter().map(|task| scope.spawn(|| task.run(cluster))).collect();
        handles.into_iter().map(|h| h.join().expect("a submitter thread panicked")).collect()
    });
    for (task, run) in tasks.iter().zip(&runs) {
        task.check(run);
    }
}

/// The race of issue 18: many submissions of one new payload at once all stored it under one
/// temporary name, and some failed with "No such file or directory".
#[test]
fn a_hundred_submissions_at_once_from_two_tenants_all_succeed() {
    let cluster = Cluster::builder().nodes(2).slots(2).start();
    let alice = cluster.pki().issue_client("alice");
    let bob = cluster.pki().issue_client("bob");
    let payloads = cluster.dir().join("payloads");
    std::fs::create_dir_all(&payloads).expect("create the payload directory");
    // New to the dispatcher: every submitter that sees it missing uploads it.
    let shared = padded_checksum(&payloads, 0, 64 << 10);
    let tasks: Vec<Task> = (1..=100)
        .map(|i| {
            let who = if i % 2 == 0 { &alice } else { &bob };
            let payload = if i % 2 == 0 || i % 3 == 0 { shared.clone() } else { padded_checksum(&payloads, i, 1024) };
            Task::new(&cluster, who, payload, i, 3 * CHUNK + (i as usize * 37) % CHUNK)
        })
        .collect();
    let distinct = tasks.iter().filter(|t| t.payload != shared).count();
    eprintln!("100 submissions at once: {} with one shared payload, {distinct} with payloads of their own", 100 - distinct);
    run_all_at_once(&cluster, &tasks);
}

/// Issue 18's leak: every payload ever uploaded stayed in the dispatcher's memory.
#[test]
fn the_dispatchers_memory_stays_bounded_over_200_distinct_payloads() {
    const CAP: u64 = 8 << 20;
    const PAD: usize = 1 << 20;
    let mut cluster = Cluster::builder()
        .nodes(1)
        .slots(2)
        .dispatcher_args(&["--payload-memory-cap", "8MiB"])
        .node_args(&["--cache-max-bytes", "16MiB"])
        .start();
    let payloads = cluster.dir().join("payloads");
    std::fs::create_dir_all(&payloads).expect("create the payload directory");
    let client = cluster.client_dir().to_owned();
    // A first job warms the dispatcher up (runtime, TLS, journal) before the baseline.
    let warm = Task::new(&cluster, &client, padded_checksum(&payloads, 1000, PAD), 1000, CHUNK);
    warm.check(&warm.run(&cluster));
    let pid = cluster.dispatcher().pid();
    let rss = || proc_status_bytes(pid, "VmRSS").unwrap_or_else(|e| panic!("cannot read the dispatcher's VmRSS: {e:#}"));
    let before = rss();
    let mut peak = before;
    for batch in 0..50 {
        let tasks: Vec<Task> = (0..4)
            .map(|i| {
                let seed = batch * 4 + i;
                Task::new(&cluster, &client, padded_checksum(&payloads, seed, PAD), seed, CHUNK)
            })
            .collect();
        run_all_at_once(&cluster, &tasks);
        for task in &tasks {
            let _ = std::fs::remove_file(&task.payload);
        }
        peak = peak.max(rss());
    }
    // The core drops payloads no running job uses at its next progress tick.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = rss();
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    eprintln!(
        "dispatcher RSS over 200 distinct payloads of {:.1} MiB (payload_memory_cap {:.0} MiB): before {:.1} MiB, \
         after {:.1} MiB (growth {:+.1} MiB), highest sampled {:.1} MiB",
        mib(PAD as u64),
        mib(CAP),
        mib(before),
        mib(after),
        mib(after) - mib(before),
        mib(peak),
    );
    assert!(
        after < before + CAP + (32 << 20),
        "the dispatcher grew by {:.1} MiB over 200 payloads, more than the cap plus 32 MiB",
        mib(after) - mib(before)
    );
    cluster.check_all_alive();
}

/// A node with a small cache evicts what no job uses, stays within its bound plus what jobs hold,
/// and still runs a job whose payload it evicted: the dispatcher ships it again.
#[test]
fn a_node_evicts_unused_payloads_beyond_cache_max_bytes() {
    const PAD: usize = 256 << 10;
    const MAX: u64 = 1 << 20;
    let cluster = Cluster::builder().nodes(1).slots(2).node_args(&["--cache-max-bytes", "1MiB"]).start();
    let payloads = cluster.dir().join("payloads");
    std::fs::create_dir_all(&payloads).expect("create the payload directory");
    let client = cluster.client_dir().to_owned();
    let cache = cluster.cache_dir("n1");
    let cached = || -> (usize, u64) {
        let files: Vec<_> = std::fs::read_dir(&cache).expect("list the cache").flatten().collect();
        (files.len(), files.iter().map(|f| f.metadata().map_or(0, |m| m.len())).sum())
    };
    let first = padded_checksum(&payloads, 0, PAD);
    let payload_len = std::fs::metadata(&first).expect("payload size").len();
    let mut largest = 0;
    for seed in 0..12 {
        let payload = if seed == 0 { first.clone() } else { padded_checksum(&payloads, seed, PAD) };
        let task = Task::new(&cluster, &client, payload, seed, 2 * CHUNK);
        task.check(&task.run(&cluster));
        largest = largest.max(cached().1);
    }
    let (files, bytes) = cached();
    eprintln!(
        "node cache after 12 distinct payloads of {payload_len} bytes with cache_max_bytes {MAX}: {files} files, \
         {bytes} bytes (largest seen {largest})"
    );
    // Between jobs no job holds a payload; only the one just stored may stay above the bound.
    assert!(largest <= MAX + payload_len, "the cache held {largest} bytes, over {MAX} plus one payload");
    // The first payload was evicted long ago; the dispatcher must ship it again.
    let first_hash = wire::proto::PayloadHash::of(&std::fs::read(&first).expect("read the first payload"));
    assert!(!cache.join(first_hash.to_hex()).exists(), "the first payload was evicted");
    let again = Task::new(&cluster, &client, first, 100, 3 * CHUNK);
    again.check(&again.run(&cluster));
    assert_eventually!(cached().1 <= MAX + payload_len, "the cache stays bounded: {:?}", cached());
}
