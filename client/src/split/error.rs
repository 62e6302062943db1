//! [`SplitError`]: why a split rule could not be parsed or its input could not be cut, and the
//! helper that wraps an I/O error with the path it concerns.

use std::io;
use std::path::{Path, PathBuf};

use common::messages::io_message;
use thiserror::Error;

/// Why a split rule could not be parsed or its input could not be cut.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SplitError {
    /// The text is not one of the split rule forms.
    #[error("invalid split rule {text:?}: {expected}")]
    Syntax {
        /// The offending text.
        text: String,
        /// The form(s) that would have been accepted.
        expected: &'static str,
    },
    /// A chunk size, line count or step is zero, which would never make progress.
    #[error("invalid split rule {text:?}: {what} must be greater than zero")]
    Zero {
        /// The offending rule.
        text: String,
        /// Which number is zero: "chunk size", "lines per chunk" or "step".
        what: &'static str,
    },
    /// A range starts after it ends.
    #[error("invalid split rule {text:?}: start {start} is greater than end {end}")]
    StartAfterEnd {
        /// The offending rule.
        text: String,
        /// The range start.
        start: u64,
        /// The range end.
        end: u64,
    },
    /// An input could not be opened, listed or read.
    #[error("failed to read input {}: {}", path.display(), io_message(error))]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying error; its text is already part of this error's message.
        error: io::Error,
    },
    /// A `bytes` or `lines` input is a directory; only the `files` rule reads directories.
    #[error(
        "input {} is a directory, but the {rule} split rule reads files (use the files rule \
         for a directory)",
        path.display()
    )]
    IsDirectory {
        /// The directory.
        path: PathBuf,
        /// The rule, as text.
        rule: String,
    },
    /// A rule that cuts input data was given no input.
    #[error("the {rule} split rule needs an input file or directory")]
    MissingInput {
        /// The rule, as text.
        rule: String,
    },
    /// Shared input was asked for with a rule other than `bytes`.
    #[error(
        "shared input needs a bytes split rule (bytes:SIZE or bytes:auto), not {rule}: other \
         rules must read the input to find where chunks end"
    )]
    NotShareable {
        /// The rule, as text.
        rule: String,
    },
    /// An object input could not be listed, sized or read.
    #[error(transparent)]
    Object(#[from] node::object_input::ObjectError),
    /// Object input used in a way it cannot be (a prefix for a rule that reads one object, or
    /// several objects for `lines:auto`).
    #[error("{reason}")]
    ObjectInput {
        /// What is wrong and what would work.
        reason: String,
    },
    /// A `range` rule was given input paths, which it would ignore.
    #[error("the {rule} split rule takes no input, but {count} input path(s) were given")]
    UnexpectedInput {
        /// The rule, as text.
        rule: String,
        /// How many paths were given.
        count: usize,
    },
}

/// Wraps an I/O error with the path of the input it concerns.
pub(super) fn io_error(path: &Path, error: io::Error) -> SplitError {
    SplitError::Io {
        path: path.to_owned(),
        error,
    }
}
