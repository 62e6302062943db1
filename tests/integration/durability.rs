//! Issue 5, the durable dispatcher, with real processes on 127.0.0.1: a job survives a SIGKILLed
//! and restarted dispatcher with byte-identical output and without running any chunk twice (the
//! nodes keep running theirs and the restarted dispatcher adopts them, issue 19); a finished job survives a restart until fetched (and spooled files
//! of jobs the journal does not know are deleted), and a graceful
//! stop right after a job keeps its verdict; a restart during
//! an upload whose submitter died fails the job with the reason once `input_grace` has passed
//! (a live submitter resumes it: `reconnect.rs`); a job survives
//! its submitter, and `wait` in a new process fetches its output; a 2 GiB input streams through
//! while the dispatcher's peak RSS stays bounded; a full disk fails only the job that filled it,
//! with a clear error, and earlier results stay fetchable; `status`, `jobs`, `cancel` and `wait`
//! on detached jobs, a fetched job keeping its record without its output, and expired jobs being
//! forgotten; a corrupt journal stops the
//! dispatcher with an error naming the file.
//!
//! Chunk executions are counted from the nodes' `node health` lines (the cumulative
//! `chunks_done` of each node's slot pool, logged every second here): neither daemon logs a
//! line per executed or assigned chunk.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tests::durable::{field_u64, last_event_with, last_health, log_events, BlockPattern, DurableCluster};
use tests::{
    assert_eventually, check_same_bytes, command, dir_entries, example, fixture, free_udp_port, poll_until,
    proc_status_bytes, pseudo_random_bytes, serial_output, skip, Daemon, Pki, Run, COMMAND_TIMEOUT,
};

/// Spin iterations per chunk of `count.wat`: about 0.2 s of guest time on an idle core of this
/// class of machine, so a [`SLOW_CHUNKS`]-chunk job on two one-slot nodes runs for seconds, long
/// enough to kill a process in the middle of it. Not a timing assertion: every wait polls.
const SPIN: &str = "100000000";
/// Chunks of the slow jobs.
const SLOW_CHUNKS: u64 = 40;
/// What a node logs when its session with the dispatcher ends.
const SESSION_END: &[&str] = &["lost the dispatcher", "session ended"];
/// How long to wait for nodes to notice a dead dispatcher: their `dispatcher_timeout` (2 s) plus a
/// health line, with room for a loaded machine.
const NODE_NOTICE_TIMEOUT: Duration = Duration::from_secs(60);
/// A guard for commands that move a lot of data or wait for a whole slow job.
const LONG_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an expired job may take to disappear: the purge runs every ~10 s.
const PURGE_TIMEOUT: Duration = Duration::from_secs(40);

fn slow_split() -> String {
    format!("range:0..{SLOW_CHUNKS}:1")
}

/// The serial reference output of the slow job, computed once for the tests that need it.
fn slow_reference() -> &'static [u8] {
    static REFERENCE: OnceLock<Vec<u8>> = OnceLock::new();
    REFERENCE.get_or_init(|| serial_output(&fixture("count.wat"), SPIN.as_bytes(), &slow_split(), &[]))
}

/// `dispy-submit VERB` (`submit` or `run`) of the slow job, writing to `output`.
fn slow_job(verb: &str, output: &Path) -> Vec<OsString> {
    let args = [verb, "--payload"].map(OsString::from).into_iter();
    args.chain([fixture("count.wat").into(), "--split".into(), slow_split().into(), "--args".into(), SPIN.into()])
        .chain(["--output".into(), output.into()])
        .collect()
}

/// Borrows owned arguments the way [`DurableCluster::submit`] takes them.
fn refs(args: &[OsString]) -> Vec<&dyn AsRef<OsStr>> {
    args.iter().map(|a| a as &dyn AsRef<OsStr>).collect()
}

