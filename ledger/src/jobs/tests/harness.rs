//! A virtual-time world around one [`Ledger`], like quinn-proto's `Pair`: fake nodes that run
//! chunks and keep reports until acknowledged, clients that submit, follow and ask, an in-memory
//! spool whose unsynced bytes a crash loses, and a journal whose commits finish late or fail. It
//! checks the ledger's promises as effects come out, and can crash and restart the dispatcher
//! from whatever the journal holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wire::proto::{
    AttemptId, ChunkFailure, ChunkIndex, ChunkReport, ClientEvent, DispatcherToNode, FailureKind, Heartbeat, JobId,
    JobState, JobSubmission, NodeInfo, NodeToDispatcher, PayloadHash, PayloadKind, ResultMode,
};

use super::super::{
    Answer, AttachCommand, AttachId, Caller, ClientId, Effect, Ledger, LedgerConfig, NodeCommand, Recovered, Refusal, RequestId,
    RestoredJob, Resumed, Time,
};
use crate::record::{Batch, Extent, JobRecord, NodeHold};
use crate::scheduler::{NodeId, SchedulerConfig};

mod covered;
mod precombine;
mod uploads;

/// A small xorshift generator: histories come from a seed, so a failure replays.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// True with probability `percent` / 100.
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a payload does to a chunk: the result the clients must receive for it.
pub(super) fn run(input: &[u8]) -> Vec<u8> {
    input.iter().rev().map(|b| b.wrapping_add(1)).collect()
}

/// A job's spool files; bytes past the synced length are lost in a crash.
#[derive(Default)]
struct SpoolFiles {
    input: Vec<u8>,
    input_synced: u64,
    results: Vec<u8>,
    results_synced: u64,
}

/// The journal as it is on disk.
#[derive(Default, Clone)]
struct Durable {
    next_job: u64,
    incarnation: u64,
    jobs: BTreeMap<JobId, JobRecord>,
    inputs: BTreeMap<(JobId, ChunkIndex), Extent>,
    results: BTreeMap<(JobId, ChunkIndex), Extent>,
    holds: BTreeMap<String, NodeHold>,
    /// Jobs whose release is durable: their results are gone because their owner has them.
    released: HashSet<JobId>,
}

impl Durable {
    fn apply(&mut self, batch: &Batch) {
        if let Some(next) = batch.next_job {
            self.next_job = next;
        }
        for (job, record) in &batch.jobs {
            self.jobs.insert(*job, record.clone());
        }
        for (job, chunk, extent) in &batch.inputs {
            self.inputs.insert((*job, *chunk), *extent);
        }
        for (job, chunk, extent) in &batch.results {
            self.results.insert((*job, *chunk), *extent);
        }
        for job in &batch.released {
            self.inputs.retain(|(j, _), _| j != job);
            self.results.retain(|(j, _), _| j != job);
        }
        self.released.extend(batch.released.iter().copied());
        for job in &batch.deleted {
            self.jobs.remove(job);
            self.inputs.retain(|(j, _), _| j != job);
            self.results.retain(|(j, _), _| j != job);
        }
        for (name, hold) in &batch.holds {
            match hold {
                Some(hold) => self.holds.insert(name.clone(), hold.clone()),
                None => self.holds.remove(name),
            };
        }
    }

    /// Whether what the journal holds of `job` no longer needs `chunk`'s result: it has it, or
    /// the job is over without results or forgotten.
    fn settles(&self, job: JobId, chunk: ChunkIndex) -> bool {
        self.results.contains_key(&(job, chunk))
            || self.released.contains(&job)
            || self.jobs.get(&job).is_none_or(|r| matches!(r.state, JobState::Failed(_) | JobState::Cancelled))
    }
}

/// What a fake node was assigned: a chunk's input, or a combine's two results as the
/// dispatcher read them (`None` when it could not).
enum Work {
    Run(Extent),
    Combine(Option<(Vec<u8>, Vec<u8>)>),
}

/// A fake node: runs what it is assigned, keeps its reports until acknowledged.
struct FakeNode {
    name: String,
    id: NodeId,
    queue: Vec<(AttemptId, JobId, ChunkIndex, Work)>,
    unacked: HashMap<AttemptId, ChunkReport>,
}

