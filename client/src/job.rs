//! Job descriptions: what `dispy-submit run` submits, built from a job TOML file or from flags.
//!
//! A job file has the same keys as the flags (`payload`, `input`, `split`, `output`, `results`,
//! `args`, `max_attempts`, `chunk_timeout`, `chunk_target`, `memory_limit`, `priority`,
//! `placement_timeout`, `shared_input`, `ship_input`, `name`). It is read into a private raw struct and validated into a [`JobDescription`]; every
//! bad key is reported, each naming the file, the key and the reason. The defaults are public
//! constants so the CLI flags share them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use wire::proto::ResultMode;
use common::messages::io_message;

use crate::split::SplitRule;
use wire::units::{parse_duration, parse_size};

/// Default attempts per chunk before the job fails.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default wall-clock limit for one attempt at one chunk.
pub const DEFAULT_CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
/// Default run time an `auto` split rule aims for per chunk.
pub const DEFAULT_CHUNK_TARGET: Duration = Duration::from_secs(1);
/// Default memory limit per worker: 1 GiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;
/// Default priority; higher runs first.
pub const DEFAULT_PRIORITY: i32 = 0;
/// Default time a job may wait for an eligible node before it fails: none, it waits as long as
/// it takes and the dispatcher says why (a job no connected node could ever run is refused at
/// once).
pub const DEFAULT_PLACEMENT_TIMEOUT: Option<Duration> = None;
/// Default way results are written: concatenated into one file.
pub const DEFAULT_RESULTS: ResultMode = ResultMode::Concat;

/// A fully resolved job, ready to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDescription {
    /// A name for logs and listings; defaults to the payload's file stem.
    pub name: String,
    /// The payload file (WebAssembly binary or text).
    pub payload: PathBuf,
    /// Input files or directories, read by the split rule; empty for `range`, which has none.
    pub inputs: Vec<PathBuf>,
    /// How the input is cut into chunks.
    pub split: SplitRule,
    /// The output file (`concat`) or directory (`files`).
    pub output: PathBuf,
    /// How chunk results are written.
    pub results: ResultMode,
    /// Argument bytes handed to the payload with every chunk.
    pub args: Vec<u8>,
    /// Attempts per chunk before the job fails; at least 1.
    pub max_attempts: u32,
    /// Wall-clock limit per attempt, so a looping payload cannot hold a slot forever.
    pub chunk_timeout: Duration,
    /// How long an `auto` split rule makes each chunk run; below `chunk_timeout`.
    pub chunk_target: Duration,
    /// Memory limit per worker in bytes; nodes with less available memory are not used.
    pub memory_limit: u64,
    /// Higher runs first when jobs compete for slots.
    pub priority: i32,
    /// How long to wait for an eligible node before failing; `None` waits as long as it takes
    /// (say, for a node to join), while the dispatcher tells why the job waits.
    pub placement_timeout: Option<Duration>,
    /// The inputs are on storage every node mounts at the same path: chunks travel as
    /// references and nodes read their bytes (`bytes` rules only).
    pub shared_input: bool,
    /// Ship the input's bytes even when every node could read the files in place (the
    /// submitter otherwise decides, see [`crate::in_place`]).
    pub ship_input: bool,
}

