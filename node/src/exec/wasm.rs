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
//! Sandboxing, per worker: a [`ResourceLimiter`] caps linear memory (and records that it denied a
//! grow, so the resulting trap is reported as a memory failure without matching strings); every
//! call into the guest arms an epoch deadline of one tick whose callback checks the wall-clock
//! deadline and the [`CancelFlag`]; the only import is `dispy.emit`, which bounds-checks its range
//! and caps the output of a chunk at [`MAX_OUTPUT`]. See wasmtime's `examples/epochs.rs`.

use std::fmt;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wire::abi;
use wire::proto::{ChunkFailure, FailureKind};
use wire::units::format_size;
use wasmtime::{
    Caller, Config, Engine, Extern, ExternType, FuncType, InstancePre, Linker, Memory, Module,
    ResourceLimiter, Store, Trap, TypedFunc, UpdateDeadline,
};

pub use super::{CancelFlag, ExecError, Limits};
use super::wasi::{self, FilterPayload, FilterWorker};
use super::{cancelled, deadline_after, failure, reused, setup_failure, timed_out};

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

/// Signatures of the ABI's functions, as [`describe_func`] writes them.
const SIG_ALLOC: &str = "(i32) -> i32";
const SIG_RUN: &str = "(i32, i32, i32, i32) -> i32";
const SIG_SETUP: &str = "(i32, i32) -> i32";
const SIG_ABI_VERSION: &str = "() -> i32";
const SIG_EMIT: &str = "(i32, i32) -> ()";

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
    /// right types, optional ones (`dispy_setup`, `dispy_abi_version`) with the right types when
    /// present, and no import but `dispy.emit`. When `dispy_abi_version` is exported it is called
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

        let mut linker = Linker::new(&self.engine);
        linker
            .func_wrap(abi::IMPORT_MODULE, abi::IMPORT_EMIT, emit)
            .map_err(|e| ExecError::Engine(one_line(&e)))?;
        // The imports were checked above, so this only fails on an engine problem.
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| ExecError::InvalidWasm(one_line(&e)))?;
        let payload = AbiPayload { pre, has_setup };
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
}

impl WasmPayload {
    /// Bytes of linear memory the module starts with; a worker needs at least this much.
    pub fn initial_memory(&self) -> u64 {
        self.memory_min
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
            f.field("has_setup", &abi.has_setup);
        }
        f.field("initial_memory", &self.memory_min).finish_non_exhaustive()
    }
}

/// One instance of a payload serving chunks of one job in turn (one per slot).
///
/// Creating it instantiates the module, copies the job's arguments into guest memory (the first
/// `dispy_alloc` call, kept for the worker's life) and runs `dispy_setup` once. Guest code runs on
/// the calling thread, so call it from a dedicated thread, never from an async task. For a WASI
/// filter it holds what each chunk's fresh instance needs (see [`super::wasi`]).
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

    fn run_inner(&mut self, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        if self.broken {
            return Err(reused());
        }
        if self.store.data().cancel.is_cancelled() {
            return Err(cancelled());
        }
        if i32::try_from(input.len()).is_err() {
            return Err(failure(
                FailureKind::MemoryLimit,
                format!(
                    "chunk input of {} does not fit a 32-bit WebAssembly memory",
                    format_size(input.len() as u64)
                ),
            ));
        }
        arm(&mut self.store, self.chunk_timeout);
        self.store.data_mut().output.clear();
        let code = self
            .call_run(input)
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
}

/// Runs every input through one worker, in order, and concatenates the outputs: the serial
/// reference that tests compare distributed output against, and a baseline for benchmarks.
///
/// The worker gets the largest memory a 32-bit module can use and a one-day chunk timeout.
///
/// # Errors
/// The [`ExecError`] of compiling, of the worker's setup ([`ExecError::Worker`]) or of the first
/// failing chunk ([`ExecError::Chunk`]).
pub fn run_serial(
    engine: &WasmEngine,
    payload_bytes: &[u8],
    args: &[u8],
    inputs: impl IntoIterator<Item = Vec<u8>>,
) -> Result<Vec<u8>, ExecError> {
    let payload = engine.compile(payload_bytes)?;
    let limits = Limits {
        memory: MAX_WASM32_MEMORY,
        chunk_timeout: Duration::from_secs(24 * 60 * 60),
    };
    let mut worker = WasmWorker::new(engine, &payload, args, limits, CancelFlag::default())
        .map_err(ExecError::Worker)?;
    let mut output = Vec::new();
    for (index, input) in (0u64..).zip(inputs) {
        let chunk = worker
            .run(&input)
            .map_err(|failure| ExecError::Chunk { index, failure })?;
        output.extend_from_slice(&chunk);
    }
    Ok(output)
}

