//! The `dispy-dispatcher` daemon and the client side (`dispy::Client`, `dispy-submit`) as a
//! library.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
mod core;
pub mod enroll;
pub mod journal;
mod liveness;
pub mod local;
mod output;
pub mod payloads;
pub mod scheduler;
pub mod server;
pub mod spool;

pub use client::Client;
