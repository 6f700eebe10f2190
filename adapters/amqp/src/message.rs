//! An AMQP message as Wharf stores it: one log record per delivery, the sections exactly as
//! they arrived.
//!
//! Record layout (a persisted contract; `log/README.md` links here):
//! - `key`: the address the message was sent to, UTF-8 (for `/topic/<topic>` addresses, which
//!   live in the MQTT default topic address, the topic);
//! - `payload`: the transfer payload — every section (header, delivery and message
//!   annotations, properties, application properties, body, footer) byte for byte;
//! - `timestamp_ms`: when the adapter stored it (the header's `ttl` counts from here);
//! - `headers`: `[0x81, flags]` — `0x81` says "AMQP record, layout version 1"; `flags` bit 0:
//!   the sender settled it before sending (at most once).
//!
//! MQTT records (`adapters/mqtt/src/message.rs`) start their headers with 1 or 2, so the
//! first byte tells the two apart (`wharf_adapter_core::record`).

use bytes::{BufMut, Bytes, BytesMut};
use fe2o3_amqp_types::messaging::{Header, Properties};
use wharf_adapter_core::record::Layout;
use wharf_log_format::Record;

use crate::frame::{descriptor_code, value_len};

/// First header byte of an AMQP record (the table of every layout is
/// `wharf_adapter_core::record::Layout`).
pub const RECORD_V1: u8 = Layout::AmqpV1 as u8;

/// Section descriptor codes (spec part 3.2).
pub mod code {
    pub const HEADER: u64 = 0x70;
    pub const DELIVERY_ANNOTATIONS: u64 = 0x71;
    pub const MESSAGE_ANNOTATIONS: u64 = 0x72;
    pub const PROPERTIES: u64 = 0x73;
    pub const APPLICATION_PROPERTIES: u64 = 0x74;
    pub const DATA: u64 = 0x75;
    pub const AMQP_SEQUENCE: u64 = 0x76;
    pub const AMQP_VALUE: u64 = 0x77;
    pub const FOOTER: u64 = 0x78;
}

/// Where each section of an encoded message is: (descriptor code, byte range).
#[derive(Clone, Debug, Default)]
pub struct Sections {
    pub sections: Vec<(u64, std::ops::Range<usize>)>,
}

/// Why a payload is not a message.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl Sections {
    /// Find the sections of `payload`. Every section must be a described value with a
    /// section descriptor, in the spec's order.
    pub fn parse(payload: &[u8]) -> Result<Sections, Malformed> {
        let mut sections = Vec::new();
        let mut at = 0;
        let mut last = 0;
        while at < payload.len() {
            let rest = &payload[at..];
            let len = value_len(rest)
                .ok_or_else(|| Malformed(format!("undecodable section at byte {at}")))?;
            let code = descriptor_code(rest)
                .filter(|c| (code::HEADER..=code::FOOTER).contains(c))
                .ok_or_else(|| Malformed(format!("byte {at} does not start a section")))?;
            let body_like = (code::DATA..=code::AMQP_VALUE).contains(&code);
            if code < last || (code == last && !(body_like && code != code::AMQP_VALUE)) {
                return Err(Malformed(format!("section {code:#x} out of order")));
            }
            last = code;
            sections.push((code, at..at + len));
            at += len;
        }
        Ok(Sections { sections })
    }

    fn get<'a>(&self, payload: &'a [u8], code: u64) -> Option<&'a [u8]> {
        self.sections
            .iter()
            .find(|(c, _)| *c == code)
            .and_then(|(_, r)| payload.get(r.clone()))
    }

    pub fn header(&self, payload: &[u8]) -> Option<Header> {
        serde_amqp::from_slice(self.get(payload, code::HEADER)?).ok()
    }

    pub fn properties(&self, payload: &[u8]) -> Option<Properties> {
        serde_amqp::from_slice(self.get(payload, code::PROPERTIES)?).ok()
    }
}

/// A record for a message sent to `address`, stored at `now_ms`.
pub fn record(address: &str, payload: Bytes, presettled: bool, now_ms: i64) -> Record {
    let mut r = Record::new(now_ms, payload);
    r.key = Some(Bytes::copy_from_slice(address.as_bytes()));
    r.headers = Some(Bytes::from(vec![RECORD_V1, u8::from(presettled)]));
    r
}

/// Whether a record was stored by the AMQP adapter.
pub fn is_amqp(record: &Record) -> bool {
    record.headers.as_ref().and_then(|h| h.first()) == Some(&RECORD_V1)
}

