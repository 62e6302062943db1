//! [`WasmWorker`]: one instance of a compiled payload serving the chunks of one job in turn.
//!
//! For an ABI payload the worker instantiates the module in its own store, copies the job's
//! arguments in with `dispy_alloc`, runs `dispy_setup` once, then per chunk copies the input in,
//! arms the deadline and calls `dispy_run` (or, for a reduce job's combine, copies both results in
//! and calls `dispy_combine`); any failure marks the worker broken. A WASI filter is
//! carried by the same type and delegated to [`crate::exec::wasi`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wire::abi;
use wire::proto::{ChunkFailure, FailureKind};
use wire::units::format_size;
use wasmtime::{Memory, Store, TypedFunc};

use super::sandbox::{arm, classify, new_store, HostState};
use super::{AbiPayload, CancelFlag, Limits, PayloadInner, Ticker, WasmEngine, WasmPayload};
use crate::exec::wasi::FilterWorker;
use crate::exec::{cancelled, failure, reused, setup_failure};

/// One instance of a payload serving chunks of one job in turn (one per slot).
///
/// Creating it instantiates the module, copies the job's arguments into guest memory (the first
/// `dispy_alloc` call, kept for the worker's life) and runs `dispy_setup` once. Guest code runs on
/// the calling thread, so call it from a dedicated thread, never from an async task. For a WASI
/// filter it holds what each chunk's fresh instance needs (see [`crate::exec::wasi`]).
pub struct WasmWorker {
    inner: WorkerInner,
}

enum WorkerInner {
    Abi(AbiWorker),
    Filter(FilterWorker),
}

impl WasmWorker {
    /// Instantiates `payload` under `limits`, copies `args` in and runs `dispy_setup` if exported;
    /// for a filter, checks the limits and keeps `args` as its argv.
    ///
    /// # Errors
    /// A [`ChunkFailure`] of kind [`FailureKind::Setup`] when instantiation, the argument copy or
    /// `dispy_setup` fails (a non-zero return or a trap), [`FailureKind::MemoryLimit`] when the
    /// module's memory does not fit `limits.memory`, [`FailureKind::Timeout`] when setup takes longer
    /// than `limits.chunk_timeout`, and [`FailureKind::Node`] when `cancel` is set.
    pub fn new(
        engine: &WasmEngine,
        payload: &WasmPayload,
        args: &[u8],
        limits: Limits,
        cancel: CancelFlag,
    ) -> Result<Self, ChunkFailure> {
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        if payload.memory_min > limits.memory {
            return Err(failure(
                FailureKind::MemoryLimit,
                format!(
                    "payload needs {} of initial memory, more than its memory limit of {}",
                    format_size(payload.memory_min),
                    format_size(limits.memory)
                ),
            ));
        }
        let inner = match &payload.inner {
            PayloadInner::Abi(abi) => WorkerInner::Abi(AbiWorker::new(engine, abi, args, limits, cancel)?),
            PayloadInner::Filter(filter) => {
                let ticker = engine.ticker.clone();
                WorkerInner::Filter(FilterWorker::new(engine.engine(), filter, args, limits, cancel, ticker))
            }
        };
        Ok(Self { inner })
    }

    /// Runs one chunk and returns its output: everything it emitted, in order, or for a filter
    /// what it wrote to stdout.
    ///
    /// # Errors
    /// A [`ChunkFailure`]: [`FailureKind::PayloadError`] for a non-zero `dispy_run` return or
    /// filter exit code, [`FailureKind::Trap`] for a trap or a bad `dispy.emit` / `dispy_alloc`
    /// range, [`FailureKind::Timeout`], [`FailureKind::MemoryLimit`], or [`FailureKind::Node`]
    /// with the message `cancelled`. After any error this worker refuses further chunks: drop it
    /// and make a new one.
    pub fn run(&mut self, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        match &mut self.inner {
            WorkerInner::Abi(worker) => worker.run(input),
            WorkerInner::Filter(worker) => worker.run(input),
        }
    }

