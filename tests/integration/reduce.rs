//! Issue 21, reduce, with real processes: `--results reduce` writes the one result of combining
//! every chunk's result with the payload's `dispy_combine` on the nodes, equal to the serial
//! reference (each result folded in left to right) for every split rule and `auto` sizing, with
//! a sum (examples/sum.wat) and an order-sensitive combine, concatenation
//! (tests/fixtures/concat_combine.wat, whose output is its input only when every chunk is
//! combined once and in order), with shared input too, and the C histogram as a native library; a payload without `dispy_combine` is refused at submit and
//! `stream` refuses reduce; a combine that traps fails the job naming its chunks; a node killed
//! while chunks are being combined costs nothing but time; and a dispatcher SIGKILLed in the
//! middle of a reduce resumes it with no chunk and no combine run twice (counted, as in
//! `durability.rs`, from the nodes' cumulative `chunks_done`, which counts combines too); a
//! combine that straggles gets a speculative copy and the output is still every chunk's result
//! once; and nodes pre-combine sibling chunks they ran, with the same output.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::durable::{field_u64, last_event_with, last_health, log_events, DurableCluster};
use tests::{
    assert_eventually, check_same_bytes, example, fixture, poll_until, pseudo_random_bytes, serial_reduce, skip,
    Cluster, Job, Run,
};

/// Spin rounds per run and per combine of `concat_combine.wat` in the fault tests: a tenth of a
/// second or so, so the combines after the last chunk take long enough to act among them. Not a
/// timing assertion: every wait polls, and a job that ended too early fails the test saying so.
const SPIN: &str = "60000000";
/// Chunks of the fault tests' jobs (`range:0..CHUNKS:1`): 16 runs, then 15 combines.
const CHUNKS: u64 = 16;
/// A guard for commands that wait for a whole slow job (a killed node is noticed after its
/// `node_timeout`).
const LONG: Duration = Duration::from_secs(300);

/// Runs `payload` with `--results reduce` over `inputs` cut by `split` and checks the output
/// against `want`.
#[track_caller]
fn check_reduce(cluster: &Cluster, name: &str, payload: &Path, split: &str, inputs: &[PathBuf], want: &[u8]) -> Run {
    let output = cluster.output_dir(name).join("reduced.bin");
    let mut job = Job::new(payload, split, &output).flag("--results", "reduce");
    for input in inputs {
        job = job.input(input);
    }
    let run = cluster.run_job(&job);
    run.check_success();
    let got = std::fs::read(&output).unwrap_or_else(|e| panic!("no output file: {e}\n{run}"));
    check_same_bytes(&got, want, &run);
    run
}

