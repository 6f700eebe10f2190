use bytes::Bytes;

use crate::{Offset, StreamId};

/// One message as received by an adapter. Nothing here is re-encoded on the way through.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Record {
    /// Milliseconds since the Unix epoch, set by the appender.
    pub timestamp_ms: i64,
    /// Optional key or topic (an MQTT topic name, a partition key).
    pub key: Option<Bytes>,
    /// Protocol headers / properties exactly as received (opaque to the log).
    pub headers: Option<Bytes>,
    /// The payload (or, for AMQP, the bare message sections) exactly as received.
    pub payload: Bytes,
}

impl Record {
    pub fn new(timestamp_ms: i64, payload: impl Into<Bytes>) -> Self {
        Self {
            timestamp_ms,
            key: None,
            headers: None,
            payload: payload.into(),
        }
    }

    /// Bytes this record occupies in a segment, roughly (used for size triggers and retention).
    pub fn size(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.headers.as_ref().map_or(0, Bytes::len)
            + 24
    }
}

/// A record with its place in the log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredRecord {
    pub stream: StreamId,
    pub offset: Offset,
    pub record: Record,
}
