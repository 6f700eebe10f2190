//! The engine with no sockets: frames in, frames and events out.

use bytes::{Buf, BytesMut};
use fe2o3_amqp_types::{
    definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode},
    messaging::{Accepted, DeliveryState, Source, Target, TargetArchetype},
    performatives::{
        Attach, Begin, ChannelMax, Close, Detach, Disposition, Flow, MaxFrameSize, Open,
        Performative, Transfer,
    },
    sasl::{SaslInit, SaslOutcome},
};
use serde_bytes::ByteBuf;
use wharf_amqp::{
    engine::{Config, Connection, Event, LinkId},
    frame::{self, FrameHeader, HEADER_AMQP, HEADER_SASL, TYPE_AMQP, TYPE_SASL},
};

fn frame_bytes(kind: u8, channel: u16, p: &impl serde::Serialize, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame::write_frame(&mut out, kind, channel, Some(p), payload).expect("encodes");
    out.to_vec()
}

fn amqp(channel: u16, p: Performative) -> Vec<u8> {
    frame_bytes(TYPE_AMQP, channel, &p, &[])
}

/// Split output into (header bytes skipped) performatives with their payloads.
fn frames(mut out: BytesMut) -> Vec<(u16, Performative, Vec<u8>)> {
    let mut got = Vec::new();
    while out.len() >= 8 {
        if &out[..4] == b"AMQP" {
            out.advance(8);
            continue;
        }
        let h = FrameHeader::parse(&out).expect("header");
        let mut f = out.split_to(h.size as usize);
        f.advance(usize::from(h.doff) * 4);
        if f.is_empty() || h.kind == TYPE_SASL {
            continue;
        }
        let len = frame::value_len(&f).expect("performative");
        let p: Performative = serde_amqp::from_slice(&f[..len]).expect("decodes");
        got.push((h.channel, p, f[len..].to_vec()));
    }
    got
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn open() -> Performative {
    Performative::Open(Open {
        container_id: "client-1".into(),
        hostname: Some("localhost".into()),
        max_frame_size: MaxFrameSize(1024),
        channel_max: ChannelMax(10),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    })
}

fn begin() -> Performative {
    Performative::Begin(Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 1000,
        outgoing_window: 1000,
        handle_max: Handle(100),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    })
}

fn attach(handle: u32, role: Role, address: &str) -> Performative {
    Performative::Attach(Attach {
        name: format!("link-{handle}"),
        handle: Handle(handle),
        role,
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: Some(Box::new(Source {
            address: Some(address.into()),
            ..Default::default()
        })),
        target: Some(Box::new(TargetArchetype::Target(Target {
            address: Some(address.into()),
            ..Default::default()
        }))),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: Some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    })
}

fn flow(handle: u32, delivery_count: u32, credit: u32, drain: bool) -> Performative {
    Performative::Flow(Flow {
        next_incoming_id: Some(0),
        incoming_window: 1000,
        next_outgoing_id: 0,
        outgoing_window: 1000,
        handle: Some(Handle(handle)),
        delivery_count: Some(delivery_count),
        link_credit: Some(credit),
        available: None,
        drain,
        echo: false,
        properties: None,
    })
}

fn transfer(handle: u32, id: Option<u32>, more: bool) -> Performative {
    Performative::Transfer(Transfer {
        handle: Handle(handle),
        delivery_id: id,
        delivery_tag: id.map(|i| ByteBuf::from(i.to_be_bytes().to_vec())),
        message_format: Some(0),
        settled: Some(false),
        more,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    })
}

/// A connection past open and begin (no SASL), output drained.
fn session() -> Connection {
    let mut c = Connection::new(Config::default());
    c.feed(&HEADER_AMQP);
    c.feed(&amqp(0, open()));
    c.feed(&amqp(0, begin()));
    let out = frames(c.take_output());
    assert!(matches!(out[0].1, Performative::Open(_)));
    assert!(matches!(&out[1].1, Performative::Begin(b) if b.remote_channel == Some(0)));
    let ev = events(&mut c);
    assert!(
        matches!(&ev[0], Event::Opened { container_id, .. } if container_id == "client-1"),
        "{ev:?}"
    );
    c
}

