//! Which protocol stored a record: the first header byte, one table for every layout.
//!
//! A persisted contract: these values are in existing stores. Each protocol owns the rest of
//! its layout (`wharf_mqtt::message`, `wharf_amqp::message`); a record whose first header byte
//! is not in this table (or that has no headers) is a plain payload (`wharf produce`).

use wharf_log_format::Record;

/// The record layouts, by their first header byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Layout {
    /// MQTT, version 1: `[1, qos, retain]` (still read, no longer written).
    MqttV1 = 1,
    /// MQTT, version 2: `[2, qos, flags, origin, properties...]`.
    MqttV2 = 2,
    /// AMQP, version 1: `[0x81, flags]`, the payload the message's sections.
    AmqpV1 = 0x81,
}

/// The protocol whose layout a record has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Mqtt,
    Amqp,
}

impl Layout {
    /// The layout of `record`, if it has one of the table's.
    pub fn of(record: &Record) -> Option<Self> {
        Self::from_byte(*record.headers.as_ref()?.first()?)
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::MqttV1),
            2 => Some(Self::MqttV2),
            0x81 => Some(Self::AmqpV1),
            _ => None,
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Self::MqttV1 | Self::MqttV2 => Protocol::Mqtt,
            Self::AmqpV1 => Protocol::Amqp,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn layout_bytes_are_stable() {
        // Persisted: these exact bytes are in existing stores.
        assert_eq!(
            [Layout::MqttV1, Layout::MqttV2, Layout::AmqpV1].map(|l| l as u8),
            [1, 2, 0x81]
        );
        for b in 0..=255u8 {
            if let Some(l) = Layout::from_byte(b) {
                assert_eq!(l as u8, b);
            }
        }
        let r = |h: Option<&'static [u8]>| Record {
            timestamp_ms: 0,
            key: None,
            headers: h.map(Bytes::from_static),
            payload: Bytes::new(),
        };
        assert_eq!(Layout::of(&r(Some(&[0x81, 0]))), Some(Layout::AmqpV1));
        assert_eq!(
            Layout::of(&r(Some(&[2, 1, 0]))).map(Layout::protocol),
            Some(Protocol::Mqtt)
        );
        assert_eq!(Layout::of(&r(Some(&[]))), None);
        assert_eq!(Layout::of(&r(None)), None);
        assert_eq!(Layout::of(&r(Some(&[9]))), None);
    }
}
