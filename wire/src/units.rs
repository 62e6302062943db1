//! Human-friendly sizes ("4MiB", "1GB", "512") and durations ("30s", "250ms", "2m") for job files,
//! flags and config.

use thiserror::Error;

/// A size or duration string that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UnitError {
    /// The text is not a number followed by a known unit.
    #[error("invalid {what} {text:?}: expected a number with an optional unit such as {example}")]
    Invalid {
        /// "size" or "duration".
        what: &'static str,
        /// The offending text.
        text: String,
        /// A valid example.
        example: &'static str,
    },
    /// The value does not fit in 64 bits.
    #[error("{what} {text:?} is too large")]
    Overflow {
        /// "size" or "duration".
        what: &'static str,
        /// The offending text.
        text: String,
    },
}

/// Parses a byte size: a whole number with an optional unit `B`, `K`/`KB` (1000), `KiB` (1024),
/// and likewise `M`, `G`, `T`. Case-insensitive, spaces allowed between number and unit.
///
/// # Errors
/// [`UnitError`] when the text is not a size or overflows `u64`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let invalid =
        || UnitError::Invalid { what: "size", text: text.to_owned(), example: "4MiB" };
    let (number, unit) = split_number(text).ok_or_else(invalid)?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(multiplier)
        .ok_or(UnitError::Overflow { what: "size", text: text.to_owned() })
}

/// Parses a duration: a whole number with a unit `ms`, `s`, `m` or `h` (a bare number is seconds).
///
/// # Errors
/// [`UnitError`] when the text is not a duration or overflows.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, UnitError> {
    let invalid =
        || UnitError::Invalid { what: "duration", text: text.to_owned(), example: "30s" };
    let (number, unit) = split_number(text).ok_or_else(invalid)?;
    let millis_per_unit: u64 = match unit.to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(millis_per_unit)
        .map(std::time::Duration::from_millis)
        .ok_or(UnitError::Overflow { what: "duration", text: text.to_owned() })
}

/// Formats a byte count with binary units, e.g. `1.5 GiB`, for messages and tables.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Splits "  12 MiB " into (12, "MiB").
fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    if digits_end == 0 {
        return None;
    }
    let number = text[..digits_end].parse().ok()?;
    Some((number, text[digits_end..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_size(text: &str, expect: Option<u64>) {
        assert_eq!(parse_size(text).ok(), expect, "{text:?}");
    }

    #[test]
    fn sizes() {
        check_size("512", Some(512));
        check_size("4MiB", Some(4 << 20));
        check_size("4 mib", Some(4 << 20));
        check_size("1GB", Some(1_000_000_000));
        check_size("16k", Some(16_000));
        check_size("", None);
        check_size("MiB", None);
        check_size("4 parsecs", None);
        check_size("-1", None);
        check_size("99999999999999999999", None);
        check_size("99999999999TiB", None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").ok(), Some(std::time::Duration::from_millis(250)));
        assert_eq!(parse_duration("30").ok(), Some(std::time::Duration::from_secs(30)));
        assert_eq!(parse_duration("2m").ok(), Some(std::time::Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(12), "12 B");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
    }
}
