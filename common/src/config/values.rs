//! Values as written and the rules that validate them: [`Setting`] holds one value of any type,
//! the [`Validator`] takes each key's value out of a [`RawConfig`], parses it or records why not,
//! and the parsers below (text, paths, bounded numbers, durations and sizes) say what a key may
//! hold; rules only one daemon needs sit beside its settings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{ConfigError, Key, KeyProblem, Origin, Origins, RawConfig};
use wire::units::{parse_duration, parse_size};

/// One value as written, before validation; the daemon's own rules decide what it means.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Setting {
    /// A string (every environment variable and flag is one).
    Text(String),
    /// A TOML integer.
    Integer(i64),
    /// A TOML float.
    Float(f64),
    /// A TOML boolean.
    Boolean(bool),
    /// A TOML table, by key.
    Table(BTreeMap<String, Setting>),
    /// Anything else (an array, an out-of-range integer), described for messages.
    Other(&'static str),
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Text(text) => write!(f, "string {text:?}"),
            Setting::Integer(number) => write!(f, "integer {number}"),
            Setting::Float(number) => write!(f, "float {number:?}"),
            Setting::Boolean(flag) => write!(f, "boolean {flag}"),
            Setting::Table(_) => f.write_str("a table"),
            Setting::Other(what) => f.write_str(what),
        }
    }
}

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SettingVisitor)
    }
}

struct SettingVisitor;

