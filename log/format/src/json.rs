//! Shared helpers for the versioned JSON objects (checkpoints, cursors, leases, catalog).

use serde::{Serialize, de::DeserializeOwned};

use crate::FormatError;

/// A JSON object kind with a format version written as its `"version"` field.
pub trait Versioned: Serialize + DeserializeOwned {
    /// Human name used in errors ("checkpoint", "cursor", ...).
    const WHAT: &'static str;
    /// The newest version this build writes and reads.
    const VERSION: u32;
}

/// Encode a versioned object as JSON (indented: cursors, leases and catalog entries are small
/// and read by people).
pub fn encode<T: Versioned>(value: &T) -> Vec<u8> {
    // Serialising plain structs of strings and integers cannot fail.
    serde_json::to_vec_pretty(value).unwrap_or_default()
}

/// Encode a versioned object as compact JSON (for large objects such as checkpoints).
pub fn encode_compact<T: Versioned>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decode a versioned object, checking its version before its shape.
pub fn decode<T: Versioned>(bytes: &[u8]) -> Result<T, FormatError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        version: u32,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| FormatError::Corrupt {
        what: T::WHAT,
        detail: format!("no readable \"version\": {e}"),
    })?;
    if probe.version == 0 || probe.version > T::VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: T::WHAT,
            found: probe.version,
            supported: T::VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| FormatError::Corrupt {
        what: T::WHAT,
        detail: e.to_string(),
    })
}