/// `status JOB --json`'s state and done count, or `None` when the command fails.
fn job_state(cluster: &DurableCluster, job: u64) -> Option<(String, u64)> {
    let status = cluster.status_json(job).ok()?;
    Some((status["state"].as_str()?.to_owned(), status["done"].as_u64()?))
}

/// Waits until `status JOB` says `state`.
#[track_caller]
fn wait_for_state(cluster: &DurableCluster, job: u64, state: &str) {
    let mut last = None;
    assert_eventually!(
        {
            last = job_state(cluster, job);
            last.as_ref().is_some_and(|(s, _)| s == state)
        },
        "job {job} never reached state {state:?}; last (state, done): {last:?}\n{}",
        cluster.logs()
    );
}

/// For each node, the position of the last session-end event in its log.
fn session_ends(cluster: &DurableCluster) -> Vec<Option<usize>> {
    (0..cluster.node_count()).map(|i| last_event_with(&cluster.node_log(i), SESSION_END)).collect()
}

/// Waits until every node has logged a session end later than `earlier`, and returns the new
/// positions.
#[track_caller]
fn wait_for_session_ends(cluster: &DurableCluster, earlier: &[Option<usize>]) -> Vec<Option<usize>> {
    let mut now = Vec::new();
    let noticed = poll_until(NODE_NOTICE_TIMEOUT, || {
        now = session_ends(cluster);
        now.iter().zip(earlier).all(|(now, before)| now.is_some() && now > before)
    });
    assert!(noticed, "not every node noticed the dispatcher die within {NODE_NOTICE_TIMEOUT:?}\n{}", cluster.logs());
    now
}

/// For each node, `chunks_done` from its latest `node health` line after event `after[i]`, once
/// that line finds no slot busy: with no new work coming, the node's final count for everything
/// it was given before `after[i]`.
#[track_caller]
fn settled_counters(cluster: &DurableCluster, after: &[Option<usize>]) -> Vec<u64> {
    after
        .iter()
        .enumerate()
        .map(|(i, &after)| {
            let mut found = None;
            let settled = poll_until(NODE_NOTICE_TIMEOUT, || {
                found = last_health(&cluster.node_log(i), after).filter(|h| h.busy == 0);
                found.is_some()
            });
            assert!(
                settled,
                "node n{} logged no idle `node health` line after event {after:?}\n{}",
                i + 1,
                cluster.logs()
            );
            found.map_or(0, |h| h.chunks_done)
        })
        .collect()
}

/// For each node, the position of its newest log event.
fn log_ends(cluster: &DurableCluster) -> Vec<Option<usize>> {
    (0..cluster.node_count()).map(|i| log_events(&cluster.node_log(i)).len().checked_sub(1)).collect()
}

/// `chunks` and `done` of the `resuming job` line for `job` in a dispatcher log.
fn resumed(log: &str, job: u64) -> Option<(u64, u64)> {
    log_events(log)
        .iter()
        .filter(|e| e["message"] == "resuming job" && field_u64(e, "job") == Some(job))
        .find_map(|e| Some((field_u64(e, "chunks")?, field_u64(e, "done")?)))
}

/// The split of the short jobs that must survive a restart.
const SHORT_SPLIT: &str = "range:0..8:1";

/// Submits, detached, `count.wat` over [`SHORT_SPLIT`] with `spin` iterations per chunk.
fn submit_short_job(cluster: &DurableCluster, spin: &str, output: &Path) -> u64 {
    let payload = fixture("count.wat");
    cluster.submit_detached(&[&"--payload", &payload, &"--split", &SHORT_SPLIT, &"--args", &spin, &"--output", &output])
}

