//! How decisions become durable: the scheduler's actions carried into effects, accepted results
//! stored, job ends recorded, and each turn's journal batch committed with the promises it
//! carries, which are kept only once it is durable.

use std::fmt::Display;
use std::time::Duration;

use tracing::{debug, info, warn};
use wire::proto::{ClientEvent, DispatcherToNode, JobFailure, JobId, JobSpec, JobState};

use super::{Answer, Effect, Held, Ledger, LOG_TARGET, NodeCommand, Observation, Question, Refusal, RequestId, StoreTicket, Time};
use crate::record::Extent;
use crate::scheduler::{Action, NodeId, Notice};

impl Ledger {
    /// An accepted result was appended to the job's results spool at `stored`'s extent (or could
    /// not be). Its report is acknowledged with the commit that records it.
    pub fn handle_result_stored(&mut self, now: Time, ticket: StoreTicket, stored: std::io::Result<Extent>) {
        let StoreTicket { job, chunk, node, attempt, run_nanos } = ticket;
        self.promises.ack(node, attempt);
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        entry.unstored = entry.unstored.saturating_sub(1);
        if entry.record.state.is_finished() {
            return;
        }
        match stored {
            Ok(extent) => {
                let input_chunk = (chunk as usize) < entry.inputs.len();
                if let Some(slot) = entry.result_slot(chunk) {
                    *slot = Some(extent);
                    // A reduce job's combines are not chunks of its progress, of the run time
                    // that sizes `auto` chunks, or of the chunks its metrics count.
                    entry.done += u64::from(input_chunk);
                    if input_chunk {
                        entry.run_nanos = entry.run_nanos.saturating_add(run_nanos);
                        let tenant = entry.record.owner.clone();
                        let completed = Observation::ChunkCompleted { tenant, run: Duration::from_nanos(run_nanos), bytes: extent.len };
                        self.observations.push(completed);
                    }
                }
                let succeeded = entry.succeeded && entry.unstored == 0;
                let awaits_input = entry.awaits_input();
                self.batch.results.push((job, chunk, extent));
                self.dirty_results.insert(job);
                self.touched.insert(job);
                // Results count toward the owner's spool until fetched, but never fail the job:
                // the quota holds back new submissions instead.
                self.charge_spool_anyway(job, extent.len);
                if succeeded {
                    self.finish(now, job, JobState::Succeeded);
                } else if awaits_input {
                    // Everything sent so far is done and the submitter holds the rest back (an
                    // `auto` rule measuring its probe): tell it now rather than at the next tick.
                    self.send_progress_of(job);
                }
            }
            Err(e) => {
                warn!(target: LOG_TARGET, %job, chunk, error = %e, "cannot store a result");
                self.fail(now, job, format!("dispatcher storage failed while storing chunk {chunk}'s result: {e}"));
            }
        }
    }

    /// A chunk's input could not be read back from the spool: the job fails.
    pub fn handle_input_unreadable(&mut self, now: Time, job: JobId, chunk: u64, error: &dyn Display) {
        warn!(target: LOG_TARGET, %job, chunk, error = %error, "cannot read a chunk's input");
        self.fail(now, job, format!("dispatcher storage failed while reading chunk {chunk}'s input: {error}"));
    }

    /// The last [`Effect::Commit`] is durable: its promises are kept.
    pub fn handle_committed(&mut self) {
        self.policy.handle_committed();
        self.partials_committed(true);
        for (job, stored) in std::mem::take(&mut self.in_flight_inputs) {
            if let Some(entry) = self.jobs.get_mut(&job) {
                entry.stored = entry.stored.max(stored);
            }
        }
        if let Some((promises, _)) = self.in_flight.take() {
            self.keep(promises);
        }
    }