impl JobDescription {
    /// A job with the given payload, rule and output, no inputs, and every option at its
    /// default; the name is the payload's file stem. Set the other (public) fields directly.
    pub fn new(payload: PathBuf, split: SplitRule, output: PathBuf) -> Self {
        Self {
            name: default_name(&payload),
            payload,
            inputs: Vec::new(),
            split,
            output,
            results: DEFAULT_RESULTS,
            args: Vec::new(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            chunk_timeout: DEFAULT_CHUNK_TIMEOUT,
            chunk_target: DEFAULT_CHUNK_TARGET,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            priority: DEFAULT_PRIORITY,
            placement_timeout: DEFAULT_PLACEMENT_TIMEOUT,
            shared_input: false,
            ship_input: false,
        }
    }

    /// The largest chunk an `auto` rule of this job may choose, in bytes: a quarter of the
    /// worker's memory (the payload's own data shares it), and when the bytes travel through the
    /// dispatcher no more than [`MAX_AUTO_SHIPPED_BYTES`](crate::split::auto::MAX_AUTO_SHIPPED_BYTES).
    pub fn max_auto_chunk_bytes(&self) -> u64 {
        let memory_bound = self.memory_limit / 4;
        if self.shared_input || self.has_object_input() {
            memory_bound
        } else {
            memory_bound.min(crate::split::auto::MAX_AUTO_SHIPPED_BYTES)
        }
    }

    /// Whether nodes could read this job's input in place (`shared_input`): its split rule cuts
    /// byte ranges, and every input is a regular file.
    pub fn can_share_input(&self) -> bool {
        check_shared_input(true, &self.split).is_ok() && !self.inputs.is_empty() && self.inputs.iter().all(|p| p.is_file())
    }

    /// Parses a job TOML file; relative paths inside are resolved against the file's directory.
    ///
    /// # Errors
    /// [`JobFileError::Read`] if the file cannot be read, otherwise as
    /// [`JobDescription::from_toml_str`], naming `path`.
    pub fn from_toml_file(path: &Path) -> Result<Self, JobFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| JobFileError::Read {
            path: path.to_owned(),
            error,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        parse(&text, base_dir, Some(path))
    }

    /// Parses job TOML text; relative paths inside are resolved against `base_dir`.
    ///
    /// # Errors
    /// [`JobFileError::Syntax`] for text that is not TOML, and [`JobFileError::Keys`] listing
    /// every unknown, missing or invalid key.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Self, JobFileError> {
        parse(text, base_dir, None)
    }

    /// Checks a description built directly (the flag form) with the same rules a job file
    /// obeys; the keys named in the error are the job file keys.
    ///
    /// # Errors
    /// [`JobFileError::Keys`] listing every problem.
    pub fn validate(&self) -> Result<(), JobFileError> {
        let mut problems = Vec::new();
        let mut check = |key, result: Result<(), String>| {
            if let Err(reason) = result {
                problems.push(KeyProblem::Invalid { key, reason });
            }
        };
        check("name", check_not_empty(&self.name));
        check("payload", check_path(&self.payload));
        check("output", check_path(&self.output));
        check(
            "split",
            self.split.validate().map_err(|error| error.to_string()),
        );
        check(
            "max_attempts",
            check_max_attempts(self.max_attempts.into()).map(drop),
        );
        check("chunk_timeout", check_chunk_timeout(self.chunk_timeout));
        check("shared_input", check_shared_input(self.shared_input, &self.split));
        if self.shared_input && self.ship_input {
            check("ship_input", Err(both_ways()));
        }
        // The target matters only to an `auto` rule (and a zero timeout is reported already).
        if matches!(self.split, SplitRule::Auto(_)) && !self.chunk_timeout.is_zero() {
            check("chunk_target", check_chunk_target(self.chunk_target, self.chunk_timeout));
        }
        check("memory_limit", check_memory_limit(self.memory_limit));
        for input in &self.inputs {
            check("input", check_path(input));
        }
        check("input", check_inputs(&self.inputs));
        match (self.split.needs_input(), self.inputs.is_empty()) {
            (true, true) => problems.push(KeyProblem::Missing { key: "input" }),
            (false, false) => problems.push(KeyProblem::Invalid {
                key: "input",
                reason: range_input_reason(),
            }),
            _ => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            sort_problems(&mut problems);
            Err(JobFileError::Keys {
                file: None,
                problems,
            })
        }
    }
}

/// The default job name for a payload: its file stem, or "job" if it has none.
pub fn default_name(payload: &Path) -> String {
    payload
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .filter(|stem| !stem.is_empty())
        .unwrap_or_else(|| "job".to_owned())
}

/// Parses a result mode as written in job files and flags: "concat", "files" or "reduce".
pub fn parse_result_mode(text: &str) -> Option<ResultMode> {
    match text {
        "concat" => Some(ResultMode::Concat),
        "files" => Some(ResultMode::Files),
        "reduce" => Some(ResultMode::Reduce),
        _ => None,
    }
}

/// The name of a result mode as written in job files and flags.
pub fn result_mode_name(mode: ResultMode) -> &'static str {
    match mode {
        ResultMode::Concat => "concat",
        ResultMode::Files => "files",
        ResultMode::Reduce => "reduce",
    }
}

