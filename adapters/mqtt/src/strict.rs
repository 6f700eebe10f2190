//! The wire rules `mqttbytes` 0.6 does not enforce, checked on a packet's bytes before it is
//! decoded: fixed-header flags, reserved bits, and MQTT 5 property sets (which property may
//! appear in which packet, and how often). `mqttbytes` is lenient on all of these — it
//! reads a PUBREL with flags `0000`, a CONNECT with the reserved bit set, a property given
//! twice (the last one wins) — where the specification says the connection must be closed.
//!
//! [`check`] looks at one whole packet (fixed header included) and says what is wrong with
//! it, with the reason code the specification gives: 0x81 Malformed Packet or 0x82 Protocol
//! Error. It reads only what it must and allocates nothing.

use mqttbytes::v5::DisconnectReasonCode;

/// What is wrong with a packet: the reason code to close with, and why (a log line and the
/// MQTT 5 reason string).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Violation {
    pub code: DisconnectReasonCode,
    pub why: &'static str,
}

fn malformed(why: &'static str) -> Violation {
    Violation {
        code: DisconnectReasonCode::MalformedPacket,
        why,
    }
}

fn protocol(why: &'static str) -> Violation {
    Violation {
        code: DisconnectReasonCode::ProtocolError,
        why,
    }
}

/// Packet types, as in the fixed header's high nibble.
const CONNECT: u8 = 1;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const UNSUBSCRIBE: u8 = 10;
const DISCONNECT: u8 = 14;

/// The property sets of MQTT 5 (2.2.2.2), for the packets a client sends. A will's
/// properties are a set of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Set {
    Connect,
    Will,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
}

/// How a property's value is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Byte,
    U16,
    U32,
    VarInt,
    Str,
    Bin,
    Pair,
}

/// A property's encoding, and whether it may appear in `set` (`None`: it may not).
fn property(id: u8, set: Set) -> Option<Kind> {
    use Set::*;
    let (kind, sets): (Kind, &[Set]) = match id {
        0x01 => (Kind::Byte, &[Publish, Will]),
        0x02 => (Kind::U32, &[Publish, Will]),
        0x03 => (Kind::Str, &[Publish, Will]),
        0x08 => (Kind::Str, &[Publish, Will]),
        0x09 => (Kind::Bin, &[Publish, Will]),
        // In a client's PUBLISH it is a protocol error, which the session reports.
        0x0B => (Kind::VarInt, &[Subscribe, Publish]),
        0x11 => (Kind::U32, &[Connect, Disconnect]),
        0x15 => (Kind::Str, &[Connect]),
        0x16 => (Kind::Bin, &[Connect]),
        0x17 => (Kind::Byte, &[Connect]),
        0x18 => (Kind::U32, &[Will]),
        0x19 => (Kind::Byte, &[Connect]),
        0x1C => (Kind::Str, &[Disconnect]),
        0x1F => (Kind::Str, &[Ack, Disconnect]),
        0x21 => (Kind::U16, &[Connect]),
        0x22 => (Kind::U16, &[Connect]),
        0x23 => (Kind::U16, &[Publish]),
        0x26 => (
            Kind::Pair,
            &[
                Connect,
                Will,
                Publish,
                Ack,
                Subscribe,
                Unsubscribe,
                Disconnect,
            ],
        ),
        0x27 => (Kind::U32, &[Connect]),
        _ => return None,
    };
    sets.contains(&set).then_some(kind)
}

/// A cursor over a packet's bytes; every read fails as Malformed Packet past the end.
struct Reader<'a> {
    b: &'a [u8],
}

const SHORT: &str = "packet shorter than its contents say";

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Violation> {
        if self.b.len() < n {
            return Err(malformed(SHORT));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Violation> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Violation> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn varint(&mut self) -> Result<u32, Violation> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("variable byte integer longer than 4 bytes"))
    }

    fn binary(&mut self) -> Result<&'a [u8], Violation> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A UTF-8 encoded string: valid UTF-8 without U+0000 [MQTT-1.5.4-1, 1.5.4-2].
    fn string(&mut self) -> Result<&'a str, Violation> {
        let b = self.binary()?;
        let s = std::str::from_utf8(b).map_err(|_| malformed("string is not valid UTF-8"))?;
        if s.contains('\0') {
            return Err(malformed("string contains U+0000"));
        }
        Ok(s)
    }

    fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
}

