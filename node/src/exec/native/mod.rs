//! Native shared-library payloads (`.so`, the dispy C ABI v1), run in worker processes.
//!
//! The node never loads native code into the daemon. A [`NativeWorker`] is a child process: the
//! running binary itself (`/proc/self/exe`), started with the hidden first argument
//! [`WORKER_MARKER`], which [`maybe_run_worker`] (the first line of `main` in `dispy-node` and
//! `dispy-submit`) turns into the worker loop of `worker.rs`. The worker limits itself before it
//! loads the library: address space (`RLIMIT_AS`: its own baseline, plus the job's memory limit,
//! plus `worker::HEADROOM`), CPU time (`RLIMIT_CPU`, moved up before each chunk to what it has
//! used plus the chunk timeout plus a second or two) and no core dumps. It runs `dispy_setup`
//! once, then serves the job's chunks in turn, kept warm from chunk to chunk, exactly as a
//! WebAssembly instance is.
//!
//! The node side is synchronous, for the pool's slot threads: length-prefixed frames
//! (`protocol.rs`) over a Unix socket on the worker's stdin, non-blocking, driven by `poll(2)`
//! with a 10 ms tick so the wall-clock deadline and the [`CancelFlag`] are checked promptly. On a
//! timeout or cancellation the node kills the worker's process group with SIGKILL. The worker's
//! stdout and stderr go to a second socket that the node drains while it waits (the protocol
//! socket stays separate, so a payload's `printf` cannot forge a reply): the bytes are the
//! attempt's log ([`NativeWorker::take_log`]; the worker flushes C stdio after every call into
//! the payload), lines are logged at debug level and the last few quoted in failure messages. Dropping a worker kills and reaps
//! its process, so no zombie is left.
//!
//! How an ending is reported (until the protocol has a crash kind, crashes use
//! [`FailureKind::Trap`]):
//! - killed by a signal: "worker crashed with SIGSEGV" (`Trap`); SIGXCPU is the CPU limit
//!   (`Timeout`);
//! - exited during a chunk: "payload called exit(3)" (`Trap`);
//! - the wall clock ran out: "chunk exceeded its time limit of 1s" (`Timeout`);
//! - out of memory: "payload exceeded its memory limit of 64.0 MiB" (`MemoryLimit`). This is a
//!   documented heuristic: a failed allocation under `RLIMIT_AS` surfaces as SIGSEGV (a write
//!   through the null pointer) or SIGABRT (`abort()`, Rust's allocation-failure handler), and
//!   the worker's crash reporter reports memory exhaustion when, at that moment, it cannot map
//!   even a few more MiB of address space (see `loader::install_crash_reporter`). A crash
//!   further from the limit (one huge failed allocation) is reported as the plain crash.
//!
//! [`NativeEngine::load`] checks a library before any chunk runs, without loading it into the
//! daemon: the platform it was built for (the ELF header against this node's OS and CPU), then a
//! short-lived checker process loads it, resolves `dispy_run` and `dispy_abi_version` and calls
//! the latter.

mod confine;
#[allow(unsafe_code)]
mod loader;
mod output;
mod protocol;
mod worker;

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wire::abi;
use wire::proto::{ChunkFailure, FailureKind, PayloadKind};
use wire::units::format_size;

pub use confine::{LandlockSupport, NativePolicy, NativeSettings, Probe, DEVICES, SYSTEM_READ};
pub use protocol::WORKER_MARKER;

use super::wasm::MAX_OUTPUT;
use super::{cancelled, deadline_after, failure, reused, setup_failure, timed_out};
use super::{CancelFlag, ExecError, Limits};
use super::log::AttemptLog;
use confine::Scratch;
use output::StderrTail;
use loader::Interest;
use protocol::{tag, Init, Mode, PREFIX_LEN};

/// Time the checker process may take to load a library and call `dispy_abi_version`.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Memory the checker process may add while loading a library.
const CHECK_MEMORY: u64 = 1 << 30;

