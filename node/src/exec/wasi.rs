//! WASI filters: WebAssembly modules that export WASI `_start` (a "command", e.g. any C program
//! built with `clang --target=wasm32-wasi`) instead of `dispy_run`, run as stdin-to-stdout
//! filters with wasmtime-wasi's preview 1, through its synchronous API (`wasmtime_wasi::p1`).
//!
//! Per chunk: the chunk's bytes are the filter's stdin, what it writes to stdout is the chunk's
//! output (capped at [`MAX_OUTPUT`]), its argv is `payload` followed by the job's arguments split
//! on whitespace, and its exit status is the chunk's status (0 = success, anything else
//! [`FailureKind::PayloadError`] with that code). It gets no preopened directories (so no files),
//! no network (preview 1 cannot create sockets, and no address is allowed), no environment
//! variables, and no `poll_oneoff` (see [`NO_POLL`]); stderr is the attempt's log (its first line also explains a
//! failure), capped like every attempt log. The memory limit (a store limiter) and the time limit and cancellation
//! (epoch deadlines) are the same as for ABI modules.
//!
//! **A fresh instance per chunk.** A WASI command runs `_start` once: the C runtime initialises,
//! calls `main`, runs `atexit` handlers and exits; calling `_start` again on the same instance is
//! undefined. Stdin's end of file, stdout and the exit status are per run as well. So a filter
//! worker keeps the pre-linked module and makes a new `Store` and instance for every chunk.
//! Instantiating a pre-linked module costs microseconds plus the module's data segments, far less
//! than any useful chunk; the cost is that a filter has no per-worker state (no `dispy_setup`).

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wire::abi;
use wire::observe::ATTEMPT_LOG_MAX;
use wire::proto::{ChunkFailure, FailureKind};
use wire::units::format_size;
use tokio::io::AsyncWrite;
use wasmtime::{Caller, Engine, ExternType, InstancePre, Linker, Module, Store};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::wasm::{
    check_memory, classify_error, describe_extern, on_epoch, one_line, GuestLimiter, Interrupt,
    Ticker, MAX_OUTPUT,
};
use super::log::AttemptLog;
use super::{cancelled, deadline_after, failure, reused, CancelFlag, ExecError, Limits};

/// The WASI command entry point that marks a module as a filter.
pub const WASI_START: &str = "_start";

/// The import module of WASI preview 1, the only one a filter may import from.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// The WASI function the node replaces with one that always fails with `ENOTSUP`:
/// `poll_oneoff` is how a WASI program sleeps, and a host-side sleep cannot be interrupted by an
/// epoch deadline. A filter has nothing to wait for anyway: its stdin is all there and its stdout
/// never blocks.
pub const NO_POLL: &str = "poll_oneoff";

/// WASI errno `ENOTSUP`, what [`NO_POLL`] returns.
const ERRNO_NOTSUP: i32 = 58;


/// Longest stderr excerpt quoted in a failure message.
const STDERR_QUOTE: usize = 200;

/// Whether `module` is a WASI filter: it exports a `_start` function and no `dispy_run`. A
/// module that exports both is an ABI module (whose check then refuses its WASI imports).
pub(super) fn is_filter(module: &Module) -> bool {
    matches!(module.get_export(WASI_START), Some(ExternType::Func(_)))
        && module.get_export(abi::EXPORT_RUN).is_none()
}

