//! The workloads W1–W4 of the brief's performance targets, run against a [`Cluster`] of real
//! processes with the in-process client API ([`client::Client`]).
//!
//! Every workload runs once untimed (the warm-up: the dispatcher receives the payload, the nodes
//! compile it, the page cache holds the input), then `runs` timed times. Every run's output is
//! compared with the reference computed once by [`run_serial`] in this process; a mismatch fails
//! the benchmark. A job's time (W1, W3, W4) is the client-side wall time of `Client::connect`
//! plus `Client::run`, which is what a program using the API waits for: splitting the input, the
//! upload, scheduling, the nodes' work, the results coming back in order, the output file renamed
//! into place and the job released. The `Client::close` that follows is not timed (W2 reports it
//! on its own).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use client::job::JobDescription;
use client::split::auto::Decision;
use client::split::{AutoSplit, SplitRule};
use client::Client;
use node::exec::wasm::{run_serial, WasmEngine};

use crate::cluster::{workspace_root, Cluster, Daemon};
use crate::echo::Echo;
use crate::probe::Probe;
use crate::procfs::{cpu_time, CpuSplit, UdpCounters};
use crate::report::Row;
use crate::stats::{percentile, Summary};

mod submit;

/// Which workloads to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Workload {
    /// 20,000 chunks of 16 bytes: chunks per second.
    W1,
    /// 500 sequential one-chunk jobs: latency percentiles.
    W2,
    /// 512 MiB in 1 MiB chunks through a checksum: MB/s.
    W3,
    /// Mandelbrot 1024x1024 in 64 chunks: parallel efficiency against one serial process.
    W4,
}

impl Workload {
    /// The workload's name in the report.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
        }
    }
}

/// Sizes of the workloads; `--quick` shrinks them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// W1 chunks of 16 bytes.
    pub(crate) w1_chunks: u64,
    /// W2 sequential jobs.
    pub(crate) w2_jobs: usize,
    /// W3 input bytes.
    pub(crate) w3_bytes: u64,
}

impl Sizes {
    /// The brief's sizes.
    pub(crate) const FULL: Sizes = Sizes { w1_chunks: 20_000, w2_jobs: 500, w3_bytes: 512 << 20 };
    /// A smoke-test size for `--quick`.
    pub(crate) const QUICK: Sizes = Sizes { w1_chunks: 2_000, w2_jobs: 50, w3_bytes: 32 << 20 };
}

/// W1 and W2 chunk size.
const TINY_CHUNK: u64 = 16;
/// Clients closed to time `Client::close` in W2.
const CLOSE_SAMPLES: usize = 20;
/// W3 chunk size.
pub(crate) const W3_CHUNK: u64 = 1 << 20;
/// W4 image: "WIDTH HEIGHT MAX_ITER" and rows per chunk.
const W4_ARGS: &str = "1024 1024 256";
const W4_HEIGHT: u64 = 1024;
const W4_ROWS: u64 = 16;

/// Shared state of a workload session.
pub(crate) struct Bench<'a> {
    /// The running cluster.
    pub(crate) cluster: &'a mut Cluster,
    /// Scratch directory for inputs and outputs.
    pub(crate) dir: &'a Path,
    /// The engine for reference runs.
    pub(crate) engine: WasmEngine,
    /// Timed runs per workload.
    pub(crate) runs: usize,
    /// Workload sizes.
    pub(crate) sizes: Sizes,
    /// W3 runs only its bytes-shipped jobs (`--w3-shipped-only`).
    pub(crate) w3_shipped_only: bool,
}

/// Client-side timing of one job.
#[derive(Debug, Clone, Copy)]
struct JobTiming {
    /// `Client::connect`: UDP socket, QUIC and TLS handshake, `Hello`.
    connect: Duration,
    /// `Client::run`: submit to output renamed into place and the job released.
    run: Duration,
    /// The chunks' run times as the nodes measured them, summed.
    node_run: Duration,
}