/// A job file (or job description) that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JobFileError {
    /// The job file could not be read.
    #[error("failed to read job file {}: {}", path.display(), io_message(error))]
    Read {
        /// The job file.
        path: PathBuf,
        /// The underlying error; its text is already part of this error's message.
        error: io::Error,
    },
    /// The text is not valid TOML.
    #[error("{}: {message}", Origin(file.as_deref()))]
    Syntax {
        /// The job file, or `None` for text or a description not read from a file.
        file: Option<PathBuf>,
        /// The TOML parser's message, with the line and column.
        message: String,
    },
    /// Keys are unknown, missing or invalid; every problem found is listed.
    #[error("{}: {}", Origin(file.as_deref()), Problems(problems))]
    Keys {
        /// The job file, or `None` for text or a description not read from a file.
        file: Option<PathBuf>,
        /// At least one problem, in key order.
        problems: Vec<KeyProblem>,
    },
}

/// One bad key of a job file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key is not a job key (typos would otherwise be silently ignored).
    #[error("unknown key {key:?}{}", did_you_mean(*suggestion))]
    Unknown {
        /// The key as written.
        key: String,
        /// A job key spelled similarly, if any.
        suggestion: Option<&'static str>,
    },
    /// A required key is absent.
    #[error("missing key {key:?}{}", missing_hint(key))]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// The key's value has the wrong type or an invalid value.
    #[error("key {key:?}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong, naming the offending value.
        reason: String,
    },
}

/// Every key a job file may have, in documentation order.
const KEYS: &[&str] = &[
    "name",
    "payload",
    "input",
    "split",
    "output",
    "results",
    "args",
    "max_attempts",
    "chunk_timeout",
    "chunk_target",
    "memory_limit",
    "priority",
    "placement_timeout",
    "shared_input",
    "ship_input",
];

/// A job file as written. Values stay TOML values so type errors can be reported per key with
/// our own wording; unknown keys are caught before this is deserialized, and
/// `deny_unknown_fields` keeps this struct and [`KEYS`] honest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Option<toml::Value>,
    payload: Option<toml::Value>,
    input: Option<toml::Value>,
    split: Option<toml::Value>,
    output: Option<toml::Value>,
    results: Option<toml::Value>,
    args: Option<toml::Value>,
    max_attempts: Option<toml::Value>,
    chunk_timeout: Option<toml::Value>,
    chunk_target: Option<toml::Value>,
    memory_limit: Option<toml::Value>,
    priority: Option<toml::Value>,
    placement_timeout: Option<toml::Value>,
    shared_input: Option<toml::Value>,
    ship_input: Option<toml::Value>,
}

