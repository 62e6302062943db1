//! Jobs on a real cluster (a dispatcher and two one-slot nodes): for every split rule the output
//! written by `dispy-submit` equals, byte for byte, the same payload run serially in this process
//! over the same chunks, and nothing but the output file is left in the output directory;
//! `--results files` writes each chunk's result to its own file. Also
//! the `nodes` listing in both its forms, and many commands in a row from one certificate.

use std::path::{Path, PathBuf};

use tests::{check_same_bytes, dir_entries, example, pseudo_random_bytes, serial_output, Cluster, Job, Run};

/// Runs `payload` over `inputs` cut by `split` on `cluster` and checks the output against the
/// serial run.
#[track_caller]
fn check_matches_serial(cluster: &Cluster, name: &str, payload: &Path, split: &str, args: &str, inputs: &[PathBuf]) {
    let out_dir = cluster.output_dir(name);
    let output = out_dir.join("result.bin");
    let mut job = Job::new(payload, split, &output).payload_args(args);
    for input in inputs {
        job = job.input(input);
    }
    let run = cluster.run_job(&job);
    run.check_success();
    let got = std::fs::read(&output).unwrap_or_else(|e| panic!("no output file: {e}\n{run}"));
    let want = serial_output(payload, args.as_bytes(), split, inputs);
    check_same_bytes(&got, &want, &run);
    assert_eq!(dir_entries(&out_dir), ["result.bin"], "only the output may remain\n{run}");
}

#[test]
fn bytes_split_matches_serial_run() {
    let cluster = Cluster::start(2);
    // Not a multiple of the chunk size, so the last chunk is short.
    let input = cluster.dir().join("input.bin");
    std::fs::write(&input, pseudo_random_bytes(300_001, 1)).expect("write the input");
    check_matches_serial(&cluster, "bytes", &example("checksum.wat"), "bytes:4KiB", "", &[input]);
}

#[test]
fn lines_split_matches_serial_run() {
    let cluster = Cluster::start(2);
    // Two inputs, the second without a final newline.
    let extra = cluster.dir().join("extra.txt");
    std::fs::write(&extra, "one more line\nand a last one without newline").expect("write the input");
    let inputs = [example("data/lorem.txt"), extra];
    check_matches_serial(&cluster, "lines", &example("upper.wat"), "lines:8", "", &inputs);
}

#[test]
fn range_split_matches_serial_run() {
    let cluster = Cluster::start(2);
    check_matches_serial(&cluster, "range", &example("mandelbrot.wat"), "range:0..48:5", "64 48 50", &[]);
}

#[test]
fn results_files_writes_one_file_per_chunk() {
    let cluster = Cluster::start(2);
    let out_dir = cluster.output_dir("results-files");
    let output = out_dir.join("rows");
    let (payload, split, args) = (example("mandelbrot.wat"), "range:0..48:5", "64 48 50");
    let job = Job::new(&payload, split, &output).payload_args(args).flag("--results", "files");
    let run = cluster.run_job(&job);
    run.check_success();
    // Ten chunks of five rows (the last of three), 64 one-byte pixels a row, in chunk order; the
    // first also carries the PGM header.
    let names: Vec<String> = (0..10).map(|i| format!("chunk-{i:06}")).collect();
    assert_eq!(dir_entries(&output), names, "{run}");
    let mut joined = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let bytes = std::fs::read(output.join(name)).expect("read a chunk file");
        let header = if i == 0 { "P5\n64 48\n255\n".len() } else { 0 };
        assert_eq!(bytes.len(), header + 64 * if i == 9 { 3 } else { 5 }, "{name}\n{run}");
        joined.extend(bytes);
    }
    check_same_bytes(&joined, &serial_output(&payload, args.as_bytes(), split, &[]), &run);
    assert_eq!(dir_entries(&out_dir), ["rows"], "only the output may remain\n{run}");
}

