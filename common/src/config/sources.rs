//! Where settings come from and how they are merged: [`Sources`] names a config file (or inline
//! TOML), environment variables and flags, and [`load`] layers them with the `config` crate into
//! a [`RawConfig`], sorting out unknown keys against the daemon's [`Key`] table on the way.

use std::collections::BTreeMap;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use super::{names, ConfigError, Key, KeyProblem, Origin, Origins, RawConfig, Setting};
use super::{ENV_PREFIX, ENV_SEPARATOR, SHARED_VARIABLES};

/// Where a daemon's settings come from. Build one with the methods, then call
/// [`load_dispatcher`](super::load_dispatcher) or [`load_node`](super::load_node).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    file: Option<FileSource>,
    env: Vec<(String, String)>,
    flags: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
enum FileSource {
    /// A path; `required` is false only for the default path.
    Path { path: PathBuf, required: bool },
    /// TOML text (tests), named `name` in messages.
    Text { name: PathBuf, text: String },
}

/// The key flags given on a command line, by key name, as `common::daemon::parse_args` found
/// them; [`Sources::flags`] passes them all on, a command that needs one reads it with
/// [`Flags::get`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags(Vec<(&'static str, String)>);

impl Flags {
    /// The value given for `key`, if its flag was.
    pub fn get(&self, key: &str) -> Option<String> {
        self.0.iter().find(|(name, _)| *name == key).map(|(_, value)| value.clone())
    }
}

impl FromIterator<(&'static str, String)> for Flags {
    fn from_iter<I: IntoIterator<Item = (&'static str, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Sources {
    /// No file, no environment, no flags: every key at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `explicit` (from `--config`), which must exist, or else `default`, which may be
    /// absent.
    pub fn file_or_default(mut self, explicit: Option<&Path>, default: &str) -> Self {
        self.file = Some(match explicit {
            Some(path) => FileSource::Path { path: path.to_owned(), required: true },
            None => FileSource::Path { path: PathBuf::from(default), required: false },
        });
        self
    }

    /// Uses TOML `text` as the config file, called `name` in messages; relative paths in it
    /// resolve against `name`'s directory as they would for a file.
    pub fn toml(mut self, name: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        self.file = Some(FileSource::Text { name: name.into(), text: text.into() });
        self
    }

    /// Adds environment variables; only `DISPY_*` ones are read. Pass [`process_env`] in a
    /// daemon and a literal list in tests.
    pub fn env<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env.extend(vars.into_iter().map(|(name, value)| (name.into(), value.into())));
        self
    }

    /// Sets `key` from its command-line flag (`--` + the key with dashes), when given.
    pub fn flag(mut self, key: &'static str, value: Option<impl Into<String>>) -> Self {
        if let Some(value) = value {
            self.flags.push((key, value.into()));
        }
        self
    }

    /// Sets every key whose flag was given.
    pub fn flags(mut self, flags: &Flags) -> Self {
        self.flags.extend(flags.0.iter().cloned());
        self
    }
}

/// The process's `DISPY_*` variables (non-Unicode text replaced, so it is refused visibly).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(name, value)| (name.to_string_lossy().into_owned(), value.to_string_lossy().into_owned()))
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect()
}

/// Merges `sources` for a daemon with `keys`; `other_keys` (the other daemon's) and
/// [`SHARED_VARIABLES`] are ignored in the environment. Unknown keys travel in the result.
pub(super) fn load<S>(sources: &Sources, keys: &[Key], other_keys: &[Key]) -> Result<RawConfig<S>, ConfigError> {
    let known = names(keys);
    let mut unknown = Vec::new();
    let mut builder = config::Config::builder();

    let file_name = match &sources.file {
        None => None,
        Some(FileSource::Text { name, text }) => {
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
            Some(name.clone())
        }
        Some(FileSource::Path { path, required }) => match std::fs::read_to_string(path) {
            Ok(text) => {
                builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
                Some(path.clone())
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound && !required => None,
            Err(error) => return Err(ConfigError::Read { path: path.clone(), error }),
        },
    };

    // Only variables naming one of our keys reach the `config` crate; the rest are refused
    // here, unless another dispy program reads them.
    let mut env = config::Map::new();
    for (name, value) in &sources.env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
        if value.is_empty() {
            continue;
        }
        let key = rest.to_ascii_lowercase();
        let top = key.split(ENV_SEPARATOR).next().unwrap_or_default();
        if known.contains(&top) {
            env.insert(name.clone(), value.clone());
        } else if !other_keys.iter().any(|other| other.name == top) && !SHARED_VARIABLES.contains(&name.as_str()) {
            unknown.push(KeyProblem::Unknown {
                origin: Origin::Env(name.clone()),
                suggestion: crate::messages::closest(&known, top),
                key,
            });
        }
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
            .prefix_separator("_")
            .separator(ENV_SEPARATOR)
            .ignore_empty(true)
            .source(Some(env)),
    );

    for (key, value) in &sources.flags {
        debug_assert!(known.contains(key), "flag for unknown key {key}");
        builder = builder
            .set_override(*key, value.as_str())
            .map_err(|error| ConfigError::Load(error.to_string()))?;
    }

    let merged = builder.build().map_err(|error| match (error, &file_name) {
        (config::ConfigError::FileParse { cause, .. }, Some(file)) => {
            ConfigError::Syntax { file: file.clone(), message: cause.to_string().trim_end().to_owned() }
        }
        (error, _) => ConfigError::Load(error.to_string()),
    })?;
    let mut table = config::Source::collect(&merged).map_err(|error| ConfigError::Load(error.to_string()))?;

    let mut origins = BTreeMap::new();
    let mut names: Vec<String> = table.keys().cloned().collect();
    names.sort();
    for name in names {
        let Some(key) = keys.iter().find(|known| known.name == name) else {
            // Variables were sorted out above, and flags only name known keys.
            table.remove(&name);
            unknown.push(KeyProblem::Unknown {
                origin: file_name.clone().map_or(Origin::Default, Origin::File),
                suggestion: crate::messages::closest(&known, &name),
                key: name,
            });
            continue;
        };
        let from_env = table.get(key.name).and_then(config::Value::origin) == Some("the environment");
        let origin = if sources.flags.iter().any(|(flag, _)| *flag == key.name) {
            Origin::Flag(format!("--{}", key.long()))
        } else if from_env {
            Origin::Env(key.env())
        } else {
            file_name.clone().map_or(Origin::Default, Origin::File)
        };
        origins.insert(key.name.to_owned(), origin);
    }

    let values: BTreeMap<String, Setting> = config::Value::new(None, config::ValueKind::Table(table))
        .try_deserialize()
        .map_err(|error| ConfigError::Load(error.to_string()))?;
    Ok(RawConfig { values, origins: Origins(origins), unknown, settings: PhantomData })
}
