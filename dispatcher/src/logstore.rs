//! A job's `logs` spool file (`STATE_DIR/jobs/ID/logs`): every attempt log the ledger handed over
//! ([`LogRecord`]), appended as self-checking records in arrival order.
//!
//! A record is `len: u32` (big-endian, of what follows up to the checksum), then `chunk: u64`,
//! `attempt: u64`, `failed: u8`, `node_len: u16`, the node's name, the log's bytes, and the first
//! four bytes of the blake3 hash of everything before it in the record. The file carries its own
//! structure, so no journal extent points into it: a reader stops at the first record that is
//! incomplete or fails its check (the unsynced tail a crash left), and [`LogFile::open`] cuts such
//! a tail off before appending. The disk thread syncs a `logs` file with the next commit after it
//! grew, which is the commit that lets a node forget the report the log came with.
//!
//! A reader's cursor is a byte offset in the file; [`read`] returns the records from a cursor on,
//! up to [`LOG_PAGE_MAX`] bytes of log, and the cursor after them.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use ledger::jobs::LogRecord;
use wire::observe::{LogEntry, LogPage, LOG_PAGE_MAX};
use wire::proto::ChunkIndex;

/// Bytes of a record before its node name: length, chunk, attempt, failed, node length.
const HEAD: usize = 4 + 8 + 8 + 1 + 2;
/// Bytes of a record's checksum.
const CHECK: usize = 4;

/// Encodes one record.
fn encode(record: &LogRecord) -> Vec<u8> {
    let node = record.node.as_bytes();
    let node = &node[..node.len().min(usize::from(u16::MAX))];
    let len = HEAD - 4 + node.len() + record.log.len();
    let mut out = Vec::with_capacity(4 + len + CHECK);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&record.chunk.to_be_bytes());
    out.extend_from_slice(&record.attempt.0.to_be_bytes());
    out.push(u8::from(record.failed));
    out.extend_from_slice(&(node.len() as u16).to_be_bytes());
    out.extend_from_slice(node);
    out.extend_from_slice(&record.log);
    let check = blake3::hash(&out);
    out.extend_from_slice(&check.as_bytes()[..CHECK]);
    out
}

/// Decodes the record at the start of `bytes`: the entry and its encoded length, or `None` when
/// it is incomplete or damaged.
fn decode(bytes: &[u8]) -> Option<(LogEntry, usize)> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let total = 4usize.checked_add(len)?.checked_add(CHECK)?;
    let record = bytes.get(..total)?;
    let (body, check) = record.split_at(total - CHECK);
    if &blake3::hash(body).as_bytes()[..CHECK] != check || len < HEAD - 4 {
        return None;
    }
    let chunk = u64::from_be_bytes(body[4..12].try_into().ok()?);
    let attempt = u64::from_be_bytes(body[12..20].try_into().ok()?);
    let failed = body[20] != 0;
    let node_len = usize::from(u16::from_be_bytes(body[21..23].try_into().ok()?));
    let node = body.get(HEAD..HEAD + node_len)?;
    let log = body.get(HEAD + node_len..)?;
    let entry = LogEntry { chunk, attempt, node: String::from_utf8_lossy(node).into_owned(), failed, log: log.to_vec() };
    Some((entry, total))
}

/// A job's `logs` file, open for appending.
#[derive(Debug)]
pub(crate) struct LogFile {
    file: File,
}

impl LogFile {
    /// Opens (creating) the file at `path`, cutting off a damaged or incomplete tail.
    ///
    /// # Errors
    /// If the file cannot be opened, read or truncated.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut good = 0;
        while let Some((_, len)) = decode(&bytes[good..]) {
            good += len;
        }
        if good < bytes.len() {
            tracing::warn!(path = %path.display(), dropped = bytes.len() - good, "cutting a damaged tail off a logs file");
            file.set_len(good as u64)?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok(Self { file })
    }

    /// Appends one record.
    ///
    /// # Errors
    /// If the write fails; a partial record is cut off by the next [`LogFile::open`] and skipped
    /// by readers until then.
    pub(crate) fn append(&mut self, record: &LogRecord) -> io::Result<()> {
        self.file.write_all(&encode(record))
    }