/// Accept link `link-0`'s attach as the broker would for a plain queue.
fn accept(c: &mut Connection, link: LinkId) {
    c.accept_attach(
        link,
        "link-0".into(),
        None,
        None,
        SenderSettleMode::Mixed,
        ReceiverSettleMode::First,
    );
}

const LINK: LinkId = LinkId {
    channel: 0,
    handle: 0,
};

#[test]
fn sasl_plain_then_open() {
    let mut c = Connection::new(Config {
        allow_no_sasl: false,
        ..Config::default()
    });
    c.feed(&HEADER_SASL);
    let out = c.take_output();
    assert!(out.starts_with(&HEADER_SASL), "SASL header answered");
    let init = SaslInit {
        mechanism: "PLAIN".into(),
        initial_response: Some(b"\0alice\0secret".to_vec().into()),
        hostname: None,
    };
    // The init and the AMQP header that follows the outcome may come in one read.
    let mut bytes = frame_bytes(TYPE_SASL, 0, &init, &[]);
    c.feed(&bytes);
    let ev = events(&mut c);
    let Event::SaslInit {
        mechanism,
        response,
    } = &ev[0]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(mechanism, "PLAIN");
    assert_eq!(
        wharf_amqp::engine::sasl_plain(response),
        Some(("alice".into(), b"secret".to_vec()))
    );
    c.sasl_outcome(true);
    let out = c.take_output();
    let h = FrameHeader::parse(&out).expect("outcome frame");
    assert_eq!(h.kind, TYPE_SASL);
    let outcome: SaslOutcome =
        serde_amqp::from_slice(&out[8..h.size as usize]).expect("sasl-outcome");
    assert_eq!(outcome.code as u8, 0);
    bytes = HEADER_AMQP.to_vec();
    bytes.extend(amqp(0, open()));
    c.feed(&bytes);
    let out = c.take_output();
    assert!(out.starts_with(&HEADER_AMQP));
    assert!(matches!(frames(out)[0].1, Performative::Open(_)));
}

#[test]
fn plain_amqp_refused_when_sasl_is_required() {
    let mut c = Connection::new(Config {
        allow_no_sasl: false,
        ..Config::default()
    });
    c.feed(&HEADER_AMQP);
    assert_eq!(&c.take_output()[..], &HEADER_SASL, "the header we want");
    assert!(c.is_done());
    assert!(matches!(events(&mut c)[0], Event::Closed { .. }));
}

