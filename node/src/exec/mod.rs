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

use std::path::Path;

use common::proto::{ChunkFailure, PayloadKind};

pub use wasm::{CancelFlag, ExecError, Limits};
use wasm::{WasmEngine, WasmPayload, WasmWorker};

/// A job's payload, checked and ready to run; cheap to clone.
#[derive(Clone)]
pub enum Payload {
    /// A compiled WebAssembly module.
    Wasm(WasmPayload),
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Wasm(_) => f.write_str("Payload::Wasm"),
        }
    }
}

/// Runs payloads of every kind; one per node process.
#[derive(Clone)]
pub struct Executor {
    wasm: WasmEngine,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl Executor {
    /// Starts the executors (the WebAssembly engine and its epoch ticker).
    ///
    /// # Errors
    /// [`ExecError::Engine`] if the engine cannot start.
    pub fn new() -> Result<Self, ExecError> {
        Ok(Self { wasm: WasmEngine::new()? })
    }

    /// Checks and prepares a payload: compiles WebAssembly, validates the ABI. `path` is where the
    /// payload's bytes are on disk (native libraries are loaded from there).
    ///
    /// # Errors
    /// A one-line [`ExecError`] explaining why the payload cannot run here.
    pub fn load(&self, kind: &PayloadKind, bytes: &[u8], path: &Path) -> Result<Payload, ExecError> {
        let _ = path;
        match kind {
            PayloadKind::Wasm => Ok(Payload::Wasm(self.wasm.compile(bytes)?)),
            PayloadKind::Native { .. } => Err(ExecError::Unsupported("native payloads".into())),
        }
    }

    /// Makes a worker for one slot of one job; runs the payload's setup.
    ///
    /// # Errors
    /// The [`ChunkFailure`] of a failed setup.
    pub fn worker(&self, payload: &Payload, args: &[u8], limits: Limits, cancel: CancelFlag) -> Result<Worker, ChunkFailure> {
        match payload {
            Payload::Wasm(p) => Ok(Worker::Wasm(WasmWorker::new(&self.wasm, p, args, limits, cancel)?)),
        }
    }
}

/// One slot's instance of a job's payload, serving chunks in turn.
pub enum Worker {
    /// A WebAssembly instance.
    Wasm(WasmWorker),
}

impl Worker {
    /// Runs one chunk. After an error the worker must be dropped.
    ///
    /// # Errors
    /// The chunk's [`ChunkFailure`].
    pub fn run(&mut self, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        match self {
            Worker::Wasm(w) => w.run(input),
        }
    }
}

#[cfg(test)]
mod tests;