    /// The last [`Effect::Commit`] failed: the jobs it concerned fail, since what it recorded
    /// of them may be lost, and its promises wait for the next commit, which records that. The
    /// files of jobs it forgot stay, for a restarted dispatcher to restore (and expire).
    pub fn handle_commit_failed(&mut self, now: Time, error: &dyn Display) {
        self.policy.handle_committed();
        self.partials_committed(false);
        self.in_flight_inputs.clear();
        let Some((promises, jobs)) = self.in_flight.take() else { return };
        warn!(target: LOG_TARGET, %error, "journal commit failed; failing the jobs it concerned");
        // The lost batch may have carried the next job id: ids handed out must never return.
        self.batch.next_job = Some(self.next_job);
        // It may have carried holds on node names, or their release: record every known name's
        // hold as it stands now (rare, so every name ever seen is cheap enough).
        let mut names: Vec<String> = self.seen_nodes.iter().cloned().collect();
        names.sort_unstable();
        for name in names {
            let hold = self.scheduler.hold(&name).cloned();
            self.batch.put_hold(&name, hold);
        }
        for job in jobs {
            self.scheduler.handle_cancel(now.at, job);
            // Whatever the lost batch said of the job (even that it ended), the journal must now
            // record its failure.
            if let Some(entry) = self.jobs.get_mut(&job) {
                entry.record.state = JobState::Running;
            }
            let failure = JobFailure::Other { message: format!("dispatcher storage failed: {error}") };
            self.finish(now, job, JobState::Failed(failure));
        }
        // What the lost batch's answers said was never recorded; the rest of its promises wait
        // for the next batch, which records the failures.
        let mut promises = promises;
        for (request, question) in promises.answers.drain(..) {
            let refusal = Refusal::Unrecorded(error.to_string());
            let answer = match question {
                Question::Summary(..) => Answer::Summary(Err(refusal)),
                Question::Jobs(..) => Answer::Jobs(Err(refusal)),
                Question::Nodes(..) => Answer::Nodes(Err(refusal)),
                Question::Resume(..) => Answer::Resume(Err(refusal)),
            };
            self.effects.push_back(Effect::Answer { request, answer });
        }
        // Answers gathering for the next batch were given before the failures it now records.
        let mut gathering = std::mem::take(&mut self.promises.answers);
        for (_, question) in &mut gathering {
            match question {
                Question::Summary(caller, job, answer) => *answer = self.summary(caller, *job),
                Question::Jobs(caller, jobs) => *jobs = self.summaries(caller),
                // The nodes table and where an upload resumes do not change; a job failed
                // meanwhile stops the upload.
                Question::Nodes(_) | Question::Resume(_) => {}
            }
        }
        self.promises.answers = gathering;
        self.promises.absorb(promises);
    }

    /// On a graceful stop: commits whatever is gathering, regardless of spacing. Returns whether
    /// an [`Effect::Commit`] was queued.
    pub fn flush(&mut self, now: Time) -> bool {
        let pending = !self.batch.is_empty() || !self.promises.is_empty();
        if pending && self.policy.force(now.at) {
            self.send_batch();
            true
        } else {
            false
        }
    }

