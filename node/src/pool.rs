//! The slot pool: one OS thread per slot, each running chunks (and a reduce job's combines,
//! `Assignment::combine`) one after another.
//!
//! Guest code is synchronous and may spin until its deadline, so it never runs on the async
//! runtime. Each thread keeps the [`Worker`] of the job it last served, so a job's
//! `dispy_setup` runs once per slot, not once per chunk; a thread switches instances only when the
//! next chunk belongs to another job, and drops an instance after any failure.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use wire::proto::{AttemptId, Assignment, ChunkReport, FailureKind, JobId};
use tokio::sync::mpsc::UnboundedSender;

use crate::exec::{CancelFlag, Executor, Limits, Payload, Worker};

mod pairs;

/// What every chunk of one job needs to run.
#[derive(Debug)]
pub(crate) struct JobContext {
    /// The job.
    pub job: JobId,
    /// Its compiled payload.
    pub payload: Payload,
    /// Keeps the payload's file (which native workers load) and compiled module cached while
    /// any of the job's chunks may run.
    pub _lease: crate::cache::PayloadLease,
    /// Argument bytes for setup and run.
    pub args: Vec<u8>,
    /// Memory limit per worker, in bytes.
    pub memory_limit: u64,
    /// Wall-clock limit per chunk.
    pub chunk_timeout: std::time::Duration,
    /// Set when the job ends on this node; running chunks stop at the next epoch tick.
    pub cancel: CancelFlag,
    /// For a shared-input job, the directories this node may read chunk bytes from, resolved
    /// (chunk inputs are then references to them); `None` for a job whose chunks carry their
    /// bytes.
    pub shared_input_roots: Option<Vec<std::path::PathBuf>>,
    /// How this node reads object input (chunk references naming `s3://` or `https://` URLs);
    /// `None` when its `object_store_buckets` is empty.
    pub objects: Option<Arc<crate::object_input::NodeObjects>>,
    /// Whether the job reduces its results: sibling chunks run here are pre-combined (see
    /// `pairs`).
    pub reduce: bool,
}

/// One chunk waiting for a slot.
#[derive(Debug)]
pub(crate) struct Work {
    /// The job it belongs to.
    pub job: Arc<JobContext>,
    /// The chunk and its attempt.
    pub assignment: Assignment,
    /// Where the report goes.
    pub reports: UnboundedSender<ChunkReport>,
}

/// A fixed set of slot threads fed from one queue.
#[derive(Debug)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// The workers' own cancel flags of the attempts running now, so cancelling one stops it.
    running: Mutex<HashMap<AttemptId, CancelFlag>>,
    /// Reduce jobs' chunks here and their results waiting to be pre-combined.
    pairs: Mutex<pairs::Pairs>,
    wake: Condvar,
    busy: AtomicU32,
    done: AtomicU64,
    failed: AtomicU64,
    executor: Executor,
    metrics: crate::metrics::PoolMetrics,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Work>,
    closed: bool,
}