#[test]
fn incoming_transfers_are_whole_messages_and_credit_is_enforced() {
    let mut c = Connection::new(Config {
        link_credit: 2,
        ..Config::default()
    });
    c.feed(&HEADER_AMQP);
    c.feed(&amqp(0, open()));
    c.feed(&amqp(0, begin()));
    c.take_output();
    events(&mut c);
    c.feed(&amqp(0, attach(0, Role::Sender, "q")));
    let Event::Attach { link, attach } = events(&mut c).remove(0) else {
        panic!()
    };
    assert_eq!((link, attach.name.as_str()), (LINK, "link-0"));
    accept(&mut c, link);
    let out = frames(c.take_output());
    assert!(matches!(&out[0].1, Performative::Attach(a) if a.role == Role::Receiver));
    assert!(
        matches!(&out[1].1, Performative::Flow(f) if f.link_credit == Some(2)),
        "{out:?}"
    );
    // A message in two frames.
    c.feed(&frame_bytes(
        TYPE_AMQP,
        0,
        &transfer(0, Some(0), true),
        b"hel",
    ));
    assert!(events(&mut c).is_empty(), "not complete yet");
    c.feed(&frame_bytes(TYPE_AMQP, 0, &transfer(0, None, false), b"lo"));
    let ev = events(&mut c);
    let Event::Message(d) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (&d.payload[..], d.delivery_id, d.settled),
        (&b"hello"[..], 0, false)
    );
    c.settle_received(LINK, 0, DeliveryState::Accepted(Accepted {}));
    let out = frames(c.take_output());
    assert!(
        out.iter().any(|(_, p, _)| matches!(p, Performative::Disposition(d) if d.settled && d.first == 0 && d.role == Role::Receiver)),
        "{out:?}"
    );
    // Credit 2 was topped up after the read that used half of it: two more fit in one read.
    let mut two = frame_bytes(TYPE_AMQP, 0, &transfer(0, Some(1), false), b"a");
    two.extend(frame_bytes(
        TYPE_AMQP,
        0,
        &transfer(0, Some(2), false),
        b"b",
    ));
    c.feed(&two);
    assert_eq!(events(&mut c).len(), 2);
    let out = frames(c.take_output());
    let credit = out
        .iter()
        .rev()
        .find_map(|(_, p, _)| match p {
            Performative::Flow(f) => f.link_credit,
            _ => None,
        })
        .expect("a flow");
    assert_eq!(credit, 2, "{out:?}");
    // Three in one read with credit 2: the third is beyond credit.
    let mut three = Vec::new();
    for (id, b) in [(3, b"c"), (4, b"d"), (5, b"e")] {
        three.extend(frame_bytes(TYPE_AMQP, 0, &transfer(0, Some(id), false), b));
    }
    c.feed(&three);
    let out = frames(c.take_output());
    let detach = out.iter().find_map(|(_, p, _)| match p {
        Performative::Detach(d) => Some(d.clone()),
        _ => None,
    });
    let detach = detach.expect("transfer beyond credit detaches");
    assert!(detach.closed);
    assert_eq!(
        format!("{:?}", detach.error.expect("error").condition),
        "LinkError(TransferLimitExceeded)"
    );
}

#[test]
fn outgoing_messages_respect_credit_frame_size_and_drain() {
    let mut c = session();
    c.feed(&amqp(0, attach(0, Role::Receiver, "q")));
    let Event::Attach { link, .. } = events(&mut c).remove(0) else {
        panic!()
    };
    accept(&mut c, link);
    c.take_output();
    assert_eq!(
        c.send(link, b"t", b"x", false),
        Err(wharf_amqp::engine::SendError::NoCredit)
    );
    c.feed(&amqp(0, flow(0, 0, 3, false)));
    let ev = events(&mut c);
    assert!(
        matches!(
            ev[0],
            Event::Credit {
                credit: 3,
                drain: false,
                ..
            }
        ),
        "{ev:?}"
    );
    // 3000 bytes at the peer's max-frame-size 1024: three transfer frames, `more` on two.
    let big = vec![7u8; 3000];
    assert_eq!(c.send(link, b"t0", &big, false), Ok(0));
    let out = frames(c.take_output());
    assert_eq!(out.len(), 3, "{out:?}");
    let mut body = Vec::new();
    for (i, (_, p, payload)) in out.iter().enumerate() {
        let Performative::Transfer(t) = p else {
            panic!()
        };
        assert_eq!(t.more, i < 2);
        body.extend_from_slice(payload);
    }
    assert_eq!(body, big);
    assert_eq!(c.credit(link), 2);
    // The peer settles it (unsettled, rcv-settle-mode second): we hear of it.
    c.feed(&amqp(
        0,
        Performative::Disposition(Disposition {
            role: Role::Receiver,
            first: 0,
            last: None,
            settled: false,
            state: Some(DeliveryState::Accepted(Accepted {})),
            batchable: false,
        }),
    ));
    assert!(matches!(
        events(&mut c)[0],
        Event::Disposition {
            delivery_id: 0,
            settled: false,
            ..
        }
    ));
    // Drain with 2 credit left: after sending what there is (nothing), delivery-count moves on.
    c.feed(&amqp(0, flow(0, 0, 3, true)));
    let ev = events(&mut c);
    assert!(
        matches!(
            ev[0],
            Event::Credit {
                credit: 2,
                drain: true,
                ..
            }
        ),
        "{ev:?}"
    );
    c.drained(link);
    let out = frames(c.take_output());
    let Performative::Flow(f) = &out[0].1 else {
        panic!("{out:?}")
    };
    assert_eq!(
        (f.delivery_count, f.link_credit, f.drain),
        (Some(3), Some(0), true)
    );
    assert_eq!(c.credit(link), 0);
}

