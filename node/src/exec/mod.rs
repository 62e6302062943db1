//! Executors: the code that runs one job's payload on chunks, behind the dispy ABI v1.
//!
//! [`wasm`] runs WebAssembly modules in wasmtime, inside the daemon, sandboxed by a memory limit
//! and an epoch-driven wall-clock deadline. Guest code runs on the caller's thread: callers give
//! each slot a dedicated thread and never call into a worker from an async task. [`wasm::Limits`]
//! and [`wasm::CancelFlag`] are what the caller gives each worker.
//!
//! **Architecture Invariant:** a guest can never bring the daemon down. Everything a payload
//! controls (pointers, lengths, return codes, traps, memory growth, run time, output size) ends
//! as a [`common::proto::ChunkFailure`] for that chunk, never as a panic.

pub mod wasm;

#[cfg(test)]
mod tests;