/// Parses and validates job TOML, collecting every key problem.
fn parse(text: &str, base_dir: &Path, file: Option<&Path>) -> Result<JobDescription, JobFileError> {
    let syntax = |message: String| JobFileError::Syntax {
        file: file.map(Path::to_owned),
        message,
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|error| syntax(toml_message(text, &error)))?;

    let mut problems = Vec::new();
    let unknown: Vec<String> = table
        .keys()
        .filter(|key| !KEYS.contains(&key.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        table.remove(&key);
        problems.push(KeyProblem::Unknown {
            suggestion: suggest(&key),
            key,
        });
    }
    let raw: RawJob = toml::Value::Table(table)
        .try_into()
        .map_err(|error: toml::de::Error| syntax(error.to_string()))?;

    let mut p = Parser { problems, base_dir };
    let payload = p.required("payload", raw.payload, Parser::path);
    let name = p.optional("name", raw.name, Parser::name);
    let inputs = p.optional("input", raw.input, Parser::inputs);
    let split = p.required("split", raw.split, Parser::split);
    let output = p.required("output", raw.output, Parser::path);
    let results = p.optional("results", raw.results, Parser::results);
    let args = p.optional("args", raw.args, Parser::args);
    let max_attempts = p.optional("max_attempts", raw.max_attempts, Parser::max_attempts);
    let chunk_timeout = p.optional("chunk_timeout", raw.chunk_timeout, Parser::chunk_timeout);
    let chunk_target = p.optional("chunk_target", raw.chunk_target, Parser::duration);
    let memory_limit = p.optional("memory_limit", raw.memory_limit, Parser::memory_limit);
    let priority = p.optional("priority", raw.priority, Parser::priority);
    let placement_timeout =
        p.optional("placement_timeout", raw.placement_timeout, Parser::duration);
    let shared_input = p.optional("shared_input", raw.shared_input, Parser::boolean);
    let ship_input = p.optional("ship_input", raw.ship_input, Parser::boolean);
    if let Some(Err(reason)) = inputs.as_deref().map(check_inputs) {
        p.problems.push(KeyProblem::Invalid { key: "input", reason });
    }
    if let (Some(true), Some(true)) = (shared_input, ship_input) {
        p.problems.push(KeyProblem::Invalid { key: "ship_input", reason: both_ways() });
    }
    if let (Some(true), Some(split)) = (shared_input, &split) {
        if let Err(reason) = check_shared_input(true, split) {
            p.problems.push(KeyProblem::Invalid { key: "shared_input", reason });
        }
    }

    // The input must agree with the rule; judge only when both were readable.
    if let Some(split) = &split {
        match (split.needs_input(), &inputs) {
            (true, None) if !p.has_problem("input") => {
                p.problems.push(KeyProblem::Missing { key: "input" })
            }
            (false, Some(_)) => p.problems.push(KeyProblem::Invalid {
                key: "input",
                reason: range_input_reason(),
            }),
            _ => {}
        }
    }

    // The target is judged against the timeout in force, given or default.
    if let Some(target) = chunk_target {
        let timeout = chunk_timeout.unwrap_or(DEFAULT_CHUNK_TIMEOUT);
        if let Err(reason) = check_chunk_target(target, timeout) {
            p.problems.push(KeyProblem::Invalid { key: "chunk_target", reason });
        }
    }

    match (payload, split, output) {
        (Some(payload), Some(split), Some(output)) if p.problems.is_empty() => {
            let mut job = JobDescription::new(payload, split, output);
            job.name = name.unwrap_or(job.name);
            job.inputs = inputs.unwrap_or_default();
            job.results = results.unwrap_or(job.results);
            job.args = args.unwrap_or_default();
            job.max_attempts = max_attempts.unwrap_or(job.max_attempts);
            job.chunk_timeout = chunk_timeout.unwrap_or(job.chunk_timeout);
            job.chunk_target = chunk_target.unwrap_or(job.chunk_target);
            job.memory_limit = memory_limit.unwrap_or(job.memory_limit);
            job.priority = priority.unwrap_or(job.priority);
            job.placement_timeout = placement_timeout.or(job.placement_timeout);
            job.shared_input = shared_input.unwrap_or(job.shared_input);
            job.ship_input = ship_input.unwrap_or(job.ship_input);
            Ok(job)
        }
        _ => {
            sort_problems(&mut p.problems);
            Err(JobFileError::Keys {
                file: file.map(Path::to_owned),
                problems: p.problems,
            })
        }
    }
}

/// Orders problems as a reader scans a job file: unknown keys first (by name), then the others
/// in [`KEYS`] order, whatever order they were found in.
fn sort_problems(problems: &mut [KeyProblem]) {
    problems.sort_by(|a, b| {
        let rank = |problem: &KeyProblem| match problem {
            KeyProblem::Unknown { key, .. } => (0, key.clone()),
            KeyProblem::Missing { key } | KeyProblem::Invalid { key, .. } => (
                KEYS.iter()
                    .position(|known| known == key)
                    .map_or(KEYS.len(), |i| i + 1),
                String::new(),
            ),
        };
        rank(a).cmp(&rank(b))
    });
}

/// Turns raw TOML values into typed ones, collecting a [`KeyProblem`] for each bad key.
struct Parser<'a> {
    problems: Vec<KeyProblem>,
    /// Relative paths are joined to this.
    base_dir: &'a Path,
}

/// A value parser: the raw value to the typed one, or the reason it is invalid.
type ParseFn<'a, T> = fn(&Parser<'a>, toml::Value) -> Result<T, String>;

impl<'a> Parser<'a> {
    fn required<T>(
        &mut self,
        key: &'static str,
        value: Option<toml::Value>,
        parse: ParseFn<'a, T>,
    ) -> Option<T> {
        if value.is_none() {
            self.problems.push(KeyProblem::Missing { key });
        }
        self.optional(key, value, parse)
    }

