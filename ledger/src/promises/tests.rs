//! The promise ledger and commit policy in virtual time: random histories of changes, answers,
//! acknowledgements, commits that finish (or fail) late, and the passing of time.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use wire::proto::{AttemptId, JobId};

use super::*;

/// What happens in one step of a history.
#[derive(Debug, Clone)]
enum Step {
    /// A change nobody waits for (a state change, a result) joins the gathering batch.
    Change,
    /// A node's report is stored: its acknowledgement is promised.
    Report,
    /// A client asks a question answered once what it describes is durable.
    Question,
    /// A job's input is complete: `InputStored` is promised.
    InputEnd,
    /// The commit in flight finishes, durable or not.
    Finish { durable: bool },
    /// Time passes.
    Wait(Duration),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Change),
        3 => Just(Step::Report),
        1 => Just(Step::Question),
        1 => Just(Step::InputEnd),
        2 => any::<bool>().prop_map(|durable| Step::Finish { durable }),
        3 => (0u64..80).prop_map(|ms| Step::Wait(Duration::from_millis(ms))),
    ]
}

/// A driver as the dispatcher's core is one: it gathers changes and promises, asks the policy at
/// the end of every turn and when its timeout passes, and keeps promises only when told durable.
struct Driver {
    now: Instant,
    policy: CommitPolicy,
    /// Changes gathering, by id.
    gathering: Vec<u64>,
    promises: Promises<u64>,
    /// The batch in flight: its changes and promises.
    in_flight: Option<(Vec<u64>, Promises<u64>)>,
    durable: Vec<u64>,
    next: u64,
    starts: Vec<(Instant, bool)>,
}

impl Driver {
    fn new() -> Self {
        Self {
            now: Instant::now(),
            policy: CommitPolicy::default(),
            gathering: Vec::new(),
            promises: Promises::default(),
            in_flight: None,
            durable: Vec::new(),
            next: 0,
            starts: Vec::new(),
        }
    }

    /// Records a change and returns its id.
    fn change(&mut self) -> u64 {
        self.next += 1;
        self.gathering.push(self.next);
        self.next
    }

    fn end_turn(&mut self) {
        let pending = !self.gathering.is_empty() || !self.promises.is_empty();
        let awaited = self.promises.awaited();
        if self.policy.poll_commit(self.now, pending, awaited) {
            assert!(self.in_flight.is_none(), "a second commit started while one was in flight");
            self.starts.push((self.now, awaited));
            self.in_flight = Some((std::mem::take(&mut self.gathering), std::mem::take(&mut self.promises)));
        }
    }

    /// Checks the promises a finished commit releases: each names a change of that batch, so it
    /// is released only once what it describes is durable.
    fn finish(&mut self, durable: bool) {
        let Some((changes, promises)) = self.in_flight.take() else { return };
        self.policy.handle_committed();
        if durable {
            self.durable.extend(&changes);
        }
        let kept = promises.answers.iter().copied().chain(promises.stored.iter().map(|job| job.0));
        for promise in kept {
            assert!(changes.contains(&promise), "promise {promise} released with a batch that did not carry it");
            if durable {
                assert!(self.durable.contains(&promise), "promise {promise} released before it was durable");
            }
        }
        for attempts in promises.acks.values() {
            for attempt in attempts {
                assert!(changes.contains(&attempt.0), "ack {attempt:?} released with a batch that did not store it");
            }
        }
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Change => {
                self.change();
            }
            Step::Report => {
                let id = self.change();
                self.promises.ack(NodeId(1), AttemptId(id));
            }
            Step::Question => {
                let id = self.change();
                self.promises.answers.push(id);
            }
            Step::InputEnd => {
                let id = self.change();
                self.promises.stored.push(JobId(id));
            }
            Step::Finish { durable } => self.finish(*durable),
            Step::Wait(by) => {
                let until = self.now + *by;
                // The driver wakes at every timeout the policy asks for on the way.
                while let Some(due) = self.policy.poll_timeout().filter(|due| *due <= until) {
                    self.now = self.now.max(due);
                    self.end_turn();
                }
                self.now = until;
            }
        }
        self.end_turn();
    }
}

proptest! {
    #[test]
    fn random_histories_keep_the_commit_promises(steps in proptest::collection::vec(step(), 1..200)) {
        let mut driver = Driver::new();
        for step in &steps {
            driver.apply(step);
            // Nothing waits without a way forward: a pending batch is either in flight, or
            // the policy has asked to be woken.
            let pending = !driver.gathering.is_empty() || !driver.promises.is_empty();
            prop_assert!(
                !pending || driver.policy.in_flight() || driver.policy.poll_timeout().is_some(),
                "a pending batch with no commit in flight and no timeout"
            );
        }
        // Commits are spaced: an awaited one at least MIN_COMMIT_INTERVAL after the previous
        // start, one nobody waits for at least BACKGROUND_COMMIT_INTERVAL.
        for pair in driver.starts.windows(2) {
            let (previous, (start, awaited)) = (pair[0].0, pair[1]);
            let spacing = if awaited { MIN_COMMIT_INTERVAL } else { BACKGROUND_COMMIT_INTERVAL };
            prop_assert!(start - previous >= spacing, "commits {:?} apart (awaited: {awaited})", start - previous);
        }
    }
}

#[test]
fn an_awaited_batch_goes_after_the_short_interval_and_a_background_one_after_the_long() {
    let t0 = Instant::now();
    let mut policy = CommitPolicy::default();
    assert!(policy.poll_commit(t0, true, false), "the first batch goes at once");
    assert!(!policy.poll_commit(t0, true, true), "one commit in flight at a time");
    policy.handle_committed();

    assert!(!policy.poll_commit(t0 + Duration::from_millis(1), true, false));
    assert_eq!(policy.poll_timeout(), Some(t0 + BACKGROUND_COMMIT_INTERVAL));
    assert!(!policy.poll_commit(t0 + Duration::from_millis(1), true, true));
    assert_eq!(policy.poll_timeout(), Some(t0 + MIN_COMMIT_INTERVAL), "a client waiting shortens the wait");
    assert!(policy.poll_commit(t0 + MIN_COMMIT_INTERVAL, true, true));
    assert_eq!(policy.poll_timeout(), None);
    policy.handle_committed();

    assert!(!policy.poll_commit(t0 + Duration::from_secs(1), false, false), "nothing to commit");
    assert!(policy.force(t0 + MIN_COMMIT_INTERVAL), "a graceful stop does not wait");
}

#[test]
fn many_held_acknowledgements_make_a_batch_urgent() {
    let mut promises: Promises<()> = Promises::default();
    for attempt in 0..MAX_HELD_ACKS as u64 {
        assert!(!promises.awaited());
        promises.ack(NodeId(attempt % 3), AttemptId(attempt));
    }
    assert!(promises.awaited());
    assert!(!promises.is_empty());
}
