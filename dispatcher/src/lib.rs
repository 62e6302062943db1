//! The `dispy-dispatcher` daemon as a library: the QUIC server, the core that drives the
//! scheduler, the journal, the spool, the payload store, enrolment and certificate reloads, and
//! the optional HTTP address: Prometheus `metrics` and the `status` page.
#![forbid(unsafe_code)]

pub mod config;
mod core;
pub mod enroll;
mod http;
pub mod journal;
mod liveness;
mod logstore;
pub mod metrics;
mod payloads;
pub mod reload;
pub mod server;
mod spool;
pub mod status;