    /// Carries out the scheduler's decisions.
    pub(super) fn apply_actions(&mut self, now: Time) {
        while let Some(action) = self.scheduler.poll_action() {
            match action {
                Action::StartJob { node, job } => self.start_job(node, job),
                Action::Assign { node, job, chunk, attempt, speculative } => {
                    if let Some(inputs) = self.combine_inputs(job, chunk) {
                        if speculative {
                            info!(target: LOG_TARGET, %job, chunk, combine = true, node = %self.node_name(node), "speculative copy of a straggling chunk");
                        } else {
                            debug!(target: LOG_TARGET, %job, chunk, %attempt, node = %self.node_name(node), "combine assigned");
                        }
                        self.send_node(node, NodeCommand::Combine { job, chunk, attempt, inputs });
                        continue;
                    }
                    let Some(input) = self.jobs.get(&job).and_then(|e| e.inputs.get(chunk as usize)).copied() else {
                        self.handle_input_unreadable(now, job, chunk, &"unknown chunk");
                        continue;
                    };
                    if speculative {
                        info!(target: LOG_TARGET, %job, chunk, node = %self.node_name(node), "speculative copy of a straggling chunk");
                    } else {
                        debug!(target: LOG_TARGET, %job, chunk, %attempt, node = %self.node_name(node), "chunk assigned");
                    }
                    self.send_node(node, NodeCommand::Assign { job, chunk, attempt, input });
                    self.observe_assigned(now, job, chunk, speculative);
                }
                Action::CancelAttempt { node, attempt } => {
                    self.send_node(node, NodeCommand::Send(DispatcherToNode::CancelAttempt { attempt }));
                }
                Action::EndJob { node, job } => self.send_node(node, NodeCommand::Send(DispatcherToNode::EndJob { job })),
                Action::DropNode { node, reason } => {
                    // The scheduler has already requeued the node's attempts.
                    if let Some(entry) = self.nodes.remove(&node) {
                        info!(target: LOG_TARGET, node = %entry.info.name, %reason, "node lost");
                        self.send_node(node, NodeCommand::Close(reason));
                    } else if let Some(name) = self.away.remove(&node) {
                        info!(target: LOG_TARGET, node = %name, %reason, "node lost");
                    }
                }
                Action::JobSucceeded { job, stats } => {
                    info!(target: LOG_TARGET, %job, retries = stats.retries, speculative = stats.speculative, "job succeeded");
                    let Some(entry) = self.jobs.get_mut(&job) else { continue };
                    entry.retries = stats.retries;
                    entry.attempts = stats.attempts;
                    if entry.unstored > 0 {
                        // Its last results are on their way to the spool; it ends with them.
                        entry.succeeded = true;
                    } else {
                        self.finish(now, job, JobState::Succeeded);
                    }
                }
                Action::JobFailed { job, failure, stats } => {
                    let failure = self.reword_failure(job, failure);
                    warn!(target: LOG_TARGET, %job, retries = stats.retries, "job failed: {failure}");
                    if let Some(entry) = self.jobs.get_mut(&job) {
                        entry.retries = stats.retries;
                        entry.attempts = stats.attempts;
                    }
                    self.finish(now, job, JobState::Failed(failure));
                }
            }
        }
        while let Some(notice) = self.scheduler.poll_notice() {
            match notice {
                Notice::NodeSuspect { node, silent } => {
                    warn!(target: LOG_TARGET, node = %self.node_name(node), silent_ms = silent.as_millis() as u64, "node suspect: heartbeats late");
                }
                Notice::NodeRecovered { node } => info!(target: LOG_TARGET, node = %self.node_name(node), "node recovered"),
                Notice::NodeQuarantined { node, reason } => {
                    let name = self.node_name(node);
                    warn!(target: LOG_TARGET, node = %name, %reason, "node quarantined");
                    // Held by name until an operator undrains it, across reconnects and restarts.
                    let hold = self.scheduler.hold(&name).cloned();
                    self.batch.put_hold(&name, hold);
                }
            }
        }
    }

    /// Ends a turn: tells clients what changed, and hands the turn's journal changes to the
    /// journal when the policy says so (otherwise they wait for a later commit).
    pub(super) fn commit(&mut self, now: Time) {
        let mut touched: Vec<JobId> = self.touched.drain().collect();
        touched.sort_unstable();
        for job in touched {
            self.notify(job);
        }
        let pending = !self.batch.is_empty() || !self.promises.is_empty();
        // A reduce job's combines wait for their inputs to be durable: they are awaited too.
        let awaited = self.promises.awaited() || self.partials_waiting();
        if self.policy.poll_commit(now.at, pending, awaited) {
            self.send_batch();
        }
    }

    /// Sends `answer` once the state it describes is durable: at once when nothing is waiting
    /// to be committed, otherwise with the commit of the batch gathering now.
    pub(super) fn answer(&mut self, request: RequestId, question: Question) {
        if self.batch.is_empty() && !self.policy.in_flight() {
            self.effects.push_back(Effect::Answer { request, answer: question.into_answer() });
        } else {
            self.promises.answers.push((request, question));
        }
    }

