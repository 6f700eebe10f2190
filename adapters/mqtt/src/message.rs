//! An MQTT application message as Wharf stores it: one log record per PUBLISH.
//!
//! Record layout (a persisted contract; `log/README.md` links here):
//! - `key`: the topic name, UTF-8;
//! - `payload`: the application payload, byte for byte;
//! - `timestamp_ms`: when the adapter stored it (message expiry counts from here);
//! - `headers`, version 2:
//!   `[2, qos, flags, origin_len (u16 BE), origin (UTF-8), properties...]` where `flags` bit 0 is
//!   retain; bit 1 marks a snapshot copy of a retained message (only in `mqtt-retained`,
//!   written by compaction, [`crate::retained`]) and is followed by the offset the snapshot is
//!   as of (u64 BE) before `origin_len`; `origin` is the publishing client's identifier (for MQTT 5 no-local), and
//!   `properties` are the MQTT 5 publish properties a subscriber receives, in MQTT 5 wire
//!   format without the length prefix (§2.2.2.2): payload format indicator (0x01), message
//!   expiry interval (0x02), content type (0x03), response topic (0x08), correlation data
//!   (0x09), user properties (0x26, in the order received).
//! - Version 1 (`[1, qos, retain]`, the first slice) is still read.

use bytes::{Buf, BufMut, Bytes, BytesMut};
pub use mqttbytes::QoS;
use wharf_adapter_core::{
    bridge::{Bridge, Envelope},
    record::{Layout, Protocol},
};
use wharf_log_format::{Record, StoredRecord};

/// The publish properties that travel with a message (MQTT 5 §3.3.2.3). MQTT 3.1.1 clients
/// publish none and receive none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    /// Seconds the message lives after it was stored.
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
}

/// A message as stored and delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    pub payload: Bytes,
    pub properties: Properties,
    /// Client identifier of the publisher.
    pub origin: String,
    /// When it was stored (ms since the Unix epoch); 0 before it is stored.
    pub timestamp_ms: i64,
}

impl Message {
    pub fn new(topic: impl Into<String>, qos: QoS, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            qos,
            retain: false,
            payload: payload.into(),
            properties: Properties::default(),
            origin: String::new(),
            timestamp_ms: 0,
        }
    }

    /// Seconds left to live at `now_ms`: `None` if it never expires, `Some(0)` if it expired.
    pub fn remaining_expiry(&self, now_ms: i64) -> Option<u32> {
        let e = self.properties.message_expiry_interval?;
        let age_s = (now_ms.saturating_sub(self.timestamp_ms).max(0) / 1000) as u64;
        Some(u64::from(e).saturating_sub(age_s) as u32)
    }

    /// Whether it expired by `now_ms` (its interval has fully elapsed).
    pub fn expired(&self, now_ms: i64) -> bool {
        match self.properties.message_expiry_interval {
            Some(e) => now_ms.saturating_sub(self.timestamp_ms) >= i64::from(e) * 1000,
            None => false,
        }
    }

    pub fn to_record(&self, now_ms: i64) -> Record {
        self.encode(now_ms, None)
    }

    /// A snapshot copy of this retained message, as of offset `as_of` of `mqtt-retained`
    /// (it keeps the time it was first stored: expiry counts from then).
    pub fn to_snapshot_record(&self, as_of: u64) -> Record {
        self.encode(self.timestamp_ms, Some(as_of))
    }

    fn encode(&self, now_ms: i64, snapshot_of: Option<u64>) -> Record {
        let mut h = BytesMut::with_capacity(13 + self.origin.len());
        h.put_u8(HEADER_VERSION);
        h.put_u8(self.qos as u8);
        match snapshot_of {
            Some(as_of) => {
                h.put_u8(u8::from(self.retain) | FLAG_SNAPSHOT);
                h.put_u64(as_of);
            }
            None => h.put_u8(u8::from(self.retain)),
        }
        let origin = truncate_utf8(&self.origin, u16::MAX as usize);
        h.put_u16(origin.len() as u16);
        h.put_slice(origin.as_bytes());
        write_properties(&self.properties, &mut h);
        Record {
            timestamp_ms: now_ms,
            key: Some(Bytes::from(self.topic.clone().into_bytes())),
            headers: Some(h.freeze()),
            payload: self.payload.clone(),
        }
    }

    /// A stored record as an MQTT message, mapped through `bridge` if another protocol
    /// stored it (cross-protocol delivery); `Err` says why it is not one.
    pub fn decode(r: &StoredRecord, bridge: &Bridge) -> Result<Self, &'static str> {
        match Layout::of(&r.record).map(Layout::protocol) {
            Some(Protocol::Amqp) => bridge
                .decode(r)
                .map(Self::from_envelope)
                .ok_or("record of another protocol that does not convert"),
            _ => Self::from_record(r),
        }
    }

    /// A record MQTT stored as an MQTT message; `Err` says why it is not one (another
    /// protocol's records included: [`Message::decode`] maps those).
    pub fn from_record(r: &StoredRecord) -> Result<Self, &'static str> {
        let key = r.record.key.as_ref().ok_or("no topic")?;
        let topic = std::str::from_utf8(key).map_err(|_| "topic not UTF-8")?;
        let mut h = r.record.headers.clone().ok_or("no headers")?;
        if Layout::of(&r.record).map(Layout::protocol) != Some(Protocol::Mqtt) {
            return Err("record of another protocol");
        }
        if h.len() < 3 {
            return Err("headers too short");
        }
        let version = h.get_u8();
        let qos = mqttbytes::qos(h.get_u8()).map_err(|_| "bad QoS")?;
        let flags = h.get_u8();
        let retain = flags & 1 == 1;
        if version == HEADER_VERSION && flags & FLAG_SNAPSHOT != 0 {
            if h.remaining() < 8 {
                return Err("headers too short");
            }
            h.advance(8);
        }
        let mut m = Message {
            topic: topic.to_string(),
            qos,
            retain,
            payload: r.record.payload.clone(),
            properties: Properties::default(),
            origin: String::new(),
            timestamp_ms: r.record.timestamp_ms,
        };
        match version {
            1 => {}
            HEADER_VERSION => {
                m.origin = read_string(&mut h)?;
                m.properties = read_properties(&mut h)?;
            }
            _ => return Err("unknown header version"),
        }
        Ok(m)
    }
}

