//! `http_listen`: `GET /metrics` (Prometheus, OpenMetrics text), the status page at `GET /`
//! (`index.html`, `status.js`, `status.css`, embedded in the binary and served without the token:
//! they hold no data) and the JSON it polls every second, `GET /api/status`. Handlers only read:
//! the metrics' atomics and the latest [`StatusSnapshot`] the core published; the certificates'
//! ends come from the enrolment records as `nodes` shows them, and from the certificate this
//! dispatcher presents now. Access (loopback, or a bearer token) is `common::http`'s.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::metrics::{Metrics, CONTENT_TYPE};
use crate::status::StatusSnapshot;

/// The page, its script and its style, built into the binary (no CDN).
const INDEX_HTML: &str = include_str!("http/index.html");
const STATUS_JS: &str = include_str!("http/status.js");
const STATUS_CSS: &str = include_str!("http/status.css");

/// When a node's certificate ends, seconds since the Unix epoch, by node name.
pub(crate) type CertificateEnds = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// What the handlers read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) status: watch::Receiver<Arc<StatusSnapshot>>,
    pub(crate) certificates: CertificateEnds,
    /// The certificate new handshakes get, SIGHUP reloads included.
    pub(crate) own: Arc<common::tls::ServerCert>,
}

impl HttpState {
    /// When the dispatcher's certificate in use ends, seconds since the Unix epoch.
    fn own_end(&self) -> Option<u64> {
        let expiry = common::check::CertExpiry::of(&self.own.current()).ok()?;
        expiry.not_after.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
    }
}

/// The routes with data, behind the access rule.
pub(crate) fn router(state: HttpState) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/api/status", get(status)).with_state(state)
}

/// The page's files: no data, the same for everyone (the source is public), so served without
/// the token; the page asks for the token when `/api/status` needs one.
pub(crate) fn assets() -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/status.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], STATUS_JS) }))
        .route("/status.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STATUS_CSS) }))
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let snapshot = Arc::clone(&state.status.borrow());
    let nodes: Vec<(String, u64)> = snapshot
        .nodes
        .iter()
        .filter_map(|node| Some((node.name.clone(), (state.certificates)(&node.name)?)))
        .collect();
    let text = state.metrics.render_with_certificates(state.own_end(), &nodes);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

async fn status(State(state): State<HttpState>) -> Response {
    let mut snapshot = StatusSnapshot::clone(&state.status.borrow());
    snapshot.cert_expires_unix = state.own_end().unwrap_or(0);
    for node in &mut snapshot.nodes {
        node.cert_expires_unix = (state.certificates)(&node.name).unwrap_or(0);
    }
    match serde_json::to_string(&snapshot) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], json).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