/// Checks a filter module and links it against the node's WASI.
///
/// # Errors
/// [`ExecError::ExportType`] for a `_start` that is not `() -> ()`, [`ExecError::MissingExport`]
/// without a `memory` export, [`ExecError::FilterImport`] for an import a filter does not get.
pub(super) fn compile(engine: &Engine, module: &Module) -> Result<FilterPayload, ExecError> {
    if let Some(ty) = module.get_export(WASI_START) {
        let found = describe_extern(&ty);
        if found != "() -> ()" {
            return Err(ExecError::ExportType { name: WASI_START, found, expected: "() -> ()" });
        }
    }
    let memory_min = check_memory(module)?;
    let linker = linker(engine)?;
    // A throwaway store, only to ask the linker what it defines.
    let mut store = Store::new(engine, FilterState::new(WasiCtxBuilder::new().build_p1(), Limits {
        memory: 0,
        chunk_timeout: Duration::ZERO,
    }, CancelFlag::default()));
    for import in module.imports() {
        let known = import.module() == WASI_MODULE
            && linker.get(&mut store, import.module(), import.name()).is_ok();
        if !known {
            return Err(ExecError::FilterImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
    }
    // Every import is defined, so only a type mismatch fails here.
    let pre = linker.instantiate_pre(module).map_err(|e| ExecError::InvalidWasm(one_line(&e)))?;
    Ok(FilterPayload { pre, memory_min })
}

/// The linker every filter is instantiated with: WASI preview 1 (synchronous), with
/// [`NO_POLL`] replaced.
fn linker(engine: &Engine) -> Result<Linker<FilterState>, ExecError> {
    let engine_error = |e: wasmtime::Error| ExecError::Engine(one_line(&e));
    let mut linker = Linker::new(engine);
    p1::add_to_linker_sync(&mut linker, |state: &mut FilterState| &mut state.wasi)
        .map_err(engine_error)?;
    linker.allow_shadowing(true);
    linker
        .func_wrap(
            WASI_MODULE,
            NO_POLL,
            |_: Caller<'_, FilterState>, _subs: i32, _events: i32, _count: i32, _done: i32| {
                ERRNO_NOTSUP
            },
        )
        .map_err(engine_error)?;
    Ok(linker)
}

/// A checked filter module, linked against the node's WASI. Cheap to clone.
#[derive(Clone)]
pub(super) struct FilterPayload {
    pre: InstancePre<FilterState>,
    /// Initial size of the exported memory in bytes.
    memory_min: u64,
}

impl FilterPayload {
    /// Bytes of linear memory the module starts with.
    pub(super) fn initial_memory(&self) -> u64 {
        self.memory_min
    }
}

/// One slot's filter: what each chunk's fresh instance needs.
pub(super) struct FilterWorker {
    engine: Engine,
    pre: InstancePre<FilterState>,
    /// `payload` and the job's arguments split on whitespace.
    argv: Vec<String>,
    limits: Limits,
    cancel: CancelFlag,
    /// Cap on stdout, normally [`MAX_OUTPUT`].
    output_limit: usize,
    /// Set after any failure, as for ABI workers, so callers see the same behaviour.
    broken: bool,
    /// The last chunk's stderr: the attempt's log.
    log: AttemptLog,
    /// Keeps the epoch ticking while this worker exists.
    _ticker: Arc<Ticker>,
}

impl FilterWorker {
    /// A worker for `payload`; the caller has checked the module's memory against `limits`.
    /// Arguments that are not UTF-8 are converted lossily (WASI arguments are strings).
    pub(super) fn new(
        engine: &Engine,
        payload: &FilterPayload,
        args: &[u8],
        limits: Limits,
        cancel: CancelFlag,
        ticker: Arc<Ticker>,
    ) -> Self {
        let args = String::from_utf8_lossy(args);
        let argv = std::iter::once("payload").chain(args.split_whitespace()).map(String::from).collect();
        Self {
            engine: engine.clone(),
            pre: payload.pre.clone(),
            argv,
            limits,
            cancel,
            output_limit: MAX_OUTPUT,
            broken: false,
            log: AttemptLog::default(),
            _ticker: ticker,
        }
    }

    /// Runs one chunk through a fresh instance; see [`super::wasm::WasmWorker::run`].
    pub(super) fn run(&mut self, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        if self.broken {
            return Err(reused());
        }
        if self.cancel.is_cancelled() {
            return Err(cancelled());
        }
        let result = self.run_fresh(input);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// The last chunk's stderr, bounded like every attempt log.
    pub(super) fn take_log(&mut self) -> Vec<u8> {
        self.log.take()
    }

    /// Lowers the stdout cap, so tests need not write a gigabyte.
    #[cfg(test)]
    pub(super) fn set_output_limit(&mut self, bytes: usize) {
        self.output_limit = bytes;
    }

    fn run_fresh(&mut self, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        let stdout = CappedOutput::new(self.output_limit, Overflow::Trap);
        let stderr = CappedOutput::new(ATTEMPT_LOG_MAX, Overflow::Drop);
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(Bytes::copy_from_slice(input)))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&self.argv)
            .build_p1();
        let mut store = Store::new(&self.engine, FilterState::new(wasi, self.limits, self.cancel.clone()));
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|store| {
            let state = store.data();
            on_epoch(&state.cancel, state.deadline)
        });
        store.set_epoch_deadline(1);
        let run = |store: &mut Store<FilterState>| -> wasmtime::Result<()> {
            let instance = self.pre.instantiate(&mut *store)?;
            let start = instance.get_typed_func::<(), ()>(&mut *store, WASI_START)?;
            start.call(&mut *store, ())
        };
        let result = run(&mut store);
        let (bytes, dropped) = stderr.take_counted();
        self.log.push(&bytes);
        self.log.count_dropped(dropped);
        let error = match result {
            Ok(()) => return Ok(stdout.take()),
            Err(error) => error,
        };
        match error.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => Ok(stdout.take()),
            Some(&I32Exit(code)) => Err(failure(
                FailureKind::PayloadError(code),
                format!("payload exited with code {code}{}", quote(&bytes)),
            )),
            None => {
                let mut failure = classify_error(&store.data().limiter, &error, self.limits.chunk_timeout);
                if failure.kind == FailureKind::Trap {
                    failure.message.push_str(&quote(&bytes));
                }
                Err(failure)
            }
        }
    }
}