/// Read a property list of `set`: each identifier valid for it (else Malformed Packet,
/// 2.2.2.2), at most once except User Property (else Protocol Error, 2.2.2.2 and
/// [MQTT-3.1.4-2] for CONNECT), values in range where the specification says so.
fn properties(r: &mut Reader<'_>, set: Set) -> Result<(), Violation> {
    let len = r.varint()? as usize;
    let mut p = Reader { b: r.take(len)? };
    let mut seen = 0u64; // identifiers are below 0x40
    while !p.is_empty() {
        let id = p.u8()?;
        let Some(kind) = property(id, set) else {
            return Err(malformed("property not allowed in this packet"));
        };
        if kind != Kind::Pair {
            if seen & (1 << id) != 0 {
                return Err(protocol("a property that may appear once appears twice"));
            }
            seen |= 1 << id;
        }
        match kind {
            Kind::Byte => {
                let v = p.u8()?;
                // Payload Format Indicator, Request Problem / Response Information: 0 or 1.
                if matches!(id, 0x01 | 0x17 | 0x19) && v > 1 {
                    return Err(protocol("property value is not 0 or 1"));
                }
            }
            Kind::U16 => {
                let v = p.u16()?;
                if id == 0x21 && v == 0 {
                    return Err(protocol("receive maximum 0"));
                }
            }
            Kind::U32 => {
                let v = p.take(4)?;
                if id == 0x27 && v == [0, 0, 0, 0] {
                    return Err(protocol("maximum packet size 0"));
                }
            }
            Kind::VarInt => {
                if p.varint()? == 0 {
                    return Err(protocol("subscription identifier 0"));
                }
            }
            Kind::Str => {
                p.string()?;
            }
            Kind::Bin => {
                p.binary()?;
            }
            Kind::Pair => {
                p.string()?;
                p.string()?;
            }
        }
    }
    Ok(())
}

/// Check one whole packet (fixed header included, as framed by `mqttbytes::check`) of MQTT 5
/// (`v5`) or 3.1.1 against the rules `mqttbytes` leaves out.
pub fn check(v5: bool, frame: &[u8]) -> Result<(), Violation> {
    let mut r = Reader { b: frame };
    let first = r.u8()?;
    let (kind, flags) = (first >> 4, first & 0x0F);
    let _remaining = r.varint()?;
    // Fixed-header flags [MQTT-2.1.3-1]: 0010 on PUBREL, SUBSCRIBE, UNSUBSCRIBE
    // [MQTT-3.6.1-1, 3.8.1-1, 3.10.1-1], DUP/QoS/RETAIN on PUBLISH, 0000 elsewhere.
    match kind {
        PUBLISH => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(malformed("PUBLISH with QoS 3"));
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(malformed("PUBLISH with QoS 0 and DUP 1")); // [MQTT-3.3.1-2]
            }
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE if flags != 0b0010 => {
            return Err(malformed("fixed header flags must be 0010"));
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => {}
        _ if flags != 0 => return Err(malformed("fixed header flags must be 0000")),
        _ => {}
    }
    match kind {
        CONNECT => connect(&mut r, v5),
        PUBLISH if v5 => {
            r.string()?; // topic (checked further by the session)
            if (flags >> 1) & 0b11 != 0 {
                r.u16()?;
            }
            properties(&mut r, Set::Publish)
        }
        PUBACK | PUBREC | PUBREL | PUBCOMP if v5 => {
            r.u16()?;
            if r.is_empty() {
                return Ok(());
            }
            r.u8()?;
            if r.is_empty() {
                return Ok(());
            }
            properties(&mut r, Set::Ack)?;
            trailing(&r)
        }
        SUBSCRIBE => subscribe(&mut r, v5),
        UNSUBSCRIBE if v5 => {
            r.u16()?;
            properties(&mut r, Set::Unsubscribe)
        }
        DISCONNECT if v5 && !r.is_empty() => {
            r.u8()?;
            if r.is_empty() {
                return Ok(());
            }
            properties(&mut r, Set::Disconnect)?;
            trailing(&r)
        }
        _ => Ok(()),
    }
}