impl Pool {
    /// Starts `slots` slot threads.
    ///
    /// # Errors
    /// When the OS refuses to start a thread.
    pub(crate) fn new(executor: Executor, slots: u32, metrics: crate::metrics::PoolMetrics) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            running: Mutex::default(),
            pairs: Mutex::default(),
            wake: Condvar::new(),
            busy: AtomicU32::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            executor,
            metrics,
        });
        for slot in 0..slots {
            let shared = Arc::clone(&shared);
            // Slot threads are detached: they exit when the pool closes its queue, and a thread
            // stuck in guest code is bounded by the chunk's epoch deadline.
            std::thread::Builder::new()
                .name(format!("dispy-slot-{slot}"))
                .spawn(move || slot_loop(&shared))?;
        }
        Ok(Self { shared })
    }

    /// Queues a chunk; a free slot picks it up at once.
    pub(crate) fn submit(&self, work: Work) {
        if pairs::may_pair(&work) {
            lock(&self.shared.pairs).submitted(&work);
        }
        self.lock().items.push_back(work);
        self.shared.wake.notify_one();
    }

    /// Drops the queued chunks of `job`; its running chunks see the job's cancel flag, and idle
    /// slots drop its workers (the caller has set the flag).
    pub(crate) fn cancel_job(&self, job: JobId) {
        self.lock().items.retain(|w| w.job.job != job);
        lock(&self.shared.pairs).cancelled(|j, _| j == job);
        self.shared.wake.notify_all();
    }

    /// Drops one queued attempt, or stops it if it runs (within about 10 ms for WebAssembly; a
    /// native worker is killed): its slot takes the next chunk at once, and no report is sent.
    pub(crate) fn cancel_attempt(&self, attempt: AttemptId) {
        self.lock().items.retain(|w| w.assignment.attempt != attempt);
        lock(&self.shared.pairs).cancelled(|_, a| a == attempt);
        if let Some(flag) = lock(&self.shared.running).get(&attempt) {
            flag.cancel();
        }
    }

    /// Slots running a chunk right now.
    pub(crate) fn busy(&self) -> u32 {
        self.shared.busy.load(Ordering::Relaxed)
    }

    /// Chunks that succeeded and failed since the pool started, for the health log.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (self.shared.done.load(Ordering::Relaxed), self.shared.failed.load(Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.shared.queue)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A slot thread never panics while holding a lock (it only pushes, pops and inserts), so a
    // poisoned lock still guards a consistent queue or map.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn slot_loop(shared: &Shared) {
    // Keyed by the job's context, not its id: a job restarted in a new session (same id, fresh
    // cancel flag) must not reuse a worker bound to the old session's flag.
    let mut current: Option<(Arc<JobContext>, Worker, CancelFlag)> = None;
    loop {
        let work = {
            let mut queue = lock(&shared.queue);
            loop {
                if queue.closed {
                    return;
                }
                if let Some(work) = queue.items.pop_front() {
                    break Some(work);
                }
                // A worker of an ended job goes now, not when the next job comes: a native worker
                // is a process holding the job's memory.
                if current.as_ref().is_some_and(|(context, _, _)| context.cancel.is_cancelled()) {
                    break None;
                }
                queue = shared.wake.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let Some(work) = work else {
            // Outside the queue lock: killing and reaping a worker process takes a moment.
            current = None;
            continue;
        };
        if work.job.cancel.is_cancelled() {
            continue;
        }
        shared.busy.fetch_add(1, Ordering::Relaxed);
        let mut log = bytes::Bytes::new();
        let started = std::time::Instant::now();
        let (outcome, run_time) = match run_chunk(shared, &mut current, &work, &mut log) {
            Ok((output, run_time)) => (Ok(output), run_time),
            Err(failure) => (Err(failure), std::time::Duration::ZERO),
        };
        shared.busy.fetch_sub(1, Ordering::Relaxed);
        let cancelled = lock(&shared.running).remove(&work.assignment.attempt).is_some_and(|flag| flag.is_cancelled());
        let outcome_name = if cancelled { "cancelled" } else if outcome.is_ok() { "succeeded" } else { "failed" };
        shared.metrics.finished(outcome_name, started.elapsed());
        if cancelled {
            // The job ended or the attempt was cancelled while it ran; nobody wants its result.
            lock(&shared.pairs).cancelled(|_, a| a == work.assignment.attempt);
            tracing::debug!(job = %work.job.job, chunk = work.assignment.chunk, attempt = %work.assignment.attempt, "attempt cancelled while running; its slot is free");
            continue;
        }
        let counter = if outcome.is_ok() { &shared.done } else { &shared.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        if outcome.is_ok() {
            tracing::debug!(job = %work.job.job, chunk = work.assignment.chunk, attempt = %work.assignment.attempt, "chunk done");
        }
        if let Err(failure) = &outcome {
            tracing::debug!(job = %work.job.job, chunk = work.assignment.chunk, kind = ?failure.kind, "chunk failed: {failure}");
        }
        let run_nanos = u64::try_from(run_time.as_nanos()).unwrap_or(u64::MAX);
        let report = ChunkReport { attempt: work.assignment.attempt, outcome, run_nanos, log, combined_with: None };
        pairs::deliver(shared, &mut current, &work, report);
    }
}

/// Runs one chunk, setting up the job's worker first if this slot has none; the time returned is
/// the chunk's own run, without the setup, which is what chunk sizing wants to know. While it
/// runs, the worker's own cancel flag is in `shared.running` under the attempt (the caller
/// removes it). What the chunk logged goes to `log`, whether it failed or not.
fn run_chunk(
    shared: &Shared,
    current: &mut Option<(Arc<JobContext>, Worker, CancelFlag)>,
    work: &Work,
    log: &mut bytes::Bytes,
) -> Result<(bytes::Bytes, std::time::Duration), wire::proto::ChunkFailure> {
    let job = &work.job;
    let reuse = current.as_ref().filter(|(context, _, _)| Arc::ptr_eq(context, job)).map(|(_, _, cancel)| cancel.clone());
    // Each worker has its own flag, so cancelling one attempt stops this worker and no other;
    // registered before a new worker's setup, which a cancellation stops too.
    let cancel = reuse.clone().unwrap_or_else(|| job.cancel.child());
    lock(&shared.running).insert(work.assignment.attempt, cancel.clone());
    if reuse.is_none() {
        *current = None;
        let limits = Limits { memory: job.memory_limit, chunk_timeout: job.chunk_timeout };
        let worker = shared.executor.worker(&job.payload, &job.args, limits, cancel.clone())?;
        *current = Some((Arc::clone(job), worker, cancel));
    }
    let Some((_, worker, _)) = current.as_mut() else {
        unreachable!("a worker was installed just above");
    };
    if work.assignment.combine {
        let started = std::time::Instant::now();
        let outcome = match wire::abi::split_combine_input(&work.assignment.input) {
            Some((a, b)) => worker.combine(a, b),
            None => Err(wire::proto::ChunkFailure {
                kind: FailureKind::Node,
                message: "malformed combine input from the dispatcher".into(),
            }),
        };
        *log = worker.take_log().into();
        return finish(job, current, outcome, started);
    }
    let shared;
    let input: &[u8] = match &job.shared_input_roots {
        None => &work.assignment.input,
        Some(roots) => {
            let node_failure = |message: String| wire::proto::ChunkFailure { kind: FailureKind::Node, message };
            let chunk = wire::chunk::ChunkRef::decode(&work.assignment.input).map_err(node_failure)?;
            let names_objects = chunk.segments.iter().any(|s| wire::chunk::is_object_url(&s.path));
            shared = match (&job.objects, names_objects) {
                (_, false) => crate::shared_input::read(&chunk, roots, job.memory_limit).map_err(node_failure)?,
                (Some(objects), true) => {
                    objects.stores.read_chunk(&chunk, &objects.allow, job.memory_limit).map_err(|e| node_failure(e.to_string()))?
                }
                (None, true) => {
                    return Err(node_failure(crate::object_input::NodeObjects::refusal(None, &chunk).unwrap_or_default()))
                }
            };
            &shared
        }
    };
    let started = std::time::Instant::now();
    let outcome = worker.run(input);
    *log = worker.take_log().into();
    finish(job, current, outcome, started)
}

/// The outcome of a run or combine that began at `started`; a failure drops the slot's worker.
fn finish(
    job: &JobContext,
    current: &mut Option<(Arc<JobContext>, Worker, CancelFlag)>,
    outcome: Result<Vec<u8>, wire::proto::ChunkFailure>,
    started: std::time::Instant,
) -> Result<(bytes::Bytes, std::time::Duration), wire::proto::ChunkFailure> {
    match outcome {
        Ok(output) => Ok((output.into(), started.elapsed())),
        Err(failure) => {
            // A worker that failed may hold broken guest state; the next chunk gets a fresh one.
            *current = None;
            if failure.kind == FailureKind::Setup {
                tracing::warn!(job = %job.job, "worker setup failed: {failure}");
            }
            Err(failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wire::proto::{Assignment, AttemptId, JobId, PayloadHash, PayloadKind};

    use super::*;
    use crate::cache::PayloadCache;
    use crate::exec::Executor;

    fn job(executor: &Executor, cache: &PayloadCache, id: u64, wat: &str) -> Arc<JobContext> {
        let payload = executor.load(&PayloadKind::Wasm, wat.as_bytes(), std::path::Path::new("unused")).expect("compiles");
        Arc::new(JobContext {
            job: JobId(id),
            payload,
            _lease: cache.lease(PayloadHash::of(wat.as_bytes())),
            args: Vec::new(),
            memory_limit: 64 << 20,
            // Far beyond the test: only a cancellation can end the loop.
            chunk_timeout: Duration::from_secs(3600),
            cancel: CancelFlag::default(),
            shared_input_roots: None,
            objects: None,
            reduce: false,
        })
    }

    fn work(job: &Arc<JobContext>, attempt: u64, reports: &UnboundedSender<ChunkReport>) -> Work {
        chunk(job, 0, attempt, b"hi", reports)
    }

    fn chunk(job: &Arc<JobContext>, chunk: u64, attempt: u64, input: &'static [u8], reports: &UnboundedSender<ChunkReport>) -> Work {
        let input = bytes::Bytes::from_static(input);
        let assignment = Assignment { job: job.job, chunk, attempt: AttemptId(attempt), input, combine: false };
        Work { job: Arc::clone(job), assignment, reports: reports.clone() }
    }

    /// The next report, within a bound so a regression fails instead of hanging.
    fn next_report(received: &mut tokio::sync::mpsc::UnboundedReceiver<ChunkReport>) -> ChunkReport {
        let started = std::time::Instant::now();
        loop {
            match received.try_recv() {
                Ok(report) => return report,
                Err(_) if started.elapsed() < Duration::from_secs(60) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("no report came: {e}"),
            }
        }
    }

    #[test]
    fn sibling_chunks_of_a_reduce_job_are_reported_pre_combined() {
        let executor = Executor::new().expect("engine");
        let dir = tempfile::tempdir().expect("a cache directory");
        let cache = PayloadCache::open(dir.path(), 1 << 20).expect("cache");
        let mut concat = job(&executor, &cache, 1, include_str!("../../tests/fixtures/concat_combine.wat"));
        Arc::get_mut(&mut concat).expect("not shared yet").reduce = true;
        let looping = job(&executor, &cache, 2, include_str!("../../tests/fixtures/loop.wat"));
        let pool = Pool::new(executor, 1, crate::metrics::PoolMetrics::default()).expect("pool");
        let (reports, mut received) = tokio::sync::mpsc::unbounded_channel();
        // Behind a chunk that never ends, until it is cancelled: chunk 5 runs first and waits
        // for chunk 4, queued behind it; one report, chunk 4's attempt first, their results
        // combined left (chunk 4) before right.
        pool.submit(work(&looping, 1, &reports));
        pool.submit(chunk(&concat, 5, 15, b"right", &reports));
        pool.submit(chunk(&concat, 4, 14, b"left-", &reports));
        pool.cancel_attempt(AttemptId(1));
        let report = next_report(&mut received);
        assert_eq!((report.attempt, report.combined_with), (AttemptId(14), Some(AttemptId(15))), "{report:?}");
        assert_eq!(report.outcome.as_deref().map(<[u8]>::to_vec), Ok(b"left-right".to_vec()));
        // A chunk whose sibling is not here is reported alone at once.
        pool.submit(chunk(&concat, 2, 12, b"alone", &reports));
        let report = next_report(&mut received);
        assert_eq!((report.attempt, report.combined_with), (AttemptId(12), None), "{report:?}");
        // Chunk 7's result waits for chunk 6, queued behind a chunk that never ends; chunk 6 is
        // cancelled, so chunk 7's result goes alone.
        pool.submit(chunk(&concat, 7, 17, b"seven", &reports));
        pool.submit(work(&looping, 2, &reports));
        pool.submit(chunk(&concat, 6, 16, b"six", &reports));
        pool.cancel_attempt(AttemptId(16));
        let report = next_report(&mut received);
        assert_eq!((report.attempt, report.combined_with), (AttemptId(17), None), "{report:?}");
        pool.cancel_attempt(AttemptId(2));
        std::thread::sleep(Duration::from_millis(50));
        assert!(received.try_recv().is_err(), "a cancelled attempt reported");
    }

    #[test]
    fn a_cancelled_running_attempt_frees_its_slot_at_once_and_reports_nothing() {
        let executor = Executor::new().expect("engine");
        let dir = tempfile::tempdir().expect("a cache directory");
        let cache = PayloadCache::open(dir.path(), 1 << 20).expect("cache");
        let looping = job(&executor, &cache, 1, include_str!("../../tests/fixtures/loop.wat"));
        let quick = job(&executor, &cache, 2, include_str!("../../examples/upper.wat"));
        let pool = Pool::new(executor, 1, crate::metrics::PoolMetrics::default()).expect("pool");
        let (reports, mut received) = tokio::sync::mpsc::unbounded_channel();
        pool.submit(work(&looping, 1, &reports));
        pool.submit(work(&quick, 2, &reports));
        let started = std::time::Instant::now();
        while pool.busy() == 0 && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pool.busy(), 1, "the looping attempt never started");
        pool.cancel_attempt(AttemptId(1));
        // A bound so a regression fails instead of hanging: without the cancel the loop holds
        // the only slot for an hour.
        let report = loop {
            match received.try_recv() {
                Ok(report) => break report,
                Err(_) if started.elapsed() < Duration::from_secs(60) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("the slot never took the next chunk: {e}"),
            }
        };
        assert_eq!(report.attempt, AttemptId(2), "the cancelled attempt reported: {report:?}");
        assert_eq!(report.outcome.as_deref().map(|b| b.to_vec()), Ok(b"HI".to_vec()));
        assert!(!looping.cancel.is_cancelled(), "only the attempt was cancelled, not its job");
    }
}
