//! `dispy-sdk`: write dispy payloads in Rust as native shared libraries (`.so`).
//!
//! A payload is one function from a chunk's bytes and the job's argument bytes to output bytes.
//! [`export_payload!`] turns such a function into the `extern "C"` symbols of the dispy C ABI v1
//! (`dispy_run`, `dispy_abi_version` and, when asked for, `dispy_setup` and `dispy_combine`,
//! which `--results reduce` needs), so the payload crate
//! itself needs no `unsafe`:
//!
//! ```
//! use dispy_sdk::Emitter;
//!
//! /// Emits the chunk's length as a little-endian u64.
//! fn length(input: &[u8], _args: &[u8], out: &mut Emitter) -> Result<(), i32> {
//!     out.emit(&(input.len() as u64).to_le_bytes());
//!     Ok(())
//! }
//!
//! dispy_sdk::export_payload!(length);
//! ```
//!
//! Build the crate with `crate-type = ["cdylib"]` and submit the `.so` (see `docs/payloads.md`
//! and `sdk/examples/checksum.rs`). The node loads it in a separate worker process that serves
//! many chunks of one job in turn: `dispy_setup` runs once per worker, so per-worker state (parsed
//! arguments, tables) can live in a `static` such as a `std::sync::OnceLock`.
//!
//! Logs: [`log`] writes one line to the attempt's log (the payload's stderr, which the node
//! captures per attempt together with stdout, up to 64 KiB, and `dispy-submit logs JOB` prints).
//!
//! Failure semantics: returning `Err(code)` (non-zero) is a payload error reported to the user
//! with the code and not retried. A panic is caught at the ABI boundary and aborts the worker
//! process; the node reports it as a crash (`SIGABRT`, with the panic message from stderr) and
//! retries the chunk elsewhere. Unwinding never crosses into the host.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};

/// The dispy ABI version this crate implements; `dispy_abi_version` returns it.
pub const ABI_VERSION: u32 = 1;

/// The host's output callback, as the C ABI passes it: `void emit(void *ctx, const uint8_t *data,
/// size_t len)`.
pub type EmitFn = unsafe extern "C" fn(ctx: *mut c_void, data: *const u8, len: usize);

/// The signature of a payload's run function: input, arguments and the output sink; `Err(code)`
/// (non-zero) reports a payload error.
pub type RunFn = fn(input: &[u8], args: &[u8], out: &mut Emitter) -> Result<(), i32>;

/// The signature of a payload's setup function, called once per worker with the job's arguments.
pub type SetupFn = fn(args: &[u8]) -> Result<(), i32>;

/// The signature of a payload's combine function (`dispy_combine`), which jobs with
/// `--results reduce` need: it emits the combination of two results, `a` of the chunks just
/// before `b`'s. It must be associative; dispy never assumes it is commutative and combines only
/// adjacent ranges, left before right. Its output is combined again, so it must accept what it
/// emits as well as what the run function emits. `Err(code)` (non-zero) fails the combine.
pub type CombineFn = fn(a: &[u8], b: &[u8], out: &mut Emitter) -> Result<(), i32>;

/// Where a payload writes its output for the current chunk.
///
/// Every [`Emitter::emit`] appends bytes; the chunk's result is their concatenation, in order.
/// An `Emitter` is only valid during the `dispy_run` call it was made for, which the borrow in
/// [`RunFn`] enforces; it is neither `Send` nor `Sync` because the host's callback is not
/// thread-safe.
pub struct Emitter<'a> {
    emit: EmitFn,
    ctx: *mut c_void,
    /// Ties the emitter to one `dispy_run` call and keeps it on the calling thread.
    _call: PhantomData<&'a mut *mut c_void>,
}

impl Emitter<'_> {
    /// Appends `bytes` to the chunk's output.
    ///
    /// The host copies the bytes before returning. It caps a chunk's output (1 GiB); past the
    /// cap the chunk fails, so there is nothing to check here.
    pub fn emit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // SAFETY: `emit` and `ctx` came from the host's `dispy_run` call that is still running
        // (the borrow ties `self` to it), and `bytes` is a valid slice for the call's duration.
        unsafe { (self.emit)(self.ctx, bytes.as_ptr(), bytes.len()) }
    }
}

/// Writes one line to this attempt's log: the payload's stderr, which the node captures per
/// attempt (with stdout; the first 64 KiB, then a `[dispy: log truncated, N bytes dropped]` line)
/// and keeps with the job, for `dispy-submit logs JOB [--chunk N]` and a failed job's report. A
/// newline is added when `line` lacks one. Logging never fails the chunk: a write error is
/// ignored.
pub fn log(line: impl AsRef<[u8]>) {
    use std::io::Write;
    let line = line.as_ref();
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(line);
    if !line.ends_with(b"\n") {
        let _ = stderr.write_all(b"\n");
    }
}

