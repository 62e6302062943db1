//! `dispy-dispatcher journal check` and `journal repair`: what an operator runs when the
//! dispatcher refuses to start on its journal, or to look at one.
//!
//! [`check`] never changes the journal: it copies the file, lets redb recover the copy (a torn
//! last transaction rolls back to the last complete commit, as at every start), verifies every
//! page's checksum, decodes every row and checks every extent against the spool files, and
//! reports. [`repair`] keeps a copy of the file (`journal.redb.bad-UNIXTIME`) first, then either
//! repairs it in place (redb's integrity repair, then rows that do not decode are dropped and
//! jobs whose spooled bytes are gone are recorded as failed) or, when redb cannot open it at
//! all, starts an empty journal and moves the spooled jobs aside (`jobs.bad-UNIXTIME`) so the
//! dispatcher deletes nothing it cannot account for. Both refuse while a dispatcher has the
//! journal open.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableError};
use wire::proto::{JobFailure, JobState};

use super::{extents, migrate, open_database, panic_message, row, JournalError, HOLDS, INCARNATION, JOBS, META, NEXT_JOB, ROW_VERSION};

/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "journal.redb";

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// The journal file.
    pub path: PathBuf,
    /// redb had to recover the file (an unclean stop or a torn last transaction); the dispatcher
    /// does the same when it starts, so this alone is no problem.
    pub recovered: bool,
    /// Jobs by state (`running`, `succeeded`, `failed`, `cancelled`).
    pub jobs: BTreeMap<&'static str, u64>,
    /// Node names held (drained or quarantined).
    pub holds: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// What is wrong; empty for a healthy journal.
    pub problems: Vec<String>,
}

/// What [`repair`] did.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// The copy of the journal as it was.
    pub backup: PathBuf,
    /// Each change, in words.
    pub changes: Vec<String>,
}

/// A failure to check or repair a journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaintenanceError {
    /// There is no journal in the state directory.
    #[error("no journal at {0} (a dispatcher creates one when it first starts)")]
    Missing(String),
    /// The journal could not be opened, copied or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A file could not be copied, moved or created.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Checks the journal in `state_dir` without changing it.
///
/// # Errors
/// [`MaintenanceError`] when there is no journal, a dispatcher has it open, or it cannot be
/// copied. A journal redb cannot open is a problem in the report, not an error.
pub fn check(state_dir: &Path) -> Result<CheckReport, MaintenanceError> {
    let path = state_dir.join(JOURNAL_FILE);
    ensure_unused(&path)?;
    let size = std::fs::metadata(&path).map_err(|e| io(&path, e))?.len();
    let copy = scratch_copy(&path)?;
    let mut report = CheckReport { path: path.clone(), size, ..CheckReport::default() };
    let mut outcome = open_database(&copy, false);
    if let Err(e) = &outcome {
        if let Some(layout) = truncated_to(e) {
            report.problems.push(format!(
                "it is shorter than redb's layout says ({size} of {layout} bytes): its end was lost, as a torn write \
                 leaves it (a repair extends it and rolls back to the last complete commit)"
            ));
            outcome = extend(&copy, layout).and_then(|()| open_database(&copy, false));
        }
    }
    match outcome {
        Err(e) => {
            let e = e.to_string().replace(&copy.display().to_string(), &path.display().to_string());
            report.problems.push(format!("redb cannot open it: {e}"));
        }
        Ok((mut db, recovered)) => {
            report.recovered = recovered;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.check_integrity())) {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => report.problems.push("its pages failed redb's integrity check (redb could repair them)".into()),
                Ok(Err(e)) => report.problems.push(format!("its pages failed redb's integrity check: {e}")),
                Err(panic) => report.problems.push(format!("its pages failed redb's integrity check: {}", panic_message(&panic))),
            }
            let rows = Rows::read(&db, state_dir);
            report.jobs = rows.states;
            report.holds = rows.holds;
            report.problems.extend(rows.problems);
        }
    }
    Ok(report)
}

