//! Executors: the code that runs one job's payload on chunks, behind the dispy ABI v1.
//!
//! Three kinds of payload, one seam ([`Executor::load`] → [`Payload`], [`Executor::worker`] →
//! [`Worker`], [`Worker::run`] per chunk):
//! - [`wasm`] runs WebAssembly modules that export the dispy ABI in wasmtime, inside the daemon,
//!   sandboxed by a memory limit and an epoch-driven wall-clock deadline;
//! - [`wasi`] runs WebAssembly modules that export WASI `_start` instead, as stdin-to-stdout
//!   filters with no files, network or environment, under the same limits ([`wasm::WasmEngine`]
//!   tells the two apart when it compiles a module);
//! - [`native`] runs shared libraries (`.so`) in worker processes the node spawns, never in the
//!   daemon, under rlimits and a wall-clock timeout enforced by killing the process.
//!
//! Guest code runs on (or is waited for by) the caller's thread: callers give each slot a
//! dedicated thread and never call into a worker from an async task. [`Limits`] and
//! [`CancelFlag`] are what the caller gives each worker.
//!
//! **Architecture Invariant:** a payload can never bring the daemon down. Everything a payload
//! controls (pointers, lengths, return codes, traps, crashes, `exit()`, memory growth, run time,
//! output size) ends as a [`ChunkFailure`] for that chunk, never as a panic. Native code never
//! runs in the daemon's address space; its only `unsafe` lives in `native::loader`, which runs
//! in worker processes.

pub mod log;
pub mod native;
pub mod wasi;
pub mod wasm;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wire::abi;
use wire::proto::{ChunkFailure, FailureKind, PayloadKind};

use native::{NativeEngine, NativePayload, NativeWorker};
use wasm::{WasmEngine, WasmPayload, WasmWorker};

/// Why a payload cannot be loaded here, or a serial run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The wasmtime engine or its epoch ticker thread could not be created.
    #[error("failed to start the WebAssembly engine: {0}")]
    Engine(String),
    /// The bytes are neither a valid WebAssembly binary nor valid WAT text.
    #[error("payload is not valid WebAssembly: {0}")]
    InvalidWasm(String),
    /// A required export (or, for a shared library, symbol) of the dispy ABI v1 is absent.
    #[error("payload does not export `{0}`")]
    MissingExport(&'static str),
    /// An ABI export exists with the wrong kind or signature.
    #[error("`{name}` has type {found} but the dispy ABI v1 needs {expected}")]
    ExportType {
        /// The export's name.
        name: &'static str,
        /// What the module has, e.g. `(i32) -> i32`.
        found: String,
        /// What the ABI requires.
        expected: &'static str,
    },
    /// The module imports something the host does not provide.
    #[error("payload imports `{module}.{name}`, only `dispy.emit` and `dispy.log` are provided")]
    ForbiddenImport {
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
    },
    /// The module imports `dispy.emit` or `dispy.log` with the wrong kind or signature.
    #[error("payload imports `dispy.{name}` as {found} but the dispy ABI v1 provides (i32, i32) -> ()")]
    EmitType {
        /// The import's field name, `emit` or `log`.
        name: &'static str,
        /// What the module asks for.
        found: String,
    },
    /// A WASI filter imports something a filter does not get (a function outside WASI preview 1,
    /// or one the node withholds).
    #[error("WASI filter imports `{module}.{name}`, which filters do not get (only `wasi_snapshot_preview1` functions)")]
    FilterImport {
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
    },
    /// `dispy_abi_version` returned something other than [`abi::ABI_VERSION`].
    #[error("payload is built for dispy ABI v{0}, this node supports v{v}", v = abi::ABI_VERSION)]
    AbiVersion(i64),
    /// `dispy_abi_version` of a WebAssembly module could not be called (the module's start
    /// function or the call failed).
    #[error("calling `dispy_abi_version` failed: {0}")]
    AbiVersionCheck(String),
    /// A native payload is built for another operating system or CPU than this node's.
    #[error("payload is a shared library for {payload}, but this node is {node}")]
    Platform {
        /// The payload's platform, `os/arch` (e.g. `linux/aarch64`).
        payload: String,
        /// This node's platform, `os/arch`.
        node: String,
    },
    /// The bytes of a native payload are not a shared library this node can load.
    #[error("payload is not a loadable shared library: {0}")]
    InvalidLibrary(String),
    /// The native worker process (which loads and checks the library) could not be started or
    /// misbehaved.
    #[error("native worker process failed: {0}")]
    WorkerProcess(String),
    /// A worker could not be created (setup failed, memory too large, ...).
    #[error("{0}")]
    Worker(ChunkFailure),
    /// A chunk failed.
    #[error("chunk {index} failed: {failure}")]
    Chunk {
        /// The chunk's position among the inputs, from 0.
        index: u64,
        /// What went wrong.
        failure: ChunkFailure,
    },
    /// This node cannot run this kind of payload.
    #[error("this node cannot run {0}")]
    Unsupported(String),
}