/// The instance's ABI entry points, looked up once per worker.
struct Guest {
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    run: TypedFunc<(i32, i32, i32, i32), i32>,
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
        args,
    })
}

/// The host side of one store: limits, deadline and the output being collected.
struct HostState {
    limiter: GuestLimiter,
    /// What `dispy.emit` collected for the current chunk.
    output: Vec<u8>,
    /// Cap on `output`, normally [`MAX_OUTPUT`].
    output_limit: usize,
    /// When the current call into the guest must stop.
    deadline: Instant,
    cancel: CancelFlag,
    /// The guest's memory once instantiated, so `emit` need not look it up by name.
    memory: Option<Memory>,
}

/// Caps a store's memories and tables, remembering whether it refused to grow memory.
pub(super) struct GuestLimiter {
    memory_limit: usize,
    /// Set when a memory grow was refused, so the trap that follows is reported as a memory
    /// failure.
    denied: bool,
}

impl GuestLimiter {
    /// A limiter allowing `limits.memory` bytes of linear memory.
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            memory_limit: usize::try_from(limits.memory).unwrap_or(usize::MAX),
            denied: false,
        }
    }

    /// Whether a memory grow was refused: the guest hit its memory limit.
    pub(super) fn denied(&self) -> bool {
        self.denied
    }

    /// The failure of a guest that hit its memory limit.
    pub(super) fn failure(&self) -> ChunkFailure {
        let limit = format_size(self.memory_limit as u64);
        failure(FailureKind::MemoryLimit, format!("payload exceeded its memory limit of {limit}"))
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Growing past the module's own declared maximum or the 4 GiB of a 32-bit memory (the
        // only kind `compile` accepts) is ordinary wasm: `memory.grow` returns -1.
        if maximum.is_some_and(|max| desired > max) || desired as u64 > MAX_WASM32_MEMORY {
            return Ok(false);
        }
        if desired > self.memory_limit {
            self.denied = true;
            return Err(Interrupt::MemoryLimit.into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        // One memory, so the per-memory limit is the worker's total.
        1
    }

    fn tables(&self) -> usize {
        16
    }
}

/// Host-raised reasons to stop the guest, recovered from wasmtime's error by downcasting.
#[derive(Debug)]
pub(super) enum Interrupt {
    Timeout,
    Cancelled,
    MemoryLimit,
    /// A bad `dispy.emit` or oversized output, already phrased for the user.
    Emit(String),
}

impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interrupt::Timeout => f.write_str("time limit exceeded"),
            Interrupt::Cancelled => f.write_str("cancelled"),
            Interrupt::MemoryLimit => f.write_str("memory limit exceeded"),
            Interrupt::Emit(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Interrupt {}

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

/// A store with the limiter and the epoch callback installed.
fn new_store(engine: &Engine, limits: Limits, cancel: CancelFlag) -> Store<HostState> {
    let state = HostState {
        limiter: GuestLimiter::new(limits),
        output: Vec::new(),
        output_limit: MAX_OUTPUT,
        deadline: Instant::now(),
        cancel,
        memory: None,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store.epoch_deadline_callback(|store| {
        let state = store.data();
        on_epoch(&state.cancel, state.deadline)
    });
    store
}

/// What a store's epoch callback does every tick: stop a cancelled or overdue guest, or let it
/// run one more tick.
pub(super) fn on_epoch(cancel: &CancelFlag, deadline: Instant) -> wasmtime::Result<UpdateDeadline> {
    if cancel.is_cancelled() {
        Err(Interrupt::Cancelled.into())
    } else if Instant::now() >= deadline {
        Err(Interrupt::Timeout.into())
    } else {
        Ok(UpdateDeadline::Continue(1))
    }
}

/// Sets the wall-clock deadline of the next call into the guest and checks it every tick.
fn arm(store: &mut Store<HostState>, timeout: Duration) {
    store.data_mut().deadline = deadline_after(timeout);
    store.set_epoch_deadline(1);
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

/// The host function `dispy.emit(ptr, len)`: appends guest bytes to the chunk's output.
fn emit(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let memory = match caller.data().memory {
        Some(memory) => memory,
        // Called from the start function, before the worker recorded the memory.
        None => match caller.get_export(abi::EXPORT_MEMORY) {
            Some(Extern::Memory(memory)) => memory,
            _ => return Err(Interrupt::Emit("dispy.emit called without a memory".into()).into()),
        },
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    // The ABI's i32 pointers and lengths are unsigned byte offsets.
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    let Some(bytes) = start.checked_add(len).and_then(|end| data.get(start..end)) else {
        return Err(Interrupt::Emit(format!(
            "dispy.emit({start:#x}, {len}) reads outside the payload's memory of {} bytes",
            data.len()
        ))
        .into());
    };
    if state.output.len().saturating_add(len) > state.output_limit {
        return Err(Interrupt::Emit(format!(
            "payload emitted more than {} of output for one chunk",
            format_size(state.output_limit as u64)
        ))
        .into());
    }
    state.output.extend_from_slice(bytes);
    Ok(())
}

/// Turns a wasmtime error from a call into the guest into the failure the user sees.
fn classify(store: &Store<HostState>, error: &wasmtime::Error, timeout: Duration) -> ChunkFailure {
    classify_error(&store.data().limiter, error, timeout)
}

/// [`classify`] for any store: the limiter says whether memory ran out, the error says the rest.
pub(super) fn classify_error(
    limiter: &GuestLimiter,
    error: &wasmtime::Error,
    timeout: Duration,
) -> ChunkFailure {
    if limiter.denied() || matches!(error.downcast_ref(), Some(Interrupt::MemoryLimit)) {
        return limiter.failure();
    }
    match error.downcast_ref::<Interrupt>() {
        Some(Interrupt::Timeout) => timed_out(timeout),
        Some(Interrupt::Cancelled) => cancelled(),
        // `MemoryLimit` was handled above; it cannot reach this arm.
        Some(interrupt @ (Interrupt::Emit(_) | Interrupt::MemoryLimit)) => {
            failure(FailureKind::Trap, interrupt.to_string())
        }
        None => match error.downcast_ref::<Trap>() {
            // `Trap` displays as "wasm trap: wasm `unreachable` instruction executed".
            Some(trap) => failure(FailureKind::Trap, trap.to_string()),
            None => failure(FailureKind::Trap, one_line(error)),
        },
    }
}

/// Checks that every import is `dispy.emit` with the ABI's type.
fn check_imports(module: &Module) -> Result<(), ExecError> {
    for import in module.imports() {
        if import.module() != abi::IMPORT_MODULE || import.name() != abi::IMPORT_EMIT {
            return Err(ExecError::ForbiddenImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
        let found = describe_extern(&import.ty());
        if found != SIG_EMIT {
            return Err(ExecError::EmitType { found });
        }
    }
    Ok(())
}

/// Checks the `memory` export and returns its initial size in bytes.
pub(super) fn check_memory(module: &Module) -> Result<u64, ExecError> {
    match module.get_export(abi::EXPORT_MEMORY) {
        None => Err(ExecError::MissingExport(abi::EXPORT_MEMORY)),
        Some(ExternType::Memory(ty)) if !ty.is_64() && !ty.is_shared() => {
            Ok(ty.minimum().saturating_mul(ty.page_size()))
        }
        Some(other) => Err(ExecError::ExportType {
            name: abi::EXPORT_MEMORY,
            found: describe_extern(&other),
            expected: "memory",
        }),
    }
}

/// Checks a function export's type; returns whether it exists.
fn check_func(
    module: &Module,
    name: &'static str,
    expected: &'static str,
    required: bool,
) -> Result<bool, ExecError> {
    let Some(ty) = module.get_export(name) else {
        return if required {
            Err(ExecError::MissingExport(name))
        } else {
            Ok(false)
        };
    };
    let found = describe_extern(&ty);
    if found != expected {
        return Err(ExecError::ExportType {
            name,
            found,
            expected,
        });
    }
    Ok(true)
}

/// Describes an import's or export's type as error messages show it, e.g. `(i32) -> i32`.
pub(super) fn describe_extern(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(func) => describe_func(func),
        ExternType::Memory(mem) if mem.is_shared() => "shared memory".to_string(),
        ExternType::Memory(mem) if mem.is_64() => "memory64".to_string(),
        ExternType::Memory(_) => "memory".to_string(),
        ExternType::Global(_) => "global".to_string(),
        ExternType::Table(_) => "table".to_string(),
        ExternType::Tag(_) => "tag".to_string(),
    }
}

/// `(i32, i32) -> i32`, with `()` for no results and parentheses around several.
fn describe_func(func: &FuncType) -> String {
    let params: Vec<String> = func.params().map(|p| p.to_string()).collect();
    let results: Vec<String> = func.results().map(|r| r.to_string()).collect();
    let results = match results.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", results.join(", ")),
    };
    format!("({}) -> {results}", params.join(", "))
}

/// An error and its causes on one line, for messages that end up in a terminal or a log field.
///
/// WAT parse errors span several lines (message, `--> <anon>:LINE:COL`, a source snippet); they
/// become `message (at line LINE, column COL)`.
pub(super) fn one_line(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    let location = text.lines().find_map(|line| {
        let (place, column) = line.trim().strip_prefix("--> ")?.rsplit_once(':')?;
        let (_, line) = place.rsplit_once(':')?;
        Some((line, column))
    });
    match (text.lines().next(), location) {
        (Some(first), Some((line, column))) if text.contains('\n') => {
            format!("{} (at line {line}, column {column})", first.trim())
        }
        _ => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}
