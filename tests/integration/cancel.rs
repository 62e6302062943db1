//! Cancel means stop, on real nodes: cancelling a job stops its running chunk and frees the slot
//! for the next job at once; when a straggling chunk's speculative copy wins, the losing original
//! is stopped on its node (a native worker killed), and that node runs the chunk queued behind it
//! at once instead of spinning until the original ends.

use std::time::Duration;

use tests::{fixture, native_fixture, poll_until, Cluster, Job};

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

/// Lines 0 and 1 straggle on n1 (a minute) and take 0.3 s on n2; the rest take 0.3 s anywhere.
/// One of the two lands on n1, with a fast line queued behind it there. At the job's tail the
/// straggler's copy wins on n2 and n1's original must be stopped: the fast line queued behind it
/// then runs on n1 at once. Were the original left to spin, that line would wait behind it until
/// it too looked like a straggler, and its copy on n2 would win: no line would come from n1.
#[test]
fn the_losing_original_of_a_speculated_straggler_is_stopped_and_its_node_runs_the_next_chunk() {
    let cluster = Cluster::builder().nodes(2).slots(1).start();
    let test = "the_losing_original_of_a_speculated_straggler_is_stopped_and_its_node_runs_the_next_chunk";
    let Some(library) = native_fixture(test, "straggler", cluster.dir()) else { return };
    let lines: Vec<String> = (0..2).map(|i| format!("!slow {i}")).chain((0..30).map(|i| format!("fast {i}"))).collect();
    let input = cluster.dir().join("lines.txt");
    std::fs::write(&input, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write the input");
    let output = cluster.output_dir("speculated").join("out.txt");
    let run = cluster.run_job(&Job::new(&library, "lines:1", &output).input(&input).payload_args("n1"));
    run.check_success();
    let text = std::fs::read_to_string(&output).expect("output");
    let tagged: Vec<(&str, &str)> = text.lines().filter_map(|l| l.rsplit_once(" @")).collect();
    let sent: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(tagged.iter().map(|(line, _)| *line).collect::<Vec<_>>(), sent, "lines lost or out of order\n{run}");
    let copies = cluster.dispatcher_log().matches("speculative copy of a straggling chunk").count();
    assert!(copies >= 1, "no straggler was copied, so nothing was tested\n{run}\n{}", cluster.logs());
    let on_n1 = tagged.iter().filter(|(_, node)| *node == "n1").count();
    assert!(
        on_n1 >= 1,
        "no line came from n1: it was not freed when its straggling original lost\n{text}\n{run}\n{}",
        cluster.logs()
    );
    assert!(
        poll_until(FREED_WITHIN, || busy(&cluster, "n1") == Some(0)),
        "n1 still runs a chunk whose copy won on n2\n{run}\n{}",
        cluster.logs()
    );
}