    fn optional<T>(
        &mut self,
        key: &'static str,
        value: Option<toml::Value>,
        parse: ParseFn<'a, T>,
    ) -> Option<T> {
        match parse(self, value?) {
            Ok(value) => Some(value),
            Err(reason) => {
                self.problems.push(KeyProblem::Invalid { key, reason });
                None
            }
        }
    }

    fn has_problem(&self, key: &str) -> bool {
        self.problems.iter().any(|problem| match problem {
            KeyProblem::Missing { key: bad } | KeyProblem::Invalid { key: bad, .. } => *bad == key,
            KeyProblem::Unknown { .. } => false,
        })
    }

    fn name(&self, value: toml::Value) -> Result<String, String> {
        let name = string(value)?;
        check_not_empty(&name)?;
        Ok(name)
    }

    fn path(&self, value: toml::Value) -> Result<PathBuf, String> {
        let text = string(value)?;
        check_not_empty(&text)?;
        Ok(self.base_dir.join(text))
    }

    fn inputs(&self, value: toml::Value) -> Result<Vec<PathBuf>, String> {
        match value {
            toml::Value::Array(items) if items.is_empty() => {
                Err("expected at least one file or directory, found an empty array".to_owned())
            }
            toml::Value::Array(items) => items.into_iter().map(|item| self.input(item)).collect(),
            toml::Value::String(_) => self.input(value).map(|path| vec![path]),
            other => Err(format!(
                "expected a path or an array of paths, found {}",
                describe(&other)
            )),
        }
    }

    /// An input path, or an object URL kept as written.
    fn input(&self, value: toml::Value) -> Result<PathBuf, String> {
        match &value {
            toml::Value::String(text) if wire::chunk::is_object_url(text) => Ok(PathBuf::from(text)),
            _ => self.path(value),
        }
    }

    fn split(&self, value: toml::Value) -> Result<SplitRule, String> {
        string(value)?
            .parse()
            .map_err(|error: crate::split::SplitError| error.to_string())
    }

    fn results(&self, value: toml::Value) -> Result<ResultMode, String> {
        let text = string(value)?;
        parse_result_mode(&text)
            .ok_or_else(|| format!("expected \"concat\", \"files\" or \"reduce\", found {text:?}"))
    }

    fn args(&self, value: toml::Value) -> Result<Vec<u8>, String> {
        string(value).map(String::into_bytes)
    }

    fn max_attempts(&self, value: toml::Value) -> Result<u32, String> {
        check_max_attempts(integer(value)?)
    }

    fn chunk_timeout(&self, value: toml::Value) -> Result<Duration, String> {
        let timeout = self.duration(value)?;
        check_chunk_timeout(timeout)?;
        Ok(timeout)
    }

    fn duration(&self, value: toml::Value) -> Result<Duration, String> {
        match value {
            toml::Value::String(text) => parse_duration(&text).map_err(|error| error.to_string()),
            toml::Value::Integer(seconds) => u64::try_from(seconds)
                .map(Duration::from_secs)
                .map_err(|_| format!("expected a duration such as \"30s\", found {seconds}")),
            other => Err(format!(
                "expected a duration such as \"30s\" or a number of seconds, found {}",
                describe(&other)
            )),
        }
    }

    fn memory_limit(&self, value: toml::Value) -> Result<u64, String> {
        let limit = match value {
            toml::Value::String(text) => parse_size(&text).map_err(|error| error.to_string())?,
            toml::Value::Integer(bytes) => u64::try_from(bytes)
                .map_err(|_| format!("expected a size such as \"1GiB\", found {bytes}"))?,
            other => {
                return Err(format!(
                    "expected a size such as \"1GiB\" or a number of bytes, found {}",
                    describe(&other)
                ))
            }
        };
        check_memory_limit(limit)?;
        Ok(limit)
    }

    fn boolean(&self, value: toml::Value) -> Result<bool, String> {
        match value {
            toml::Value::Boolean(flag) => Ok(flag),
            other => Err(format!("expected true or false, found {}", describe(&other))),
        }
    }

    fn priority(&self, value: toml::Value) -> Result<i32, String> {
        let priority = integer(value)?;
        i32::try_from(priority)
            .map_err(|_| format!("{priority} is out of range ({} to {})", i32::MIN, i32::MAX))
    }
}