impl Message {
    /// The message as the other protocol sees it ([`wharf_adapter_core::bridge`]).
    pub fn to_envelope(&self) -> Envelope {
        let p = &self.properties;
        Envelope {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            at_most_once: self.qos == QoS::AtMostOnce,
            expiry_s: p.message_expiry_interval,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
            timestamp_ms: self.timestamp_ms,
            origin: self.origin.clone(),
        }
    }

    /// Another protocol's message, delivered to MQTT: QoS 0 if it was sent at most once,
    /// else QoS 1 (capped by the subscription); never retained.
    pub fn from_envelope(e: Envelope) -> Self {
        Self {
            topic: e.topic,
            qos: if e.at_most_once {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            retain: false,
            payload: e.payload,
            properties: Properties {
                payload_format_indicator: None,
                message_expiry_interval: e.expiry_s,
                content_type: e.content_type,
                response_topic: e.response_topic,
                correlation_data: e.correlation,
                user_properties: e.user_properties,
            },
            origin: e.origin,
            timestamp_ms: e.timestamp_ms,
        }
    }
}

/// MQTT's decoder for the bridge: a record MQTT stored, as an envelope.
pub fn envelope(r: &StoredRecord) -> Option<Envelope> {
    Message::from_record(r).ok().map(|m| m.to_envelope())
}

const HEADER_VERSION: u8 = Layout::MqttV2 as u8;
/// Flags bit: a snapshot copy of a retained message, followed by the offset it is as of.
const FLAG_SNAPSHOT: u8 = 0b10;

/// If `r` is a snapshot copy of a retained message: the offset of `mqtt-retained` it is as of.
pub fn snapshot_of(r: &StoredRecord) -> Option<u64> {
    let h = r.record.headers.as_ref()?;
    if h.len() < 11 || h[0] != HEADER_VERSION || h[2] & FLAG_SNAPSHOT == 0 {
        return None;
    }
    Some(u64::from_be_bytes(h[3..11].try_into().ok()?))
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_string(s: &str, out: &mut BytesMut) {
    let s = truncate_utf8(s, u16::MAX as usize);
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

fn write_properties(p: &Properties, out: &mut BytesMut) {
    if let Some(v) = p.payload_format_indicator {
        out.put_u8(0x01);
        out.put_u8(v);
    }
    if let Some(v) = p.message_expiry_interval {
        out.put_u8(0x02);
        out.put_u32(v);
    }
    if let Some(v) = &p.content_type {
        out.put_u8(0x03);
        put_string(v, out);
    }
    if let Some(v) = &p.response_topic {
        out.put_u8(0x08);
        put_string(v, out);
    }
    if let Some(v) = &p.correlation_data {
        out.put_u8(0x09);
        let v = &v[..v.len().min(u16::MAX as usize)];
        out.put_u16(v.len() as u16);
        out.put_slice(v);
    }
    for (k, v) in &p.user_properties {
        out.put_u8(0x26);
        put_string(k, out);
        put_string(v, out);
    }
}

fn read_bytes(h: &mut Bytes) -> Result<Bytes, &'static str> {
    if h.remaining() < 2 {
        return Err("truncated length");
    }
    let n = h.get_u16() as usize;
    if h.remaining() < n {
        return Err("truncated value");
    }
    Ok(h.split_to(n))
}

fn read_string(h: &mut Bytes) -> Result<String, &'static str> {
    String::from_utf8(read_bytes(h)?.to_vec()).map_err(|_| "string not UTF-8")
}

fn read_properties(h: &mut Bytes) -> Result<Properties, &'static str> {
    let mut p = Properties::default();
    while h.has_remaining() {
        match h.get_u8() {
            0x01 if h.has_remaining() => p.payload_format_indicator = Some(h.get_u8()),
            0x02 if h.remaining() >= 4 => p.message_expiry_interval = Some(h.get_u32()),
            0x03 => p.content_type = Some(read_string(h)?),
            0x08 => p.response_topic = Some(read_string(h)?),
            0x09 => p.correlation_data = Some(read_bytes(h)?),
            0x26 => {
                let k = read_string(h)?;
                p.user_properties.push((k, read_string(h)?));
            }
            _ => return Err("unknown or truncated property"),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use wharf_log_format::Offset;

    use super::*;

    fn stored(r: Record) -> StoredRecord {
        StoredRecord {
            stream: wharf_adapter_core::names::default_stream(),
            offset: Offset(7),
            record: r,
        }
    }

    fn full() -> Message {
        Message {
            topic: "a/b".into(),
            qos: QoS::ExactlyOnce,
            retain: true,
            payload: Bytes::from_static(b"\x00\xffpayload"),
            properties: Properties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(30),
                content_type: Some("text/plain".into()),
                response_topic: Some("replies/é".into()),
                correlation_data: Some(Bytes::from_static(b"\x01\x02")),
                user_properties: vec![("z".into(), "1".into()), ("a".into(), "2".into())],
            },
            origin: "client-1".into(),
            timestamp_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn records_round_trip() {
        for m in [full(), {
            let mut m = Message::new("t", QoS::AtMostOnce, Bytes::new());
            m.timestamp_ms = 5;
            m
        }] {
            let r = m.to_record(m.timestamp_ms);
            assert_eq!(Message::from_record(&stored(r)), Ok(m));
        }
    }

    /// The version 2 header bytes are a contract: this is what `full()` stores.
    #[test]
    fn header_bytes_are_stable() {
        let r = full().to_record(0);
        let expected: &[u8] = b"\x02\x02\x01\x00\x08client-1\
            \x01\x01\x02\x00\x00\x00\x1e\x03\x00\x0atext/plain\x08\x00\x0areplies/\xc3\xa9\
            \x09\x00\x02\x01\x02\x26\x00\x01z\x00\x011\x26\x00\x01a\x00\x012";
        assert_eq!(r.headers.as_deref(), Some(expected));
    }

    /// Snapshot copies: the same message (stored time kept), the offset they are as of, and
    /// the header bytes (a contract too).
    #[test]
    fn snapshot_records_round_trip() {
        let m = full();
        let r = stored(m.to_snapshot_record(0x0102));
        assert_eq!(Message::from_record(&r), Ok(m.clone()));
        assert_eq!(snapshot_of(&r), Some(0x0102));
        assert_eq!(snapshot_of(&stored(m.to_record(9))), None);
        let h = r.record.headers.as_deref().expect("headers");
        assert_eq!(
            &h[..13],
            b"\x02\x02\x03\x00\x00\x00\x00\x00\x00\x01\x02\x00\x08"
        );
        for cut in 0..h.len() {
            let mut short = r.clone();
            short.record.headers = Some(Bytes::copy_from_slice(&h[..cut]));
            let _ = (Message::from_record(&short), snapshot_of(&short));
        }
    }

    #[test]
    fn version_1_records_are_read() {
        let r = Record {
            timestamp_ms: 3,
            key: Some(Bytes::from_static(b"x/y")),
            headers: Some(Bytes::from_static(&[1, 1, 1])),
            payload: Bytes::from_static(b"p"),
        };
        let m = Message::from_record(&stored(r)).expect("v1");
        assert_eq!(
            (m.topic.as_str(), m.qos, m.retain),
            ("x/y", QoS::AtLeastOnce, true)
        );
    }

    #[test]
    fn damaged_headers_are_refused_not_panicked_on() {
        let good = full().to_record(0).headers.expect("headers");
        for cut in 0..good.len() {
            let r = Record {
                timestamp_ms: 0,
                key: Some(Bytes::from_static(b"t")),
                headers: Some(good.slice(..cut)),
                payload: Bytes::new(),
            };
            // Some prefixes are themselves valid messages; none may panic.
            let _ = Message::from_record(&stored(r));
        }
        let r = Record {
            timestamp_ms: 0,
            key: Some(Bytes::from_static(b"t")),
            headers: Some(Bytes::from_static(&[9, 0, 0])),
            payload: Bytes::new(),
        };
        assert!(Message::from_record(&stored(r)).is_err());
    }

    /// Across the bridge: every property AMQP can carry survives; QoS 1 and 2 are "not at
    /// most once" and come back as QoS 1; retain and the payload format indicator stay MQTT's.
    #[test]
    fn envelopes_carry_the_properties() {
        let m = full();
        let e = m.to_envelope();
        assert_eq!(
            (e.topic.as_str(), e.at_most_once, e.expiry_s),
            ("a/b", false, Some(30))
        );
        let back = Message::from_envelope(e);
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert!(!back.retain);
        assert_eq!(back.properties.payload_format_indicator, None);
        let mut expected = m.properties.clone();
        expected.payload_format_indicator = None;
        assert_eq!(back.properties, expected);
        assert_eq!((&back.payload, &back.origin), (&m.payload, &m.origin));
        let q0 = Message::new("t", QoS::AtMostOnce, "x");
        assert!(q0.to_envelope().at_most_once);
        assert_eq!(
            Message::from_envelope(q0.to_envelope()).qos,
            QoS::AtMostOnce
        );
        // MQTT's decoder reads only MQTT records; decode() sends others through the bridge.
        let mut amqp = stored(m.to_record(0));
        amqp.record.headers = Some(Bytes::from_static(&[0x81, 0]));
        assert!(envelope(&amqp).is_none());
        assert!(Message::decode(&amqp, &Bridge::default()).is_err());
        fn fixed(_: &StoredRecord) -> Option<Envelope> {
            Some(Envelope {
                topic: "from/amqp".into(),
                ..Default::default()
            })
        }
        let bridge = Bridge::default().with(Protocol::Amqp, fixed);
        assert_eq!(
            Message::decode(&amqp, &bridge).map(|m| m.topic),
            Ok("from/amqp".to_string())
        );
        assert_eq!(
            Message::decode(&stored(m.to_record(m.timestamp_ms)), &bridge),
            Ok(m)
        );
    }

    #[test]
    fn expiry_counts_down_from_storage() {
        let m = full();
        let t = m.timestamp_ms;
        assert_eq!(m.remaining_expiry(t + 10_500), Some(20));
        assert!(!m.expired(t + 29_999));
        assert!(m.expired(t + 30_000));
        assert_eq!(
            Message::new("t", QoS::AtMostOnce, "").remaining_expiry(t),
            None
        );
    }
}
