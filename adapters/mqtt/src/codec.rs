//! Wire codec for both protocol versions, on `mqttbytes`.
//!
//! The session works with MQTT 5 packets only (`mqttbytes::v5`, a superset of 3.1.1); this
//! module reads 3.1.1 packets into that shape and writes MQTT 5 packets back as 3.1.1 for
//! 3.1.1 clients (properties dropped, reason codes mapped). It also works around gaps in
//! `mqttbytes` 0.6: v5 refuses a DISCONNECT with no reason code (remaining length 0, what
//! most clients send), v5 reads will properties for 3.1.1 CONNECTs, v5 writes a DISCONNECT
//! with an empty property set without its reason code, and neither version checks the wire
//! rules [`crate::strict`] checks.

use bytes::BytesMut;
use mqttbytes::{
    Error, QoS, check, v4,
    v5::{self, DisconnectReasonCode, Packet},
};

use crate::strict::Violation;

/// The protocol a connection speaks, from its CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// What the first packet of a connection says about its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// Not enough bytes yet.
    Incomplete,
    /// A CONNECT for this version.
    Connect(Version),
    /// A CONNECT with a protocol name/level we do not speak (MQTT 3.1 is level 3).
    UnsupportedLevel(u8),
    /// Not a CONNECT, or not MQTT at all.
    NotConnect,
}

/// Look at the start of a connection's input without consuming it.
pub fn peek_connect(input: &[u8]) -> Peek {
    let Some(&first) = input.first() else {
        return Peek::Incomplete;
    };
    if first != 0x10 {
        return Peek::NotConnect;
    }
    // Skip the remaining length (1–4 bytes), then: 0x00 0x04 "MQTT" level.
    let mut i = 1;
    loop {
        match input.get(i) {
            None => return Peek::Incomplete,
            Some(b) if b & 0x80 != 0 && i < 4 => i += 1,
            Some(b) if b & 0x80 != 0 => return Peek::NotConnect,
            Some(_) => break,
        }
    }
    let vh = &input[i + 1..];
    if vh.len() < 7 {
        return Peek::Incomplete;
    }
    match (&vh[..6], vh[6]) {
        (b"\x00\x04MQTT", 4) => Peek::Connect(Version::V311),
        (b"\x00\x04MQTT", 5) => Peek::Connect(Version::V5),
        (b"\x00\x04MQTT", level) => Peek::UnsupportedLevel(level),
        (b"\x00\x06MQIs", _) => Peek::UnsupportedLevel(3),
        _ => Peek::NotConnect,
    }
}

/// Why a packet could not be read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadError {
    /// Not enough bytes yet.
    Incomplete,
    /// The packet breaks the protocol: close the connection with this reason code.
    Invalid(Violation),
}

/// Read one packet; [`ReadError::Incomplete`] when more input is needed. Each packet is
/// checked against the wire rules `mqttbytes` leaves out ([`crate::strict`]) first.
pub fn read(version: Version, input: &mut BytesMut, max_size: usize) -> Result<Packet, ReadError> {
    let frame_len = match check(input.iter(), max_size) {
        Ok(h) => h.frame_length(),
        Err(e) => return Err(invalid(e)),
    };
    crate::strict::check(version == Version::V5, &input[..frame_len])
        .map_err(ReadError::Invalid)?;
    let packet = match version {
        Version::V5 => {
            if input.starts_with(&[0xE0, 0x00]) {
                let _ = input.split_to(2);
                return Ok(Packet::Disconnect(v5::Disconnect::new()));
            }
            if input.first() == Some(&0xA2) {
                read_v5_unsubscribe(input, max_size)
            } else {
                v5::read(input, max_size)
            }
        }
        Version::V311 => v4::read(input, max_size).map(from_v4),
    };
    packet.map_err(invalid)
}

/// What an `mqttbytes` error means for the connection.
fn invalid(e: Error) -> ReadError {
    use DisconnectReasonCode as C;
    let (code, why) = match e {
        Error::InsufficientBytes(_) => return ReadError::Incomplete,
        Error::PayloadSizeLimitExceeded(_) => (C::PacketTooLarge, "packet too large"),
        Error::TopicNotUtf8 => (C::MalformedPacket, "string is not valid UTF-8"),
        Error::InvalidQoS(_) => (C::MalformedPacket, "invalid QoS"),
        Error::InvalidPropertyType(_) => (C::MalformedPacket, "unknown property"),
        Error::InvalidPacketType(_) => (C::MalformedPacket, "unknown packet type"),
        Error::PacketIdZero => (C::ProtocolError, "packet identifier 0"),
        Error::MalformedRemainingLength => (C::MalformedPacket, "bad remaining length"),
        _ => (C::MalformedPacket, "malformed packet"),
    };
    ReadError::Invalid(Violation { code, why })
}