/// Per-worker sandbox limits, taken from the job's [`wire::proto::JobSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum memory of the worker, in bytes: linear memory for WebAssembly, address space
    /// added to the worker process for a native payload. Exceeding it fails the chunk with
    /// [`FailureKind::MemoryLimit`], so one job cannot exhaust the node's memory.
    pub memory: u64,
    /// Wall-clock limit for one chunk (and for a worker's setup), so a looping guest frees its
    /// slot; exceeding it fails the chunk with [`FailureKind::Timeout`].
    pub chunk_timeout: Duration,
}

/// A shared flag that aborts the running chunk of a worker promptly (within about 10 ms).
///
/// The node sets it when an attempt is cancelled or its job ends; the interrupted chunk fails
/// with [`FailureKind::Node`] and the message `cancelled`, which callers ignore. A flag stays set
/// once cancelled: work that should go on needs a worker with a fresh flag. A [`child`] flag is
/// cancelled with its parent or on its own: a job's flag stops all its workers, a worker's own
/// stops only its attempt.
///
/// [`child`]: CancelFlag::child
#[derive(Debug, Clone, Default)]
pub struct CancelFlag {
    own: Arc<AtomicBool>,
    parent: Option<Arc<CancelFlag>>,
}

impl CancelFlag {
    /// Asks the worker holding this flag to stop its current chunk and refuse further ones.
    pub fn cancel(&self) {
        self.own.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelFlag::cancel`] was called on this flag, a clone of it or its parent.
    pub fn is_cancelled(&self) -> bool {
        self.own.load(Ordering::Relaxed) || self.parent.as_ref().is_some_and(|p| p.is_cancelled())
    }

    /// A fresh flag that this one's cancellation also cancels.
    pub fn child(&self) -> CancelFlag {
        CancelFlag { own: Arc::default(), parent: Some(Arc::new(self.clone())) }
    }
}

/// A job's payload, checked and ready to run; cheap to clone.
#[derive(Clone)]
pub enum Payload {
    /// A compiled WebAssembly module (an ABI module or a WASI filter).
    Wasm(WasmPayload),
    /// A checked native shared library.
    Native(NativePayload),
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Wasm(p) => f.debug_tuple("Payload::Wasm").field(p).finish(),
            Payload::Native(p) => f.debug_tuple("Payload::Native").field(p).finish(),
        }
    }
}

impl Payload {
    /// Whether the payload exports `dispy_combine`, which `--results reduce` needs.
    pub fn has_combine(&self) -> bool {
        match self {
            Payload::Wasm(p) => p.has_combine(),
            Payload::Native(p) => p.has_combine(),
        }
    }
}

/// Runs payloads of every kind; one per node process.
#[derive(Clone)]
pub struct Executor {
    wasm: WasmEngine,
    native: NativeEngine,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl Executor {
    /// Starts the executors (the WebAssembly engine and its epoch ticker), with native workers
    /// unconfined ([`native::NativePolicy::unconfined`]): for serial runs and tests.
    ///
    /// # Errors
    /// [`ExecError::Engine`] if the engine cannot start.
    pub fn new() -> Result<Self, ExecError> {
        Self::with_native(NativeEngine::new())
    }

    /// Starts the executors with `native` for native payloads (the node's, confined).
    ///
    /// # Errors
    /// [`ExecError::Engine`] if the WebAssembly engine cannot start.
    pub fn with_native(native: NativeEngine) -> Result<Self, ExecError> {
        Ok(Self { wasm: WasmEngine::new()?, native })
    }

    /// How native payloads run here.
    pub fn native_policy(&self) -> &native::NativePolicy {
        self.native.policy()
    }

    /// Checks and prepares a payload: compiles WebAssembly and validates its ABI, or checks that
    /// a native library is built for this node's platform and exports the ABI (in a short-lived
    /// checker process: native code is never loaded into the daemon). `path` is where the
    /// payload's bytes are on disk; native workers load the library from there. Blocking: call it
    /// from a blocking thread.
    ///
    /// # Errors
    /// A one-line [`ExecError`] explaining why the payload cannot run here.
    pub fn load(&self, kind: &PayloadKind, bytes: &[u8], path: &Path) -> Result<Payload, ExecError> {
        match kind {
            PayloadKind::Wasm => Ok(Payload::Wasm(self.wasm.compile(bytes)?)),
            PayloadKind::Native { os, arch } => {
                Ok(Payload::Native(self.native.load(os, arch, bytes, path)?))
            }
        }
    }

    /// Runs every input through one worker of `payload`, in order, and concatenates the
    /// outputs: the serial reference for any kind of payload (see [`wasm::run_serial`]). The
    /// worker gets 4 GiB of memory and a one-day chunk timeout.
    ///
    /// # Errors
    /// [`ExecError::Worker`] when setup fails, [`ExecError::Chunk`] for the first failing chunk.
    pub fn run_serial(
        &self,
        payload: &Payload,
        args: &[u8],
        inputs: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<Vec<u8>, ExecError> {
        let mut worker = self.serial_worker(payload, args)?;
        let mut output = Vec::new();
        for (index, input) in (0u64..).zip(inputs) {
            let chunk = worker.run(&input).map_err(|failure| ExecError::Chunk { index, failure })?;
            output.extend_from_slice(&chunk);
        }
        Ok(output)
    }

    /// Runs every input through one worker of `payload`, then folds the outputs left to right
    /// with `dispy_combine`: the serial reference of `--results reduce` (dispy combines tree-wise,
    /// which an associative combine makes equal). No input gives an empty result.
    ///
    /// # Errors
    /// As for [`Executor::run_serial`]; a failed combine is [`ExecError::Chunk`] with the index
    /// of the right-hand chunk.
    pub fn reduce_serial(
        &self,
        payload: &Payload,
        args: &[u8],
        inputs: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<Vec<u8>, ExecError> {
        let mut worker = self.serial_worker(payload, args)?;
        let mut acc: Option<Vec<u8>> = None;
        for (index, input) in (0u64..).zip(inputs) {
            let result = worker.run(&input).map_err(|failure| ExecError::Chunk { index, failure })?;
            acc = Some(match acc {
                None => result,
                Some(left) => worker.combine(&left, &result).map_err(|failure| ExecError::Chunk { index, failure })?,
            });
        }
        Ok(acc.unwrap_or_default())
    }

    /// The worker of the serial references: 4 GiB of memory and a one-day chunk timeout.
    fn serial_worker(&self, payload: &Payload, args: &[u8]) -> Result<Worker, ExecError> {
        let limits = Limits { memory: 1 << 32, chunk_timeout: Duration::from_secs(24 * 60 * 60) };
        self.worker(payload, args, limits, CancelFlag::default()).map_err(ExecError::Worker)
    }

    /// Makes a worker for one slot of one job; runs the payload's setup.
    ///
    /// # Errors
    /// The [`ChunkFailure`] of a failed setup.
    pub fn worker(&self, payload: &Payload, args: &[u8], limits: Limits, cancel: CancelFlag) -> Result<Worker, ChunkFailure> {
        match payload {
            Payload::Wasm(p) => Ok(Worker::Wasm(WasmWorker::new(&self.wasm, p, args, limits, cancel)?)),
            Payload::Native(p) => Ok(Worker::Native(NativeWorker::new(&self.native, p, args, limits, cancel)?)),
        }
    }
}

/// One slot's instance of a job's payload, serving chunks in turn.
#[derive(Debug)]
pub enum Worker {
    /// A WebAssembly instance (or, for a WASI filter, the template of one instance per chunk).
    Wasm(WasmWorker),
    /// A native worker process with the library loaded.
    Native(NativeWorker),
}

impl Worker {
    /// Runs one chunk. After an error the worker must be dropped.
    ///
    /// # Errors
    /// The chunk's [`ChunkFailure`].
    pub fn run(&mut self, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        match self {
            Worker::Wasm(w) => w.run(input),
            Worker::Native(w) => w.run(input),
        }
    }

    /// Combines two adjacent results (`a` of the chunks before `b`'s) with the payload's
    /// `dispy_combine`. After an error the worker must be dropped.
    ///
    /// # Errors
    /// The combine's [`ChunkFailure`], as for [`Worker::run`].
    pub fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        match self {
            Worker::Wasm(w) => w.combine(a, b),
            Worker::Native(w) => w.combine(a, b),
        }
    }

    /// What the payload logged since the last call (the setup's lines go with the first chunk):
    /// `dispy.log` lines, a WASI filter's stderr or a native payload's stdout and stderr, bounded
    /// by [`log::AttemptLog`]. Call it after every [`Worker::run`], failed ones included.
    pub fn take_log(&mut self) -> Vec<u8> {
        match self {
            Worker::Wasm(w) => w.take_log(),
            Worker::Native(w) => w.take_log(),
        }
    }
}

/// A failure of `kind` with a one-line `message`.
fn failure(kind: FailureKind, message: String) -> ChunkFailure {
    ChunkFailure { kind, message }
}

/// The failure of a chunk interrupted through its [`CancelFlag`]; callers drop its report.
fn cancelled() -> ChunkFailure {
    failure(FailureKind::Node, "cancelled".to_string())
}

/// The failure of a chunk given to a worker that already failed.
fn reused() -> ChunkFailure {
    failure(FailureKind::Node, "worker reused after a failed chunk".to_string())
}

/// The failure of a chunk that ran past its wall-clock limit.
fn timed_out(timeout: Duration) -> ChunkFailure {
    failure(FailureKind::Timeout, format!("chunk exceeded its time limit of {timeout:?}"))
}

/// Rephrases a failure during a worker's setup: a trap or crash there is a setup failure.
fn setup_failure(mut failure: ChunkFailure, timeout: Duration) -> ChunkFailure {
    match failure.kind {
        FailureKind::Trap => {
            failure.kind = FailureKind::Setup;
            failure.message = format!("worker setup failed: {}", failure.message);
        }
        FailureKind::Timeout => {
            failure.message = format!("worker setup exceeded its time limit of {timeout:?}");
        }
        _ => {}
    }
    failure
}

/// The instant `timeout` from now; an absurd timeout that overflows `Instant` means "no limit",
/// for which a year is as good.
fn deadline_after(timeout: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 60 * 60)))
        .unwrap_or(now)
}

#[cfg(test)]
mod capture_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod reduce_tests;
#[cfg(test)]
mod tests;
