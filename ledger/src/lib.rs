//! The dispatcher's decisions as sans-IO state machines. The `scheduler` decides which node runs
//! which chunk; `promises` holds what may be told to peers once the journal is durable, and
//! decides when the journal commits.
//!
//! The crate is pure by its manifest: no tokio, no sockets, no files, no clock. Inputs are
//! `handle_*` calls that carry `now`; outputs are values polled out. Tests drive it in virtual time.
#![forbid(unsafe_code)]

pub mod jobs;
pub mod promises;
pub mod record;
pub mod scheduler;
