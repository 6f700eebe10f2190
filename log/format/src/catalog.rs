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

/// Validate a catalog kind or name for use in object keys.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
