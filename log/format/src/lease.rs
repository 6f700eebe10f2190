//! Lease claims: time-bounded, epoch-numbered ownership of a named resource.

use serde::{Deserialize, Serialize};

use crate::{Epoch, json::Versioned};

/// One version of a lease. Versions are create-only numbered objects; an acquisition bumps the
/// epoch, a renewal or release keeps it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub version: u32,
    pub name: String,
    /// Number of this object in the lease's series.
    pub revision: u64,
    pub epoch: Epoch,
    /// Who holds it (a process / adapter id); free text for operators.
    pub holder: String,
    /// Unique id of the holder instance; lets a holder recognise its own claim.
    pub holder_id: String,
    /// Wall-clock expiry, milliseconds since the Unix epoch.
    pub expires_ms: i64,
    /// Set when the holder gave the lease up before expiry.
    #[serde(default)]
    pub released: bool,
}

impl LeaseRecord {
    /// Whether someone else may claim it at `now_ms`.
    pub fn is_free(&self, now_ms: i64) -> bool {
        self.released || now_ms >= self.expires_ms
    }
}

impl Versioned for LeaseRecord {
    const WHAT: &'static str = "lease";
    const VERSION: u32 = 1;
}
