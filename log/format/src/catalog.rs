//! Configuration objects (addresses, plans, tenants) kept in the store.

use serde::{Deserialize, Serialize};

use crate::json::Versioned;

/// One revision of a configuration object. Revisions are create-only numbered objects; the
/// highest revision is current, and a `deleted` revision is a tombstone.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub version: u32,
    /// Resource kind, e.g. `Address`, `Plan`, `Tenant`.
    pub kind: String,
    pub name: String,
    pub revision: u64,
    #[serde(default)]
    pub deleted: bool,
    pub updated_ms: i64,
    /// The resource as the user declared it (apiVersion/kind/metadata/spec).
    #[serde(default)]
    pub body: serde_json::Value,
}

impl Versioned for CatalogEntry {
    const WHAT: &'static str = "catalog entry";
    const VERSION: u32 = 1;
}

/// The tenant every client and resource belongs to unless it says otherwise; its log is the
/// store root (other tenants' logs live under `tenants/<name>/`).
pub const DEFAULT_TENANT: &str = "default";

/// What [`valid_tenant`] accepts, for error messages.
pub const TENANT_RULE: &str = "1-63 of a-z 0-9 -, not starting with '-'";

/// Validate a tenant name: 1–63 of `a-z 0-9 -`, starting with a letter or digit (a DNS label,
/// as a Kubernetes namespace), so that it fits in object keys, URLs and resource names alike.
pub fn valid_tenant(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Validate a catalog kind or name for use in object keys.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_dns_labels() {
        for ok in ["default", "acme", "a", "team-7", &"x".repeat(63)] {
            assert!(valid_tenant(ok), "{ok}");
        }
        for bad in [
            "",
            "-acme",
            "Acme",
            "a_b",
            "a.b",
            "a/b",
            "ü",
            &"x".repeat(64),
        ] {
            assert!(!valid_tenant(bad), "{bad}");
        }
    }
}
