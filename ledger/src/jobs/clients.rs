//! Who follows a job, and what clients hear: results in chunk order and verdicts for every attachment, progress and
//! why a job waits, and the summaries `status` and `jobs` show.

use bytes::Bytes;
use wire::proto::{ChunkIndex, ClientEvent, JobFailure, JobId, JobState, JobSummary, NodeStatus};

use super::entries::Attacher;
use super::{AttachCommand, AttachId, Caller, ClientId, Effect, Ledger, Refusal, Time};

impl Ledger {
    /// Whether `caller` can follow `job`, and if so whether it has results to read (it is
    /// running or succeeded), so the driver opens its results file before
    /// [`Ledger::handle_attach`].
    ///
    /// # Errors
    /// [`Refusal::UnknownJob`], also for another tenant's job.
    pub fn attachable(&self, caller: &Caller, job: JobId) -> Result<bool, Refusal> {
        let entry = self.visible(caller, job)?;
        if entry.released {
            return Err(Refusal::OutputFetched(job));
        }
        Ok(matches!(entry.record.state, JobState::Running | JobState::Succeeded))
    }

    /// A client connection follows `job` through `attach`: it is sent every result from the
    /// first, in chunk order, then the verdict. Call after [`Ledger::attachable`] said yes.
    pub fn handle_attach(&mut self, job: JobId, attach: AttachId, client: ClientId) {
        if let Some(entry) = self.jobs.get_mut(&job) {
            entry.attachers.push(Attacher { attach, client, next: 0 });
            self.touched.insert(job);
        }
    }

    /// An attachment's client went away.
    pub fn handle_attachment_closed(&mut self, job: JobId, attach: AttachId) {
        if let Some(entry) = self.jobs.get_mut(&job) {
            entry.attachers.retain(|a| a.attach != attach);
        }
    }