/// One client following a job.
struct Follower {
    job: JobId,
    next: ChunkIndex,
    done: bool,
}

/// The world.
pub(super) struct World {
    pub(super) ledger: Ledger,
    pub(super) now: Time,
    durable: Durable,
    spool: HashMap<JobId, SpoolFiles>,
    /// The commit in flight: its batch and the synced lengths it relies on.
    in_flight: Option<Batch>,
    nodes: Vec<FakeNode>,
    followers: HashMap<AttachId, Follower>,
    /// Chunks each job was submitted with.
    submitted: BTreeMap<JobId, Vec<Vec<u8>>>,
    /// Accepted results being stored: attempt → (job, chunk).
    accepted: HashMap<AttemptId, (JobId, ChunkIndex)>,
    questions: HashMap<RequestId, JobId>,
    next_id: u64,
    /// `(job, chunk)` that must not be assigned again: they had a durable result at a restart,
    /// or were under a reduce job's durable combine.
    pub(super) stored_at_restart: HashSet<(JobId, ChunkIndex)>,
    pub(super) restarts: u32,
    pub(super) verdicts: u32,
    /// How long a job whose upload was cut off waits for it to resume.
    grace: Duration,
    /// Answers to resumed uploads, by question.
    resumed: HashMap<RequestId, Result<Resumed, String>>,
    /// Attempt logs stored, by job, until the job is forgotten.
    pub(super) logs: HashMap<JobId, Vec<crate::jobs::LogRecord>>,
    /// Jobs whose owner released them.
    released: HashSet<JobId>,
    /// Reduce jobs (see `super::reduce`), whose one output is every chunk's result combined.
    reduce: HashSet<JobId>,
    /// Every combine fails with a trap (a payload whose `dispy_combine` is broken).
    pub(super) combine_traps: bool,
    /// One attempt in ten traps, as if by chance (on unless a test needs a quiet world).
    pub(super) random_traps: bool,
    /// Nodes pre-combine chunks `2k` and `2k + 1` of a reduce job they hold (on by default).
    pub(super) node_precombines: bool,
    /// Combines run to success, by `(job, chunk)`.
    pub(super) combines_run: HashMap<(JobId, ChunkIndex), u32>,
    /// Combines assigned, by `(job, chunk)`: more than once for a retry, a speculative copy or
    /// a rerun after a lost node.
    pub(super) combines_assigned: HashMap<(JobId, ChunkIndex), u32>,
    /// Combines assigned, or pre-combined by a node, while their job's input was still arriving.
    pub(super) early_combines: u32,
    /// Reports in which a fake node pre-combined chunks `2k` and `2k + 1` of a reduce job.
    pub(super) precombined: u32,
    /// Uploads under way (see `uploads`): the next chunk each sends.
    uploading: BTreeMap<JobId, usize>,
    /// Results stored in this lifetime of the ledger: each `(job, task)` once.
    stored: HashSet<(JobId, ChunkIndex)>,
}

pub(super) const SLOTS: u32 = 2;

impl World {
    pub(super) fn new(nodes: usize) -> Self {
        Self::with_grace(nodes, Duration::ZERO)
    }

    /// A world whose jobs wait `grace` for a cut-off upload to resume.
    pub(super) fn with_grace(nodes: usize, grace: Duration) -> Self {
        let now = Time { at: Instant::now(), unix_ms: 1_000_000 };
        let durable = Durable { next_job: 1, incarnation: 1, ..Durable::default() };
        let mut world = Self {
            ledger: Ledger::new(ledger_config(grace), Recovered { next_job: 1, incarnation: 1, ..Recovered::default() }, now),
            now,
            durable,
            spool: HashMap::new(),
            in_flight: None,
            nodes: Vec::new(),
            followers: HashMap::new(),
            submitted: BTreeMap::new(),
            accepted: HashMap::new(),
            questions: HashMap::new(),
            next_id: 0,
            stored_at_restart: HashSet::new(),
            restarts: 0,
            verdicts: 0,
            grace,
            resumed: HashMap::new(),
            logs: HashMap::new(),
            released: HashSet::new(),
            reduce: HashSet::new(),
            combine_traps: false,
            random_traps: true,
            node_precombines: true,
            combines_run: HashMap::new(),
            combines_assigned: HashMap::new(),
            early_combines: 0,
            precombined: 0,
            uploading: BTreeMap::new(),
            stored: HashSet::new(),
        };
        for n in 0..nodes {
            let name = format!("node-{n}");
            let id = world.ledger.handle_node_registered(now, info(&name), "10.0.0.1:1".into());
            world.nodes.push(FakeNode { name, id, queue: Vec::new(), unacked: HashMap::new() });
        }
        world.turn();
        world
    }

    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A client submits a job of `chunks` chunks, sends its whole input and, if `follow`, follows it.
    pub(super) fn submit(&mut self, chunks: usize, follow: bool) {
        self.submit_as(chunks, follow, false);
    }

