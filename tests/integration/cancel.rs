//! Cancel means stop, on real nodes: cancelling a job stops its running chunk and frees the slot
//! for the next job at once. (A single cancelled attempt, such as the losing copy of a
//! speculated chunk, is stopped the same way; `node::pool`'s tests show that one.)

use std::time::Duration;

use tests::{fixture, poll_until, Cluster, Job};

/// How long a freed slot may take to show in `nodes` (heartbeats come every second), with room
/// for a loaded machine; far less than the chunks' own minute of spinning.
const FREED_WITHIN: Duration = Duration::from_secs(10);

/// Slots busy on node `name`, as its last heartbeat said.
fn busy(cluster: &Cluster, name: &str) -> Option<u64> {
    let nodes = cluster.nodes_json().ok()?;
    nodes.iter().find(|n| n["name"] == name).and_then(|n| n["busy"].as_u64())
}

#[test]
fn cancelling_a_job_stops_its_running_chunk_and_frees_the_slot() {
    let cluster = Cluster::builder().nodes(1).slots(1).start();
    let output = cluster.output_dir("cancelled").join("out.bin");
    // About a minute of spinning in one chunk.
    let job = Job::new(&fixture("count.wat"), "range:0..1:1", &output).payload_args("300000000000");
    let mut args = job.to_args();
    args[0] = "submit".into();
    let submitted = cluster.submit(&args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect::<Vec<_>>());
    submitted.check_success();
    let id = submitted.stdout.trim().to_owned();
    assert!(poll_until(FREED_WITHIN, || busy(&cluster, "n1") == Some(1)), "the chunk never started\n{}", cluster.logs());
    cluster.submit(&[&"cancel", &id]).check_success();
    assert!(
        poll_until(FREED_WITHIN, || busy(&cluster, "n1") == Some(0)),
        "the cancelled chunk kept its slot\n{}",
        cluster.logs()
    );
    let quick = cluster.output_dir("next").join("out.bin");
    cluster.run_job(&Job::new(&fixture("count.wat"), "range:0..2:1", &quick).payload_args("1")).check_success();
}