/// Repairs the journal in `state_dir` (see the module documentation); `now_unix_ms` stamps the
/// backup's name and the jobs it records as failed.
///
/// # Errors
/// [`MaintenanceError`] when there is no journal, a dispatcher has it open, or the backup or the
/// new journal cannot be written.
pub fn repair(state_dir: &Path, now_unix_ms: u64) -> Result<RepairReport, MaintenanceError> {
    let path = state_dir.join(JOURNAL_FILE);
    ensure_unused(&path)?;
    let stamp = now_unix_ms / 1000;
    let backup = state_dir.join(format!("{JOURNAL_FILE}.bad-{stamp}"));
    std::fs::copy(&path, &backup).map_err(|e| io(&backup, e))?;
    let mut report = RepairReport { backup, changes: Vec::new() };
    let mut opened = open_database(&path, false);
    if let Err(e) = &opened {
        if let Some(layout) = truncated_to(e) {
            report.changes.push(format!("extended the file, whose end was lost, back to the {layout} bytes redb expects"));
            opened = extend(&path, layout).and_then(|()| open_database(&path, false));
        }
    }
    let opened = opened.and_then(|(mut db, recovered)| {
        if recovered {
            report.changes.push("rolled a torn or unfinished last transaction back to the last complete commit".into());
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.check_integrity())) {
            Ok(Ok(true)) => Ok(db),
            Ok(Ok(false)) => {
                report.changes.push("repaired pages that failed redb's integrity check".into());
                Ok(db)
            }
            Ok(Err(e)) => Err(JournalError::Damaged { path: path.display().to_string(), reason: e.to_string() }),
            Err(panic) => Err(JournalError::Damaged { path: path.display().to_string(), reason: panic_message(&panic) }),
        }
    });
    match opened {
        Ok(db) => fix_rows(&db, state_dir, now_unix_ms, &mut report.changes).map_err(|e| {
            MaintenanceError::Journal(JournalError::Damaged { path: path.display().to_string(), reason: e.to_string() })
        })?,
        Err(JournalError::InUse { path }) => return Err(JournalError::InUse { path }.into()),
        Err(e) => start_afresh(state_dir, &path, stamp, &e, &mut report.changes)?,
    }
    Ok(report)
}

/// Refuses a journal another process (a running dispatcher) has open.
fn ensure_unused(path: &Path) -> Result<(), MaintenanceError> {
    if !path.exists() {
        return Err(MaintenanceError::Missing(path.display().to_string()));
    }
    // A read-only open shares the file with other readers but not with a running dispatcher.
    let probe = std::panic::catch_unwind(|| redb::ReadOnlyDatabase::open(path).map(drop));
    if let Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) = probe {
        return Err(JournalError::InUse { path: path.display().to_string() }.into());
    }
    Ok(())
}

/// A copy of the journal beside it (or in the temporary directory), deleted when dropped.
fn scratch_copy(path: &Path) -> Result<tempfile::TempPath, MaintenanceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file = tempfile::Builder::new()
        .prefix(".journal-check-")
        .tempfile_in(dir)
        .or_else(|_| tempfile::Builder::new().prefix("dispy-journal-check-").tempfile())
        .map_err(|e| io(dir, e))?;
    let copy = file.into_temp_path();
    std::fs::copy(path, &copy).map_err(|e| io(&copy, e))?;
    Ok(copy)
}