    /// Submits a job (a reduce job if `reduce`) from a fresh client, which the ledger accepts.
    pub(super) fn accepted_submission(&mut self, reduce: bool) -> (JobId, ClientId) {
        let client = ClientId(self.fresh());
        let mut submission = submission();
        if reduce {
            submission.results = ResultMode::Reduce;
        }
        let Ok(job) = self.ledger.handle_submit(self.now, client, &owner(), submission) else {
            panic!("a wasm job is always accepted");
        };
        // A job id whose submission was not durable at a restart is handed out again.
        if reduce {
            self.reduce.insert(job);
        } else {
            self.reduce.remove(&job);
        }
        (job, client)
    }

    /// As [`World::submit`], of a reduce job if `reduce`; returns the job.
    pub(super) fn submit_as(&mut self, chunks: usize, follow: bool, reduce: bool) -> JobId {
        let (job, client) = self.accepted_submission(reduce);
        let inputs: Vec<Vec<u8>> = (0..chunks).map(|c| vec![job.0 as u8, c as u8, 7, 9]).collect();
        let files = self.spool.entry(job).or_default();
        let mut extents = Vec::new();
        for input in &inputs {
            extents.push(Extent { offset: files.input.len() as u64, len: input.len() as u64 });
            files.input.extend_from_slice(input);
        }
        for extent in extents {
            self.ledger.handle_input(self.now, job, extent);
        }
        self.ledger.handle_input_end(self.now, job);
        self.submitted.insert(job, inputs);
        if follow {
            self.follow(job, client);
        }
        self.turn();
        job
    }

    /// The latest resume question, for [`World::resume_answer`] once its answer is held.
    pub(super) fn last_request(&self) -> RequestId {
        RequestId(self.next_id)
    }

    /// `job` as its owner sees it.
    pub(super) fn summary(&self, job: JobId) -> Option<wire::proto::JobSummary> {
        self.ledger.summary(&owner(), job).ok()
    }

    fn follow(&mut self, job: JobId, client: ClientId) {
        if self.ledger.attachable(&owner(), job).is_ok() {
            let attach = AttachId(self.fresh());
            self.ledger.handle_attach(job, attach, client);
            self.followers.insert(attach, Follower { job, next: 0, done: false });
        }
    }

    /// The owner has a finished job's whole output and releases it, as `run` and `wait` do: its
    /// input and results go at once, its record and logs stay (and stay released across a restart
    /// once the release is durable) until it expires.
    pub(super) fn release(&mut self, pick: u64) {
        let pending: HashSet<JobId> = self.followers.values().filter(|f| !f.done).map(|f| f.job).collect();
        let finished: Vec<JobId> = self
            .submitted
            .keys()
            .copied()
            .filter(|job| !pending.contains(job) && self.summary(*job).is_some_and(|s| s.state.is_finished()))
            .collect();
        let Some(&job) = finished.get(pick as usize % finished.len().max(1)) else { return };
        self.ledger.handle_release(&owner(), job);
        self.turn();
        assert!(
            matches!(self.ledger.attachable(&owner(), job), Err(Refusal::OutputFetched(_))),
            "released job {job} can still be followed"
        );
        // Its input and results go once the journal records the release (`finish_commit`).
        self.released.insert(job);
    }

    /// How many jobs their owner released.
    pub(super) fn released_count(&self) -> usize {
        self.released.len()
    }

    /// A client asks for a job's status.
    pub(super) fn ask(&mut self, pick: u64) {
        let jobs: Vec<JobId> = self.submitted.keys().copied().collect();
        let Some(job) = jobs.get(pick as usize % jobs.len().max(1)).copied() else { return };
        let request = RequestId(self.fresh());
        self.questions.insert(request, job);
        self.ledger.handle_status(request, &owner(), job);
        self.turn();
    }

