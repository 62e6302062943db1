//! When each node was last heard from, stamped by its connection task as frames arrive.
//!
//! The core judges silence by its heartbeat timers, but under a burst it may be seconds behind
//! its event queue; reading these stamps before a deadline keeps its own backlog from being
//! mistaken for a silent node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The last time a node's connection received a frame; cheap to stamp from any task.
#[derive(Debug, Clone, Default)]
pub(crate) struct LastHeard(Arc<AtomicU64>);

impl LastHeard {
    /// Records that a frame arrived now.
    pub(crate) fn stamp(&self) {
        let since = Instant::now().saturating_duration_since(base());
        self.0.store(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When a frame last arrived (the process's start if none has).
    pub(crate) fn get(&self) -> Instant {
        base() + Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// A fixed instant the stamps count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_move_forward_and_are_shared() {
        let heard = LastHeard::default();
        let before = Instant::now();
        let copy = heard.clone();
        copy.stamp();
        let first = heard.get();
        assert!(first >= before && first <= Instant::now());
        std::thread::sleep(Duration::from_millis(2));
        copy.stamp();
        assert!(heard.get() > first);
    }
}
