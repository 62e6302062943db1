//! The dispatcher's Prometheus metrics: one [`Metrics`] registry of atomics, written by the core
//! (counters from the ledger's `Observation`s, gauges on its status tick), by the journal writer's
//! answers (commit times) and by the connection tasks (connections, refused handshakes, bytes sent),
//! and read by `GET /metrics`, which never waits on any of them.
//!
//! Names follow Prometheus conventions: the `dispy_` prefix, base units (seconds, bytes), `_total`
//! on counters, and only low-cardinality labels (`tenant`, `state`, `role`, `reason`, `stream`,
//! `certificate`): never a chunk, attempt or job id.

use std::time::Duration;

use ledger::jobs::Observation;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use wire::proto::NodeStatus;

/// The content type of [`Metrics::render`]'s text: OpenMetrics, which Prometheus scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every node state the scheduler names, so each is exported (as 0 when no node is in it).
const NODE_STATES: &[&str] = &["ready", "busy", "draining", "drained", "stopping", "quarantined", "suspect", "away"];
/// Every job state.
const JOB_STATES: &[&str] = &["running", "succeeded", "failed", "cancelled"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tenant {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Role {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Stream {
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Certificate {
    certificate: String,
}

/// The dispatcher's metrics; shared (`Arc`) by the core, the connection tasks and the HTTP
/// handlers.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    nodes: Family<State, Gauge>,
    slots: Gauge,
    slots_busy: Gauge,
    jobs: Family<State, Gauge>,
    completed: Family<Tenant, Counter>,
    failed: Family<Tenant, Counter>,
    retried: Family<Tenant, Counter>,
    speculated: Family<Tenant, Counter>,
    run_time: Histogram,
    queue_wait: Histogram,
    received: Family<Stream, Counter>,
    sent: Family<Stream, Counter>,
    /// The four byte counters, looked up once: they count every chunk.
    bytes: ByteCounters,
    /// Each tenant's completed-chunk counter, looked up once per tenant rather than once per
    /// chunk (a lookup allocates its label).
    completed_by_tenant: std::sync::Mutex<std::collections::HashMap<String, Counter>>,
    commit_time: Histogram,
    connections: Family<Role, Gauge>,
    refused: Family<Reason, Counter>,
    cert_expiry: Family<Certificate, Gauge>,
    /// Held while a scrape resets the certificate gauges and renders, so two scrapes at once
    /// never see each other's half-reset family.
    scrape: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dispy");
        // From 1 ms to about 9 h in factors of 4: chunks run from milliseconds to hours.
        let seconds = || Histogram::new(exponential_buckets(0.001, 4.0, 13));
        let metrics = Self {
            registry: Registry::default(),
            nodes: Family::default(),
            slots: Gauge::default(),
            slots_busy: Gauge::default(),
            jobs: Family::default(),
            completed: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            speculated: Family::default(),
            run_time: seconds(),
            queue_wait: seconds(),
            received: Family::default(),
            sent: Family::default(),
            bytes: ByteCounters::default(),
            completed_by_tenant: std::sync::Mutex::default(),
            // From 100 µs to about 6.5 s in factors of 4: an fsync on a slow disk.
            commit_time: Histogram::new(exponential_buckets(0.0001, 4.0, 9)),
            connections: Family::default(),
            refused: Family::default(),
            cert_expiry: Family::default(),
            scrape: std::sync::Mutex::new(()),
        };
        let r = &mut registry;
        r.register("nodes", "Connected nodes (and held names not connected, as away) by state", metrics.nodes.clone());
        r.register("slots", "Chunk slots of the connected nodes", metrics.slots.clone());
        r.register("slots_busy", "Slots running a chunk at the nodes' last heartbeats", metrics.slots_busy.clone());
        r.register(
            "jobs",
            "Jobs by state: running ones, and finished ones for the retention (with http_listen, also those whose results were fetched)",
            metrics.jobs.clone(),
        );
        r.register("chunks_completed", "Chunks whose accepted result is stored", metrics.completed.clone());
        r.register("chunks_failed", "Chunk attempts that failed on a node", metrics.failed.clone());
        r.register("chunks_retried", "Failed chunk attempts that were run again", metrics.retried.clone());
        r.register("chunks_speculated", "Speculative copies of straggling chunks", metrics.speculated.clone());
        r.register_with_unit(
            "chunk_run",
            "How long accepted chunk attempts ran on their nodes",
            Unit::Seconds,
            metrics.run_time.clone(),
        );
        r.register_with_unit(
            "chunk_queue_wait",
            "Time from a chunk's input being stored to its first assignment to a node",
            Unit::Seconds,
            metrics.queue_wait.clone(),
        );
        r.register_with_unit(
            "received",
            "Bytes stored from peers: chunk input from submitters (stream=input), results from nodes (stream=result)",
            Unit::Bytes,
            metrics.received.clone(),
        );
        r.register_with_unit(
            "sent",
            "Bytes sent to peers: chunk input to nodes (stream=input), results to clients (stream=result)",
            Unit::Bytes,
            metrics.sent.clone(),
        );
        r.register_with_unit(
            "journal_commit",
            "How long journal commits took, spool syncs included",
            Unit::Seconds,
            metrics.commit_time.clone(),
        );
        r.register("connections", "Open peer connections by role", metrics.connections.clone());
        r.register("handshakes_refused", "Connections refused before or at the handshake, by reason", metrics.refused.clone());
        r.register_with_unit(
            "certificate_expiry",
            "When certificates end (notAfter), as a Unix timestamp: the dispatcher's own in use \
             (certificate=dispatcher) and each connected node's (certificate=NODE NAME)",
            Unit::Seconds,
            metrics.cert_expiry.clone(),
        );
        for state in NODE_STATES {
            metrics.nodes.get_or_create(&State { state: (*state).to_owned() }).set(0);
        }
        for state in JOB_STATES {
            metrics.jobs.get_or_create(&State { state: (*state).to_owned() }).set(0);
        }
        // One statement each: a family's guard lives to the end of its statement, and a second
        // `get_or_create` on the same family while it lives would wait for it forever.
        let counter = |family: &Family<Stream, Counter>, name: &str| -> Counter { family.get_or_create(&stream(name)).clone() };
        let received_input = counter(&metrics.received, "input");
        let received_result = counter(&metrics.received, "result");
        let sent_input = counter(&metrics.sent, "input");
        let sent_result = counter(&metrics.sent, "result");
        let bytes = ByteCounters { received_input, received_result, sent_input, sent_result };
        Self { registry, bytes, ..metrics }
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts what the ledger observed.
    pub(crate) fn observe(&self, observation: &Observation) {
        match observation {
            Observation::ChunkCompleted { tenant, run, bytes } => {
                let mut by_tenant = self.completed_by_tenant.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                match by_tenant.get(tenant.as_str()) {
                    Some(counter) => {
                        counter.inc();
                    }
                    None => {
                        let counter = self.completed.get_or_create(&tenant_label(tenant)).clone();
                        counter.inc();
                        by_tenant.insert(tenant.clone(), counter);
                    }
                }
                self.run_time.observe(run.as_secs_f64());
                self.bytes.received_result.inc_by(*bytes);
            }
            Observation::AttemptFailed(failed) => {
                self.failed.get_or_create(&tenant_label(&failed.tenant)).inc();
                if failed.retried {
                    self.retried.get_or_create(&tenant_label(&failed.tenant)).inc();
                }
            }
            Observation::Speculated { tenant } => {
                self.speculated.get_or_create(&tenant_label(tenant)).inc();
            }
            Observation::Placed { wait } => self.queue_wait.observe(wait.as_secs_f64()),
            Observation::InputStored { bytes } => {
                self.bytes.received_input.inc_by(*bytes);
            }
            _ => {}
        }
    }

    /// A journal commit took `took`.
    pub(crate) fn observe_commit(&self, took: Duration) {
        self.commit_time.observe(took.as_secs_f64());
    }

    /// Sets the gauges from the nodes table and the jobs' states (`JobState::name`).
    pub(crate) fn refresh<'a>(&self, nodes: &[NodeStatus], jobs: impl Iterator<Item = &'a str> + Clone) {
        for state in NODE_STATES {
            let count = nodes.iter().filter(|n| state_word(&n.state) == *state).count();
            self.nodes.get_or_create(&State { state: (*state).to_owned() }).set(count as i64);
        }
        self.slots.set(nodes.iter().map(|n| i64::from(n.slots)).sum());
        self.slots_busy.set(nodes.iter().map(|n| i64::from(n.busy)).sum());
        for state in JOB_STATES {
            let count = jobs.clone().filter(|name| name == state).count();
            self.jobs.get_or_create(&State { state: (*state).to_owned() }).set(count as i64);
        }
    }

    /// [`Metrics::render`], with the certificate expiry gauges set first: the dispatcher's own
    /// and those of `nodes` (name, Unix end), nodes no longer connected dropped.
    pub(crate) fn render_with_certificates(&self, dispatcher: Option<u64>, nodes: &[(String, u64)]) -> String {
        // Only this guard's holder touches the family; a poisoned lock guards nothing broken.
        let _scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.set_certificates(dispatcher, nodes);
        self.render()
    }

    fn set_certificates(&self, dispatcher: Option<u64>, nodes: &[(String, u64)]) {
        self.cert_expiry.clear();
        if let Some(end) = dispatcher {
            self.cert_expiry.get_or_create(&Certificate { certificate: "dispatcher".into() }).set(end as i64);
        }
        for (name, end) in nodes {
            self.cert_expiry.get_or_create(&Certificate { certificate: name.clone() }).set(*end as i64);
        }
    }

    /// A peer connection of `role` opened; the guard counts it until dropped.
    pub(crate) fn connection(&self, role: &str) -> ConnectionGuard {
        let gauge = self.connections.get_or_create(&Role { role: role.to_owned() }).clone();
        gauge.inc();
        ConnectionGuard(gauge)
    }

    /// A connection was refused, for `reason` (a fixed word: `bad_certificate`, `too_many`,
    /// `revoked`, `hello`).
    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&Reason { reason: reason.to_owned() }).inc();
    }

    /// `bytes` of chunk input went to a node.
    pub(crate) fn sent_input(&self, bytes: u64) {
        self.bytes.sent_input.inc_by(bytes);
    }

    /// `bytes` of results went to a client.
    pub(crate) fn sent_result(&self, bytes: u64) {
        self.bytes.sent_result.inc_by(bytes);
    }
}

/// The `received` and `sent` counters of both streams.
#[derive(Debug, Default)]
struct ByteCounters {
    received_input: Counter,
    received_result: Counter,
    sent_input: Counter,
    sent_result: Counter,
}

/// Counts one open connection until dropped.
pub(crate) struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The first word of a node's state ("quarantined: why" is `quarantined`, "drained, not
/// connected" is `away`), a label of few values.
pub(crate) fn state_word(state: &str) -> &'static str {
    if state.contains("not connected") {
        return "away";
    }
    let word = state.split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("");
    NODE_STATES.iter().copied().find(|known| *known == word).unwrap_or("unknown")
}

fn tenant_label(tenant: &str) -> Tenant {
    Tenant { tenant: tenant.to_owned() }
}

fn stream(name: &str) -> Stream {
    Stream { stream: name.to_owned() }
}

#[cfg(test)]
mod tests;
