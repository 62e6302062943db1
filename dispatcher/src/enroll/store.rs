//! Enrolment state on disk, shared by the daemon and the `token`, `nodes`, `clients` and `admins`
//! commands that run beside it: outstanding join tokens and the revocation lists, all under
//! `STATE_DIR/enroll/`.
//!
//! ```text
//! STATE_DIR/enroll/tokens/<sha256(secret) hex>        one outstanding token
//! STATE_DIR/enroll/tokens/used/<sha256(secret) hex>   a redeemed token, kept a week to say "used"
//! STATE_DIR/enroll/revoked                            revoked node names, one a line
//! STATE_DIR/enroll/revoked-clients                    revoked client names
//! STATE_DIR/enroll/revoked-admins                     revoked operator (admin) names
//! ```
//!
//! There is one list per role because names are only unique within a role: node `alice` and
//! client `alice` are different certificates.
//!
//! A token file holds `key = value` lines (`created_unix`, `expires_unix`, optionally `name`);
//! the secret itself is never stored. Files are written to a temporary name and renamed into
//! place, so a reader never sees half a file; a token is redeemed by renaming it into `used/`,
//! which succeeds for exactly one caller. Files and directories created by a command run as root
//! are handed to the owner of the state directory, so the daemon's user can redeem them.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::enroll::TokenSecret;
use thiserror::Error;
use tracing::warn;
use wire::proto::Role;

const ENROLL_DIR: &str = "enroll";
const TOKENS_DIR: &str = "tokens";
const USED_DIR: &str = "used";
/// How long an expired or used token is remembered, to tell its holder why it fails.
const REMEMBER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Reading or writing enrolment state failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory could not be used.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "write".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A token file is not in the expected format.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a token cannot be redeemed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TokenProblem {
    /// No such token was ever made here (or it was deleted, or forgotten a week after expiry).
    #[error("unknown join token (was it made by this dispatcher, and copied whole?)")]
    Unknown,
    /// The token was redeemed already.
    #[error("this join token was already used; make a new one with `dispy-dispatcher token create`")]
    Used,
    /// The token's time is up.
    #[error("this join token expired at {}; make a new one with `dispy-dispatcher token create`", common::enroll::format_utc(*.0))]
    Expired(SystemTime),
    /// The store itself failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One outstanding (or remembered) join token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// SHA-256 of the secret, hex: the file name.
    pub id: String,
    /// The node name the token is for; `None` lets the node choose.
    pub name: Option<String>,
    /// When it was made.
    pub created: SystemTime,
    /// When it stops working.
    pub expires: SystemTime,
}

/// The join tokens under `STATE_DIR/enroll/tokens`.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
    owner: Option<(u32, u32)>,
}

