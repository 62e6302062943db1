//! `dispy-submit`: the user's command line. `run` submits a job (from a job file or flags) and
//! writes its output; `--local N` first starts an embedded cluster. `stream` runs a job over
//! standard input as it arrives. `nodes` lists the cluster. Everything goes through
//! [`client::Client`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args as ClapArgs, Parser, Subcommand};
use client::job::JobDescription;
use common::pki::Identity;
use wire::proto::{JobId, JobState, JobSummary, NodeStatus, PayloadKind};
use client::split::SplitRule;
use client::{ClientError, Update};
use client::local::LocalCluster;
use client::Client;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

/// Exit code when a job ran and failed.
const EXIT_JOB_FAILED: u8 = 1;
/// Exit code for connection and I/O problems.
const EXIT_ERROR: u8 = 2;
/// Exit code for unusable arguments or job files.
const EXIT_USAGE: u8 = 64;

/// Submit jobs to a dispy cluster and watch it.
#[derive(Debug, Parser)]
#[command(name = "dispy-submit", version)]
struct Cli {
    /// Dispatcher address, host:port.
    #[arg(long, global = true, env = "DISPY_DISPATCHER", default_value = "127.0.0.1:7870")]
    dispatcher: String,
    /// Directory with this client's ca.pem, cert.pem and key.pem (from `pki issue-client`).
    #[arg(long, global = true, env = "DISPY_TLS_DIR", default_value = "/etc/dispy/client")]
    tls_dir: PathBuf,
    /// How long `run`, `wait` and `stream` keep trying to reach a dispatcher they lost (restarted,
    /// or cut off), e.g. 30s; 0s gives up at once.
    #[arg(long, global = true, env = "DISPY_RECONNECT_TIMEOUT", default_value = "2m", value_parser = parse_timeout)]
    reconnect_timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job and write its output; exits 0 only if every chunk succeeded.
    Run {
        #[command(flatten)]
        args: Box<RunArgs>,
        /// Print a final JSON object (job, chunks, attempts, retries, output) on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Submit a job, upload its input, print its id and return; `wait` fetches the output later.
    Submit(Box<RunArgs>),
    /// Run a job over standard input as it arrives (split rule bytes:SIZE or lines:N): each
    /// chunk is sent as soon as it is cut, each result written to standard output as soon as it
    /// and those before it are back. A job file's input and output are not used.
    Stream(Box<RunArgs>),
    /// Wait for a job (reattach) and write its output; exits 0 only if every chunk succeeded.
    Wait {
        /// The job id.
        job: u64,
        /// Where to write the output (default: where the submitter asked for it).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Show one job.
    Status {
        /// The job id.
        job: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: its chunks stop on the nodes and no output is written.
    Cancel {
        /// The job id.
        job: u64,
    },
    /// List your jobs the dispatcher remembers (with an operator's certificate: everyone's, with
    /// their owners).
    Jobs {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop giving a node new work; it finishes what it holds (operators only).
    Drain {
        /// The node's name.
        node: String,
        /// Return only once the node is idle (no slot busy, no chunk held), printing progress
        /// to stderr, so it can be stopped or upgraded without rerunning anything.
        #[arg(long)]
        wait: bool,
    },
    /// Put a drained or quarantined node back to work (operators only).
    Undrain {
        /// The node's name.
        node: String,
    },
    /// List the nodes connected to the dispatcher.
    Nodes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's attempt logs (dispy.log, WASI stderr, native stdout and stderr), each line
    /// as `CHUNK: LINE`.
    Logs {
        /// The job id.
        job: u64,
        /// Only this chunk's attempts.
        #[arg(long)]
        chunk: Option<u64>,
        /// Keep printing new logs until the job ends.
        #[arg(long)]
        follow: bool,
        /// Print one JSON object per attempt log, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Why a job waits (each node's reason) and every failed attempt of its chunks.
    Explain {
        /// The job id.
        job: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, ClapArgs)]
struct RunArgs {
    /// A job file (TOML); flags given as well override its fields.
    job_file: Option<PathBuf>,
    /// Start an embedded dispatcher and N nodes in this process (no certificates needed).
    #[arg(long, value_name = "N")]
    local: Option<u32>,
    /// The payload: a WebAssembly module (.wasm or .wat) or a native shared library (.so).
    #[arg(long)]
    payload: Option<PathBuf>,
    /// Input file or directory (repeat for several).
    #[arg(long)]
    input: Vec<PathBuf>,
    /// Split rule: bytes:SIZE, lines:N, files, range:START..END:STEP, or auto (bytes:auto,
    /// lines:auto, range:START..END:auto) to size chunks by measured run time.
    #[arg(long)]
    split: Option<SplitRule>,
    /// Output file (concat) or directory (files).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Argument string passed to the payload.
    #[arg(long)]
    args: Option<String>,
    /// concat (one file, chunk order) or files (one file per chunk).
    #[arg(long)]
    results: Option<String>,
    /// Attempts per chunk before the job fails.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Time limit per chunk, e.g. 30s.
    #[arg(long)]
    chunk_timeout: Option<String>,
    /// With an auto split rule (auto, bytes:auto, lines:auto, range:A..B:auto): how long each
    /// chunk should run, e.g. 1s.
    #[arg(long)]
    chunk_target: Option<String>,
    /// Memory limit per worker, e.g. 256MiB.
    #[arg(long)]
    memory_limit: Option<String>,
    /// Higher runs first.
    #[arg(long)]
    priority: Option<i32>,
    /// Fail the job if no node could take it for this long, e.g. 30s [default: wait as long as
    /// it takes, saying why].
    #[arg(long)]
    placement_timeout: Option<String>,
    /// The input is on storage every node mounts at the same path (listed in the nodes'
    /// shared_input_roots): send where each chunk lies, and let nodes read the bytes.
    #[arg(long)]
    shared_input: bool,
}

fn main() -> ExitCode {
    // A native payload worker is this binary started with a marker argument: serve and exit.
    node::exec::native::maybe_run_worker();
    let cli = Cli::parse();
    common::telemetry::init(common::telemetry::LogFormat::Text, "warn");
    // One thread: a client waits on one connection, and an answer read there is handled there.
    let runtime = match common::daemon::runtime(Some(1)) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dispy-submit: failed to start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run { args, json } => run(&cli, args, *json).await,
            Command::Submit(run_args) => submit(&cli, run_args).await,
            Command::Stream(run_args) => stream(&cli, run_args).await,
            Command::Wait { job, output } => wait(&cli, JobId(*job), output.as_deref()).await,
            Command::Status { job, json } => status(&cli, JobId(*job), false, *json).await,
            Command::Cancel { job } => status(&cli, JobId(*job), true, false).await,
            Command::Jobs { json } => jobs(&cli, *json).await,
            Command::Drain { node, wait } => drain(&cli, node, true, *wait).await,
            Command::Undrain { node } => drain(&cli, node, false, false).await,
            Command::Nodes { json } => nodes(&cli, *json).await,
            Command::Logs { job, chunk, follow, json } => {
                with_client(&cli, None, async |c| Ok(client::report::print_logs(c, JobId(*job), *chunk, *follow, *json).await?)).await
            }
            Command::Explain { job, json } => {
                let explained = with_client(&cli, None, async |c| Ok(c.explain(JobId(*job)).await?)).await;
                explained.map(|e| client::report::print_explanation(&e, *json))
            }
        }
    });
    // An input reader may still be blocked in a read of standard input; nothing waits for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("dispy-submit: {}", explain(&e));
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Job(e)) => {
            eprintln!("dispy-submit: {e}");
            if let ClientError::JobFailed { failure, .. } = &e {
                client::report::failure_tails(failure).iter().for_each(|line| eprintln!("{line}"));
            }
            ExitCode::from(EXIT_JOB_FAILED)
        }
        Err(Failure::Other(e)) => {
            eprintln!("dispy-submit: {}", explain(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// What an interrupted `run` or `wait` leaves: its future is dropped, which removes its
/// temporary output, and a job submitted to a real dispatcher keeps running there.
const INTERRUPTED_RUN: &str =
    "interrupted; no output was written (a job on a real dispatcher goes on there: `dispy-submit wait JOB` reattaches)";

/// Runs `job` until it ends or the user interrupts (SIGINT, SIGTERM), which fails with
/// `interrupted` and drops the job's future.
async fn interruptible<T>(
    job: impl std::future::Future<Output = Result<T, ClientError>>,
    interrupted: &str,
) -> Result<T, Failure> {
    tokio::select! {
        result = job => Ok(result?),
        () = common::signal::shutdown() => Err(Failure::Other(anyhow::anyhow!("{interrupted}"))),
    }
}

/// An error and its causes on one line, skipping a cause whose text the message already holds
/// (our error types quote their source).
fn explain(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// How a command failed, which decides the exit code.
enum Failure {
    Usage(anyhow::Error),
    Job(ClientError),
    Other(anyhow::Error),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::JobFailed { .. } => Failure::Job(e),
            ClientError::Payload { .. } | ClientError::BadPayload { .. } | ClientError::Input(_) => Failure::Usage(e.into()),
            other => Failure::Other(other.into()),
        }
    }
}

/// Starts the embedded cluster `--local N` asks for, if any.
async fn start_local(local: Option<u32>) -> Result<Option<LocalCluster>, Failure> {
    match local {
        Some(0) => Err(Failure::Usage(anyhow::anyhow!("--local needs at least 1 node"))),
        Some(n) => Ok(Some(LocalCluster::start(n).await.map_err(Failure::Other)?)),
        None => Ok(None),
    }
}

async fn run(cli: &Cli, args: &RunArgs, json: bool) -> Result<(), Failure> {
    let job = job_from(args).map_err(Failure::Usage)?;
    check_payload(&job, args.local.is_some()).map_err(Failure::Usage)?;
    let local = start_local(args.local).await?;
    let result = with_client(cli, local.as_ref(), async |client| {
        let mut display = ProgressDisplay::new();
        let report = interruptible(client.run(&job, |p| display.update(p)), INTERRUPTED_RUN).await;
        display.finish();
        report
    })
    .await;
    if let Some(cluster) = local {
        cluster.shutdown().await;
    }
    let report = result?;
    let p = &report.progress;
    // Scripts parse this line as it always was; `--json` carries the attempts too.
    eprintln!("job {} done: {} chunks, {} retries; output written to {}", report.job, p.done, p.retries, report.output.display());
    if json {
        let object = serde_json::json!({
            "job": report.job.0,
            "chunks": p.total,
            "attempts": p.attempts,
            "retries": p.retries,
            "output": report.output.display().to_string(),
        });
        println!("{object}");
    }
    Ok(())
}

/// `--reconnect-timeout`: a duration such as `30s` or `2m`.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    wire::units::parse_duration(text).map_err(|e| e.to_string())
}

async fn submit(cli: &Cli, args: &RunArgs) -> Result<(), Failure> {
    if args.local.is_some() {
        return Err(Failure::Usage(anyhow::anyhow!("--local works with `run` only: an embedded cluster ends with the command")));
    }
    let job = job_from(args).map_err(Failure::Usage)?;
    check_payload(&job, false).map_err(Failure::Usage)?;
    let id = with_client(cli, None, async |client| Ok(client.submit(&job).await?)).await?;
    println!("{id}");
    Ok(())
}

/// `stream`: standard input, cut by the job's rule as it arrives, through a [`JobStream`];
/// results to standard output in chunk order as they come back.
async fn stream(cli: &Cli, args: &RunArgs) -> Result<(), Failure> {
    let usage = |message: &str| Failure::Usage(anyhow::anyhow!("stream: {message}"));
    if !args.input.is_empty() || args.output.is_some() || args.results.is_some() {
        return Err(usage("it reads standard input and writes standard output; drop --input, --output and --results"));
    }
    if args.shared_input {
        return Err(usage("--shared-input needs files every node can read, not standard input"));
    }
    let job = job_with_io(args, Some(("/dev/stdin".into(), "/dev/stdout".into()))).map_err(Failure::Usage)?;
    if !matches!(job.split, SplitRule::Bytes(_) | SplitRule::Lines(_)) {
        return Err(usage(&format!("split rule {} cannot cut a stream; use bytes:SIZE or lines:N", job.split)));
    }
    check_payload(&job, args.local.is_some()).map_err(Failure::Usage)?;
    let local = start_local(args.local).await?;
    let result = with_client(cli, local.as_ref(), async |client| {
        interruptible(
            pipe_through(client, &job),
            "interrupted; the results written so far stand, and the job's input ends where it was",
        )
        .await
    })
    .await;
    if let Some(cluster) = local {
        cluster.shutdown().await;
    }
    let (id, progress) = result?;
    eprintln!("job {id} done: {} chunks, {} retries", progress.done, progress.retries);
    Ok(())
}

/// Feeds the job's input (standard input), cut by its rule as it arrives, to a new job and writes
/// its results to standard output, each as soon as it and those before it are back.
async fn pipe_through(client: &mut Client, job: &JobDescription) -> Result<(JobId, wire::proto::JobProgress), ClientError> {
    let mut chunks = client::read_ahead(job.split.chunks(&job.inputs)?);
    let stdout_error = |source| ClientError::Output { path: "standard output".into(), source };
    let mut stdout = tokio::io::stdout();
    let mut stream = client.open(job).await?;
    let id = stream.id();
    eprintln!("job {id} accepted");
    let mut input_open = true;
    loop {
        tokio::select! {
            chunk = chunks.recv(), if input_open => match chunk {
                Some(chunk) => stream.send(&chunk?).await?,
                None => input_open = false,
            },
            result = stream.recv(), if stream.awaiting() > 0 => {
                if let Some(result) = result? {
                    stdout.write_all(&result).await.map_err(stdout_error)?;
                    stdout.flush().await.map_err(stdout_error)?;
                }
            }
            else => break,
        }
    }
    let (rest, progress) = stream.finish().await?;
    for result in rest {
        stdout.write_all(&result).await.map_err(stdout_error)?;
    }
    stdout.flush().await.map_err(stdout_error)?;
    Ok((id, progress))
}

async fn wait(cli: &Cli, job: JobId, output: Option<&std::path::Path>) -> Result<(), Failure> {
    let report = with_client(cli, None, async |client| {
        let summary = client.status(job).await?;
        let output = output.map_or_else(|| PathBuf::from(&summary.output), std::path::Path::to_path_buf);
        let mut display = ProgressDisplay::new();
        let report = interruptible(client.wait(job, &output, summary.results, |p| display.update(p)), INTERRUPTED_RUN).await;
        display.finish();
        report
    })
    .await?;
    eprintln!("job {} done: {} chunks; output written to {}", report.job, report.progress.done, report.output.display());
    Ok(())
}

async fn status(cli: &Cli, job: JobId, cancel: bool, json: bool) -> Result<(), Failure> {
    let summary = with_client(cli, None, async |client| {
        Ok(if cancel { client.cancel(job).await? } else { client.status(job).await? })
    })
    .await?;
    if json {
        println!("{}", job_json(&summary));
    } else {
        print_job_table(std::slice::from_ref(&summary));
        if let JobState::Failed(failure) = &summary.state {
            println!("failure: {failure}");
        }
        if let Some(reason) = &summary.blocked {
            println!("waiting: {reason}");
        }
    }
    Ok(())
}

async fn jobs(cli: &Cli, json: bool) -> Result<(), Failure> {
    let jobs = with_client(cli, None, async |client| Ok(client.jobs().await?)).await?;
    if json {
        println!("{}", serde_json::Value::Array(jobs.iter().map(job_json).collect()));
    } else {
        print_job_table(&jobs);
    }
    Ok(())
}

async fn drain(cli: &Cli, node: &str, drain: bool, wait: bool) -> Result<(), Failure> {
    let nodes = with_client(cli, None, async |client| {
        let mut nodes = client.drain(node, drain).await?;
        if wait {
            let mut said = None;
            while let Some(work) = work_left(&nodes, node) {
                if said != Some(work) {
                    let (busy, held) = work;
                    eprintln!("waiting for {node} to finish: {busy} slots busy, {held} chunks held");
                    said = Some(work);
                }
                tokio::time::sleep(DRAIN_POLL).await;
                nodes = client.nodes().await?;
            }
            eprintln!("{node} is idle");
        }
        Ok(nodes)
    })
    .await?;
    print_node_table(&nodes);
    Ok(())
}

/// How often `drain --wait` asks whether the node is idle.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// The slots busy and the chunks the dispatcher has placed on the sessions of `node`, or `None`
/// when it is idle (or not connected: a node that left holds nothing).
fn work_left(nodes: &[NodeStatus], node: &str) -> Option<(u32, u32)> {
    let (busy, held) = nodes
        .iter()
        .filter(|n| n.name == node && n.address != "-")
        .fold((0, 0), |(busy, held), n| (busy + n.busy, held + n.in_flight));
    (busy > 0 || held > 0).then_some((busy, held))
}

/// Connects (to the embedded cluster if there is one, else to `--dispatcher`), runs `request`,
/// and closes the connection however the request went: a connection only dropped would linger at
/// the dispatcher until its idle timeout, counting against this certificate's connection limit
/// (this program's runtime stops the moment `main` returns, so nothing would send the close).
async fn with_client<T>(
    cli: &Cli,
    local: Option<&LocalCluster>,
    request: impl AsyncFnOnce(&mut Client) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let mut client = match local {
        Some(cluster) => Client::connect(&cluster.address().to_string(), cluster.client_identity()).await?,
        None => Client::connect(&cli.dispatcher, &load_identity(cli).map_err(Failure::Usage)?).await?,
    };
    client.set_reconnect_timeout(cli.reconnect_timeout);
    let answer = request(&mut client).await;
    client.close().await;
    answer
}

fn print_job_table(jobs: &[JobSummary]) {
    println!(
        "{:>6} {:<16} {:<20} {:<10} {:>15} {:>8} {:>8}",
        "JOB", "OWNER", "NAME", "STATE", "DONE/TOTAL", "RUNNING", "RETRIES"
    );
    for j in jobs {
        let done = format!("{}/{}{}", j.progress.done, j.progress.total, if j.progress.input_complete { "" } else { "+" });
        // Jobs journaled before jobs had owners belong to nobody.
        let owner = if j.owner.is_empty() { "-" } else { &j.owner };
        println!(
            "{:>6} {:<16} {:<20} {:<10} {:>15} {:>8} {:>8}",
            j.job.0, owner, j.name, j.state.name(), done, j.progress.running, j.progress.retries
        );
    }
    if jobs.is_empty() {
        println!("(no jobs)");
    }
}

fn job_json(j: &JobSummary) -> serde_json::Value {
    let failure = match &j.state {
        JobState::Failed(failure) => Some(failure.to_string()),
        _ => None,
    };
    serde_json::json!({
        "job": j.job.0,
        "owner": j.owner,
        "name": j.name,
        "state": j.state.name(),
        "done": j.progress.done,
        "total": j.progress.total,
        "input_complete": j.progress.input_complete,
        "running": j.progress.running,
        "chunks": j.progress.total,
        "attempts": j.progress.attempts,
        "retries": j.progress.retries,
        "submitted_unix_ms": j.submitted_unix_ms,
        "output": j.output,
        "failure": failure,
        "blocked": j.blocked,
    })
}

/// Builds the job from a job file and/or flags, flags winning.
fn job_from(args: &RunArgs) -> anyhow::Result<JobDescription> {
    job_with_io(args, None)
}

/// [`job_from`] with the input and output replaced by `io` (for `stream`: standard input and
/// output), so neither is required.
fn job_with_io(args: &RunArgs, io: Option<(PathBuf, PathBuf)>) -> anyhow::Result<JobDescription> {
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
            .ok_or_else(|| anyhow::anyhow!("--results must be concat or files, not {results:?}"))?;
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
    if let Some(t) = &args.placement_timeout {
        job.placement_timeout = Some(wire::units::parse_duration(t).context("--placement-timeout")?);
    }
    job.validate()?;
    Ok(job)
}

/// Compiles the payload here first, so a broken module is reported before anything is sent.
fn check_payload(job: &JobDescription, local: bool) -> anyhow::Result<()> {
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
    executor.load(&kind, &bytes, &job.payload).with_context(|| format!("payload {}", job.payload.display()))?;
    Ok(())
}

fn load_identity(cli: &Cli) -> anyhow::Result<Identity> {
    let identity = Identity::load(&cli.tls_dir).context(
        "failed to load the client certificate (set --tls-dir or DISPY_TLS_DIR; \
         `dispy-dispatcher pki issue-client` makes one; `run --local N` needs none)",
    )?;
    // From 30 days before the end: say so, every time, where the user looks.
    if let Some(warning) = common::check::CertExpiry::of(&identity.cert).ok().and_then(|e| e.warning(std::time::SystemTime::now())) {
        eprintln!("dispy-submit: warning: {warning} ({})", cli.tls_dir.display());
    }
    Ok(identity)
}

async fn nodes(cli: &Cli, json: bool) -> Result<(), Failure> {
    let nodes = with_client(cli, None, async |client| Ok(client.nodes().await?)).await?;
    if json {
        let text = nodes_json(&nodes);
        println!("{text}");
    } else {
        print_node_table(&nodes);
    }
    Ok(())
}

fn print_node_table(nodes: &[NodeStatus]) {
    println!(
        "{:<20} {:<22} {:>5} {:>5} {:>21} {:>6} {:>10} {:<8} {:<8} NATIVE",
        "NODE", "ADDRESS", "SLOTS", "BUSY", "MEMORY AVAIL/TOTAL", "LOAD", "HEARTBEAT", "STATE", "CERT"
    );
    for n in nodes {
        let memory = format!(
            "{}/{}",
            wire::units::format_size(n.memory_available),
            wire::units::format_size(n.memory_total)
        );
        if n.address == "-" {
            // A drained or quarantined name with no node connected: only its state is known.
            println!("{:<20} {:<22} {:>5} {:>5} {:>21} {:>6} {:>10} {}", n.name, "-", "-", "-", "-", "-", "-", n.state);
            continue;
        }
        println!(
            "{:<20} {:<22} {:>5} {:>5} {:>21} {:>6.2} {:>8}ms {:<8} {:<8} {}",
            n.name,
            n.address,
            n.slots,
            n.busy,
            memory,
            n.load,
            n.last_heartbeat_ms,
            n.state,
            cert_left(n.cert_expires_unix),
            n.confinement
        );
    }
    if nodes.is_empty() {
        println!("(no nodes connected)");
    }
}

/// How long a node's certificate has left, for the CERT column: `364d`, `20h`, `expired`, or
/// `-` when the dispatcher does not know.
fn cert_left(expires_unix: u64) -> String {
    if expires_unix == 0 {
        return "-".to_owned();
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match expires_unix.saturating_sub(now) {
        0 => "expired".to_owned(),
        left if left >= 2 * 86_400 => format!("{}d", left / 86_400),
        left => format!("{}h", left / 3600),
    }
}

/// Renders nodes as a JSON array.
fn nodes_json(nodes: &[NodeStatus]) -> serde_json::Value {
    nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n.name,
                "address": n.address,
                "hostname": n.hostname,
                "slots": n.slots,
                "busy": n.busy,
                "in_flight": n.in_flight,
                "memory_total": n.memory_total,
                "memory_available": n.memory_available,
                "load": n.load,
                "last_heartbeat_ms": n.last_heartbeat_ms,
                "state": n.state,
                "confinement": n.confinement,
                "cert_expires_unix": n.cert_expires_unix,
            })
        })
        .collect()
}

/// A progress bar on a terminal, a plain line every few seconds otherwise.
struct ProgressDisplay {
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl ProgressDisplay {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            // The template is a constant known to be valid.
            let style = ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} chunks {per_sec} {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar, last_line: None }
    }

    fn update(&mut self, update: Update<'_>) {
        let p = match update {
            Update::Progress(p) => p,
            Update::Accepted(job) => return self.note(&format!("job {job} accepted")),
            Update::Reconnecting(reason) => return self.note(&format!("lost the dispatcher ({reason}); reconnecting")),
            Update::Waiting(reason) => return self.note(&format!("waiting: {reason}")),
            Update::ChunkSize(decision) => return self.note(&decision.to_string()),
        };
        match &self.bar {
            Some(bar) => {
                bar.set_length(p.total);
                bar.set_position(p.done);
                bar.set_message(format!("{} running, {} retries", p.running, p.retries));
            }
            None => {
                if self.last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                    self.last_line = Some(Instant::now());
                    eprintln!("progress: {}/{} chunks done, {} running, {} retries", p.done, p.total, p.running, p.retries);
                }
            }
        }
    }

    /// A line for the user, above the bar if there is one.
    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
