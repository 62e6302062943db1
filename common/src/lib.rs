//! What the dispy daemons and the client share at run time: QUIC connections carrying frames
//! (`net`), TLS and PKI (`tls`, `pki`, `enroll`), configuration (`config`) and what `check-config` and expiry warnings check (`check`), the async runtime and
//! signals (`daemon`, `signal`), telemetry set-up, and the access rule of the daemons' HTTP address
//! (`http`). What crosses the wire is in the `wire` crate.
#![forbid(unsafe_code)]

pub mod check;
pub mod config;
pub mod daemon;
pub mod enroll;
pub mod http;
pub mod net;
pub mod pki;
pub mod signal;
pub mod messages;
pub mod telemetry;
pub mod tls;

#[cfg(test)]
mod tidy;