impl<'de> Visitor<'de> for SettingVisitor {
    type Value = Setting;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any configuration value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Setting, E> {
        Ok(Setting::Boolean(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Setting, E> {
        Ok(Setting::Integer(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Setting, E> {
        Ok(i64::try_from(value).map_or(Setting::Other("an integer out of range"), Setting::Integer))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<Setting, E> {
        Ok(i64::try_from(value).map_or(Setting::Other("an integer out of range"), Setting::Integer))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<Setting, E> {
        Ok(i64::try_from(value).map_or(Setting::Other("an integer out of range"), Setting::Integer))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Setting, E> {
        Ok(Setting::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Setting, E> {
        Ok(Setting::Text(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Setting, E> {
        Ok(Setting::Text(value))
    }

    fn visit_none<E: de::Error>(self) -> Result<Setting, E> {
        Ok(Setting::Other("an empty value"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Setting, E> {
        Ok(Setting::Other("an empty value"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Setting, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Setting::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Setting, A::Error> {
        let mut table = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, Setting>()? {
            table.insert(key, value);
        }
        Ok(Setting::Table(table))
    }
}

/// Validates `raw` with `read`, which builds a daemon's settings from a [`Validator`]; `program`
/// and its `keys` order the problems.
///
/// # Errors
/// [`ConfigError::Keys`] with every unknown key and every invalid value.
pub(super) fn validate<S>(
    raw: RawConfig<S>,
    program: &'static str,
    keys: &[Key],
    read: fn(&mut Validator) -> S,
) -> Result<S, ConfigError> {
    let mut v = Validator { values: raw.values, origins: raw.origins, problems: raw.unknown };
    let settings = read(&mut v);
    v.finish(program, keys, settings)
}

/// The settings `read` builds when nothing is set: every key at its default.
pub(super) fn defaults<S>(read: fn(&mut Validator) -> S) -> S {
    read(&mut Validator { values: BTreeMap::new(), origins: Origins::default(), problems: Vec::new() })
}

/// Takes each key's value out of a [`RawConfig`] and collects a [`KeyProblem`] for each bad one.
pub(super) struct Validator {
    values: BTreeMap<String, Setting>,
    origins: Origins,
    problems: Vec<KeyProblem>,
}

impl Validator {
    /// Parses the value of `key`, or keeps `default` when it is absent or (with a problem
    /// recorded) invalid.
    pub(super) fn check<T>(
        &mut self,
        key: &'static str,
        default: T,
        parse: impl FnOnce(&Origin, Setting) -> Result<T, String>,
    ) -> T {
        let Some(value) = self.values.remove(key) else { return default };
        let origin = self.origins.of(key);
        match parse(&origin, value) {
            Ok(value) => value,
            Err(reason) => {
                self.problems.push(KeyProblem::Invalid { origin, key, reason });
                default
            }
        }
    }

    /// Where each key came from.
    pub(super) fn origins(&self) -> &Origins {
        &self.origins
    }

    /// A non-empty path; relative paths in a file resolve against the file's directory.
    pub(super) fn path(origin: &Origin, value: Setting) -> Result<PathBuf, String> {
        let text = text(value)?;
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        let path = PathBuf::from(text);
        Ok(match origin {
            Origin::File(file) if path.is_relative() => file.parent().unwrap_or(Path::new("")).join(path),
            _ => path,
        })
    }

    fn finish<T>(self, program: &'static str, keys: &[Key], settings: T) -> Result<T, ConfigError> {
        // Loading keeps only the keys in the table, so a value left here was never checked.
        debug_assert!(self.values.is_empty(), "keys in the table that nothing validates: {:?}", self.values.keys());
        let mut problems = self.problems;
        if problems.is_empty() {
            return Ok(settings);
        }
        let rank = |problem: &KeyProblem| match problem {
            KeyProblem::Unknown { key, .. } => (0, key.clone()),
            KeyProblem::Invalid { key, .. } => {
                (1 + keys.iter().position(|known| known.name == *key).unwrap_or(keys.len()), String::new())
            }
        };
        problems.sort_by_key(rank);
        Err(ConfigError::Keys { program, problems })
    }
}

pub(super) fn text(value: Setting) -> Result<String, String> {
    match value {
        Setting::Text(text) => Ok(text),
        other => Err(format!("expected a string, found {other}")),
    }
}

/// `true` or `false`, from a boolean or (environment, flags) the string "true" or "false".
pub(super) fn boolean(value: Setting) -> Result<bool, String> {
    match value {
        Setting::Boolean(flag) => Ok(flag),
        Setting::Text(text) => match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("expected true or false, found string {text:?}")),
        },
        other => Err(format!("expected true or false, found {other}")),
    }
}

/// A whole number in `min..=max`, from an integer or (environment, flags) a string.
pub(super) fn integer_within(value: Setting, min: u32, max: u32) -> Result<u32, String> {
    let number = match value {
        Setting::Integer(number) => number,
        Setting::Text(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("expected a whole number, found string {text:?}"))?,
        other => return Err(format!("expected a whole number, found {other}")),
    };
    match u32::try_from(number) {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ => Err(format!("must be between {min} and {max}, found {number}")),
    }
}

/// A duration in `min..=max`, from a string such as "30s" or an integer number of seconds.
pub(super) fn duration_within(value: Setting, min: Duration, max: Duration) -> Result<Duration, String> {
    let duration = match value {
        Setting::Text(text) => parse_duration(&text).map_err(|error| error.to_string())?,
        Setting::Integer(seconds) => u64::try_from(seconds)
            .map(Duration::from_secs)
            .map_err(|_| format!("expected a duration such as \"30s\", found {seconds}"))?,
        other => {
            return Err(format!("expected a duration such as \"30s\" or a number of seconds, found {other}"))
        }
    };
    if (min..=max).contains(&duration) {
        Ok(duration)
    } else {
        Err(format!("must be between {min:?} and {max:?}, found {duration:?}"))
    }
}

/// A byte size in `min..=max`, from a string such as "1MiB" or an integer number of bytes.
pub(super) fn size_within(value: Setting, min: usize, max: usize, why: &str) -> Result<usize, String> {
    let size = match value {
        Setting::Text(text) => parse_size(&text).map_err(|error| error.to_string())?,
        Setting::Integer(bytes) => {
            u64::try_from(bytes).map_err(|_| format!("expected a size such as \"1MiB\", found {bytes}"))?
        }
        other => return Err(format!("expected a size such as \"1MiB\" or a number of bytes, found {other}")),
    };
    match usize::try_from(size) {
        Ok(size) if (min..=max).contains(&size) => Ok(size),
        _ => Err(format!(
            "must be between {} and {}{why}, found {}",
            exact_size(min as u64),
            exact_size(max as u64),
            exact_size(size)
        )),
    }
}

/// A byte count in the largest binary unit that divides it, as written in config files.
fn exact_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 3] = [(30, "GiB"), (20, "MiB"), (10, "KiB")];
    UNITS
        .iter()
        .find(|(shift, _)| bytes != 0 && bytes.is_multiple_of(1 << shift))
        .map_or_else(|| format!("{bytes}B"), |(shift, unit)| format!("{}{unit}", bytes >> shift))
}

