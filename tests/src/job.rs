//! [`Job`]: a builder for the flags of a `dispy-submit run` (the flag form, no job file), which
//! [`Cluster::run_job`](crate::Cluster::run_job) passes to `dispy-submit`.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// The flags of a `dispy-submit run` (the flag form, no job file).
#[derive(Debug, Clone)]
pub struct Job {
    args: Vec<OsString>,
}

impl Job {
    /// `run --payload PAYLOAD --split SPLIT --output OUTPUT`.
    pub fn new(payload: &Path, split: &str, output: &Path) -> Job {
        let args = ["run", "--payload"].map(OsString::from).into_iter();
        let mut args: Vec<OsString> = args.collect();
        args.push(payload.into());
        args.extend(["--split".into(), split.into(), "--output".into(), output.into()]);
        Job { args }
    }

    /// Adds `--input PATH`.
    pub fn input(self, path: &Path) -> Job {
        self.flag("--input", path)
    }

    /// Adds `--args TEXT`.
    pub fn payload_args(self, text: &str) -> Job {
        self.flag("--args", text)
    }

    /// Adds any `--flag VALUE`.
    pub fn flag(mut self, flag: &str, value: impl AsRef<OsStr>) -> Job {
        self.args.push(flag.into());
        self.args.push(value.as_ref().to_owned());
        self
    }

    /// Adds a flag that takes no value, such as `--shared-input`.
    pub fn switch(mut self, flag: &str) -> Job {
        self.args.push(flag.into());
        self
    }

    /// The arguments after `dispy-submit`'s global flags.
    pub fn to_args(&self) -> Vec<OsString> {
        self.args.clone()
    }
}
