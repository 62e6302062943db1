//! Everything the dispy binaries share: protocol messages and framing, payload ABI names, job
//! descriptions and split rules, TLS and PKI helpers, and telemetry set-up.
//!
//! `proto` and `frame` are pure (no I/O, no clock) so both ends of the wire and the tests can use
//! them without a runtime.
#![forbid(unsafe_code)]

pub mod abi;
pub mod config;
pub mod daemon;
pub mod enroll;
pub mod frame;
pub mod job;
pub mod net;
pub mod pki;
pub mod proto;
pub mod signal;
mod spelling;
pub mod split;
pub mod telemetry;
pub mod tls;
pub mod units;

#[cfg(test)]
mod tidy;
