//! The AMQP 1.0 connection engine: a state machine without I/O.
//!
//! Bytes from the peer go in through [`Connection::feed`]; what the broker has to decide comes
//! out as [`Event`]s (a SASL login, an attach, a complete message, credit, an outcome, a
//! detach, the end of the connection); the broker answers through methods
//! ([`Connection::sasl_outcome`], [`Connection::accept_attach`], [`Connection::send`],
//! [`Connection::settle_received`], [`Connection::drained`], …), and the bytes to write come
//! out of [`Connection::take_output`]. Time enters only through [`Connection::tick`].
//!
//! What it keeps per the spec (part 2): the protocol header exchange with SASL or without it
//! on one port (the client's header decides), open/begin/attach/flow/transfer/disposition/
//! detach/end/close, session windows both ways, link credit both ways (credit is topped up
//! after each read that used half of it; a transfer beyond credit detaches the link with
//! `amqp:link:transfer-limit-exceeded`), drain done as the
//! broker says (send what is there, then [`Connection::drained`] advances the delivery-count
//! over the rest of the credit), echo, multi-frame transfers both ways cut to the peer's
//! max-frame-size, heartbeats and the idle timeout. Types and codec are `fe2o3-amqp-types` and
//! `serde_amqp`; only the framing is ours ([`crate::frame`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::{Buf, Bytes, BytesMut};
use fe2o3_amqp_types::{
    definitions::{
        AmqpError, ConnectionError, Error, ErrorCondition, Handle, LinkError, ReceiverSettleMode,
        Role, SenderSettleMode, SessionError,
    },
    messaging::{DeliveryState, Source, Target, TargetArchetype},
    performatives::{
        Attach, Begin, ChannelMax, Close, Detach, Disposition, End, Flow, MaxFrameSize, Open,
        Performative, Transfer,
    },
    primitives::{Array, Symbol},
    sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome},
};
use serde_bytes::ByteBuf;

use crate::frame::{
    self, FrameHeader, HEADER_AMQP, HEADER_SASL, MIN_MAX_FRAME_SIZE, Protocol, TYPE_AMQP, TYPE_SASL,
};

/// What the engine needs to know of its side of the connection.
#[derive(Clone, Debug)]
pub struct Config {
    pub container_id: String,
    /// Largest frame we accept (announced in our open).
    pub max_frame_size: u32,
    pub channel_max: u16,
    pub handle_max: u32,
    /// Announced idle timeout: a peer silent for this long is closed.
    pub idle_timeout_ms: Option<u32>,
    /// SASL mechanisms offered, in order of preference (e.g. `PLAIN`, `ANONYMOUS`).
    pub mechanisms: Vec<&'static str>,
    /// Whether a client may skip SASL (header `AMQP 0 1.0.0`); it is then anonymous.
    pub allow_no_sasl: bool,
    /// Transfers a peer may send on a session before we widen the window again.
    pub incoming_window: u32,
    /// Credit granted to each link the peer sends on; topped up when half is used.
    pub link_credit: u32,
    /// Largest message accepted on a link (announced in attach).
    pub max_message_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            container_id: "wharf".into(),
            max_frame_size: 256 * 1024,
            channel_max: 255,
            handle_max: 1023,
            idle_timeout_ms: Some(60_000),
            mechanisms: vec!["PLAIN", "ANONYMOUS"],
            allow_no_sasl: true,
            incoming_window: 8192,
            link_credit: 500,
            max_message_size: 64 * 1024 * 1024,
        }
    }
}

/// A link as the broker names it: our channel of its session and the peer's handle (which we
/// use as ours too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    pub channel: u16,
    pub handle: u32,
}

/// A whole message the peer sent on one of our receiving links.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub link: LinkId,
    pub delivery_id: u32,
    pub tag: Bytes,
    /// Sent pre-settled (at most once): no outcome is expected.
    pub settled: bool,
    /// The message sections exactly as they arrived.
    pub payload: Bytes,
}

/// What the broker has to act on.
#[derive(Debug)]
pub enum Event {
    /// A SASL init: check the credentials, then call [`Connection::sasl_outcome`].
    SaslInit { mechanism: String, response: Bytes },
    /// The peer's open (already answered).
    Opened {
        container_id: String,
        hostname: Option<String>,
    },
    /// The peer attaches a link: answer with [`Connection::accept_attach`] or
    /// [`Connection::refuse_attach`]. `attach.role` is the peer's role.
    Attach { link: LinkId, attach: Box<Attach> },
    /// A complete message; settle it with [`Connection::settle_received`] unless pre-settled.
    Message(Delivery),
    /// The peer's credit on one of our sending links changed. With `drain`, send what is
    /// available and then call [`Connection::drained`].
    Credit {
        link: LinkId,
        credit: u32,
        drain: bool,
    },
    /// The peer's outcome for something we sent. If not `settled`, settle it with
    /// [`Connection::settle_sent`] once the outcome is applied.
    Disposition {
        link: LinkId,
        delivery_id: u32,
        settled: bool,
        state: Option<DeliveryState>,
    },
    /// The link is gone (peer's detach, or its session ended).
    Detached {
        link: LinkId,
        closed: bool,
        error: Option<Error>,
    },
    /// The connection is over: the peer closed it, or we did because of `error`. Write out
    /// what is left and close the socket.
    Closed { error: Option<Error>, by_peer: bool },
}

