//! Cross-protocol delivery between MQTT and AMQP, mapped at delivery (messages stay stored as
//! their sender sent them).
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
use wharf_log_format::StoredRecord;
use wharf_mqtt::message::{Message as MqttMessage, Properties as MqttProperties, QoS};

use crate::message::{Sections, code};

/// The AMQP address prefix of MQTT topics.
pub const TOPIC_PREFIX: &str = "/topic/";

/// Register [`amqp_to_mqtt`] with the MQTT adapter (once per process).
pub fn register() {
    wharf_mqtt::message::register_foreign(amqp_to_mqtt);
}

/// The AMQP message of a stored record: as stored if an AMQP client sent it, mapped if an MQTT
/// client published it (topics claimed by an address, `/topic/...`), else its payload as is.
pub fn amqp_payload(r: &StoredRecord) -> Bytes {
    if crate::message::is_amqp(&r.record) {
        return r.record.payload.clone();
    }
    match MqttMessage::from_record(r) {
        Ok(m) => mqtt_to_amqp(&m),
        Err(_) => r.record.payload.clone(),
    }
}

/// An MQTT message as AMQP message sections.
pub fn mqtt_to_amqp(m: &MqttMessage) -> Bytes {
    let p = &m.properties;
    let header = Header {
        durable: m.qos != QoS::AtMostOnce,
        ttl: p.message_expiry_interval.map(|s| s.saturating_mul(1000)),
        ..Default::default()
    };
    let properties = Properties {
        to: Some(format!("{TOPIC_PREFIX}{}", m.topic)),
        subject: Some(m.topic.clone()),
        content_type: p.content_type.clone().map(Into::into),
        reply_to: p
            .response_topic
            .as_ref()
            .map(|t| format!("{TOPIC_PREFIX}{t}")),
        correlation_id: p
            .correlation_data
            .as_ref()
            .map(|c| MessageId::Binary(Binary::from(c.to_vec()))),
        ..Default::default()
    };
    let app = (!p.user_properties.is_empty()).then(|| {
        let mut map = ApplicationProperties::default();
        for (k, v) in &p.user_properties {
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

/// A record the AMQP adapter stored under an MQTT topic, as an MQTT message.
pub fn amqp_to_mqtt(r: &StoredRecord) -> Option<MqttMessage> {
    if !crate::message::is_amqp(&r.record) {
        return None;
    }
    let topic = std::str::from_utf8(r.record.key.as_ref()?)
        .ok()?
        .to_string();
    let raw = &r.record.payload;
    let sections = Sections::parse(raw).ok()?;
    let presettled = r.record.headers.as_ref().and_then(|h| h.get(1)) == Some(&1);
    let mut m = MqttMessage::new(
        topic,
        if presettled {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        Bytes::new(),
    );
    m.timestamp_ms = r.record.timestamp_ms;
    m.origin = "amqp".into();
    let mut props = MqttProperties::default();
    if let Some(h) = sections.header(raw) {
        props.message_expiry_interval = h.ttl.map(|ms| ms.div_ceil(1000));
    }
    if let Some(p) = sections.properties(raw) {
        props.content_type = p.content_type.map(|s| s.0);
        props.response_topic = p.reply_to.map(|t| {
            t.strip_prefix(TOPIC_PREFIX)
                .map(str::to_string)
                .unwrap_or(t)
        });
        props.correlation_data = p.correlation_id.map(|c| match c {
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
                    props.user_properties =
                        app.0.iter().map(|(k, v)| (k.clone(), text(v))).collect();
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
    m.properties = props;
    Some(m)
}

#[cfg(test)]
mod tests {
    use wharf_log_format::{Offset, StreamId};

    use super::*;

    #[test]
    fn mqtt_to_amqp_and_back() {
        let mut m = MqttMessage::new("sensors/t1", QoS::AtLeastOnce, "21.5");
        m.properties = MqttProperties {
            content_type: Some("text/plain".into()),
            response_topic: Some("replies/1".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
            user_properties: vec![("unit".into(), "C".into()), ("site".into(), "7".into())],
            message_expiry_interval: Some(30),
            ..Default::default()
        };
        let amqp = mqtt_to_amqp(&m);
        let s = Sections::parse(&amqp).expect("sections");
        let p = s.properties(&amqp).expect("properties");
        assert_eq!(p.to.as_deref(), Some("/topic/sensors/t1"));
        assert_eq!(p.subject.as_deref(), Some("sensors/t1"));
        assert_eq!(p.reply_to.as_deref(), Some("/topic/replies/1"));
        assert_eq!(s.header(&amqp).and_then(|h| h.ttl), Some(30_000));
        // Stored by the AMQP adapter under the topic, delivered to MQTT: the same message.
        let record = crate::message::record("sensors/t1", amqp, false, 5);
        let back = amqp_to_mqtt(&StoredRecord {
            stream: StreamId::new("mqtt-default").expect("id"),
            offset: Offset(0),
            record,
        })
        .expect("converts");
        assert_eq!(back.topic, "sensors/t1");
        assert_eq!(&back.payload[..], b"21.5");
        assert_eq!(back.properties.content_type, m.properties.content_type);
        assert_eq!(back.properties.response_topic.as_deref(), Some("replies/1"));
        assert_eq!(
            back.properties.correlation_data,
            m.properties.correlation_data
        );
        assert_eq!(
            back.properties.user_properties,
            m.properties.user_properties
        );
        assert_eq!(back.properties.message_expiry_interval, Some(30));
        assert_eq!(back.qos, QoS::AtLeastOnce);
    }

    #[test]
    fn amqp_value_strings_become_utf8_payloads() {
        let message = AmqpMessage::builder()
            .body(Body::Value(AmqpValue(Value::String("hello".into()))))
            .build();
        let bytes = Bytes::from(serde_amqp::to_vec(&Serializable(message)).expect("encodes"));
        let record = crate::message::record("cmd/dev1", bytes, true, 0);
        let m = amqp_to_mqtt(&StoredRecord {
            stream: StreamId::new("mqtt-default").expect("id"),
            offset: Offset(1),
            record,
        })
        .expect("converts");
        assert_eq!((&m.payload[..], m.qos), (&b"hello"[..], QoS::AtMostOnce));
    }
}