/// After a restart: `status` has the short job succeeded with every chunk done, and `wait`
/// fetches its output.
#[track_caller]
fn check_short_job_kept(cluster: &DurableCluster, job: u64, spin: &str, output: &Path) {
    let status = cluster.status_json(job).unwrap_or_else(|run| panic!("job {job} forgotten by the restart\n{run}"));
    assert_eq!((status["state"].as_str(), status["done"].as_u64()), (Some("succeeded"), Some(8)), "{status}");
    let wait = cluster.submit(&[&"wait", &job.to_string()]);
    wait.check_success();
    let want = serial_output(&fixture("count.wat"), spin.as_bytes(), SHORT_SPLIT, &[]);
    check_same_bytes(&read_output(output, &wait), &want, &wait);
}

#[track_caller]
fn read_output(path: &Path, run: &Run) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("no output at {}: {e}\n{run}", path.display()))
}

#[test]
fn dispatcher_killed_mid_job_resumes_without_rerunning_any_chunk() {
    let mut cluster = DurableCluster::builder().nodes(2).start();
    let output = cluster.path("resumed.bin");
    let run = cluster.submit(&refs(&slow_job("submit", &output)));
    run.check_success();
    let job: u64 = run.stdout.trim().parse().unwrap_or_else(|_| panic!("no job id\n{run}"));

    // SIGKILL the dispatcher once a few chunks are stored, well before the end.
    let mut done_before_kill = 0;
    assert_eventually!(
        {
            done_before_kill = job_state(&cluster, job).map_or(0, |(_, done)| done);
            done_before_kill >= 4
        },
        "job {job} never got 4 chunks done\n{}",
        cluster.logs()
    );
    let ends_before_kill = session_ends(&cluster);
    cluster.kill_dispatcher();
    assert!(done_before_kill < SLOW_CHUNKS, "the job finished before the kill; make its chunks slower (SPIN)");

    // Each node notices the loss within its dispatcher_timeout and keeps running what it holds.
    wait_for_session_ends(&cluster, &ends_before_kill);
    cluster.start_dispatcher();
    let log = cluster.dispatcher_log(2);
    let (chunks, done_at_restart) =
        resumed(&log, job).unwrap_or_else(|| panic!("no `resuming job` line for job {job}\n{}", cluster.logs()));
    assert_eq!(chunks, SLOW_CHUNKS, "the resumed job has the wrong number of chunks");
    assert!(
        done_at_restart >= done_before_kill,
        "`status` reported {done_before_kill} chunks done before the kill, \
         but only {done_at_restart} were resumed as done"
    );

    let wait = cluster.submit_with(&[&"wait", &job.to_string()], LONG_COMMAND_TIMEOUT);
    wait.check_success();
    check_same_bytes(&read_output(&output, &wait), slow_reference(), &wait);

    // Every chunk ran once over the whole job: the nodes kept running theirs while the
    // dispatcher was away, and the restarted dispatcher adopted what they claimed (and the
    // results they held) instead of running it again. Speculative copies are the only extra
    // runs allowed.
    let executed: u64 = settled_counters(&cluster, &log_ends(&cluster)).iter().sum();
    let logs: String = [cluster.dispatcher_log(1), cluster.dispatcher_log(2)].concat();
    let copies = log_events(&logs).iter().filter(|e| e["message"] == "speculative copy of a straggling chunk").count() as u64;
    let adopted: u64 = log_events(&cluster.dispatcher_log(2))
        .iter()
        .filter(|e| e["message"] == "node rejoined" || e["message"] == "node joined")
        .filter_map(|e| field_u64(e, "claims"))
        .sum();
    println!(
        "dispatcher killed with {done_before_kill}/{SLOW_CHUNKS} done per status, resumed with {done_at_restart} done; \
         nodes claimed {adopted} attempts; {executed} chunk runs over the job ({copies} speculative copies), \
         so {} chunks ran twice",
        executed.saturating_sub(SLOW_CHUNKS)
    );
    assert!(
        (SLOW_CHUNKS..=SLOW_CHUNKS + copies).contains(&executed),
        "the nodes ran {executed} chunks for a job of {SLOW_CHUNKS} (plus at most {copies} speculative \
         copies): the restart cost chunk runs\n{}",
        cluster.logs()
    );
}