    /// A node runs the first chunk it holds and reports (failing it now and then).
    pub(super) fn run_one(&mut self, rng: &mut Rng) {
        let busy: Vec<usize> = (0..self.nodes.len()).filter(|n| !self.nodes[*n].queue.is_empty()).collect();
        let Some(&n) = busy.get(rng.below(busy.len() as u64) as usize) else { return };
        self.run_on(n, rng);
    }

    /// What node `n` holds, in order: `(attempt, job, task)`.
    pub(super) fn queued(&self, n: usize) -> Vec<(AttemptId, JobId, ChunkIndex)> {
        self.nodes[n].queue.iter().map(|(attempt, job, task, _)| (*attempt, *job, *task)).collect()
    }

    /// Node `n` runs the first chunk it holds and reports (failing it now and then).
    pub(super) fn run_on(&mut self, n: usize, rng: &mut Rng) {
        if self.nodes[n].queue.is_empty() {
            return;
        }
        let (attempt, job, _chunk, work) = self.nodes[n].queue.remove(0);
        let input = match &work {
            Work::Run(extent) => self
                .spool
                .get(&job)
                .and_then(|f| f.input.get(extent.offset as usize..(extent.offset + extent.len) as usize))
                .map(<[u8]>::to_vec),
            // The order-sensitive combine of these histories: concatenation, left then right.
            Work::Combine(inputs) => inputs.as_ref().map(|(a, b)| [a.as_slice(), b.as_slice()].concat()),
        };
        let combine = matches!(work, Work::Combine(_));
        let outcome = match input {
            // The dispatcher cannot read the input back (a failed job's files are deleted before
            // its end is durable, and a restart may resume it): the node hears of it as a failure.
            None => Err(ChunkFailure { kind: FailureKind::Node, message: "cannot read the chunk's input".into() }),
            Some(_) if (rng.chance(10) && self.random_traps) || (combine && self.combine_traps) => {
                Err(ChunkFailure { kind: FailureKind::Trap, message: "trapped".into() })
            }
            Some(combined) if combine => {
                *self.combines_run.entry((job, _chunk)).or_default() += 1;
                Ok(Bytes::from(combined))
            }
            Some(input) => Ok(Bytes::from(run(&input))),
        };
        let log = Bytes::from(format!("attempt {attempt} of chunk {_chunk}\n"));
        let mut report = ChunkReport { attempt, outcome, run_nanos: 1_000, log, combined_with: None };
        // Mostly, a node holding chunks 2k and 2k + 1 of a reduce job pre-combines them.
        let sibling = self.nodes[n].queue.iter().position(|(_, j, c, w)| *j == job && *c == _chunk + 1 && matches!(w, Work::Run(_)));
        if let (Some(i), Ok(left), true) = (sibling, &report.outcome, self.node_precombines && self.reduce.contains(&job) && _chunk % 2 == 0 && rng.chance(80)) {
            let (right, _, _, Work::Run(extent)) = self.nodes[n].queue.remove(i) else { unreachable!("matched just above") };
            let input = self.spool.get(&job).and_then(|f| f.input.get(extent.offset as usize..(extent.offset + extent.len) as usize));
            if let Some(input) = input {
                report.outcome = Ok(Bytes::from([left.as_ref(), &run(input)].concat()));
                report.combined_with = Some(right);
                self.precombined += 1;
                self.early_combines += u32::from(self.uploading.contains_key(&job));
            }
        }
        self.nodes[n].unacked.insert(attempt, report.clone());
        let id = self.nodes[n].id;
        self.ledger.handle_report(self.now, id, report);
        self.turn();
    }

    /// The commit in flight finishes: durable, or failed.
    pub(super) fn finish_commit(&mut self, durable: bool) {
        let Some(batch) = self.in_flight.take() else { return };
        if durable {
            self.durable.apply(&batch);
            self.check_extents_synced();
            self.ledger.handle_committed();
            self.turn();
            for job in &batch.released {
                assert!(self.spool.get(job).is_none_or(|f| f.results.is_empty()), "released job {job} kept its results");
            }
        } else {
            let jobs = batch.touched_jobs();
            self.ledger.handle_commit_failed(self.now, &"disk on fire");
            self.turn();
            for job in jobs {
                let summary = self.ledger.summary(&owner(), job);
                assert!(
                    summary.as_ref().map_or(true, |s| s.state.is_finished()),
                    "job {job} outlived the failed commit that carried it: {summary:?}"
                );
            }
        }
    }

