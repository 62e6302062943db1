//! Reattachment: a node that registers again keeps what it holds. Its claims (the attempts it
//! kept from an earlier session) are adopted onto its new session when the scheduler still wants
//! them: attempts of its superseded session of the same name move over under the same ids, and
//! after a dispatcher restart the restored chunks awaiting a claim during the reattach grace are
//! adopted under the ids a node reports. Everything else it claims is refused. When the grace
//! ends, the chunks nobody claimed are requeued.
//!
//! Fencing stays exact: an adopted attempt is a live attempt like any other (results are
//! accepted for live attempts only, once per chunk), a chunk is adopted at most once and only
//! while nothing else of it is in flight or queued, and only ids this scheduler's lifetime or an
//! earlier one handed out (below `next_attempt`) are adopted, so new ids never collide with them.

use std::time::Instant;

use wire::proto::{ChunkIndex, Claim, JobId};

use super::placement::Placing;
use super::{Action, NodeId, Scheduler};

impl Scheduler {
    /// Adopts onto `node` what it claims and the scheduler still wants; refuses the rest with
    /// [`Action::CancelAttempt`]. `previous` is the node's earlier session, if still known.
    pub(super) fn adopt_claims(&mut self, now: Instant, node: NodeId, previous: Option<NodeId>, claims: &[Claim]) {
        let mut touched: Vec<JobId> = Vec::new();
        for claim in claims {
            let adopted = match self.attempts.get(&claim.attempt) {
                // Claimed twice in one registration: the first claim adopted it.
                Some(a) if a.node == node => continue,
                Some(a) if Some(a.node) == previous && a.job == claim.job && a.chunk == claim.chunk => {
                    self.move_attempt(now, claim, node)
                }
                Some(_) => false,
                None => self.adopt_unclaimed(now, claim, node),
            };
            if adopted {
                touched.push(claim.job);
            } else {
                self.out.act(Action::CancelAttempt { node, attempt: claim.attempt });
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for job in touched {
            self.sync_pending(job);
            self.mark_spec(job);
            self.refresh_clock(now, job);
        }
    }

    /// Moves a live attempt of the node's earlier session onto its new one, keeping its id and
    /// its pairing with a speculative twin.
    fn move_attempt(&mut self, now: Instant, claim: &Claim, node: NodeId) -> bool {
        let Some(a) = self.release_attempt(now, claim.attempt) else { return false };
        let placing = Placing::Adopted { attempt: claim.attempt, speculative: a.speculative, twin: a.twin };
        self.place_attempt(now, a.job, a.chunk, node, placing);
        if let Some(t) = a.twin.and_then(|twin| self.attempts.get_mut(&twin)) {
            t.twin = Some(claim.attempt);
        }
        true
    }

    /// Adopts a chunk nothing runs, if the claim names it and an id from before this point: a
    /// restored chunk that awaits its claim, or a requeued one not yet placed again (its node
    /// was written off, then came back holding it).
    fn adopt_unclaimed(&mut self, now: Instant, claim: &Claim, node: NodeId) -> bool {
        if claim.attempt.0 >= self.next_attempt {
            return false;
        }
        let Some(j) = self.jobs.get_mut(&claim.job) else { return false };
        if !j.unclaimed.remove(&claim.chunk) {
            // A scan of the requeue: claims are rare (a registration) and few (what one node
            // holds).
            let Some(i) = j.requeued.iter().position(|&c| c == claim.chunk) else { return false };
            j.requeued.remove(i);
            if j.requeued.len() >= super::placement::REQUEUE_SCAN {
                self.window_moved.push(claim.job);
            }
        }
        let placing = Placing::Adopted { attempt: claim.attempt, speculative: false, twin: None };
        self.place_attempt(now, claim.job, claim.chunk, node, placing);
        true
    }

    /// Ends a node's earlier session once a new one registered: what the new one did not claim
    /// is requeued as if the session were lost, and a session still connected is closed.
    pub(super) fn supersede(&mut self, now: Instant, old: NodeId) {
        let Some(n) = self.nodes.get(&old) else { return };
        if n.connected {
            let reason = "the node registered again on a new connection".to_owned();
            self.out.act(Action::DropNode { node: old, reason });
        }
        self.lose_node(now, old);
    }

    /// The reattach grace is over: chunks of restored jobs that no node claimed are requeued,
    /// in chunk order, and placed.
    pub(super) fn grace_ended(&mut self, now: Instant) {
        self.grace_until = None;
        let mut jobs: Vec<JobId> = self.jobs.iter().filter(|(_, j)| !j.unclaimed.is_empty()).map(|(&id, _)| id).collect();
        jobs.sort_unstable();
        for &job in &jobs {
            let Some(j) = self.jobs.get_mut(&job) else { continue };
            let unclaimed: Vec<ChunkIndex> = std::mem::take(&mut j.unclaimed).into_iter().collect();
            j.requeued.extend(unclaimed);
            self.sync_pending(job);
            self.mark_spec(job);
        }
        self.fill_jobs(now, &jobs);
        for job in jobs {
            self.refresh_clock(now, job);
        }
    }
}