/// When the message expires (ms since the Unix epoch), from the header's ttl counted from
/// when it was stored, or the properties' absolute-expiry-time, whichever comes first.
pub fn expires_ms(record: &Record) -> Option<i64> {
    let sections = Sections::parse(&record.payload).ok()?;
    let ttl = sections
        .header(&record.payload)
        .and_then(|h| h.ttl)
        .map(|ttl| record.timestamp_ms + i64::from(ttl));
    let absolute = sections
        .properties(&record.payload)
        .and_then(|p| p.absolute_expiry_time)
        .map(|t| t.milliseconds());
    match (ttl, absolute) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The message to send for a stored one: as stored, except that a redelivery carries its
/// delivery-count and first-acquirer in a (new or replaced) header section.
pub fn for_delivery(payload: &Bytes, delivery_count: u32) -> Bytes {
    if delivery_count == 0 {
        return payload.clone();
    }
    let Ok(sections) = Sections::parse(payload) else {
        return payload.clone();
    };
    let (mut header, rest) = match sections.sections.first() {
        Some((code::HEADER, r)) => (
            serde_amqp::from_slice::<Header>(&payload[r.clone()]).unwrap_or_default(),
            &payload[r.end..],
        ),
        _ => (Header::default(), &payload[..]),
    };
    header.delivery_count = delivery_count;
    header.first_acquirer = false;
    let Ok(encoded) = serde_amqp::to_vec(&header) else {
        return payload.clone();
    };
    let mut out = BytesMut::with_capacity(encoded.len() + rest.len());
    out.put_slice(&encoded);
    out.put_slice(rest);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp_types::messaging::{Body, Message, message::__private::Serializable};
    use serde_amqp::Value;

    use super::*;

    fn encode(m: Message<Body<Value>>) -> Bytes {
        Bytes::from(serde_amqp::to_vec(&Serializable(m)).expect("encodes"))
    }

    #[test]
    fn sections_are_found_and_read() {
        let m = Message::builder()
            .header(Header {
                durable: true,
                ttl: Some(5000),
                ..Default::default()
            })
            .properties(Properties {
                to: Some("orders".into()),
                reply_to: Some("tmp.x".into()),
                ..Default::default()
            })
            .body(Body::Value(fe2o3_amqp_types::messaging::AmqpValue(
                Value::String("hi".into()),
            )))
            .build();
        let bytes = encode(m);
        let s = Sections::parse(&bytes).expect("parses");
        let codes: Vec<u64> = s.sections.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            codes,
            vec![code::HEADER, code::PROPERTIES, code::AMQP_VALUE]
        );
        assert_eq!(s.header(&bytes).and_then(|h| h.ttl), Some(5000));
        assert_eq!(
            s.properties(&bytes).and_then(|p| p.to),
            Some("orders".to_string())
        );
        let r = record("orders", bytes.clone(), false, 1000);
        assert_eq!(expires_ms(&r), Some(6000));
        assert!(is_amqp(&r));
        assert_eq!(
            r.headers.as_deref(),
            Some(&[0x81, 0][..]),
            "record layout v1"
        );
    }

    #[test]
    fn redelivery_rewrites_only_the_header() {
        let m = Message::builder()
            .properties(Properties {
                subject: Some("s".into()),
                ..Default::default()
            })
            .body(Body::Value(fe2o3_amqp_types::messaging::AmqpValue(
                Value::Int(7),
            )))
            .build();
        let bytes = encode(m);
        assert_eq!(for_delivery(&bytes, 0), bytes, "first delivery: as stored");
        let again = for_delivery(&bytes, 2);
        let s = Sections::parse(&again).expect("parses");
        let h = s.header(&again).expect("header added");
        assert_eq!((h.delivery_count, h.first_acquirer), (2, false));
        assert!(again.ends_with(&bytes), "other sections untouched");
        let third = for_delivery(&again, 3);
        assert!(third.ends_with(&bytes) && third.len() == again.len());
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert!(Sections::parse(&[0x00, 0x53, 0x13, 0x45]).is_err());
        assert!(Sections::parse(&[0xa1, 1, b'x']).is_err());
        assert!(Sections::parse(&[]).is_ok_and(|s| s.sections.is_empty()));
    }

    /// As Qpid Proton encodes a message with only `expiry_time` set: an empty header
    /// (list0) and properties whose first eight fields are null.
    #[test]
    fn absolute_expiry_time_as_proton_sends_it() {
        let hex =
            "00537045005373c01209404040404040404083000001a23cce9c41005377a1086162736f6c757465";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let r = record("q", Bytes::from(bytes), false, 1000);
        assert_eq!(expires_ms(&r), Some(0x01a2_3cce_9c41));
    }
}
