//! The node crate's only `unsafe` code: loading and calling a native payload, and the few system
//! calls around it that the standard library does not wrap.
//!
//! Everything under "worker side" runs only in native worker processes (see `super::worker`),
//! never in the daemon: `dlopen` runs the library's initialisers, and calling `dispy_run` runs
//! arbitrary code, so a crash there must take down a disposable process. The "node side"
//! functions (`poll`, `kill_process_group`) are plain system calls with no memory-safety
//! preconditions beyond valid arguments. Every `unsafe` block says why it is sound.

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use wire::abi;
use libloading::os::unix::{Library as RawLibrary, RTLD_LOCAL, RTLD_NOW};

use super::protocol::MEMORY_FRAME;

// ---- Worker side: the library ----------------------------------------------------------------

/// `int32_t dispy_run(input, input_len, args, args_len, emit, ctx)`.
type RunFn = unsafe extern "C" fn(*const u8, usize, *const u8, usize, EmitFn, *mut c_void) -> i32;
/// `void emit(ctx, data, len)`, the host callback handed to `dispy_run`.
type EmitFn = unsafe extern "C" fn(*mut c_void, *const u8, usize);
/// `uint32_t dispy_abi_version(void)`.
type VersionFn = unsafe extern "C" fn() -> u32;
/// `int32_t dispy_combine(a, a_len, b, b_len, emit, ctx)`.
type CombineFn = unsafe extern "C" fn(*const u8, usize, *const u8, usize, EmitFn, *mut c_void) -> i32;
/// `int32_t dispy_setup(args, args_len)`.
type SetupFn = unsafe extern "C" fn(*const u8, usize) -> i32;

/// Why a library could not be opened as a payload.
#[derive(Debug)]
pub(super) enum OpenError {
    /// `dlopen` failed; its message.
    Load(String),
    /// A required ABI symbol is absent.
    MissingSymbol(&'static str),
}

/// A payload library, loaded with its ABI entry points resolved.
pub(super) struct Library {
    run: RunFn,
    version: VersionFn,
    setup: Option<SetupFn>,
    combine: Option<CombineFn>,
    /// Keeps the code behind the function pointers above mapped.
    _library: RawLibrary,
}

impl Library {
    /// Loads the library at `path` (eagerly binding its undefined symbols, so a missing
    /// dependency fails here) and resolves the ABI symbols.
    pub(super) fn open(path: &Path) -> Result<Self, OpenError> {
        // SAFETY: loading runs the library's initialisers, arbitrary code. That is acceptable
        // only because this is a native worker process (the module docs): whatever the code
        // does, it does to this disposable process, and the node reports a crash.
        let library = unsafe { RawLibrary::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| OpenError::Load(e.to_string()))?;
        // SAFETY: these are the types the dispy ABI v1 gives these symbols. A library that
        // exports them with other types breaks the ABI contract; the worst it can do is crash
        // this worker. The pointers stay valid while `_library` keeps the library loaded.
        let (run, version, setup, combine) = unsafe {
            let run = library
                .get::<RunFn>(b"dispy_run\0")
                .map(|symbol| *symbol)
                .map_err(|_| OpenError::MissingSymbol(abi::NATIVE_RUN))?;
            let version = library
                .get::<VersionFn>(b"dispy_abi_version\0")
                .map(|symbol| *symbol)
                .map_err(|_| OpenError::MissingSymbol(abi::NATIVE_ABI_VERSION))?;
            let setup = library.get::<SetupFn>(b"dispy_setup\0").map(|symbol| *symbol).ok();
            let combine = library.get::<CombineFn>(b"dispy_combine\0").map(|symbol| *symbol).ok();
            (run, version, setup, combine)
        };
        Ok(Self { run, version, setup, combine, _library: library })
    }

    /// What `dispy_abi_version` returns.
    pub(super) fn abi_version(&self) -> u32 {
        // SAFETY: a resolved ABI symbol of the loaded library, called as the ABI defines.
        unsafe { (self.version)() }
    }

