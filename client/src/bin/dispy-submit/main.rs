//! `dispy-submit`: the user's command line. `run` submits a job (from a job file or flags) and
//! writes its output; `--local N` first starts an embedded cluster. `stream` runs a job over
//! standard input as it arrives. `nodes` lists the cluster. Everything goes through
//! [`client::Client`]; this file holds the command tree, the exit codes and the connection, the
//! modules the commands.

mod job_args;
mod listing;
mod running;

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use client::local::LocalCluster;
use client::{Client, ClientError};
use common::pki::Identity;
use wire::proto::JobId;

use crate::job_args::RunArgs;

/// Exit code when a job ran and failed.
const EXIT_JOB_FAILED: u8 = 1;
/// Exit code for connection and I/O problems, and refusals by the dispatcher.
const EXIT_ERROR: u8 = 2;
/// Exit code for unusable arguments or job files (`EX_USAGE` of sysexits.h).
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
    /// Print the answer as JSON on standard output (one value; `logs` one object per line;
    /// `stream` prints its summary on standard error, since standard output carries the
    /// results). Errors become `{"error": …, "exit": CODE}`.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job and write its output; exits 0 only if every chunk succeeded.
    Run(Box<RunArgs>),
    /// Submit a job, upload its input, print its id and return; `wait` fetches the output later.
    Submit(Box<RunArgs>),
    /// Run a job over standard input as it arrives (split rule bytes:SIZE or lines:N): each
    /// chunk is sent as soon as it is cut, each result written to standard output as soon as it
    /// and those before it are back. A job file's input and output are not used.
    Stream(Box<RunArgs>),
    /// Wait for a job (reattach) and write its output; exits 0 only if every chunk succeeded.
    Wait {
        /// The job id, or `last` for your newest job.
        job: JobRef,
        /// Where to write the output (default: where the submitter asked for it).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Show one job.
    Status {
        /// The job id, or `last` for your newest job.
        job: JobRef,
    },
    /// Cancel a job: its chunks stop on the nodes and no output is written.
    Cancel {
        /// The job id, or `last` for your newest job.
        job: JobRef,
    },
    /// List your jobs the dispatcher remembers (with an operator's certificate: everyone's, with
    /// their owners).
    Jobs,
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
    Nodes,
    /// Print a job's attempt logs (dispy.log, WASI stderr, native stdout and stderr), each line
    /// as `CHUNK: LINE` (with `--json`, one object per attempt log, one per line).
    Logs {
        /// The job id, or `last` for your newest job.
        job: JobRef,
        /// Only this chunk's attempts.
        #[arg(long)]
        chunk: Option<u64>,
        /// Keep printing new logs until the job ends.
        #[arg(long)]
        follow: bool,
    },
    /// Why a job waits (each node's reason) and every failed attempt of its chunks.
    Explain {
        /// The job id, or `last` for your newest job.
        job: JobRef,
    },
    /// Print a shell completion script, e.g. `dispy-submit completions bash >
    /// /etc/bash_completion.d/dispy-submit`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `dispy-submit manpage > dispy-submit.1`.
    Manpage,
}

/// A job as the commands take it: its id, or `last`, the newest job this certificate submitted.
#[derive(Debug, Clone, Copy)]
enum JobRef {
    Id(JobId),
    Last,
}

impl FromStr for JobRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "last" => Ok(Self::Last),
            _ => text.parse().map(|id| Self::Id(JobId(id))).map_err(|_| format!("{text:?} is neither a job id nor `last`")),
        }
    }
}

impl JobRef {
    /// The job this names, asking the dispatcher which is the newest for `last`.
    async fn resolve(self, client: &mut Client) -> Result<JobId, ClientError> {
        match self {
            Self::Id(id) => Ok(id),
            Self::Last => client.last_job().await,
        }
    }
}