impl fmt::Debug for FilterWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterWorker")
            .field("argv", &self.argv)
            .field("limits", &self.limits)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// The host side of one filter run.
struct FilterState {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
    /// When the run must stop.
    deadline: Instant,
    cancel: CancelFlag,
}

impl FilterState {
    fn new(wasi: WasiP1Ctx, limits: Limits, cancel: CancelFlag) -> Self {
        Self {
            wasi,
            limiter: GuestLimiter::new(limits),
            deadline: deadline_after(limits.chunk_timeout),
            cancel,
        }
    }
}

/// What a [`CappedOutput`] does with bytes past its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Stop the guest: stdout, where dropping bytes would give wrong output.
    Trap,
    /// Keep the first bytes and drop the rest: stderr, which is only for messages.
    Drop,
}

/// An in-memory stdout or stderr with a size cap; clones share the buffer.
#[derive(Clone)]
struct CappedOutput(Arc<Mutex<Captured>>);

struct Captured {
    bytes: Vec<u8>,
    /// Bytes past the cap of an [`Overflow::Drop`] output.
    dropped: u64,
    limit: usize,
    overflow: Overflow,
}

impl CappedOutput {
    fn new(limit: usize, overflow: Overflow) -> Self {
        Self(Arc::new(Mutex::new(Captured { bytes: Vec::new(), dropped: 0, limit, overflow })))
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        // Only appends happen under this lock, so a poisoned buffer is still consistent.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `bytes`, or refuses with the message of a stdout over its cap.
    fn append(&self, bytes: &[u8]) -> Result<(), String> {
        let mut captured = self.lock();
        let room = captured.limit.saturating_sub(captured.bytes.len());
        if bytes.len() <= room {
            captured.bytes.extend_from_slice(bytes);
            return Ok(());
        }
        match captured.overflow {
            Overflow::Drop => {
                captured.bytes.extend_from_slice(&bytes[..room]);
                captured.dropped += (bytes.len() - room) as u64;
                Ok(())
            }
            Overflow::Trap => Err(format!(
                "payload wrote more than {} to stdout for one chunk",
                format_size(captured.limit as u64)
            )),
        }
    }

    /// The captured bytes, leaving the buffer empty.
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().bytes)
    }

    /// The captured bytes and how many were dropped, leaving the buffer empty.
    fn take_counted(&self) -> (Vec<u8>, u64) {
        let mut captured = self.lock();
        (std::mem::take(&mut captured.bytes), std::mem::take(&mut captured.dropped))
    }
}

/// The first line of a filter's stderr, as a suffix for a failure message; empty if none.
fn quote(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("");
    if line.is_empty() {
        return String::new();
    }
    let mut quoted: String = line.chars().filter(|c| !c.is_control()).take(STDERR_QUOTE).collect();
    if line.chars().count() > STDERR_QUOTE {
        quoted.push('…');
    }
    format!(" (stderr: {quoted})")
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes)
            .map_err(|message| StreamError::Trap(wasmtime::Error::new(Interrupt::Emit(message))))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready; `write` enforces the cap, so a guest over it is stopped, not blocked.
        Ok(1 << 20)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CappedOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.append(buf).map(|()| buf.len()).map_err(std::io::Error::other))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
