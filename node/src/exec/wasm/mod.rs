//! The WebAssembly executor: compiles dispy ABI v1 modules with wasmtime and runs their chunks.
//!
//! One [`WasmEngine`] per node process owns the wasmtime `Engine` and a ticker thread that bumps
//! the engine's epoch every [`EPOCH_TICK`]. [`WasmEngine::compile`] validates a payload's imports
//! and exports once, up front, so a bad module is rejected with a one-line [`ExecError`] before any
//! chunk runs. A [`WasmWorker`] is one instance in its own `Store` (one per slot of a job): it
//! copies the job's arguments in and runs `dispy_setup` once, then serves chunks in turn.
//!
//! A module that exports WASI `_start` and no `dispy_run` is a filter ([`WasmFlavour::Filter`]):
//! `compile` hands it to [`super::wasi`], and the same [`WasmPayload`] / [`WasmWorker`] types
//! carry it, so callers (the pool, [`run_serial`]) need not care which flavour they run.
//!
//! Sandboxing, per worker: a [`ResourceLimiter`](wasmtime::ResourceLimiter) caps linear memory
//! (and records that it denied a grow, so the resulting trap is reported as a memory failure
//! without matching strings); every call into the guest arms an epoch deadline of one tick whose
//! callback checks the wall-clock deadline and the [`CancelFlag`]; the only import is
//! `dispy.emit`, which bounds-checks its range and caps the output of a chunk at [`MAX_OUTPUT`].
//! See wasmtime's `examples/epochs.rs`.
//!
//! This file holds the engine, its ticker and the compiled payload. Beside it, one concern each:
//! `check` (the ABI checks `compile` runs and the one-line messages of its errors), `sandbox`
//! (the host state of a store: limiter, epoch deadline, `dispy.emit`, how a stop is classified),
//! `worker` (an instance serving chunks) and `serial` ([`run_serial`], the reference run).

mod check;
mod sandbox;
mod serial;
mod worker;

use std::fmt;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use wire::abi;
use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store};

pub use super::{CancelFlag, ExecError, Limits};
pub use serial::run_serial;
pub use worker::WasmWorker;
pub(super) use check::{check_memory, describe_extern, one_line};
pub(super) use sandbox::{classify_error, on_epoch, GuestLimiter, Interrupt};

use super::wasi::{self, FilterPayload};
use check::{check_func, check_imports, SIG_ABI_VERSION, SIG_ALLOC, SIG_RUN, SIG_SETUP};
use sandbox::{arm, classify, emit, log, new_store, HostState};

/// How often the ticker thread advances the engine's epoch; the resolution of chunk timeouts and
/// cancellation.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The most output one chunk may emit; more fails the chunk with a trap rather than exhausting the
/// node's memory.
pub const MAX_OUTPUT: usize = 1 << 30;

/// Largest linear memory a 32-bit module can have (65536 pages of 64 KiB).
pub(super) const MAX_WASM32_MEMORY: u64 = 1 << 32;

/// Time allowed to instantiate a module and call `dispy_abi_version` while compiling.
const ABI_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Table elements a worker may have; generous for compiled languages, small enough to bound the
/// host memory a guest can take through `table.grow`.
pub(super) const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The node's WebAssembly engine: one per process, shared by every job. Cheap to clone.
///
/// It wraps a `wasmtime::Engine` configured for epoch interruption and owns a background thread
/// that advances the epoch every [`EPOCH_TICK`]. The thread stops when this value, its clones and
/// every [`WasmWorker`] created from it are dropped (workers keep it alive so their deadlines
/// keep working).
#[derive(Clone)]
pub struct WasmEngine {
    engine: Engine,
    ticker: Arc<Ticker>,
}

