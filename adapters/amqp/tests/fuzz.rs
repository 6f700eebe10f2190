//! Property tests over arbitrary input: the frame decoder and the engine must never panic,
//! whatever a peer sends, and must stay silent once they closed. A bounded run is part of
//! every `cargo test` (set `PROPTEST_CASES` for a longer hunt).

use bytes::BytesMut;
use fe2o3_amqp_types::{
    definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode},
    messaging::{Accepted, DeliveryState, Source, Target, TargetArchetype},
    performatives::{Attach, Begin, ChannelMax, Flow, MaxFrameSize, Open, Performative, Transfer},
};
use proptest::prelude::*;
use serde_bytes::ByteBuf;
use wharf_amqp::{
    engine::{Config, Connection, Event},
    frame::{self, HEADER_AMQP, TYPE_AMQP},
    message::Sections,
};

fn frame(channel: u16, p: Performative, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame::write_frame(&mut out, TYPE_AMQP, channel, Some(&p), payload).expect("encodes");
    out.to_vec()
}

/// Header, open and begin: input that gets past the handshake into the session.
fn prefix() -> Vec<u8> {
    let mut b = HEADER_AMQP.to_vec();
    b.extend(frame(
        0,
        Performative::Open(Open {
            container_id: "fuzz".into(),
            hostname: None,
            max_frame_size: MaxFrameSize(4096),
            channel_max: ChannelMax(4),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }),
        &[],
    ));
    b.extend(frame(
        0,
        Performative::Begin(Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: 100,
            outgoing_window: 100,
            handle_max: Handle(8),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }),
        &[],
    ));
    b
}

/// Well-formed frames a peer may send, with fields drawn at random.
fn frames() -> impl Strategy<Value = Vec<u8>> {
    (0u8..4, 0u32..4, any::<u32>(), any::<bool>(), 0u16..2).prop_map(
        |(kind, handle, n, flag, channel)| {
            let p = match kind {
                0 => Performative::Attach(Attach {
                    name: format!("l{handle}"),
                    handle: Handle(handle),
                    role: if flag { Role::Sender } else { Role::Receiver },
                    snd_settle_mode: SenderSettleMode::Mixed,
                    rcv_settle_mode: ReceiverSettleMode::First,
                    source: Some(Box::new(Source::default())),
                    target: Some(Box::new(TargetArchetype::Target(Target::default()))),
                    unsettled: None,
                    incomplete_unsettled: false,
                    initial_delivery_count: Some(0),
                    max_message_size: None,
                    offered_capabilities: None,
                    desired_capabilities: None,
                    properties: None,
                }),
                1 => Performative::Flow(Flow {
                    next_incoming_id: Some(n % 7),
                    incoming_window: n % 50,
                    next_outgoing_id: n % 5,
                    outgoing_window: 100,
                    handle: Some(Handle(handle)),
                    delivery_count: Some(n % 3),
                    link_credit: Some(n % 20),
                    available: None,
                    drain: flag,
                    echo: !flag,
                    properties: None,
                }),
                2 => Performative::Transfer(Transfer {
                    handle: Handle(handle),
                    delivery_id: Some(n % 100),
                    delivery_tag: Some(ByteBuf::from(vec![1])),
                    message_format: Some(0),
                    settled: Some(flag),
                    more: n % 4 == 0,
                    rcv_settle_mode: None,
                    state: None,
                    resume: false,
                    aborted: n % 11 == 0,
                    batchable: false,
                }),
                _ => Performative::Detach(fe2o3_amqp_types::performatives::Detach {
                    handle: Handle(handle),
                    closed: flag,
                    error: None,
                }),
            };
            frame(channel, p, &[0x00, 0x53, 0x77, 0xa1, 1, b'x'])
        },
    )
}

/// Feed `chunks`, answering every event the way a broker would; the engine must not panic and
/// must not produce output after it is done.
fn drive(chunks: &[Vec<u8>]) {
    let mut c = Connection::new(Config {
        max_frame_size: 8192,
        link_credit: 3,
        ..Config::default()
    });
    let mut tag = 0u64;
    for chunk in chunks {
        let was_done = c.is_done();
        c.feed(chunk);
        while let Some(e) = c.poll_event() {
            match e {
                Event::Attach { link, attach } => {
                    if tag.is_multiple_of(3) {
                        c.refuse_attach(
                            link,
                            attach.name,
                            fe2o3_amqp_types::definitions::AmqpError::NotFound.into(),
                        );
                    } else {
                        c.accept_attach(
                            link,
                            attach.name,
                            attach.source.map(|s| *s),
                            None,
                            SenderSettleMode::Mixed,
                            ReceiverSettleMode::First,
                        );
                    }
                }
                Event::Message(d) => {
                    let _ = Sections::parse(&d.payload);
                    c.settle_received(d.link, d.delivery_id, DeliveryState::Accepted(Accepted {}));
                }
                Event::Credit { link, drain, .. } => {
                    tag += 1;
                    let _ = c.send(
                        link,
                        &tag.to_be_bytes(),
                        &[0u8; 5000],
                        tag.is_multiple_of(2),
                    );
                    if drain {
                        c.drained(link);
                    }
                }
                Event::SaslInit { .. } => c.sasl_outcome(tag.is_multiple_of(2)),
                _ => {}
            }
            tag += 1;
        }
        c.tick(tag * 100);
        let out = c.take_output();
        if was_done {
            assert!(out.is_empty(), "output after the connection ended");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(header in prop::bool::ANY, bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut input = if header { HEADER_AMQP.to_vec() } else { b"AMQP\x03\x01\x00\x00".to_vec() };
        input.extend(bytes);
        drive(&[input]);
    }

    #[test]
    fn random_frames_in_a_session_never_panic(
        frames in prop::collection::vec(frames(), 0..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut all = prefix();
        for f in &frames {
            all.extend(f);
        }
        // Split the input at a random point, as reads do.
        let at = cut.index(all.len() + 1);
        drive(&[all[..at].to_vec(), all[at..].to_vec()]);
    }

    #[test]
    fn sections_and_values_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = frame::value_len(&bytes);
        let _ = Sections::parse(&bytes);
    }
}