/// How often a waiting node checks the deadline and the cancel flag; the resolution of native
/// timeouts and cancellation, as `EPOCH_TICK` is for WebAssembly.
const TICK: Duration = Duration::from_millis(10);

/// Turns this process into a native worker if it was started as one, and never returns then;
/// otherwise returns at once.
///
/// Call it first thing in `main` of every binary that runs nodes (`dispy-node`, and
/// `dispy-submit` for `run --local`): workers are started as `/proc/self/exe` with
/// [`WORKER_MARKER`] as the first argument, before any thread or runtime exists.
pub fn maybe_run_worker() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(WORKER_MARKER)) {
        return;
    }
    let parent = args.next().and_then(|p| p.to_str()?.parse().ok());
    worker::run(parent)
}

/// This node's platform as payloads name it, `os/arch` (e.g. `linux/x86_64`).
pub fn platform() -> String {
    format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Starts native workers; one per node process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NativeEngine {
    /// The binary started as a worker.
    exe: PathBuf,
    /// How workers are confined.
    policy: Arc<NativePolicy>,
}

impl Default for NativeEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl NativeEngine {
    /// An engine that starts this very binary as its workers (which must call
    /// [`maybe_run_worker`] first thing in `main`), unconfined ([`NativePolicy::unconfined`]):
    /// for serial runs in the submitter's own process and tests.
    pub fn new() -> Self {
        Self::confined(NativePolicy::unconfined())
    }

    /// An engine whose workers are confined as `policy` says; the node's.
    pub fn confined(policy: NativePolicy) -> Self {
        // `/proc/self/exe` still names this binary after a package upgrade replaced the file.
        let exe = if cfg!(target_os = "linux") {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
        };
        Self { exe, policy: Arc::new(policy) }
    }

    /// How this engine's workers are confined.
    pub fn policy(&self) -> &NativePolicy {
        &self.policy
    }

    /// The `Init` of a worker for the library at `path` under this engine's confinement, with
    /// `budget` its (memory, CPU seconds, output limit).
    fn init(&self, mode: Mode, budget: (u64, u64, u64), path: &Path, args: &[u8], scratch: Option<&Scratch>) -> Init {
        let (memory, cpu_seconds, output_limit) = budget;
        Init {
            mode,
            memory,
            cpu_seconds,
            output_limit,
            path: path.to_owned(),
            plan: self.policy.plan(),
            reads: self.policy.read_roots().to_vec(),
            scratch: scratch.map(|s| s.path().to_owned()),
            args: args.to_vec(),
        }
    }

    /// Checks a native payload: the platform it claims (`os`, `arch`) and the one its ELF header
    /// names must both be this node's; then a checker process loads it from `path`, finds
    /// `dispy_run` and `dispy_abi_version`, and the latter must return 1. Blocking.
    ///
    /// # Errors
    /// [`ExecError::Platform`] naming both platforms, [`ExecError::InvalidLibrary`] for bytes or
    /// a file that do not load (including a library whose loading or `dispy_abi_version` crashed
    /// or hung the checker process), [`ExecError::MissingExport`], [`ExecError::AbiVersion`], or
    /// [`ExecError::WorkerProcess`] when the checker process cannot start.
    pub fn load(&self, os: &str, arch: &str, bytes: &[u8], path: &Path) -> Result<NativePayload, ExecError> {
        let node = platform();
        let claimed = format!("{os}/{arch}");
        if claimed != node {
            return Err(ExecError::Platform { payload: claimed, node });
        }
        match abi::detect_kind(bytes) {
            Ok(PayloadKind::Native { os, arch }) => {
                let actual = format!("{os}/{arch}");
                if actual != node {
                    return Err(ExecError::Platform { payload: actual, node });
                }
            }
            Ok(PayloadKind::Wasm) => {
                return Err(ExecError::InvalidLibrary("it is not an ELF file".to_string()));
            }
            Err(reason) => return Err(ExecError::InvalidLibrary(reason)),
        }
        // dlopen searches the library path for a name without a slash: make it absolute.
        let path = path
            .canonicalize()
            .map_err(|e| ExecError::InvalidLibrary(format!("{}: {e}", path.display())))?;
        // The checker runs the library's initialisers: it is confined like a worker, with no
        // scratch directory (it may write nowhere).
        let mut process = Process::spawn(&self.exe, None).map_err(|e| ExecError::WorkerProcess(e.to_string()))?;
        let init = self.init(Mode::Check, (CHECK_MEMORY, cpu_seconds(CHECK_TIMEOUT), 0), &path, &[], None);
        let deadline = deadline_after(CHECK_TIMEOUT);
        match process.exchange(tag::INIT, &init.encode(), deadline, &CancelFlag::default()) {
            Exchange::Reply(tag::READY, body) => Ok(NativePayload {
                path,
                has_setup: body.first() == Some(&1),
                has_combine: body.get(1) == Some(&1),
            }),
            Exchange::Reply(reply, body) => Err(load_error(reply, &body)),
            Exchange::TimedOut => Err(ExecError::InvalidLibrary(format!(
                "loading it and calling `dispy_abi_version` took longer than {CHECK_TIMEOUT:?}"
            ))),
            other => {
                let limits = Limits { memory: CHECK_MEMORY, chunk_timeout: CHECK_TIMEOUT };
                let failure = process.failure(other, limits);
                Err(ExecError::InvalidLibrary(format!("loading it crashed the checker process: {failure}")))
            }
        }
    }
}

/// The error for a checker's reply other than `READY`.
fn load_error(reply: u8, body: &[u8]) -> ExecError {
    let text = || String::from_utf8_lossy(body).into_owned();
    match reply {
        tag::LOAD_ERROR => ExecError::InvalidLibrary(text()),
        tag::MISSING_SYMBOL if body == abi::NATIVE_RUN.as_bytes() => ExecError::MissingExport(abi::NATIVE_RUN),
        tag::MISSING_SYMBOL => ExecError::MissingExport(abi::NATIVE_ABI_VERSION),
        tag::ABI_VERSION => ExecError::AbiVersion(i64::from(u32_from_le(body))),
        tag::BAD_REQUEST => ExecError::WorkerProcess(format!("it refused the request: {}", text())),
        tag::CONFINE_ERROR => ExecError::WorkerProcess(format!("it could not confine itself: {}", text())),
        other => ExecError::WorkerProcess(format!("unexpected reply (tag {other:#04x})")),
    }
}

/// A checked native library, ready for workers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NativePayload {
    /// Absolute path of the library, which every worker loads.
    path: PathBuf,
    /// Whether it exports `dispy_setup`.
    has_setup: bool,
    /// Whether it exports `dispy_combine`.
    has_combine: bool,
}

