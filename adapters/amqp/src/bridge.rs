//! Cross-protocol delivery between MQTT and AMQP, mapped at delivery (messages stay stored as
//! their sender sent them), through `wharf_adapter_core::bridge`'s protocol-neutral
//! [`Envelope`]: [`envelope`] is AMQP's decoder (wired into the process's [`Bridge`]), and
//! [`envelope_to_amqp`] maps an MQTT message's envelope to AMQP sections.
//!
//! MQTT topics live in the default topic address (the stream `mqtt-default`); AMQP clients
//! reach them as the addresses `/topic/<topic>` (send) and `/topic/<filter>` (receive, MQTT
//! wildcards allowed) — the form RabbitMQ's AMQP 1.0 plugin uses for its topic exchange.
//!
//! | MQTT | AMQP |
//! | --- | --- |
//! | payload | body: one `data` section (to MQTT: `data` as is; an `amqp-value` string as UTF-8, binary as is; other bodies as their encoded section) |
//! | topic | `properties.to` = `/topic/<topic>`, `properties.subject` = topic |
//! | content type | `properties.content-type` |
//! | response topic | `properties.reply-to` = `/topic/<response topic>` (to MQTT: `/topic/` stripped) |
//! | correlation data | `properties.correlation-id` as binary (to MQTT: binary as is, string as UTF-8, ulong and uuid as text) |
//! | user properties | `application-properties` (to AMQP: string values, the last of a repeated name wins; to MQTT: every simple value as text, in order) |
//! | message expiry interval (s) | `header.ttl` (ms; to MQTT rounded up to seconds) |
//! | QoS 0 | a pre-settled AMQP send arrives at QoS 0; unsettled sends at QoS 1 (capped by the subscription) |
//! | QoS 1 / 2 publish | an AMQP receiver settles it as any message (`header.durable` = QoS > 0) |

use bytes::Bytes;
use fe2o3_amqp_types::{
    messaging::{
        AmqpValue, ApplicationProperties, Body, Data, Header, Message as AmqpMessage, MessageId,
        Properties, message::__private::Serializable,
    },
    primitives::{Binary, SimpleValue, Value},
};
use wharf_adapter_core::bridge::{Bridge, Envelope};
use wharf_log_format::StoredRecord;

use crate::message::{Sections, code};

/// The AMQP address prefix of MQTT topics.
pub const TOPIC_PREFIX: &str = "/topic/";

/// The AMQP message of a stored record: as stored if an AMQP client sent it, mapped through
/// `bridge` if an MQTT client published it (topics claimed by an address, `/topic/...`), else
/// its payload as is.
pub fn amqp_payload(r: &StoredRecord, bridge: &Bridge) -> Bytes {
    if crate::message::is_amqp(&r.record) {
        return r.record.payload.clone();
    }
    match bridge.decode(r) {
        Some(e) => envelope_to_amqp(&e),
        None => r.record.payload.clone(),
    }
}

/// Another protocol's message as AMQP message sections.
pub fn envelope_to_amqp(m: &Envelope) -> Bytes {
    let header = Header {
        durable: !m.at_most_once,
        ttl: m.expiry_s.map(|s| s.saturating_mul(1000)),
        ..Default::default()
    };
    let properties = Properties {
        to: Some(format!("{TOPIC_PREFIX}{}", m.topic)),
        subject: Some(m.topic.clone()),
        content_type: m.content_type.clone().map(Into::into),
        reply_to: m
            .response_topic
            .as_ref()
            .map(|t| format!("{TOPIC_PREFIX}{t}")),
        correlation_id: m
            .correlation
            .as_ref()
            .map(|c| MessageId::Binary(Binary::from(c.to_vec()))),
        ..Default::default()
    };
    let app = (!m.user_properties.is_empty()).then(|| {
        let mut map = ApplicationProperties::default();
        for (k, v) in &m.user_properties {
            map.0.insert(k.clone(), SimpleValue::String(v.clone()));
        }
        map
    });
    let message = AmqpMessage::builder()
        .header(header)
        .properties(properties)
        .application_properties(app)
        .body(Body::<Value>::Data(
            vec![Data(Binary::from(m.payload.to_vec()))].into(),
        ))
        .build();
    serde_amqp::to_vec(&Serializable(message))
        .map(Bytes::from)
        .unwrap_or_default()
}

