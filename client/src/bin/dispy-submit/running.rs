//! The commands that run jobs and write their output: `run`, `submit`, `stream` and `wait`, with
//! the progress display they share.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use client::in_place::InputRoute;
use client::job::JobDescription;
use client::local::LocalCluster;
use client::split::SplitRule;
use client::{Client, ClientError, JobReport, Update};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;
use wire::proto::{JobId, JobProgress};

use crate::job_args::{check_payload, job_from, job_with_io, RunArgs};
use crate::{with_client, Cli, Failure, JobRef};

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

/// Starts the embedded cluster `--local N` asks for, if any.
/// Its nodes may read the job's object-store buckets, if it has any.
async fn start_local(local: Option<u32>, buckets: Vec<String>) -> Result<Option<LocalCluster>, Failure> {
    match local {
        Some(0) => Err(Failure::Usage(anyhow::anyhow!("--local needs at least 1 node"))),
        Some(n) => Ok(Some(LocalCluster::start_reading(n, buckets).await.map_err(Failure::Other)?)),
        None => Ok(None),
    }
}

pub(crate) async fn run(cli: &Cli, args: &RunArgs) -> Result<(), Failure> {
    let mut job = job_from(args).map_err(Failure::Usage)?;
    check_payload(&job, args.local.is_some()).map_err(Failure::Usage)?;
    let local = start_local(args.local, job.object_buckets()).await?;
    let is_local = local.is_some();
    let result = with_client(cli, local.as_ref(), async |client| {
        tell_readers(client, &job).await?;
        let route = route_input(client, &mut job, is_local).await?;
        let mut display = ProgressDisplay::new();
        let report = interruptible(client.run(&job, |p| display.update(p)), INTERRUPTED_RUN).await;
        display.finish();
        Ok((report?, route))
    })
    .await;
    if let Some(cluster) = local {
        cluster.shutdown().await;
    }
    let (report, route) = result?;
    let p = &report.progress;
    // Scripts parse this line as it always was; `--json` carries the attempts too.
    eprintln!("job {} done: {} chunks, {} retries; output written to {}", report.job, p.done, p.retries, report.output.display());
    if cli.json {
        let mut done = done_json(&report);
        done["input"] = input_json(route.as_ref());
        println!("{done}");
    }
    Ok(())
}

pub(crate) async fn submit(cli: &Cli, args: &RunArgs) -> Result<(), Failure> {
    if args.local.is_some() {
        return Err(Failure::Usage(anyhow::anyhow!("--local works with `run` only: an embedded cluster ends with the command")));
    }
    let mut job = job_from(args).map_err(Failure::Usage)?;
    check_payload(&job, false).map_err(Failure::Usage)?;
    let (id, route) = with_client(cli, None, async |client| {
        tell_readers(client, &job).await?;
        let route = route_input(client, &mut job, false).await?;
        Ok((client.submit(&job).await?, route))
    })
    .await?;
    if cli.json {
        println!("{}", serde_json::json!({ "job": id.0, "input": input_json(route.as_ref()) }));
    } else {
        println!("{id}");
    }
    Ok(())
}

/// For object input, says which connected nodes can read it, before any chunk runs (the client
/// refuses a job no connected node can read).
async fn tell_readers(client: &mut Client, job: &JobDescription) -> Result<(), ClientError> {
    if job.has_object_input() {
        if let Some(readers) = client::readers::object_readers(job, &client.nodes().await?) {
            eprintln!("{readers}");
        }
    }
    Ok(())
}

/// Decides whether the nodes read the job's input files in place or the bytes are shipped
/// (`client::in_place`), and says which on one line.
async fn route_input(client: &mut Client, job: &mut JobDescription, local: bool) -> Result<Option<InputRoute>, ClientError> {
    let route = if local { LocalCluster::read_input_in_place(job) } else { client.route_input(job).await? };
    if let Some(route) = &route {
        eprintln!("{route}");
    }
    Ok(route)
}

/// The `input` field of `run --json` and `submit --json`: `"in place"`, `"shipped"`, or null for
/// a job without input files (or with object input, which the nodes always read).
fn input_json(route: Option<&InputRoute>) -> serde_json::Value {
    route.map_or(serde_json::Value::Null, |route| route.name().into())
}

/// `stream`: standard input, cut by the job's rule as it arrives, through a [`JobStream`];
/// results to standard output in chunk order as they come back.
pub(crate) async fn stream(cli: &Cli, args: &RunArgs) -> Result<(), Failure> {
    let usage = |message: &str| Failure::Usage(anyhow::anyhow!("stream: {message}"));
    let reduce = "it hands back each chunk's result as it arrives and cannot reduce them (--results reduce); use run or submit";
    if args.results.as_deref() == Some("reduce") {
        return Err(usage(reduce));
    }
    if !args.input.is_empty() || args.output.is_some() || args.results.is_some() {
        return Err(usage("it reads standard input and writes standard output; drop --input, --output and --results"));
    }
    if args.shared_input {
        return Err(usage("--shared-input needs files every node can read, not standard input"));
    }
    let job = job_with_io(args, Some(("/dev/stdin".into(), "/dev/stdout".into()))).map_err(Failure::Usage)?;
    if job.results == wire::proto::ResultMode::Reduce {
        return Err(usage(reduce));
    }
    if !matches!(job.split, SplitRule::Bytes(_) | SplitRule::Lines(_)) {
        return Err(usage(&format!("split rule {} cannot cut a stream; use bytes:SIZE or lines:N", job.split)));
    }
    check_payload(&job, args.local.is_some()).map_err(Failure::Usage)?;
    let local = start_local(args.local, Vec::new()).await?;
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
    if cli.json {
        // Standard output carries the results.
        let object = serde_json::json!({
            "job": id.0,
            "state": "done",
            "chunks": progress.total,
            "attempts": progress.attempts,
            "retries": progress.retries,
        });
        eprintln!("{object}");
    } else {
        eprintln!("job {id} done: {} chunks, {} retries", progress.done, progress.retries);
    }
    Ok(())
}

/// Feeds the job's input (standard input), cut by its rule as it arrives, to a new job and writes
/// its results to standard output, each as soon as it and those before it are back.
async fn pipe_through(client: &mut Client, job: &JobDescription) -> Result<(JobId, JobProgress), ClientError> {
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

pub(crate) async fn wait(cli: &Cli, job: JobRef, output: Option<&Path>) -> Result<(), Failure> {
    let report = with_client(cli, None, async |client| {
        let job = job.resolve(client).await?;
        let summary = client.status(job).await?;
        let output = output.map_or_else(|| PathBuf::from(&summary.output), Path::to_path_buf);
        let mut display = ProgressDisplay::new();
        let report = interruptible(client.wait(job, &output, summary.results, |p| display.update(p)), INTERRUPTED_RUN).await;
        display.finish();
        report
    })
    .await?;
    eprintln!("job {} done: {} chunks; output written to {}", report.job, report.progress.done, report.output.display());
    if cli.json {
        println!("{}", done_json(&report));
    }
    Ok(())
}

/// The summary object `run --json` and `wait --json` end with.
fn done_json(report: &JobReport) -> serde_json::Value {
    let p = &report.progress;
    serde_json::json!({
        "job": report.job.0,
        "state": "done",
        "chunks": p.total,
        "attempts": p.attempts,
        "retries": p.retries,
        "output": report.output.display().to_string(),
    })
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
