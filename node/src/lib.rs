//! The `dispy-node` worker daemon as a library: it dials the dispatcher, advertises this machine,
//! keeps a content-addressed payload cache and runs chunks on its slots.
#![deny(unsafe_code)]

pub mod exec;
mod cache;
pub mod config;
pub mod daemon;
pub mod enroll;
mod health;
mod pool;
pub mod object_input;
pub mod shared_input;