/// A job run and checked by [`Bench::run_checked`].
struct Checked {
    /// How long `Client::run` took.
    elapsed: Duration,
    /// What an `auto` rule decided.
    decision: Option<Decision>,
    /// The chunks' run times as the nodes measured them, summed.
    node_run: Duration,
}

impl JobTiming {
    fn total(&self) -> Duration {
        self.connect + self.run
    }
}

impl Bench<'_> {
    /// Runs one workload and returns its table rows and a note on where the CPU went.
    ///
    /// # Errors
    /// When a job fails, an output differs from the reference, or a process dies.
    pub(crate) async fn run(&mut self, workload: Workload) -> anyhow::Result<(Vec<Row>, String)> {
        let load_before = crate::procfs::load_average();
        let udp_before = UdpCounters::read();
        let cpu = CpuSplit::start(vec![
            ("dispatcher", vec![self.cluster.dispatcher.pid()]),
            ("node(s)", self.cluster.nodes.iter().map(Daemon::pid).collect()),
            ("bench (client, reference runs)", vec![std::process::id()]),
        ]);
        let mut rows = match workload {
            Workload::W1 => self.w1().await?,
            Workload::W2 => self.w2().await?,
            Workload::W3 => self.w3().await?,
            Workload::W4 => self.w4().await?,
        };
        self.cluster.check_alive()?;
        let udp = UdpCounters::read().since(&udp_before);
        rows.push(Row::new(
            workload.label(),
            format!(
                "UDP datagrams dropped for a full receive buffer, whole workload incl. warm-up (of {} received)",
                udp.received
            ),
            "datagrams",
            Summary::of(&[udp.buffer_drops as f64]),
            "",
        ));
        let load = format!("{load_before} -> {}", crate::procfs::load_average());
        for row in &mut rows {
            row.load = load.clone();
        }
        Ok((rows, format!("{}: CPU use, warm-up and timed runs: {}", workload.label(), cpu.finish())))
    }

    async fn w1(&mut self) -> anyhow::Result<Vec<Row>> {
        let chunks = self.sizes.w1_chunks;
        let input = self.dir.join("w1.bin");
        write_pseudo_random(&input, chunks * TINY_CHUNK, 1)?;
        let payload = bench_payload("sum.wat");
        let mut job = self.job(&payload, &input, SplitRule::Bytes(TINY_CHUNK), "w1.out");
        job.name = "bench-w1".into();
        let started = Instant::now();
        let reference = self.reference(&job)?;
        let serial = chunks as f64 / started.elapsed().as_secs_f64();
        let mut rates = Vec::new();
        for run in 0..=self.runs {
            let timing = self.timed_job(&job, Reference::Fixed(&reference)).await?;
            if run > 0 {
                rates.push(chunks as f64 / timing.total().as_secs_f64());
            }
        }
        Ok(vec![
            Row::new(
                "W1",
                format!("throughput, {chunks} chunks of 16 B (sum.wat)"),
                "chunks/s",
                Summary::of(&rates),
                ">= 50,000",
            ),
            Row::new(
                "W1",
                "for comparison: run_serial of the same chunks in one process, 1 thread (incl. compile)".into(),
                "chunks/s",
                Summary::of(&[serial]),
                "",
            ),
        ])
    }

    async fn w2(&mut self) -> anyhow::Result<Vec<Row>> {
        let jobs = self.sizes.w2_jobs;
        let input = self.dir.join("w2.bin");
        write_pseudo_random(&input, TINY_CHUNK, 2)?;
        let payload = bench_payload("sum.wat");
        let mut job = self.job(&payload, &input, SplitRule::Bytes(TINY_CHUNK), "w2.out");
        job.name = "bench-w2".into();
        let reference = self.reference(&job)?;
        let payload_bytes = std::fs::read(&payload)?;
        let chunk = std::fs::read(&input)?;
        // Warm-up for every client.
        self.timed_job(&job, Reference::Fixed(&reference)).await?;
        let mut probe = Probe::connect(&self.cluster.address, &self.cluster.client).await?;
        probe.round_trip(&payload_bytes, &chunk, &reference).await?;
        let mut client = Client::connect(&self.cluster.address, &self.cluster.client).await?;
        self.run_on(&mut client, &job, Reference::Fixed(&reference)).await?;
        // A failure of the reused client is a finding to report, not a reason to stop.
        let mut reused_failure: Option<String> = None;
        let mut reused_done = 0usize;

        let mut reused = Percentiles::default();
        let mut fresh = Percentiles::default();
        let mut connect = Percentiles::default();
        let mut trip = Percentiles::default();
        let mut streamed = Percentiles::default();
        let mut floor = Percentiles::default();
        let echo = Echo::spawn(&self.dir.join("pki/dispatcher"))?;
        for _ in 0..self.runs {
            let mut samples = Vec::with_capacity(jobs);
            while reused_failure.is_none() && samples.len() < jobs {
                match self.run_on(&mut client, &job, Reference::Fixed(&reference)).await {
                    Ok(elapsed) => samples.push(micros(elapsed)),
                    Err(e) => {
                        // The client's first job was the warm-up.
                        let nth = reused_done + samples.len() + 2;
                        eprintln!("bench: W2: the reused client failed at its job {nth}: {e:#}");
                        reused_failure =
                            Some(format!("FAILED at the client's job {nth} (job 1 was the warm-up): {e:#}"));
                    }
                }
            }
            reused_done += samples.len();
            if reused_failure.is_none() {
                reused.add(&samples);
            }
            let mut totals = Vec::with_capacity(jobs);
            let mut connects = Vec::with_capacity(jobs);
            for _ in 0..jobs {
                let started = Instant::now();
                let mut fresh_client = Client::connect(&self.cluster.address, &self.cluster.client).await?;
                let connected = Instant::now();
                self.run_on(&mut fresh_client, &job, Reference::Fixed(&reference)).await?;
                totals.push(micros(started.elapsed()));
                connects.push(micros(connected - started));
                // Dropped without `close`: quinn closes the connection in the background.
                drop(fresh_client);
            }
            fresh.add(&totals);
            connect.add(&connects);
            let mut trips = Vec::with_capacity(jobs);
            for _ in 0..jobs {
                trips.push(micros(probe.round_trip(&payload_bytes, &chunk, &reference).await?));
            }
            trip.add(&trips);
            streamed.add(&streamed_round_trips(&mut client, &job, &chunk, &reference, jobs).await?);
            floor.add(&echo.round_trips(&self.cluster.client, &chunk, jobs).await?);
        }
        if reused_failure.is_none() {
            client.close().await;
        }
        probe.close().await;
        // What ending a client costs (a program that runs one job and exits pays it once).
        let mut closes = Vec::new();
        for _ in 0..CLOSE_SAMPLES.min(jobs) {
            let mut client = Client::connect(&self.cluster.address, &self.cluster.client).await?;
            self.run_on(&mut client, &job, Reference::Fixed(&reference)).await?;
            let started = Instant::now();
            client.close().await;
            closes.push(micros(started.elapsed()));
        }
        let what = format!("{jobs} sequential 1-chunk jobs");
        let mut rows = Vec::new();
        let reused_what = match &reused_failure {
            None => format!("{what}, Client::run on one reused Client (excl. connect)"),
            Some(failure) => format!("{what}, Client::run on one reused Client (excl. connect): {failure}"),
        };
        rows.extend(reused.rows(&reused_what, "p50 <= 150"));
        rows.extend(fresh.rows(&format!("{what}, Client::connect + Client::run, a new Client per job"), ""));
        rows.extend(connect.rows("Client::connect alone (UDP socket + QUIC/TLS handshake + Hello)", ""));
        rows.extend(trip.rows(
            &format!(
                "{what}, protocol probe on one connection: Submit -> result + JobSucceeded (no client-side files)"
            ),
            "p50 <= 150",
        ));
        rows.extend(streamed.rows(
            &format!("{jobs} sequential chunks of one job, each sent when the previous result arrived (Client::open, JobStream send then recv)"),
            "p50 <= 150",
        ));
        rows.extend(floor.rows(
            "floor: one QUIC round trip between two processes (echo of the chunk, same TLS, transport and framing; a chunk crosses two)",
            "",
        ));
        rows.push(Row::new(
            "W2",
            format!("p50 of Client::close after a job ({} samples; not in the figures above)", closes.len()),
            "us",
            Summary::of(&[percentile(&closes, 50.0).unwrap_or(f64::NAN)]),
            "",
        ));
        Ok(rows)
    }

    async fn w3(&mut self) -> anyhow::Result<Vec<Row>> {
        let bytes = self.sizes.w3_bytes;
        let input = self.dir.join("w3.bin");
        write_pseudo_random(&input, bytes, 3)?;
        let payload = workspace_root().join("examples/checksum.wat");
        let mut job = self.job(&payload, &input, SplitRule::Bytes(W3_CHUNK), "w3.out");
        job.name = "bench-w3".into();
        let started = Instant::now();
        let reference = self.reference(&job)?;
        let serial = bytes as f64 / 1e6 / started.elapsed().as_secs_f64();
        let mut rates = Vec::new();
        // The dispatcher's CPU time (from /proc, 10 ms ticks) over each run, per byte shipped.
        let mut dispatcher_ns_per_byte = Vec::new();
        let dispatcher = self.cluster.dispatcher.pid();
        for run in 0..=self.runs {
            let cpu_before = cpu_time(dispatcher)?;
            let timing = self.timed_job(&job, Reference::Fixed(&reference)).await?;
            let cpu_used = cpu_time(dispatcher)?.saturating_sub(cpu_before);
            if run > 0 {
                rates.push(bytes as f64 / 1e6 / timing.total().as_secs_f64());
                dispatcher_ns_per_byte.push(cpu_used.as_secs_f64() * 1e9 / bytes as f64);
            }
        }
        let mut rows = vec![
            Row::new(
                "W3",
                format!("throughput, {} MiB in 1 MiB chunks (checksum.wat)", bytes >> 20),
                "MB/s",
                Summary::of(&rates),
                ">= 800",
            ),
            Row::new(
                "W3",
                "dispatcher CPU per byte shipped, same runs (user + system time from /proc over connect to close)"
                    .into(),
                "ns/byte",
                Summary::of(&dispatcher_ns_per_byte),
                "<= 1.7",
            ),
        ];
        if self.w3_shipped_only {
            let _ = std::fs::remove_file(&input);
            return Ok(rows);
        }
        // The same chunks as references the nodes read from the file themselves.
        let mut shared = job.clone();
        shared.shared_input = true;
        let mut shared_rates = Vec::new();
        for run in 0..=self.runs {
            let timing = self.timed_job(&shared, Reference::Fixed(&reference)).await?;
            if run > 0 {
                shared_rates.push(bytes as f64 / 1e6 / timing.total().as_secs_f64());
            }
        }
        // Chunk sizes chosen by `auto` (default 1 s target), bytes shipped and shared.
        let mut auto_rows = Vec::new();
        for shared_input in [false, true] {
            let mut auto = job.clone();
            auto.split = SplitRule::Auto(AutoSplit::Bytes);
            auto.shared_input = shared_input;
            let (mut rates, mut sizes) = (Vec::new(), Vec::new());
            for run in 0..=self.runs {
                let started = Instant::now();
                let mut client = Client::connect(&self.cluster.address, &self.cluster.client).await?;
                let connect = started.elapsed();
                // Timed as `timed_job` times: connect plus run, not the output check after it.
                let Checked { elapsed, decision, .. } = self.run_checked(&mut client, &auto, Reference::AutoBytes).await?;
                let seconds = (connect + elapsed).as_secs_f64();
                client.close().await;
                if run > 0 {
                    rates.push(bytes as f64 / 1e6 / seconds);
                    sizes.push(decision.map_or(0.0, |d| d.size as f64 / f64::from(1 << 20)));
                }
            }
            let how = if shared_input { "shared input" } else { "bytes shipped" };
            auto_rows.push(Row::new("W3", format!("throughput with bytes:auto, {how}"), "MB/s", Summary::of(&rates), ">= 800"));
            auto_rows.push(Row::new("W3", format!("chunk size bytes:auto chose, {how}"), "MiB", Summary::of(&sizes), ""));
        }
        let s3_rates = self.w3_from_s3(&input, &reference)?;
        let local_rates = self.w3_local(&input, &reference)?;
        let reduce_rows = self.w3_reduce(&input).await?;
        // The input is large; do not keep it for the next workload.
        let _ = std::fs::remove_file(&input);
        rows.extend([
            Row::new(
                "W3",
                "throughput, same chunks with shared input (nodes read the file; chunks travel as references)".into(),
                "MB/s",
                Summary::of(&shared_rates),
                ">= 800",
            ),
            Row::new(
                "W3",
                "for comparison: run_serial of the same chunks in one process, 1 thread (incl. reading the file)"
                    .into(),
                "MB/s",
                Summary::of(&[serial]),
                "",
            ),
        ]);
        rows.append(&mut auto_rows);
        let s3_row = "throughput, same chunks read from a local S3-compatible server (moto; nodes fetch ranges; dispy-submit run)";
        rows.push(match s3_rates {
            Some(rates) => Row::new("W3", s3_row.into(), "MB/s", Summary::of(&rates), ""),
            None => {
                let why = "skipped: moto_server not found (set DISPY_TEST_MOTO to its path or put it on PATH)";
                eprintln!("bench: W3 from S3 {why}");
                Row::new("W3", format!("{s3_row}: {why}"), "MB/s", None, "")
            }
        });
        rows.push(Row::new(
            "W3",
            "throughput, same chunks with `dispy-submit run --local 2` (an embedded cluster on this machine; nodes read the file in place; incl. its start)".into(),
            "MB/s",
            Summary::of(&local_rates),
            "",
        ));
        rows.extend(reduce_rows);
        Ok(rows)
    }

    /// W3's input through bench/payloads/sum.wat, an 8-byte sum per chunk: concatenated (512
    /// sums out) and with `--results reduce` (the sums combined on the nodes, 8 bytes out).
    async fn w3_reduce(&mut self, input: &Path) -> anyhow::Result<Vec<Row>> {
        let bytes = self.sizes.w3_bytes;
        let payload = workspace_root().join("bench/payloads/sum.wat");
        let mut concat = self.job(&payload, input, SplitRule::Bytes(W3_CHUNK), "w3-sums.out");
        concat.name = "bench-w3-sums".into();
        let sums = self.reference(&concat)?;
        let total: u64 = sums.chunks_exact(8).map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default())).sum();
        let mut reduce = concat.clone();
        reduce.name = "bench-w3-reduce".into();
        reduce.results = wire::proto::ResultMode::Reduce;
        let total = total.to_le_bytes();
        let mut rows = Vec::new();
        for (job, want, what) in [
            (&concat, sums.as_slice(), "concatenated results (sum.wat, 8 bytes a chunk out)"),
            (&reduce, total.as_slice(), "--results reduce (sum.wat combined on the nodes, 8 bytes out)"),
        ] {
            let mut rates = Vec::new();
            for run in 0..=self.runs {
                let timing = self.timed_job(job, Reference::Fixed(want)).await?;
                if run > 0 {
                    rates.push(bytes as f64 / 1e6 / timing.total().as_secs_f64());
                }
            }
            rows.push(Row::new("W3", format!("throughput, {} MiB in 1 MiB chunks, {what}", bytes >> 20), "MB/s", Summary::of(&rates), ""));
        }
        Ok(rows)
    }

    async fn w4(&mut self) -> anyhow::Result<Vec<Row>> {
        let payload = workspace_root().join("examples/mandelbrot.wat");
        let split = SplitRule::Range { start: 0, end: W4_HEIGHT, step: W4_ROWS };
        let mut job = JobDescription::new(payload.clone(), split, self.dir.join("w4.out"));
        job.args = W4_ARGS.as_bytes().to_vec();
        job.name = "bench-w4".into();
        let payload_bytes = std::fs::read(&payload)?;
        let inputs: Vec<Vec<u8>> = split.chunks(&[])?.collect::<Result<_, _>>()?;

        // The serial baseline: run_serial, minus its compile step, which the distributed runs
        // (after the warm-up) do not pay either. Each timed run pairs a serial run with a
        // distributed one right after it, so a disturbance of the machine hits both alike.
        let mut compile = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            self.engine.compile(&payload_bytes)?;
            compile.push(started.elapsed().as_secs_f64());
        }
        let compile_median = Summary::of(&compile).map_or(0.0, |s| s.median);
        let reference = run_serial(&self.engine, &payload_bytes, &job.args, inputs.clone())?;
        self.timed_job(&job, Reference::Fixed(&reference)).await?;
        let mut auto = job.clone();
        auto.split = SplitRule::Auto(AutoSplit::Range { start: 0, end: W4_HEIGHT });
        self.timed_job(&auto, Reference::Fixed(&reference)).await?;

        let topology = self.cluster.topology;
        let slots = f64::from(topology.nodes * topology.slots_per_node);
        let mut serial = Vec::new();
        let mut distributed = Vec::new();
        let mut efficiency = Vec::new();
        let mut auto_efficiency = Vec::new();
        let mut ceiling = Vec::new();
        let mut node_slowdown = Vec::new();
        for _ in 0..self.runs {
            let started = Instant::now();
            let output = run_serial(&self.engine, &payload_bytes, &job.args, inputs.clone())?;
            let serial_seconds = started.elapsed().as_secs_f64() - compile_median;
            if output != reference {
                bail!("run_serial of mandelbrot is not deterministic");
            }
            let timing = self.timed_job(&job, Reference::Fixed(&reference)).await?;
            let seconds = timing.total().as_secs_f64();
            node_slowdown.push(100.0 * timing.node_run.as_secs_f64() / serial_seconds);
            serial.push(serial_seconds);
            distributed.push(seconds * 1e3);
            efficiency.push(100.0 * serial_seconds / (slots * seconds));
            let seconds = self.timed_job(&auto, Reference::Fixed(&reference)).await?.total().as_secs_f64();
            auto_efficiency.push(100.0 * serial_seconds / (slots * seconds));
            let seconds = self.threads_in_process(&payload_bytes, &job.args, &inputs, topology.nodes * topology.slots_per_node)?;
            ceiling.push(100.0 * serial_seconds / (slots * (seconds - compile_median)));
        }
        let serial_ms: Vec<f64> = serial.iter().map(|s| s * 1e3).collect();
        Ok(vec![
            Row::new("W4", format!("parallel efficiency, mandelbrot 1024x1024x256, 64 chunks (serial / ({slots} x distributed), paired runs)"), "%",
                Summary::of(&efficiency), ">= 95"),
            Row::new("W4", format!("parallel efficiency with range:0..{W4_HEIGHT}:auto (same serial runs)"), "%",
                Summary::of(&auto_efficiency), ">= 95"),
            Row::new("W4", format!("machine ceiling: the same chunks on {slots} threads of one process, no dispy (serial / ({slots} x that))"), "%",
                Summary::of(&ceiling), ""),
            Row::new("W4", "the chunks' run time on the node (dispy_run only, as the node measures it, summed) against the serial time".into(), "%",
                Summary::of(&node_slowdown), ""),
            Row::new("W4", format!("distributed time ({slots} slots)"), "ms", Summary::of(&distributed), ""),
            Row::new("W4", "serial time, run_serial in-process (compile excluded)".into(), "ms", Summary::of(&serial_ms), ""),
            Row::new("W4", "compile time of mandelbrot.wat (excluded above)".into(), "ms",
                Summary::of(&compile.iter().map(|s| s * 1e3).collect::<Vec<_>>()), ""),
        ])
    }

    /// A job over one input file with the bench's defaults.
    /// Seconds for `threads` threads of this process to run `inputs` (chunk `i` on thread
    /// `i % threads`) with `run_serial`, compile included: what the machine's cores give a
    /// CPU-bound payload with no dispy in the way.
    fn threads_in_process(&self, payload: &[u8], args: &[u8], inputs: &[Vec<u8>], threads: u32) -> anyhow::Result<f64> {
        let threads = threads.max(1) as usize;
        let started = Instant::now();
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..threads)
                .map(|t| {
                    let mine = inputs.iter().skip(t).step_by(threads).cloned();
                    scope.spawn(move || run_serial(&self.engine, payload, args, mine))
                })
                .collect();
            runs.into_iter().try_for_each(|run| match run.join() {
                Ok(result) => result.map(drop).map_err(anyhow::Error::from),
                Err(_) => Err(anyhow::anyhow!("a run_serial thread panicked")),
            })
        })?;
        Ok(started.elapsed().as_secs_f64())
    }

    fn job(&self, payload: &Path, input: &Path, split: SplitRule, output: &str) -> JobDescription {
        let mut job = JobDescription::new(payload.to_path_buf(), split, self.dir.join(output));
        job.inputs = vec![input.to_path_buf()];
        job
    }

    /// The serial output of `job`, computed in this process.
    fn reference(&self, job: &JobDescription) -> anyhow::Result<Vec<u8>> {
        let payload = std::fs::read(&job.payload)?;
        let inputs: Vec<Vec<u8>> = job.split.chunks(&job.inputs)?.collect::<Result<_, _>>()?;
        Ok(run_serial(&self.engine, &payload, &job.args, inputs)?)
    }

    /// Runs `job` on a new client, checks its output and returns its timing; the client is then
    /// closed, untimed.
    async fn timed_job(&mut self, job: &JobDescription, reference: Reference<'_>) -> anyhow::Result<JobTiming> {
        let started = Instant::now();
        let mut client = Client::connect(&self.cluster.address, &self.cluster.client).await?;
        let connected = Instant::now();
        let checked = self.run_checked(&mut client, job, reference).await?;
        client.close().await;
        Ok(JobTiming { connect: connected - started, run: checked.elapsed, node_run: checked.node_run })
    }

    /// Runs `job` on `client`, checks its output and returns how long `Client::run` took.
    async fn run_on(
        &mut self,
        client: &mut Client,
        job: &JobDescription,
        reference: Reference<'_>,
    ) -> anyhow::Result<Duration> {
        Ok(self.run_checked(client, job, reference).await?.elapsed)
    }

    /// [`Self::run_on`], also returning what an `auto` rule decided and the nodes' run time.
    async fn run_checked(
        &mut self,
        client: &mut Client,
        job: &JobDescription,
        reference: Reference<'_>,
    ) -> anyhow::Result<Checked> {
        let started = Instant::now();
        let mut decision = None;
        let on_update = |update: client::Update<'_>| {
            if let client::Update::ChunkSize(chosen) = update {
                decision = Some(*chosen);
            }
        };
        let report = client.run(job, on_update).await.with_context(|| format!("job {} failed", job.name))?;
        let elapsed = started.elapsed();
        let output = std::fs::read(&report.output)?;
        let computed;
        let reference = match reference {
            Reference::Fixed(bytes) => bytes,
            Reference::AutoBytes => {
                let decision = decision.context("the auto rule decided no chunk size")?;
                computed = self.auto_reference(job, &decision)?;
                &computed
            }
        };
        if output != reference {
            bail!(
                "job {} output differs from run_serial ({} bytes, blake3 {}; expected {} bytes, blake3 {})",
                job.name,
                output.len(),
                blake3::hash(&output),
                reference.len(),
                blake3::hash(reference)
            );
        }
        let _ = std::fs::remove_file(&report.output);
        Ok(Checked { elapsed, decision, node_run: Duration::from_nanos(report.progress.run_nanos) })
    }

    /// The serial output of a `bytes:auto` job over one file: its probe chunks, then chunks of
    /// the size it chose.
    fn auto_reference(&self, job: &JobDescription, decision: &Decision) -> anyhow::Result<Vec<u8>> {
        let data = std::fs::read(&job.inputs[0])?;
        let probe = usize::try_from(client::split::auto::PROBE_BYTES)?;
        let probes = usize::try_from(decision.probes)?;
        let (head, rest) = data.split_at((probe * probes).min(data.len()));
        let chunks = head.chunks(probe).chain(rest.chunks(usize::try_from(decision.size)?)).map(<[u8]>::to_vec);
        let payload = std::fs::read(&job.payload)?;
        Ok(run_serial(&self.engine, &payload, &job.args, chunks.collect::<Vec<_>>())?)
    }
}