/// Why [`Connection::send`] did not send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    UnknownLink,
    NoCredit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a protocol header.
    Header,
    SaslInit,
    /// The broker is checking the credentials.
    SaslCheck,
    Open,
    Running,
    Done,
}

#[derive(Debug)]
struct Partial {
    delivery_id: u32,
    tag: Bytes,
    settled: bool,
    buf: BytesMut,
}

#[derive(Debug)]
struct Link {
    /// Our role.
    role: Role,
    delivery_count: u32,
    credit: u32,
    drain: bool,
    /// We detached (or refused) it and wait for the peer's detach.
    detaching: bool,
    /// Still waiting for the broker's answer to the attach.
    pending: bool,
    incoming: Option<Partial>,
}

#[derive(Debug)]
struct Session {
    remote_channel: u16,
    next_outgoing_id: u32,
    remote_incoming_window: u32,
    next_incoming_id: u32,
    incoming_window: u32,
    next_delivery_id: u32,
    links: HashMap<u32, Link>,
    /// Our unsettled deliveries: delivery-id → handle.
    unsettled: BTreeMap<u32, u32>,
    /// Frames waiting for the peer's incoming window: transfers, and the link flows written
    /// after them (which must not overtake them).
    blocked: VecDeque<Blocked>,
}

/// A frame waiting in a session's queue.
#[derive(Debug)]
enum Blocked {
    /// A transfer frame: written when the peer's incoming window has room.
    Transfer(BytesMut),
    /// A link's flow as of when it was due (its session's fields are filled in when it is
    /// written): a peer that read it before the transfers sent earlier would count them as
    /// not sent — a drain answer overtaking the transfers it follows ends the drain with
    /// messages still to come. Written as soon as the transfers before it are.
    Flow(Box<Flow>),
}

/// One AMQP connection's protocol state. See the module docs.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    phase: Phase,
    sasl_done: bool,
    open_sent: bool,
    input: BytesMut,
    out: BytesMut,
    events: VecDeque<Event>,
    peer_max_frame: u32,
    peer_idle_ms: Option<u32>,
    sessions: BTreeMap<u16, Session>,
    /// Peer's channel → ours.
    channels: HashMap<u16, u16>,
    /// Peer channels whose session we ended, until the peer's end arrives.
    ending: HashSet<u16>,
    /// Outcomes for received deliveries, written (coalesced) on the next output.
    settles: Vec<(u16, u32, DeliveryState)>,
    /// Receiving links whose credit is at half or less after this read.
    top_up: Vec<LinkId>,
    rx: bool,
    last_rx_ms: u64,
    last_tx_ms: u64,
}

const OUTGOING_WINDOW: u32 = i32::MAX as u32;

fn err(condition: impl Into<ErrorCondition>, description: impl Into<String>) -> Error {
    Error::new(condition, Some(description.into()), None)
}

/// A performative for a handle with no link: a session error (spec 2.8.17).
fn unattached(what: &str, handle: u32) -> Error {
    err(
        SessionError::UnattachedHandle,
        format!("{what} for handle {handle}, which is not attached"),
    )
}

