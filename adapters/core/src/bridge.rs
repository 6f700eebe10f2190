//! Cross-protocol delivery: a message stored by one protocol, delivered to a client of the
//! other. Messages stay stored as their sender sent them and are mapped at delivery, through
//! an [`Envelope`] that has no protocol types.
//!
//! Each protocol contributes a decoder (its record → an envelope) and maps envelopes to its
//! own messages. The process wires the decoders into one [`Bridge`] and passes it to every
//! adapter (`wharf/src/tenants.rs`), so neither adapter depends on the other and no global
//! hook is set. The mapping of each field is tabled in `wharf_amqp::bridge`.

use bytes::Bytes;
use wharf_log_format::StoredRecord;

use crate::record::{Layout, Protocol};

/// A topic message as both protocols understand it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The MQTT topic (AMQP: the address `/topic/<topic>`).
    pub topic: String,
    pub payload: Bytes,
    /// Sent at most once (MQTT QoS 0, a pre-settled AMQP transfer).
    pub at_most_once: bool,
    /// Seconds it lives after `timestamp_ms`.
    pub expiry_s: Option<u32>,
    pub content_type: Option<String>,
    /// Where replies go, as a topic.
    pub response_topic: Option<String>,
    pub correlation: Option<Bytes>,
    /// Name/value pairs in order (MQTT user properties, AMQP application properties as text).
    pub user_properties: Vec<(String, String)>,
    /// When it was stored (ms since the Unix epoch).
    pub timestamp_ms: i64,
    /// Who sent it (MQTT: the client id; from AMQP: `amqp`).
    pub origin: String,
}

/// One protocol's decoder: its record as an envelope, `None` if it does not map.
pub type Decode = fn(&StoredRecord) -> Option<Envelope>;

/// The decoders of the protocols a process serves. Empty: no cross-protocol delivery.
#[derive(Clone, Copy, Default)]
pub struct Bridge {
    mqtt: Option<Decode>,
    amqp: Option<Decode>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("mqtt", &self.mqtt.is_some())
            .field("amqp", &self.amqp.is_some())
            .finish()
    }
}

impl Bridge {
    /// Decode records of `protocol` with `decode`.
    pub fn with(mut self, protocol: Protocol, decode: Decode) -> Self {
        match protocol {
            Protocol::Mqtt => self.mqtt = Some(decode),
            Protocol::Amqp => self.amqp = Some(decode),
        }
        self
    }

    /// `r` as an envelope, by the decoder of the protocol that stored it; `None` if its
    /// layout is unknown, no decoder is wired for it, or it does not map.
    pub fn decode(&self, r: &StoredRecord) -> Option<Envelope> {
        let decode = match Layout::of(&r.record)?.protocol() {
            Protocol::Mqtt => self.mqtt?,
            Protocol::Amqp => self.amqp?,
        };
        decode(r)
    }
}

#[cfg(test)]
mod tests {
    use wharf_log_format::{Offset, Record};

    use super::*;

    fn stored(first: u8) -> StoredRecord {
        StoredRecord {
            stream: crate::names::default_stream(),
            offset: Offset(0),
            record: Record {
                timestamp_ms: 0,
                key: None,
                headers: Some(Bytes::from(vec![first, 0])),
                payload: Bytes::new(),
            },
        }
    }

    #[test]
    fn records_go_to_their_protocols_decoder() {
        fn mqtt(_: &StoredRecord) -> Option<Envelope> {
            Some(Envelope {
                origin: "mqtt".into(),
                ..Default::default()
            })
        }
        let bridge = Bridge::default().with(Protocol::Mqtt, mqtt);
        assert_eq!(
            bridge.decode(&stored(2)).map(|e| e.origin),
            Some("mqtt".into())
        );
        assert_eq!(
            bridge.decode(&stored(1)).map(|e| e.origin),
            Some("mqtt".into())
        );
        assert_eq!(bridge.decode(&stored(0x81)), None, "no AMQP decoder wired");
        assert_eq!(bridge.decode(&stored(7)), None, "unknown layout");
        assert_eq!(Bridge::default().decode(&stored(2)), None);
    }
}
