//! What crosses a process boundary in dispy: the protocol's messages (`proto`) and their framing
//! (`frame`), the payload ABI's names (`abi`), sizes and durations (`units`) and the references
//! by which shared-input chunks travel (`chunk`).
//!
//! The crate is pure by its manifest: no tokio, no quinn, no clock. Both ends of the wire and the
//! tests use it without a runtime.
#![forbid(unsafe_code)]

pub mod abi;
pub mod chunk;
pub mod frame;
pub mod observe;
pub mod proto;
pub mod units;