/// What a job's output must equal.
#[derive(Debug, Clone, Copy)]
enum Reference<'a> {
    /// These bytes.
    Fixed(&'a [u8]),
    /// The serial run over the chunks a `bytes:auto` rule chose (see `auto_reference`).
    AutoBytes,
}

/// The p50 and p99 of each run of a latency series.
#[derive(Debug, Default)]
struct Percentiles {
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Percentiles {
    /// Adds one run's samples.
    fn add(&mut self, samples: &[f64]) {
        self.p50.push(percentile(samples, 50.0).unwrap_or(f64::NAN));
        self.p99.push(percentile(samples, 99.0).unwrap_or(f64::NAN));
    }

    /// The p50 and p99 rows, each the median over runs with its spread.
    fn rows(&self, what: &str, target: &'static str) -> [Row; 2] {
        [
            Row::new("W2", format!("p50 latency, {what}"), "us", Summary::of(&self.p50), target),
            Row::new("W2", format!("p99 latency, {what}"), "us", Summary::of(&self.p99), ""),
        ]
    }
}

/// A payload under `bench/payloads/`.
/// One job fed through [`Client::open`]: sends `chunk` `count` times, each after the previous
/// result arrived and was checked, and returns each round trip (send to result) in µs.
async fn streamed_round_trips(
    client: &mut Client,
    job: &JobDescription,
    chunk: &[u8],
    expect: &[u8],
    count: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut stream = client.open(job).await?;
    let mut trips = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        stream.send(chunk).await?;
        let result = stream.recv().await?.context("a chunk sent but no result awaited")?;
        trips.push(micros(started.elapsed()));
        if result.as_ref() != expect {
            bail!("streamed result {result:?} differs from run_serial's {expect:?}");
        }
    }
    let (rest, progress) = stream.finish().await?;
    if !rest.is_empty() || progress.done != count as u64 {
        bail!("streamed job ended with {} unread results and {} of {count} chunks done", rest.len(), progress.done);
    }
    Ok(trips)
}

fn bench_payload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("payloads").join(name)
}

pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Writes `len` deterministic pseudo-random bytes (xorshift64*) to `path`.
///
/// # Errors
/// When the file cannot be written.
pub(crate) fn write_pseudo_random(path: &Path, len: u64, seed: u64) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}
