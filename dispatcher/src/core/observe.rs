//! The core's observer: it feeds the ledger's `Observation`s to the [`Metrics`] and the status
//! book, and on every fifth progress tick (once a second) refreshes the gauges and publishes a
//! [`StatusSnapshot`] for the HTTP handlers. It only reads the ledger; it decides nothing.

use std::sync::Arc;
use std::time::Duration;

use ledger::jobs::{Ledger, Observation, Time};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::status::{StatusBook, StatusSnapshot};

/// Progress ticks between snapshots: with the 200 ms tick, one a second.
const TICKS_PER_SNAPSHOT: u32 = 5;

/// What the core publishes for `http_listen`.
pub(crate) struct Observer {
    metrics: Arc<Metrics>,
    /// `None` when no HTTP address is served: nobody would read a snapshot.
    status: Option<(StatusBook, watch::Sender<Arc<StatusSnapshot>>)>,
    ticks: u32,
}

impl Observer {
    /// An observer counting into `metrics`, publishing snapshots through `status` when set.
    pub(crate) fn new(metrics: Arc<Metrics>, status: Option<(StatusBook, watch::Sender<Arc<StatusSnapshot>>)>) -> Self {
        Self { metrics, status, ticks: 0 }
    }

    /// Takes every observation the ledger queued.
    pub(crate) fn drain(&mut self, ledger: &mut Ledger) {
        while let Some(observation) = ledger.poll_observation() {
            self.observe(&observation);
        }
    }

    fn observe(&mut self, observation: &Observation) {
        self.metrics.observe(observation);
        if let Some((book, _)) = &mut self.status {
            book.observe(observation);
        }
    }

    /// A journal commit took `took`.
    pub(crate) fn committed(&self, took: Duration) {
        self.metrics.observe_commit(took);
    }

    /// `bytes` of chunk input were handed to a node's connection.
    pub(crate) fn sent_input(&self, bytes: u64) {
        self.metrics.sent_input(bytes);
    }

    /// `bytes` of results were handed to a client's connection.
    pub(crate) fn sent_result(&self, bytes: u64) {
        self.metrics.sent_result(bytes);
    }

    /// The progress tick: now and then, gauges and a snapshot from the ledger's tables.
    pub(crate) fn tick(&mut self, ledger: &Ledger, now: Time) {
        self.ticks = self.ticks.wrapping_add(1);
        if !self.ticks.is_multiple_of(TICKS_PER_SNAPSHOT) {
            return;
        }
        let nodes = ledger.node_statuses(now);
        let jobs = ledger.job_views();
        match &mut self.status {
            Some((book, status)) => {
                let snapshot = book.snapshot(now.at, now.unix_ms, nodes, &jobs);
                // The page's jobs, those whose results were fetched included.
                self.metrics.refresh(&snapshot.nodes, snapshot.jobs.iter().map(|j| j.state));
                status.send_replace(Arc::new(snapshot));
            }
            None => self.metrics.refresh(&nodes, jobs.iter().map(|j| j.summary.state.name())),
        }
    }
}