    /// Streams a result just accepted to the attachments whose next result it is, before it is
    /// stored: the spool keeps it for later attachments, and the disk thread's round trip stays
    /// off the path of a client waiting for each result in turn. A reduce job's results are not
    /// its output.
    pub(super) fn stream_accepted(&mut self, job: JobId, chunk: ChunkIndex, output: &Bytes) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        if entry.reduces() || entry.record.state != JobState::Running {
            return;
        }
        for attacher in entry.attachers.iter_mut().filter(|a| a.next == chunk) {
            let command = AttachCommand::Result(output.clone());
            self.effects.push_back(Effect::Attachment { attach: attacher.attach, command });
            attacher.next += 1;
        }
    }

    /// Sends a job's clients what changed: results in order, the verdict, and to a submitter
    /// still waiting for `InputStored` the news that the job failed first.
    pub(super) fn notify(&mut self, job: JobId) {
        let scheduled = self.scheduler.progress(job);
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let failed = match &entry.record.state {
            JobState::Failed(failure) => Some(ClientEvent::JobFailed { failure: failure.clone() }),
            JobState::Cancelled => Some(ClientEvent::Error { message: format!("job {job} was cancelled") }),
            JobState::Running | JobState::Succeeded => None,
        };
        if let Some(event) = failed {
            if let Some(submitter) = entry.submitter.take() {
                // A submitter following its own job hears the verdict once, from the attachment.
                if !entry.attachers.iter().any(|a| a.client == submitter) {
                    self.effects.push_back(Effect::Client { client: submitter, event });
                }
            }
        }
        let progress = entry.progress(scheduled);
        let state = entry.record.state.clone();
        let effects = &mut self.effects;
        let mut attachers = std::mem::take(&mut entry.attachers);
        attachers.retain_mut(|attacher| {
            let tell = |command| Effect::Attachment { attach: attacher.attach, command };
            if !matches!(state, JobState::Failed(_) | JobState::Cancelled) {
                while let Some(extent) = entry.output_at(attacher.next) {
                    effects.push_back(tell(AttachCommand::Output(extent)));
                    attacher.next += 1;
                }
            }
            let verdict = match &state {
                JobState::Running => return true,
                JobState::Succeeded => {
                    effects.push_back(tell(AttachCommand::OutputEnd));
                    ClientEvent::JobSucceeded { progress }
                }
                JobState::Failed(failure) => ClientEvent::JobFailed { failure: failure.clone() },
                JobState::Cancelled => {
                    ClientEvent::JobFailed { failure: JobFailure::Other { message: format!("job {job} was cancelled") } }
                }
            };
            effects.push_back(tell(AttachCommand::Event(verdict)));
            false
        });
        entry.attachers = attachers;
    }

    /// Sends a running job's progress, if it changed, to its attached clients, or while it has
    /// none to its submitter (which may be sizing `auto` chunks from it); and why it waits, if
    /// that changed, to its attached clients.
    pub(super) fn send_progress_of(&mut self, job: JobId) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        if (entry.attachers.is_empty() && entry.submitter.is_none()) || entry.record.state != JobState::Running {
            return;
        }
        let Some(scheduled) = self.scheduler.progress(job) else { return };
        entry.retries = scheduled.retries;
        entry.attempts = scheduled.attempts;
        let progress = entry.progress(Some(scheduled));
        if entry.last_progress != Some(progress) {
            entry.last_progress = Some(progress);
            for attacher in &entry.attachers {
                let command = AttachCommand::Event(ClientEvent::Progress(progress));
                self.effects.push_back(Effect::Attachment { attach: attacher.attach, command });
            }
            if let (true, Some(submitter)) = (entry.attachers.is_empty(), entry.submitter) {
                self.effects.push_back(Effect::Client { client: submitter, event: ClientEvent::Progress(progress) });
            }
        }
        let blocked = self.scheduler.blocked_reason(job).map(|b| b.to_string());
        if blocked != entry.last_blocked {
            if let Some(reason) = &blocked {
                for attacher in &entry.attachers {
                    let command = AttachCommand::Event(ClientEvent::Waiting { reason: reason.clone() });
                    self.effects.push_back(Effect::Attachment { attach: attacher.attach, command });
                }
            }
            entry.last_blocked = blocked;
        }
    }

    /// A job as `status` and `jobs` show it to `caller`.
    pub(super) fn summary(&self, caller: &Caller, job: JobId) -> Result<JobSummary, Refusal> {
        let entry = self.visible(caller, job)?;
        let scheduled = self.scheduler.progress(job);
        Ok(JobSummary {
            job,
            owner: entry.record.owner.clone(),
            name: entry.record.submission.name.clone(),
            state: entry.record.state.clone(),
            progress: entry.progress(scheduled),
            submitted_unix_ms: entry.record.submitted_unix_ms,
            blocked: self.scheduler.blocked_reason(job).map(|b| b.to_string()),
            output: entry.record.submission.output.clone(),
            results: entry.record.submission.results,
        })
    }

    /// Every job `caller` may see, as `jobs` lists them, by id.
    pub(super) fn summaries(&self, caller: &Caller) -> Vec<JobSummary> {
        let mut ids: Vec<JobId> = self.jobs.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|j| self.summary(caller, j).ok()).collect()
    }

    /// The connected nodes as `nodes` lists them, by name, and the drained or quarantined names
    /// with no node connected (address `-`, state `drained, not connected`).
    pub fn node_statuses(&self, now: Time) -> Vec<NodeStatus> {
        let mut list: Vec<NodeStatus> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeStatus {
                name: n.info.name.clone(),
                address: n.address.clone(),
                hostname: n.info.hostname.clone(),
                os: n.info.os.clone(),
                arch: n.info.arch.clone(),
                cores: n.info.cores,
                version: n.info.version.clone(),
                slots: n.info.slots,
                busy: n.busy,
                in_flight: self.scheduler.node_in_flight(*id).unwrap_or(0),
                memory_total: n.info.memory_total,
                memory_available: n.memory_available,
                load: n.load,
                last_heartbeat_ms: now.at.saturating_duration_since(n.last_heartbeat).as_millis() as u64,
                state: self.scheduler.node_state(*id).map_or_else(|| "unknown".into(), |s| s.to_string()),
                confinement: n.info.confinement.to_string(),
                // The connection tasks know the certificates; they fill this in.
                cert_expires_unix: 0,
                object_store_buckets: n.info.object_store_buckets.clone(),
                shared_input_roots: n.info.shared_input_roots.clone(),
                host_id: n.info.host_id.clone(),
            })
            .collect();
        // Held names with no session connected, so an operator sees what `undrain` would release.
        let away: Vec<NodeStatus> = self
            .scheduler
            .holds()
            .filter(|(name, _)| !self.nodes.values().any(|n| n.info.name == *name))
            .map(|(name, hold)| NodeStatus {
                name: name.to_owned(),
                address: "-".into(),
                state: match &hold.quarantine {
                    Some(reason) => format!("quarantined, not connected: {reason}"),
                    None => "drained, not connected".into(),
                },
                ..NodeStatus::default()
            })
            .collect();
        list.extend(away);
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}
