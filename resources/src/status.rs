//! A resource's status: what became of it, kept apart from the resource (catalog kind
//! `<Kind>.status`, same name) so that writing status does not look like a change of the
//! resource to every adapter that follows the catalog.
//!
//! ```json
//! {"phase": "Ready", "observed_generation": 3, "updated": "2026-12-08T10:00:00Z"}
//! {"phase": "Failed", "message": "spec.mqtt_topics[0] \"a/#\" overlaps \"a/b\" of address other",
//!  "observed_generation": 4}
//! ```
//!
//! `observed_generation` is the generation (catalog revision) of the resource the status is
//! about: a status whose generation is older than the resource's says the newest change has
//! not been looked at yet (the resource is Pending).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Not looked at yet, or waiting for something it needs.
    Pending,
    /// In effect.
    Ready,
    /// Cannot take effect: `message` says why.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation of the resource this status is about.
    pub observed_generation: u64,
    /// When it was written (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
}

/// The catalog kind a kind's status is kept under.
pub fn kind_of(kind: &str) -> String {
    format!("{kind}.status")
}

impl Status {
    /// Pending: what a resource shows before anything has looked at its newest generation.
    pub fn pending(generation: u64) -> Self {
        Self {
            phase: Phase::Pending,
            message: None,
            observed_generation: generation,
            updated: None,
        }
    }

    /// What to show for a resource at `generation` whose stored status is `stored`: the stored
    /// one if it is about this generation, else Pending.
    pub fn shown(stored: Option<Status>, generation: u64) -> Self {
        match stored {
            Some(s) if s.observed_generation >= generation => s,
            _ => Self::pending(generation),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_status_shows_pending() {
        let ready = Status {
            phase: Phase::Ready,
            message: None,
            observed_generation: 2,
            updated: None,
        };
        assert_eq!(Status::shown(Some(ready.clone()), 2), ready);
        assert_eq!(Status::shown(Some(ready), 3).phase, Phase::Pending);
        assert_eq!(Status::shown(None, 1), Status::pending(1));
        let json =
            serde_json::json!({"phase": "Failed", "message": "no", "observed_generation": 4});
        let s: Status = serde_json::from_value(json.clone()).expect("parses");
        assert_eq!(serde_json::to_value(&s).expect("json"), json);
    }
}