impl TokenStore {
    /// Opens the store in `state_dir`, creating its directories (mode 0750).
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directories cannot be created.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let owner = owner_of(state_dir);
        let enroll = state_dir.join(ENROLL_DIR);
        let dir = enroll.join(TOKENS_DIR);
        for path in [&enroll, &dir, &dir.join(USED_DIR)] {
            make_dir(path, owner)?;
        }
        Ok(Self { dir, owner })
    }

    /// Records a new token for `secret`, valid for `ttl` from `now`, optionally for one name.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file cannot be written.
    pub fn create(&self, secret: &TokenSecret, ttl: Duration, name: Option<&str>, now: SystemTime) -> Result<TokenRecord, StoreError> {
        // Whole seconds, as stored, so the record returned is the one a lookup reads back.
        let now = UNIX_EPOCH + Duration::from_secs(unix(now));
        let record = TokenRecord { id: secret.id(), name: name.map(str::to_owned), created: now, expires: now + ttl };
        let mut text = String::from("# A dispy join token. Only a hash of its secret is kept (the file name).\n");
        text.push_str(&format!("created_unix = {}\nexpires_unix = {}\n", unix(record.created), unix(record.expires)));
        if let Some(name) = &record.name {
            text.push_str(&format!("name = {name}\n"));
        }
        write_atomically(&self.dir.join(&record.id), &text, 0o640, self.owner)?;
        Ok(record)
    }

    /// The outstanding token for `secret`, if it can still be redeemed at `now`.
    ///
    /// # Errors
    /// [`TokenProblem`] saying why it cannot.
    pub fn lookup(&self, secret: &TokenSecret, now: SystemTime) -> Result<TokenRecord, TokenProblem> {
        let id = secret.id();
        let record = match read_record(&self.dir.join(&id)) {
            Ok(Some(record)) => record,
            Ok(None) if self.dir.join(USED_DIR).join(&id).exists() => return Err(TokenProblem::Used),
            Ok(None) => return Err(TokenProblem::Unknown),
            Err(e) => return Err(e.into()),
        };
        if record.expires <= now {
            return Err(TokenProblem::Expired(record.expires));
        }
        Ok(record)
    }

    /// Redeems the token for `secret`: of any number of concurrent callers, exactly one gets
    /// `Ok`. Call [`TokenStore::lookup`] first to check it.
    ///
    /// # Errors
    /// [`TokenProblem::Used`] when someone else redeemed it first (or it was deleted).
    pub fn claim(&self, secret: &TokenSecret) -> Result<(), TokenProblem> {
        let id = secret.id();
        let from = self.dir.join(&id);
        match fs::rename(&from, self.dir.join(USED_DIR).join(&id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(TokenProblem::Used),
            Err(source) => Err(StoreError::Io { action: "redeem token", path: from, source }.into()),
        }
    }

    /// Every outstanding token, expired ones included, soonest to expire first.
    ///
    /// # Errors
    /// [`StoreError`] when the directory or a file cannot be read.
    pub fn list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut records = Vec::new();
        for path in token_files(&self.dir)? {
            if let Some(record) = read_record(&path)? {
                records.push(record);
            }
        }
        records.sort_by_key(|r| (r.expires, r.id.clone()));
        Ok(records)
    }

    /// Deletes the outstanding tokens whose id starts with `prefix` (at least 8 hex digits);
    /// returns how many.
    ///
    /// # Errors
    /// [`StoreError`] when a file cannot be deleted.
    pub fn delete(&self, prefix: &str) -> Result<usize, StoreError> {
        let mut deleted = 0;
        if prefix.len() < 8 {
            return Ok(0);
        }
        for path in token_files(&self.dir)? {
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)) {
                fs::remove_file(&path).map_err(|source| StoreError::Io { action: "delete", path, source })?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Forgets tokens that expired, and used tokens that would have expired, over a week
    /// before `now`. Problems are logged, not returned: this is housekeeping.
    pub fn purge(&self, now: SystemTime) {
        for dir in [self.dir.clone(), self.dir.join(USED_DIR)] {
            let files = match token_files(&dir) {
                Ok(files) => files,
                Err(e) => {
                    warn!(error = %e, "cannot tidy join tokens");
                    continue;
                }
            };
            for path in files {
                let stale = match read_record(&path) {
                    Ok(Some(record)) => record.expires + REMEMBER < now,
                    Ok(None) => false,
                    // An unreadable file is left for the operator; lookups report it.
                    Err(_) => false,
                };
                if stale {
                    if let Err(e) = fs::remove_file(&path) {
                        warn!(path = %path.display(), error = %e, "cannot delete a stale join token");
                    }
                }
            }
        }
    }
}

/// A role whose certificates can be revoked by name; each has its own list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocable {
    /// `dispy-node` certificates (`dispy-dispatcher nodes revoke`).
    Node,
    /// User certificates (`dispy-dispatcher clients revoke`).
    Client,
    /// Operator certificates (`dispy-dispatcher admins revoke`).
    Operator,
}

impl Revocable {
    /// Every revocable role.
    pub const ALL: [Revocable; 3] = [Revocable::Node, Revocable::Client, Revocable::Operator];

    /// The certificate role this list is for.
    pub fn role(self) -> Role {
        match self {
            Revocable::Node => Role::Node,
            Revocable::Client => Role::Client,
            Revocable::Operator => Role::Operator,
        }
    }

    /// The `dispy-dispatcher` command that edits the list.
    pub fn command(self) -> &'static str {
        match self {
            Revocable::Node => "nodes",
            Revocable::Client => "clients",
            Revocable::Operator => "admins",
        }
    }

    /// The list's file in `STATE_DIR/enroll/`; the node list keeps its original name.
    fn file_name(self) -> &'static str {
        match self {
            Revocable::Node => "revoked",
            Revocable::Client => "revoked-clients",
            Revocable::Operator => "revoked-admins",
        }
    }
}

/// The revoked names of one role (see the module documentation for the files), cached by the
/// file's identity (inode, size, modification time) so checking a name per connection costs one
/// `stat`.
#[derive(Debug)]
pub struct RevocationList {
    kind: Revocable,
    path: PathBuf,
    owner: Option<(u32, u32)>,
    cache: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    /// The file's identity when `names` was read; `None` when it did not exist.
    stamp: Option<(u64, u64, i64, i64)>,
    names: BTreeSet<String>,
}

impl RevocationList {
    /// The `kind` list of `state_dir`; nothing is read until it is asked.
    pub fn new(state_dir: &Path, kind: Revocable) -> Self {
        Self {
            kind,
            path: state_dir.join(ENROLL_DIR).join(kind.file_name()),
            owner: owner_of(state_dir),
            cache: Mutex::default(),
        }
    }