fn main() -> ExitCode {
    // A native payload worker is this binary started with a marker argument: serve and exit.
    node::exec::native::maybe_run_worker();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    common::telemetry::init(common::telemetry::LogFormat::Text, "warn");
    // One thread: a client waits on one connection, and an answer read there is handled there.
    let runtime = match common::daemon::runtime(Some(1)) {
        Ok(runtime) => runtime,
        Err(e) => return fail(&cli, EXIT_ERROR, &format!("failed to start the async runtime: {e}"), None),
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run(args) => running::run(&cli, args).await,
            Command::Submit(args) => running::submit(&cli, args).await,
            Command::Stream(args) => running::stream(&cli, args).await,
            Command::Wait { job, output } => running::wait(&cli, *job, output.as_deref()).await,
            Command::Status { job } => listing::status(&cli, *job, false).await,
            Command::Cancel { job } => listing::status(&cli, *job, true).await,
            Command::Jobs => listing::jobs(&cli).await,
            Command::Drain { node, wait } => listing::drain(&cli, node, true, *wait).await,
            Command::Undrain { node } => listing::drain(&cli, node, false, false).await,
            Command::Nodes => listing::nodes(&cli).await,
            Command::Logs { job, chunk, follow } => listing::logs(&cli, *job, *chunk, *follow).await,
            Command::Explain { job } => listing::explain(&cli, *job).await,
            Command::Completions { shell } => {
                clap_complete::generate(*shell, &mut Cli::command(), "dispy-submit", &mut std::io::stdout());
                Ok(())
            }
            Command::Manpage => clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| Failure::Other(anyhow::anyhow!("failed to write the manual page: {e}"))),
        }
    });
    // An input reader may still be blocked in a read of standard input; nothing waits for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => fail(&cli, EXIT_USAGE, &explain(&e), None),
        Err(Failure::Job(e)) => {
            // `run --json` and `wait --json` end with one summary object, failed or not.
            let job = match &e {
                ClientError::JobFailed { job, failure } => {
                    // The last lines its failed chunks logged, under the one-line verdict.
                    client::report::failure_tails(failure).iter().for_each(|line| eprintln!("{line}"));
                    Some(job.0)
                }
                _ => None,
            };
            fail(&cli, EXIT_JOB_FAILED, &e.to_string(), job)
        }
        Err(Failure::Other(e)) => fail(&cli, EXIT_ERROR, &explain(&e), None),
    }
}

/// Clap's verdict on the arguments: help and `--version` exit 0, anything else is a usage error
/// (64, not clap's 2, which means a connection problem here).
fn usage_error(e: &clap::Error) -> ExitCode {
    // Printing to a closed pipe is not worth another error.
    let _ = e.print();
    if !e.use_stderr() {
        return ExitCode::SUCCESS;
    }
    if std::env::args().any(|a| a == "--json") {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
        println!("{}", serde_json::json!({ "error": first, "exit": EXIT_USAGE }));
    }
    ExitCode::from(EXIT_USAGE)
}

/// Says why a command failed, on standard error and, with `--json`, as an object on standard
/// output (with the job and `"state": "failed"` for a failed job), and exits with `code`.
fn fail(cli: &Cli, code: u8, message: &str, failed_job: Option<u64>) -> ExitCode {
    eprintln!("dispy-submit: {message}");
    if cli.json {
        let mut object = serde_json::json!({ "error": message, "exit": code });
        if let Some(job) = failed_job {
            object["job"] = job.into();
            object["state"] = "failed".into();
        }
        println!("{object}");
    }
    ExitCode::from(code)
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
            ClientError::Payload { .. }
            | ClientError::BadPayload { .. }
            | ClientError::Input(_)
            | ClientError::ReduceStream => Failure::Usage(e.into()),
            other => Failure::Other(other.into()),
        }
    }
}

/// `--reconnect-timeout`: a duration such as `30s` or `2m`.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    wire::units::parse_duration(text).map_err(|e| e.to_string())
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