    /// Time passes; nodes heartbeat and the ledger's timers fire.
    pub(super) fn wait(&mut self, by: Duration) {
        self.now.at += by;
        self.now.unix_ms += by.as_millis() as u64;
        for node in &self.nodes {
            let beat = Heartbeat { load: 0.0, memory_available: 1 << 33, busy_slots: 0 };
            self.ledger.handle_node_message(self.now, node.id, NodeToDispatcher::Heartbeat(beat));
        }
        if self.ledger.poll_timeout().is_some_and(|t| t <= self.now.at) {
            self.ledger.handle_timeout(self.now);
        }
        self.ledger.handle_tick(self.now);
        self.turn();
    }

    /// The dispatcher crashes and starts again from the journal; unsynced spool bytes are lost,
    /// nodes reconnect and resend what was not acknowledged, clients reattach.
    pub(super) fn restart(&mut self) {
        self.restarts += 1;
        self.in_flight = None;
        for files in self.spool.values_mut() {
            files.input.truncate(files.input_synced as usize);
            files.results.truncate(files.results_synced as usize);
        }
        self.durable.incarnation += 1;
        self.stored_at_restart = self.durable.results.keys().copied().chain(self.covered_by_durable_combines()).collect();
        self.stored.clear();
        // The uploads' connections are lost with the dispatcher.
        self.uploading.clear();
        self.ledger = Ledger::new(ledger_config(self.grace), self.recovered(), self.now);
        self.questions.clear();
        self.accepted.clear();
        let jobs: Vec<JobId> = self.followers.values().map(|f| f.job).collect();
        self.followers.clear();
        for job in jobs {
            let client = ClientId(self.fresh());
            self.follow(job, client);
        }
        // A release that was durable holds across the restart.
        for &job in &self.released {
            let durable = self.durable.jobs.get(&job).is_some_and(|r| r.state == JobState::Succeeded && r.chunks > 0)
                && !self.durable.results.keys().any(|(j, _)| *j == job);
            if durable {
                assert!(
                    matches!(self.ledger.attachable(&owner(), job), Err(Refusal::OutputFetched(_))),
                    "job {job}'s durable release was lost in a restart"
                );
            }
        }
        for n in 0..self.nodes.len() {
            // The nodes outlive the dispatcher: they keep what they were assigned and claim it,
            // and the restarted ledger adopts what it still wants (refusing the rest, which the
            // node then drops on `CancelAttempt`).
            let mut node_info = info(&self.nodes[n].name);
            node_info.claims = self.nodes[n]
                .queue
                .iter()
                .map(|(attempt, job, chunk, _)| wire::proto::Claim { job: *job, chunk: *chunk, attempt: *attempt })
                .collect();
            let id = self.ledger.handle_node_registered(self.now, node_info, "10.0.0.1:1".into());
            self.nodes[n].id = id;
            let resend: Vec<ChunkReport> = self.nodes[n].unacked.values().cloned().collect();
            for report in resend {
                self.ledger.handle_report(self.now, id, report);
            }
        }
        self.turn();
    }

    fn recovered(&self) -> Recovered {
        let jobs = self
            .durable
            .jobs
            .iter()
            .map(|(job, record)| {
                let (inputs, results) = RestoredJob::reads(record);
                let of = |table: &BTreeMap<(JobId, ChunkIndex), Extent>| {
                    table.range((*job, 0)..=(*job, u64::MAX)).map(|((_, c), e)| (*c, *e)).collect::<Vec<_>>()
                };
                // A job failed just before the crash lost its files before its end was durable.
                let gone = (inputs || results) && !self.spool.contains_key(job);
                // A succeeded job whose files are gone was released just before the crash.
                let released_before = gone && !inputs;
                RestoredJob {
                    job: *job,
                    record: record.clone(),
                    inputs: if gone {
                        Err("its spool files are gone".into())
                    } else {
                        Ok(if inputs { of(&self.durable.inputs).into_iter().map(|(_, e)| e).collect() } else { Vec::new() })
                    },
                    results: Ok(if results && !released_before { of(&self.durable.results) } else { Vec::new() }),
                }
            })
            .collect();
        let holds = self.durable.holds.iter().map(|(n, h)| (n.clone(), h.clone())).collect();
        Recovered { next_job: self.durable.next_job, incarnation: self.durable.incarnation, jobs, holds }
    }