impl NativePayload {
    /// Where the library is; workers load it from there, so it must stay in place.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the library exports `dispy_setup`.
    pub fn has_setup(&self) -> bool {
        self.has_setup
    }

    /// Whether the library exports `dispy_combine`.
    pub fn has_combine(&self) -> bool {
        self.has_combine
    }
}

/// One slot's worker process for one job, serving chunks in turn.
///
/// Synchronous: [`NativeWorker::run`] blocks the calling thread until the chunk is done, failed,
/// timed out or cancelled. Dropping the worker kills and reaps its process.
pub struct NativeWorker {
    process: Process,
    /// Removed after the process is gone (fields drop in order).
    _scratch: Option<Scratch>,
    limits: Limits,
    cancel: CancelFlag,
    /// Set after any failure; the process has been killed.
    broken: bool,
}

impl NativeWorker {
    /// Starts a worker process for `payload` under `limits`, which loads the library and runs
    /// `dispy_setup` with `args` (within the chunk timeout).
    ///
    /// # Errors
    /// A [`ChunkFailure`]: [`FailureKind::Setup`] when `dispy_setup` returns non-zero, crashes or
    /// the library no longer loads, [`FailureKind::Timeout`], [`FailureKind::MemoryLimit`],
    /// [`FailureKind::Node`] when the process cannot start or `cancel` is set.
    pub fn new(
        engine: &NativeEngine,
        payload: &NativePayload,
        args: &[u8],
        limits: Limits,
        cancel: CancelFlag,
    ) -> Result<Self, ChunkFailure> {
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        let scratch = engine.policy.scratch().map_err(|e| {
            failure(FailureKind::Node, format!("failed to make a scratch directory for a native worker: {e}"))
        })?;
        let mut process = Process::spawn(&engine.exe, scratch.as_ref().map(Scratch::path)).map_err(|e| {
            failure(FailureKind::Node, format!("failed to start a native worker process: {e}"))
        })?;
        let budget = (limits.memory, cpu_seconds(limits.chunk_timeout), MAX_OUTPUT as u64);
        let init = engine.init(Mode::Serve, budget, &payload.path, args, scratch.as_ref());
        let deadline = deadline_after(limits.chunk_timeout);
        match process.exchange(tag::INIT, &init.encode(), deadline, &cancel) {
            Exchange::Reply(tag::READY, _) => Ok(Self { process, _scratch: scratch, limits, cancel, broken: false }),
            Exchange::Reply(tag::CONFINE_ERROR, body) => Err(failure(
                FailureKind::Node,
                format!("native worker could not confine itself: {}", String::from_utf8_lossy(&body)),
            )),
            Exchange::Reply(tag::CODE, body) => Err(failure(
                FailureKind::Setup,
                format!("dispy_setup returned error code {}", i32_from_le(&body)),
            )),
            Exchange::Reply(reply @ (tag::LOAD_ERROR | tag::MISSING_SYMBOL | tag::ABI_VERSION), body) => {
                let error = load_error(reply, &body);
                Err(failure(FailureKind::Setup, format!("worker setup failed: {error}")))
            }
            other => Err(setup_failure(process.failure(other, limits), limits.chunk_timeout)),
        }
    }