#[test]
fn sum_and_concatenation_reduce_to_the_serial_reference_for_every_split_rule() {
    let cluster = Cluster::start(2);
    let bytes = cluster.dir().join("input.bin");
    std::fs::write(&bytes, pseudo_random_bytes(300_001, 1)).expect("write the input");
    let files = cluster.dir().join("files");
    std::fs::create_dir_all(&files).expect("create the input directory");
    for (seed, (name, size)) in (1u64..).zip([("a", 0), ("b", 1), ("c", 4096), ("d", 10_007), ("e", 70_000)]) {
        std::fs::write(files.join(name), pseudo_random_bytes(size, seed)).expect("write an input file");
    }
    let lorem = std::fs::read(example("data/lorem.txt")).expect("read lorem");
    let text = cluster.dir().join("big.txt");
    std::fs::write(&text, lorem.iter().copied().cycle().take(3_000_000).collect::<Vec<u8>>()).expect("write the text");
    let rules: [(&str, Vec<PathBuf>); 5] = [
        ("bytes:4KiB", vec![bytes.clone()]),
        ("lines:8", vec![example("data/lorem.txt")]),
        ("files", vec![files]),
        ("range:0..100:7", Vec::new()),
        ("lines:auto", vec![text.clone()]),
    ];
    for payload in [example("sum.wat"), fixture("concat_combine.wat")] {
        for (rule, inputs) in &rules {
            // `auto` cuts where its measurements say; a sum and a concatenation of lines do not
            // depend on where the cuts fall, so the reference cuts by a fixed rule.
            let reference_rule = if *rule == "lines:auto" { "lines:1000" } else { rule };
            let want = serial_reduce(&payload, b"", reference_rule, inputs);
            let name = format!("{}-{}", payload.file_stem().and_then(OsStr::to_str).unwrap_or("p"), rule.replace([':', '.'], "-"));
            let run = check_reduce(&cluster, &name, &payload, rule, inputs, &want);
            if payload.ends_with("sum.wat") {
                assert_eq!(want.len(), 8, "a sum is 8 bytes\n{run}");
            }
        }
    }
    // Shared input: chunks travel as references the nodes read, combines as the results.
    let shared = cluster.shared_dir().join("shared.bin");
    std::fs::write(&shared, pseudo_random_bytes(100_000, 4)).expect("write the shared input");
    let payload = fixture("concat_combine.wat");
    let output = cluster.output_dir("shared").join("reduced.bin");
    let job = Job::new(&payload, "bytes:3KiB", &output).input(&shared).switch("--shared-input").flag("--results", "reduce");
    let run = cluster.run_job(&job);
    run.check_success();
    check_same_bytes(&std::fs::read(&output).expect("output"), &std::fs::read(&shared).expect("input"), &run);

    // The concatenation of a text's lines is the text; its sum is its bytes' sum.
    let all = std::fs::read(&text).expect("read the text");
    assert_eq!(serial_reduce(&fixture("concat_combine.wat"), b"", "lines:1000", std::slice::from_ref(&text)), all);
    let sum: u64 = all.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(serial_reduce(&example("sum.wat"), b"", "bytes:1MiB", &[text]), sum.to_le_bytes());
}

#[test]
fn the_c_histogram_reduces_as_a_native_library() {
    const TEST: &str = "the_c_histogram_reduces_as_a_native_library";
    let cluster = Cluster::start(2);
    let library = cluster.dir().join("histogram.so");
    let built = Command::new("cc").args(["-O2", "-shared", "-fPIC", "-o"]).arg(&library).arg(example("c/histogram.c")).status();
    match built {
        Ok(status) => assert!(status.success(), "cc failed on histogram.c ({status})"),
        Err(e) => return skip(TEST, &format!("cc is not available ({e})")),
    }
    let input = cluster.dir().join("input.bin");
    let data = pseudo_random_bytes(200_000, 8);
    std::fs::write(&input, &data).expect("write the input");
    let mut counts = [0u64; 256];
    for &b in &data {
        counts[usize::from(b)] += 1;
    }
    let want: Vec<u8> = counts.iter().flat_map(|c| c.to_le_bytes()).collect();
    // The reference is computed here: a native serial run needs the node's binary as its worker.
    check_reduce(&cluster, "histogram", &library, "bytes:4KiB", &[input], &want);
}

#[test]
fn reduce_is_refused_without_dispy_combine_and_by_stream() {
    let cluster = Cluster::start(1);
    let output = cluster.output_dir("refused").join("out.bin");
    let job = Job::new(&example("checksum.wat"), "bytes:4KiB", &output)
        .input(&example("data/lorem.txt"))
        .flag("--results", "reduce");
    let run = cluster.run_job(&job);
    run.check_code(64);
    run.check_stderr_mentions(&["does not export `dispy_combine`", "--results reduce"]);
    assert!(!output.exists(), "no output for a refused job\n{run}");

    let stream = cluster.submit(&[&"stream", &"--payload", &example("sum.wat"), &"--split", &"bytes:1KiB", &"--results", &"reduce"]);
    stream.check_code(64);
    stream.check_stderr_mentions(&["cannot reduce", "use run or submit"]);
}

#[test]
fn a_trapping_combine_fails_the_job_naming_its_chunks() {
    let cluster = Cluster::start(2);
    let input = cluster.dir().join("trap.bin");
    // The first chunk's result starts with "TRAP": every combine it is the left side of traps.
    std::fs::write(&input, [b"TRAP".as_slice(), &pseudo_random_bytes(20_000, 3)].concat()).expect("write the input");
    let output = cluster.output_dir("trap").join("out.bin");
    let job = Job::new(&fixture("concat_combine.wat"), "bytes:4KiB", &output).input(&input).flag("--results", "reduce");
    let run = cluster.run_job(&job);
    run.check_code(1);
    run.check_stderr_mentions(&["dispy_combine of the results of chunks 0..", "failed after 3 attempt(s)", "unreachable"]);
    assert!(!output.exists(), "no output for a failed job\n{run}");
}