fn trailing(r: &Reader<'_>) -> Result<(), Violation> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(malformed("bytes after the end of the packet"))
    }
}

/// CONNECT: the reserved flag [MQTT-3.1.2-3], the will flags [MQTT-3.1.2-11, 3.1.2-13], the
/// password flag without user name in 3.1.1 [MQTT-3.1.2-22], and MQTT 5 connect and will
/// properties.
fn connect(r: &mut Reader<'_>, v5: bool) -> Result<(), Violation> {
    r.binary()?; // protocol name, checked before (codec::peek_connect)
    r.u8()?; // level
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(malformed("CONNECT reserved flag is set"));
    }
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    if will_qos == 3 {
        return Err(malformed("will QoS 3"));
    }
    if !will && (will_qos != 0 || will_retain) {
        return Err(malformed("will QoS or retain set without a will"));
    }
    let (user, password) = (flags & 0x80 != 0, flags & 0x40 != 0);
    if !v5 && password && !user {
        return Err(malformed("password without user name"));
    }
    r.u16()?; // keep alive
    if v5 {
        properties(r, Set::Connect)?;
    }
    r.string()?; // client id
    if will {
        if v5 {
            properties(r, Set::Will)?;
        }
        r.string()?; // will topic
        r.binary()?; // will payload
    }
    if user {
        r.string()?;
    }
    if password {
        r.binary()?;
    }
    trailing(r)
}

/// SUBSCRIBE options: reserved bits (MQTT 5: 6–7 [MQTT-3.8.3-5]; 3.1.1: 2–7), QoS 3,
/// Retain Handling 3 (a protocol error), and No Local on a shared subscription (a protocol
/// error [MQTT-3.8.3-4]).
fn subscribe(r: &mut Reader<'_>, v5: bool) -> Result<(), Violation> {
    r.u16()?;
    if v5 {
        properties(r, Set::Subscribe)?;
    }
    while !r.is_empty() {
        let filter = r.string()?;
        let options = r.u8()?;
        let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
        if options & reserved != 0 {
            return Err(malformed("SUBSCRIBE options with reserved bits set"));
        }
        if options & 0b11 == 3 {
            return Err(malformed("SUBSCRIBE with QoS 3"));
        }
        if v5 {
            if (options >> 4) & 0b11 == 3 {
                return Err(protocol("retain handling 3"));
            }
            if options & 0b100 != 0 && filter.starts_with("$share/") {
                return Err(protocol("no local on a shared subscription"));
            }
        }
    }
    Ok(())
}

