//! The commands that look at the cluster and change it: `status`, `cancel`, `jobs`, `nodes`,
//! `drain`, `undrain`, `logs` and `explain`, as text or JSON.

use std::time::Duration;

use wire::proto::{JobState, JobSummary, NodeStatus};

use crate::{with_client, Cli, Failure, JobRef};

pub(crate) async fn status(cli: &Cli, job: JobRef, cancel: bool) -> Result<(), Failure> {
    let summary = with_client(cli, None, async |client| {
        let job = job.resolve(client).await?;
        Ok(if cancel { client.cancel(job).await? } else { client.status(job).await? })
    })
    .await?;
    if cli.json {
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

pub(crate) async fn logs(cli: &Cli, job: JobRef, chunk: Option<u64>, follow: bool) -> Result<(), Failure> {
    with_client(cli, None, async |client| {
        let job = job.resolve(client).await?;
        Ok(client::report::print_logs(client, job, chunk, follow, cli.json).await?)
    })
    .await
}

pub(crate) async fn explain(cli: &Cli, job: JobRef) -> Result<(), Failure> {
    let explained = with_client(cli, None, async |client| {
        let job = job.resolve(client).await?;
        Ok(client.explain(job).await?)
    })
    .await?;
    client::report::print_explanation(&explained, cli.json);
    Ok(())
}

pub(crate) async fn jobs(cli: &Cli) -> Result<(), Failure> {
    let jobs = with_client(cli, None, async |client| Ok(client.jobs().await?)).await?;
    if cli.json {
        println!("{}", serde_json::Value::Array(jobs.iter().map(job_json).collect()));
    } else {
        print_job_table(&jobs);
    }
    Ok(())
}

pub(crate) async fn drain(cli: &Cli, node: &str, drain: bool, wait: bool) -> Result<(), Failure> {
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
    show_nodes(cli, &nodes);
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

pub(crate) async fn nodes(cli: &Cli) -> Result<(), Failure> {
    let nodes = with_client(cli, None, async |client| Ok(client.nodes().await?)).await?;
    show_nodes(cli, &nodes);
    Ok(())
}

/// The nodes as a table, or as a JSON array with `--json`.
fn show_nodes(cli: &Cli, nodes: &[NodeStatus]) {
    if cli.json {
        println!("{}", nodes_json(nodes));
    } else {
        print_node_table(nodes);
    }
}

fn print_node_table(nodes: &[NodeStatus]) {
    println!(
        "{:<20} {:<22} {:>5} {:>5} {:>5} {:>21} {:>6} {:>10} {:<8} {:<6} {:<14} {:<8} NATIVE",
        "NODE", "ADDRESS", "CORES", "SLOTS", "BUSY", "MEMORY AVAIL/TOTAL", "LOAD", "HEARTBEAT", "STATE", "CERT", "PLATFORM", "VERSION"
    );
    for n in nodes {
        if n.address == "-" {
            // A drained or quarantined name with no node connected: only its state is known.
            println!("{:<20} {:<22} {:>5} {:>5} {:>5} {:>21} {:>6} {:>10} {}", n.name, "-", "-", "-", "-", "-", "-", "-", n.state);
            continue;
        }
        let memory = format!(
            "{}/{}",
            wire::units::format_size(n.memory_available),
            wire::units::format_size(n.memory_total)
        );
        println!(
            "{:<20} {:<22} {:>5} {:>5} {:>5} {:>21} {:>6.2} {:>8}ms {:<8} {:<6} {:<14} {:<8} {}",
            n.name,
            n.address,
            n.cores,
            n.slots,
            n.busy,
            memory,
            n.load,
            n.last_heartbeat_ms,
            n.state,
            cert_left(n.cert_expires_unix),
            format!("{}/{}", n.os, n.arch),
            n.version,
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
                "os": n.os,
                "arch": n.arch,
                "cores": n.cores,
                "version": n.version,
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
                "object_store_buckets": n.object_store_buckets,
                "shared_input_roots": n.shared_input_roots,
                "host_id": n.host_id,
            })
        })
        .collect()
}