    /// Runs one chunk in the worker process and returns everything it emitted, in order.
    ///
    /// # Errors
    /// A [`ChunkFailure`]: [`FailureKind::PayloadError`] for a non-zero `dispy_run` return,
    /// [`FailureKind::Trap`] for a crash, an `exit()` or output over the cap,
    /// [`FailureKind::Timeout`], [`FailureKind::MemoryLimit`], or [`FailureKind::Node`] with the
    /// message `cancelled`. After any error the process is gone and this worker refuses further
    /// chunks: drop it and make a new one.
    pub fn run(&mut self, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        if self.broken {
            return Err(reused());
        }
        if self.cancel.is_cancelled() {
            return Err(cancelled());
        }
        let result = self.run_chunk(input);
        if result.is_err() {
            self.broken = true;
            self.process.kill();
        }
        result
    }

    /// Combines two results with the library's `dispy_combine` in the worker process, with the
    /// limits, failures and after-failure rules of [`NativeWorker::run`].
    ///
    /// # Errors
    /// As for [`NativeWorker::run`].
    pub fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        if self.broken {
            return Err(reused());
        }
        if self.cancel.is_cancelled() {
            return Err(cancelled());
        }
        let result = self.exchange_work(tag::COMBINE, &abi::combine_input(a, b));
        if result.is_err() {
            self.broken = true;
            self.process.kill();
        }
        result
    }

    fn run_chunk(&mut self, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        self.exchange_work(tag::CHUNK, input)
    }

    fn exchange_work(&mut self, request: u8, input: &[u8]) -> Result<Vec<u8>, ChunkFailure> {
        let deadline = deadline_after(self.limits.chunk_timeout);
        match self.process.exchange(request, input, deadline, &self.cancel) {
            Exchange::Reply(tag::OUTPUT, output) => Ok(output),
            Exchange::Reply(tag::CODE, body) => {
                let code = i32_from_le(&body);
                Err(failure(FailureKind::PayloadError(code), format!("payload returned error code {code}")))
            }
            Exchange::Reply(tag::OUTPUT_LIMIT, _) => Err(failure(
                FailureKind::Trap,
                format!("payload emitted more than {} of output for one chunk", format_size(MAX_OUTPUT as u64)),
            )),
            other => Err(self.process.failure(other, self.limits)),
        }
    }

    /// What the worker wrote to stdout and stderr since the last call (its setup's output goes
    /// with the first chunk), bounded by [`AttemptLog`].
    pub fn take_log(&mut self) -> Vec<u8> {
        self.process.captured.take()
    }

    /// The worker's process id, for tests that check it is gone.
    #[cfg(test)]
    pub(crate) fn pid(&self) -> u32 {
        self.process.child.id()
    }
}