/// Also the test of a dispatcher on one async thread (the journal writer still has its own).
#[test]
fn finished_job_survives_a_restart_until_fetched() {
    let mut cluster = DurableCluster::builder().nodes(1).dispatcher_async_threads(1).start();
    let started = log_events(&cluster.dispatcher_log(1));
    assert!(
        started.iter().any(|e| e["message"] == "async runtime started" && field_u64(e, "threads") == Some(1)),
        "the dispatcher did not start on one async thread\n{}",
        cluster.logs()
    );
    let output = cluster.path("early.bin");
    let job = submit_short_job(&cluster, "1000", &output);
    wait_for_state(&cluster, job, "succeeded");

    cluster.kill_dispatcher();
    // Files of a job the journal no longer knows, as a crash right after forgetting it leaves.
    let jobs = cluster.state_dir().join("jobs");
    let stray = jobs.join("987654");
    std::fs::create_dir_all(&stray).expect("create a stray spool directory");
    std::fs::write(stray.join("results"), b"stale").expect("write a stray spool file");
    cluster.start_dispatcher();
    assert!(!stray.exists(), "the restarted dispatcher left the stray spool {}", stray.display());
    assert!(jobs.join(job.to_string()).exists(), "the restart deleted job {job}'s spool");
    check_short_job_kept(&cluster, job, "1000", &output);
}

