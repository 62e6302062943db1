//! The `dispy-dispatcher` daemon and the client side (`dispy::Client`, `dispy-submit`) as a
//! library.
#![forbid(unsafe_code)]

pub mod scheduler;
