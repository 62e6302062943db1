//! The dispatcher's tenant keys: what every client may use (`tenant_*`), and per-name overrides
//! in a `[tenants.NAME]` table with the same keys without the prefix, e.g.
//!
//! ```toml
//! tenant_max_jobs = 20
//! [tenants.alice]
//! max_jobs = 100
//! weight = 2
//! ```
//!
//! From the environment an override is `DISPY_TENANTS__ALICE__MAX_JOBS=100`; from the command
//! line, `--tenants '{ alice = { max_jobs = 100 } }'` (TOML).

use std::collections::BTreeMap;

use super::values::{size_within, Validator};
use super::{Origin, Setting};

/// What one tenant may use at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantLimits {
    /// Jobs queued or running; `None` is no limit.
    pub max_jobs: Option<u64>,
    /// Bytes in the dispatcher's spool (inputs, results not yet fetched); `None` is no limit.
    pub max_spool: Option<u64>,
    /// The most of the cluster's slots its chunks may hold, in (0, 1].
    pub max_slot_share: f64,
    /// Its weight in fair sharing between tenants, 1 to 1000.
    pub weight: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self { max_jobs: None, max_spool: None, max_slot_share: 1.0, weight: 1 }
    }
}

/// Every tenant's limits: the default and each named override (already merged with it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantSettings {
    /// For every client without an override.
    pub default: TenantLimits,
    /// By certificate name.
    pub by_name: BTreeMap<String, TenantLimits>,
}

/// The keys of a `[tenants.NAME]` table.
const OVERRIDE_KEYS: &[&str] = &["max_jobs", "max_spool", "max_slot_share", "weight"];

impl TenantSettings {
    /// Reads the `tenant_*` keys, then the `tenants` overrides on top of them.
    pub(super) fn read(v: &mut Validator) -> Self {
        let defaults = TenantLimits::default();
        let default = TenantLimits {
            max_jobs: v.check("tenant_max_jobs", defaults.max_jobs, |_, s| max_jobs(s)),
            max_spool: v.check("tenant_max_spool", defaults.max_spool, |_, s| max_spool(s)),
            max_slot_share: v.check("tenant_max_slot_share", defaults.max_slot_share, |_, s| slot_share(s)),
            weight: v.check("tenant_weight", defaults.weight, |_, s| weight(s)),
        };
        let by_name = v.check("tenants", BTreeMap::new(), |origin, s| overrides(origin, s, default));
        Self { default, by_name }
    }
}

/// The `tenants` table (TOML text from a flag), each entry merged over `default`.
fn overrides(_: &Origin, value: Setting, default: TenantLimits) -> Result<BTreeMap<String, TenantLimits>, String> {
    let table = match value {
        Setting::Table(table) => table,
        Setting::Text(text) => match parse_inline_table(&text)? {
            Setting::Table(table) => table,
            other => return Err(format!("expected a table such as {{ alice = {{ max_jobs = 10 }} }}, found {other}")),
        },
        other => return Err(format!("expected a table of client names, found {other}")),
    };
    let mut by_name = BTreeMap::new();
    for (name, entry) in table {
        let Setting::Table(keys) = entry else {
            return Err(format!("tenants.{name}: expected a table of {}, found {entry}", OVERRIDE_KEYS.join(", ")));
        };
        let mut limits = default;
        for (key, value) in keys {
            let at = |reason: String| format!("tenants.{name}.{key}: {reason}");
            match key.as_str() {
                "max_jobs" => limits.max_jobs = max_jobs(value).map_err(at)?,
                "max_spool" => limits.max_spool = max_spool(value).map_err(at)?,
                "max_slot_share" => limits.max_slot_share = slot_share(value).map_err(at)?,
                "weight" => limits.weight = weight(value).map_err(at)?,
                _ => {
                    let hint = crate::messages::closest(OVERRIDE_KEYS, &key)
                        .map(|k| format!(" (did you mean {k:?}?)"))
                        .unwrap_or_default();
                    return Err(format!("tenants.{name}: unknown key {key:?}{hint}"));
                }
            }
        }
        by_name.insert(name, limits);
    }
    Ok(by_name)
}

/// A flag's TOML inline table.
fn parse_inline_table(text: &str) -> Result<Setting, String> {
    let source = config::File::from_str(&format!("value = {text}"), config::FileFormat::Toml);
    config::Config::builder()
        .add_source(source)
        .build()
        .and_then(|c| c.get::<Setting>("value"))
        .map_err(|e| format!("expected a TOML table such as {{ alice = {{ max_jobs = 10 }} }}: {e}"))
}