    /// Records a job's end; clients hear of it at the end of the turn. Failed and cancelled
    /// jobs' spooled data goes at once; a succeeded job's results stay until fetched or expired.
    pub(super) fn finish(&mut self, now: Time, job: JobId, state: JobState) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        if entry.record.state.is_finished() {
            return;
        }
        if state != JobState::Succeeded {
            // Its files go at once, even before its end is durable: when they filled the disk,
            // that is what lets the end be recorded. A restart before then resumes the job only
            // to fail it again, reading its input.
            entry.results.iter_mut().chain(&mut entry.partials).for_each(|r| *r = None);
            self.effects.push_back(Effect::RemoveSpool(job));
        }
        let files_go = state != JobState::Succeeded;
        entry.record.state = state;
        entry.record.finished_unix_ms = Some(now.unix_ms);
        self.batch.jobs.push((job, entry.record.clone()));
        self.touched.insert(job);
        if files_go {
            self.discharge_spool(job);
        }
    }

    /// Forgets a finished job; its files go once the journal no longer points at them.
    pub(super) fn forget(&mut self, job: JobId) {
        self.discharge_spool(job);
        self.jobs.remove(&job);
        self.batch.deleted.push(job);
        self.promises.removals.push(job);
    }

    pub(super) fn purge_expired(&mut self, now: Time) {
        let cutoff = now.unix_ms.saturating_sub(self.retention.as_millis() as u64);
        let mut expired: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, e)| e.record.finished_unix_ms.is_some_and(|t| t < cutoff))
            .map(|(j, _)| *j)
            .collect();
        expired.sort_unstable();
        for job in expired {
            debug!(target: LOG_TARGET, %job, "job expired");
            self.forget(job);
        }
    }

    /// Sends a node a job's spec, and the payload unless it has it.
    fn start_job(&mut self, node: NodeId, job: JobId) {
        let (Some(job_entry), Some(node_entry)) = (self.jobs.get(&job), self.nodes.get_mut(&node)) else {
            return;
        };
        let sub = &job_entry.record.submission;
        let spec = JobSpec {
            job,
            payload: sub.payload,
            kind: sub.kind.clone(),
            args: sub.args.clone(),
            memory_limit: sub.memory_limit,
            chunk_timeout_ms: sub.chunk_timeout_ms,
            shared_input: sub.shared_input,
            reduce: sub.results == wire::proto::ResultMode::Reduce,
        };
        let payload = sub.payload;
        let ship = node_entry.payloads.insert(payload);
        if ship {
            debug!(target: LOG_TARGET, node = %node_entry.info.name, ?payload, "shipping payload");
        }
        self.send_node(node, NodeCommand::Send(DispatcherToNode::StartJob(spec)));
        if ship {
            self.send_node(node, NodeCommand::Payload(payload));
        }
    }

    /// Hands the gathered batch to the journal, holding its promises until it is durable.
    fn send_batch(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        self.partials_sent(&batch);
        let jobs = batch.touched_jobs();
        let mut sync_results: Vec<JobId> = self.dirty_results.drain().collect();
        sync_results.sort_unstable();
        // Input extents point at synced bytes once journaled, so a resumed upload may go on
        // after the last chunk journaled: the input files they point into are synced first.
        let mut sync_inputs = std::mem::take(&mut self.input_syncs);
        let mut stored: Vec<(JobId, u64)> = Vec::new();
        for (job, chunk, _) in &batch.inputs {
            match stored.last_mut() {
                Some((last, count)) if last == job => *count = (*count).max(chunk + 1),
                _ => stored.push((*job, chunk + 1)),
            }
        }
        sync_inputs.extend(stored.iter().map(|(job, _)| *job));
        sync_inputs.sort_unstable();
        sync_inputs.dedup();
        self.in_flight_inputs = stored;
        self.in_flight = Some((std::mem::take(&mut self.promises), jobs));
        self.effects.push_back(Effect::Commit { batch, sync_inputs, sync_results });
    }

    /// Keeps a durable commit's promises.
    fn keep(&mut self, promises: Held) {
        let mut acks: Vec<_> = promises.acks.into_iter().collect();
        acks.sort_unstable_by_key(|(node, _)| *node);
        for (node, attempts) in acks {
            if self.nodes.contains_key(&node) {
                self.send_node(node, NodeCommand::Send(DispatcherToNode::Ack { attempts }));
            }
        }
        for job in promises.removals {
            self.effects.push_back(Effect::ForgetSpool(job));
        }
        for job in promises.releases {
            self.effects.push_back(Effect::RemoveSpool(job));
        }
        for (request, question) in promises.answers {
            self.effects.push_back(Effect::Answer { request, answer: question.into_answer() });
        }
        for job in promises.stored {
            let Some(entry) = self.jobs.get_mut(&job) else { continue };
            if entry.record.state != JobState::Running && entry.record.state != JobState::Succeeded {
                continue;
            }
            if let Some(client) = entry.submitter.take() {
                let event = ClientEvent::InputStored { job, chunks: entry.record.chunks };
                self.effects.push_back(Effect::Client { client, event });
            }
        }
    }
}

impl Question {
    fn into_answer(self) -> Answer {
        match self {
            Question::Summary(_, _, summary) => Answer::Summary(summary),
            Question::Jobs(_, jobs) => Answer::Jobs(Ok(jobs)),
            Question::Nodes(nodes) => Answer::Nodes(Ok(nodes)),
            Question::Resume(resumed) => Answer::Resume(resumed),
        }
    }
}
