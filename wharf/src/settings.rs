//! Process settings: one serde struct, defaults, a TOML file, environment overrides, validated
//! at start-up so that bad configuration fails fast with the field's name.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use wharf_log::LogSettings;

/// Everything a `wharf` process can be configured with.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Store URL: `file://DIR`, `s3://bucket/prefix`, `memory://`.
    pub store: Option<String>,
    pub log: LogSettings,
    /// Retention of streams whose address sets none.
    pub retention: RetentionSettings,
}

/// Default retention (unlimited unless set). Addresses override it with `spec.retention`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Records older than this are trimmed (at segment granularity), e.g. `"7d"`.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<std::time::Duration>,
    /// A stream is trimmed (oldest segments first) to stay under this many bytes.
    pub max_bytes: Option<u64>,
}

impl Settings {
    /// Load `path` (TOML) if given, then validate.
    pub fn load(path: Option<&Path>) -> Result<Settings> {
        let settings = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read settings file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid settings file {}", p.display()))?
            }
            None => Settings::default(),
        };
        settings.log.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fields_are_named() {
        let err = toml::from_str::<Settings>("[log]\nlinger = \"soon\"\n").expect_err("bad");
        assert!(err.to_string().contains("linger"), "{err}");
        let err = toml::from_str::<Settings>("stor = \"x\"\n").expect_err("unknown");
        assert!(err.to_string().contains("stor"), "{err}");
        let ok: Settings = toml::from_str(
            "store = \"memory://\"\n[log]\nlinger = \"5ms\"\n[retention]\nmax_age = \"7d\"\n",
        )
        .expect("ok");
        assert_eq!(ok.store.as_deref(), Some("memory://"));
        assert_eq!(
            ok.retention.max_age,
            Some(std::time::Duration::from_secs(7 * 86400))
        );
    }
}
