//! The native worker process: the child side of [`super::protocol`].
//!
//! A dispy binary started with [`super::WORKER_MARKER`] as its first argument becomes a worker
//! (see [`super::maybe_run_worker`]): it ties its life to the node, moves the protocol socket off
//! stdin, reads its [`Init`], limits itself (address space, CPU time, no core dumps), opens the
//! library and confines itself (`super::confine`: user, Landlock, `no_new_privs`) *before*
//! loading it, loads and checks it, runs `dispy_setup` once, and then serves chunks (and combines)
//! until the node hangs up. It never returns; the node kills it when done with it.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use wire::abi;

use super::confine;
use super::loader::{self, Emitted, Library, OpenError, OUTPUT};
use super::protocol::{read_frame, tag, write_frame, Init, Mode};

/// Address space allowed beyond the job's memory limit, for what the worker itself maps after
/// measuring its baseline: the payload library, chunk input and output buffers, stdio buffers.
pub(super) const HEADROOM: u64 = 16 << 20;

/// Exit code of a worker that failed on its own account (not the payload's): a protocol or I/O
/// error, reported on stderr. 70 is `EX_SOFTWARE`.
const EXIT_WORKER_ERROR: i32 = 70;

/// Runs the worker and exits the process; `parent` is the node's process id from the command
/// line.
pub(super) fn run(parent: Option<u32>) -> ! {
    let code = match serve(parent) {
        Ok(()) => 0,
        Err(error) => {
            let _ = writeln!(io::stderr(), "dispy native worker: {error}");
            EXIT_WORKER_ERROR
        }
    };
    std::process::exit(code)
}

fn serve(parent: Option<u32>) -> io::Result<()> {
    let parent = parent.ok_or_else(|| io::Error::other("missing the node's process id"))?;
    if !loader::die_with_parent(parent) {
        return Err(io::Error::other("the node that started this worker is gone"));
    }
    let mut conn = UnixStream::from(loader::take_stdin()?);
    let mut body = Vec::new();
    let init = match read_frame(&mut conn, &mut body)? {
        None => return Ok(()),
        Some(tag::INIT) => match Init::decode(&body) {
            Ok(init) => init,
            Err(reason) => return write_frame(&mut conn, tag::BAD_REQUEST, reason.as_bytes()),
        },
        Some(other) => {
            let reason = format!("expected an init request, got tag {other:#04x}");
            return write_frame(&mut conn, tag::BAD_REQUEST, reason.as_bytes());
        }
    };
    limit(&init, &conn)?;
    // Opened before the worker gives up its user and confines itself, so the cache directory
    // need not be readable by `payload_user`; loaded through this descriptor.
    let payload = match std::fs::File::open(&init.path) {
        Ok(file) => file,
        Err(e) => {
            let message = format!("{}: {e}", init.path.display());
            return write_frame(&mut conn, tag::LOAD_ERROR, message.as_bytes());
        }
    };
    if let Err(why) = confine::enter(init.plan, &init.path, &init.reads, init.scratch.as_deref()) {
        return write_frame(&mut conn, tag::CONFINE_ERROR, why.as_bytes());
    }
    let by_descriptor = std::path::PathBuf::from(format!("/proc/self/fd/{}", payload.as_raw_fd()));

    let library = match Library::open(&by_descriptor) {
        Ok(library) => library,
        Err(OpenError::Load(message)) => return write_frame(&mut conn, tag::LOAD_ERROR, message.as_bytes()),
        Err(OpenError::MissingSymbol(name)) => return write_frame(&mut conn, tag::MISSING_SYMBOL, name.as_bytes()),
    };
    let version = library.abi_version();
    if version != abi::ABI_VERSION {
        return write_frame(&mut conn, tag::ABI_VERSION, &version.to_le_bytes());
    }
    let has_setup = [u8::from(library.has_setup()), u8::from(library.has_combine())];
    if init.mode == Mode::Check {
        return write_frame(&mut conn, tag::READY, &has_setup);
    }
    let code = library.setup(&init.args);
    library.flush_stdio();
    if code != 0 {
        return write_frame(&mut conn, tag::CODE, &code.to_le_bytes());
    }
    write_frame(&mut conn, tag::READY, &has_setup)?;

    let output_limit = usize::try_from(init.output_limit).unwrap_or(usize::MAX);
    let mut chunks: u64 = 0;
    loop {
        let request = match read_frame(&mut conn, &mut body) {
            Ok(Some(request)) => request,
            // The node hung up: it is done with this worker.
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                return write_frame(&mut conn, tag::MEMORY, b"");
            }
            Err(e) => return Err(e),
        };
        let combine = match request {
            tag::CHUNK => None,
            tag::COMBINE => match abi::split_combine_input(&body) {
                Some(pair) if library.has_combine() => Some(pair),
                Some(_) => return write_frame(&mut conn, tag::BAD_REQUEST, b"the library does not export dispy_combine"),
                None => return write_frame(&mut conn, tag::BAD_REQUEST, b"malformed combine request"),
            },
            other => {
                let reason = format!("expected a chunk, got tag {other:#04x}");
                return write_frame(&mut conn, tag::BAD_REQUEST, reason.as_bytes());
            }
        };
        limit_cpu(init.cpu_seconds)?;
        chunks += 1;
        let attempt_dir = AttemptDir::enter(init.scratch.as_deref(), chunks)?;
        OUTPUT.begin(output_limit);
        let code = match combine {
            None => library.run(&body, &init.args),
            // Checked just above: the library exports `dispy_combine`.
            Some((a, b)) => library.combine(a, b).unwrap_or(-1),
        };
        library.flush_stdio();
        drop(attempt_dir);
        match OUTPUT.finish() {
            Emitted::OverLimit => write_frame(&mut conn, tag::OUTPUT_LIMIT, b"")?,
            Emitted::OutOfMemory => return write_frame(&mut conn, tag::MEMORY, b""),
            Emitted::Bytes(_) if code != 0 => write_frame(&mut conn, tag::CODE, &code.to_le_bytes())?,
            Emitted::Bytes(output) => write_frame(&mut conn, tag::OUTPUT, &output)?,
        }
    }
}