impl std::io::Write for Emitter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.emit(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for Emitter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter").finish_non_exhaustive()
    }
}

/// Exports a Rust function as a dispy ABI v1 payload: `export_payload!(run)`,
/// `export_payload!(run, setup = setup)`, `export_payload!(run, combine = combine)` or
/// `export_payload!(run, setup = setup, combine = combine)`.
///
/// `run` must be a [`RunFn`], `setup` a [`SetupFn`], `combine` a [`CombineFn`]. The macro
/// defines the `#[no_mangle]` symbols `dispy_run`, `dispy_abi_version` and, when given,
/// `dispy_setup` and `dispy_combine`; use it once per `cdylib`.
#[macro_export]
macro_rules! export_payload {
    (@combine $combine:path) => {
        /// The dispy ABI v1 combine entry point, generated by `dispy_sdk::export_payload!`.
        ///
        /// # Safety
        /// Called by the dispy node with valid buffers and a valid emit callback.
        #[no_mangle]
        pub unsafe extern "C" fn dispy_combine(
            a: *const u8,
            a_len: usize,
            b: *const u8,
            b_len: usize,
            emit: ::core::option::Option<$crate::EmitFn>,
            ctx: *mut ::core::ffi::c_void,
        ) -> i32 {
            // SAFETY: the host passes valid buffers and callback, which `combine` checks for null.
            unsafe { $crate::__private::combine(a, a_len, b, b_len, emit, ctx, $combine) }
        }
    };
    ($run:path, combine = $combine:path) => {
        $crate::export_payload!(@run $run);
        $crate::export_payload!(@combine $combine);
    };
    ($run:path, setup = $setup:path, combine = $combine:path) => {
        $crate::export_payload!($run, setup = $setup);
        $crate::export_payload!(@combine $combine);
    };
    (@run $run:path) => {
        /// The dispy ABI v1 entry point, generated by `dispy_sdk::export_payload!`.
        ///
        /// # Safety
        /// Called by the dispy node with valid buffers and a valid emit callback.
        #[no_mangle]
        pub unsafe extern "C" fn dispy_run(
            input: *const u8,
            input_len: usize,
            args: *const u8,
            args_len: usize,
            emit: ::core::option::Option<$crate::EmitFn>,
            ctx: *mut ::core::ffi::c_void,
        ) -> i32 {
            // SAFETY: the host passes valid buffers and callback, which `run` checks for null.
            unsafe { $crate::__private::run(input, input_len, args, args_len, emit, ctx, $run) }
        }

        /// The dispy ABI version of this payload, generated by `dispy_sdk::export_payload!`.
        #[no_mangle]
        pub extern "C" fn dispy_abi_version() -> u32 {
            $crate::ABI_VERSION
        }
    };
    ($run:path) => {
        $crate::export_payload!(@run $run);
    };
    ($run:path, setup = $setup:path) => {
        $crate::export_payload!(@run $run);

        /// The dispy ABI v1 setup entry point, generated by `dispy_sdk::export_payload!`.
        ///
        /// # Safety
        /// Called by the dispy node with a valid argument buffer.
        #[no_mangle]
        pub unsafe extern "C" fn dispy_setup(args: *const u8, args_len: usize) -> i32 {
            // SAFETY: the host passes a valid buffer, which `setup` checks for null.
            unsafe { $crate::__private::setup(args, args_len, $setup) }
        }
    };
}