    /// Combines two results with the module's `dispy_combine` and returns what it emitted. Both
    /// are copied in with one `dispy_alloc` call (`b` right after `a`), so a bump allocator that
    /// resets on every call still holds both.
    ///
    /// # Errors
    /// As for [`WasmWorker::run`]; a module without `dispy_combine` (or a WASI filter) fails with
    /// [`FailureKind::Setup`].
    pub fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        match &mut self.inner {
            WorkerInner::Abi(worker) => worker.combine(a, b),
            WorkerInner::Filter(_) => Err(no_combine()),
        }
    }

    /// What the payload logged since the last call: its `dispy.log` lines, or a filter's stderr.
    pub fn take_log(&mut self) -> Vec<u8> {
        match &mut self.inner {
            WorkerInner::Abi(worker) => worker.store.data_mut().log.take(),
            WorkerInner::Filter(filter) => filter.take_log(),
        }
    }

    /// Lowers the output cap of this worker, so tests need not emit a gigabyte.
    #[cfg(test)]
    pub(crate) fn set_output_limit(&mut self, bytes: usize) {
        match &mut self.inner {
            WorkerInner::Abi(worker) => worker.store.data_mut().output_limit = bytes,
            WorkerInner::Filter(worker) => worker.set_output_limit(bytes),
        }
    }
}

impl fmt::Debug for WasmWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            WorkerInner::Abi(worker) => f
                .debug_struct("WasmWorker")
                .field("chunk_timeout", &worker.chunk_timeout)
                .field("broken", &worker.broken)
                .finish_non_exhaustive(),
            WorkerInner::Filter(worker) => fmt::Debug::fmt(worker, f),
        }
    }
}

/// An instance of an ABI module.
struct AbiWorker {
    store: Store<HostState>,
    guest: Guest,
    chunk_timeout: Duration,
    /// Set after any failure: the instance may be in any state, so it must not run again.
    broken: bool,
    /// Keeps the epoch ticking while this worker exists.
    _ticker: Arc<Ticker>,
}

impl AbiWorker {
    fn new(
        engine: &WasmEngine,
        payload: &AbiPayload,
        args: &[u8],
        limits: Limits,
        cancel: CancelFlag,
    ) -> Result<Self, ChunkFailure> {
        let mut store = new_store(&engine.engine, limits, cancel);
        arm(&mut store, limits.chunk_timeout);
        match instantiate(&mut store, payload, args) {
            Ok(guest) => Ok(Self {
                store,
                guest,
                chunk_timeout: limits.chunk_timeout,
                broken: false,
                _ticker: engine.ticker.clone(),
            }),
            Err(stop) => {
                let failure = stop.into_failure(&store, limits.chunk_timeout);
                Err(setup_failure(failure, limits.chunk_timeout))
            }
        }
    }