impl Connection {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            phase: Phase::Header,
            sasl_done: false,
            open_sent: false,
            input: BytesMut::new(),
            out: BytesMut::new(),
            events: VecDeque::new(),
            peer_max_frame: MIN_MAX_FRAME_SIZE,
            peer_idle_ms: None,
            sessions: BTreeMap::new(),
            channels: HashMap::new(),
            ending: HashSet::new(),
            settles: Vec::new(),
            top_up: Vec::new(),
            rx: false,
            last_rx_ms: 0,
            last_tx_ms: 0,
        }
    }

    /// Whether the connection is over (write what [`Connection::take_output`] still gives,
    /// then close the socket).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The peer's SASL credentials wait for [`Connection::sasl_outcome`].
    pub fn sasl_pending(&self) -> bool {
        self.phase == Phase::SaslCheck
    }

    /// The handshake is over: the peer's open was received (after its protocol headers and
    /// SASL).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Running
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the peer.
    pub fn take_output(&mut self) -> BytesMut {
        self.flush_settles();
        std::mem::take(&mut self.out)
    }

    /// Bytes buffered until a frame is complete (bounded by the max-frame-size).
    pub fn buffered_input(&self) -> usize {
        self.input.len()
    }

    /// Feed bytes read from the peer; afterwards drain [`Connection::poll_event`].
    pub fn feed(&mut self, data: &[u8]) {
        if self.phase == Phase::Done {
            return;
        }
        self.rx = true;
        self.input.extend_from_slice(data);
        while self.phase != Phase::Done && self.step() {}
        // Credit is topped up once per read: within one read a peer cannot go beyond what it
        // was given.
        for link in std::mem::take(&mut self.top_up) {
            let credit = self.config.link_credit;
            if let Some(l) = self.link_mut(link)
                && !l.detaching
            {
                l.credit = credit;
                self.write_link_flow(link, None);
            }
        }
        if self.phase == Phase::Done || (self.input.is_empty() && self.input.capacity() > 64 * 1024)
        {
            self.input = BytesMut::new();
        }
    }

    /// Let time pass: heartbeats to a peer that asked for them, and the idle timeout.
    pub fn tick(&mut self, now_ms: u64) {
        if self.last_rx_ms == 0 || self.rx {
            self.last_rx_ms = now_ms;
            self.rx = false;
        }
        if !self.out.is_empty() || self.last_tx_ms == 0 {
            self.last_tx_ms = now_ms;
        }
        if self.phase != Phase::Running {
            return;
        }
        if let Some(idle) = self.peer_idle_ms
            && idle > 0
            && now_ms.saturating_sub(self.last_tx_ms) >= u64::from(idle / 2)
        {
            frame::write_empty(&mut self.out);
            self.last_tx_ms = now_ms;
        }
        if let Some(ours) = self.config.idle_timeout_ms
            && now_ms.saturating_sub(self.last_rx_ms) > u64::from(ours)
        {
            self.fail(err(
                AmqpError::ResourceLimitExceeded,
                format!("no frame for {ours} ms (idle timeout)"),
            ));
        }
    }

    /// One protocol header or frame, if complete; false when more input is needed.
    fn step(&mut self) -> bool {
        if matches!(self.phase, Phase::Header) {
            return self.header();
        }
        let Some(h) = FrameHeader::parse(&self.input) else {
            return false;
        };
        if h.size < 8 || h.doff < 2 || u32::from(h.doff) * 4 > h.size {
            self.fail(err(
                ConnectionError::FramingError,
                format!("malformed frame header (size {}, doff {})", h.size, h.doff),
            ));
            return false;
        }
        if h.size > self.config.max_frame_size {
            self.fail(err(
                ConnectionError::FramingError,
                format!(
                    "frame of {} bytes is over the max-frame-size {}",
                    h.size, self.config.max_frame_size
                ),
            ));
            return false;
        }
        if self.input.len() < h.size as usize {
            return false;
        }
        let mut frame = self.input.split_to(h.size as usize).freeze();
        frame.advance(usize::from(h.doff) * 4);
        if frame.is_empty() {
            return true; // heartbeat
        }
        match (self.phase, h.kind) {
            (Phase::SaslInit, TYPE_SASL) => self.sasl_frame(&frame),
            (Phase::Open | Phase::Running, TYPE_AMQP) => self.amqp_frame(h.channel, frame),
            (phase, kind) => self.fail(err(
                AmqpError::IllegalState,
                format!("frame type {kind} not expected now ({phase:?})"),
            )),
        }
        true
    }

    fn header(&mut self) -> bool {
        if self.input.len() < 8 {
            return false;
        }
        let header = self.input.split_to(8);
        match frame::protocol(&header) {
            Some(Protocol::Sasl) if !self.sasl_done => {
                self.out.extend_from_slice(&HEADER_SASL);
                let mechanisms = SaslMechanisms {
                    sasl_server_mechanisms: Array(
                        self.config
                            .mechanisms
                            .iter()
                            .map(|m| Symbol::from(*m))
                            .collect(),
                    ),
                };
                self.write(TYPE_SASL, 0, &mechanisms, &[]);
                self.phase = Phase::SaslInit;
            }
            Some(Protocol::Amqp) if self.sasl_done || self.config.allow_no_sasl => {
                self.out.extend_from_slice(&HEADER_AMQP);
                self.phase = Phase::Open;
            }
            other => {
                // Answer with the header we want and hang up (spec 2.2).
                let wanted = if self.sasl_done || self.config.allow_no_sasl {
                    HEADER_AMQP
                } else {
                    HEADER_SASL
                };
                self.out.extend_from_slice(&wanted);
                self.phase = Phase::Done;
                let what = match other {
                    Some(Protocol::Tls) => "TLS in-band is not offered; use the TLS port".into(),
                    Some(Protocol::Amqp) => "SASL is required".into(),
                    Some(Protocol::Sasl) => "a second SASL layer".into(),
                    None => format!("not an AMQP 1.0 protocol header: {:02x?}", &header[..]),
                };
                self.events.push_back(Event::Closed {
                    error: Some(err(AmqpError::NotAllowed, what)),
                    by_peer: false,
                });
            }
        }
        true
    }

    fn sasl_frame(&mut self, body: &[u8]) {
        let init = match frame::descriptor_code(body) {
            Some(0x41) => serde_amqp::from_slice::<SaslInit>(body),
            _ => {
                return self.fail(err(AmqpError::DecodeError, "expected sasl-init"));
            }
        };
        match init {
            Ok(init) => {
                self.phase = Phase::SaslCheck;
                self.events.push_back(Event::SaslInit {
                    mechanism: init.mechanism.0,
                    response: init
                        .initial_response
                        .map(|b| Bytes::from(b.into_vec()))
                        .unwrap_or_default(),
                });
            }
            Err(e) => self.fail(err(AmqpError::DecodeError, format!("sasl-init: {e}"))),
        }
    }

    /// Answer the SASL init: on success the client goes on with the AMQP header; on failure
    /// the connection ends after the outcome.
    pub fn sasl_outcome(&mut self, ok: bool) {
        if self.phase != Phase::SaslCheck {
            return;
        }
        let outcome = SaslOutcome {
            code: if ok { SaslCode::Ok } else { SaslCode::Auth },
            additional_data: None,
        };
        self.write(TYPE_SASL, 0, &outcome, &[]);
        if ok {
            self.sasl_done = true;
            self.phase = Phase::Header;
            // The client may already have sent its AMQP header.
            while self.phase != Phase::Done && self.step() {}
        } else {
            self.phase = Phase::Done;
            self.events.push_back(Event::Closed {
                error: Some(err(AmqpError::UnauthorizedAccess, "authentication failed")),
                by_peer: false,
            });
        }
    }

    fn amqp_frame(&mut self, channel: u16, body: Bytes) {
        let Some(len) = frame::value_len(&body) else {
            return self.fail(err(AmqpError::DecodeError, "malformed performative"));
        };
        let performative = match serde_amqp::from_slice::<Performative>(&body[..len]) {
            Ok(p) => p,
            Err(e) => {
                return self.fail(err(AmqpError::DecodeError, format!("performative: {e}")));
            }
        };
        let payload = body.slice(len..);
        if self.phase == Phase::Open {
            return match performative {
                Performative::Open(open) => self.on_open(open),
                _ => self.fail(err(AmqpError::IllegalState, "expected open")),
            };
        }
        match performative {
            Performative::Open(_) => self.fail(err(AmqpError::IllegalState, "second open")),
            Performative::Close(close) => self.on_close(close),
            Performative::Begin(begin) => self.on_begin(channel, begin),
            other => {
                let Some(&local) = self.channels.get(&channel) else {
                    if self.ending.contains(&channel) {
                        if matches!(other, Performative::End(_)) {
                            self.ending.remove(&channel);
                        }
                        return;
                    }
                    return self.fail(err(
                        AmqpError::NotFound,
                        format!("no session on channel {channel}"),
                    ));
                };
                match other {
                    Performative::Attach(a) => self.on_attach(local, a),
                    Performative::Flow(f) => self.on_flow(local, f),
                    Performative::Transfer(t) => self.on_transfer(local, t, payload),
                    Performative::Disposition(d) => self.on_disposition(local, d),
                    Performative::Detach(d) => self.on_detach(local, d),
                    Performative::End(e) => self.on_end(local, e),
                    Performative::Open(_) | Performative::Close(_) | Performative::Begin(_) => {}
                }
            }
        }
    }

    fn on_open(&mut self, open: Open) {
        self.peer_max_frame = open.max_frame_size.0.max(MIN_MAX_FRAME_SIZE);
        self.peer_idle_ms = open.idle_time_out;
        let reply = Open {
            container_id: self.config.container_id.clone(),
            hostname: None,
            max_frame_size: MaxFrameSize(self.config.max_frame_size),
            channel_max: ChannelMax(self.config.channel_max.min(open.channel_max.0)),
            idle_time_out: self.config.idle_timeout_ms,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: Some(Array(vec![Symbol::from("ANONYMOUS-RELAY")])),
            desired_capabilities: None,
            properties: None,
        };
        self.write(TYPE_AMQP, 0, &Performative::Open(reply), &[]);
        self.open_sent = true;
        self.phase = Phase::Running;
        self.events.push_back(Event::Opened {
            container_id: open.container_id,
            hostname: open.hostname,
        });
    }

    fn on_close(&mut self, close: Close) {
        self.write(
            TYPE_AMQP,
            0,
            &Performative::Close(Close { error: None }),
            &[],
        );
        self.phase = Phase::Done;
        self.events.push_back(Event::Closed {
            error: close.error,
            by_peer: true,
        });
    }

    fn on_begin(&mut self, channel: u16, begin: Begin) {
        if begin.remote_channel.is_some() {
            return self.fail(err(
                AmqpError::NotAllowed,
                "begin answers a session we did not start",
            ));
        }
        if self.channels.contains_key(&channel) || channel > self.config.channel_max {
            return self.fail(err(
                AmqpError::NotAllowed,
                format!("channel {channel} is in use or above channel-max"),
            ));
        }
        let Some(local) = (0..=self.config.channel_max).find(|c| !self.sessions.contains_key(c))
        else {
            return self.fail(err(AmqpError::ResourceLimitExceeded, "too many sessions"));
        };
        let session = Session {
            remote_channel: channel,
            next_outgoing_id: 0,
            remote_incoming_window: begin.incoming_window,
            next_incoming_id: begin.next_outgoing_id,
            incoming_window: self.config.incoming_window,
            next_delivery_id: 0,
            links: HashMap::new(),
            unsettled: BTreeMap::new(),
            blocked: VecDeque::new(),
        };
        let reply = Begin {
            remote_channel: Some(channel),
            next_outgoing_id: 0,
            incoming_window: self.config.incoming_window,
            outgoing_window: OUTGOING_WINDOW,
            handle_max: Handle(self.config.handle_max),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.sessions.insert(local, session);
        self.channels.insert(channel, local);
        self.write(TYPE_AMQP, local, &Performative::Begin(reply), &[]);
    }

    fn on_end(&mut self, local: u16, _end: End) {
        self.drop_session(local);
        self.write(
            TYPE_AMQP,
            local,
            &Performative::End(End { error: None }),
            &[],
        );
    }

    /// End a session because of a session error.
    fn end_session(&mut self, local: u16, error: Error) {
        tracing::info!(channel = local, error = ?error.condition, description = ?error.description, "ending AMQP session");
        if let Some(remote) = self.drop_session(local) {
            self.ending.insert(remote);
        }
        let end = End { error: Some(error) };
        self.write(TYPE_AMQP, local, &Performative::End(end), &[]);
    }

    fn drop_session(&mut self, local: u16) -> Option<u16> {
        let session = self.sessions.remove(&local)?;
        self.channels.remove(&session.remote_channel);
        for (handle, link) in session.links {
            if !link.detaching && !link.pending {
                self.events.push_back(Event::Detached {
                    link: LinkId {
                        channel: local,
                        handle,
                    },
                    closed: false,
                    error: None,
                });
            }
        }
        Some(session.remote_channel)
    }

    fn on_attach(&mut self, local: u16, attach: Attach) {
        let handle = attach.handle.0;
        let Some(session) = self.sessions.get_mut(&local) else {
            return;
        };
        if handle > self.config.handle_max {
            return self.end_session(
                local,
                err(
                    ConnectionError::FramingError,
                    format!("handle {handle} is above handle-max"),
                ),
            );
        }
        if session.links.contains_key(&handle) {
            return self.end_session(
                local,
                err(SessionError::HandleInUse, format!("handle {handle} in use")),
            );
        }
        let role = match attach.role {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        };
        session.links.insert(
            handle,
            Link {
                role,
                delivery_count: 0,
                credit: 0,
                drain: false,
                detaching: false,
                pending: true,
                incoming: None,
            },
        );
        self.events.push_back(Event::Attach {
            link: LinkId {
                channel: local,
                handle,
            },
            attach: Box::new(attach),
        });
    }

    /// Accept an attach. `source`/`target` are what we answer with (the peer's, or with a
    /// dynamic address filled in); `rcv_settle_mode` is what we grant (downgrade `second` to
    /// `first` if the broker does not do it). Links the peer sends on get their credit at once.
    pub fn accept_attach(
        &mut self,
        link: LinkId,
        name: String,
        source: Option<Source>,
        target: Option<Target>,
        snd_settle_mode: SenderSettleMode,
        rcv_settle_mode: ReceiverSettleMode,
    ) {
        let credit = self.config.link_credit;
        let max_message_size = self.config.max_message_size;
        let Some(l) = self.link_mut(link) else { return };
        if !l.pending {
            return;
        }
        l.pending = false;
        let role = l.role.clone();
        let reply = Attach {
            name,
            handle: Handle(link.handle),
            role: role.clone(),
            snd_settle_mode,
            rcv_settle_mode,
            source: source.map(Box::new),
            target: target.map(|t| Box::new(TargetArchetype::Target(t))),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: (role == Role::Sender).then_some(0),
            max_message_size: Some(max_message_size),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.write(TYPE_AMQP, link.channel, &Performative::Attach(reply), &[]);
        if role == Role::Receiver {
            if let Some(l) = self.link_mut(link) {
                l.credit = credit;
            }
            self.write_link_flow(link, None);
        } else if let Some(l) = self.link_mut(link)
            && (l.credit > 0 || l.drain)
        {
            let (credit, drain) = (l.credit, l.drain);
            self.events.push_back(Event::Credit {
                link,
                credit,
                drain,
            });
        }
    }

    /// Refuse an attach (spec 2.6.3): an attach with no terminus of ours, then a detach with
    /// the error.
    pub fn refuse_attach(&mut self, link: LinkId, name: String, error: Error) {
        let Some(l) = self.link_mut(link) else { return };
        if !l.pending {
            return;
        }
        l.pending = false;
        l.detaching = true;
        let role = l.role.clone();
        let reply = Attach {
            name,
            handle: Handle(link.handle),
            role: role.clone(),
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: None,
            target: None,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: (role == Role::Sender).then_some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.write(TYPE_AMQP, link.channel, &Performative::Attach(reply), &[]);
        let detach = Detach {
            handle: Handle(link.handle),
            closed: true,
            error: Some(error),
        };
        self.write(TYPE_AMQP, link.channel, &Performative::Detach(detach), &[]);
    }

    /// Detach a link from our side (closing it), with an error if there is one.
    pub fn detach(&mut self, link: LinkId, error: Option<Error>) {
        let Some(l) = self.link_mut(link) else { return };
        if l.detaching {
            return;
        }
        l.detaching = true;
        let detach = Detach {
            handle: Handle(link.handle),
            closed: true,
            error,
        };
        self.write(TYPE_AMQP, link.channel, &Performative::Detach(detach), &[]);
    }

    /// Close the connection from our side.
    pub fn close(&mut self, error: Option<Error>) {
        if self.phase == Phase::Done {
            return;
        }
        if self.phase == Phase::Running {
            self.write(TYPE_AMQP, 0, &Performative::Close(Close { error }), &[]);
        }
        self.phase = Phase::Done;
    }

    /// A protocol violation: close with `error` (one log line), and tell the broker.
    fn fail(&mut self, error: Error) {
        if self.phase == Phase::Done {
            return;
        }
        tracing::info!(condition = ?error.condition, description = ?error.description, "closing AMQP connection");
        if matches!(self.phase, Phase::Open | Phase::Running) {
            if !self.open_sent {
                let open = Open {
                    container_id: self.config.container_id.clone(),
                    hostname: None,
                    max_frame_size: MaxFrameSize(self.config.max_frame_size),
                    channel_max: ChannelMax(0),
                    idle_time_out: None,
                    outgoing_locales: None,
                    incoming_locales: None,
                    offered_capabilities: None,
                    desired_capabilities: None,
                    properties: None,
                };
                self.write(TYPE_AMQP, 0, &Performative::Open(open), &[]);
            }
            let close = Close {
                error: Some(error.clone()),
            };
            self.write(TYPE_AMQP, 0, &Performative::Close(close), &[]);
        }
        self.phase = Phase::Done;
        self.events.push_back(Event::Closed {
            error: Some(error),
            by_peer: false,
        });
    }

    fn link_mut(&mut self, link: LinkId) -> Option<&mut Link> {
        self.sessions
            .get_mut(&link.channel)?
            .links
            .get_mut(&link.handle)
    }

    /// The peer's credit on one of our sending links (0 for unknown links).
    pub fn credit(&self, link: LinkId) -> u32 {
        self.sessions
            .get(&link.channel)
            .and_then(|s| s.links.get(&link.handle))
            .filter(|l| l.role == Role::Sender && !l.detaching && !l.pending)
            .map_or(0, |l| l.credit)
    }

    fn on_flow(&mut self, local: u16, flow: Flow) {
        let Some(session) = self.sessions.get_mut(&local) else {
            return;
        };
        let next_incoming = flow.next_incoming_id.unwrap_or(0);
        session.remote_incoming_window = next_incoming
            .wrapping_add(flow.incoming_window)
            .wrapping_sub(session.next_outgoing_id);
        if session.remote_incoming_window > i32::MAX as u32 {
            session.remote_incoming_window = 0;
        }
        self.unblock(local);
        let Some(handle) = flow.handle.map(|h| h.0) else {
            if flow.echo {
                self.write_session_flow(local);
            }
            return;
        };
        let Some(session) = self.sessions.get_mut(&local) else {
            return;
        };
        let Some(link) = session.links.get_mut(&handle) else {
            return self.end_session(local, unattached("flow", handle));
        };
        if link.detaching {
            return;
        }
        let id = LinkId {
            channel: local,
            handle,
        };
        if link.role == Role::Sender {
            let credit = flow
                .delivery_count
                .unwrap_or(0)
                .wrapping_add(flow.link_credit.unwrap_or(0))
                .wrapping_sub(link.delivery_count);
            link.credit = if credit > i32::MAX as u32 { 0 } else { credit };
            link.drain = flow.drain;
            // Credit given before our attach answer (a client may send attach and flow in
            // one write) is kept, and reported when the broker accepts the attach.
            if !link.pending {
                let (credit, drain) = (link.credit, link.drain);
                self.events.push_back(Event::Credit {
                    link: id,
                    credit,
                    drain,
                });
            }
        }
        if link.pending {
            return;
        }
        if flow.echo {
            self.write_link_flow(id, None);
        }
    }

    /// Send a whole message on one of our sending links, cut into frames of the peer's
    /// max-frame-size. Uses one credit. Returns the delivery id.
    pub fn send(
        &mut self,
        link: LinkId,
        tag: &[u8],
        payload: &[u8],
        settled: bool,
    ) -> Result<u32, SendError> {
        let max_frame = self.peer_max_frame as usize;
        let session = self
            .sessions
            .get_mut(&link.channel)
            .ok_or(SendError::UnknownLink)?;
        let l = session
            .links
            .get_mut(&link.handle)
            .filter(|l| l.role == Role::Sender && !l.detaching && !l.pending)
            .ok_or(SendError::UnknownLink)?;
        if l.credit == 0 {
            return Err(SendError::NoCredit);
        }
        l.credit -= 1;
        l.delivery_count = l.delivery_count.wrapping_add(1);
        let delivery_id = session.next_delivery_id;
        session.next_delivery_id = delivery_id.wrapping_add(1);
        if !settled {
            session.unsettled.insert(delivery_id, link.handle);
        }
        let mut first = true;
        let mut rest = payload;
        loop {
            let mut transfer = Transfer {
                handle: Handle(link.handle),
                delivery_id: first.then_some(delivery_id),
                delivery_tag: first.then(|| ByteBuf::from(tag.to_vec())),
                message_format: first.then_some(0),
                settled: first.then_some(settled),
                more: true,
                rcv_settle_mode: None,
                state: None,
                resume: false,
                aborted: false,
                batchable: false,
            };
            // Measured with `more` set: the larger encoding (a trailing `false` is left out).
            let Ok(head) = serde_amqp::serialized_size(&transfer) else {
                return Err(SendError::UnknownLink);
            };
            let room = max_frame.saturating_sub(8 + head).max(1);
            let (chunk, after) = rest.split_at(rest.len().min(room));
            transfer.more = !after.is_empty();
            let mut f = BytesMut::new();
            if frame::write_frame(
                &mut f,
                TYPE_AMQP,
                link.channel,
                Some(&Performative::Transfer(transfer)),
                chunk,
            )
            .is_err()
            {
                return Err(SendError::UnknownLink);
            }
            session.blocked.push_back(Blocked::Transfer(f));
            rest = after;
            first = false;
            if rest.is_empty() {
                break;
            }
        }
        self.unblock(link.channel);
        Ok(delivery_id)
    }

    /// Write transfer frames while the peer's session window allows, and the link flows
    /// queued behind them.
    fn unblock(&mut self, local: u16) {
        loop {
            let Some(session) = self.sessions.get_mut(&local) else {
                return;
            };
            let window = session.remote_incoming_window > 0;
            match session.blocked.front() {
                Some(Blocked::Transfer(_)) if window => {
                    if let Some(Blocked::Transfer(f)) = session.blocked.pop_front() {
                        self.out.extend_from_slice(&f);
                        session.remote_incoming_window -= 1;
                        session.next_outgoing_id = session.next_outgoing_id.wrapping_add(1);
                    }
                }
                Some(Blocked::Flow(_)) => {
                    if let Some(Blocked::Flow(flow)) = session.blocked.pop_front() {
                        self.write_flow(local, *flow);
                    }
                }
                _ => return,
            }
        }
    }

    /// Transfer frames waiting for the peer's session window, on all sessions.
    pub fn blocked_frames(&self) -> usize {
        self.sessions.values().map(|s| s.blocked.len()).sum()
    }

    /// After a drain request: we sent what was available; use up the rest of the credit
    /// (delivery-count advances, credit 0) and tell the peer.
    pub fn drained(&mut self, link: LinkId) {
        let Some(l) = self.link_mut(link) else { return };
        if !l.drain || l.role != Role::Sender {
            return;
        }
        l.delivery_count = l.delivery_count.wrapping_add(l.credit);
        l.credit = 0;
        self.write_link_flow(link, Some(0));
    }

    /// Tell the peer how many messages are waiting for one of our sending links.
    pub fn set_available(&mut self, link: LinkId, available: u32) {
        if self.credit(link) > 0 || self.link_mut(link).is_some_and(|l| l.role == Role::Sender) {
            self.write_link_flow(link, Some(available));
        }
    }

    fn on_transfer(&mut self, local: u16, t: Transfer, payload: Bytes) {
        let max_message = self.config.max_message_size;
        let half_window = self.config.incoming_window / 2;
        let link_credit = self.config.link_credit;
        let Some(session) = self.sessions.get_mut(&local) else {
            return;
        };
        if session.incoming_window == 0 {
            return self.end_session(
                local,
                err(
                    SessionError::WindowViolation,
                    "transfer beyond the incoming window",
                ),
            );
        }
        session.incoming_window -= 1;
        session.next_incoming_id = session.next_incoming_id.wrapping_add(1);
        let widen = session.incoming_window < half_window;
        let handle = t.handle.0;
        let id = LinkId {
            channel: local,
            handle,
        };
        let Some(link) = session.links.get_mut(&handle) else {
            return self.end_session(local, unattached("transfer", handle));
        };
        if link.detaching || link.pending {
            return;
        }
        if link.role != Role::Receiver {
            return self.end_session(
                local,
                err(
                    AmqpError::NotAllowed,
                    "transfer on a link where the peer is the receiver",
                ),
            );
        }
        if link.incoming.is_none() {
            if t.aborted {
                return;
            }
            if link.credit == 0 {
                return self.detach(
                    id,
                    Some(err(
                        LinkError::TransferLimitExceeded,
                        "transfer beyond the link credit",
                    )),
                );
            }
            let Some(delivery_id) = t.delivery_id else {
                return self.end_session(
                    local,
                    err(
                        AmqpError::InvalidField,
                        "first transfer without delivery-id",
                    ),
                );
            };
            link.credit -= 1;
            link.delivery_count = link.delivery_count.wrapping_add(1);
            link.incoming = Some(Partial {
                delivery_id,
                tag: t
                    .delivery_tag
                    .map(|b| Bytes::from(b.into_vec()))
                    .unwrap_or_default(),
                settled: t.settled.unwrap_or(false),
                buf: BytesMut::new(),
            });
        }
        let Some(partial) = link.incoming.as_mut() else {
            return;
        };
        if t.aborted {
            link.incoming = None;
            return;
        }
        if t.settled == Some(true) {
            partial.settled = true;
        }
        if (partial.buf.len() + payload.len()) as u64 > max_message {
            link.incoming = None;
            return self.detach(
                id,
                Some(err(
                    LinkError::MessageSizeExceeded,
                    format!("message over {max_message} bytes"),
                )),
            );
        }
        if t.more {
            partial.buf.extend_from_slice(&payload);
        } else {
            let Some(partial) = link.incoming.take() else {
                return;
            };
            let payload = if partial.buf.is_empty() {
                payload
            } else {
                let mut buf = partial.buf;
                buf.extend_from_slice(&payload);
                buf.freeze()
            };
            if link.credit <= link_credit / 2 && !self.top_up.contains(&id) {
                self.top_up.push(id);
            }
            self.events.push_back(Event::Message(Delivery {
                link: id,
                delivery_id: partial.delivery_id,
                tag: partial.tag,
                settled: partial.settled,
                payload,
            }));
        }
        if widen {
            if let Some(s) = self.sessions.get_mut(&local) {
                s.incoming_window = self.config.incoming_window;
            }
            self.write_session_flow(local);
        }
    }

    /// Settle a message the peer sent us (we are always the first to settle).
    pub fn settle_received(&mut self, link: LinkId, delivery_id: u32, state: DeliveryState) {
        if self.sessions.contains_key(&link.channel) {
            self.settles.push((link.channel, delivery_id, state));
        }
    }

    /// Settle something we sent whose outcome the peer gave unsettled (receiver settle mode
    /// second).
    pub fn settle_sent(&mut self, link: LinkId, delivery_id: u32) {
        let disposition = Disposition {
            role: Role::Sender,
            first: delivery_id,
            last: None,
            settled: true,
            state: None,
            batchable: false,
        };
        if self.sessions.contains_key(&link.channel) {
            self.write(
                TYPE_AMQP,
                link.channel,
                &Performative::Disposition(disposition),
                &[],
            );
        }
    }

    /// Write pending outcomes, one disposition per run of consecutive delivery ids with the
    /// same outcome.
    fn flush_settles(&mut self) {
        if self.settles.is_empty() {
            return;
        }
        let mut settles = std::mem::take(&mut self.settles);
        settles.sort_by_key(|(c, id, _)| (*c, *id));
        let mut i = 0;
        while i < settles.len() {
            let (channel, first, ref state) = settles[i];
            let mut last = first;
            let mut j = i + 1;
            while j < settles.len()
                && settles[j].0 == channel
                && settles[j].1 == last.wrapping_add(1)
                && settles[j].2 == *state
            {
                last = settles[j].1;
                j += 1;
            }
            let disposition = Disposition {
                role: Role::Receiver,
                first,
                last: (last != first).then_some(last),
                settled: true,
                state: Some(state.clone()),
                batchable: false,
            };
            if self.sessions.contains_key(&channel) {
                self.write(
                    TYPE_AMQP,
                    channel,
                    &Performative::Disposition(disposition),
                    &[],
                );
            }
            i = j;
        }
    }

    fn on_disposition(&mut self, local: u16, d: Disposition) {
        if d.role == Role::Sender {
            // The peer settling its own sends: we settle first, so nothing is waiting.
            return;
        }
        let Some(session) = self.sessions.get_mut(&local) else {
            return;
        };
        let last = d.last.unwrap_or(d.first);
        if last < d.first {
            return;
        }
        let ids: Vec<(u32, u32)> = session
            .unsettled
            .range(d.first..=last)
            .map(|(&id, &h)| (id, h))
            .collect();
        for (delivery_id, handle) in ids {
            if d.settled {
                session.unsettled.remove(&delivery_id);
            }
            self.events.push_back(Event::Disposition {
                link: LinkId {
                    channel: local,
                    handle,
                },
                delivery_id,
                settled: d.settled,
                state: d.state.clone(),
            });
        }
    }

    fn on_detach(&mut self, local: u16, d: Detach) {
        let handle = d.handle.0;
        let Some(session) = self.sessions.get_mut(&local) else {
            return;
        };
        let Some(link) = session.links.remove(&handle) else {
            return self.end_session(local, unattached("detach", handle));
        };
        session.unsettled.retain(|_, h| *h != handle);
        if link.detaching {
            return; // the answer to ours
        }
        let reply = Detach {
            handle: Handle(handle),
            closed: d.closed,
            error: None,
        };
        self.write(TYPE_AMQP, local, &Performative::Detach(reply), &[]);
        if !link.pending {
            self.events.push_back(Event::Detached {
                link: LinkId {
                    channel: local,
                    handle,
                },
                closed: d.closed,
                error: d.error,
            });
        }
    }

    fn write_session_flow(&mut self, local: u16) {
        let flow = Flow {
            next_incoming_id: None,
            incoming_window: 0,
            next_outgoing_id: 0,
            outgoing_window: OUTGOING_WINDOW,
            handle: None,
            delivery_count: None,
            link_credit: None,
            available: None,
            drain: false,
            echo: false,
            properties: None,
        };
        self.write_flow(local, flow);
    }

    /// Tell the peer a link's state: now, or — if transfers wait for the peer's window on
    /// its session — right after them (see [`Blocked::Flow`]).
    fn write_link_flow(&mut self, link: LinkId, available: Option<u32>) {
        let Some(s) = self.sessions.get_mut(&link.channel) else {
            return;
        };
        let Some(l) = s.links.get(&link.handle) else {
            return;
        };
        let flow = Flow {
            next_incoming_id: None,
            incoming_window: 0,
            next_outgoing_id: 0,
            outgoing_window: OUTGOING_WINDOW,
            handle: Some(Handle(link.handle)),
            delivery_count: Some(l.delivery_count),
            link_credit: Some(l.credit),
            available,
            drain: l.drain,
            echo: false,
            properties: None,
        };
        if s.blocked.is_empty() {
            self.write_flow(link.channel, flow);
        } else {
            s.blocked.push_back(Blocked::Flow(Box::new(flow)));
        }
    }

    /// Write `flow` on session `local`, with the session's fields as of now.
    fn write_flow(&mut self, local: u16, mut flow: Flow) {
        let Some(s) = self.sessions.get(&local) else {
            return;
        };
        flow.next_incoming_id = Some(s.next_incoming_id);
        flow.incoming_window = s.incoming_window;
        flow.next_outgoing_id = s.next_outgoing_id;
        self.write(TYPE_AMQP, local, &Performative::Flow(flow), &[]);
    }

    fn write<T: serde::Serialize>(&mut self, kind: u8, channel: u16, body: &T, payload: &[u8]) {
        if let Err(e) = frame::write_frame(&mut self.out, kind, channel, Some(body), payload) {
            // Our own values always encode; if one does not, the connection cannot go on.
            tracing::error!(error = %e, "cannot encode an AMQP frame");
            self.phase = Phase::Done;
        }
    }
}

/// Split a SASL PLAIN response (`authzid NUL authcid NUL password`).
pub fn sasl_plain(response: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut parts = response.splitn(3, |&b| b == 0);
    let _authzid = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let password = parts.next()?.to_vec();
    Some((user, password))
}