/// Where a job came from, for the start of error messages.
struct Origin<'a>(Option<&'a Path>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "job file {}", path.display()),
            None => f.write_str("invalid job"),
        }
    }
}

/// Key problems joined with "; ".
struct Problems<'a>(&'a [KeyProblem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

fn string(value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text),
        other => Err(format!("expected a string, found {}", describe(&other))),
    }
}

fn integer(value: toml::Value) -> Result<i64, String> {
    match value {
        toml::Value::Integer(number) => Ok(number),
        other => Err(format!(
            "expected a whole number, found {}",
            describe(&other)
        )),
    }
}

/// A TOML value for messages: short values in full, others by type.
fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("string {text:?}"),
        toml::Value::Integer(number) => format!("integer {number}"),
        toml::Value::Float(number) => format!("float {number:?}"),
        toml::Value::Boolean(flag) => format!("boolean {flag}"),
        other => other.type_str().to_owned(),
    }
}

fn check_not_empty(text: &str) -> Result<(), String> {
    if text.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(())
    }
}

fn check_path(path: &Path) -> Result<(), String> {
    check_not_empty(&path.to_string_lossy())
}

fn check_max_attempts(attempts: i64) -> Result<u32, String> {
    if attempts < 1 {
        return Err(format!("must be at least 1, found {attempts}"));
    }
    u32::try_from(attempts).map_err(|_| format!("{attempts} is too large (at most {})", u32::MAX))
}

fn check_chunk_timeout(timeout: Duration) -> Result<(), String> {
    if timeout.is_zero() {
        Err("must be greater than zero".to_owned())
    } else {
        Ok(())
    }
}

fn check_chunk_target(target: Duration, timeout: Duration) -> Result<(), String> {
    if target.is_zero() {
        Err("must be greater than zero".to_owned())
    } else if target >= timeout {
        Err(format!(
            "must be shorter than chunk_timeout ({}), or every chunk would time out",
            humantime_short(timeout)
        ))
    } else {
        Ok(())
    }
}

/// A duration as users write it: whole seconds as "60s", otherwise milliseconds.
fn humantime_short(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// Why `shared_input` and `ship_input` cannot both be set.
fn both_ways() -> String {
    "cannot be combined with shared_input: one has the nodes read the input in place, the other ships it".to_owned()
}

fn check_shared_input(shared: bool, split: &SplitRule) -> Result<(), String> {
    match split {
        SplitRule::Bytes(_) | SplitRule::Auto(crate::split::AutoSplit::Bytes) => Ok(()),
        _ if !shared => Ok(()),
        other => Err(format!(
            "shared input needs a bytes split rule (bytes:SIZE or bytes:auto), not {other}"
        )),
    }
}

fn check_memory_limit(limit: u64) -> Result<(), String> {
    if limit == 0 {
        Err("must be greater than zero".to_owned())
    } else {
        Ok(())
    }
}

/// " (did you mean "KEY"?)" for an unknown key, if a known one is close.
fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|key| format!(" (did you mean {key:?}?)"))
        .unwrap_or_default()
}

/// Why a missing key is needed, when that depends on other keys.
fn missing_hint(key: &str) -> &'static str {
    if key == "input" {
        " (every split rule but range reads input)"
    } else {
        ""
    }
}

fn range_input_reason() -> String {
    "the range split rule takes no input; remove the key or use another split rule".to_owned()
}

/// A job key within two edits of `key`, to suggest for a typo.
fn suggest(key: &str) -> Option<&'static str> {
    let alias = match key {
        "inputs" | "files" | "path" | "paths" => Some("input"),
        "timeout" => Some("chunk_timeout"),
        "memory" => Some("memory_limit"),
        "retries" | "attempts" => Some("max_attempts"),
        _ => None,
    };
    common::messages::closest(KEYS, key).or(alias)
}

/// The TOML parser's message with its position as "line L, column C".
fn toml_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let bytes = text.as_bytes();
            let before = &bytes[..span.start.min(bytes.len())];
            let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&byte| byte == b'\n')
                .map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1;
            format!("invalid TOML at line {line}, column {column}: {message}")
        }
        None => format!("invalid TOML: {message}"),
    }
}

mod objects;
use objects::check_inputs;

#[cfg(test)]
mod tests;
