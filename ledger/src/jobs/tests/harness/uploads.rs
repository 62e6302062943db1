//! Uploads that take their time: a job's input sent in pieces while its chunks (and a reduce
//! job's combines) already run, cut off, and resumed.

use wire::proto::JobId;

use super::super::super::{Caller, ClientId, RequestId, Resumed};
use super::{Rng, World};
use crate::record::Extent;

impl World {
    /// A client submits a job of `chunks` chunks, a reduce job if `reduce`, and follows it; its
    /// input goes a few chunks at a time with [`World::upload_some`].
    pub(in super::super) fn submit_streaming(&mut self, chunks: usize, reduce: bool) -> JobId {
        let inputs = (0..chunks).map(|c| vec![0x5e, c as u8, 7, 9]).collect();
        let (job, _) = self.begin_upload_as(inputs, reduce);
        self.uploading.insert(job, 0);
        job
    }

    /// One upload under way sends its next one to three chunks, and ends with its last.
    pub(in super::super) fn upload_some(&mut self, rng: &mut Rng) {
        let jobs: Vec<JobId> = self.uploading.keys().copied().collect();
        let Some(&job) = jobs.get(rng.below(jobs.len() as u64) as usize) else { return };
        let (next, total) = (self.uploading[&job], self.submitted[&job].len());
        let until = (next + 1 + rng.below(3) as usize).min(total);
        if until == total {
            self.uploading.remove(&job);
        } else {
            self.uploading.insert(job, until);
        }
        self.upload(job, next..until, until == total);
    }

    /// A client submits a job whose input is `inputs`, and follows it; the input is sent with
    /// [`World::upload`].
    pub(in super::super) fn begin_upload(&mut self, inputs: Vec<Vec<u8>>) -> (JobId, ClientId) {
        self.begin_upload_as(inputs, false)
    }

    /// As [`World::begin_upload`], of a reduce job if `reduce`.
    pub(in super::super) fn begin_upload_as(&mut self, inputs: Vec<Vec<u8>>, reduce: bool) -> (JobId, ClientId) {
        let (job, client) = self.accepted_submission(reduce);
        self.spool.entry(job).or_default();
        self.submitted.insert(job, inputs);
        self.follow(job, client);
        self.turn();
        (job, client)
    }

    /// The submitter sends chunks `range` of its job's input, and ends it if `end`.
    pub(in super::super) fn upload(&mut self, job: JobId, range: std::ops::Range<usize>, end: bool) {
        for c in range {
            let input = self.submitted[&job][c].clone();
            let Some(files) = self.spool.get_mut(&job) else { return };
            let extent = Extent { offset: files.input.len() as u64, len: input.len() as u64 };
            files.input.extend_from_slice(&input);
            self.ledger.handle_input(self.now, job, extent);
        }
        if end {
            self.ledger.handle_input_end(self.now, job);
        }
        self.turn();
    }

    /// The connection uploading `job`'s input is lost.
    pub(in super::super) fn cut_upload(&mut self, job: JobId) {
        self.ledger.handle_input_interrupted(self.now, job);
        self.turn();
    }

    /// `caller` on `client` resumes `job`'s upload (and follows the job); the answer, once given.
    pub(in super::super) fn resume(&mut self, job: JobId, client: ClientId, caller: &Caller) -> Option<Result<Resumed, String>> {
        let request = RequestId(self.fresh());
        self.questions.insert(request, job);
        self.ledger.handle_resume_input(request, client, caller, job);
        self.turn();
        self.resume_answer(request)
    }

    /// The answer to the last resume question still unanswered, if it has come.
    pub(in super::super) fn resume_answer(&mut self, request: RequestId) -> Option<Result<Resumed, String>> {
        self.resumed.remove(&request)
    }
}
