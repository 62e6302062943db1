//! The `dispy-dispatcher` daemon as a library: the QUIC server, the core that drives the
//! scheduler, the journal, the spool, the payload store, enrolment and certificate reloads.
#![forbid(unsafe_code)]

pub mod config;
mod core;
pub mod enroll;
pub mod journal;
mod liveness;
mod logstore;
mod payloads;
pub mod reload;
pub mod server;
mod spool;