impl std::fmt::Debug for NativeWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeWorker")
            .field("pid", &self.process.child.id())
            .field("limits", &self.limits)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// CPU seconds a chunk (or setup) of `timeout` may use: the timeout rounded up, plus a second of
/// slack, so the wall-clock deadline normally fires first; 0 (no limit) for absurd timeouts.
fn cpu_seconds(timeout: Duration) -> u64 {
    const CENTURY: u64 = 100 * 365 * 24 * 60 * 60;
    let seconds = timeout.as_secs().saturating_add(2);
    if seconds > CENTURY { 0 } else { seconds }
}

fn i32_from_le(body: &[u8]) -> i32 {
    body.try_into().map(i32::from_le_bytes).unwrap_or(i32::MIN)
}

fn u32_from_le(body: &[u8]) -> u32 {
    body.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX)
}

/// How waiting for a reply ended.
#[derive(Debug)]
enum Exchange {
    /// A reply frame (never [`tag::MEMORY`], which is recorded instead).
    Reply(u8, Vec<u8>),
    /// The worker ended (and was reaped) before replying; `out_of_memory` if it said it was out
    /// of address space.
    Ended { status: ExitStatus, out_of_memory: bool },
    /// The deadline passed.
    TimedOut,
    /// The cancel flag was set.
    Cancelled,
    /// The node could not talk to the worker.
    Broken(String),
}

/// A worker process and the node's ends of its sockets.
struct Process {
    child: Child,
    /// The protocol socket (the worker's stdin), non-blocking.
    conn: UnixStream,
    /// The worker's stdout and stderr, non-blocking.
    log: UnixStream,
    stderr: StderrTail,
    /// Everything the worker wrote to stdout and stderr since [`NativeWorker::take_log`].
    captured: AttemptLog,
    /// Whether `log` may still deliver bytes; after its end of file it is no longer polled (a
    /// closed socket would make every poll return at once).
    log_open: bool,
    /// Whether `child` has been waited for; after that its id may belong to another process.
    reaped: bool,
}