    /// Ends a turn and carries out every effect, checking each promise as it is kept.
    pub(super) fn turn(&mut self) {
        self.carry_out();
        self.ledger.end_turn(self.now);
        self.carry_out();
        self.check_spool_use();
    }

    /// Each tenant's spool use is the sum of its jobs' bytes, and a job whose files are gone
    /// counts none.
    fn check_spool_use(&self) {
        let mut sums: HashMap<&str, u64> = HashMap::new();
        for (job, entry) in &self.ledger.jobs {
            if matches!(entry.record.state, JobState::Failed(_) | JobState::Cancelled) {
                assert_eq!(entry.spool_bytes, 0, "failed job {job} still counts its deleted files");
            }
            *sums.entry(entry.record.owner.as_str()).or_default() += entry.spool_bytes;
        }
        sums.retain(|_, bytes| *bytes > 0);
        let counted: HashMap<&str, u64> = self.ledger.spool_use.iter().map(|(t, b)| (t.as_str(), *b)).collect();
        assert_eq!(counted, sums, "tenants' spool use drifted from their jobs' bytes");
    }

    fn carry_out(&mut self) {
        while let Some(effect) = self.ledger.poll_effect() {
            match effect {
                Effect::Node { node, command } => self.command_node(node, command),
                Effect::Client { event, .. } => match event {
                    ClientEvent::InputStored { job, chunks } => {
                        let record = self.durable.jobs.get(&job).expect("InputStored for a job the journal lacks");
                        assert!(record.input_complete && record.chunks == chunks, "InputStored before the input was durable");
                        // A job whose owner already released it (it ran before its input was
                        // durable) has no input left to check.
                        if !self.released.contains(&job) {
                            let files = &self.spool[&job];
                            assert!(
                                self.durable.inputs.range((job, 0)..=(job, u64::MAX)).all(|(_, e)| e.offset + e.len <= files.input_synced),
                                "InputStored while input bytes were unsynced"
                            );
                        }
                    }
                    ClientEvent::Progress(_) | ClientEvent::JobFailed { .. } | ClientEvent::Error { .. } => {}
                    other => panic!("unexpected client event {other:?}"),
                },
                Effect::Attachment { attach, command } => self.deliver(attach, command),
                Effect::Answer { request, answer } => {
                    let job = self.questions.remove(&request).expect("an answer to a question asked");
                    if let Answer::Resume(resumed) = &answer {
                        if let Ok(r) = resumed {
                            // Every chunk before the one the upload resumes from is durable.
                            let durable = self.durable.inputs.range((job, 0)..=(job, u64::MAX)).count() as u64;
                            assert!(r.complete || r.stored == durable, "resumed from {} with {durable} durable", r.stored);
                        }
                        self.resumed.insert(request, resumed.as_ref().map(|r| *r).map_err(|e| e.to_string()));
                    }
                    // A verdict is told only once it is durable.
                    if let super::super::Answer::Summary(Ok(summary)) = &answer {
                        if summary.state.is_finished() {
                            let durable = self.durable.jobs.get(&job).map(|r| &r.state);
                            assert_eq!(durable, Some(&summary.state), "status of job {job} answered before it was durable");
                        }
                    }
                }
                Effect::StoreResult { ticket, output } => {
                    let files = self.spool.entry(ticket.job).or_default();
                    let extent = Extent { offset: files.results.len() as u64, len: output.len() as u64 };
                    files.results.extend_from_slice(&output);
                    self.accepted.insert(ticket.attempt, (ticket.job, ticket.chunk));
                    let first = self.stored.insert((ticket.job, ticket.chunk));
                    assert!(first, "task {} of job {} accepted twice", ticket.chunk, ticket.job);
                    self.ledger.handle_result_stored(self.now, ticket, Ok(extent));
                }
                Effect::Commit { batch, sync_inputs, sync_results } => {
                    assert!(self.in_flight.is_none(), "two commits in flight");
                    for job in &sync_inputs {
                        if let Some(files) = self.spool.get_mut(job) {
                            files.input_synced = files.input.len() as u64;
                        }
                    }
                    for job in &sync_results {
                        if let Some(files) = self.spool.get_mut(job) {
                            files.results_synced = files.results.len() as u64;
                        }
                    }
                    self.in_flight = Some(batch);
                }
                Effect::RemoveSpool(job) => {
                    self.spool.remove(&job);
                }
                Effect::ForgetSpool(job) => {
                    assert!(!self.ledger.knows(job), "the logs of job {job} deleted while it is remembered");
                    self.spool.remove(&job);
                    self.logs.remove(&job);
                }
                Effect::StoreLog(record) => {
                    assert!(self.ledger.knows(record.job), "a log stored for unknown job {}", record.job);
                    let expect = format!("attempt {} of chunk {}\n", record.attempt, record.chunk);
                    assert_eq!(record.log, expect.as_bytes(), "a log stored under another attempt or chunk");
                    self.logs.entry(record.job).or_default().push(record);
                }
            }
        }
    }

