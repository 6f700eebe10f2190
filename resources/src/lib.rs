//! # wharf-resources
//!
//! Wharf's configuration resources as types: the one place a resource is parsed and
//! validated (the CLI before it writes one to the catalog, the adapters and housekeeping when
//! they read one back), with JSON Schema generated from the same types (`schemars`) for the
//! API and, next, the Kubernetes CRDs. Errors name the field: `spec.max_delivery: must be at
//! least 1`.
//!
//! Kinds so far: [`Address`]. A resource is stored in the catalog as the JSON it was applied
//! with (fields this crate does not know are kept, not refused: the catalog format does not
//! change); parsing gives a typed, checked view of it.

pub mod address;
pub mod topic;

pub use address::{Address, AddressSpec, AddressType, Metadata};

/// The `apiVersion` of every Wharf resource.
pub const API_VERSION: &str = "wharf/v1";

/// A resource that does not parse or validate: `field` is its path (`spec.max_delivery`),
/// `problem` what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for Invalid {}

/// Deserialize `value` as `T`, naming the field that does not fit.
fn typed<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "(resource)".to_string()
        } else {
            path
        };
        let problem = e.into_inner().to_string();
        // serde says "invalid type: string \"5\", expected u32": keep what it found and wanted.
        Invalid::new(field, problem)
    })
}