/// `mqttbytes` 0.6 prints every v5 UNSUBSCRIBE's packet id to stderr (a left-over `dbg!`),
/// so this one packet is decoded here: packet id, properties (user properties only), filters.
fn read_v5_unsubscribe(input: &mut BytesMut, max_size: usize) -> Result<Packet, Error> {
    use bytes::Buf;
    let header = check(input.iter(), max_size)?;
    let mut b = input.split_to(header.frame_length()).freeze();
    // Fixed header: the type byte, then a remaining length whose last byte is < 0x80.
    let remaining_len_bytes = b[1..].iter().take_while(|x| **x & 0x80 != 0).count() + 1;
    b.advance(1 + remaining_len_bytes);
    let string = |b: &mut bytes::Bytes| -> Result<String, Error> {
        if b.remaining() < 2 {
            return Err(Error::MalformedPacket);
        }
        let n = b.get_u16() as usize;
        if b.remaining() < n {
            return Err(Error::MalformedPacket);
        }
        String::from_utf8(b.split_to(n).to_vec()).map_err(|_| Error::TopicNotUtf8)
    };
    if b.remaining() < 3 {
        return Err(Error::MalformedPacket);
    }
    let pkid = b.get_u16();
    // Property length: a variable byte integer.
    let (mut len, mut shift) = (0usize, 0);
    loop {
        if !b.has_remaining() || shift > 21 {
            return Err(Error::MalformedPacket);
        }
        let byte = b.get_u8();
        len |= usize::from(byte & 0x7F) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    if b.remaining() < len {
        return Err(Error::MalformedPacket);
    }
    let mut props = b.split_to(len);
    let mut user_properties = Vec::new();
    while props.has_remaining() {
        if props.get_u8() != 0x26 {
            return Err(Error::MalformedPacket);
        }
        let k = string(&mut props)?;
        user_properties.push((k, string(&mut props)?));
    }
    let mut filters = Vec::new();
    while b.has_remaining() {
        filters.push(string(&mut b)?);
    }
    Ok(Packet::Unsubscribe(v5::Unsubscribe {
        pkid,
        filters,
        properties: (!user_properties.is_empty())
            .then_some(v5::UnsubscribeProperties { user_properties }),
    }))
}

fn from_v4(p: v4::Packet) -> Packet {
    match p {
        v4::Packet::Connect(c) => Packet::Connect(v5::Connect {
            protocol: mqttbytes::Protocol::V4,
            keep_alive: c.keep_alive,
            client_id: c.client_id,
            clean_session: c.clean_session,
            last_will: c.last_will.map(|w| v5::LastWill {
                topic: w.topic,
                message: w.message,
                qos: w.qos,
                retain: w.retain,
                properties: None,
            }),
            login: c.login.map(|l| v5::Login {
                username: l.username,
                password: l.password,
            }),
            properties: None,
        }),
        v4::Packet::Publish(p) => Packet::Publish(v5::Publish {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: p.topic,
            pkid: p.pkid,
            properties: None,
            payload: p.payload,
        }),
        v4::Packet::PubAck(a) => Packet::PubAck(v5::PubAck::new(a.pkid)),
        v4::Packet::PubRec(a) => Packet::PubRec(v5::PubRec::new(a.pkid)),
        v4::Packet::PubRel(a) => Packet::PubRel(v5::PubRel::new(a.pkid)),
        v4::Packet::PubComp(a) => Packet::PubComp(v5::PubComp::new(a.pkid)),
        v4::Packet::Subscribe(s) => Packet::Subscribe(v5::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| v5::SubscribeFilter::new(f.path, f.qos))
                .collect(),
            properties: None,
        }),
        v4::Packet::Unsubscribe(u) => Packet::Unsubscribe(v5::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
            properties: None,
        }),
        v4::Packet::PingReq => Packet::PingReq,
        v4::Packet::PingResp => Packet::PingResp,
        v4::Packet::Disconnect => Packet::Disconnect(v5::Disconnect::new()),
        // Server-to-client packets a client must not send: keep the type so the session can
        // refuse them.
        v4::Packet::ConnAck(a) => Packet::ConnAck(v5::ConnAck::new(
            v5::ConnectReturnCode::Success,
            a.session_present,
        )),
        v4::Packet::SubAck(a) => Packet::SubAck(v5::SubAck::new(a.pkid, Vec::new())),
        v4::Packet::UnsubAck(a) => Packet::UnsubAck(v5::UnsubAck::new(a.pkid)),
    }
}

