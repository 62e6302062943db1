//! W3 read from a local S3-compatible server: moto (`moto_server`, from `DISPY_TEST_MOTO` or
//! `PATH`, started by [`crate::cluster::Cluster`]) holds W3's input, and the nodes fetch their
//! chunks' byte ranges from it themselves.

use std::path::Path;
use std::time::Instant;

use anyhow::ensure;

use crate::cluster::{workspace_root, S3_BUCKET};
use crate::report::Row;
use crate::stats::Summary;
use crate::workloads::Bench;

/// What the row measures.
const WHAT: &str =
    "throughput, same chunks read from a local S3-compatible server (moto; nodes fetch ranges; dispy-submit run)";

impl Bench<'_> {
    /// W3's input uploaded to the local S3-compatible server and run from `s3://bench/w3.bin` by
    /// a `dispy-submit run` process (its environment carries the AWS variables; the bench's own
    /// cannot), timed from spawn to exit: one untimed warm-up, then `runs` timed runs. Without
    /// moto the row says it was skipped and why.
    ///
    /// # Errors
    /// When a run fails or its output differs from `reference`.
    pub(crate) fn w3_from_s3(&mut self, input: &Path, reference: &[u8]) -> anyhow::Result<Row> {
        let Some(s3) = &self.cluster.s3 else {
            let why = "skipped: moto_server not found (set DISPY_TEST_MOTO to its path or put it on PATH)";
            eprintln!("bench: W3 from S3 {why}");
            return Ok(Row::new("W3", format!("{WHAT}: {why}"), "MB/s", None, ""));
        };
        s3.create_bucket(S3_BUCKET);
        let bytes = std::fs::read(input)?;
        s3.put(S3_BUCKET, "w3.bin", &bytes);
        let output = self.dir.join("w3-s3.out");
        let mut rates = Vec::new();
        for run in 0..=self.runs {
            let mut command = std::process::Command::new(&self.cluster.submit);
            command
                .arg("--dispatcher")
                .arg(&self.cluster.address)
                .arg("--tls-dir")
                .arg(&self.cluster.client_dir)
                .args(["run", "--payload"])
                .arg(workspace_root().join("examples/checksum.wat"))
                .args(["--input", &format!("s3://{S3_BUCKET}/w3.bin"), "--split", "bytes:1MiB", "--output"])
                .arg(&output)
                .envs(s3.env())
                .stdin(std::process::Stdio::null());
            let started = Instant::now();
            let done = command.output()?;
            let seconds = started.elapsed().as_secs_f64();
            ensure!(done.status.success(), "W3 from S3 failed: {}", String::from_utf8_lossy(&done.stderr));
            ensure!(std::fs::read(&output)? == reference, "W3 from S3: the output differs from the reference");
            if run > 0 {
                rates.push(bytes.len() as f64 / 1e6 / seconds);
            }
        }
        let _ = std::fs::remove_file(&output);
        Ok(Row::new("W3", WHAT.into(), "MB/s", Summary::of(&rates), ""))
    }
}