#[test]
fn files_split_matches_serial_run() {
    let cluster = Cluster::start(2);
    let dir = cluster.dir().join("files");
    std::fs::create_dir_all(dir.join("nested")).expect("create the input directory");
    let sizes = [("a-empty", 0), ("b-one", 1), ("c-page", 4096), ("d-odd", 10_007), ("nested/e-big", 200_000)];
    for (seed, (name, size)) in (1u64..).zip(sizes) {
        std::fs::write(dir.join(name), pseudo_random_bytes(size, seed)).expect("write an input file");
    }
    check_matches_serial(&cluster, "files", &example("checksum.wat"), "files", "", &[dir]);
}

/// The chunk count a successful `run` reports ("job N done: C chunks; ...").
#[track_caller]
fn chunks_done(run: &Run) -> u64 {
    run.stderr
        .lines()
        .find_map(|line| line.split(" done: ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no \"done: N chunks\" line\n{run}"))
}

#[test]
fn auto_split_sizes_chunks_from_their_measured_run_time() {
    let cluster = Cluster::start(2);
    // 6 MB of text: two 64 KiB probes (one per slot), then chunks sized for the target but no
    // bigger than a sixteenth of the rest (eight per slot), so 2 + 16 chunks in all (the last
    // cuts may add one for the lines they round up), where the probe size alone would give ~90.
    let lorem = std::fs::read(example("data/lorem.txt")).expect("read lorem");
    let text: Vec<u8> = lorem.iter().copied().cycle().take(6_000_000).collect();
    let input = cluster.dir().join("big.txt");
    std::fs::write(&input, &text).expect("write the input");
    let output = cluster.output_dir("auto-lines").join("upper.txt");
    let job = Job::new(&example("upper.wat"), "lines:auto", &output).input(&input).flag("--chunk-target", "500ms");
    let run = cluster.run_job(&job);
    run.check_success();
    run.check_stderr_mentions(&["auto split: 2 probe chunks (128."]);
    let chunks = chunks_done(&run);
    assert!((3..=19).contains(&chunks), "{chunks} chunks\n{run}");
    check_same_bytes(&std::fs::read(&output).expect("output"), &text.to_ascii_uppercase(), &run);

    // A range: rows are sized the same way, and the picture is the one row-by-row chunks make.
    let output = cluster.output_dir("auto-range").join("picture.bin");
    let job = Job::new(&example("mandelbrot.wat"), "range:0..256:auto", &output).payload_args("64 256 50");
    let run = cluster.run_job(&job);
    run.check_success();
    run.check_stderr_mentions(&["auto split: 2 probe chunks (2 numbers)"]);
    assert!((3..=19).contains(&chunks_done(&run)), "{run}");
    let want = serial_output(&example("mandelbrot.wat"), b"64 256 50", "range:0..256:1", &[]);
    check_same_bytes(&std::fs::read(&output).expect("output"), &want, &run);

    // Detached: `submit` sizes the chunks while it uploads, before anyone waits.
    let output = cluster.output_dir("auto-detached").join("upper.txt");
    let mut args = Job::new(&example("upper.wat"), "auto", &output).input(&input).to_args();
    args[0] = "submit".into();
    let submit = cluster.submit_with(cluster.client_dir(), args, std::time::Duration::from_secs(120));
    submit.check_success();
    let id = submit.stdout.trim().to_owned();
    let wait = cluster.submit(&[&"wait", &id]);
    wait.check_success();
    assert!((3..=19).contains(&chunks_done(&wait)), "{submit}\n{wait}");
    check_same_bytes(&std::fs::read(&output).expect("output"), &text.to_ascii_uppercase(), &wait);
}