    fn command_node(&mut self, id: NodeId, command: NodeCommand) {
        let Some(node) = self.nodes.iter_mut().find(|n| n.id == id) else { return };
        match command {
            NodeCommand::Assign { job, chunk, attempt, input } => {
                assert!(
                    !self.stored_at_restart.contains(&(job, chunk)),
                    "chunk {chunk} of job {job} rerun although its result was stored before the restart"
                );
                node.queue.push((attempt, job, chunk, Work::Run(input)));
            }
            NodeCommand::Combine { job, chunk, attempt, inputs: (left, right) } => {
                assert!(self.reduce.contains(&job), "a combine of job {job}, which does not reduce");
                assert!(
                    !self.stored_at_restart.contains(&(job, chunk)),
                    "combine {chunk} of job {job} rerun although its result was stored before the restart"
                );
                // Its inputs are durable, so a restart never loses what a running combine uses.
                let journaled = |e: Extent| self.durable.results.range((job, 0)..=(job, u64::MAX)).any(|(_, d)| *d == e);
                assert!(journaled(left) && journaled(right), "combine {chunk} of job {job} assigned before its inputs were durable");
                let files = self.spool.get(&job);
                let read = |e: Extent| files?.results.get(e.offset as usize..(e.offset + e.len) as usize).map(<[u8]>::to_vec);
                let inputs = read(left).zip(read(right));
                *self.combines_assigned.entry((job, chunk)).or_default() += 1;
                self.early_combines += u32::from(self.uploading.contains_key(&job));
                node.queue.push((attempt, job, chunk, Work::Combine(inputs)));
            }
            NodeCommand::Send(DispatcherToNode::Ack { attempts }) => {
                for attempt in attempts {
                    node.unacked.remove(&attempt);
                    if let Some((job, chunk)) = self.accepted.get(&attempt) {
                        assert!(
                            self.durable.settles(*job, *chunk),
                            "report of chunk {chunk} of job {job} acknowledged before its result was durable"
                        );
                    }
                }
            }
            NodeCommand::Send(DispatcherToNode::CancelAttempt { attempt }) => node.queue.retain(|(a, ..)| *a != attempt),
            NodeCommand::Send(_) | NodeCommand::Payload(_) | NodeCommand::Close(_) => {}
        }
    }