/// Append `p`, encoded for `version`, to `out`; `Ok(0)` if 3.1.1 has no such packet (a
/// server DISCONNECT: the connection is just closed).
pub fn write(version: Version, p: &Packet, out: &mut BytesMut) -> Result<usize, Error> {
    match version {
        Version::V5 => match p {
            Packet::ConnAck(x) => x.write(out),
            Packet::Publish(x) => x.write(out),
            Packet::PubAck(x) => x.write(out),
            Packet::PubRec(x) => x.write(out),
            Packet::PubRel(x) => x.write(out),
            Packet::PubComp(x) => x.write(out),
            Packet::SubAck(x) => x.write(out),
            Packet::UnsubAck(x) => x.write(out),
            Packet::PingResp => v5::PingResp.write(out),
            Packet::Disconnect(x) => {
                // mqttbytes 0.6 writes a DISCONNECT whose property set is empty as `E0 00`,
                // losing the reason code: write it without the set instead.
                let empty = x.properties.as_ref().is_some_and(|pr| {
                    pr.session_expiry_interval.is_none()
                        && pr.reason_string.is_none()
                        && pr.user_properties.is_empty()
                        && pr.server_reference.is_none()
                });
                if empty {
                    v5::Disconnect {
                        reason_code: x.reason_code,
                        properties: None,
                    }
                    .write(out)
                } else {
                    x.write(out)
                }
            }
            other => Err(Error::InvalidPacketType(packet_type(other))),
        },
        Version::V311 => match p {
            Packet::ConnAck(x) => {
                v4::ConnAck::new(v4_connack_code(x.code), x.session_present).write(out)
            }
            Packet::Publish(x) => v4::Publish {
                dup: x.dup,
                qos: x.qos,
                retain: x.retain,
                topic: x.topic.clone(),
                pkid: x.pkid,
                payload: x.payload.clone(),
            }
            .write(out),
            Packet::PubAck(x) => v4::PubAck::new(x.pkid).write(out),
            Packet::PubRec(x) => v4::PubRec::new(x.pkid).write(out),
            Packet::PubRel(x) => v4::PubRel::new(x.pkid).write(out),
            Packet::PubComp(x) => v4::PubComp::new(x.pkid).write(out),
            Packet::SubAck(x) => v4::SubAck::new(
                x.pkid,
                x.return_codes
                    .iter()
                    .map(|c| match c {
                        v5::SubscribeReasonCode::QoS0 => {
                            v4::SubscribeReasonCode::Success(QoS::AtMostOnce)
                        }
                        v5::SubscribeReasonCode::QoS1 => {
                            v4::SubscribeReasonCode::Success(QoS::AtLeastOnce)
                        }
                        v5::SubscribeReasonCode::QoS2 => {
                            v4::SubscribeReasonCode::Success(QoS::ExactlyOnce)
                        }
                        _ => v4::SubscribeReasonCode::Failure,
                    })
                    .collect(),
            )
            .write(out),
            Packet::UnsubAck(x) => v4::UnsubAck::new(x.pkid).write(out),
            Packet::PingResp => v4::PingResp.write(out),
            Packet::Disconnect(_) => Ok(0),
            other => Err(Error::InvalidPacketType(packet_type(other))),
        },
    }
}

/// `p` without its Reason String and User Properties, the properties a server must leave
/// out rather than exceed the client's Maximum Packet Size [MQTT-3.1.2-25, 3.2.2-19,
/// 3.2.2-20, and the same rule for every acknowledgement and DISCONNECT]; `None` if it has
/// none of them (or is a PUBLISH, whose properties are the message's).
pub fn without_optional_properties(p: &Packet) -> Option<Packet> {
    let mut p = p.clone();
    let had = match &mut p {
        Packet::ConnAck(x) => x.properties.as_mut().is_some_and(|pr| {
            let had = pr.reason_string.is_some() || !pr.user_properties.is_empty();
            pr.reason_string = None;
            pr.user_properties.clear();
            had
        }),
        Packet::Disconnect(x) => x.properties.as_mut().is_some_and(|pr| {
            let had = pr.reason_string.is_some() || !pr.user_properties.is_empty();
            pr.reason_string = None;
            pr.user_properties.clear();
            had
        }),
        // Acknowledgements carry nothing else: drop the whole property set.
        Packet::PubAck(x) => x.properties.take().is_some(),
        Packet::PubRec(x) => x.properties.take().is_some(),
        Packet::PubRel(x) => x.properties.take().is_some(),
        Packet::PubComp(x) => x.properties.take().is_some(),
        Packet::SubAck(x) => x.properties.take().is_some(),
        Packet::UnsubAck(x) => x.properties.take().is_some(),
        _ => false,
    };
    had.then_some(p)
}

