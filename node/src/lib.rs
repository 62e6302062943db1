//! The `dispy-node` worker daemon as a library: it dials the dispatcher, advertises this machine,
//! keeps a content-addressed payload cache and runs chunks on its slots, and serves its Prometheus
//! metrics on `metrics_listen`.
#![deny(unsafe_code)]

pub mod exec;
mod cache;
pub mod config;
pub mod daemon;
pub mod enroll;
mod health;
mod metrics;
mod pool;
pub mod object_input;
pub mod shared_input;