    /// An attachment receives a result or its verdict: results come once each, in chunk order,
    /// and a success comes after every one of them.
    fn deliver(&mut self, attach: AttachId, command: AttachCommand) {
        let follower = self.followers.get_mut(&attach).expect("a command for a known attachment");
        assert!(!follower.done, "attachment {attach:?} told something after its verdict");
        let inputs = &self.submitted[&follower.job];
        // A reduce job's output is one result: every chunk's, concatenated in order, once each.
        let reduce = self.reduce.contains(&follower.job);
        let outputs = if reduce { inputs.len().min(1) } else { inputs.len() };
        match command {
            AttachCommand::Output(_) | AttachCommand::Result(_) => {
                let files = &self.spool[&follower.job];
                let bytes = match &command {
                    AttachCommand::Output(extent) => &files.results[extent.offset as usize..(extent.offset + extent.len) as usize],
                    AttachCommand::Result(bytes) => &bytes[..],
                    _ => unreachable!("matched above"),
                };
                let expected = if reduce {
                    assert_eq!(follower.next, 0, "a reduce job sent more than one result");
                    inputs.iter().flat_map(|input| run(input)).collect()
                } else {
                    run(&inputs[follower.next as usize])
                };
                assert_eq!(bytes, expected.as_slice(), "chunk {} of job {} out of order or wrong", follower.next, follower.job);
                follower.next += 1;
            }
            AttachCommand::OutputEnd => {
                assert_eq!(follower.next as usize, outputs, "output ended before every result was sent");
            }
            AttachCommand::Event(ClientEvent::JobSucceeded { .. }) => {
                assert_eq!(follower.next as usize, outputs, "success before every result was sent");
                follower.done = true;
                self.verdicts += 1;
            }
            AttachCommand::Event(ClientEvent::JobFailed { .. }) => {
                follower.done = true;
                self.verdicts += 1;
            }
            AttachCommand::Event(_) => {}
        }
    }

    /// Whether every submitted job is over, in the ledger's eyes.
    pub(super) fn all_finished(&self) -> bool {
        self.submitted.keys().all(|job| self.ledger.summary(&owner(), *job).map_or(true, |s| s.state.is_finished()))
    }

    /// Whether a commit is in flight.
    pub(super) fn committing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Journal extents of live jobs point at synced bytes, results and inputs (a cut-off upload
    /// resumes after the last one journaled). (A failed job's files are deleted while the
    /// journal still names them.)
    fn check_extents_synced(&self) {
        let live = |job: &JobId| self.durable.jobs.get(job).is_some_and(|r| matches!(r.state, JobState::Running | JobState::Succeeded));
        for ((job, chunk), extent) in self.durable.results.iter().filter(|((job, _), _)| live(job)) {
            let synced = self.spool.get(job).map_or(u64::MAX, |f| f.results_synced);
            assert!(extent.offset + extent.len <= synced, "result of chunk {chunk} of job {job} durable but unsynced: {extent:?} synced {synced} restarts {} state {:?}", self.restarts, self.durable.jobs.get(job).map(|r| &r.state));
        }
        for job in self.durable.jobs.keys().filter(|job| live(job)) {
            let synced = self.spool.get(job).map_or(u64::MAX, |f| f.input_synced);
            for (_, extent) in self.durable.inputs.range((*job, 0)..=(*job, u64::MAX)) {
                assert!(extent.offset + extent.len <= synced, "input of job {job} durable but unsynced");
            }
        }
    }
}

pub(super) fn config() -> SchedulerConfig {
    // Random traps would otherwise quarantine every node now and then (the scheduler's business,
    // tested in its own harness), and the jobs would wait out their placement timeout.
    SchedulerConfig { node_timeout: Duration::from_secs(5), quarantine_threshold: u32::MAX, ..SchedulerConfig::default() }
}

pub(super) fn info(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        hostname: name.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        slots: SLOTS,
        cores: SLOTS,
        memory_total: 1 << 34,
        memory_available: 1 << 33,
        version: "test".into(),
        cached_payloads: Vec::new(),
        confinement: wire::proto::Confinement::Landlock,
        claims: Vec::new(),
        object_store_buckets: Vec::new(),
        shared_input_roots: Vec::new(),
        host_id: String::new(),
    }
}

pub(super) fn submission() -> JobSubmission {
    JobSubmission {
        name: "job".into(),
        payload: PayloadHash::of(b"payload"),
        payload_len: 7,
        kind: PayloadKind::Wasm,
        args: Vec::new(),
        max_attempts: 4,
        chunk_timeout_ms: 60_000,
        memory_limit: 1 << 20,
        priority: 0,
        placement_timeout_ms: Some(600_000),
        output: "out".into(),
        results: ResultMode::Concat,
        shared_input: false,
    }
}

/// The tenant every job of these histories belongs to.
pub(super) fn owner() -> Caller {
    Caller { name: "alice".into(), operator: false }
}

fn ledger_config(input_grace: Duration) -> LedgerConfig {
    LedgerConfig { scheduler: config(), retention: Duration::from_secs(3600), quotas: Default::default(), input_grace }
}