impl Process {
    /// Starts `exe` as a worker in a process group of its own, with an empty environment, in
    /// `scratch` (its working directory, `HOME` and `TMPDIR`) or else in `/`.
    fn spawn(exe: &Path, scratch: Option<&Path>) -> io::Result<Self> {
        let (conn, worker_conn) = UnixStream::pair()?;
        let (log, worker_log) = UnixStream::pair()?;
        let worker_stdout = worker_log.try_clone()?;
        let mut command = Command::new(exe);
        command
            .arg0("dispy-native-worker")
            .arg(WORKER_MARKER)
            .arg(std::process::id().to_string())
            .stdin(Stdio::from(OwnedFd::from(worker_conn)))
            .stdout(Stdio::from(OwnedFd::from(worker_stdout)))
            .stderr(Stdio::from(OwnedFd::from(worker_log)))
            .process_group(0)
            // Nothing of the node's environment (credentials included) reaches payload code.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        match scratch {
            Some(dir) => command.current_dir(dir).env("HOME", dir).env("TMPDIR", dir),
            None => command.current_dir("/"),
        };
        let child = command.spawn()?;
        // The command holds the worker's ends of the sockets; closing them here is what makes
        // the worker's exit read as end of file.
        drop(command);
        let process = Self { child, conn, log, stderr: StderrTail::default(), captured: AttemptLog::default(), log_open: true, reaped: false };
        process.conn.set_nonblocking(true)?;
        process.log.set_nonblocking(true)?;
        Ok(process)
    }

    /// Sends one request and waits for its reply, draining the worker's stderr meanwhile.
    fn exchange(&mut self, request: u8, body: &[u8], deadline: Instant, cancel: &CancelFlag) -> Exchange {
        // Only this request's stderr explains its failure.
        self.stderr.clear();
        let prefix = match protocol::prefix(request, body.len()) {
            Ok(prefix) => prefix,
            Err(e) => return Exchange::Broken(format!("request too large: {e}")),
        };
        let total = PREFIX_LEN + body.len();
        let mut sent = 0;
        let mut writing = true;
        let mut reply = ReplyReader::default();
        let mut out_of_memory = false;
        loop {
            if cancel.is_cancelled() {
                return Exchange::Cancelled;
            }
            let now = Instant::now();
            if now >= deadline {
                return Exchange::TimedOut;
            }
            let want_write = writing && sent < total;
            let wait = (deadline - now).min(TICK);
            let conn_interest = Interest::new(self.conn.as_fd(), true, want_write);
            let polled = if self.log_open {
                let mut interests = [conn_interest, Interest::new(self.log.as_fd(), true, false)];
                loader::poll(&mut interests, wait).map(|()| {
                    let [conn, log] = interests;
                    ((conn.readable, conn.writable), log.readable)
                })
            } else {
                let mut interests = [conn_interest];
                loader::poll(&mut interests, wait).map(|()| {
                    let [conn] = interests;
                    ((conn.readable, conn.writable), false)
                })
            };
            let (conn_ready, log_ready) = match polled {
                Ok(ready) => ready,
                Err(e) => return Exchange::Broken(format!("poll failed: {e}")),
            };
            if log_ready {
                self.drain_log();
            }
            if want_write && conn_ready.1 {
                match write_some(&mut self.conn, &prefix, body, sent) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    // The worker closed its end (it is dying): read what it said before that.
                    Err(_) => writing = false,
                }
            }
            if conn_ready.0 {
                loop {
                    match reply.read_from(&mut self.conn) {
                        Ok(Received::Frame(tag::MEMORY, _)) => out_of_memory = true,
                        Ok(Received::Frame(reply, body)) => {
                            // The worker wrote its output before replying, and a Unix socket
                            // queues a write at its reader at once: all of it is there.
                            self.drain_log();
                            return Exchange::Reply(reply, body);
                        }
                        Ok(Received::Pending) => break,
                        Ok(Received::End) => return self.reap(deadline, cancel, out_of_memory),
                        Err(e) => return Exchange::Broken(format!("bad reply: {e}")),
                    }
                }
            }
        }
    }

    /// Waits for a worker that hung up to exit.
    fn reap(&mut self, deadline: Instant, cancel: &CancelFlag, out_of_memory: bool) -> Exchange {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    // It is gone, so everything it wrote is in the socket.
                    self.drain_log();
                    self.stderr.flush_partial();
                    return Exchange::Ended { status, out_of_memory };
                }
                Ok(None) => {}
                Err(e) => return Exchange::Broken(format!("waiting for the worker failed: {e}")),
            }
            if cancel.is_cancelled() {
                return Exchange::Cancelled;
            }
            if Instant::now() >= deadline {
                return Exchange::TimedOut;
            }
            self.drain_log();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Reads whatever the worker wrote to stdout or stderr so far.
    fn drain_log(&mut self) {
        let mut buf = [0u8; 8192];
        while self.log_open {
            match self.log.read(&mut buf) {
                Ok(0) => self.log_open = false,
                Ok(n) => {
                    self.captured.push(&buf[..n]);
                    self.stderr.push(&buf[..n], self.child.id());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.log_open = false,
            }
        }
    }

    /// The failure for an exchange that did not end in an expected reply.
    fn failure(&mut self, exchange: Exchange, limits: Limits) -> ChunkFailure {
        match exchange {
            Exchange::Reply(tag, _) => failure(
                FailureKind::Node,
                format!("native worker sent an unexpected reply (tag {tag:#04x})"),
            ),
            Exchange::TimedOut => timed_out(limits.chunk_timeout),
            Exchange::Cancelled => cancelled(),
            Exchange::Broken(message) => failure(FailureKind::Node, format!("native worker failed: {message}")),
            Exchange::Ended { out_of_memory: true, .. } => failure(
                FailureKind::MemoryLimit,
                format!("payload exceeded its memory limit of {}", format_size(limits.memory)),
            ),
            Exchange::Ended { status, .. } => {
                let stderr = self.stderr.quote();
                match (status.signal(), status.code()) {
                    (Some(libc::SIGXCPU), _) => failure(
                        FailureKind::Timeout,
                        format!("chunk exceeded its CPU time limit of {}s", cpu_seconds(limits.chunk_timeout)),
                    ),
                    (Some(libc::SIGKILL), _) => failure(
                        FailureKind::Crash,
                        format!("worker was killed with SIGKILL (by the out-of-memory killer or an operator){stderr}"),
                    ),
                    (Some(signal), _) => {
                        failure(FailureKind::Crash, format!("worker crashed with {}{stderr}", signal_name(signal)))
                    }
                    (None, Some(code)) => failure(FailureKind::Crash, format!("payload called exit({code}){stderr}")),
                    (None, None) => failure(FailureKind::Crash, format!("worker ended with {status}{stderr}")),
                }
            }
        }
    }

    /// Kills the worker's process group and reaps the worker; idempotent.
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        loader::kill_process_group(self.child.id());
        // The group kill covers the worker; this covers a failure to signal the group.
        let _ = self.child.kill();
        // SIGKILL cannot be caught, so this returns promptly.
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes as much of `prefix` + `body` from `sent` on as the socket takes without blocking.
fn write_some(conn: &mut UnixStream, prefix: &[u8; PREFIX_LEN], body: &[u8], sent: usize) -> io::Result<usize> {
    match prefix.get(sent..) {
        Some(head) if !head.is_empty() => conn.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]),
        _ => conn.write(&body[sent - PREFIX_LEN..]),
    }
}

