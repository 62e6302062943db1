//! The host side of a WebAssembly store: what keeps a guest inside its limits and how a stopped
//! guest is reported.
//!
//! [`HostState`] is what each `Store` carries: a [`GuestLimiter`] capping linear memory and
//! tables, the wall-clock deadline and [`CancelFlag`] that the epoch callback ([`on_epoch`])
//! checks every tick, and the output the host function `dispy.emit` ([`emit`]) collects.
//! [`Interrupt`] is how the host stops a guest, and [`classify`] turns whatever stopped it (an
//! interrupt, a denied grow, a trap) into the [`ChunkFailure`] the user sees.

use std::fmt;
use std::time::{Duration, Instant};

use wire::abi;
use wire::proto::{ChunkFailure, FailureKind};
use wire::units::format_size;
use wasmtime::{Caller, Engine, Extern, Memory, ResourceLimiter, Store, Trap, UpdateDeadline};

use super::{one_line, CancelFlag, Limits, MAX_OUTPUT, MAX_TABLE_ELEMENTS, MAX_WASM32_MEMORY};
use crate::exec::log::AttemptLog;
use crate::exec::{cancelled, deadline_after, failure, timed_out};

/// The host side of one store: limits, deadline and the output being collected.
pub(super) struct HostState {
    limiter: GuestLimiter,
    /// What `dispy.emit` collected for the current chunk.
    pub(super) output: Vec<u8>,
    /// Cap on `output`, normally [`MAX_OUTPUT`].
    pub(super) output_limit: usize,
    /// When the current call into the guest must stop.
    deadline: Instant,
    pub(super) cancel: CancelFlag,
    /// The guest's memory once instantiated, so `emit` need not look it up by name.
    pub(super) memory: Option<Memory>,
    /// What `dispy.log` collected since the worker's log was last taken.
    pub(super) log: AttemptLog,
}

/// Caps a store's memories and tables, remembering whether it refused to grow memory.
pub(in crate::exec) struct GuestLimiter {
    memory_limit: usize,
    /// Set when a memory grow was refused, so the trap that follows is reported as a memory
    /// failure.
    denied: bool,
}

impl GuestLimiter {
    /// A limiter allowing `limits.memory` bytes of linear memory.
    pub(in crate::exec) fn new(limits: Limits) -> Self {
        Self {
            memory_limit: usize::try_from(limits.memory).unwrap_or(usize::MAX),
            denied: false,
        }
    }

    /// Whether a memory grow was refused: the guest hit its memory limit.
    pub(in crate::exec) fn denied(&self) -> bool {
        self.denied
    }

    /// The failure of a guest that hit its memory limit.
    pub(in crate::exec) fn failure(&self) -> ChunkFailure {
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
pub(in crate::exec) enum Interrupt {
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

/// A store with the limiter and the epoch callback installed.
pub(super) fn new_store(engine: &Engine, limits: Limits, cancel: CancelFlag) -> Store<HostState> {
    let state = HostState {
        limiter: GuestLimiter::new(limits),
        output: Vec::new(),
        output_limit: MAX_OUTPUT,
        deadline: Instant::now(),
        cancel,
        memory: None,
        log: AttemptLog::default(),
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
pub(in crate::exec) fn on_epoch(
    cancel: &CancelFlag,
    deadline: Instant,
) -> wasmtime::Result<UpdateDeadline> {
    if cancel.is_cancelled() {
        Err(Interrupt::Cancelled.into())
    } else if Instant::now() >= deadline {
        Err(Interrupt::Timeout.into())
    } else {
        Ok(UpdateDeadline::Continue(1))
    }
}

/// Sets the wall-clock deadline of the next call into the guest and checks it every tick.
pub(super) fn arm(store: &mut Store<HostState>, timeout: Duration) {
    store.data_mut().deadline = deadline_after(timeout);
    store.set_epoch_deadline(1);
}

/// The guest's memory, recorded by the worker or (from the start function, before that) looked
/// up by name; `what` names the host function for the error.
fn guest_memory(caller: &mut Caller<'_, HostState>, what: &str) -> wasmtime::Result<Memory> {
    match caller.data().memory {
        Some(memory) => Ok(memory),
        None => match caller.get_export(abi::EXPORT_MEMORY) {
            Some(Extern::Memory(memory)) => Ok(memory),
            _ => Err(Interrupt::Emit(format!("{what} called without a memory")).into()),
        },
    }
}

/// The bytes `ptr..ptr + len` of the guest's memory, or the error for a range outside it.
fn guest_range<'a>(data: &'a [u8], ptr: i32, len: i32, what: &str) -> wasmtime::Result<&'a [u8]> {
    // The ABI's i32 pointers and lengths are unsigned byte offsets.
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    start.checked_add(len).and_then(|end| data.get(start..end)).ok_or_else(|| {
        Interrupt::Emit(format!("{what}({start:#x}, {len}) reads outside the payload's memory of {} bytes", data.len()))
            .into()
    })
}

/// The host function `dispy.log(ptr, len)`: one line of the attempt's log. A bad range traps
/// like `dispy.emit`'s; a full log drops the rest and counts it.
pub(super) fn log(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let memory = guest_memory(&mut caller, "dispy.log")?;
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let bytes = guest_range(data, ptr, len, "dispy.log")?;
    state.log.push_line(bytes);
    Ok(())
}

/// The host function `dispy.emit(ptr, len)`: appends guest bytes to the chunk's output.
pub(super) fn emit(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let memory = guest_memory(&mut caller, "dispy.emit")?;
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let bytes = guest_range(data, ptr, len, "dispy.emit")?;
    let len = bytes.len();
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
pub(super) fn classify(
    store: &Store<HostState>,
    error: &wasmtime::Error,
    timeout: Duration,
) -> ChunkFailure {
    classify_error(&store.data().limiter, error, timeout)
}

/// [`classify`] for any store: the limiter says whether memory ran out, the error says the rest.
pub(in crate::exec) fn classify_error(
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