/// The Maximum Packet Size a v5 CONNECT at the start of `input` states, read as far as the
/// packet allows (for refusing a CONNECT that is malformed further on).
pub fn stated_max_packet(input: &[u8]) -> Option<u32> {
    let mut r = Reader { b: input };
    if r.u8().ok()? != 0x10 {
        return None;
    }
    r.varint().ok()?;
    r.binary().ok()?;
    if r.u8().ok()? != 5 {
        return None;
    }
    r.take(3).ok()?; // flags, keep alive
    let len = r.varint().ok()? as usize;
    let mut p = Reader {
        b: r.b.get(..len).unwrap_or(r.b),
    };
    while let Ok(id) = p.u8() {
        let value = match property(id, Set::Connect)? {
            Kind::Byte => p.take(1).ok()?,
            Kind::U16 => p.take(2).ok()?,
            Kind::U32 => p.take(4).ok()?,
            Kind::VarInt => {
                p.varint().ok()?;
                continue;
            }
            Kind::Str | Kind::Bin => p.binary().ok()?,
            Kind::Pair => {
                p.binary().ok()?;
                p.binary().ok()?
            }
        };
        if id == 0x27 {
            return Some(u32::from_be_bytes(value.try_into().ok()?)).filter(|m| *m > 0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use mqttbytes::v5;

    use super::*;

    const V5: bool = true;
    const V311: bool = false;

    fn code(v5: bool, frame: &[u8]) -> Option<u8> {
        check(v5, frame).err().map(|v| v.code as u8)
    }

    /// Every packet `mqttbytes` writes passes.
    #[test]
    fn packets_as_mqttbytes_writes_them_pass() {
        let mut out = BytesMut::new();
        let mut c = v5::Connect::new("c");
        c.properties = Some(v5::ConnectProperties {
            session_expiry_interval: Some(10),
            receive_maximum: Some(5),
            max_packet_size: Some(1000),
            topic_alias_max: Some(3),
            request_response_info: Some(1),
            request_problem_info: Some(0),
            user_properties: vec![("a".into(), "b".into()), ("a".into(), "c".into())],
            authentication_method: None,
            authentication_data: None,
        });
        c.last_will = Some(v5::LastWill::new(
            "w",
            "x",
            mqttbytes::QoS::AtLeastOnce,
            true,
        ));
        c.login = Some(v5::Login::new("u", "p"));
        c.write(&mut out).expect("encode");
        let mut p = v5::Publish::new("t", mqttbytes::QoS::ExactlyOnce, "x");
        p.pkid = 3;
        p.dup = true;
        p.properties = Some(v5::PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(5),
            topic_alias: Some(1),
            response_topic: Some("r".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"c")),
            user_properties: vec![("k".into(), "v".into())],
            subscription_identifiers: Vec::new(),
            content_type: Some("text/plain".into()),
        });
        p.write(&mut out).expect("encode");
        let mut s = v5::Subscribe::new("a/#", mqttbytes::QoS::AtLeastOnce);
        s.pkid = 1;
        s.filters[0].nolocal = true;
        s.write(&mut out).expect("encode");
        v5::PubRel::new(3).write(&mut out).expect("encode");
        v5::Disconnect::new().write(&mut out).expect("encode");
        while !out.is_empty() {
            let h = mqttbytes::check(out.iter(), 1 << 20).expect("framed");
            let frame = out.split_to(h.frame_length());
            assert_eq!(check(V5, &frame), Ok(()), "{frame:?}");
        }
    }

    /// A packet: `first` byte, the remaining length, `body`.
    fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128);
        [&[first, body.len() as u8][..], body].concat()
    }

    #[test]
    fn fixed_header_flags_and_reserved_bits() {
        // PUBREL / SUBSCRIBE / UNSUBSCRIBE with flags 0000.
        assert_eq!(code(V311, &frame(0x60, b"\x00\x01")), Some(0x81));
        assert_eq!(code(V311, &frame(0x62, b"\x00\x01")), None);
        assert_eq!(
            code(V5, &frame(0x80, b"\x00\x01\x00\x00\x01a\x00")),
            Some(0x81)
        );
        assert_eq!(code(V5, &frame(0x82, b"\x00\x01\x00\x00\x01a\x00")), None);
        assert_eq!(code(V311, &frame(0xa0, b"\x00\x01\x00\x01a")), Some(0x81));
        assert_eq!(code(V311, &frame(0xa2, b"\x00\x01\x00\x01a")), None);
        // PINGREQ with a flag.
        assert_eq!(code(V311, &frame(0xc1, b"")), Some(0x81));
        // QoS 0 with DUP; QoS 3.
        assert_eq!(code(V311, &frame(0x38, b"\x00\x01a")), Some(0x81));
        assert_eq!(code(V311, &frame(0x36, b"\x00\x01a\x00\x01")), Some(0x81));
        assert_eq!(code(V311, &frame(0x3a, b"\x00\x01a\x00\x01")), None);
        // CONNECT with the reserved flag.
        let connect = |flags: u8, tail: &[u8]| {
            let body = [
                &b"\x00\x04MQTT\x04"[..],
                &[flags],
                b"\x00\x3c\x00\x01x",
                tail,
            ];
            frame(0x10, &body.concat())
        };
        assert_eq!(code(V311, &connect(0x03, b"")), Some(0x81));
        assert_eq!(code(V311, &connect(0x02, b"")), None);
        // Will QoS without a will; password without user name (3.1.1 only).
        assert_eq!(code(V311, &connect(0x0a, b"")), Some(0x81));
        assert_eq!(code(V311, &connect(0x42, b"\x00\x01p")), Some(0x81));
        assert_eq!(code(V311, &connect(0xc2, b"\x00\x01u\x00\x01p")), None);
        // SUBSCRIBE options: reserved bits (v5 6-7, 3.1.1 2-7), no local on a share.
        assert_eq!(
            code(V5, &frame(0x82, b"\x00\x01\x00\x00\x01a\x41")),
            Some(0x81)
        );
        assert_eq!(
            code(V311, &frame(0x82, b"\x00\x01\x00\x01a\x04")),
            Some(0x81)
        );
        assert_eq!(
            code(V5, &frame(0x82, b"\x00\x01\x00\x00\x0a$share/g/a\x05")),
            Some(0x82)
        );
        assert_eq!(
            code(V5, &frame(0x82, b"\x00\x01\x00\x00\x0a$share/g/a\x01")),
            None
        );
        assert_eq!(
            code(V5, &frame(0x82, b"\x00\x01\x00\x00\x01a\x30")),
            Some(0x82)
        );
    }

    #[test]
    fn property_sets() {
        let connect = |props: &[u8]| {
            frame(
                0x10,
                &[
                    &b"\x00\x04MQTT\x05\x02\x00\x3c"[..],
                    &[props.len() as u8],
                    props,
                    b"\x00\x01x",
                ]
                .concat(),
            )
        };
        // Session Expiry Interval twice [MQTT-3.1.4-2]; a user property twice is fine.
        assert_eq!(
            code(V5, &connect(b"\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02")),
            Some(0x82)
        );
        assert_eq!(
            code(V5, &connect(b"\x26\x00\x01k\x00\x01v\x26\x00\x00\x00\x00")),
            None
        );
        assert_eq!(code(V5, &connect(b"\x11\x00\x00\x00\x01")), None);
        // Topic Alias (a PUBLISH property) in CONNECT; a property cut short.
        assert_eq!(code(V5, &connect(b"\x23\x00\x01")), Some(0x81));
        assert_eq!(code(V5, &connect(b"\x11\x00\x00")), Some(0x81));
        // Payload format indicator 2 in PUBLISH; properties running past the packet.
        assert_eq!(code(V5, &frame(0x30, b"\x00\x01a\x02\x01\x02")), Some(0x82));
        assert_eq!(code(V5, &frame(0x30, b"\x00\x01a\x05\x01")), Some(0x81));
        assert_eq!(code(V5, &frame(0x30, b"\x00\x01a\x02\x01\x01hi")), None);
        // PUBACK with a reason string twice; the short forms.
        assert_eq!(
            code(
                V5,
                &frame(0x40, b"\x00\x01\x00\x08\x1f\x00\x01a\x1f\x00\x01b")
            ),
            Some(0x82)
        );
        assert_eq!(code(V5, &frame(0x40, b"\x00\x01")), None);
        assert_eq!(code(V5, &frame(0x40, b"\x00\x01\x10")), None);
        // The maximum packet size a malformed CONNECT states is still read.
        let stated = connect(b"\x27\x00\x00\x00\x1e\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02");
        assert_eq!(code(V5, &stated), Some(0x82));
        assert_eq!(stated_max_packet(&stated), Some(30));
        assert_eq!(stated_max_packet(&connect(b"\x11\x00\x00\x00\x01")), None);
        // Strings: not UTF-8, or with U+0000 [MQTT-1.5.4-1, 1.5.4-2].
        assert_eq!(
            code(V5, &frame(0x30, b"\x00\x01a\x03\x03\x00\x01\xff")),
            Some(0x81)
        );
        assert_eq!(code(V5, &frame(0x30, b"\x00\x02a\x00\x00")), Some(0x81));
        assert_eq!(
            code(V5, &frame(0x82, b"\x00\x01\x00\x00\x02a\x00\x01")),
            Some(0x81)
        );
        // DISCONNECT with a session expiry twice.
        assert_eq!(
            code(
                V5,
                &frame(0xe0, b"\x00\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x01")
            ),
            Some(0x82)
        );
    }
}
