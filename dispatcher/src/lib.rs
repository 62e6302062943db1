//! The `dispy-dispatcher` daemon as a library: the QUIC server, the core that drives the
//! scheduler, the journal, the spool, the payload store and enrolment.
#![forbid(unsafe_code)]

pub mod config;
mod core;
pub mod enroll;
pub mod journal;
mod liveness;
mod payloads;
pub mod server;
mod spool;
