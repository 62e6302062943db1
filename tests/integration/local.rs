//! `dispy-submit run --local 2 JOB.toml`: the README's first command, an embedded dispatcher and
//! two nodes in one process with an ephemeral CA. Both example job files run with their output
//! redirected into a temporary directory and match the serial run.

use client::job::JobDescription;
use tests::{check_same_bytes, command, dir_entries, example, serial_output, Run, COMMAND_TIMEOUT};

/// Runs `example_job` with `--local 2`, its output overridden to a file in a temporary directory,
/// and checks the output equals the serial run of the job file's payload, split and inputs.
/// Returns the output.
#[track_caller]
fn check_local_example(example_job: &str) -> Vec<u8> {
    let temp = tempfile::tempdir().expect("create a temporary directory");
    let output = temp.path().join("result.out");
    let job_file = example(example_job);
    let mut run = command("dispy-submit");
    run.arg("run").arg("--local").arg("2").arg(&job_file).arg("--output").arg(&output);
    let run = Run::capture(run, COMMAND_TIMEOUT);
    run.check_success();
    let got = std::fs::read(&output).unwrap_or_else(|e| panic!("no output file: {e}\n{run}"));
    assert_eq!(dir_entries(temp.path()), ["result.out"], "only the output may remain\n{run}");
    let job = JobDescription::from_toml_file(&job_file).unwrap_or_else(|e| panic!("{}: {e}", job_file.display()));
    let want = serial_output(&job.payload, &job.args, &job.split.to_string(), &job.inputs);
    check_same_bytes(&got, &want, &run);
    got
}

#[test]
fn local_cluster_renders_the_mandelbrot_example() {
    let image = check_local_example("mandelbrot.toml");
    let header: &[u8] = b"P5\n1024 1024\n255\n";
    assert!(image.starts_with(header), "not a 1024x1024 PGM: {:?}", &image[..image.len().min(20)]);
    assert_eq!(image.len(), header.len() + 1024 * 1024, "one byte per pixel after the header");
}

#[test]
fn local_cluster_runs_the_checksum_example() {
    let sums = check_local_example("checksum.toml");
    let input_len = std::fs::metadata(example("data/lorem.txt")).expect("the example input exists").len();
    assert_eq!(sums.len() as u64, input_len.div_ceil(4096) * 8, "one 8-byte checksum per 4 KiB chunk");
}
