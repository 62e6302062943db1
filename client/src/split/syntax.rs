//! The text form of split rules: [`FromStr`] parses what users write (`bytes:4MiB`, `lines:1000`,
//! `files`, `range:0..1024:16`, `auto`) and [`fmt::Display`] prints a rule back in a form that
//! parses to the same rule.

use std::fmt;
use std::str::FromStr;

use wire::units::parse_size;

use super::{AutoSplit, SplitError, SplitRule};

const ALL_FORMS: &str =
    "expected bytes:SIZE, lines:N, files, range:START..END:STEP or auto (also bytes:auto, \
     lines:auto, range:START..END:auto)";
const BYTES_FORM: &str = "expected bytes:SIZE with a size such as 4MiB or 65536";
const LINES_FORM: &str = "expected lines:N with N a whole number, such as lines:1000";
const FILES_FORM: &str = "expected files, with no argument";
const RANGE_FORM: &str =
    "expected range:START..END:STEP with whole numbers, such as range:0..1024:16";

impl FromStr for SplitRule {
    type Err = SplitError;

    fn from_str(text: &str) -> Result<Self, SplitError> {
        let syntax = |expected| SplitError::Syntax {
            text: text.to_owned(),
            expected,
        };
        let trimmed = text.trim();
        let (kind, arg) = match trimmed.split_once(':') {
            Some((kind, arg)) => (kind.trim(), Some(arg.trim())),
            None => (trimmed, None),
        };
        let auto = |arg: &str| arg.eq_ignore_ascii_case("auto");
        let rule = match (kind.to_ascii_lowercase().as_str(), arg) {
            ("auto", None) => SplitRule::Auto(AutoSplit::Bytes),
            ("bytes", Some(arg)) if auto(arg) => SplitRule::Auto(AutoSplit::Bytes),
            ("lines", Some(arg)) if auto(arg) => SplitRule::Auto(AutoSplit::Lines),
            ("bytes", Some(arg)) => {
                SplitRule::Bytes(parse_size(arg).map_err(|_| syntax(BYTES_FORM))?)
            }
            ("bytes", None) => return Err(syntax(BYTES_FORM)),
            ("lines", Some(arg)) => SplitRule::Lines(parse_whole(arg).ok_or(syntax(LINES_FORM))?),
            ("lines", None) => return Err(syntax(LINES_FORM)),
            ("files", None) => SplitRule::Files,
            ("files", Some(_)) => return Err(syntax(FILES_FORM)),
            ("range", Some(arg)) => parse_range(arg).ok_or(syntax(RANGE_FORM))?,
            ("range", None) => return Err(syntax(RANGE_FORM)),
            _ => return Err(syntax(ALL_FORMS)),
        };
        // Report the text as written rather than the normalised rule.
        rule.validate().map_err(|error| match error {
            SplitError::Zero { what, .. } => SplitError::Zero {
                text: text.to_owned(),
                what,
            },
            SplitError::StartAfterEnd { start, end, .. } => SplitError::StartAfterEnd {
                text: text.to_owned(),
                start,
                end,
            },
            other => other,
        })?;
        Ok(rule)
    }
}

impl fmt::Display for SplitRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SplitRule::Bytes(size) => write!(f, "bytes:{}", size_text(size)),
            SplitRule::Lines(lines) => write!(f, "lines:{lines}"),
            SplitRule::Files => f.write_str("files"),
            SplitRule::Range { start, end, step } => write!(f, "range:{start}..{end}:{step}"),
            SplitRule::Auto(AutoSplit::Bytes) => f.write_str("bytes:auto"),
            SplitRule::Auto(AutoSplit::Lines) => f.write_str("lines:auto"),
            SplitRule::Auto(AutoSplit::Range { start, end }) => {
                write!(f, "range:{start}..{end}:auto")
            }
        }
    }
}

/// Parses `START..END:STEP` and `START..END:auto`.
fn parse_range(arg: &str) -> Option<SplitRule> {
    let (start, rest) = arg.split_once("..")?;
    let (end, step) = rest.split_once(':')?;
    let (start, end) = (parse_whole(start)?, parse_whole(end)?);
    if step.trim().eq_ignore_ascii_case("auto") {
        return Some(SplitRule::Auto(AutoSplit::Range { start, end }));
    }
    Some(SplitRule::Range {
        start,
        end,
        step: parse_whole(step)?,
    })
}

/// Parses a plain whole number (digits only, surrounding spaces allowed).
fn parse_whole(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Formats a size with the largest binary unit that divides it exactly, so `Display` output
/// reads like what users write and parses back to the same number.
fn size_text(size: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if size != 0 && size.trailing_zeros() >= shift {
            return format!("{}{unit}", size >> shift);
        }
    }
    size.to_string()
}
