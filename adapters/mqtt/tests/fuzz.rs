//! Property tests over arbitrary input: the codec and the session state machine must never
//! panic, whatever a client sends, and must stop talking once they decided to close.
//! A bounded run is part of every `cargo test` (set `PROPTEST_CASES` for a longer hunt).

use std::time::Instant;

use bytes::BytesMut;
use mqttbytes::{QoS, v4, v5};
use proptest::prelude::*;
use wharf_adapter_core::errors::StoreFailure;
use wharf_mqtt::{
    codec::{self, Peek, Version, peek_connect},
    message::Message,
    session::{Action, Session, SessionSettings},
};

/// Drive one connection's worth of input through the codec and a session the way the
/// driver does; returns how many packets were decoded.
fn drive(input: &[u8]) -> usize {
    let now = Instant::now();
    let mut s = Session::new(now, SessionSettings::default(), "fuzz".into());
    let mut buf = BytesMut::from(input);
    let version = match peek_connect(&buf) {
        Peek::Connect(v) => v,
        _ => return 0,
    };
    let mut decoded = 0;
    let mut closed = false;
    let mut offset = 0u64;
    loop {
        let packet = match codec::read(version, &mut buf, 1 << 16) {
            Ok(p) => p,
            Err(_) => break,
        };
        decoded += 1;
        let mut actions = s.handle(now, packet);
        let mut i = 0;
        while i < actions.len() {
            let more = match &actions[i] {
                Action::Resume { .. } => s.resumed(None),
                Action::Append { token, .. } => {
                    let failures = [
                        StoreFailure::Unavailable,
                        StoreFailure::Closed,
                        StoreFailure::Refused,
                    ];
                    let result = match offset % 6 {
                        0 | 3 => Err(failures[(offset / 3 % 3) as usize]),
                        _ => Ok(()),
                    };
                    s.appended(*token, result)
                }
                Action::Close { .. } | Action::Disconnected { .. } => {
                    closed = true;
                    Vec::new()
                }
                Action::Send(p) => {
                    // Every packet the session sends must encode for the client's version.
                    let mut out = BytesMut::new();
                    codec::write(version, p, &mut out).expect("server packets encode");
                    Vec::new()
                }
                _ => Vec::new(),
            };
            actions.extend(more);
            i += 1;
        }
        // Deliveries interleaved with client input.
        offset += 1;
        let m = Message::new("fuzz/topic", QoS::ExactlyOnce, "payload");
        // As the driver does: nothing new is offered while a message is held.
        let delivered = match s.held_at() {
            None => s.deliver(m, offset, false, 0),
            Some(_) => s.deliver_held(0),
        };
        if closed {
            assert!(
                s.handle(now, v5::Packet::PingReq).is_empty(),
                "a closed session stays silent"
            );
            assert!(delivered.is_empty(), "a closed session delivers nothing");
            break;
        }
    }
    decoded
}

/// Decode packets until the input is used up or a packet is refused; returns how many.
fn decode_all(version: Version, input: &[u8]) -> usize {
    let mut buf = BytesMut::from(input);
    let mut n = 0;
    while codec::read(version, &mut buf, 1 << 16).is_ok() {
        n += 1;
    }
    n
}

fn connect_bytes(v5: bool) -> Vec<u8> {
    let mut b = BytesMut::new();
    if v5 {
        let mut c = v5::Connect::new("fuzzer");
        c.clean_session = false;
        c.write(&mut b).expect("encode");
    } else {
        v4::Connect::new("fuzzer").write(&mut b).expect("encode");
    }
    b.to_vec()
}

/// Well-formed packets a client may send, to get past the decoder into the session.
fn packet_bytes(v5: bool) -> impl Strategy<Value = Vec<u8>> {
    (0u8..8, any::<u16>(), "[a-z/+#]{0,12}").prop_map(move |(kind, id, topic)| {
        let mut b = BytesMut::new();
        let qos = match id % 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let id = id.max(1);
        let r = if v5 {
            match kind {
                0 => {
                    let mut p = v5::Publish::new(topic, qos, "x");
                    p.pkid = id;
                    p.write(&mut b)
                }
                1 => v5::PubAck::new(id).write(&mut b),
                2 => v5::PubRec::new(id).write(&mut b),
                3 => v5::PubRel::new(id).write(&mut b),
                4 => v5::PubComp::new(id).write(&mut b),
                5 => {
                    let mut s = v5::Subscribe::new(topic, qos);
                    s.pkid = id;
                    s.write(&mut b)
                }
                6 => v5::PingReq.write(&mut b),
                _ => v5::Disconnect::new().write(&mut b),
            }
        } else {
            match kind {
                0 => {
                    let mut p = v4::Publish::new(topic, qos, "x");
                    p.pkid = id;
                    p.write(&mut b)
                }
                1 => v4::PubAck::new(id).write(&mut b),
                2 => v4::PubRec::new(id).write(&mut b),
                3 => v4::PubRel::new(id).write(&mut b),
                4 => v4::PubComp::new(id).write(&mut b),
                5 => {
                    let mut s = v4::Subscribe::new(topic, qos);
                    s.pkid = id;
                    s.write(&mut b)
                }
                6 => v4::PingReq.write(&mut b),
                _ => v4::Disconnect.write(&mut b),
            }
        };
        // Some combinations do not encode (packet id 0 at QoS 0 is fine, empty topics...).
        if r.is_err() {
            b.clear();
        }
        b.to_vec()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2_000)
    ))]

    /// Random bytes are almost never a CONNECT, so the connection path alone stops at
    /// `peek_connect`: the same bytes also go straight into the decoder of each version, as
    /// they would after a CONNECT (the next test puts them into a session behind one).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        drive(&bytes);
        for version in [Version::V311, Version::V5] {
            decode_all(version, &bytes);
        }
    }

    #[test]
    fn a_connect_then_arbitrary_bytes_never_panic(
        v5 in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut input = connect_bytes(v5);
        input.extend(tail);
        prop_assert!(drive(&input) >= 1);
    }

    #[test]
    fn sequences_of_valid_packets_never_panic(
        (v5, packets) in any::<bool>().prop_flat_map(|v5| {
            (Just(v5), proptest::collection::vec(packet_bytes(v5), 0..40))
        }),
        flip in proptest::option::of((any::<usize>(), any::<u8>())),
    ) {
        let mut input = connect_bytes(v5);
        for p in packets {
            input.extend(p);
        }
        // Optionally corrupt one byte after the CONNECT.
        if let Some((at, byte)) = flip {
            let n = connect_bytes(v5).len();
            if input.len() > n {
                let i = n + at % (input.len() - n);
                input[i] ^= byte;
            }
        }
        drive(&input);
    }
}