/// Each chunk's own scratch directory, `attempt-N` inside the worker's: the chunk's working
/// directory while it runs, removed with what it wrote when it ends. The worker's scratch
/// directory itself (`HOME`, `TMPDIR`, where `dispy_setup` may leave files for every chunk of the
/// job) goes with the worker.
struct AttemptDir {
    root: PathBuf,
    dir: PathBuf,
}

impl AttemptDir {
    /// Creates and enters the directory of chunk `n`; nothing without a scratch directory.
    fn enter(scratch: Option<&Path>, n: u64) -> io::Result<Option<Self>> {
        let Some(root) = scratch else { return Ok(None) };
        let dir = root.join(format!("attempt-{n}"));
        std::fs::create_dir(&dir)?;
        std::env::set_current_dir(&dir)?;
        Ok(Some(Self { root: root.to_owned(), dir }))
    }
}

impl Drop for AttemptDir {
    fn drop(&mut self) {
        // Best effort: the worker's whole scratch directory goes when the worker ends anyway.
        let _ = std::env::set_current_dir(&self.root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Applies the limits of `init` to this process before any payload code is loaded.
fn limit(init: &Init, conn: &UnixStream) -> io::Result<()> {
    // Best effort: a node under a hard core limit of 0 already has what this asks for.
    let _ = loader::disable_core_dumps();
    if init.memory != u64::MAX {
        let baseline = address_space()?;
        let limit = baseline.saturating_add(init.memory).saturating_add(HEADROOM);
        loader::install_crash_reporter(conn.as_raw_fd(), probe_size(init.memory))?;
        loader::limit_address_space(limit)?;
    }
    limit_cpu(init.cpu_seconds)
}

/// Lets the next chunk (or the setup) use `seconds` more CPU time than used so far; SIGXCPU
/// past it. RLIMIT_CPU counts the process's whole life, so it moves up before every chunk.
fn limit_cpu(seconds: u64) -> io::Result<()> {
    if seconds == 0 {
        return Ok(());
    }
    loader::limit_cpu_time(loader::cpu_time().as_secs().saturating_add(seconds))
}

/// How close to its address-space limit a crashing worker must be to count as out of memory: a
/// sixteenth of the job's limit, at least 4 MiB (more than one typical failed allocation) and at
/// most 64 MiB.
pub(super) fn probe_size(memory: u64) -> usize {
    let probe = (memory / 16).clamp(4 << 20, 64 << 20);
    usize::try_from(probe).unwrap_or(64 << 20)
}

/// This process's current address-space size (`VmSize`), in bytes.
fn address_space() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::other("no VmSize in /proc/self/status"))
}
