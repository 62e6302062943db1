//! The protocol between the node and a native worker process, over the worker's stdin (one end
//! of a Unix socket pair, so both directions share it).
//!
//! Every message is a frame: a big-endian `u32` length (as in `wire::frame`), then that many
//! bytes: a one-byte tag and the body. The node sends [`tag::INIT`] first, then one
//! [`tag::CHUNK`] at a time, each answered by exactly one reply before the next is sent; the
//! worker's crash reporter may add one [`tag::MEMORY`] frame just before the process dies.

use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use wire::frame::HEADER_LEN;

use super::confine::Plan;

/// The hidden first argument that turns a dispy binary into a native worker process.
pub const WORKER_MARKER: &str = "__dispy-native-worker";

/// Bytes before a frame's body: the length prefix and the tag.
pub(super) const PREFIX_LEN: usize = HEADER_LEN + 1;

/// Frame tags. Requests (node → worker) are below 0x10, replies at or above.
pub(super) mod tag {
    /// Request: the worker's [`super::Init`]; answered by `READY` or an error reply.
    pub(crate) const INIT: u8 = 0x01;
    /// Request: one chunk's input bytes.
    pub(crate) const CHUNK: u8 = 0x02;
    /// Request: two results to combine with `dispy_combine`, packed by
    /// `wire::abi::combine_input`; answered like `CHUNK`.
    pub(crate) const COMBINE: u8 = 0x03;
    /// Reply to `INIT`: loaded, checked (and set up, when serving); body: `has_setup` and
    /// `has_combine` (one byte each).
    pub(crate) const READY: u8 = 0x10;
    /// Reply to `CHUNK`: `dispy_run` returned 0; body: the output.
    pub(crate) const OUTPUT: u8 = 0x11;
    /// Reply: `dispy_run` (or `dispy_setup`, to `INIT`) returned this non-zero `i32` (LE).
    pub(crate) const CODE: u8 = 0x12;
    /// Reply to `INIT`: the library could not be loaded; body: the loader's message.
    pub(crate) const LOAD_ERROR: u8 = 0x13;
    /// Reply to `INIT`: a required symbol is missing; body: its name.
    pub(crate) const MISSING_SYMBOL: u8 = 0x14;
    /// Reply to `INIT`: `dispy_abi_version` returned this other `u32` (LE).
    pub(crate) const ABI_VERSION: u8 = 0x15;
    /// Reply to `CHUNK`: the payload emitted more than the output limit.
    pub(crate) const OUTPUT_LIMIT: u8 = 0x16;
    /// Reply, or a last word before dying: the worker ran out of address space.
    pub(crate) const MEMORY: u8 = 0x17;
    /// Reply: the request made no sense (a bug, or a binary of another version); body: why.
    pub(crate) const BAD_REQUEST: u8 = 0x18;
    /// Reply to `INIT`: the worker could not confine itself, so it loaded nothing; body: why.
    pub(crate) const CONFINE_ERROR: u8 = 0x19;
}

/// The whole [`tag::MEMORY`] frame, which the crash reporter writes from a signal handler.
pub(super) const MEMORY_FRAME: [u8; PREFIX_LEN] = [0, 0, 0, 1, tag::MEMORY];

/// What the worker process is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Load the library, check its symbols and ABI version, reply and exit.
    Check,
    /// Load and check, run `dispy_setup`, then serve chunks until the node hangs up.
    Serve,
}

/// The first request: everything the worker needs to set itself up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Init {
    pub(super) mode: Mode,
    /// Address space the payload may add to the worker, in bytes; `u64::MAX` for no limit.
    pub(super) memory: u64,
    /// CPU seconds one chunk (or the setup) may use; 0 for no limit.
    pub(super) cpu_seconds: u64,
    /// Most bytes one chunk may emit.
    pub(super) output_limit: u64,
    /// The shared library, an absolute path.
    pub(super) path: PathBuf,
    /// The confinement the worker applies to itself before loading the library.
    pub(super) plan: Plan,
    /// Directories the worker may also read (shared-input roots).
    pub(super) reads: Vec<PathBuf>,
    /// The worker's scratch directory (its working directory), the one place it may write.
    pub(super) scratch: Option<PathBuf>,
    /// The job's argument bytes.
    pub(super) args: Vec<u8>,
}