/// The dispatcher holds back journal commits nobody waits for (a job's results and verdict);
/// a graceful stop commits them, so a restart right after a job finished neither resumes nor
/// reruns it.
#[test]
fn graceful_stop_right_after_a_job_keeps_its_verdict() {
    let mut cluster = DurableCluster::builder().nodes(1).start();
    // About 20 ms of guest time per chunk, so the job ends well after `submit` returned.
    let spin = "10000000";
    let output = cluster.path("kept.bin");
    let job = submit_short_job(&cluster, spin, &output);
    // Watch the log closely (not `status`, whose answer waits for a commit): the stop must
    // come within the hold-back interval of the verdict.
    let succeeded = |e: &serde_json::Value| e["message"] == "job succeeded" && field_u64(e, "job") == Some(job);
    let deadline = Instant::now() + LONG_COMMAND_TIMEOUT;
    while !log_events(&cluster.dispatcher_log(1)).iter().any(succeeded) {
        assert!(Instant::now() < deadline, "job {job} never succeeded\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(2));
    }
    cluster.stop_dispatcher();

    cluster.start_dispatcher();
    assert!(resumed(&cluster.dispatcher_log(2), job).is_none(), "job {job} was resumed\n{}", cluster.logs());
    check_short_job_kept(&cluster, job, spin, &output);
}

#[test]
fn restart_during_upload_fails_the_job_clearly_once_its_submitter_does_not_resume_it() {
    // The job waits `input_grace` for its submitter to resume the upload; this one is dead.
    let mut cluster = DurableCluster::builder().nodes(1).dispatcher_args(&["--input-grace", "3s"]).start();
    let input = cluster.path("upload.bin");
    BlockPattern::new(1 << 20, 512).write_to(&input).expect("write the 512 MiB input");
    let submit = cluster.submit_command(&[
        &"submit",
        &"--payload",
        &example("checksum.wat"),
        &"--input",
        &input,
        &"--split",
        &"bytes:1MiB",
        &"--output",
        &cluster.path("upload.sums"),
    ]);
    let mut submitter = Daemon::spawn("dispy-submit submit", submit, &cluster.path("submitter.log"));

    // SIGKILL the dispatcher while the input is still arriving.
    let job = cluster.job_mid_upload(1, || format!("submitter: {}", submitter.log()));
    cluster.kill_dispatcher();
    submitter.kill();

    // The restarted dispatcher keeps the job for its submitter to resume; nobody does, so after
    // the grace it fails it, says why, and frees its spool.
    cluster.start_dispatcher();
    let status = cluster.status_json(job).unwrap_or_else(|run| panic!("job {job} forgotten by the restart\n{run}"));
    assert!(["running", "failed"].contains(&status["state"].as_str().unwrap_or_default()), "{status}");
    let mut status = status;
    assert_eventually!(
        {
            status = cluster.status_json(job).unwrap_or_default();
            status["state"] == "failed"
        },
        "job {job} outlived its input grace: {status}"
    );
    let failure = status["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("input was complete"), "the failure does not say the input was incomplete: {status}");
    // Its input and results go; only its attempt logs (none here: no chunk ran) would stay.
    let spool = cluster.state_dir().join("jobs").join(job.to_string());
    for file in ["input", "results"] {
        assert!(!spool.join(file).exists(), "the failed job's {file} in {} is still there", spool.display());
    }
    let wait = cluster.submit(&[&"wait", &job.to_string()]);
    wait.check_code(1);
    wait.check_stderr_mentions(&["input was complete"]);
}

#[test]
fn submitter_killed_mid_job_then_wait_fetches_the_output() {
    let cluster = DurableCluster::builder().nodes(2).start();
    let out_dir = cluster.path("out");
    std::fs::create_dir(&out_dir).expect("create the output directory");
    let output = out_dir.join("run.bin");
    let run = cluster.submit_command(&refs(&slow_job("run", &output)));
    let mut submitter = Daemon::spawn("dispy-submit run", run, &cluster.path("submitter.log"));

    // Kill the submitter once its input is stored and the job is under way.
    let mut job = None;
    assert_eventually!(
        {
            job = cluster.jobs_json().ok().and_then(|jobs| {
                jobs.iter()
                    .find(|j| j["input_complete"] == true && j["state"] == "running" && j["done"].as_u64() >= Some(2))
                    .and_then(|j| j["job"].as_u64())
            });
            job.is_some()
        },
        "the job never got going\nsubmitter: {}\n{}",
        submitter.log(),
        cluster.logs()
    );
    let job = job.unwrap_or_default();
    submitter.kill();
    assert!(!output.exists(), "the killed submitter left {} behind as if complete", output.display());
    let (state, _) = job_state(&cluster, job).unwrap_or_default();
    assert!(["running", "succeeded"].contains(&state.as_str()), "job {job} is {state:?} after its submitter died");

    // A new process reattaches and writes the output where the submitter asked for it.
    let wait = cluster.submit_with(&[&"wait", &job.to_string()], LONG_COMMAND_TIMEOUT);
    wait.check_success();
    check_same_bytes(&read_output(&output, &wait), slow_reference(), &wait);
    // The killed process could not remove its hidden temporary file; nothing else may be there.
    let visible: Vec<String> = dir_entries(&out_dir).into_iter().filter(|n| !n.starts_with('.')).collect();
    assert_eq!(visible, ["run.bin"], "{wait}");
}

#[test]
fn two_gib_input_streams_through_with_bounded_dispatcher_memory() {
    const BLOCK: usize = 4 << 20;
    const BLOCKS: u64 = 512;
    const RSS_LIMIT: u64 = 256 << 20;
    let cluster = DurableCluster::builder().nodes(2).start();
    let pattern = BlockPattern::new(BLOCK, BLOCKS);
    let input = cluster.path("big.bin");
    let started = Instant::now();
    pattern.write_to(&input).expect("write the 2 GiB input");
    let written = started.elapsed();
    let output = cluster.path("big.sums");
    let pid = cluster.dispatcher_pid();

    let mut sampled_rss = 0;
    let run = std::thread::scope(|scope| {
        let job = scope.spawn(|| {
            cluster.submit_with(
                &[
                    &"run",
                    &"--payload",
                    &example("checksum.wat"),
                    &"--input",
                    &input,
                    &"--split",
                    &"bytes:4MiB",
                    &"--output",
                    &output,
                ],
                LONG_COMMAND_TIMEOUT,
            )
        });
        while !job.is_finished() {
            if let Ok(rss) = proc_status_bytes(pid, "VmRSS") {
                sampled_rss = sampled_rss.max(rss);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        job.join().unwrap_or_else(|_| panic!("the submitter thread panicked"))
    });
    run.check_success();
    let hwm = proc_status_bytes(pid, "VmHWM").unwrap_or_else(|e| panic!("cannot read the dispatcher's VmHWM: {e:#}"));
    // The kernel updates VmHWM lazily, so a sample of VmRSS can exceed it by a page or two.
    let peak = hwm.max(sampled_rss);
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "2 GiB input, bytes:4MiB: dispatcher peak RSS {:.1} MiB (VmHWM {:.1} MiB, highest sampled VmRSS {:.1} MiB); \
         input written in {written:.1?}, job ran {:.1?} ({:.0} MiB/s end to end)",
        mib(peak),
        mib(hwm),
        mib(sampled_rss),
        run.elapsed,
        mib(pattern.len()) / run.elapsed.as_secs_f64()
    );
    let got = read_output(&output, &run);
    assert_eq!(got.len() as u64, BLOCKS * 8, "one 8-byte checksum per 4 MiB block\n{run}");
    check_same_bytes(&got, &pattern.checksums(), &run);
    assert!(peak < RSS_LIMIT, "the dispatcher's peak RSS was {:.1} MiB, over {} MiB", mib(peak), RSS_LIMIT >> 20);
}

#[test]
fn full_disk_fails_only_the_job_that_filled_it() {
    let mut cluster = match DurableCluster::builder().state_on_tmpfs("64m").try_start() {
        Ok(cluster) => cluster,
        Err(reason) => {
            skip("full_disk_fails_only_the_job_that_filled_it", &format!("{reason} (it needs root to mount a tmpfs)"));
            return;
        }
    };
    let checksum = example("checksum.wat");
    // An earlier job, finished and not fetched: its results wait in the spool on the tmpfs.
    let small = cluster.path("small.bin");
    std::fs::write(&small, pseudo_random_bytes(256 << 10, 11)).expect("write the small input");
    let early_output = cluster.path("early.sums");
    let early = cluster.submit_detached(&[
        &"--payload",
        &checksum,
        &"--input",
        &small,
        &"--split",
        &"bytes:16KiB",
        &"--output",
        &early_output,
    ]);
    wait_for_state(&cluster, early, "succeeded");

    // A job whose input cannot fit in the state directory.
    let big = cluster.path("big.bin");
    BlockPattern::new(1 << 20, 96).write_to(&big).expect("write the 96 MiB input");
    let full = cluster.submit(&[
        &"submit",
        &"--payload",
        &checksum,
        &"--input",
        &big,
        &"--split",
        &"bytes:1MiB",
        &"--output",
        &cluster.path("big.sums"),
    ]);
    assert!(!full.timed_out && full.code.is_some_and(|c| c != 0), "submitting into a full disk must fail\n{full}");
    full.check_stderr_mentions(&["no space left on device"]);

    // The dispatcher is still up and serving.
    cluster.check_all_alive();
    cluster.wait_for_nodes(&["n1", "n2"]);
    let jobs = cluster.jobs_json().unwrap_or_else(|run| panic!("`jobs` failed after the disk filled\n{run}"));
    let failed: Vec<&serde_json::Value> = jobs.iter().filter(|j| j["job"].as_u64() != Some(early)).collect();
    assert!(
        failed.iter().all(|j| j["state"] == "failed"),
        "the job that filled the disk must be failed, not left running: {failed:?}"
    );

    // The earlier job's results are intact.
    let fetched = cluster.path("early-fetched.sums");
    let wait = cluster.submit(&[&"wait", &early.to_string(), &"--output", &fetched]);
    wait.check_success();
    let want = serial_output(&checksum, b"", "bytes:16KiB", std::slice::from_ref(&small));
    check_same_bytes(&read_output(&fetched, &wait), &want, &wait);

    // The failed job's spooled input is gone, so the next job fits.
    let after = cluster.path("after.sums");
    let run = cluster.submit(&[
        &"run",
        &"--payload",
        &checksum,
        &"--input",
        &small,
        &"--split",
        &"bytes:16KiB",
        &"--output",
        &after,
    ]);
    run.check_success();
    check_same_bytes(&read_output(&after, &run), &want, &run);
}

#[test]
fn detached_job_status_jobs_cancel_and_forgetting() {
    let cluster = DurableCluster::builder().nodes(1).start();
    let payload = fixture("count.wat");

    // A long job, detached: `status` and `jobs` show it.
    let long_output = cluster.path("long.bin");
    let long = cluster.submit_detached(&[
        &"--payload",
        &payload,
        &"--split",
        &"range:0..500:1",
        &"--args",
        &SPIN,
        &"--output",
        &long_output,
    ]);
    let status = cluster.status_json(long).unwrap_or_else(|run| panic!("`status` failed\n{run}"));
    assert_eq!(status["job"].as_u64(), Some(long), "{status}");
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["total"].as_u64(), Some(500), "{status}");
    assert_eq!(status["input_complete"], true, "{status}");
    assert_eq!(status["output"].as_str().map(Path::new), Some(long_output.as_path()), "{status}");
    let jobs = cluster.jobs_json().unwrap_or_else(|run| panic!("`jobs --json` failed\n{run}"));
    assert!(
        jobs.iter().any(|j| j["job"].as_u64() == Some(long) && j["state"] == "running"),
        "`jobs --json` does not list job {long} as running: {jobs:?}"
    );
    for table in [cluster.submit(&[&"status", &long.to_string()]), cluster.submit(&[&"jobs"])] {
        table.check_success();
        let row = table.stdout.lines().find(|l| l.split_whitespace().next() == Some(&long.to_string()));
        assert!(row.is_some_and(|r| r.contains("running")), "no running row for job {long}\n{table}");
    }

    // Once the node is busy with it, cancel it: the node goes idle and `wait` reports it.
    let busy = || cluster.nodes_json().ok().and_then(|nodes| nodes.first().and_then(|n| n["busy"].as_u64()));
    assert_eventually!(busy() == Some(1), "the node never got busy with job {long}");
    let cancel = cluster.submit(&[&"cancel", &long.to_string()]);
    cancel.check_success();
    assert!(cancel.stdout.contains("cancelled"), "{cancel}");
    assert_eq!(job_state(&cluster, long).map(|(s, _)| s).as_deref(), Some("cancelled"));
    let jobs = cluster.jobs_json().unwrap_or_else(|run| panic!("`jobs --json` failed\n{run}"));
    assert!(
        jobs.iter().any(|j| j["job"].as_u64() == Some(long) && j["state"] == "cancelled"),
        "`jobs --json` does not list job {long} as cancelled: {jobs:?}"
    );
    assert_eventually!(busy() == Some(0), "the node still runs chunks of cancelled job {long}");
    let wait = cluster.submit(&[&"wait", &long.to_string()]);
    wait.check_code(1);
    wait.check_stderr_mentions(&["cancelled"]);
    assert!(!long_output.exists(), "a cancelled job wrote output\n{wait}");

    // An unknown job is a clear one-line error.
    let unknown = cluster.submit(&[&"wait", &"424242"]);
    assert!(!unknown.timed_out && unknown.code.is_some_and(|c| c != 0), "{unknown}");
    unknown.check_one_line_error();
    unknown.check_stderr_mentions(&["424242", "no job"]);

    // Once `wait` has fetched a finished job's output, the output is gone from the dispatcher;
    // the job's record (and its logs) stay until it expires.
    let short_output = cluster.path("short.bin");
    let split = "range:0..6:1";
    let short = cluster.submit_detached(&[
        &"--payload",
        &payload,
        &"--split",
        &split,
        &"--args",
        &"1000",
        &"--output",
        &short_output,
    ]);
    wait_for_state(&cluster, short, "succeeded");
    let wait = cluster.submit(&[&"wait", &short.to_string()]);
    wait.check_success();
    check_same_bytes(&read_output(&short_output, &wait), &serial_output(&payload, b"1000", split, &[]), &wait);
    let mut again = None;
    assert_eventually!(
        {
            let run = cluster.submit(&[&"wait", &short.to_string()]);
            let fetched = run.code == Some(2) && run.stderr.contains("output was already fetched");
            again = Some(run);
            fetched
        },
        "job {short}'s output can still be fetched after `wait` fetched it: {again:?}"
    );
    let status = cluster.status_json(short).unwrap_or_else(|run| panic!("job {short} forgotten before it expired\n{run}"));
    assert_eq!(status["state"], "succeeded");
    let spool = cluster.state_dir().join("jobs").join(short.to_string());
    for file in ["input", "results"] {
        assert!(!spool.join(file).exists(), "the fetched job's {file} in {} is still there", spool.display());
    }
}

#[test]
fn unfetched_finished_job_expires_after_retention() {
    let cluster = DurableCluster::builder().nodes(1).retention("1s").start();
    let split = "range:0..4:1";
    let job = cluster.submit_detached(&[
        &"--payload",
        &fixture("count.wat"),
        &"--split",
        &split,
        &"--args",
        &"1000",
        &"--output",
        &cluster.path("expiring.bin"),
    ]);
    let spool = cluster.state_dir().join("jobs").join(job.to_string());
    let mut seen_succeeded = false;
    let mut last = None;
    let forgotten = poll_until(PURGE_TIMEOUT, || match cluster.status_json(job) {
        Ok(status) => {
            seen_succeeded |= status["state"] == "succeeded";
            last = Some(status.to_string());
            false
        }
        Err(run) => {
            last = Some(run.to_string());
            run.stderr.contains("no job")
        }
    });
    assert!(forgotten, "job {job} was not forgotten within {PURGE_TIMEOUT:?} of a 1 s retention; last: {last:?}");
    assert!(seen_succeeded, "job {job} disappeared without being seen to succeed");
    assert!(!spool.exists(), "the expired job's spool {} is still there", spool.display());
    let wait = cluster.submit(&[&"wait", &job.to_string()]);
    assert!(wait.code.is_some_and(|c| c != 0), "an expired job can still be fetched\n{wait}");
    wait.check_stderr_mentions(&["no job"]);
}

#[test]
fn corrupt_journal_stops_the_dispatcher_with_a_clear_error() {
    let temp = tempfile::Builder::new().prefix("dispy-durable-").tempdir().expect("create a temporary directory");
    let pki = Pki::init(&temp.path().join("ca"));
    let state = temp.path().join("state");
    std::fs::create_dir(&state).expect("create the state directory");
    let journal = state.join("journal.redb");
    let garbage = pseudo_random_bytes(64 << 10, 5);
    std::fs::write(&journal, &garbage).expect("write the garbage journal");
    let config = temp.path().join("empty.toml");
    std::fs::write(&config, "").expect("write an empty config");

    let mut dispatcher = command("dispy-dispatcher");
    dispatcher
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_udp_port()))
        .arg("--tls-dir")
        .arg(pki.dispatcher_dir())
        .arg("--state-dir")
        .arg(&state);
    let run = Run::capture(dispatcher, COMMAND_TIMEOUT);
    assert!(!run.timed_out && run.code.is_some_and(|c| c != 0), "a corrupt journal must stop the dispatcher\n{run}");
    run.check_stderr_mentions(&[&journal.display().to_string()]);
    assert_eq!(std::fs::read(&journal).ok(), Some(garbage), "the dispatcher changed the corrupt journal\n{run}");
}