/// Whether `value` is the word that lifts a limit.
fn unlimited(value: &Setting) -> bool {
    matches!(value, Setting::Text(text) if text.trim().eq_ignore_ascii_case("unlimited"))
}

fn max_jobs(value: Setting) -> Result<Option<u64>, String> {
    if unlimited(&value) {
        return Ok(None);
    }
    let number = match value {
        Setting::Integer(n) => n,
        Setting::Text(text) => text.trim().parse().map_err(|_| format!("expected a whole number or \"unlimited\", found {text:?}"))?,
        other => return Err(format!("expected a whole number or \"unlimited\", found {other}")),
    };
    u64::try_from(number).ok().filter(|n| *n >= 1).map(Some).ok_or_else(|| format!("must be at least 1, found {number}"))
}

fn max_spool(value: Setting) -> Result<Option<u64>, String> {
    if unlimited(&value) {
        return Ok(None);
    }
    size_within(value, 1, usize::MAX, "").map(|bytes| Some(bytes as u64))
}

fn slot_share(value: Setting) -> Result<f64, String> {
    let share = match value {
        Setting::Float(f) => f,
        Setting::Integer(n) => n as f64,
        Setting::Text(text) => text.trim().parse().map_err(|_| format!("expected a number such as 0.5, found {text:?}"))?,
        other => return Err(format!("expected a number such as 0.5, found {other}")),
    };
    if share > 0.0 && share <= 1.0 {
        Ok(share)
    } else {
        Err(format!("must be more than 0 and at most 1, found {share}"))
    }
}

fn weight(value: Setting) -> Result<u32, String> {
    super::values::integer_within(value, 1, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_dispatcher, DispatcherSettings, Sources};

    fn settings(toml: &str, env: &[(&str, &str)]) -> Result<TenantSettings, String> {
        load(Sources::new().toml("/etc/dispy/dispatcher.toml", toml).env(env.iter().copied()))
    }

    fn load(sources: Sources) -> Result<TenantSettings, String> {
        load_dispatcher(&sources).and_then(DispatcherSettings::try_from).map(|s| s.tenants).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_apply_to_everyone_and_overrides_to_their_names() {
        let toml = "tenant_max_jobs = 5\ntenant_max_spool = \"1GiB\"\ntenant_max_slot_share = 0.5\n\
                    [tenants.alice]\nmax_jobs = \"unlimited\"\nweight = 3\n";
        let tenants = settings(toml, &[("DISPY_TENANTS__BOB__MAX_SPOOL", "2MiB")]).expect("valid");
        assert_eq!(tenants.default, TenantLimits { max_jobs: Some(5), max_spool: Some(1 << 30), max_slot_share: 0.5, weight: 1 });
        let alice = tenants.by_name["alice"];
        assert_eq!((alice.max_jobs, alice.max_spool, alice.weight), (None, Some(1 << 30), 3), "unset keys inherit");
        assert_eq!(tenants.by_name["bob"].max_spool, Some(2 << 20));
        assert_eq!(settings("", &[]).expect("empty"), TenantSettings::default(), "no limits by default");
    }

    #[test]
    fn bad_tenant_keys_are_refused_with_where_and_why() {
        let err = settings("[tenants.alice]\nmax_job = 3\n", &[]).expect_err("typo");
        assert!(err.contains("tenants.alice: unknown key \"max_job\" (did you mean \"max_jobs\"?)"), "{err}");
        let err = settings("tenant_max_slot_share = 1.5\n", &[]).expect_err("share");
        assert!(err.contains("tenant_max_slot_share") && err.contains("at most 1"), "{err}");
        let err = settings("[tenants.bob]\nweight = 0\n", &[]).expect_err("weight");
        assert!(err.contains("tenants.bob.weight: must be between 1 and 1000"), "{err}");
        let err = settings("tenant_max_jobs = 0\n", &[]).expect_err("zero jobs");
        assert!(err.contains("must be at least 1"), "{err}");
    }

    #[test]
    fn a_flag_carries_overrides_as_toml() {
        let tenants = load(Sources::new().flag("tenants", Some("{ carol = { max_jobs = 2 } }"))).expect("valid");
        assert_eq!(tenants.by_name["carol"].max_jobs, Some(2));
        let err = load(Sources::new().flag("tenants", Some("{ carol = 2 }"))).expect_err("not a table");
        assert!(err.contains("flag --tenants") && err.contains("tenants.carol: expected a table"), "{err}");
    }
}
