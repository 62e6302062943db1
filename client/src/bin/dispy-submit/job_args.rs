//! The job a command describes: `RunArgs` (a job file and the flags that override it) made into a
//! `JobDescription`, and the payload checked here before anything is sent.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use client::job::JobDescription;
use client::split::SplitRule;
use wire::proto::{PayloadKind, ResultMode};

#[derive(Debug, ClapArgs)]
pub(crate) struct RunArgs {
    /// A job file (TOML); flags given as well override its fields.
    pub(crate) job_file: Option<PathBuf>,
    /// Start an embedded dispatcher and N nodes in this process (no certificates needed).
    #[arg(long, value_name = "N")]
    pub(crate) local: Option<u32>,
    /// The payload: a WebAssembly module (.wasm or .wat) or a native shared library (.so).
    #[arg(long)]
    pub(crate) payload: Option<PathBuf>,
    /// Input file or directory, or object URL (s3://BUCKET/KEY, s3://BUCKET/PREFIX/ with files,
    /// https://...; nodes read their ranges, credentials from AWS_*); repeat for several.
    #[arg(long)]
    pub(crate) input: Vec<PathBuf>,
    /// Split rule: bytes:SIZE, lines:N, files, range:START..END:STEP, or auto (bytes:auto,
    /// lines:auto, range:START..END:auto) to size chunks by measured run time.
    #[arg(long)]
    pub(crate) split: Option<SplitRule>,
    /// Output file (concat) or directory (files).
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,
    /// Argument string passed to the payload.
    #[arg(long)]
    pub(crate) args: Option<String>,
    /// concat (one file, chunk order), files (one file per chunk) or reduce (one result, every
    /// chunk's combined with the payload's dispy_combine).
    #[arg(long)]
    pub(crate) results: Option<String>,
    /// Attempts per chunk before the job fails.
    #[arg(long)]
    pub(crate) max_attempts: Option<u32>,
    /// Time limit per chunk, e.g. 30s.
    #[arg(long)]
    pub(crate) chunk_timeout: Option<String>,
    /// With an auto split rule (auto, bytes:auto, lines:auto, range:A..B:auto): how long each
    /// chunk should run, e.g. 1s.
    #[arg(long)]
    pub(crate) chunk_target: Option<String>,
    /// Memory limit per worker, e.g. 256MiB.
    #[arg(long)]
    pub(crate) memory_limit: Option<String>,
    /// Higher runs first.
    #[arg(long)]
    pub(crate) priority: Option<i32>,
    /// Fail the job if no node could take it for this long, e.g. 30s [default: wait as long as
    /// it takes, saying why].
    #[arg(long)]
    pub(crate) placement_timeout: Option<String>,
    /// The input is on storage every node mounts at the same path (listed in the nodes'
    /// shared_input_roots): send where each chunk lies, and let nodes read the bytes.
    #[arg(long)]
    pub(crate) shared_input: bool,
    /// Ship the input's bytes through the dispatcher even when every node could read the files
    /// in place (below their shared_input_roots: on this host or on shared storage).
    #[arg(long, conflicts_with = "shared_input")]
    pub(crate) ship_input: bool,
}

/// Builds the job from a job file and/or flags, flags winning.
pub(crate) fn job_from(args: &RunArgs) -> anyhow::Result<JobDescription> {
    job_with_io(args, None)
}

/// [`job_from`] with the input and output replaced by `io` (for `stream`: standard input and
/// output), so neither is required.
pub(crate) fn job_with_io(args: &RunArgs, io: Option<(PathBuf, PathBuf)>) -> anyhow::Result<JobDescription> {
    let mut job = match &args.job_file {
        Some(path) => JobDescription::from_toml_file(path)?,
        None => {
            let missing = |flag: &str| anyhow::anyhow!("{flag} is required without a job file");
            let payload = args.payload.clone().ok_or_else(|| missing("--payload"))?;
            let split = args.split.ok_or_else(|| missing("--split"))?;
            let output = match (&io, &args.output) {
                (Some((_, output)), _) => output.clone(),
                (None, output) => output.clone().ok_or_else(|| missing("--output"))?,
            };
            JobDescription::new(payload, split, output)
        }
    };
    if let Some((input, output)) = io {
        job.inputs = vec![input];
        job.output = output;
    }
    if let Some(payload) = &args.payload {
        job.name = client::job::default_name(payload);
        job.payload = payload.clone();
    }
    if !args.input.is_empty() {
        job.inputs = args.input.clone();
    }
    if let Some(split) = &args.split {
        job.split = *split;
    }
    if let Some(output) = &args.output {
        job.output = output.clone();
    }
    if let Some(a) = &args.args {
        job.args = a.clone().into_bytes();
    }
    if let Some(results) = &args.results {
        job.results = client::job::parse_result_mode(results)
            .ok_or_else(|| anyhow::anyhow!("--results must be concat, files or reduce, not {results:?}"))?;
    }
    if let Some(n) = args.max_attempts {
        job.max_attempts = n;
    }
    if let Some(t) = &args.chunk_timeout {
        job.chunk_timeout = wire::units::parse_duration(t).context("--chunk-timeout")?;
    }
    if let Some(t) = &args.chunk_target {
        job.chunk_target = wire::units::parse_duration(t).context("--chunk-target")?;
    }
    if let Some(m) = &args.memory_limit {
        job.memory_limit = wire::units::parse_size(m).context("--memory-limit")?;
    }
    if let Some(p) = args.priority {
        job.priority = p;
    }
    if args.shared_input {
        job.shared_input = true;
    }
    if args.ship_input {
        job.ship_input = true;
    }
    if let Some(t) = &args.placement_timeout {
        job.placement_timeout = Some(wire::units::parse_duration(t).context("--placement-timeout")?);
    }
    job.validate()?;
    Ok(job)
}

/// Compiles the payload here first, so a broken module is reported before anything is sent.
pub(crate) fn check_payload(job: &JobDescription, local: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(&job.payload).with_context(|| format!("payload file {}", job.payload.display()))?;
    let kind = wire::abi::detect_kind(&bytes).map_err(|e| anyhow::anyhow!("payload {}: {e}", job.payload.display()))?;
    if let PayloadKind::Native { os, arch } = &kind {
        if (os.as_str(), arch.as_str()) != (std::env::consts::OS, std::env::consts::ARCH) && !local {
            // A library for another platform cannot be loaded here; the dispatcher checks that a
            // node can run it.
            eprintln!("note: cannot check a {os}/{arch} library on this machine; the nodes will");
            return Ok(());
        }
    }
    let executor = node::exec::Executor::new()?;
    let payload =
        executor.load(&kind, &bytes, &job.payload).with_context(|| format!("payload {}", job.payload.display()))?;
    if job.results == ResultMode::Reduce && !payload.has_combine() {
        anyhow::bail!(
            "payload {} does not export `{}`, which --results reduce needs to combine the chunks' results \
             (see docs/payloads.md, \"Reduce\")",
            job.payload.display(),
            wire::abi::EXPORT_COMBINE
        );
    }
    Ok(())
}