    /// Whether `name` is revoked, rereading the file only when it changed. If the file cannot
    /// be read the last good list stays in force (and a warning is logged).
    pub fn contains(&self, name: &str) -> bool {
        // Only the cached set is touched under this lock; a poisoned one is still consistent.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = match fs::metadata(&self.path) {
            Ok(m) => Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot check the revocation list; keeping the last one read");
                return cache.names.contains(name);
            }
        };
        if stamp != cache.stamp {
            match self.names() {
                Ok(names) => *cache = Cached { stamp, names },
                Err(e) => warn!(error = %e, "cannot read the revocation list; keeping the last one read"),
            }
        }
        cache.names.contains(name)
    }

    /// Every revoked name, read now.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file exists but cannot be read.
    pub fn names(&self) -> Result<BTreeSet<String>, StoreError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => Ok(text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(source) => Err(StoreError::Io { action: "read", path: self.path.clone(), source }),
        }
    }

    /// Adds `name`; returns whether it was not revoked before.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the list cannot be read or written.
    pub fn revoke(&self, name: &str) -> Result<bool, StoreError> {
        let mut names = self.names()?;
        let added = names.insert(name.to_owned());
        if added {
            self.write(&names)?;
        }
        Ok(added)
    }

    /// Removes `name`; returns whether it was revoked.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the list cannot be read or written.
    pub fn unrevoke(&self, name: &str) -> Result<bool, StoreError> {
        let mut names = self.names()?;
        let removed = names.remove(name);
        if removed {
            self.write(&names)?;
        }
        Ok(removed)
    }

    fn write(&self, names: &BTreeSet<String>) -> Result<(), StoreError> {
        if let Some(parent) = self.path.parent() {
            make_dir(parent, self.owner)?;
        }
        let mut text = format!(
            "# {} names refused by the dispatcher, one a line. Edit with `dispy-dispatcher {} revoke|unrevoke`.\n",
            self.kind.role(),
            self.kind.command()
        );
        for name in names {
            text.push_str(name);
            text.push('\n');
        }
        write_atomically(&self.path, &text, 0o644, self.owner)
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The owner and group of `path`, which files made here should share.
fn owner_of(path: &Path) -> Option<(u32, u32)> {
    fs::metadata(path).ok().map(|m| (m.uid(), m.gid()))
}

/// Gives `path` to `owner` when it differs: a command run as root must leave files the
/// daemon's user can use. Failing that (not root) is fine: then the creator is the owner's peer.
fn adopt(path: &Path, owner: Option<(u32, u32)>) {
    let Some((uid, gid)) = owner else { return };
    if fs::metadata(path).is_ok_and(|m| m.uid() != uid || m.gid() != gid) {
        let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    }
}

fn make_dir(path: &Path, owner: Option<(u32, u32)>) -> Result<(), StoreError> {
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(path)
        .map_err(|source| StoreError::Io { action: "create directory", path: path.to_owned(), source })?;
    adopt(path, owner);
    Ok(())
}

/// Writes `text` to a temporary sibling, syncs it and renames it over `path`.
fn write_atomically(path: &Path, text: &str, mode: u32, owner: Option<(u32, u32)>) -> Result<(), StoreError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let temp = path.with_file_name(format!(".{name}.tmp-{}-{unique}", std::process::id()));
    let io_err = |source| StoreError::Io { action: "write", path: path.to_owned(), source };
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&temp).map_err(io_err)?;
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_err(e));
    }
    adopt(&temp, owner);
    fs::rename(&temp, path).map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_err(e)
    })
}

/// The token files (64 hex digits) directly in `dir`.
fn token_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = fs::read_dir(dir).map_err(|source| StoreError::Io { action: "list", path: dir.to_owned(), source })?;
    Ok(entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect())
}

/// Reads a token file; `Ok(None)` when there is none.
fn read_record(path: &Path) -> Result<Option<TokenRecord>, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Io { action: "read", path: path.to_owned(), source }),
    };
    let bad = |reason: String| StoreError::BadFile { path: path.to_owned(), reason };
    let (mut created, mut expires, mut name) = (None, None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, value) = line.split_once('=').ok_or_else(|| bad(format!("line {line:?} is not `key = value`")))?;
        let (key, value) = (key.trim(), value.trim());
        let seconds = || value.parse::<u64>().map(|s| UNIX_EPOCH + Duration::from_secs(s)).map_err(|_| bad(format!("{key} is not a number")));
        match key {
            "created_unix" => created = Some(seconds()?),
            "expires_unix" => expires = Some(seconds()?),
            "name" => name = Some(value.to_owned()),
            other => return Err(bad(format!("unknown key {other:?}"))),
        }
    }
    let id = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let expires = expires.ok_or_else(|| bad("expires_unix is missing".into()))?;
    Ok(Some(TokenRecord { id, name, created: created.unwrap_or(UNIX_EPOCH), expires }))
}