/// `status JOB --json` of a plain cluster: state and chunks done.
fn status(cluster: &Cluster, job: &str) -> Option<(String, u64)> {
    let run = cluster.submit(&[&"status", &job, &"--json"]);
    let value: serde_json::Value = serde_json::from_str(run.stdout.trim()).ok()?;
    Some((value["state"].as_str()?.to_owned(), value["done"].as_u64()?))
}

/// The reference of the fault tests' job: the 16-byte inputs of `range:0..CHUNKS:1`, in order.
fn range_reference() -> Vec<u8> {
    serial_reduce(&fixture("concat_combine.wat"), SPIN.as_bytes(), &format!("range:0..{CHUNKS}:1"), &[])
}

#[test]
fn a_node_killed_while_chunks_are_combined_costs_only_time() {
    let mut cluster = Cluster::start(2);
    let output = cluster.output_dir("killed").join("out.bin");
    let payload = fixture("concat_combine.wat");
    let split = format!("range:0..{CHUNKS}:1");
    let submit = cluster.submit(&[
        &"submit", &"--payload", &payload, &"--split", &split, &"--args", &SPIN, &"--results", &"reduce", &"--output", &output,
    ]);
    submit.check_success();
    let job = submit.stdout.trim().to_owned();
    // Every chunk has run once the job reports all of them done; the combines go on after.
    let mut last = None;
    assert_eventually!(
        {
            last = status(&cluster, &job);
            last.as_ref().is_some_and(|(state, done)| state != "running" || *done == CHUNKS)
        },
        "job {job} never finished its chunks; last (state, done): {last:?}"
    );
    assert_eq!(last.as_ref().map(|(s, _)| s.as_str()), Some("running"), "the job ended before its combines could be interrupted; make them slower (SPIN)");
    cluster.node(0).kill();
    let wait = cluster.submit_with(cluster.client_dir(), vec!["wait".into(), job.clone().into()], LONG);
    wait.check_success();
    let got = std::fs::read(&output).unwrap_or_else(|e| panic!("no output: {e}\n{wait}"));
    check_same_bytes(&got, &range_reference(), &wait);
}

#[test]
fn a_dispatcher_killed_mid_reduce_resumes_with_no_chunk_or_combine_run_twice() {
    let mut cluster = DurableCluster::builder().nodes(2).start();
    let output = cluster.path("reduced.bin");
    let payload = fixture("concat_combine.wat");
    let split = format!("range:0..{CHUNKS}:1");
    let job = cluster.submit_detached(&[
        &"--payload", &payload, &"--split", &split, &"--args", &SPIN, &"--results", &"reduce", &"--output", &output,
    ]);
    // Kill it once every chunk has run and the combines are under way.
    let mut last = None;
    assert_eventually!(
        {
            last = cluster.status_json(job).ok().and_then(|s| Some((s["state"].as_str()?.to_owned(), s["done"].as_u64()?)));
            last.as_ref().is_some_and(|(state, done)| state != "running" || *done == CHUNKS)
        },
        "job {job} never finished its chunks; last (state, done): {last:?}\n{}",
        cluster.logs()
    );
    assert_eq!(last.as_ref().map(|(s, _)| s.as_str()), Some("running"), "the job ended before the kill; make its combines slower (SPIN)");
    let ends: Vec<Option<usize>> =
        (0..cluster.node_count()).map(|i| last_event_with(&cluster.node_log(i), &["lost the dispatcher", "session ended"])).collect();
    cluster.kill_dispatcher();
    let noticed = poll_until(LONG, || {
        (0..cluster.node_count()).all(|i| {
            let now = last_event_with(&cluster.node_log(i), &["lost the dispatcher", "session ended"]);
            now.is_some() && now > ends[i]
        })
    });
    assert!(noticed, "the nodes never noticed the dispatcher die\n{}", cluster.logs());
    cluster.start_dispatcher();

    let wait = cluster.submit_with(&[&"wait", &job.to_string()], LONG);
    wait.check_success();
    let got = std::fs::read(&output).unwrap_or_else(|e| panic!("no output: {e}\n{wait}"));
    check_same_bytes(&got, &range_reference(), &wait);

    // Runs and combines over the whole job, from each node's last idle `node health` line.
    let executed: u64 = (0..cluster.node_count())
        .map(|i| {
            let after = log_events(&cluster.node_log(i)).len().checked_sub(1);
            let mut found = None;
            let settled = poll_until(LONG, || {
                found = last_health(&cluster.node_log(i), after).filter(|h| h.busy == 0);
                found.is_some()
            });
            assert!(settled, "node n{} logged no idle health line\n{}", i + 1, cluster.logs());
            found.map_or(0, |h| h.chunks_done)
        })
        .sum();
    let logs = [cluster.dispatcher_log(1), cluster.dispatcher_log(2)].concat();
    let copies = log_events(&logs).iter().filter(|e| e["message"] == "speculative copy of a straggling chunk").count() as u64;
    let claims: u64 =
        log_events(&cluster.dispatcher_log(2)).iter().filter(|e| e["message"] == "node rejoined" || e["message"] == "node joined").filter_map(|e| field_u64(e, "claims")).sum();
    let tasks = CHUNKS + (CHUNKS - 1);
    println!("{executed} runs and combines for {tasks} ({copies} speculative copies); the nodes claimed {claims} attempts after the restart");
    assert!(
        (tasks..=tasks + copies).contains(&executed),
        "the nodes ran {executed} chunks and combines for {tasks} (plus at most {copies} speculative copies): \
         the restart cost work\n{}",
        cluster.logs()
    );
}

