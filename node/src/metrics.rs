//! The node's Prometheus metrics on `metrics_listen` (`GET /metrics`, OpenMetrics text): chunks
//! by outcome, slot busy time and slots, the payload cache's size, hits and misses, and when
//! this node's certificate ends. The slot threads and the cache count into shared atomics as they
//! go; gauges read at a scrape (cache size, busy slots, the certificate in use, renewals
//! included) are set by the handler, so serving never waits on a slot or the cache.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The content type of `/metrics`: OpenMetrics, which Prometheus scrapes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Certificate {
    certificate: String,
}

/// The outcomes `node_chunks` counts, in [`PoolMetrics::by_outcome`]'s order.
const OUTCOMES: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// What the slot threads count: one clone per pool.
#[derive(Debug, Clone)]
pub(crate) struct PoolMetrics {
    chunks: Family<Outcome, Counter>,
    /// The family's counters, looked up once: a slot counts each chunk without the family's lock
    /// and hashing.
    by_outcome: [Counter; 3],
    busy_seconds: Counter<f64, AtomicU64>,
}

impl Default for PoolMetrics {
    fn default() -> Self {
        let chunks: Family<Outcome, Counter> = Family::default();
        let by_outcome = OUTCOMES.map(|outcome| chunks.get_or_create(&Outcome { outcome }).clone());
        Self { chunks, by_outcome, busy_seconds: Counter::default() }
    }
}

impl PoolMetrics {
    /// An attempt ended `outcome` (`succeeded`, `failed` or `cancelled`) after holding its slot
    /// for `busy`.
    pub(crate) fn finished(&self, outcome: &'static str, busy: std::time::Duration) {
        if let Some(at) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.by_outcome[at].inc();
        }
        self.busy_seconds.inc_by(busy.as_secs_f64());
    }
}

/// What the payload cache counts: whether a job found its payload cached.
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheMetrics {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
}

/// The node's registry and the gauges its handler sets.
#[derive(Debug)]
pub(crate) struct NodeMetrics {
    registry: Registry,
    slots: Gauge,
    slots_busy: Gauge,
    cache_bytes: Gauge,
    cert_expiry: Family<Certificate, Gauge>,
    /// Held while a scrape sets the gauges and renders, so two scrapes at once never see each
    /// other's half-reset certificate family.
    scrape: std::sync::Mutex<()>,
}

/// What a scrape reads at that moment.
pub(crate) struct Reading {
    pub(crate) slots: u32,
    pub(crate) busy: u32,
    pub(crate) cache_bytes: u64,
    /// This node's name and when its certificate ends, seconds since the Unix epoch.
    pub(crate) certificate: Option<(String, u64)>,
}

impl NodeMetrics {
    /// Registers the pool's and cache's counters with the gauges.
    pub(crate) fn new(pool: &PoolMetrics, cache: &CacheMetrics) -> Self {
        let mut registry = Registry::with_prefix("dispy");
        let metrics = Self {
            registry: Registry::default(),
            slots: Gauge::default(),
            slots_busy: Gauge::default(),
            cache_bytes: Gauge::default(),
            cert_expiry: Family::default(),
            scrape: std::sync::Mutex::new(()),
        };
        let r = &mut registry;
        r.register("node_chunks", "Chunk attempts this node ran, by outcome", pool.chunks.clone());
        r.register_with_unit(
            "node_slot_busy",
            "Time slots spent running chunks, summed over the slots",
            Unit::Seconds,
            pool.busy_seconds.clone(),
        );
        r.register("node_slots", "This node's chunk slots", metrics.slots.clone());
        r.register("node_slots_busy", "Slots running a chunk now", metrics.slots_busy.clone());
        r.register_with_unit("node_cache", "Payload bytes in the cache", Unit::Bytes, metrics.cache_bytes.clone());
        r.register("node_cache_hits", "Jobs whose payload was already cached here", cache.hits.clone());
        r.register("node_cache_misses", "Jobs whose payload had to be shipped here", cache.misses.clone());
        r.register_with_unit(
            "certificate_expiry",
            "When this node's certificate ends (notAfter), as a Unix timestamp; certificate=the node's name",
            Unit::Seconds,
            metrics.cert_expiry.clone(),
        );
        Self { registry, ..metrics }
    }

    /// The metrics as text, with the gauges set from `reading`.
    pub(crate) fn render(&self, reading: &Reading) -> String {
        // Only this guard's holder sets the gauges; a poisoned lock guards nothing broken.
        let _scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.slots.set(i64::from(reading.slots));
        self.slots_busy.set(i64::from(reading.busy));
        self.cache_bytes.set(reading.cache_bytes as i64);
        self.cert_expiry.clear();
        if let Some((name, end)) = &reading.certificate {
            self.cert_expiry.get_or_create(&Certificate { certificate: name.clone() }).set(*end as i64);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The `/metrics` route, reading through `read` at each scrape.
pub(crate) fn router(metrics: Arc<NodeMetrics>, read: Arc<dyn Fn() -> Reading + Send + Sync>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state((metrics, read))
}

type ScrapeState = (Arc<NodeMetrics>, Arc<dyn Fn() -> Reading + Send + Sync>);

async fn scrape(State((metrics, read)): State<ScrapeState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render(&read()))
}

#[cfg(test)]
mod tests {
    //! The node's metrics as text.

    use std::time::Duration;

    use super::{CacheMetrics, NodeMetrics, PoolMetrics, Reading};

    #[test]
    fn counts_and_readings_become_conventional_metrics() {
        let (pool, cache) = (PoolMetrics::default(), CacheMetrics::default());
        let metrics = NodeMetrics::new(&pool, &cache);
        pool.finished("succeeded", Duration::from_millis(1500));
        pool.finished("succeeded", Duration::from_millis(500));
        pool.finished("failed", Duration::ZERO);
        cache.hits.inc();
        cache.misses.inc_by(2);
        let reading = Reading { slots: 4, busy: 1, cache_bytes: 4096, certificate: Some(("n1".into(), 1_900_000_000)) };
        let text = metrics.render(&reading);
        for line in [
            r#"dispy_node_chunks_total{outcome="succeeded"} 2"#,
            r#"dispy_node_chunks_total{outcome="failed"} 1"#,
            r#"dispy_node_chunks_total{outcome="cancelled"} 0"#,
            "dispy_node_slot_busy_seconds_total 2.0",
            "dispy_node_slots 4",
            "dispy_node_slots_busy 1",
            "dispy_node_cache_bytes 4096",
            "dispy_node_cache_hits_total 1",
            "dispy_node_cache_misses_total 2",
            r#"dispy_certificate_expiry_seconds{certificate="n1"} 1900000000"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }
}