    /// Whether the library exports `dispy_setup`.
    pub(super) fn has_setup(&self) -> bool {
        self.setup.is_some()
    }

    /// Whether the library exports `dispy_combine`.
    pub(super) fn has_combine(&self) -> bool {
        self.combine.is_some()
    }

    /// Calls `dispy_combine` on two results, collecting what it emits in [`OUTPUT`] as
    /// [`Library::run`] does; `None` when the library does not export it.
    pub(super) fn combine(&self, a: &[u8], b: &[u8]) -> Option<i32> {
        let combine = self.combine?;
        let ctx = ptr::from_ref(&OUTPUT).cast_mut().cast::<c_void>();
        // SAFETY: as for `run`: a resolved ABI symbol called as the ABI defines, `a` and `b`
        // valid for the call, and `emit` accepting any `ctx` at any time.
        Some(unsafe { combine(a.as_ptr(), a.len(), b.as_ptr(), b.len(), emit, ctx) })
    }

    /// Calls `dispy_setup` if exported; returns its code (0 without one).
    pub(super) fn setup(&self, args: &[u8]) -> i32 {
        match self.setup {
            // SAFETY: as for `abi_version`; `args` is valid for the call.
            Some(setup) => unsafe { setup(args.as_ptr(), args.len()) },
            None => 0,
        }
    }

    /// Flushes the C library's stdio buffers, so what the payload `printf`ed reaches the node
    /// before the reply that ends the call (stdout to a socket is fully buffered).
    pub(super) fn flush_stdio(&self) {
        // SAFETY: `fflush(NULL)` flushes every open output stream and takes no pointer of ours.
        unsafe { libc::fflush(ptr::null_mut()) };
    }

    /// Calls `dispy_run`, collecting what it emits in [`OUTPUT`] (which the caller resets with
    /// [`Output::begin`] and collects with [`Output::finish`]); returns its code.
    pub(super) fn run(&self, input: &[u8], args: &[u8]) -> i32 {
        // The payload hands `ctx` back to `emit` unchanged; `emit` uses the static directly,
        // so a payload that calls it late or from another thread still finds valid memory.
        let ctx = ptr::from_ref(&OUTPUT).cast_mut().cast::<c_void>();
        // SAFETY: as for `abi_version`; `input` and `args` are valid for the call, and `emit`
        // accepts any `ctx` and any call at any time.
        unsafe { (self.run)(input.as_ptr(), input.len(), args.as_ptr(), args.len(), emit, ctx) }
    }
}

/// The output of the chunk being run in this worker process.
pub(super) static OUTPUT: Output = Output(Mutex::new(Collected {
    bytes: Vec::new(),
    limit: 0,
    over_limit: false,
    out_of_memory: false,
}));

/// A worker's output collector, filled by [`emit`]; one per process, in [`OUTPUT`].
pub(super) struct Output(Mutex<Collected>);

struct Collected {
    bytes: Vec<u8>,
    limit: usize,
    /// The payload emitted more than `limit`; later bytes are dropped.
    over_limit: bool,
    /// Growing `bytes` failed (the address-space limit); later bytes are dropped.
    out_of_memory: bool,
}

/// What a chunk emitted.
pub(super) enum Emitted {
    /// Everything, in order.
    Bytes(Vec<u8>),
    /// More than the output limit.
    OverLimit,
    /// More than the worker could allocate.
    OutOfMemory,
}

impl Output {
    /// Starts collecting a chunk's output, at most `limit` bytes.
    pub(super) fn begin(&self, limit: usize) {
        let mut collected = self.lock();
        collected.bytes = Vec::new();
        collected.limit = limit;
        collected.over_limit = false;
        collected.out_of_memory = false;
    }