#[test]
fn a_straggling_combine_gets_a_speculative_copy_and_counts_once() {
    let cluster = Cluster::start(2);
    let files = cluster.dir().join("straggle");
    std::fs::create_dir_all(&files).expect("create the input directory");
    // The first file's result is "SLOW": the combine of chunks 0 and 1 spins 30 times as long as
    // any run or other combine, on every attempt, while the rest of the job finishes around it.
    std::fs::write(files.join("a"), b"SLOW").expect("write the first file");
    for (seed, name) in (1u64..).zip(["b", "c", "d", "e", "f", "g", "h"]) {
        std::fs::write(files.join(name), pseudo_random_bytes(64, seed)).expect("write an input file");
    }
    let payload = fixture("concat_combine.wat");
    let inputs = [files.clone()];
    let want = serial_reduce(&payload, SPIN.as_bytes(), "files", &inputs);
    let output = cluster.output_dir("straggle").join("reduced.bin");
    let job = Job::new(&payload, "files", &output).input(&files).payload_args(SPIN).flag("--results", "reduce");
    let run = cluster.run_job(&job);
    run.check_success();
    // Concatenation: a combine accepted twice, or a chunk combined twice, would show here.
    check_same_bytes(&std::fs::read(&output).expect("output"), &want, &run);
    let log = cluster.dispatcher_log();
    let copied = log.lines().any(|l| l.contains("speculative copy of a straggling chunk") && l.contains("combine=true"));
    assert!(copied, "the straggling combine got no speculative copy\n{run}\n{log}");
}

#[test]
fn nodes_pre_combine_sibling_chunks_with_the_same_output() {
    let mut cluster = Cluster::builder().nodes(2).env("RUST_LOG", "info,node::pool::pairs=debug").start();
    let payload = fixture("concat_combine.wat");
    let split = "range:0..64:1";
    let want = serial_reduce(&payload, b"", split, &[]);
    let output = cluster.output_dir("pairs").join("reduced.bin");
    let run = cluster.run_job(&Job::new(&payload, split, &output).flag("--results", "reduce"));
    run.check_success();
    check_same_bytes(&std::fs::read(&output).expect("output"), &want, &run);
    // Consecutive chunks mostly go to the same node, which combines pairs of them itself.
    let logs = [cluster.node(0).log(), cluster.node(1).log()].concat();
    let pairs = logs.lines().filter(|l| l.contains("results pre-combined")).count();
    assert!(pairs > 0, "no node pre-combined two chunks\n{run}\n{logs}");
    println!("{pairs} of 32 pairs pre-combined on the nodes");
}