impl Init {
    /// The request's body (after the tag).
    pub(super) fn encode(&self) -> Vec<u8> {
        let path = self.path.as_os_str().as_bytes();
        let mut body = Vec::with_capacity(64 + path.len() + self.args.len());
        body.push(match self.mode {
            Mode::Check => 1,
            Mode::Serve => 2,
        });
        body.extend_from_slice(&self.memory.to_le_bytes());
        body.extend_from_slice(&self.cpu_seconds.to_le_bytes());
        body.extend_from_slice(&self.output_limit.to_le_bytes());
        put_bytes(&mut body, path);
        let (uid, gid) = self.plan.user.unwrap_or((u32::MAX, u32::MAX));
        body.push(u8::from(self.plan.landlock) | u8::from(self.plan.user.is_some()) << 1);
        body.extend_from_slice(&uid.to_le_bytes());
        body.extend_from_slice(&gid.to_le_bytes());
        put_bytes(&mut body, self.scratch.as_deref().map_or(&[][..], |p| p.as_os_str().as_bytes()));
        body.extend_from_slice(&u32::try_from(self.reads.len()).unwrap_or(u32::MAX).to_le_bytes());
        for read in &self.reads {
            put_bytes(&mut body, read.as_os_str().as_bytes());
        }
        body.extend_from_slice(&self.args);
        body
    }

    /// Parses a request body written by [`Init::encode`].
    pub(super) fn decode(body: &[u8]) -> Result<Self, String> {
        let mut rest = body;
        let mode = match take(&mut rest, 1)? {
            [1] => Mode::Check,
            [2] => Mode::Serve,
            other => return Err(format!("unknown worker mode {other:?}")),
        };
        let memory = take_u64(&mut rest)?;
        let cpu_seconds = take_u64(&mut rest)?;
        let output_limit = take_u64(&mut rest)?;
        let path = take_path(&mut rest)?;
        let flags = take(&mut rest, 1)?[0];
        let uid = take_u32(&mut rest)?;
        let gid = take_u32(&mut rest)?;
        let plan = Plan { landlock: flags & 1 != 0, user: (flags & 2 != 0).then_some((uid, gid)) };
        let scratch = Some(take_path(&mut rest)?).filter(|p| !p.as_os_str().is_empty());
        let count = take_u32(&mut rest)?;
        let reads = (0..count).map(|_| take_path(&mut rest)).collect::<Result<Vec<_>, _>>()?;
        let args = rest.to_vec();
        Ok(Self { mode, memory, cpu_seconds, output_limit, path, plan, reads, scratch, args })
    }
}

/// The next `n` bytes of `rest`, which moves past them.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rest.len() < n {
        return Err("truncated init request".to_string());
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, String> {
    Ok(u32::from_le_bytes(take(rest, 4)?.try_into().unwrap_or([0; 4])))
}

fn take_u64(rest: &mut &[u8]) -> Result<u64, String> {
    Ok(u64::from_le_bytes(take(rest, 8)?.try_into().unwrap_or([0; 8])))
}

/// A path written by [`put_bytes`].
fn take_path(rest: &mut &[u8]) -> Result<PathBuf, String> {
    let len = take_u32(rest)? as usize;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(take(rest, len)?.to_vec())))
}

/// Appends `bytes` with a `u32` length before them. Paths come from the node's cache, its
/// configuration or a user's file: far below 4 GiB.
fn put_bytes(body: &mut Vec<u8>, bytes: &[u8]) {
    body.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    body.extend_from_slice(bytes);
}

