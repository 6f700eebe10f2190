//! AMQP 1.0 framing (spec part 2.3): protocol headers, frame headers, and the length of an
//! encoded value, which is what it takes to find where a performative ends and a transfer's
//! payload (or a message's next section) begins without decoding it.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

/// `AMQP 0 1.0.0`: plain AMQP.
pub const HEADER_AMQP: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// `AMQP 3 1.0.0`: a SASL layer first.
pub const HEADER_SASL: [u8; 8] = *b"AMQP\x03\x01\x00\x00";

/// Frame types (byte 5 of the frame header).
pub const TYPE_AMQP: u8 = 0;
pub const TYPE_SASL: u8 = 1;

/// The smallest max-frame-size a peer may announce (spec 2.7.1: 512).
pub const MIN_MAX_FRAME_SIZE: u32 = 512;

/// What an 8-byte protocol header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Amqp,
    Sasl,
    /// `AMQP 2 …`: TLS negotiated in-band, which Wharf does not offer (use the TLS port).
    Tls,
}

/// Read a protocol header; `None` if it is not AMQP 1.0.0.
pub fn protocol(header: &[u8]) -> Option<Protocol> {
    if header.len() < 8 || &header[..4] != b"AMQP" || header[5..8] != [1, 0, 0] {
        return None;
    }
    match header[4] {
        0 => Some(Protocol::Amqp),
        2 => Some(Protocol::Tls),
        3 => Some(Protocol::Sasl),
        _ => None,
    }
}

/// The fixed part of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whole frame, header included.
    pub size: u32,
    /// Data offset in 4-byte words (at least 2).
    pub doff: u8,
    pub kind: u8,
    pub channel: u16,
}

impl FrameHeader {
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        if b.len() < 8 {
            return None;
        }
        Some(FrameHeader {
            size: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            doff: b[4],
            kind: b[5],
            channel: u16::from_be_bytes([b[6], b[7]]),
        })
    }
}

/// Append a frame: header, the encoded performative (if any), the payload.
pub fn write_frame<T: Serialize>(
    out: &mut BytesMut,
    kind: u8,
    channel: u16,
    body: Option<&T>,
    payload: &[u8],
) -> Result<(), serde_amqp::Error> {
    let encoded = match body {
        Some(b) => serde_amqp::to_vec(b)?,
        None => Vec::new(),
    };
    let size = 8 + encoded.len() + payload.len();
    out.reserve(size);
    out.put_u32(size as u32);
    out.put_u8(2);
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_slice(&encoded);
    out.put_slice(payload);
    Ok(())
}

/// An empty frame (a heartbeat).
pub fn write_empty(out: &mut BytesMut) {
    out.put_slice(&[0, 0, 0, 8, 2, TYPE_AMQP, 0, 0]);
}

/// Deepest nesting of described types accepted before the input is called malformed.
const MAX_DEPTH: usize = 16;

/// Length of the AMQP-encoded value at the start of `b` (spec part 1.6), or `None` if `b`
/// does not hold a whole, well-formed value constructor.
pub fn value_len(b: &[u8]) -> Option<usize> {
    value_len_at(b, 0)
}

fn value_len_at(b: &[u8], depth: usize) -> Option<usize> {
    let code = *b.first()?;
    let sized = |width: usize| -> Option<usize> {
        let n = match width {
            1 => *b.get(1)? as usize,
            _ => u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize,
        };
        1usize.checked_add(width)?.checked_add(n)
    };
    let len = match code {
        0x00 => {
            if depth >= MAX_DEPTH {
                return None;
            }
            let d = value_len_at(&b[1..], depth + 1)?;
            let v = value_len_at(b.get(1 + d..)?, depth + 1)?;
            1 + d + v
        }
        0x40..=0x45 => 1,
        0x50..=0x56 => 2,
        0x60 | 0x61 => 3,
        0x70..=0x74 => 5,
        0x80..=0x84 => 9,
        0x94 | 0x98 => 17,
        0xa0 | 0xa1 | 0xa3 | 0xc0 | 0xc1 | 0xe0 => sized(1)?,
        0xb0 | 0xb1 | 0xb3 | 0xd0 | 0xd1 | 0xf0 => sized(4)?,
        _ => return None,
    };
    (len <= b.len()).then_some(len)
}

/// The descriptor code of a described value with a small-ulong or ulong descriptor
/// (`0x00 0x53 code` or `0x00 0x80 u64`), as every performative and section has.
pub fn descriptor_code(b: &[u8]) -> Option<u64> {
    match b {
        [0x00, 0x53, code, ..] => Some(*code as u64),
        [0x00, 0x80, rest @ ..] if rest.len() >= 8 => {
            Some(u64::from_be_bytes(rest[..8].try_into().ok()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_headers() {
        assert_eq!(protocol(&HEADER_AMQP), Some(Protocol::Amqp));
        assert_eq!(protocol(&HEADER_SASL), Some(Protocol::Sasl));
        assert_eq!(protocol(b"AMQP\x02\x01\x00\x00"), Some(Protocol::Tls));
        assert_eq!(protocol(b"AMQP\x00\x00\x09\x01"), None, "AMQP 0-9-1");
        assert_eq!(protocol(b"GET / HT"), None);
    }

    #[test]
    fn value_lengths() {
        assert_eq!(value_len(&[0x40]), Some(1));
        assert_eq!(value_len(&[0x52, 7]), Some(2));
        assert_eq!(value_len(&[0xa1, 3, b'a', b'b', b'c', 0xff]), Some(5));
        assert_eq!(value_len(&[0xa1, 3, b'a']), None, "truncated");
        assert_eq!(value_len(&[0xb0, 0, 0, 0, 2, 1, 2]), Some(7));
        assert_eq!(value_len(&[0xb0, 0xff, 0xff, 0xff, 0xff]), None);
        // described list: descriptor smallulong 0x70 (header), list0
        assert_eq!(value_len(&[0x00, 0x53, 0x70, 0x45]), Some(4));
        assert_eq!(descriptor_code(&[0x00, 0x53, 0x70, 0x45]), Some(0x70));
        // nesting is bounded
        assert_eq!(value_len(&[0u8; 64]), None);
        assert_eq!(value_len(&[0x33]), None, "reserved constructor");
    }

    #[test]
    fn encoded_values_measure_as_serde_amqp_writes_them() {
        use fe2o3_amqp_types::performatives::Flow;
        let flow = Flow {
            next_incoming_id: Some(1),
            incoming_window: 100,
            next_outgoing_id: 1,
            outgoing_window: 100,
            handle: None,
            delivery_count: None,
            link_credit: None,
            available: None,
            drain: false,
            echo: false,
            properties: None,
        };
        let bytes = serde_amqp::to_vec(&flow).expect("encodes");
        assert_eq!(value_len(&bytes), Some(bytes.len()));
        assert_eq!(descriptor_code(&bytes), Some(0x13));
    }
}