#[test]
fn credit_sent_with_the_attach_is_kept_until_the_broker_answers() {
    let mut c = session();
    let mut both = amqp(0, attach(0, Role::Receiver, "q"));
    both.extend(amqp(0, flow(0, 0, 200, false)));
    c.feed(&both);
    let ev = events(&mut c);
    assert_eq!(ev.len(), 1, "{ev:?}");
    accept(&mut c, LINK);
    assert!(matches!(
        events(&mut c)[..],
        [Event::Credit {
            credit: 200,
            drain: false,
            ..
        }]
    ));
    assert_eq!(c.credit(LINK), 200);
}

#[test]
fn echo_is_answered_with_our_link_state() {
    let mut c = session();
    c.feed(&amqp(0, attach(0, Role::Receiver, "q")));
    events(&mut c);
    accept(&mut c, LINK);
    c.take_output();
    let mut f = flow(0, 0, 7, false);
    if let Performative::Flow(f) = &mut f {
        f.echo = true;
    }
    c.feed(&amqp(0, f));
    let out = frames(c.take_output());
    let Performative::Flow(reply) = &out[0].1 else {
        panic!("{out:?}")
    };
    assert_eq!(
        (
            reply.handle.clone(),
            reply.delivery_count,
            reply.link_credit,
            reply.echo
        ),
        (Some(Handle(0)), Some(0), Some(7), false)
    );
}

#[test]
fn refused_attach_is_an_attach_without_terminus_then_a_detach() {
    let mut c = session();
    c.feed(&amqp(0, attach(3, Role::Receiver, "nowhere")));
    events(&mut c);
    let link = LinkId {
        channel: 0,
        handle: 3,
    };
    c.refuse_attach(
        link,
        "link-3".into(),
        fe2o3_amqp_types::definitions::Error::new(
            fe2o3_amqp_types::definitions::AmqpError::NotFound,
            Some("no address".to_string()),
            None,
        ),
    );
    let out = frames(c.take_output());
    assert!(matches!(&out[0].1, Performative::Attach(a) if a.source.is_none()));
    assert!(matches!(&out[1].1, Performative::Detach(d) if d.closed && d.error.is_some()));
    // The peer's detach answers ours: no event, handle free again.
    c.feed(&amqp(
        0,
        Performative::Detach(Detach {
            handle: Handle(3),
            closed: true,
            error: None,
        }),
    ));
    assert!(events(&mut c).is_empty());
    c.feed(&amqp(0, attach(3, Role::Receiver, "again")));
    assert!(matches!(events(&mut c)[0], Event::Attach { .. }));
}