    /// Takes what the chunk emitted.
    pub(super) fn finish(&self) -> Emitted {
        let mut collected = self.lock();
        if collected.over_limit {
            Emitted::OverLimit
        } else if collected.out_of_memory {
            Emitted::OutOfMemory
        } else {
            Emitted::Bytes(std::mem::take(&mut collected.bytes))
        }
    }

    fn lock(&self) -> MutexGuard<'_, Collected> {
        // Nothing panics while holding the lock; a poisoned collector is still consistent.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `emit` callback given to `dispy_run`: appends `len` bytes at `data` to [`OUTPUT`].
unsafe extern "C" fn emit(_ctx: *mut c_void, data: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    if data.is_null() {
        // A payload bug that would otherwise read address 0: crash on purpose, with a reason.
        eprintln!("dispy: the payload called emit with a null pointer and length {len}");
        std::process::abort();
    }
    let mut collected = OUTPUT.lock();
    if collected.over_limit || collected.out_of_memory {
        return;
    }
    if collected.bytes.len().saturating_add(len) > collected.limit {
        collected.over_limit = true;
        return;
    }
    if collected.bytes.try_reserve(len).is_err() {
        collected.out_of_memory = true;
        return;
    }
    // SAFETY: the ABI requires `data` to point to `len` readable bytes during the call; a
    // payload that lies can only crash this worker process.
    let bytes = unsafe { std::slice::from_raw_parts(data, len) };
    collected.bytes.extend_from_slice(bytes);
}

// ---- Worker side: the process ----------------------------------------------------------------

/// Makes this process die with SIGKILL when the thread that spawned it exits (the node's slot
/// thread, or the whole node), and checks that the node is still `parent`. Returns false when
/// the parent is already gone.
pub(super) fn die_with_parent(parent: u32) -> bool {
    // SAFETY: `PR_SET_PDEATHSIG` takes a signal number and changes only this process's state.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    // Checked after setting, so a parent that died before the call is noticed too.
    set == 0 && std::os::unix::process::parent_id() == parent
}

/// Switches this process to `uid` and `gid` for good: no supplementary groups, then the group,
/// then the user (real, effective and saved ids alike), and checks that root cannot be regained.
///
/// # Errors
/// The failing call's error; the process must then not load the payload.
pub(super) fn switch_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `setgroups` with a count of 0 reads no memory; `setresgid` and `setresuid` take
    // plain ids. Each changes only this single-threaded worker process's credentials.
    unsafe {
        if libc::setgroups(0, ptr::null()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `setuid` takes a plain id; it must fail now that the saved id is not root.
    if uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(io::Error::other("could switch back to root after dropping privileges"));
    }
    Ok(())
}

/// Sets `no_new_privs`: nothing this process executes can gain privileges (set-user-id
/// binaries, file capabilities). Landlock sets it too; this covers an unconfined worker.
pub(super) fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: `PR_SET_NO_NEW_PRIVS` takes an integer flag and changes only this process's state.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Installs `filter`, a classic BPF program of seccomp (built by `super::confine`), on this
/// process for good. Needs `no_new_privs`, which the caller has set.
///
/// # Errors
/// The kernel's refusal (no seccomp, a malformed program).
pub(super) fn install_seccomp_filter(filter: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(filter.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let program = libc::sock_fprog { len, filter: filter.as_ptr().cast_mut() };
    // SAFETY: `program` points to `len` valid instructions that outlive the call (the kernel
    // copies them); `PR_SET_SECCOMP` changes only this single-threaded worker process's state.
    let set = unsafe {
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER as libc::c_ulong, &raw const program as libc::c_ulong, 0, 0)
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Moves this process's stdin (the protocol socket) to a new close-on-exec descriptor and puts
/// `/dev/null` on descriptor 0, so a payload reading stdin cannot steal protocol bytes.
pub(super) fn take_stdin() -> io::Result<OwnedFd> {
    let protocol = io::stdin().as_fd().try_clone_to_owned()?;
    let null = File::open("/dev/null")?;
    // SAFETY: `dup2` onto descriptor 0, which this process owns; `null` is open for the call,
    // and nothing in this process holds a Rust handle that owns descriptor 0.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(protocol)
}

/// Sets a resource limit (soft and hard).
fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `limit` is a valid `rlimit` for the duration of the call.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a resource limit as (soft, hard).
fn limit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable `rlimit` for the duration of the call.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Caps this process's address space (`RLIMIT_AS`, soft and hard) at `bytes`.
pub(super) fn limit_address_space(bytes: u64) -> io::Result<()> {
    let (_, hard) = limit(libc::RLIMIT_AS)?;
    let bytes = bytes.min(hard);
    set_limit(libc::RLIMIT_AS, bytes, bytes)
}

/// Turns off core dumps: a crashing payload is reported, not dumped (which is slow and fills
/// disks).
pub(super) fn disable_core_dumps() -> io::Result<()> {
    set_limit(libc::RLIMIT_CORE, 0, 0)
}

/// Sets the soft `RLIMIT_CPU` to `seconds` of total CPU time (SIGXCPU past it), keeping the hard
/// limit so later chunks can move it up again.
pub(super) fn limit_cpu_time(seconds: u64) -> io::Result<()> {
    let (_, hard) = limit(libc::RLIMIT_CPU)?;
    set_limit(libc::RLIMIT_CPU, seconds.min(hard), hard)
}

/// CPU time this process has used so far (user plus system).
pub(super) fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain data for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let micros = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

/// Where the crash reporter writes its [`MEMORY_FRAME`]; -1 before it is installed.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
/// How much free address space the crash reporter probes for.
static PROBE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Installs handlers for SIGSEGV, SIGBUS and SIGABRT that tell the node, before the process
/// dies of the signal, whether it died at its address-space limit.
///
/// Memory exhaustion under `RLIMIT_AS` shows up as a failed `malloc`, after which C code writes
/// through the null pointer (SIGSEGV) or aborts (SIGABRT, as Rust's allocation failure does).
/// The handler tries to map `probe` bytes of address space (never touched): when even that fails
/// the process is within `probe` of its limit, so it writes [`MEMORY_FRAME`] to `report` for the
/// node. Then it dies of the original signal (the handler resets itself and re-raises), so the
/// node still sees the real cause. A crash far from the limit stays a plain crash. A stack
/// overflow never reaches the handler (there is no alternate signal stack) and is a plain
/// SIGSEGV.
///
/// `report` must stay open until the process exits.
pub(super) fn install_crash_reporter(report: RawFd, probe: usize) -> io::Result<()> {
    REPORT_FD.store(report, Ordering::Relaxed);
    PROBE_BYTES.store(probe, Ordering::Relaxed);
    // SAFETY: `sigaction` is plain data for which all-zero bytes are a valid value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_fatal_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // Reset to the default action on entry and allow the re-raise to be delivered at once.
    action.sa_flags = libc::SA_RESETHAND | libc::SA_NODEFER;
    // SAFETY: `action.sa_mask` is a valid, writable signal set.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGABRT] {
        // SAFETY: `action` is fully initialised and its handler only makes async-signal-safe
        // system calls (see `on_fatal_signal`).
        if unsafe { libc::sigaction(signal, &action, ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The crash reporter's signal handler; see [`install_crash_reporter`].
extern "C" fn on_fatal_signal(signal: libc::c_int) {
    let probe = PROBE_BYTES.load(Ordering::Relaxed);
    let report = REPORT_FD.load(Ordering::Relaxed);
    // SAFETY: `mmap`, `munmap`, `write` and `raise` are async-signal-safe system calls; the probe
    // mapping is private, inaccessible and unmapped at once, and `MEMORY_FRAME` is static data.
    unsafe {
        let mapping = libc::mmap(
            ptr::null_mut(),
            probe,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if mapping == libc::MAP_FAILED {
            if report >= 0 {
                libc::write(report, MEMORY_FRAME.as_ptr().cast(), MEMORY_FRAME.len());
            }
        } else {
            libc::munmap(mapping, probe);
        }
        // `SA_RESETHAND` restored the default action, so this ends the process.
        libc::raise(signal);
    }
}

// ---- Node side -----------------------------------------------------------------------------

/// This process's effective user id (the node's, in the daemon).
pub(super) fn effective_uid() -> u32 {
    // SAFETY: `geteuid` takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// One descriptor to wait on with [`poll`], and what it turned out ready for.
pub(super) struct Interest<'a> {
    fd: BorrowedFd<'a>,
    read: bool,
    write: bool,
    /// Readable, at end of file, or in error (a read will not block).
    pub(super) readable: bool,
    /// Writable, or in error (a write will not block).
    pub(super) writable: bool,
}

impl<'a> Interest<'a> {
    /// Waits for `fd` to become readable (`read`) and/or writable (`write`).
    pub(super) fn new(fd: BorrowedFd<'a>, read: bool, write: bool) -> Self {
        Self { fd, read, write, readable: false, writable: false }
    }
}

/// Waits up to `timeout` (rounded up to a millisecond) until one of `interests` is ready; an
/// interrupted wait returns early with nothing ready.
pub(super) fn poll(interests: &mut [Interest<'_>], timeout: Duration) -> io::Result<()> {
    let mut fds: Vec<libc::pollfd> = interests
        .iter()
        .map(|interest| libc::pollfd {
            fd: interest.fd.as_raw_fd(),
            events: (if interest.read { libc::POLLIN } else { 0 })
                | (if interest.write { libc::POLLOUT } else { 0 }),
            revents: 0,
        })
        .collect();
    let millis = timeout.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid array of `fds.len()` entries for the duration of the call, and
    // every descriptor in it is borrowed, so open.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(error) };
    }
    for (interest, fd) in interests.iter_mut().zip(&fds) {
        let trouble = fd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0;
        interest.readable = fd.revents & libc::POLLIN != 0 || trouble;
        interest.writable = fd.revents & libc::POLLOUT != 0 || trouble;
    }
    Ok(())
}

/// Sends SIGKILL to every process in the group led by `leader` (a worker and anything it forked).
///
/// The caller must not have reaped `leader` yet, so its id (and the group's) cannot have been
/// reused by an unrelated process.
pub(super) fn kill_process_group(leader: u32) {
    let Ok(group) = i32::try_from(leader) else { return };
    if group <= 1 {
        return;
    }
    // SAFETY: `kill` has no memory-safety preconditions; the negative id names the process
    // group, which the caller guarantees is still the worker's.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

// ---- Tests: make the unit-test binary a worker ------------------------------------------------

/// In the node's unit-test binary, `main` is libtest's, so it cannot call `maybe_run_worker`.
/// Instead this constructor, which glibc runs before `main` with the process's `argc` and `argv`,
/// turns the test binary into a native worker when started with the worker marker, exactly as
/// `maybe_run_worker` does in `dispy-node` and `dispy-submit`.
#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod test_entry {
    use std::ffi::{c_char, c_int, CStr};

    use super::super::protocol::WORKER_MARKER;

    /// Placed in `.init_array`, so the dynamic loader calls it before `main`.
    #[used]
    #[link_section = ".init_array"]
    static ENTRY: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = entry;

    extern "C" fn entry(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
        if argc < 3 || argv.is_null() {
            return;
        }
        // SAFETY: glibc calls `.init_array` functions with the process's `argc` and `argv`, whose
        // first `argc` entries are valid NUL-terminated strings for the life of the process.
        let (marker, parent) = unsafe { (CStr::from_ptr(*argv.add(1)), CStr::from_ptr(*argv.add(2))) };
        if marker.to_bytes() != WORKER_MARKER.as_bytes() {
            return;
        }
        let parent = parent.to_str().ok().and_then(|p| p.parse().ok());
        super::super::worker::run(parent)
    }
}