fn v4_connack_code(c: v5::ConnectReturnCode) -> v4::ConnectReturnCode {
    use v5::ConnectReturnCode as C;
    match c {
        C::Success => v4::ConnectReturnCode::Success,
        C::UnsupportedProtocolVersion => v4::ConnectReturnCode::RefusedProtocolVersion,
        C::ClientIdentifierNotValid => v4::ConnectReturnCode::BadClientId,
        C::BadUserNamePassword | C::BadAuthenticationMethod => {
            v4::ConnectReturnCode::BadUserNamePassword
        }
        C::NotAuthorized | C::Banned => v4::ConnectReturnCode::NotAuthorized,
        _ => v4::ConnectReturnCode::ServiceUnavailable,
    }
}

fn packet_type(p: &Packet) -> u8 {
    match p {
        Packet::Connect(_) => 1,
        Packet::ConnAck(_) => 2,
        Packet::Publish(_) => 3,
        Packet::PubAck(_) => 4,
        Packet::PubRec(_) => 5,
        Packet::PubRel(_) => 6,
        Packet::PubComp(_) => 7,
        Packet::Subscribe(_) => 8,
        Packet::SubAck(_) => 9,
        Packet::Unsubscribe(_) => 10,
        Packet::UnsubAck(_) => 11,
        Packet::PingReq => 12,
        Packet::PingResp => 13,
        Packet::Disconnect(_) => 14,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_version_is_recognised_before_decoding() {
        let mut b = BytesMut::new();
        v4::Connect::new("c").write(&mut b).expect("encode");
        assert_eq!(peek_connect(&b), Peek::Connect(Version::V311));
        assert_eq!(peek_connect(&b[..5]), Peek::Incomplete);
        let mut b5 = BytesMut::new();
        v5::Connect::new("c").write(&mut b5).expect("encode");
        assert_eq!(peek_connect(&b5), Peek::Connect(Version::V5));
        assert_eq!(
            peek_connect(b"\x10\x10\x00\x06MQIsdp\x03"),
            Peek::UnsupportedLevel(3)
        );
        assert_eq!(peek_connect(b"GET / HTTP/1.1"), Peek::NotConnect);
        assert_eq!(peek_connect(b"\x10\xff\xff\xff\xff\x00"), Peek::NotConnect);
    }

    #[test]
    fn v5_disconnect_without_reason_code_is_read() {
        let mut b = BytesMut::from(&b"\xe0\x00\xc0\x00"[..]);
        assert!(matches!(
            read(Version::V5, &mut b, 100),
            Ok(Packet::Disconnect(d)) if d.reason_code == v5::DisconnectReasonCode::NormalDisconnection
        ));
        assert!(matches!(
            read(Version::V5, &mut b, 100),
            Ok(Packet::PingReq)
        ));
    }

    #[test]
    fn v5_unsubscribe_is_read_like_mqttbytes_writes_it() {
        let u = v5::Unsubscribe {
            pkid: 9,
            filters: vec!["a/#".into(), "b".into()],
            properties: Some(v5::UnsubscribeProperties {
                user_properties: vec![("k".into(), "v".into())],
            }),
        };
        let mut b = BytesMut::new();
        u.write(&mut b).expect("encode");
        assert_eq!(
            read(Version::V5, &mut b, 100).ok(),
            Some(Packet::Unsubscribe(u))
        );
        for bad in [&b"\xa2\x02\x00\x01"[..], b"\xa2\x05\x00\x01\x00\x00\x05"] {
            let mut b = BytesMut::from(bad);
            assert!(read(Version::V5, &mut b, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn v5_disconnect_keeps_its_reason_code_without_properties() {
        let mut out = BytesMut::new();
        let d = v5::Disconnect {
            reason_code: v5::DisconnectReasonCode::MalformedPacket,
            properties: Some(v5::DisconnectProperties {
                session_expiry_interval: None,
                reason_string: None,
                user_properties: Vec::new(),
                server_reference: None,
            }),
        };
        write(Version::V5, &Packet::Disconnect(d), &mut out).expect("encode");
        assert_eq!(&out[..], b"\xe0\x01\x81");
    }

    #[test]
    fn v311_clients_get_v311_packets() {
        let mut out = BytesMut::new();
        let ack = v5::SubAck::new(
            3,
            vec![
                v5::SubscribeReasonCode::QoS2,
                v5::SubscribeReasonCode::NotAuthorized,
            ],
        );
        write(Version::V311, &Packet::SubAck(ack), &mut out).expect("encode");
        assert_eq!(&out[..], b"\x90\x04\x00\x03\x02\x80");
        out.clear();
        let n = write(
            Version::V311,
            &Packet::Disconnect(v5::Disconnect::new()),
            &mut out,
        )
        .expect("encode");
        assert_eq!((n, out.len()), (0, 0), "3.1.1 servers just close");
    }
}