    /// Another handle on the file, so the journal writer can sync it.
    ///
    /// # Errors
    /// If the descriptor cannot be duplicated.
    pub(crate) fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

/// Reads the records of the `logs` file at `path` from cursor `from` on (of `chunk` only, when
/// given), up to [`LOG_PAGE_MAX`] bytes of log (at least one record); a missing file has none.
/// `finished` is copied into the page.
///
/// # Errors
/// If the file exists but cannot be read.
pub(crate) fn read(path: &Path, chunk: Option<ChunkIndex>, from: u64, finished: bool) -> io::Result<LogPage> {
    let mut page = LogPage { entries: Vec::new(), next: from, finished };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(page),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if from >= len {
        return Ok(page);
    }
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    // Records are at most an attempt's log plus a name: a page's worth plus one record is enough.
    let limit = (LOG_PAGE_MAX + 2 * wire::observe::ATTEMPT_LOG_MAX + (1 << 16)) as u64;
    file.take(limit).read_to_end(&mut bytes)?;
    let (mut at, mut size) = (0, 0);
    while let Some((entry, len)) = decode(&bytes[at..]) {
        if size > 0 && size + entry.log.len() > LOG_PAGE_MAX {
            break;
        }
        at += len;
        if chunk.is_none_or(|c| c == entry.chunk) {
            size += entry.log.len();
            page.entries.push(entry);
        }
    }
    page.next = from + at as u64;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use wire::proto::{AttemptId, JobId};

    use super::*;

    fn record(chunk: u64, attempt: u64, log: &str) -> LogRecord {
        LogRecord { job: JobId(1), chunk, attempt: AttemptId(attempt), node: "node-a".into(), failed: attempt.is_multiple_of(2), log: Bytes::from(log.to_owned()) }
    }

    #[test]
    fn records_read_back_by_chunk_and_from_a_cursor() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("logs");
        assert_eq!(read(&path, None, 0, false).expect("no file, no logs").entries, []);
        let mut file = LogFile::open(&path).expect("created");
        file.append(&record(0, 1, "zero\n")).expect("appended");
        file.append(&record(1, 2, "one\n")).expect("appended");
        let all = read(&path, None, 0, true).expect("read");
        assert!(all.finished);
        let seen: Vec<(u64, u64, bool, &[u8], &str)> =
            all.entries.iter().map(|e| (e.chunk, e.attempt, e.failed, &e.log[..], e.node.as_str())).collect();
        assert_eq!(seen, [(0, 1, false, &b"zero\n"[..], "node-a"), (1, 2, true, &b"one\n"[..], "node-a")]);
        let one = read(&path, Some(1), 0, false).expect("read");
        assert_eq!(one.entries.len(), 1);
        assert_eq!(one.next, all.next, "a filtered read moves the cursor past what it skipped");
        assert_eq!(read(&path, None, all.next, false).expect("read").entries, [], "nothing new");
        file.append(&record(2, 3, "two\n")).expect("appended");
        let newer = read(&path, None, all.next, false).expect("read");
        assert_eq!(newer.entries.iter().map(|e| e.chunk).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_torn_tail_is_skipped_by_readers_and_cut_off_at_open() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("logs");
        let mut file = LogFile::open(&path).expect("created");
        file.append(&record(0, 1, "kept\n")).expect("appended");
        drop(file);
        let whole = std::fs::metadata(&path).expect("exists").len();
        let torn = encode(&record(1, 2, "torn\n"));
        std::fs::OpenOptions::new().append(true).open(&path).and_then(|mut f| f.write_all(&torn[..torn.len() - 3])).expect("written");
        let page = read(&path, None, 0, false).expect("read");
        assert_eq!((page.entries.len(), page.next), (1, whole), "the reader stops before the torn record");
        let mut file = LogFile::open(&path).expect("reopened");
        assert_eq!(std::fs::metadata(&path).expect("exists").len(), whole, "the torn tail is cut off");
        file.append(&record(2, 3, "after\n")).expect("appended");
        let chunks: Vec<u64> = read(&path, None, 0, false).expect("read").entries.iter().map(|e| e.chunk).collect();
        assert_eq!(chunks, [0, 2]);
    }

    #[test]
    fn a_damaged_record_fails_its_check() {
        let mut bytes = encode(&record(0, 1, "hello\n"));
        assert!(decode(&bytes).is_some());
        let at = bytes.len() - CHECK - 2;
        bytes[at] ^= 1;
        assert!(decode(&bytes).is_none());
    }
}