#[test]
fn shared_input_is_read_by_the_nodes_and_only_below_their_roots() {
    let cluster = Cluster::start(2);
    let (first, second) = (cluster.shared_dir().join("a.bin"), cluster.shared_dir().join("b.bin"));
    std::fs::write(&first, pseudo_random_bytes(100_003, 7)).expect("write the input");
    std::fs::write(&second, pseudo_random_bytes(50_000, 8)).expect("write the input");
    let inputs = [first, second];
    // Chunks that span the two files; the output equals the bytes-carrying run's.
    let output = cluster.output_dir("shared").join("sums.bin");
    let mut job = Job::new(&example("checksum.wat"), "bytes:3KiB", &output).switch("--shared-input");
    job = inputs.iter().fold(job, |job, input| job.input(input));
    let run = cluster.run_job(&job);
    run.check_success();
    let want = serial_output(&example("checksum.wat"), b"", "bytes:3KiB", &inputs);
    check_same_bytes(&std::fs::read(&output).expect("output"), &want, &run);

    // A file outside the nodes' roots is refused by every node, with the reason.
    let outside = cluster.dir().join("outside.bin");
    std::fs::write(&outside, b"not shared").expect("write the input");
    let output = cluster.output_dir("refused").join("never.bin");
    let job = Job::new(&example("checksum.wat"), "bytes:4", &output).input(&outside).flag("--max-attempts", "2");
    let run = cluster.run_job(&job.switch("--shared-input"));
    run.check_code(1);
    run.check_stderr_mentions(&["outside this node's shared_input_roots"]);
    assert!(!output.exists(), "{run}");

    // lines cannot be shared: the client says so before submitting.
    let job = Job::new(&example("upper.wat"), "lines:5", &output).input(&inputs[0]).switch("--shared-input");
    let run = cluster.run_job(&job);
    run.check_code(64);
    run.check_stderr_mentions(&["shared input needs a bytes split rule"]);
}

#[test]
fn consecutive_jobs_with_different_payloads_share_a_cluster() {
    let cluster = Cluster::start(2);
    let lorem = example("data/lorem.txt");
    check_matches_serial(&cluster, "first", &example("mandelbrot.wat"), "range:0..48:5", "64 48 50", &[]);
    check_matches_serial(&cluster, "second", &example("checksum.wat"), "bytes:1KiB", "", std::slice::from_ref(&lorem));
    check_matches_serial(&cluster, "third", &example("upper.wat"), "lines:3", "", &[lorem]);
}

#[test]
fn nodes_lists_both_nodes_as_json_and_table() {
    let cluster = Cluster::start(2);
    let nodes = cluster.nodes_json().unwrap_or_else(|run| panic!("`nodes --json` failed\n{run}"));
    let mut summary: Vec<(String, u64)> = nodes
        .iter()
        .map(|n| (n["name"].as_str().unwrap_or("?").to_owned(), n["slots"].as_u64().unwrap_or(0)))
        .collect();
    summary.sort();
    assert_eq!(summary, [("n1".to_owned(), 1), ("n2".to_owned(), 1)], "{nodes:?}");

    let table = cluster.submit(&[&"nodes"]);
    table.check_success();
    let lines: Vec<&str> = table.stdout.lines().collect();
    let header = lines.first().copied().unwrap_or_default();
    for column in ["NODE", "ADDRESS", "SLOTS", "BUSY", "MEMORY", "LOAD", "HEARTBEAT", "STATE"] {
        assert!(header.contains(column), "header lacks {column}\n{table}");
    }
    for name in ["n1", "n2"] {
        assert!(lines[1..].iter().any(|l| l.split_whitespace().next() == Some(name)), "no row for {name}\n{table}");
    }
}

/// Each command closes its connection on the way out. One only dropped lingers at the dispatcher
/// until its idle timeout (10 s), and past 64 connections per certificate the next is refused.
#[test]
fn seventy_commands_in_a_row_are_all_answered() {
    let cluster = Cluster::start(1);
    for n in 1..=70 {
        let run = cluster.submit(&[&"nodes", &"--json"]);
        assert_eq!(run.code, Some(0), "command {n} of 70 failed\n{run}");
    }
}