impl WasmEngine {
    /// Creates the engine and starts its epoch ticker thread.
    ///
    /// # Errors
    /// [`ExecError::Engine`] when wasmtime rejects the configuration or the thread cannot start.
    pub fn new() -> Result<Self, ExecError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| ExecError::Engine(one_line(&e)))?;
        let ticker = Ticker::start(engine.clone())
            .map_err(|e| ExecError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self {
            engine,
            ticker: Arc::new(ticker),
        })
    }

    /// Compiles a payload (binary WebAssembly or WAT text) and checks it against the dispy ABI v1.
    ///
    /// The check needs no job: required exports (`memory`, `dispy_alloc`, `dispy_run`) with the
    /// right types, optional ones (`dispy_setup`, `dispy_abi_version`, `dispy_combine`) with the right types when
    /// present, and no import but `dispy.emit` and `dispy.log`. When `dispy_abi_version` is exported it is called
    /// in a throwaway store (with a memory limit and a deadline) and must return 1. Compiling is
    /// CPU-heavy: call it from a blocking thread.
    ///
    /// # Errors
    /// An [`ExecError`] whose message is a one-line explanation for the user.
    pub fn compile(&self, bytes: &[u8]) -> Result<WasmPayload, ExecError> {
        let module =
            Module::new(&self.engine, bytes).map_err(|e| ExecError::InvalidWasm(one_line(&e)))?;
        if wasi::is_filter(&module) {
            let filter = wasi::compile(&self.engine, &module)?;
            return Ok(WasmPayload {
                memory_min: filter.initial_memory(),
                inner: PayloadInner::Filter(filter),
            });
        }
        check_imports(&module)?;
        let memory_min = check_memory(&module)?;
        check_func(&module, abi::EXPORT_ALLOC, SIG_ALLOC, true)?;
        check_func(&module, abi::EXPORT_RUN, SIG_RUN, true)?;
        let has_setup = check_func(&module, abi::EXPORT_SETUP, SIG_SETUP, false)?;
        let has_version = check_func(&module, abi::EXPORT_ABI_VERSION, SIG_ABI_VERSION, false)?;
        let has_combine = check_func(&module, abi::EXPORT_COMBINE, SIG_RUN, false)?;

        let mut linker = Linker::new(&self.engine);
        linker
            .func_wrap(abi::IMPORT_MODULE, abi::IMPORT_EMIT, emit)
            .and_then(|linker| linker.func_wrap(abi::IMPORT_MODULE, abi::IMPORT_LOG, log))
            .map_err(|e| ExecError::Engine(one_line(&e)))?;
        // The imports were checked above, so this only fails on an engine problem.
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| ExecError::InvalidWasm(one_line(&e)))?;
        let payload = AbiPayload { pre, has_setup, has_combine };
        if has_version {
            let version = self.abi_version(&payload)?;
            if u32::try_from(version) != Ok(abi::ABI_VERSION) {
                return Err(ExecError::AbiVersion(version.into()));
            }
        }
        Ok(WasmPayload {
            memory_min,
            inner: PayloadInner::Abi(payload),
        })
    }

    /// The wasmtime engine, for the filter executor.
    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Calls `dispy_abi_version` in a throwaway store.
    fn abi_version(&self, payload: &AbiPayload) -> Result<i32, ExecError> {
        let limits = Limits {
            memory: MAX_WASM32_MEMORY,
            chunk_timeout: ABI_CHECK_TIMEOUT,
        };
        let mut store = new_store(&self.engine, limits, CancelFlag::default());
        arm(&mut store, ABI_CHECK_TIMEOUT);
        let check = |store: &mut Store<HostState>| -> wasmtime::Result<i32> {
            let instance = payload.pre.instantiate(&mut *store)?;
            let func = instance.get_typed_func::<(), i32>(&mut *store, abi::EXPORT_ABI_VERSION)?;
            func.call(&mut *store, ())
        };
        check(&mut store).map_err(|e| {
            ExecError::AbiVersionCheck(classify(&store, &e, ABI_CHECK_TIMEOUT).message)
        })
    }
}

impl fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmEngine").finish_non_exhaustive()
    }
}

/// How a WebAssembly payload talks to the host; [`WasmEngine::compile`] decides from its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WasmFlavour {
    /// The dispy ABI v1: `dispy_run` per chunk, output through `dispy.emit`.
    Abi,
    /// A WASI command (`_start`, no `dispy_run`): the chunk on stdin, the output from stdout.
    Filter,
}

/// A compiled and checked payload, ready to instantiate. Cheap to clone (wasmtime shares the
/// compiled code), so the node's payload cache can hand it to every worker of every job.
#[derive(Clone)]
pub struct WasmPayload {
    /// Initial size of the exported memory in bytes, checked against a job's limit up front.
    memory_min: u64,
    /// What the module is, with what running it needs.
    inner: PayloadInner,
}

#[derive(Clone)]
enum PayloadInner {
    Abi(AbiPayload),
    Filter(FilterPayload),
}

/// An ABI module, checked.
#[derive(Clone)]
struct AbiPayload {
    /// The module with `dispy.emit` already resolved.
    pre: InstancePre<HostState>,
    /// Whether `dispy_setup` is exported, so workers know to call it.
    has_setup: bool,
    /// Whether `dispy_combine` is exported, which reduce jobs need.
    has_combine: bool,
}

impl WasmPayload {
    /// Bytes of linear memory the module starts with; a worker needs at least this much.
    pub fn initial_memory(&self) -> u64 {
        self.memory_min
    }

    /// Whether the module exports `dispy_combine` (a WASI filter never does).
    pub fn has_combine(&self) -> bool {
        matches!(&self.inner, PayloadInner::Abi(abi) if abi.has_combine)
    }

    /// Whether the module is an ABI payload or a WASI filter.
    pub fn flavour(&self) -> WasmFlavour {
        match self.inner {
            PayloadInner::Abi(_) => WasmFlavour::Abi,
            PayloadInner::Filter(_) => WasmFlavour::Filter,
        }
    }
}

impl fmt::Debug for WasmPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("WasmPayload");
        f.field("flavour", &self.flavour());
        if let PayloadInner::Abi(abi) = &self.inner {
            f.field("has_setup", &abi.has_setup).field("has_combine", &abi.has_combine);
        }
        f.field("initial_memory", &self.memory_min).finish_non_exhaustive()
    }
}

/// The epoch ticker thread; stopped and joined on drop.
pub(super) struct Ticker {
    /// Dropping the sender wakes the thread and ends it.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("dispy-wasm-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and bumps a counter; it cannot panic in practice, and a
            // panic there must not turn into a second one here.
            let _ = thread.join();
        }
    }
}
