//! W3 as a user runs it from the shell: `dispy-submit run` processes, timed from spawn to exit,
//! for what the in-process client cannot do (read `s3://` input with the AWS variables in its
//! environment, start an embedded `--local` cluster).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::Bench;
use crate::cluster::workspace_root;

impl Bench<'_> {
    /// W3's input uploaded to the local S3-compatible server and run from `s3://bench/w3.bin`
    /// against the bench's cluster; `None` without moto.
    pub(super) fn w3_from_s3(&mut self, input: &Path, reference: &[u8]) -> anyhow::Result<Option<Vec<f64>>> {
        let Some(s3) = &self.cluster.s3 else { return Ok(None) };
        s3.create_bucket(crate::cluster::S3_BUCKET);
        let bytes = std::fs::read(input)?;
        s3.put(crate::cluster::S3_BUCKET, "w3.bin", &bytes);
        let object = format!("s3://{}/w3.bin", crate::cluster::S3_BUCKET);
        let env = s3.env();
        let rates = self.w3_runs("W3 from S3", bytes.len() as u64, reference, |command| {
            command
                .arg("--dispatcher")
                .arg(&self.cluster.address)
                .arg("--tls-dir")
                .arg(&self.cluster.client_dir)
                .arg("run")
                .args(["--input", &object])
                .envs(env.clone());
        })?;
        Ok(Some(rates))
    }

    /// W3's input file run by `dispy-submit run --local 2`: an embedded dispatcher and two
    /// nodes in the submitting process, which read the file in place.
    pub(super) fn w3_local(&mut self, input: &Path, reference: &[u8]) -> anyhow::Result<Vec<f64>> {
        let bytes = std::fs::metadata(input)?.len();
        self.w3_runs("W3 with --local 2", bytes, reference, |command| {
            command.args(["run", "--local", "2", "--input"]).arg(input);
        })
    }

    /// Runs `dispy-submit` with the arguments `prepare` gives plus W3's payload, split and
    /// output, a warm-up and then `runs` times; every output must equal `reference`. Returns
    /// MB/s of `bytes` per timed run.
    fn w3_runs(&self, what: &str, bytes: u64, reference: &[u8], prepare: impl Fn(&mut Command)) -> anyhow::Result<Vec<f64>> {
        let output = self.dir.join("w3-submit.out");
        let mut rates = Vec::new();
        for run in 0..=self.runs {
            let mut command = Command::new(&self.cluster.submit);
            prepare(&mut command);
            command
                .arg("--payload")
                .arg(workspace_root().join("examples/checksum.wat"))
                .args(["--split", "bytes:1MiB", "--output"])
                .arg(&output)
                .stdin(std::process::Stdio::null());
            let started = Instant::now();
            let done = command.output()?;
            let seconds = started.elapsed().as_secs_f64();
            anyhow::ensure!(done.status.success(), "{what} failed: {}", String::from_utf8_lossy(&done.stderr));
            anyhow::ensure!(std::fs::read(&output)? == reference, "{what}: the output differs from the reference");
            if run > 0 {
                rates.push(bytes as f64 / 1e6 / seconds);
            }
        }
        let _ = std::fs::remove_file(&output);
        Ok(rates)
    }
}