    fn run(&mut self, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        let result = self.run_inner(input);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        let result = self.call_guarded(a.len() + b.len(), |worker| worker.call_combine(a, b));
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn run_inner(&mut self, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        self.call_guarded(input.len(), |worker| worker.call_run(input))
    }

    /// Checks the worker may run `len` input bytes, arms the deadline, makes the call and turns
    /// its code and output into the outcome.
    fn call_guarded(
        &mut self,
        len: usize,
        call: impl FnOnce(&mut Self) -> Result<i32, Stop>,
    ) -> Result<Vec<u8>, ChunkFailure> {
        if self.broken {
            return Err(reused());
        }
        if self.store.data().cancel.is_cancelled() {
            return Err(cancelled());
        }
        if i32::try_from(len).is_err() {
            return Err(failure(
                FailureKind::MemoryLimit,
                format!(
                    "chunk input of {} does not fit a 32-bit WebAssembly memory",
                    format_size(len as u64)
                ),
            ));
        }
        arm(&mut self.store, self.chunk_timeout);
        self.store.data_mut().output.clear();
        let code = call(self)
            .map_err(|stop| stop.into_failure(&self.store, self.chunk_timeout))?;
        let output = std::mem::take(&mut self.store.data_mut().output);
        if code != 0 {
            return Err(failure(
                FailureKind::PayloadError(code),
                format!("payload returned error code {code}"),
            ));
        }
        Ok(output)
    }

    /// Copies the input in and calls `dispy_run`, returning its code.
    fn call_run(&mut self, input: &[u8]) -> Result<i32, Stop> {
        let guest = &self.guest;
        let in_ptr = copy_in(&mut self.store, guest.memory, &guest.alloc, input, "input")?;
        let (args_ptr, args_len) = guest.args;
        let params = (in_ptr, len_i32(input.len()), args_ptr, args_len);
        Ok(guest.run.call(&mut self.store, params)?)
    }

    /// Copies both results in with one allocation and calls `dispy_combine`, returning its code.
    fn call_combine(&mut self, a: &[u8], b: &[u8]) -> Result<i32, Stop> {
        let guest = &self.guest;
        let combine = guest.combine.clone().ok_or_else(|| Stop::Failed(no_combine()))?;
        let both = [a, b].concat();
        let a_ptr = copy_in(&mut self.store, guest.memory, &guest.alloc, &both, "results to combine")?;
        let b_ptr = a_ptr.wrapping_add(len_i32(a.len()));
        let params = (a_ptr, len_i32(a.len()), b_ptr, len_i32(b.len()));
        Ok(combine.call(&mut self.store, params)?)
    }
}

/// The failure of a combine asked of a payload without `dispy_combine`.
fn no_combine() -> ChunkFailure {
    failure(FailureKind::Setup, format!("payload does not export `{}`", abi::EXPORT_COMBINE))
}

/// The instance's ABI entry points, looked up once per worker.
struct Guest {
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    run: TypedFunc<(i32, i32, i32, i32), i32>,
    combine: Option<TypedFunc<(i32, i32, i32, i32), i32>>,
    /// Where the job's arguments live in guest memory (pointer, length), for every `dispy_run`.
    args: (i32, i32),
}

/// Why a sequence of calls into the guest stopped early.
enum Stop {
    /// Wasmtime returned an error: a trap, a limit, an interrupt; see [`classify`].
    Guest(wasmtime::Error),
    /// The host already knows what went wrong.
    Failed(ChunkFailure),
}

impl From<wasmtime::Error> for Stop {
    fn from(error: wasmtime::Error) -> Self {
        Stop::Guest(error)
    }
}

impl Stop {
    fn into_failure(self, store: &Store<HostState>, timeout: Duration) -> ChunkFailure {
        match self {
            Stop::Guest(error) => classify(store, &error, timeout),
            Stop::Failed(failure) => failure,
        }
    }
}

/// Instantiates the payload, copies the arguments in and runs `dispy_setup` if exported.
fn instantiate(
    store: &mut Store<HostState>,
    payload: &AbiPayload,
    args: &[u8],
) -> Result<Guest, Stop> {
    let instance = payload.pre.instantiate(&mut *store)?;
    // The exports were type-checked by `compile`, so these lookups only fail on a bug.
    let memory = instance
        .get_memory(&mut *store, abi::EXPORT_MEMORY)
        .ok_or_else(|| wasmtime::Error::msg("the `memory` export vanished"))?;
    store.data_mut().memory = Some(memory);
    let alloc = instance.get_typed_func(&mut *store, abi::EXPORT_ALLOC)?;
    let run = instance.get_typed_func(&mut *store, abi::EXPORT_RUN)?;
    let combine = if payload.has_combine { Some(instance.get_typed_func(&mut *store, abi::EXPORT_COMBINE)?) } else { None };
    let args = (
        copy_in(store, memory, &alloc, args, "arguments")?,
        len_i32(args.len()),
    );
    if payload.has_setup {
        let setup = instance.get_typed_func::<(i32, i32), i32>(&mut *store, abi::EXPORT_SETUP)?;
        let code = setup.call(&mut *store, args)?;
        if code != 0 {
            return Err(Stop::Failed(failure(
                FailureKind::Setup,
                format!("dispy_setup returned error code {code}"),
            )));
        }
    }
    Ok(Guest {
        memory,
        alloc,
        run,
        combine,
        args,
    })
}

/// Asks the guest for `bytes.len()` bytes with `dispy_alloc` and copies `bytes` there.
fn copy_in(
    store: &mut Store<HostState>,
    memory: Memory,
    alloc: &TypedFunc<i32, i32>,
    bytes: &[u8],
    what: &str,
) -> Result<i32, Stop> {
    let len = len_i32(bytes.len());
    let ptr = alloc.call(&mut *store, len)?;
    let start = ptr as u32 as usize;
    if memory.write(&mut *store, start, bytes).is_err() {
        let size = memory.data_size(&*store);
        return Err(Stop::Failed(failure(
            FailureKind::Trap,
            format!(
                "dispy_alloc({len}) for the {what} returned {start:#x}, \
                 outside the payload's memory of {size} bytes"
            ),
        )));
    }
    Ok(ptr)
}

/// A length the caller has checked to fit an `i32` (inputs) or that is small (arguments).
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}
