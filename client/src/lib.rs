//! dispy's client side as a library: [`Client`] (connect with a client certificate, submit, follow
//! and fetch jobs, list and drain nodes), [`JobStream`] for jobs fed chunk by chunk, job files
//! (`job`), split rules (`split`), the output sink and [`local::LocalCluster`], the embedded
//! cluster behind `dispy-submit run --local N`, and how reports are shown (`report`: logs,
//! `explain`, failure log tails). `dispy-submit` is a thin shell around it.
#![forbid(unsafe_code)]

mod api;
pub mod in_place;
pub mod job;
pub mod local;
mod output;
pub mod readers;
pub mod report;
pub mod split;

pub use api::{read_ahead, Backoff, Client, ClientError, JobReport, JobStream, Update, DEFAULT_RECONNECT_TIMEOUT};