#[test]
fn protocol_violations_close_with_a_condition() {
    // Frame on a channel with no session.
    let mut c = session();
    c.feed(&amqp(5, flow(0, 0, 1, false)));
    let out = frames(c.take_output());
    let Performative::Close(Close { error: Some(e) }) = &out[0].1 else {
        panic!("{out:?}")
    };
    assert!(format!("{:?}", e.condition).contains("NotFound"));
    assert!(c.is_done());
    // Flow for a handle that is not attached: the session ends with unattached-handle.
    let mut c = session();
    c.feed(&amqp(0, flow(9, 0, 1, false)));
    let out = frames(c.take_output());
    let Performative::End(end) = &out[0].1 else {
        panic!("{out:?}")
    };
    assert!(format!("{:?}", end.error).contains("UnattachedHandle"));
    // A second open.
    let mut c = session();
    c.feed(&amqp(0, open()));
    assert!(matches!(
        frames(c.take_output())[0].1,
        Performative::Close(Close { error: Some(_) })
    ));
    // An oversize frame.
    let mut c = session();
    c.feed(&[0x00, 0x10, 0x00, 0x00, 2, 0, 0, 0]);
    assert!(matches!(
        frames(c.take_output())[0].1,
        Performative::Close(Close { error: Some(_) })
    ));
    assert!(matches!(
        events(&mut c).last(),
        Some(Event::Closed { by_peer: false, .. })
    ));
}

#[test]
fn heartbeats_and_idle_timeout() {
    let mut c = Connection::new(Config {
        idle_timeout_ms: Some(1000),
        ..Config::default()
    });
    c.feed(&HEADER_AMQP);
    let mut o = open();
    if let Performative::Open(o) = &mut o {
        o.idle_time_out = Some(400);
    }
    c.feed(&amqp(0, o));
    c.tick(10_000);
    c.take_output();
    c.tick(10_100);
    assert!(c.take_output().is_empty(), "not yet");
    c.tick(10_250);
    assert_eq!(
        &c.take_output()[..],
        &[0, 0, 0, 8, 2, 0, 0, 0],
        "heartbeat at half"
    );
    c.tick(11_100);
    c.take_output();
    assert!(c.is_done(), "silent for over 1 s");
}

/// A drain answer never overtakes transfers waiting for the peer's session window: the peer
/// would count them as never sent (its drain over with messages still to come).
#[test]
fn drain_answer_waits_behind_transfers_held_by_the_session_window() {
    let mut c = Connection::new(Config::default());
    c.feed(&HEADER_AMQP);
    c.feed(&amqp(0, open()));
    // A session whose incoming window takes one transfer at a time.
    let Performative::Begin(mut b) = begin() else {
        panic!()
    };
    b.incoming_window = 1;
    c.feed(&amqp(0, Performative::Begin(b)));
    c.take_output();
    events(&mut c);
    c.feed(&amqp(0, attach(0, Role::Receiver, "q")));
    let Event::Attach { link, .. } = events(&mut c).remove(0) else {
        panic!()
    };
    accept(&mut c, link);
    let Performative::Flow(mut credit) = flow(0, 0, 8, true) else {
        panic!()
    };
    credit.incoming_window = 1;
    c.feed(&amqp(0, Performative::Flow(credit)));
    events(&mut c);
    c.take_output();
    for i in 0..3u8 {
        assert_eq!(c.send(link, &[i], b"m", false), Ok(u32::from(i)));
    }
    c.drained(link);
    let kinds = |out: Vec<(u16, Performative, Vec<u8>)>| {
        out.into_iter()
            .map(|(_, p, _)| match p {
                Performative::Transfer(t) => format!("transfer {:?}", t.delivery_id),
                Performative::Flow(f) => format!("flow {:?}", f.delivery_count),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(frames(c.take_output())), ["transfer Some(0)"]);
    // The peer widens its window: the other transfers, then the drain answer.
    let mut widen = |next_incoming: u32| {
        c.feed(&amqp(
            0,
            Performative::Flow(Flow {
                next_incoming_id: Some(next_incoming),
                incoming_window: 1,
                next_outgoing_id: 0,
                outgoing_window: 1000,
                handle: None,
                delivery_count: None,
                link_credit: None,
                available: None,
                drain: false,
                echo: false,
                properties: None,
            }),
        ));
        kinds(frames(c.take_output()))
    };
    assert_eq!(widen(1), ["transfer Some(1)"]);
    assert_eq!(widen(2), ["transfer Some(2)", "flow Some(8)"]);
}