/// The length redb expects of a file whose end was cut off (a torn write that lost the file's
/// growth), read from its error.
fn truncated_to(e: &JournalError) -> Option<u64> {
    let text = e.to_string();
    let rest = &text[text.find("layout_len=")? + "layout_len=".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Extends a file with zeros to `len`: pages redb then finds empty fail their checksums, and it
/// falls back to the last commit whose pages are intact.
fn extend(path: &Path, len: u64) -> Result<(), JournalError> {
    let display = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| JournalError::Database { path: display.clone(), source: Box::new(e.into()) })?;
    file.set_len(len).map_err(|e| JournalError::Database { path: display, source: Box::new(e.into()) })
}

fn io(path: &Path, source: std::io::Error) -> MaintenanceError {
    MaintenanceError::Io { path: path.display().to_string(), source }
}

/// What the rows of a journal say, and what is wrong with them.
#[derive(Default)]
struct Rows {
    states: BTreeMap<&'static str, u64>,
    holds: u64,
    problems: Vec<String>,
    /// Job rows that do not decode.
    unreadable_jobs: Vec<u64>,
    /// Jobs whose spooled bytes the journal points at are missing, with why.
    lost_jobs: BTreeMap<u64, String>,
    /// Extent rows of jobs the journal does not hold.
    orphans: BTreeSet<u64>,
    /// Hold rows that do not decode.
    unreadable_holds: Vec<String>,
    /// The largest job id, to keep `next_job` above it.
    max_job: u64,
    next_job: u64,
}

impl Rows {
    fn read(db: &impl ReadableDatabase, state_dir: &Path) -> Rows {
        let mut rows = Rows::default();
        if let Err(e) = rows.read_tables(db, state_dir) {
            rows.problems.push(format!("cannot read it: {e}"));
        }
        rows
    }

    fn read_tables(&mut self, db: &impl ReadableDatabase, state_dir: &Path) -> Result<(), redb::Error> {
        let txn = db.begin_read()?;
        let mut version = 1;
        if let Some(meta) = optional(txn.open_table(META))? {
            self.next_job = meta.get(NEXT_JOB)?.map_or(1, |v| v.value());
            version = meta.get(ROW_VERSION)?.map_or(1, |v| v.value());
            if meta.get(INCARNATION)?.is_none() {
                self.problems.push("it has no incarnation (was it written by a dispatcher?)".into());
            }
        }
        if version > row::CURRENT_VERSION {
            self.problems.push(format!(
                "its job rows are version {version}, newer than this dispatcher reads ({}): run the newer dispatcher",
                row::CURRENT_VERSION
            ));
            return Ok(());
        }
        let mut jobs: BTreeMap<u64, ledger::record::JobRecord> = BTreeMap::new();
        if let Some(table) = optional(txn.open_table(JOBS))? {
            for entry in table.iter()? {
                let (key, value) = entry?;
                let job = key.value();
                self.max_job = self.max_job.max(job);
                match row::decode(version, value.value()) {
                    Ok(record) => {
                        *self.states.entry(state_name(&record.state)).or_default() += 1;
                        jobs.insert(job, record);
                    }
                    Err(reason) => {
                        self.problems.push(format!("job {job}'s row does not decode: {reason}"));
                        self.unreadable_jobs.push(job);
                    }
                }
            }
        }
        if self.max_job >= self.next_job && self.next_job > 0 {
            self.problems.push(format!("the next job id {} is not above job {}", self.next_job, self.max_job));
        }
        for (inputs, file, name) in [(true, "input", "input"), (false, "results", "result")] {
            let mut sizes: BTreeMap<u64, Option<u64>> = BTreeMap::new();
            let mut inputs_seen: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
            for (job, entry) in extents::all_entries(&txn, inputs)? {
                let Some(record) = jobs.get(&job) else {
                    if !self.unreadable_jobs.contains(&job) && self.orphans.insert(job) {
                        self.problems.push(format!("extents of job {job}, which the journal does not hold"));
                    }
                    continue;
                };
                let (chunk, offset, len) = match entry {
                    Ok((chunk, extent)) => (chunk, extent.offset, extent.len),
                    Err(reason) => {
                        if !self.lost_jobs.contains_key(&job) {
                            let why = format!("its {name} extents do not decode: {reason}");
                            self.problems.push(format!("job {job}: {why}"));
                            self.lost_jobs.insert(job, why);
                        }
                        continue;
                    }
                };
                inputs_seen.entry(job).or_default().insert(chunk);
                // Only live extents must point at bytes: a failed job's files go at once.
                let (needs_inputs, needs_results) = ledger::jobs::RestoredJob::reads(record);
                if !(if file == "input" { needs_inputs } else { needs_results }) {
                    continue;
                }
                let size = *sizes
                    .entry(job)
                    .or_insert_with(|| std::fs::metadata(state_dir.join("jobs").join(job.to_string()).join(file)).ok().map(|m| m.len()));
                let lost = match size {
                    None => Some(format!("its {file} spool file is missing")),
                    Some(size) if offset.saturating_add(len) > size => Some(format!(
                        "chunk {chunk}'s {name} ends at byte {} of its {file} spool file, which has {size}",
                        offset.saturating_add(len)
                    )),
                    Some(_) => None,
                };
                if let Some(why) = lost {
                    if !self.lost_jobs.contains_key(&job) {
                        self.problems.push(format!("job {job}: {why}"));
                        self.lost_jobs.insert(job, why);
                    }
                }
            }
            if file == "input" {
                for (job, record) in jobs.iter().filter(|(_, r)| r.input_complete && r.state == JobState::Running) {
                    let seen = inputs_seen.get(job).map_or(0, |chunks| chunks.len() as u64);
                    if seen != record.chunks && !self.lost_jobs.contains_key(job) {
                        let why = format!("it has {seen} input extents for {} chunks", record.chunks);
                        self.problems.push(format!("job {job}: {why}"));
                        self.lost_jobs.insert(*job, why);
                    }
                }
            }
        }
        if let Some(table) = optional(txn.open_table(HOLDS))? {
            for entry in table.iter()? {
                let (key, value) = entry?;
                match row::decode_hold(value.value()) {
                    Ok(_) => self.holds += 1,
                    Err(reason) => {
                        self.problems.push(format!("node {:?}'s hold does not decode: {reason}", key.value()));
                        self.unreadable_holds.push(key.value().to_owned());
                    }
                }
            }
        }
        if let Some(table) = optional(txn.open_table(extents::INPUT_RUNS))? {
            // Reading the length walks the table's root, so a damaged root shows here too.
            table.len()?;
        }
        Ok(())
    }
}

/// A table that does not exist yet (a journal no dispatcher finished opening) reads as empty.
pub(super) fn optional<T>(opened: Result<T, TableError>) -> Result<Option<T>, redb::Error> {
    match opened {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn state_name(state: &JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed(_) => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// Fixes what [`Rows`] found, in one transaction, then compacts.
fn fix_rows(db: &Database, state_dir: &Path, now_unix_ms: u64, changes: &mut Vec<String>) -> Result<(), redb::Error> {
    let rows = Rows::read(db, state_dir);
    let newer = db.begin_read()?.open_table(META).ok().and_then(|m| m.get(ROW_VERSION).ok()?.map(|v| v.value()));
    if newer.is_some_and(|v| v > row::CURRENT_VERSION) {
        changes.push("changed no row: they were written by a newer dispatcher, which is the one to run".into());
        return Ok(());
    }
    let txn = db.begin_write()?;
    {
        let mut jobs = txn.open_table(JOBS)?;
        let mut meta = txn.open_table(META)?;
        let version = meta.get(ROW_VERSION)?.map_or(1, |v| v.value());
        if version < row::CURRENT_VERSION {
            // Rows the repair rewrites are of the current version, so every row must be: migrate
            // as the dispatcher would when it opens the journal.
            let mut migrated = Vec::new();
            for entry in jobs.iter()? {
                let (key, value) = entry?;
                if let Ok(record) = row::decode(version, value.value()) {
                    migrated.push((key.value(), record));
                }
            }
            let mut results = txn.open_table(extents::LEGACY_RESULTS)?;
            for (job, record) in migrated {
                migrate::results_to_current(&mut results, version, job, &record)?;
                jobs.insert(job, row::encode(&record).as_slice())?;
            }
            drop(results);
            extents::convert_legacy(&txn)?;
            meta.insert(ROW_VERSION, row::CURRENT_VERSION)?;
            changes.push(format!("rewrote the job rows from version {version} to {}", row::CURRENT_VERSION));
        }
        let mut inputs = txn.open_table(extents::INPUT_RUNS)?;
        let mut results = txn.open_table(extents::RESULT_RUNS)?;
        for &job in rows.unreadable_jobs.iter().chain(&rows.orphans) {
            jobs.remove(job)?;
            extents::remove_job(&mut inputs, job)?;
            extents::remove_job(&mut results, job)?;
        }
        for &job in &rows.unreadable_jobs {
            changes.push(format!("dropped job {job}, whose row does not decode (its spooled files are deleted when the dispatcher starts)"));
        }
        for &job in &rows.orphans {
            changes.push(format!("dropped the extents of job {job}, which the journal does not hold"));
        }
        for (&job, why) in &rows.lost_jobs {
            let Some(bytes) = jobs.get(job)?.map(|v| v.value().to_vec()) else { continue };
            let Ok(mut record) = row::decode(row::CURRENT_VERSION, &bytes) else { continue };
            let message = format!("journal repair: {why}");
            record.state = JobState::Failed(JobFailure::Other { message });
            record.finished_unix_ms = Some(now_unix_ms);
            jobs.insert(job, row::encode(&record).as_slice())?;
            extents::remove_job(&mut inputs, job)?;
            extents::remove_job(&mut results, job)?;
            changes.push(format!("recorded job {job} as failed: {why}"));
        }
        if rows.max_job >= rows.next_job {
            meta.insert(NEXT_JOB, rows.max_job + 1)?;
            changes.push(format!("set the next job id to {}", rows.max_job + 1));
        }
        let mut holds = txn.open_table(HOLDS)?;
        for name in &rows.unreadable_holds {
            holds.remove(name.as_str())?;
            changes.push(format!("dropped node {name:?}'s hold, which does not decode (undrain it is, in effect)"));
        }
    }
    txn.commit()?;
    if changes.is_empty() {
        changes.push("nothing needed repairing".into());
    }
    Ok(())
}

/// redb cannot open the journal: it is replaced by an empty one whose job ids continue above
/// every job in the spool, and the spooled jobs are moved aside rather than deleted.
fn start_afresh(
    state_dir: &Path,
    path: &Path,
    stamp: u64,
    why: &JournalError,
    changes: &mut Vec<String>,
) -> Result<(), MaintenanceError> {
    changes.push(format!("redb cannot open or repair it ({why}); starting an empty journal"));
    let spool = state_dir.join("jobs");
    let mut max_job = 0;
    if let Ok(entries) = std::fs::read_dir(&spool) {
        max_job = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok()).max().unwrap_or(0);
        let aside = state_dir.join(format!("jobs.bad-{stamp}"));
        std::fs::rename(&spool, &aside).map_err(|e| io(&spool, e))?;
        changes.push(format!("moved the spooled jobs aside to {} (the new journal does not know them)", aside.display()));
    }
    std::fs::remove_file(path).map_err(|e| io(path, e))?;
    let db = Database::create(path).map_err(|e| JournalError::Database { path: path.display().to_string(), source: Box::new(e.into()) })?;
    let fill = || -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(NEXT_JOB, max_job + 1)?;
            // Attempt ids carry the incarnation in their high bits: start far above any count of
            // restarts the lost journal could have reached, so nodes' unacknowledged reports of
            // the old lifetime never match an attempt of the new one.
            meta.insert(INCARNATION, (1 << 23) | ((stamp / 60) & ((1 << 22) - 1)))?;
            meta.insert(ROW_VERSION, row::CURRENT_VERSION)?;
        }
        txn.commit()?;
        Ok(())
    };
    fill().map_err(|e| JournalError::Database { path: path.display().to_string(), source: Box::new(e) })?;
    changes.push(format!("the next job id is {} so no id is handed out twice", max_job + 1));
    Ok(())
}