/// What [`export_payload!`] expands to call; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Code returned for a null `emit` callback: a broken host, not a payload error.
    const NO_EMIT: i32 = -1;

    /// The body of the generated `dispy_run`.
    ///
    /// # Safety
    /// `input` and `args` must be null with a zero length or point to that many readable bytes
    /// for the duration of the call; `emit` must be callable with `ctx` until the call returns.
    pub unsafe fn run(
        input: *const u8,
        input_len: usize,
        args: *const u8,
        args_len: usize,
        emit: Option<EmitFn>,
        ctx: *mut c_void,
        f: RunFn,
    ) -> i32 {
        let Some(emit) = emit else {
            return NO_EMIT;
        };
        // SAFETY: forwarded from this function's contract.
        let (input, args) = unsafe { (slice(input, input_len), slice(args, args_len)) };
        let mut out = Emitter { emit, ctx, _call: PhantomData };
        guard(|| f(input, args, &mut out))
    }

    /// The body of the generated `dispy_combine`.
    ///
    /// # Safety
    /// As for [`run`]: `a` and `b` null with a zero length or readable for their lengths during
    /// the call, `emit` callable with `ctx` until it returns.
    pub unsafe fn combine(
        a: *const u8,
        a_len: usize,
        b: *const u8,
        b_len: usize,
        emit: Option<EmitFn>,
        ctx: *mut c_void,
        f: CombineFn,
    ) -> i32 {
        let Some(emit) = emit else {
            return NO_EMIT;
        };
        // SAFETY: forwarded from this function's contract.
        let (a, b) = unsafe { (slice(a, a_len), slice(b, b_len)) };
        let mut out = Emitter { emit, ctx, _call: PhantomData };
        guard(|| f(a, b, &mut out))
    }

    /// The body of the generated `dispy_setup`.
    ///
    /// # Safety
    /// `args` must be null with a zero length or point to `args_len` readable bytes for the
    /// duration of the call.
    pub unsafe fn setup(args: *const u8, args_len: usize, f: SetupFn) -> i32 {
        // SAFETY: forwarded from this function's contract.
        let args = unsafe { slice(args, args_len) };
        guard(|| f(args))
    }

    /// Runs `f`, mapping `Ok` to 0 and `Err(0)` to 1 (0 would read as success); a panic aborts
    /// the process, since unwinding must not cross the C ABI.
    fn guard(f: impl FnOnce() -> Result<(), i32>) -> i32 {
        match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => 0,
            Ok(Err(0)) => 1,
            Ok(Err(code)) => code,
            // The panic hook already printed the message to stderr, which the node reports.
            Err(_) => std::process::abort(),
        }
    }

    /// A slice from a C pointer and length; null or empty gives `&[]`.
    ///
    /// # Safety
    /// A non-null `ptr` must point to `len` readable bytes that outlive `'a`.
    unsafe fn slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
        if ptr.is_null() || len == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees `len` readable bytes at a non-null `ptr`.
            unsafe { std::slice::from_raw_parts(ptr, len) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what the generated `dispy_run` emits, as the node's worker does.
    unsafe extern "C" fn collect(ctx: *mut c_void, data: *const u8, len: usize) {
        // SAFETY: `ctx` is the `Vec` passed by `call` below and `data` has `len` bytes.
        unsafe {
            let out = &mut *ctx.cast::<Vec<u8>>();
            out.extend_from_slice(std::slice::from_raw_parts(data, len));
        }
    }

    fn reverse(input: &[u8], args: &[u8], out: &mut Emitter) -> Result<(), i32> {
        if args == b"fail" {
            return Err(7);
        }
        if args == b"zero" {
            return Err(0);
        }
        let mut bytes = input.to_vec();
        bytes.reverse();
        out.emit(&bytes);
        std::io::Write::write_all(out, b"!").map_err(|_| 9)?;
        Ok(())
    }

    fn call(input: &[u8], args: &[u8]) -> (i32, Vec<u8>) {
        let mut out = Vec::<u8>::new();
        let ctx = (&mut out as *mut Vec<u8>).cast::<c_void>();
        // SAFETY: valid slices and a callback that matches `ctx`.
        let code = unsafe {
            __private::run(
                input.as_ptr(),
                input.len(),
                args.as_ptr(),
                args.len(),
                Some(collect),
                ctx,
                reverse,
            )
        };
        (code, out)
    }

    #[test]
    fn run_maps_results_and_output() {
        assert_eq!(call(b"abc", b""), (0, b"cba!".to_vec()));
        assert_eq!(call(b"", b""), (0, b"!".to_vec()));
        assert_eq!(call(b"abc", b"fail"), (7, Vec::new()));
        assert_eq!(call(b"abc", b"zero"), (1, Vec::new()));
        // SAFETY: null pointers with zero lengths are allowed; a null callback is refused.
        let code = unsafe {
            __private::run(std::ptr::null(), 0, std::ptr::null(), 0, None, std::ptr::null_mut(), reverse)
        };
        assert_eq!(code, -1);
    }

    #[test]
    fn combine_passes_both_results_in_order() {
        fn concat(a: &[u8], b: &[u8], out: &mut Emitter) -> Result<(), i32> {
            if a.is_empty() && b.is_empty() {
                return Err(4);
            }
            out.emit(a);
            out.emit(b);
            Ok(())
        }
        let mut out = Vec::<u8>::new();
        let ctx = (&mut out as *mut Vec<u8>).cast::<c_void>();
        // SAFETY: valid slices (or null and empty) and a callback that matches `ctx`.
        unsafe {
            assert_eq!(__private::combine(b"ab".as_ptr(), 2, b"c".as_ptr(), 1, Some(collect), ctx, concat), 0);
            assert_eq!(__private::combine(std::ptr::null(), 0, std::ptr::null(), 0, Some(collect), ctx, concat), 4);
        }
        assert_eq!(out, b"abc");
    }

    #[test]
    fn setup_maps_results() {
        fn check(args: &[u8]) -> Result<(), i32> {
            if args.is_empty() { Err(3) } else { Ok(()) }
        }
        // SAFETY: valid (or null and empty) argument buffers.
        unsafe {
            assert_eq!(__private::setup(b"x".as_ptr(), 1, check), 0);
            assert_eq!(__private::setup(std::ptr::null(), 0, check), 3);
        }
    }
}
