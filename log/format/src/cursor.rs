//! A durable consumer position (one object per generation, see `log/README.md`).

use serde::{Deserialize, Serialize};

use crate::{Epoch, StreamId, acks::AckSet, json::Versioned};

/// One generation of a cursor. Generations are create-only numbered objects; the highest
/// generation is the cursor's state.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CursorState {
    pub version: u32,
    pub stream: StreamId,
    pub name: String,
    /// Generation number (equals the object's number in its series).
    pub generation: u64,
    /// Fencing epoch of the writer; zero when the cursor is not lease-guarded.
    #[serde(default)]
    pub epoch: Epoch,
    pub acks: AckSet,
    pub updated_ms: i64,
    /// State the cursor's owner keeps with its position (an MQTT session's subscriptions, for
    /// one), written atomically with the acks. Absent in cursors that carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

impl Versioned for CursorState {
    const WHAT: &'static str = "cursor";
    const VERSION: u32 = 1;
}