fn text(v: &SimpleValue) -> String {
    match v {
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.0.clone(),
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Ubyte(n) => n.to_string(),
        SimpleValue::Ushort(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        SimpleValue::Byte(n) => n.to_string(),
        SimpleValue::Short(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Float(f) => f.to_string(),
        SimpleValue::Double(f) => f.to_string(),
        SimpleValue::Char(c) => c.to_string(),
        SimpleValue::Timestamp(t) => t.milliseconds().to_string(),
        SimpleValue::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

/// AMQP's decoder for the bridge: a record the AMQP adapter stored under an MQTT topic, as
/// an envelope.
pub fn envelope(r: &StoredRecord) -> Option<Envelope> {
    if !crate::message::is_amqp(&r.record) {
        return None;
    }
    let topic = std::str::from_utf8(r.record.key.as_ref()?)
        .ok()?
        .to_string();
    let raw = &r.record.payload;
    let sections = Sections::parse(raw).ok()?;
    let presettled = r.record.headers.as_ref().and_then(|h| h.get(1)) == Some(&1);
    let mut m = Envelope {
        topic,
        at_most_once: presettled,
        timestamp_ms: r.record.timestamp_ms,
        origin: "amqp".into(),
        ..Default::default()
    };
    if let Some(h) = sections.header(raw) {
        m.expiry_s = h.ttl.map(|ms| ms.div_ceil(1000));
    }
    if let Some(p) = sections.properties(raw) {
        m.content_type = p.content_type.map(|s| s.0);
        m.response_topic = p.reply_to.map(|t| {
            t.strip_prefix(TOPIC_PREFIX)
                .map(str::to_string)
                .unwrap_or(t)
        });
        m.correlation = p.correlation_id.map(|c| match c {
            MessageId::Binary(b) => Bytes::from(b.into_vec()),
            MessageId::String(s) => Bytes::from(s.into_bytes()),
            MessageId::Ulong(n) => Bytes::from(n.to_string().into_bytes()),
            MessageId::Uuid(u) => Bytes::from(format!("{u:?}").into_bytes()),
        });
    }
    for (c, range) in &sections.sections {
        let section = &raw[range.clone()];
        match *c {
            code::APPLICATION_PROPERTIES => {
                if let Ok(app) = serde_amqp::from_slice::<ApplicationProperties>(section) {
                    m.user_properties = app.0.iter().map(|(k, v)| (k.clone(), text(v))).collect();
                }
            }
            code::DATA => {
                if let Ok(d) = serde_amqp::from_slice::<Data>(section) {
                    let mut payload = m.payload.to_vec();
                    payload.extend_from_slice(&d.0);
                    m.payload = Bytes::from(payload);
                }
            }
            code::AMQP_VALUE => {
                m.payload = match serde_amqp::from_slice::<AmqpValue<Value>>(section) {
                    Ok(AmqpValue(Value::String(s))) => Bytes::from(s.into_bytes()),
                    Ok(AmqpValue(Value::Binary(b))) => Bytes::from(b.into_vec()),
                    _ => Bytes::copy_from_slice(section),
                };
            }
            code::AMQP_SEQUENCE => {
                let mut payload = m.payload.to_vec();
                payload.extend_from_slice(section);
                m.payload = Bytes::from(payload);
            }
            _ => {}
        }
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use wharf_log_format::{Offset, StreamId};

    use super::*;

    #[test]
    fn mqtt_to_amqp_and_back() {
        let m = Envelope {
            topic: "sensors/t1".into(),
            payload: Bytes::from_static(b"21.5"),
            content_type: Some("text/plain".into()),
            response_topic: Some("replies/1".into()),
            correlation: Some(Bytes::from_static(b"\x00\x01corr")),
            user_properties: vec![("unit".into(), "C".into()), ("site".into(), "7".into())],
            expiry_s: Some(30),
            ..Default::default()
        };
        let amqp = envelope_to_amqp(&m);
        let s = Sections::parse(&amqp).expect("sections");
        let p = s.properties(&amqp).expect("properties");
        assert_eq!(p.to.as_deref(), Some("/topic/sensors/t1"));
        assert_eq!(p.subject.as_deref(), Some("sensors/t1"));
        assert_eq!(p.reply_to.as_deref(), Some("/topic/replies/1"));
        assert_eq!(s.header(&amqp).and_then(|h| h.ttl), Some(30_000));
        // Stored by the AMQP adapter under the topic, delivered to MQTT: the same message.
        let record = crate::message::record("sensors/t1", amqp, false, 5);
        let back = envelope(&StoredRecord {
            stream: StreamId::new("mqtt-default").expect("id"),
            offset: Offset(0),
            record,
        })
        .expect("converts");
        assert_eq!(back.topic, "sensors/t1");
        assert_eq!(&back.payload[..], b"21.5");
        assert_eq!(back.content_type, m.content_type);
        assert_eq!(back.response_topic.as_deref(), Some("replies/1"));
        assert_eq!(back.correlation, m.correlation);
        assert_eq!(back.user_properties, m.user_properties);
        assert_eq!(back.expiry_s, Some(30));
        assert!(!back.at_most_once);
    }

    #[test]
    fn amqp_value_strings_become_utf8_payloads() {
        let message = AmqpMessage::builder()
            .body(Body::Value(AmqpValue(Value::String("hello".into()))))
            .build();
        let bytes = Bytes::from(serde_amqp::to_vec(&Serializable(message)).expect("encodes"));
        let record = crate::message::record("cmd/dev1", bytes, true, 0);
        let m = envelope(&StoredRecord {
            stream: StreamId::new("mqtt-default").expect("id"),
            offset: Offset(1),
            record,
        })
        .expect("converts");
        assert_eq!((&m.payload[..], m.at_most_once), (&b"hello"[..], true));
    }
}