/// The prefix of a frame with `tag` and a body of `body_len` bytes.
///
/// # Errors
/// `InvalidInput` when the frame would not fit a `u32` length.
pub(super) fn prefix(tag: u8, body_len: usize) -> io::Result<[u8; PREFIX_LEN]> {
    let len = body_len
        .checked_add(1)
        .and_then(|len| u32::try_from(len).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let [a, b, c, d] = len.to_be_bytes();
    Ok([a, b, c, d, tag])
}

/// Writes one frame (blocking), as the worker does.
pub(super) fn write_frame(out: &mut impl Write, tag: u8, body: &[u8]) -> io::Result<()> {
    out.write_all(&prefix(tag, body.len())?)?;
    out.write_all(body)?;
    out.flush()
}

/// Reads one frame (blocking) into `body`, as the worker does, and returns its tag; `None` at a
/// clean end of stream.
///
/// # Errors
/// `OutOfMemory` when the body cannot be allocated (the frame is then unread), `UnexpectedEof`
/// in the middle of a frame, `InvalidData` for an empty frame.
pub(super) fn read_frame(input: &mut impl Read, body: &mut Vec<u8>) -> io::Result<Option<u8>> {
    let mut header = [0u8; HEADER_LEN];
    match input.read_exact(&mut header[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    input.read_exact(&mut header[1..])?;
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "empty frame"));
    }
    let mut tag = [0u8];
    input.read_exact(&mut tag)?;
    body.clear();
    let len = len - 1;
    if body.try_reserve_exact(len).is_err() {
        return Err(io::Error::new(io::ErrorKind::OutOfMemory, "no memory for the frame"));
    }
    let read = input.take(len as u64).read_to_end(body)?;
    if read != len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "frame cut short"));
    }
    Ok(Some(tag[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_round_trips() {
        let init = Init {
            mode: Mode::Serve,
            memory: 64 << 20,
            cpu_seconds: 3,
            output_limit: 1 << 30,
            path: PathBuf::from("/var/lib/dispy/cache/abc"),
            plan: Plan { landlock: true, user: Some((65534, 65533)) },
            reads: vec![PathBuf::from("/mnt/a"), PathBuf::from("/srv/b")],
            scratch: Some(PathBuf::from("/var/lib/dispy-node/scratch/worker-1-0")),
            args: b"64 48 50".to_vec(),
        };
        assert_eq!(Init::decode(&init.encode()), Ok(init.clone()));
        let check = Init { mode: Mode::Check, args: Vec::new(), plan: Plan::default(), reads: Vec::new(), scratch: None, ..init };
        assert_eq!(Init::decode(&check.encode()), Ok(check.clone()));
        let encoded = check.encode();
        assert!(Init::decode(&encoded[..20]).is_err());
        assert!(Init::decode(&[9]).is_err());
    }

    #[test]
    fn frames_round_trip() {
        let mut wire = Vec::new();
        write_frame(&mut wire, tag::OUTPUT, b"hello").expect("write");
        write_frame(&mut wire, tag::READY, b"").expect("write");
        assert_eq!(&wire[..PREFIX_LEN], &[0, 0, 0, 6, tag::OUTPUT]);
        let mut reader = wire.as_slice();
        let mut body = Vec::new();
        assert_eq!(read_frame(&mut reader, &mut body).expect("read"), Some(tag::OUTPUT));
        assert_eq!(body, b"hello");
        assert_eq!(read_frame(&mut reader, &mut body).expect("read"), Some(tag::READY));
        assert!(body.is_empty());
        assert_eq!(read_frame(&mut reader, &mut body).expect("read"), None);
        let cut = &wire[..7];
        assert!(read_frame(&mut &cut[..], &mut body).is_err());
        assert_eq!(MEMORY_FRAME, prefix(tag::MEMORY, 0).expect("prefix"));
    }
}