/// What one call to [`ReplyReader::read_from`] got.
enum Received {
    /// A whole frame: its tag and body.
    Frame(u8, Vec<u8>),
    /// Nothing more to read now.
    Pending,
    /// The worker closed the socket.
    End,
}

/// Reassembles reply frames from a non-blocking socket.
#[derive(Default)]
struct ReplyReader {
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    body: Vec<u8>,
    body_len: usize,
}

impl ReplyReader {
    /// Reads until a frame is complete, the socket would block, or it ends.
    fn read_from(&mut self, conn: &mut UnixStream) -> io::Result<Received> {
        loop {
            let result = if self.prefix_len < PREFIX_LEN {
                conn.read(&mut self.prefix[self.prefix_len..])
            } else if self.body_len < self.body.len() {
                conn.read(&mut self.body[self.body_len..])
            } else {
                let body = std::mem::take(&mut self.body);
                let tag = self.prefix[PREFIX_LEN - 1];
                self.prefix_len = 0;
                self.body_len = 0;
                return Ok(Received::Frame(tag, body));
            };
            match result {
                Ok(0) => return Ok(Received::End),
                Ok(n) if self.prefix_len < PREFIX_LEN => {
                    self.prefix_len += n;
                    if self.prefix_len == PREFIX_LEN {
                        self.start_body()?;
                    }
                }
                Ok(n) => self.body_len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::Pending),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Checks the announced length before allocating the body.
    fn start_body(&mut self) -> io::Result<()> {
        let [a, b, c, d, _] = self.prefix;
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if len == 0 || len - 1 > MAX_OUTPUT {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("reply of {len} bytes")));
        }
        self.body = vec![0; len - 1];
        self.body_len = 0;
        Ok(())
    }
}

/// The conventional name of a signal, e.g. `SIGSEGV`.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGSYS => "SIGSYS",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests;
