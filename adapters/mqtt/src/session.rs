//! One client connection's MQTT session, as a state machine without I/O: the driver feeds it
//! decoded packets (MQTT 5 shape, see [`crate::codec`]), durability results and stored
//! messages, and carries out the [`Action`]s it returns. Time is a parameter.
//!
//! It speaks MQTT 3.1.1 and 5.0; the version only changes what is said (reason codes,
//! properties, server DISCONNECT), not what is done. Session state lives for the connection
//! (clean sessions); see `adapters/README.md` for what is not built yet.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use mqttbytes::{
    Protocol, QoS,
    v5::{
        ConnAck, ConnAckProperties, Connect, ConnectReturnCode, Disconnect, DisconnectProperties,
        DisconnectReasonCode, Packet, PubAck, PubAckProperties, PubAckReason, PubComp,
        PubCompReason, PubRec, PubRecProperties, PubRecReason, PubRel, PubRelReason, Publish,
        PublishProperties, RetainForwardRule, SubAck, Subscribe, SubscribeReasonCode, UnsubAck,
        UnsubAckReason,
    },
};

use wharf_adapter_core::{
    errors::StoreFailure,
    topic::{matches, valid_filter, valid_topic_name},
};

use wharf_auth::Action as Permit;
use wharf_auth::Grants;

use crate::message::{Message, Properties};

/// Limits of one session, announced to MQTT 5 clients in CONNACK.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// QoS 1/2 deliveries awaiting acknowledgement before delivery pauses (the client's own
    /// receive maximum lowers it).
    pub max_inflight: u16,
    /// QoS 1/2 publishes a client may have unacknowledged; more is DISCONNECT 0x93.
    pub receive_maximum: u16,
    /// Topic aliases a client may set for its publishes.
    pub topic_alias_maximum: u16,
    /// Largest packet accepted from a client, in bytes.
    pub max_packet_size: u32,
    /// Keep-alive imposed on MQTT 5 clients (`None`: the client's own).
    pub server_keep_alive: Option<u16>,
    /// A connection that has not sent CONNECT by then is closed.
    pub connect_timeout: Duration,
    /// Topic filters subscriptions are refused for (SUBACK 0x87 / 0x80): a subscription is
    /// refused when one of these filters matches it.
    pub refused_filters: Vec<String>,
    /// Addresses claiming topics: a subscription within a queue's claim is refused (SUBACK
    /// 0x83 / 0x80), since a queue hands its messages to consumers, not subscribers.
    pub claims: std::sync::Arc<wharf_adapter_core::claims::Claims>,
    /// The tenant's limits (message size, storage), set live: a publish beyond them is
    /// refused with 0x97.
    pub quota: std::sync::Arc<wharf_adapter_core::quota::Quota>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            max_inflight: 100,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            max_packet_size: 1 << 20,
            server_keep_alive: None,
            connect_timeout: Duration::from_secs(10),
            refused_filters: Vec::new(),
            claims: Default::default(),
            quota: Default::default(),
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Send(Packet),
    /// Store this message, then call [`Session::appended`] with `token`.
    Append {
        token: u64,
        message: Message,
    },
    /// The session has subscriptions: start offering it stored messages from now on.
    StartDelivery,
    /// Offer the retained messages matching `filter` through [`Session::deliver_retained`].
    SendRetained {
        filter: String,
    },
    /// CONNECT accepted so far: check the credentials (then [`Session::not_allowed`] if they
    /// fail), take the client's session over (from any adapter), load it unless
    /// `clean_start`, keep it for `expiry` seconds after the connection if non-zero, then
    /// call [`Session::resumed`] (or [`Session::resume_failed`]).
    Resume {
        client_id: String,
        clean_start: bool,
        expiry: u32,
        login: Option<Login>,
    },
    /// Persist the session as it was when this action was decided (subscriptions, released
    /// packet ids; the driver adds its positions as carried out so far) before carrying out
    /// the actions after this one. A snapshot, not the session's state when the driver gets to
    /// it: the session handles every packet of a read before the driver carries the actions
    /// out, and a save must not record a QoS 2 release whose message is not acknowledged yet
    /// (a resumed session would send PUBREL for it and then the message again).
    SaveSession(Box<StoredSession>),
    /// The stored message at `offset` needs nothing more from this session (delivered and
    /// acknowledged, delivered at QoS 0, or not for it).
    Done {
        offset: u64,
    },
    /// The client joined the shared subscription `share` (`$share/group/filter`): deliver it
    /// the group's messages through [`Session::deliver_shared`].
    JoinShared {
        share: String,
    },
    /// The client left the shared subscription `share`.
    LeaveShared {
        share: String,
    },
    /// A delivery from shared subscription `share` needs nothing more (acknowledged, or sent
    /// at QoS 0): the group may move on.
    SharedDone {
        share: String,
        offset: u64,
    },
    /// Close the connection after sending what was queued: a protocol violation, a timeout or
    /// a store failure. The will, if any, is due ([`Session::take_will`]).
    Close {
        reason: &'static str,
    },
    /// The client ended the session with DISCONNECT; `will` says whether its will is due
    /// (MQTT 5 reason 0x04).
    Disconnected {
        will: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitConnect,
    Connected,
    Closed,
}

/// One subscription and its options.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub id: Option<usize>,
}

/// An outbound QoS 1/2 delivery: which acknowledgement from the client it awaits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outbound {
    /// QoS 1 PUBLISH sent, awaiting PUBACK.
    Qos1Sent,
    /// QoS 2 PUBLISH sent, awaiting PUBREC.
    Qos2Sent,
    /// PUBREL sent, awaiting PUBCOMP.
    Released,
}

/// A will message and when it is due after the connection is lost.
#[derive(Clone, Debug, PartialEq)]
pub struct Will {
    pub message: Message,
    pub delay: Duration,
}

/// See the module docs.
#[derive(Debug)]
pub struct Session {
    /// Shared by the adapter's sessions (an idle session's size is counted).
    settings: std::sync::Arc<SessionSettings>,
    /// What the client's user may publish to and subscribe to ([`Session::set_grants`]).
    grants: Grants,
    state: State,
    version: Protocol,
    client_id: String,
    keep_alive: Duration,
    last_seen: Instant,
    subscriptions: BTreeMap<String, Subscription>,
    next_token: u64,
    /// Publishes waiting to be durable: token -> (QoS, packet id).
    pending: BTreeMap<u64, (QoS, u16)>,
    /// Packet ids of QoS 1/2 publishes being stored.
    pending_ids: BTreeSet<u16>,
    /// QoS 2 packet ids stored and acknowledged with PUBREC, awaiting PUBREL.
    qos2_received: std::collections::BTreeSet<u16>,
    /// Outbound QoS 1/2 deliveries by packet id, with the offset delivered.
    inflight: BTreeMap<u16, (Outbound, u64)>,
    /// Which of those came from a shared subscription (packet id -> share).
    shared_inflight: BTreeMap<u16, String>,
    /// Client identifier to assign if the client sends an empty one.
    assigned_id: String,
    /// The client's receive maximum for our deliveries.
    client_receive_maximum: u16,
    /// The client's maximum packet size (0: no limit).
    client_max_packet: u32,
    /// Aliases the client set for its publishes.
    aliases_in: BTreeMap<u16, String>,
    /// Aliases we set for our deliveries, up to the client's topic alias maximum.
    aliases_out: BTreeMap<String, u16>,
    client_alias_maximum: u16,
    problem_info: bool,
    /// Boxed, like the other rarely set large fields: an idle session stays small.
    will: Option<Box<Will>>,
    clean_start: bool,
    /// Session expiry interval granted, in seconds (0: the session ends with the connection;
    /// `u32::MAX`: never).
    expiry: u32,
    /// The CONNACK to send once the stored session is loaded.
    pending_connack: Option<Box<ConnAck>>,
    /// QoS 2 deliveries released (PUBREL sent once this was saved) and not completed yet: a
    /// resumed persistent session sends PUBREL for them again, never the message.
    released: BTreeSet<u16>,
    /// A stored message offered while its packet identifier was in flight: delivered by
    /// [`Session::deliver_held`] once that identifier is free; nothing more is read meanwhile.
    held: Option<Box<Held>>,
}

/// A stored message that waits for its packet identifier.
#[derive(Debug)]
struct Held {
    position: u64,
    message: Message,
    dup: bool,
}

/// A session as persisted between connections (in its delivery cursor's meta).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredSession {
    pub version: u32,
    pub client_id: String,
    /// Seconds the session is kept after its connection ends (`u32::MAX`: forever).
    pub expiry: u32,
    pub subscriptions: Vec<StoredSubscription>,
    /// Packet ids of QoS 2 deliveries released (PUBREL due) but not completed.
    #[serde(default)]
    pub released: Vec<u16>,
    /// When the last connection ended (absent while connected, or if its adapter died).
    #[serde(default)]
    pub disconnected_ms: Option<i64>,
    /// Offsets below this were offered to the client before: resent with DUP set.
    #[serde(default)]
    pub sent_upto: u64,
    /// The other streams the session follows (addresses claiming topics its filters reach),
    /// in the order it follows them; its position in each is its cursor there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<FollowedStream>,
    /// While connected: the run id of the adapter (MQTT service) serving it, whose lease
    /// `mqtt-adapter.<run>` says whether it is alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// When the session sweeper found its adapter dead with no end recorded: its expiry
    /// counts from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphaned_ms: Option<i64>,
}

/// A stream a persistent session follows besides the default topic address.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FollowedStream {
    pub stream: String,
    /// Offsets below this were offered to the client before: resent with DUP set.
    pub sent_upto: u64,
}

/// What a session knows of one stream it follows besides its position there (the cursor's
/// acknowledged offsets): what was offered to the client, and what must carry DUP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marks {
    /// Offsets below this are resent to a resumed session with DUP set.
    dup_below: u64,
    /// Offsets below this were offered to the client (saved with the session).
    sent_upto: u64,
    /// `sent_upto` as last saved.
    saved_sent_upto: u64,
}

impl Marks {
    /// A stream on which the offsets below `sent` were offered to the client before.
    pub fn new(sent: u64) -> Self {
        Self {
            dup_below: sent,
            sent_upto: sent,
            saved_sent_upto: sent,
        }
    }

    /// The marks of a resumed session, from what it saved. If its previous connection did not
    /// end in order (its adapter died, or it was taken over: [`StoredSession::ended_unclean`])
    /// the saved mark may be up to a second behind what was sent, so everything stored before
    /// `head` (the stream's end now) is resent with DUP — "might be a re-delivery"
    /// [MQTT-3.3.1-1], the safe side of not knowing.
    pub fn resumed(sent: u64, unclean_head: Option<u64>) -> Self {
        let mut m = Self::new(sent);
        if let Some(head) = unclean_head {
            m.dup_below = m.dup_below.max(head);
        }
        m
    }

    /// The message at `offset` is read for the client: it counts as offered from now on.
    /// Returns whether a delivery of it carries DUP.
    pub fn offered(&mut self, offset: u64) -> bool {
        self.sent_upto = self.sent_upto.max(offset + 1);
        offset < self.dup_below
    }

    /// Offsets below this were offered.
    pub fn sent_upto(&self) -> u64 {
        self.sent_upto
    }

    /// Offered more since the last save.
    pub fn moved(&self) -> bool {
        self.sent_upto != self.saved_sent_upto
    }

    /// What was offered is saved.
    pub fn saved(&mut self) {
        self.saved_sent_upto = self.sent_upto;
    }
}

/// What a CONNECT makes of a stored session ([`StoredSession::resume`]).
#[derive(Debug, PartialEq)]
pub struct Resumption {
    /// The session resumed (`None`: a new one; anything stored is discarded).
    pub session: Option<StoredSession>,
    /// The meta to write with the take-over (`None`: leave it as it is).
    pub meta: Option<serde_json::Value>,
}

impl StoredSession {
    pub const VERSION: u32 = 1;

    /// A client connects with `clean_start` and asks for `expiry`, served by the adapter
    /// `adapter`, and `meta` is what is stored of its session: whether the session is
    /// resumed, and what to record with the write that takes it over. A session is resumed
    /// unless the client starts clean, it expired, or it was stored with expiry 0 — one that
    /// ends with its connection [MQTT-3.1.2-23], and this CONNECT means that connection is over
    /// (its adapter may not have deleted it yet). A resumed session is recorded connected,
    /// here, with the new expiry: its expiry does not run while connected, and the sweeper can
    /// tell when this adapter dies.
    pub fn resume(
        meta: Option<&serde_json::Value>,
        clean_start: bool,
        expiry: u32,
        now_ms: i64,
        adapter: &str,
    ) -> Resumption {
        let session = meta
            .and_then(|m| serde_json::from_value::<StoredSession>(m.clone()).ok())
            .filter(|s| !clean_start && !s.expired(now_ms) && s.expiry != 0);
        let meta = session.as_ref().and_then(|s| {
            serde_json::to_value(StoredSession {
                expiry,
                disconnected_ms: None,
                orphaned_ms: None,
                adapter: Some(adapter.to_string()),
                ..s.clone()
            })
            .ok()
        });
        Resumption { session, meta }
    }

    /// The session with what was sent on each stream it follows (`positions`, the default
    /// topic address first, in the order they are followed: packet ids depend on it), and
    /// when its connection ended; `adapter` (the run id of the adapter serving it) is recorded
    /// while the connection lives.
    pub fn at(
        mut self,
        positions: impl IntoIterator<Item = FollowedStream>,
        disconnected_ms: Option<i64>,
        adapter: &str,
    ) -> Self {
        let mut positions = positions.into_iter();
        self.sent_upto = positions.next().map_or(0, |p| p.sent_upto);
        self.streams = positions.collect();
        self.disconnected_ms = disconnected_ms;
        self.adapter = disconnected_ms.is_none().then(|| adapter.to_string());
        self
    }

    /// No end was recorded: the previous connection did not close in order (see
    /// [`Marks::resumed`]).
    pub fn ended_unclean(&self) -> bool {
        self.disconnected_ms.is_none()
    }

    /// Whether the session has expired by `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        match self.disconnected_ms.or(self.orphaned_ms) {
            Some(at) if self.expiry != u32::MAX => now_ms - at >= i64::from(self.expiry) * 1000,
            _ => false,
        }
    }
}

/// A user name and password from CONNECT; the password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One persisted subscription.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredSubscription {
    pub filter: String,
    pub qos: u8,
    #[serde(default)]
    pub no_local: bool,
    #[serde(default)]
    pub retain_as_published: bool,
    #[serde(default)]
    pub id: Option<usize>,
}

/// Longest client id a persistent session can have (it names the session in the store).
pub const MAX_PERSISTENT_ID: usize = 93;

/// The packet identifier of the delivery of the message at `offset`: derived from the offset,
/// so that a session resumed on another adapter resends with the original identifiers
/// [MQTT-4.4.0-1].
pub fn pkid_for(offset: u64) -> u16 {
    (offset % 65_535) as u16 + 1
}

/// The topic filter of a shared subscription `$share/{group}/{filter}`, if it is well formed:
/// a non-empty group without wildcards, and a valid filter [MQTT-4.8.2-1, 4.8.2-2].
pub fn share_filter(share: &str) -> Option<(&str, &str)> {
    let rest = share.strip_prefix("$share/")?;
    let (group, filter) = rest.split_once('/')?;
    (!group.is_empty() && !group.contains(['+', '#']) && valid_filter(filter))
        .then_some((group, filter))
}

fn granted(qos: QoS) -> SubscribeReasonCode {
    match qos {
        QoS::AtMostOnce => SubscribeReasonCode::QoS0,
        QoS::AtLeastOnce => SubscribeReasonCode::QoS1,
        QoS::ExactlyOnce => SubscribeReasonCode::QoS2,
    }
}

/// Why a PUBLISH is refused before it is stored.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    NotAuthorized,
    Quota(wharf_adapter_core::quota::Exceeded),
}

/// `Done` for a stored message; nothing for retained deliveries (offset `u64::MAX`).
fn done_at(offset: u64) -> Vec<Action> {
    if offset == u64::MAX {
        Vec::new()
    } else {
        vec![Action::Done { offset }]
    }
}

/// A server DISCONNECT with `code` and `reason` as its reason string.
fn disconnect(code: DisconnectReasonCode, reason: &str) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: code,
        properties: Some(DisconnectProperties {
            session_expiry_interval: None,
            reason_string: Some(reason.to_string()),
            user_properties: Vec::new(),
            server_reference: None,
        }),
    })
}

fn reason_props<T>(problem_info: bool, reason: &str, make: impl Fn(String) -> T) -> Option<T> {
    problem_info.then(|| make(reason.to_string()))
}

impl Session {
    /// `assigned_id` is given to a client that connects with an empty identifier.
    pub fn new(
        now: Instant,
        settings: impl Into<std::sync::Arc<SessionSettings>>,
        assigned_id: String,
    ) -> Self {
        Self {
            settings: settings.into(),
            grants: Grants::all(),
            state: State::AwaitConnect,
            version: Protocol::V4,
            client_id: String::new(),
            keep_alive: Duration::ZERO,
            last_seen: now,
            subscriptions: BTreeMap::new(),
            next_token: 0,
            pending: BTreeMap::new(),
            pending_ids: BTreeSet::new(),
            qos2_received: Default::default(),
            inflight: BTreeMap::new(),
            shared_inflight: BTreeMap::new(),
            clean_start: true,
            expiry: 0,
            pending_connack: None,
            assigned_id,
            client_receive_maximum: u16::MAX,
            client_max_packet: 0,
            aliases_in: BTreeMap::new(),
            aliases_out: BTreeMap::new(),
            client_alias_maximum: 0,
            problem_info: true,
            will: None,
            released: BTreeSet::new(),
            held: None,
        }
    }

    /// The filters of the subscriptions that are not shared.
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.subscriptions
            .keys()
            .map(String::as_str)
            .filter(|f| !f.starts_with("$share/"))
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn v5(&self) -> bool {
        self.version == Protocol::V5
    }

    /// The client's maximum packet size, if it set one: deliveries larger than that must be
    /// dropped ([`Session::too_large`]).
    pub fn client_max_packet(&self) -> Option<usize> {
        (self.client_max_packet > 0).then_some(self.client_max_packet as usize)
    }

    /// The connection's first bytes are a CONNECT of `version` (before it is decoded): a
    /// CONNECT that turns out malformed is refused in that version's terms.
    pub fn speaks(&mut self, version: crate::codec::Version) {
        if self.state == State::AwaitConnect {
            self.version = match version {
                crate::codec::Version::V5 => Protocol::V5,
                crate::codec::Version::V311 => Protocol::V4,
            };
        }
    }

    /// The client's maximum packet size as its CONNECT states it, known before the CONNECT
    /// is decoded (a refusal of a malformed CONNECT must honour it too).
    pub fn limit_packets(&mut self, max: u32) {
        if self.state == State::AwaitConnect {
            self.client_max_packet = max;
        }
    }

    /// End the session for a protocol violation: MQTT 5 clients get a DISCONNECT with
    /// `code` and the reason first [MQTT-4.13.1-1] — or, if the violation is in their
    /// CONNECT, a CONNACK with it [MQTT-3.1.4-1, 4.13.1-1]; 3.1.1 connections just close.
    pub fn fail(&mut self, code: DisconnectReasonCode, reason: &'static str) -> Vec<Action> {
        let mut a = Vec::new();
        match self.state {
            State::Connected if self.v5() => a.push(Action::Send(disconnect(code, reason))),
            State::AwaitConnect if self.v5() => {
                let code = match code {
                    DisconnectReasonCode::MalformedPacket => ConnectReturnCode::MalformedPacket,
                    DisconnectReasonCode::ProtocolError => ConnectReturnCode::ProtocolError,
                    DisconnectReasonCode::PacketTooLarge => ConnectReturnCode::PacketTooLarge,
                    _ => ConnectReturnCode::UnspecifiedError,
                };
                return self.refuse(code, reason);
            }
            _ => {}
        }
        self.state = State::Closed;
        a.push(Action::Close { reason });
        a
    }

    /// A server-initiated DISCONNECT (shutdown, takeover): the packet to send, if the
    /// protocol has one.
    pub fn server_disconnect(
        &mut self,
        code: DisconnectReasonCode,
        reason: &str,
    ) -> Option<Packet> {
        let v5 = self.v5() && self.state == State::Connected;
        self.state = State::Closed;
        v5.then(|| disconnect(code, reason))
    }

    /// Handle one packet from the client.
    pub fn handle(&mut self, now: Instant, packet: Packet) -> Vec<Action> {
        self.last_seen = now;
        match (self.state, packet) {
            (State::Closed, _) => Vec::new(),
            (State::AwaitConnect, Packet::Connect(c)) => self.connect(c),
            (State::AwaitConnect, _) => self.fail(
                DisconnectReasonCode::ProtocolError,
                "first packet was not CONNECT", // [MQTT-3.1.0-1]
            ),
            (State::Connected, Packet::Connect(_)) => {
                self.fail(DisconnectReasonCode::ProtocolError, "second CONNECT") // [MQTT-3.1.0-2]
            }
            (State::Connected, Packet::Publish(p)) => self.publish(p),
            (State::Connected, Packet::PubAck(a)) => match self.inflight.get(&a.pkid) {
                Some(&(Outbound::Qos1Sent, offset)) => {
                    self.inflight.remove(&a.pkid);
                    self.finished(a.pkid, offset)
                }
                _ => Vec::new(),
            },
            (State::Connected, Packet::PubRec(r)) => match self.inflight.get(&r.pkid).copied() {
                // A repeated PUBREC: PUBREL again.
                Some((Outbound::Released, _)) if (r.reason as u8) < 0x80 => {
                    vec![Action::Send(Packet::PubRel(PubRel::new(r.pkid)))]
                }
                Some((Outbound::Qos2Sent, offset)) if (r.reason as u8) < 0x80 => {
                    self.inflight.insert(r.pkid, (Outbound::Released, offset));
                    if self.shared_inflight.contains_key(&r.pkid) {
                        // The group's position moves on at PUBREC.
                        let mut a = self.finished(r.pkid, offset);
                        a.push(Action::Send(Packet::PubRel(PubRel::new(r.pkid))));
                        a
                    } else if self.persistent() {
                        // PUBREL only once the release is saved: a session resumed after a
                        // crash then knows the message was received, and never sends it
                        // again (it sends PUBREL again instead).
                        self.released.insert(r.pkid);
                        let mut a = done_at(offset);
                        a.push(self.save());
                        a.push(Action::Send(Packet::PubRel(PubRel::new(r.pkid))));
                        a
                    } else {
                        let mut a = done_at(offset);
                        a.push(Action::Send(Packet::PubRel(PubRel::new(r.pkid))));
                        a
                    }
                }
                Some((Outbound::Qos2Sent, offset)) => {
                    // The client refused the message: the delivery ends here [MQTT-4.3.3].
                    self.inflight.remove(&r.pkid);
                    self.finished(r.pkid, offset)
                }
                _ => {
                    let mut rel = PubRel::new(r.pkid);
                    if self.v5() {
                        rel.reason = PubRelReason::PacketIdentifierNotFound;
                    }
                    vec![Action::Send(Packet::PubRel(rel))]
                }
            },
            (State::Connected, Packet::PubComp(c)) => match self.inflight.get(&c.pkid) {
                Some((Outbound::Released, _)) => {
                    self.inflight.remove(&c.pkid);
                    // Saved with the next save; until then a resume costs one PUBREL the
                    // client answers with PUBCOMP.
                    self.released.remove(&c.pkid);
                    Vec::new()
                }
                _ => Vec::new(),
            },
            (State::Connected, Packet::PubRel(r)) => {
                // [MQTT-4.3.3-2]: PUBCOMP even if the id is unknown (a resent PUBREL).
                let known = self.qos2_received.remove(&r.pkid);
                let mut comp = PubComp::new(r.pkid);
                if !known && self.v5() {
                    comp.reason = PubCompReason::PacketIdentifierNotFound;
                }
                vec![Action::Send(Packet::PubComp(comp))]
            }
            (State::Connected, Packet::Subscribe(s)) if s.filters.is_empty() => {
                self.fail(
                    DisconnectReasonCode::ProtocolError,
                    "SUBSCRIBE without filters",
                ) // [MQTT-3.8.3-2]
            }
            (State::Connected, Packet::Unsubscribe(u)) if u.filters.is_empty() => {
                self.fail(
                    DisconnectReasonCode::ProtocolError,
                    "UNSUBSCRIBE without filters",
                ) // [MQTT-3.10.3-2]
            }
            (State::Connected, Packet::Subscribe(s)) => self.subscribe(s),
            (State::Connected, Packet::Unsubscribe(u)) => {
                let reasons = u
                    .filters
                    .iter()
                    .map(|t| match self.subscriptions.remove(t) {
                        Some(_) => UnsubAckReason::Success,
                        None => UnsubAckReason::NoSubscriptionExisted,
                    })
                    .collect();
                let left: Vec<Action> = u
                    .filters
                    .iter()
                    .filter(|t| t.starts_with("$share/") && !self.subscriptions.contains_key(*t))
                    .map(|t| Action::LeaveShared { share: t.clone() })
                    .collect();
                let mut ack = UnsubAck::new(u.pkid);
                ack.reasons = reasons;
                let mut a = Vec::new();
                if self.persistent() {
                    a.push(self.save());
                }
                a.push(Action::Send(Packet::UnsubAck(ack)));
                a.extend(left);
                a
            }
            (State::Connected, Packet::PingReq) => vec![Action::Send(Packet::PingResp)],
            (State::Connected, Packet::Disconnect(d)) => {
                if let Some(e) = d
                    .properties
                    .as_ref()
                    .and_then(|p| p.session_expiry_interval)
                {
                    if self.expiry == 0 && e > 0 {
                        // [MQTT-3.14.2-2]
                        return self.fail(
                            DisconnectReasonCode::ProtocolError,
                            "session expiry raised from 0 on DISCONNECT",
                        );
                    }
                    self.expiry = e;
                }
                self.state = State::Closed;
                let will = d.reason_code == DisconnectReasonCode::DisconnectWithWillMessage;
                if !will {
                    self.will = None; // [MQTT-3.14.4-3]
                }
                vec![Action::Disconnected { will }]
            }
            (State::Connected, _) => self.fail(
                DisconnectReasonCode::ProtocolError,
                "packet a client must not send",
            ),
        }
    }

    fn connect(&mut self, c: Connect) -> Vec<Action> {
        self.version = c.protocol;
        let props = c.properties.clone();
        if let Some(p) = &props {
            if p.receive_maximum == Some(0) || p.max_packet_size == Some(0) {
                return self.refuse(
                    ConnectReturnCode::ProtocolError,
                    "receive maximum and maximum packet size must not be 0",
                );
            }
            // Known before any refusal: the CONNACK must fit it too [MQTT-3.2.2-19].
            self.client_receive_maximum = p.receive_maximum.unwrap_or(u16::MAX);
            self.client_max_packet = p.max_packet_size.unwrap_or(0);
            self.client_alias_maximum = p.topic_alias_max.unwrap_or(0);
            self.problem_info = p.request_problem_info != Some(0);
            if p.authentication_method.is_some() {
                return self.refuse(
                    ConnectReturnCode::BadAuthenticationMethod,
                    "enhanced authentication is not supported",
                );
            }
        }
        let mut assigned = None;
        if c.client_id.is_empty() {
            if !self.v5() && !c.clean_session {
                // [MQTT-3.1.3-8]
                return self.refuse(
                    ConnectReturnCode::ClientIdentifierNotValid,
                    "empty client id without clean session",
                );
            }
            self.client_id = std::mem::take(&mut self.assigned_id);
            assigned = Some(self.client_id.clone());
        } else {
            self.client_id = c.client_id;
        }
        if let Some(w) = c.last_will {
            if !valid_topic_name(&w.topic) {
                return self.refuse(ConnectReturnCode::TopicNameInvalid, "invalid will topic");
            }
            let wp = w.properties.unwrap_or(mqttbytes::v5::WillProperties {
                delay_interval: None,
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            });
            let mut message = Message::new(w.topic, w.qos, w.message);
            message.retain = w.retain;
            message.origin = self.client_id.clone();
            message.properties = Properties {
                payload_format_indicator: wp.payload_format_indicator,
                message_expiry_interval: wp.message_expiry_interval,
                content_type: wp.content_type,
                response_topic: wp.response_topic,
                correlation_data: wp.correlation_data,
                user_properties: wp.user_properties,
            };
            // The will is due when its delay has passed or the session ends, whichever is
            // first [MQTT-3.1.3-9]; see `take_will`.
            self.will = Some(Box::new(Will {
                message,
                delay: Duration::from_secs(u64::from(wp.delay_interval.unwrap_or(0))),
            }));
        }
        self.clean_start = c.clean_session;
        let expiry = if self.v5() {
            props
                .as_ref()
                .and_then(|p| p.session_expiry_interval)
                .unwrap_or(0)
        } else if c.clean_session {
            0
        } else {
            u32::MAX // 3.1.1 sessions without clean session never expire
        };
        if expiry > 0 && self.client_id.len() > MAX_PERSISTENT_ID {
            return self.refuse(
                ConnectReturnCode::ClientIdentifierNotValid,
                "client ids of persistent sessions are at most 93 bytes",
            );
        }
        self.expiry = expiry;
        let mut keep_alive = c.keep_alive;
        if self.v5()
            && let Some(k) = self.settings.server_keep_alive
        {
            keep_alive = k;
        }
        self.keep_alive = Duration::from_secs(u64::from(keep_alive));
        let mut ack = ConnAck::new(ConnectReturnCode::Success, false);
        if self.v5() {
            let mut p = ConnAckProperties::new();
            p.receive_max = Some(self.settings.receive_maximum);
            p.max_packet_size = Some(self.settings.max_packet_size);
            p.topic_alias_max = Some(self.settings.topic_alias_maximum);
            p.assigned_client_identifier = assigned;
            p.server_keep_alive = self.settings.server_keep_alive;
            ack.properties = Some(p);
        }
        self.pending_connack = Some(Box::new(ack));
        vec![Action::Resume {
            client_id: self.client_id.clone(),
            clean_start: self.clean_start,
            expiry: self.expiry,
            login: c.login.map(|l| Login {
                username: l.username,
                password: l.password,
            }),
        }]
    }

    /// The credentials were refused (`bad_credentials`) or are required and missing: CONNACK
    /// 0x86 / 0x87 (3.1.1: 4 / 5), then close.
    pub fn not_allowed(&mut self, bad_credentials: bool) -> Vec<Action> {
        if bad_credentials {
            self.refuse(
                ConnectReturnCode::BadUserNamePassword,
                "bad user name or password",
            )
        } else {
            self.refuse(
                ConnectReturnCode::NotAuthorized,
                "credentials required on this listener",
            )
        }
    }

    /// Refuse the connection: CONNACK with `code` (MQTT 5: and `why` as reason string), then
    /// close.
    fn refuse(&mut self, code: ConnectReturnCode, why: &'static str) -> Vec<Action> {
        self.pending_connack = None;
        self.state = State::Closed;
        let mut ack = ConnAck::new(code, false);
        if self.v5() {
            let mut p = ConnAckProperties::new();
            p.reason_string = Some(why.to_string());
            ack.properties = Some(p);
        }
        vec![
            Action::Send(Packet::ConnAck(ack)),
            Action::Close { reason: why },
        ]
    }

    /// Whether the session outlives its connection.
    pub fn persistent(&self) -> bool {
        self.expiry > 0
    }

    /// The client's session is ours now: `stored` is what was kept of it (`None`: a new
    /// session). Sends CONNACK (session present when there was one [MQTT-3.2.2-2]), PUBREL
    /// for QoS 2 deliveries released before, and starts delivery.
    pub fn resumed(&mut self, stored: Option<StoredSession>) -> Vec<Action> {
        let Some(mut ack) = self.pending_connack.take().map(|a| *a) else {
            return Vec::new();
        };
        self.state = State::Connected;
        ack.session_present = stored.is_some();
        let mut a = Vec::new();
        if let Some(st) = stored {
            for sub in st.subscriptions {
                let qos = mqttbytes::qos(sub.qos).unwrap_or(QoS::AtMostOnce);
                self.subscriptions.insert(
                    sub.filter,
                    Subscription {
                        qos,
                        no_local: sub.no_local,
                        retain_as_published: sub.retain_as_published,
                        id: sub.id,
                    },
                );
            }
            for pkid in st.released {
                // u64::MAX: the offset is done already; only PUBCOMP is awaited.
                self.inflight.insert(pkid, (Outbound::Released, u64::MAX));
                self.released.insert(pkid);
                a.push(Action::Send(Packet::PubRel(PubRel::new(pkid))));
            }
        }
        a.insert(0, Action::Send(Packet::ConnAck(ack)));
        if !self.subscriptions.is_empty() {
            a.push(Action::StartDelivery);
        }
        for share in self
            .subscriptions
            .keys()
            .filter(|f| f.starts_with("$share/"))
        {
            a.push(Action::JoinShared {
                share: share.clone(),
            });
        }
        a
    }

    /// The stored session could not be loaded or claimed: refuse the connection (server
    /// unavailable), so the client retries.
    /// Serve the session under `settings` from now on: the same limits, the topic claims of
    /// the tenant its user turned out to be in. Call before [`Session::resumed`].
    pub fn use_settings(&mut self, settings: std::sync::Arc<SessionSettings>) {
        self.settings = settings;
    }

    pub fn resume_failed(&mut self) -> Vec<Action> {
        self.refuse(
            ConnectReturnCode::ServerUnavailable,
            "the session store is unavailable; connect again",
        )
    }

    /// [`Action::SaveSession`] with the session as it is now.
    fn save(&self) -> Action {
        Action::SaveSession(Box::new(self.stored()))
    }

    /// What to persist of this session: its subscriptions and released packet ids (the
    /// driver adds its positions and when the connection ended: [`StoredSession::at`]).
    pub fn stored(&self) -> StoredSession {
        StoredSession {
            version: StoredSession::VERSION,
            client_id: self.client_id.clone(),
            expiry: self.expiry,
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(f, s)| StoredSubscription {
                    filter: f.clone(),
                    qos: s.qos as u8,
                    no_local: s.no_local,
                    retain_as_published: s.retain_as_published,
                    id: s.id,
                })
                .collect(),
            released: self.released.iter().copied().collect(),
            disconnected_ms: None,
            sent_upto: 0,
            streams: Vec::new(),
            adapter: None,
            orphaned_ms: None,
        }
    }

    fn publish(&mut self, mut p: Publish) -> Vec<Action> {
        // Topic aliases [MQTT-3.3.2-7 .. 3.3.2-12].
        if let Some(alias) = p.properties.as_mut().and_then(|pp| pp.topic_alias.take()) {
            if !self.v5() || alias == 0 || alias > self.settings.topic_alias_maximum {
                return self.fail(
                    DisconnectReasonCode::TopicAliasInvalid,
                    "topic alias out of range",
                );
            }
            if p.topic.is_empty() {
                match self.aliases_in.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return self
                            .fail(DisconnectReasonCode::ProtocolError, "unknown topic alias");
                    }
                }
            } else if valid_topic_name(&p.topic) {
                self.aliases_in.insert(alias, p.topic.clone());
            }
        }
        if !valid_topic_name(&p.topic) {
            // [MQTT-3.3.2-2]
            return self.fail(
                DisconnectReasonCode::TopicNameInvalid,
                "invalid topic name in PUBLISH",
            );
        }
        let props = p.properties.take().unwrap_or(PublishProperties {
            payload_format_indicator: None,
            message_expiry_interval: None,
            topic_alias: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
            subscription_identifiers: Vec::new(),
            content_type: None,
        });
        if !props.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6]
            return self.fail(
                DisconnectReasonCode::ProtocolError,
                "subscription identifier in a client PUBLISH",
            );
        }
        if let Some(rt) = &props.response_topic
            && !valid_topic_name(rt)
        {
            return self.fail(
                DisconnectReasonCode::ProtocolError,
                "invalid response topic",
            );
        }
        if !self.grants.may(Permit::Send, &p.topic) {
            return self.refuse_publish(p.qos, p.pkid, Refusal::NotAuthorized);
        }
        if let Err(exceeded) = self.settings.quota.check(p.payload.len()) {
            return self.refuse_publish(p.qos, p.pkid, Refusal::Quota(exceeded));
        }
        if p.qos != QoS::AtMostOnce {
            if p.qos == QoS::ExactlyOnce && self.qos2_received.contains(&p.pkid) {
                // A resent QoS 2 PUBLISH we already stored: acknowledge, do not store again.
                return vec![Action::Send(Packet::PubRec(PubRec::new(p.pkid)))];
            }
            if self.pending_ids.contains(&p.pkid) {
                if p.dup {
                    return Vec::new(); // a resend of one being stored: it gets its ack then
                }
                return self.fail(
                    DisconnectReasonCode::ProtocolError,
                    "packet identifier reused while in flight",
                );
            }
            if self.pending_ids.len() + self.qos2_received.len()
                >= usize::from(self.settings.receive_maximum)
                && self.v5()
            {
                // [MQTT-3.3.4-9]
                return self.fail(
                    DisconnectReasonCode::ReceiveMaximumExceeded,
                    "receive maximum exceeded",
                );
            }
        }
        if props.payload_format_indicator == Some(1) && std::str::from_utf8(&p.payload).is_err() {
            let why = "payload is not UTF-8 as its format indicator says";
            return match p.qos {
                QoS::AtMostOnce => self.fail(DisconnectReasonCode::PayloadFormatInvalid, why),
                QoS::AtLeastOnce => vec![Action::Send(Packet::PubAck(PubAck {
                    pkid: p.pkid,
                    reason: PubAckReason::PayloadFormatInvalid,
                    properties: reason_props(self.problem_info, why, |r| PubAckProperties {
                        reason_string: Some(r),
                        user_properties: Vec::new(),
                    }),
                }))],
                QoS::ExactlyOnce => vec![Action::Send(Packet::PubRec(PubRec {
                    pkid: p.pkid,
                    reason: PubRecReason::PayloadFormatInvalid,
                    properties: reason_props(self.problem_info, why, |r| PubRecProperties {
                        reason_string: Some(r),
                        user_properties: Vec::new(),
                    }),
                }))],
            };
        }
        let token = self.next_token;
        self.next_token += 1;
        if p.qos != QoS::AtMostOnce {
            self.pending.insert(token, (p.qos, p.pkid));
            self.pending_ids.insert(p.pkid);
        }
        vec![Action::Append {
            token,
            message: Message {
                topic: p.topic,
                qos: p.qos,
                retain: p.retain,
                payload: p.payload,
                properties: Properties {
                    payload_format_indicator: props.payload_format_indicator,
                    message_expiry_interval: props.message_expiry_interval,
                    content_type: props.content_type,
                    response_topic: props.response_topic,
                    correlation_data: props.correlation_data,
                    user_properties: props.user_properties,
                },
                origin: self.client_id.clone(),
                timestamp_ms: 0,
            },
        }]
    }

    /// A stored publish is durable (`Ok`) or could not be stored (why: the reason string;
    /// the code is 0x80 whatever the failure, [`StoreFailure::mqtt5_publish_reason`]).
    pub fn appended(&mut self, token: u64, result: Result<(), StoreFailure>) -> Vec<Action> {
        let Some((qos, pkid)) = self.pending.remove(&token) else {
            return Vec::new();
        };
        self.pending_ids.remove(&pkid);
        if self.state != State::Connected {
            return Vec::new();
        }
        if let Err(failure) = result {
            if !self.v5() {
                // MQTT 3.1.1 has no negative acknowledgement: close; the client will resend.
                return self.fail(
                    DisconnectReasonCode::UnspecifiedError,
                    "could not store a message",
                );
            }
            let why = failure.reason();
            return match qos {
                QoS::AtLeastOnce => vec![Action::Send(Packet::PubAck(PubAck {
                    pkid,
                    reason: PubAckReason::UnspecifiedError,
                    properties: reason_props(self.problem_info, why, |r| PubAckProperties {
                        reason_string: Some(r),
                        user_properties: Vec::new(),
                    }),
                }))],
                _ => vec![Action::Send(Packet::PubRec(PubRec {
                    pkid,
                    reason: PubRecReason::UnspecifiedError,
                    properties: reason_props(self.problem_info, why, |r| PubRecProperties {
                        reason_string: Some(r),
                        user_properties: Vec::new(),
                    }),
                }))],
            };
        }
        match qos {
            QoS::AtLeastOnce => vec![Action::Send(Packet::PubAck(PubAck::new(pkid)))],
            QoS::ExactlyOnce => {
                self.qos2_received.insert(pkid);
                vec![Action::Send(Packet::PubRec(PubRec::new(pkid)))]
            }
            QoS::AtMostOnce => Vec::new(),
        }
    }

    /// A PUBLISH refused (the user may not send there, or the tenant's limits): MQTT 5 answers
    /// PUBACK / PUBREC 0x87 or 0x97 with the reason; MQTT 3.1.1 has no way to say so, and
    /// acknowledges it as usual without storing it [MQTT-3.3.5-2]. QoS 0 is dropped either way.
    fn refuse_publish(&mut self, qos: QoS, pkid: u16, why: Refusal) -> Vec<Action> {
        let (puback, pubrec, reason) = match why {
            Refusal::NotAuthorized => (
                PubAckReason::NotAuthorized,
                PubRecReason::NotAuthorized,
                "not authorized to publish to this topic".to_string(),
            ),
            Refusal::Quota(e) => (
                PubAckReason::QuotaExceeded,
                PubRecReason::QuotaExceeded,
                e.reason(),
            ),
        };
        tracing::debug!(client = %self.client_id, reason, "publish refused");
        match qos {
            QoS::AtMostOnce => Vec::new(),
            QoS::AtLeastOnce => vec![Action::Send(Packet::PubAck(PubAck {
                pkid,
                reason: if self.v5() {
                    puback
                } else {
                    PubAckReason::Success
                },
                properties: (self.v5())
                    .then(|| {
                        reason_props(self.problem_info, &reason, |r| PubAckProperties {
                            reason_string: Some(r),
                            user_properties: Vec::new(),
                        })
                    })
                    .flatten(),
            }))],
            QoS::ExactlyOnce if self.v5() => vec![Action::Send(Packet::PubRec(PubRec {
                pkid,
                reason: pubrec,
                properties: reason_props(self.problem_info, &reason, |r| PubRecProperties {
                    reason_string: Some(r),
                    user_properties: Vec::new(),
                }),
            }))],
            QoS::ExactlyOnce => {
                // The PUBREL that follows completes it as if it had been stored.
                self.qos2_received.insert(pkid);
                vec![Action::Send(Packet::PubRec(PubRec::new(pkid)))]
            }
        }
    }

    /// The user's grants, at connect and whenever they change: a will to a topic the user may
    /// not send to refuses the CONNECT (0x87) or, later, is dropped; a subscription the user may no
    /// longer receive from ends the connection (MQTT 5 DISCONNECT 0x87, with the filter said;
    /// MQTT 3.1.1 a close), so that nothing more is delivered to it; later publishes and
    /// subscriptions are checked against the new grants.
    pub fn set_grants(&mut self, grants: Grants) -> Vec<Action> {
        self.grants = grants;
        // A will the user may not publish: refused at CONNECT (CONNACK 0x87 / return code 5),
        // dropped if the permission goes later.
        let will_refused = self
            .will
            .as_ref()
            .is_some_and(|w| !self.grants.may(Permit::Send, &w.message.topic));
        if will_refused {
            if self.state != State::Connected {
                return self.refuse(
                    ConnectReturnCode::NotAuthorized,
                    "not authorized to publish the will to its topic",
                );
            }
            tracing::info!(client = %self.client_id, "send permission for the will's topic removed: will dropped");
            self.will = None;
        }
        let revoked = self.subscriptions.keys().find(|f| {
            let plain = share_filter(f).map_or(f.as_str(), |(_, filter)| filter);
            !self.grants.may(Permit::Receive, plain)
        });
        match revoked {
            Some(f) if self.state == State::Connected => {
                tracing::info!(client = %self.client_id, filter = %f, "receive permission removed: disconnecting");
                self.fail(
                    DisconnectReasonCode::NotAuthorized,
                    "not authorized to receive from a subscribed topic any more",
                )
            }
            _ => Vec::new(),
        }
    }

    fn subscribe(&mut self, s: Subscribe) -> Vec<Action> {
        let had = !self.subscriptions.is_empty();
        let id = s.properties.as_ref().and_then(|p| p.id);
        if id == Some(0) {
            // [MQTT-3.8.2-...]: a subscription identifier of 0 is a protocol error.
            return self.fail(
                DisconnectReasonCode::ProtocolError,
                "subscription identifier 0",
            );
        }
        let mut retained = Vec::new();
        let codes = s
            .filters
            .into_iter()
            .map(|f| {
                if !valid_filter(&f.path) {
                    return SubscribeReasonCode::TopicFilterInvalid;
                }
                let shared = f.path.starts_with("$share/");
                if shared && (share_filter(&f.path).is_none() || f.nolocal) {
                    // [MQTT-4.8.2-1, 4.8.2-2]; no-local on a shared subscription is a
                    // protocol error [MQTT-3.8.3-4], refused here instead.
                    return SubscribeReasonCode::TopicFilterInvalid;
                }
                if self
                    .settings
                    .refused_filters
                    .iter()
                    .any(|r| matches(r, &f.path))
                {
                    return SubscribeReasonCode::NotAuthorized;
                }
                let plain = share_filter(&f.path).map_or(f.path.as_str(), |(_, filter)| filter);
                if !self.grants.may(Permit::Receive, plain) {
                    return SubscribeReasonCode::NotAuthorized;
                }
                if self.settings.claims.reach(plain).queue.is_some() {
                    return SubscribeReasonCode::ImplementationSpecific;
                }
                let sub = Subscription {
                    qos: f.qos,
                    no_local: f.nolocal,
                    retain_as_published: f.preserve_retain,
                    id,
                };
                let existed = self.subscriptions.insert(f.path.clone(), sub).is_some();
                if shared {
                    // Retained messages are not sent for shared subscriptions.
                    if !existed {
                        retained.push(Action::JoinShared { share: f.path });
                    }
                    return granted(f.qos);
                }
                let send_retained = match f.retain_forward_rule {
                    RetainForwardRule::OnEverySubscribe => true,
                    RetainForwardRule::OnNewSubscribe => !existed,
                    RetainForwardRule::Never => false,
                };
                if send_retained {
                    retained.push(Action::SendRetained { filter: f.path });
                }
                granted(f.qos)
            })
            .collect();
        let mut a = Vec::new();
        if self.persistent() {
            a.push(self.save());
        }
        a.push(Action::Send(Packet::SubAck(SubAck::new(s.pkid, codes))));
        if !self.subscriptions.is_empty() && (!had || !self.settings.claims.is_empty()) {
            // With claims, a new filter may reach another address's stream.
            a.push(Action::StartDelivery);
        }
        a.extend(retained);
        a
    }

    /// Whether the session can take another delivery now.
    pub fn can_deliver(&self) -> bool {
        self.delivery_room() > 0
    }

    /// How many more messages may be offered now without overrunning the in-flight window
    /// (ours, and the client's receive maximum).
    pub fn delivery_room(&self) -> usize {
        if self.state != State::Connected {
            return 0;
        }
        let window = self.settings.max_inflight.min(self.client_receive_maximum);
        usize::from(window).saturating_sub(self.inflight.len())
    }

    /// Offer a stored message: sent once, at the highest QoS of the matching subscriptions
    /// capped by the message's own [MQTT-3.3.5-1], carrying every matching subscription
    /// identifier; no-local subscriptions skip the client's own messages; expired messages
    /// are dropped and the rest carry their remaining lifetime. `offset` is where the message
    /// is stored (it fixes the packet identifier, [`pkid_for`]); `dup` marks a resend to a
    /// resumed session ([`Marks::offered`]). If its packet identifier is still in flight the
    /// message is held ([`Session::held_at`]) and delivered by [`Session::deliver_held`] after
    /// the next acknowledgement: read nothing more from the log meanwhile.
    pub fn deliver(&mut self, m: Message, offset: u64, dup: bool, now_ms: i64) -> Vec<Action> {
        match self.offer(&m, offset, dup, now_ms) {
            Some(a) => a,
            None => {
                self.held = Some(Box::new(Held {
                    position: offset,
                    message: m,
                    dup,
                }));
                Vec::new()
            }
        }
    }

    /// Where the held message is stored, if one is held ([`Session::deliver`]).
    pub fn held_at(&self) -> Option<u64> {
        self.held.as_ref().map(|h| h.position)
    }

    /// Deliver the held message if its packet identifier is free now.
    pub fn deliver_held(&mut self, now_ms: i64) -> Vec<Action> {
        match self.held.take() {
            Some(h) => {
                let Held {
                    position,
                    message,
                    dup,
                } = *h;
                self.deliver(message, position, dup, now_ms)
            }
            None => Vec::new(),
        }
    }

    fn offer(&mut self, m: &Message, offset: u64, dup: bool, now_ms: i64) -> Option<Vec<Action>> {
        if self.state != State::Connected {
            return Some(Vec::new());
        }
        let mut qos = None::<u8>;
        let mut ids = Vec::new();
        let mut retain = false;
        for (f, s) in &self.subscriptions {
            if f.starts_with("$share/")
                || !matches(f, &m.topic)
                || (s.no_local && m.origin == self.client_id)
            {
                continue;
            }
            qos = Some(qos.unwrap_or(0).max(s.qos as u8));
            ids.extend(s.id);
            retain |= s.retain_as_published && m.retain; // [MQTT-3.3.1-12, 3.3.1-13]
        }
        let Some(sub_qos) = qos else {
            return Some(vec![Action::Done { offset }]);
        };
        self.send_publish(m, sub_qos, retain, ids, now_ms, Some((offset, dup)))
    }

    /// Offer a message of the shared subscription `share` (one member of the group gets
    /// each). `None`: not now (its packet identifier is in flight here): give it to another
    /// member or later.
    pub fn deliver_shared(
        &mut self,
        share: &str,
        m: &Message,
        offset: u64,
        now_ms: i64,
    ) -> Option<Vec<Action>> {
        let sub = self.subscriptions.get(share)?;
        if self.state != State::Connected {
            return None;
        }
        let (qos, ids) = (sub.qos as u8, sub.id.into_iter().collect());
        let actions = self.send_publish(m, qos, false, ids, now_ms, Some((offset, false)))?;
        Some(
            actions
                .into_iter()
                .map(|a| match a {
                    Action::Send(Packet::Publish(p)) => {
                        if p.qos != QoS::AtMostOnce {
                            self.shared_inflight.insert(p.pkid, share.to_string());
                        }
                        Action::Send(Packet::Publish(p))
                    }
                    Action::Done { offset } => Action::SharedDone {
                        share: share.to_string(),
                        offset,
                    },
                    other => other,
                })
                .collect(),
        )
    }

    /// A delivery ended: the session's own position moves on, or the shared group's.
    fn finished(&mut self, pkid: u16, offset: u64) -> Vec<Action> {
        match self.shared_inflight.remove(&pkid) {
            Some(share) => vec![Action::SharedDone { share, offset }],
            None => done_at(offset),
        }
    }

    /// Offer a retained message for the new subscription `filter` (sent with retain set
    /// [MQTT-3.3.1-8]).
    pub fn deliver_retained(&mut self, filter: &str, m: &Message, now_ms: i64) -> Vec<Action> {
        if self.state != State::Connected {
            return Vec::new();
        }
        let Some(s) = self.subscriptions.get(filter) else {
            return Vec::new();
        };
        if !matches(filter, &m.topic) {
            return Vec::new();
        }
        let (q, ids) = (s.qos as u8, s.id.into_iter().collect());
        self.send_publish(m, q, true, ids, now_ms, None)
            .unwrap_or_default()
    }

    fn send_publish(
        &mut self,
        m: &Message,
        sub_qos: u8,
        retain: bool,
        ids: Vec<usize>,
        now_ms: i64,
        stored_at: Option<(u64, bool)>,
    ) -> Option<Vec<Action>> {
        let done = |offset: Option<(u64, bool)>| {
            offset
                .map(|(offset, _)| vec![Action::Done { offset }])
                .unwrap_or_default()
        };
        if m.expired(now_ms) {
            return Some(done(stored_at)); // [MQTT-3.3.2-5]
        }
        let qos = match (m.qos as u8).min(sub_qos) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        // Packet identifier: from the offset for stored messages (stable across adapters),
        // else any free one (retained messages).
        let pkid = match (qos, stored_at) {
            (QoS::AtMostOnce, _) => 0,
            (_, Some((offset, _))) => {
                let pkid = pkid_for(offset);
                if self.inflight.contains_key(&pkid) {
                    return None;
                }
                pkid
            }
            (_, None) => (1..=u16::MAX).find(|id| !self.inflight.contains_key(id))?,
        };
        let mut p = Publish::from_bytes(m.topic.clone(), qos, m.payload.clone());
        p.retain = retain;
        p.dup = qos != QoS::AtMostOnce && stored_at.is_some_and(|(_, dup)| dup);
        if self.v5() {
            let mut alias = None;
            if self.client_alias_maximum > 0 {
                if let Some(&a) = self.aliases_out.get(&m.topic) {
                    alias = Some(a);
                    p.topic.clear();
                } else if self.aliases_out.len() < usize::from(self.client_alias_maximum) {
                    let a = self.aliases_out.len() as u16 + 1;
                    self.aliases_out.insert(m.topic.clone(), a);
                    alias = Some(a);
                }
            }
            let pr = &m.properties;
            let props = PublishProperties {
                payload_format_indicator: pr.payload_format_indicator,
                message_expiry_interval: m.remaining_expiry(now_ms),
                topic_alias: alias,
                response_topic: pr.response_topic.clone(),
                correlation_data: pr.correlation_data.clone(),
                user_properties: pr.user_properties.clone(),
                subscription_identifiers: ids,
                content_type: pr.content_type.clone(),
            };
            let empty = props.payload_format_indicator.is_none()
                && props.message_expiry_interval.is_none()
                && props.topic_alias.is_none()
                && props.response_topic.is_none()
                && props.correlation_data.is_none()
                && props.user_properties.is_empty()
                && props.subscription_identifiers.is_empty()
                && props.content_type.is_none();
            if !empty {
                p.properties = Some(props);
            }
        }
        let mut out = vec![];
        if qos == QoS::AtMostOnce {
            out.push(Action::Send(Packet::Publish(p)));
            out.extend(done(stored_at));
            return Some(out);
        }
        let state = if qos == QoS::AtLeastOnce {
            Outbound::Qos1Sent
        } else {
            Outbound::Qos2Sent
        };
        let offset = stored_at.map_or(u64::MAX, |(o, _)| o);
        self.inflight.insert(pkid, (state, offset));
        p.pkid = pkid;
        out.push(Action::Send(Packet::Publish(p)));
        Some(out)
    }

    /// A delivery was larger than the client's maximum packet size and was not sent: it is
    /// dropped as if acknowledged [MQTT-3.1.2-25].
    pub fn too_large(&mut self, pkid: u16) -> Vec<Action> {
        match self.inflight.remove(&pkid) {
            Some((_, offset)) => self.finished(pkid, offset),
            None => Vec::new(),
        }
    }

    /// The will registered by CONNECT, with its delay as asked (see [`Session::take_will`]).
    pub fn will(&self) -> Option<&Will> {
        self.will.as_deref()
    }

    /// The will to publish now that the connection is lost, if one is due: its delay is the
    /// will delay capped by the session expiry, since the will is due when the session
    /// ends [MQTT-3.1.3-9].
    pub fn take_will(&mut self) -> Option<Will> {
        let mut w = *self.will.take()?;
        w.delay = w.delay.min(Duration::from_secs(u64::from(self.expiry)));
        Some(w)
    }

    /// Whether the client has been silent for more than 1.5 × keep-alive [MQTT-3.1.2-24].
    pub fn keep_alive_expired(&self, now: Instant) -> bool {
        !self.keep_alive.is_zero() && now.duration_since(self.last_seen) > self.keep_alive * 3 / 2
    }

    /// Why the connection should be closed for silence now, if it should: no CONNECT within
    /// the connect timeout, or the keep-alive expired (MQTT 5 clients are told, 0x8D).
    pub fn timed_out(&mut self, now: Instant) -> Option<Vec<Action>> {
        match self.state {
            State::AwaitConnect
                if now.duration_since(self.last_seen) > self.settings.connect_timeout =>
            {
                self.state = State::Closed;
                Some(vec![Action::Close {
                    reason: "no CONNECT in time",
                }])
            }
            State::Connected if self.keep_alive_expired(now) => {
                Some(self.fail(DisconnectReasonCode::KeepAliveTimeout, "keep-alive expired"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use mqttbytes::v5::{
        ConnectProperties, LastWill, PubRel, SubscribeFilter, SubscribeProperties, Unsubscribe,
    };

    use bytes::Bytes;

    use super::*;

    fn session(v5: bool, props: Option<ConnectProperties>) -> (Session, Instant, Vec<Action>) {
        let now = Instant::now();
        let settings = SessionSettings {
            max_inflight: 2,
            receive_maximum: 2,
            topic_alias_maximum: 4,
            refused_filters: vec!["$SYS/#".into()],
            ..SessionSettings::default()
        };
        let mut s = Session::new(now, settings, "assigned".into());
        let mut c = Connect::new("c1");
        c.keep_alive = 10;
        c.protocol = if v5 { Protocol::V5 } else { Protocol::V4 };
        c.properties = props;
        let a = connect(&mut s, now, c);
        (s, now, a)
    }

    /// CONNECT, then resume as a new session when the session asks to.
    fn connect(s: &mut Session, now: Instant, c: Connect) -> Vec<Action> {
        let a = s.handle(now, Packet::Connect(c));
        match &a[..] {
            [Action::Resume { .. }] => s.resumed(None),
            _ => a,
        }
    }

    /// Offer the message stored at `offset`; only what is sent is returned.
    fn offer(s: &mut Session, m: &Message, offset: u64, now_ms: i64) -> Vec<Action> {
        let a = s.deliver(m.clone(), offset, false, now_ms);
        assert_eq!(s.held_at(), None, "packet id free");
        a.into_iter()
            .filter(|a| matches!(a, Action::Send(_)))
            .collect()
    }

    fn connected() -> (Session, Instant) {
        let (s, now, a) = session(false, None);
        assert_eq!(
            a,
            vec![Action::Send(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false
            )))]
        );
        (s, now)
    }

    fn connected_v5(props: Option<ConnectProperties>) -> (Session, Instant) {
        let (s, now, a) = session(true, props);
        assert!(
            matches!(&a[..], [Action::Send(Packet::ConnAck(ack))] if ack.code == ConnectReturnCode::Success)
        );
        (s, now)
    }

    fn publish(topic: &str, qos: QoS, pkid: u16) -> Packet {
        let mut p = Publish::new(topic, qos, "x");
        p.pkid = pkid;
        Packet::Publish(p)
    }

    fn msg(topic: &str, qos: QoS) -> Message {
        Message::new(topic, qos, Bytes::from_static(b"p"))
    }

    fn sent(a: &[Action]) -> Vec<&Packet> {
        a.iter()
            .filter_map(|a| match a {
                Action::Send(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn only_publish(a: &[Action]) -> &Publish {
        match a {
            [Action::Send(Packet::Publish(p))] => p,
            other => panic!("expected one PUBLISH, got {other:?}"),
        }
    }

    fn disconnect_code(a: &[Action]) -> Option<DisconnectReasonCode> {
        sent(a).into_iter().find_map(|p| match p {
            Packet::Disconnect(d) => Some(d.reason_code),
            _ => None,
        })
    }

    fn sub(path: &str, qos: QoS) -> SubscribeFilter {
        SubscribeFilter::new(path.into(), qos)
    }

    fn subscribe(filters: Vec<SubscribeFilter>, id: Option<usize>) -> Packet {
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters,
            properties: id.map(|id| SubscribeProperties {
                id: Some(id),
                user_properties: Vec::new(),
            }),
        })
    }

    /// Protocol errors the session finds in well-formed packets: DISCONNECT 0x82.
    #[test]
    fn protocol_errors_in_well_formed_packets() {
        let (mut s, now) = connected_v5(None);
        let a = s.handle(now, subscribe(Vec::new(), None)); // [MQTT-3.8.3-2]
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::ProtocolError)
        );
        let (mut s, now) = connected_v5(None);
        let none = Unsubscribe {
            pkid: 1,
            filters: Vec::new(),
            properties: None,
        };
        let a = s.handle(now, Packet::Unsubscribe(none));
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::ProtocolError)
        ); // [MQTT-3.10.3-2]
        // A client PUBLISH with a subscription identifier [MQTT-3.3.4-6].
        let (mut s, now) = connected_v5(None);
        let mut p = Publish::new("a", QoS::AtMostOnce, "x");
        p.properties = Some(PublishProperties {
            payload_format_indicator: None,
            message_expiry_interval: None,
            topic_alias: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
            subscription_identifiers: vec![3],
            content_type: None,
        });
        let a = s.handle(now, Packet::Publish(p));
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::ProtocolError)
        );
        // DISCONNECT raising a session expiry of 0 [MQTT-3.14.2-2].
        let (mut s, now) = connected_v5(None);
        let mut d = Disconnect::new();
        d.properties = Some(DisconnectProperties {
            session_expiry_interval: Some(60),
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: None,
        });
        let a = s.handle(now, Packet::Disconnect(d));
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::ProtocolError)
        );
        // PUBREL for an id never received: PUBCOMP 0x92 [MQTT-4.3.3-2 … 4.3.3-13].
        let (mut s, now) = connected_v5(None);
        let a = s.handle(now, Packet::PubRel(PubRel::new(42)));
        assert!(
            matches!(&a[..], [Action::Send(Packet::PubComp(c))] if c.pkid == 42 && c.reason == PubCompReason::PacketIdentifierNotFound),
            "{a:?}"
        );
    }

    #[test]
    fn packets_before_connect_and_second_connect_close() {
        let now = Instant::now();
        let mut s = Session::new(now, SessionSettings::default(), "a".into());
        assert!(matches!(
            s.handle(now, Packet::PingReq)[..],
            [Action::Close { .. }]
        ));
        let (mut s, now) = connected();
        assert!(matches!(
            s.handle(now, Packet::Connect(Connect::new("again")))[..],
            [Action::Close { .. }]
        ));
        assert!(
            s.handle(now, Packet::PingReq).is_empty(),
            "closed sessions stay silent"
        );
        let (mut s, now) = connected_v5(None);
        let a = s.handle(now, Packet::Connect(Connect::new("again")));
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::ProtocolError),
            "v5 is told why"
        );
        assert!(matches!(a.last(), Some(Action::Close { .. })));
    }

    #[test]
    fn empty_client_id_needs_clean_session_in_3_1_1_and_is_assigned_in_5() {
        let now = Instant::now();
        let mut s = Session::new(now, SessionSettings::default(), "assigned".into());
        let mut c = Connect::new("");
        c.protocol = Protocol::V4;
        c.clean_session = false;
        let a = connect(&mut s, now, c);
        assert!(matches!(&a[0], Action::Send(Packet::ConnAck(ack))
            if ack.code == ConnectReturnCode::ClientIdentifierNotValid));
        let mut s = Session::new(now, SessionSettings::default(), "assigned".into());
        let mut c = Connect::new("");
        c.protocol = Protocol::V4;
        connect(&mut s, now, c);
        assert_eq!(s.client_id(), "assigned");

        let mut s = Session::new(now, SessionSettings::default(), "given".into());
        let mut c = Connect::new("");
        c.protocol = Protocol::V5;
        let a = connect(&mut s, now, c);
        let [Action::Send(Packet::ConnAck(ack))] = &a[..] else {
            panic!("{a:?}")
        };
        let p = ack.properties.as_ref().expect("v5 CONNACK has properties");
        assert_eq!(p.assigned_client_identifier.as_deref(), Some("given"));
        assert_eq!(p.receive_max, Some(1024));
    }

    #[test]
    fn puback_and_pubrec_only_after_the_message_is_stored() {
        let (mut s, now) = connected();
        let a = s.handle(now, publish("a/b", QoS::AtLeastOnce, 7));
        let [Action::Append { token, ref message }] = a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(message.origin, "c1");
        assert_eq!(
            s.appended(token, Ok(())),
            vec![Action::Send(Packet::PubAck(PubAck::new(7)))]
        );

        let a = s.handle(now, publish("a/b", QoS::ExactlyOnce, 8));
        let [Action::Append { token, .. }] = a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(
            s.appended(token, Ok(())),
            vec![Action::Send(Packet::PubRec(PubRec::new(8)))]
        );
        // The client resends before PUBREL: acknowledged again, not stored twice.
        assert_eq!(
            s.handle(now, publish("a/b", QoS::ExactlyOnce, 8)),
            vec![Action::Send(Packet::PubRec(PubRec::new(8)))]
        );
        assert_eq!(
            s.handle(now, Packet::PubRel(PubRel::new(8))),
            vec![Action::Send(Packet::PubComp(PubComp::new(8)))]
        );
        // After PUBREL the id is free again: a new message with it is stored.
        assert!(matches!(
            s.handle(now, publish("a/b", QoS::ExactlyOnce, 8))[..],
            [Action::Append { .. }]
        ));

        let a = s.handle(now, publish("a/b", QoS::AtLeastOnce, 9));
        let [Action::Append { token, .. }] = a[..] else {
            panic!("{a:?}")
        };
        assert!(
            matches!(
                s.appended(token, Err(StoreFailure::Unavailable))[..],
                [Action::Close { .. }]
            ),
            "3.1.1 store failure: no PUBACK, close"
        );
    }

    #[test]
    fn v5_store_failure_is_a_negative_ack_and_the_session_goes_on() {
        let (mut s, now) = connected_v5(None);
        let a = s.handle(now, publish("a", QoS::AtLeastOnce, 3));
        let [Action::Append { token, .. }] = a[..] else {
            panic!("{a:?}")
        };
        let a = s.appended(token, Err(StoreFailure::Unavailable));
        assert!(matches!(&a[..], [Action::Send(Packet::PubAck(ack))]
            if ack.pkid == 3 && ack.reason == PubAckReason::UnspecifiedError));
        assert_eq!(
            s.handle(now, Packet::PingReq),
            vec![Action::Send(Packet::PingResp)]
        );
        // The reason string says which failure it was (when the client asked for reasons).
        let (mut s, now) = connected_v5(None);
        for (pkid, failure) in [(4, StoreFailure::Closed), (5, StoreFailure::Refused)] {
            let a = s.handle(now, publish("a", QoS::AtLeastOnce, pkid));
            let [Action::Append { token, .. }] = a[..] else {
                panic!("{a:?}")
            };
            let a = s.appended(token, Err(failure));
            let [Action::Send(Packet::PubAck(ack))] = &a[..] else {
                panic!("{a:?}")
            };
            assert_eq!(
                (ack.pkid, ack.reason),
                (pkid, PubAckReason::UnspecifiedError)
            );
            let reason = ack
                .properties
                .as_ref()
                .and_then(|p| p.reason_string.as_deref());
            assert_eq!(reason, Some(failure.reason()), "{failure:?}");
        }
    }

    #[test]
    fn packet_id_reuse_and_receive_maximum_overrun_disconnect() {
        let (mut s, now) = connected_v5(None);
        assert!(matches!(
            s.handle(now, publish("a", QoS::AtLeastOnce, 1))[..],
            [Action::Append { .. }]
        ));
        let a = s.handle(now, publish("a", QoS::AtLeastOnce, 1));
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::ProtocolError)
        );

        let (mut s, now) = connected_v5(None);
        s.handle(now, publish("a", QoS::AtLeastOnce, 1));
        s.handle(now, publish("a", QoS::ExactlyOnce, 2));
        let a = s.handle(now, publish("a", QoS::AtLeastOnce, 3));
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::ReceiveMaximumExceeded),
            "receive maximum 2"
        );
    }

    #[test]
    fn invalid_topic_names_close() {
        let (mut s, now) = connected();
        assert!(matches!(
            s.handle(now, publish("a/+", QoS::AtMostOnce, 0))[..],
            [Action::Close { .. }]
        ));
        let (mut s, now) = connected_v5(None);
        let a = s.handle(now, publish("a/#", QoS::AtMostOnce, 0));
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::TopicNameInvalid)
        );
    }

    #[test]
    fn inbound_topic_aliases() {
        let (mut s, now) = connected_v5(None);
        let with_alias = |topic: &str, alias| {
            let mut p = Publish::new(topic, QoS::AtMostOnce, "x");
            p.properties = Some(PublishProperties {
                payload_format_indicator: None,
                message_expiry_interval: None,
                topic_alias: Some(alias),
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
                subscription_identifiers: Vec::new(),
                content_type: None,
            });
            Packet::Publish(p)
        };
        let a = s.handle(now, with_alias("sensors/1", 1));
        assert!(matches!(&a[..], [Action::Append { message, .. }] if message.topic == "sensors/1"));
        let a = s.handle(now, with_alias("", 1));
        assert!(matches!(&a[..], [Action::Append { message, .. }] if message.topic == "sensors/1"));
        let a = s.handle(now, with_alias("", 2));
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::ProtocolError)
        );
        let (mut s, now) = connected_v5(None);
        let a = s.handle(now, with_alias("x", 5));
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::TopicAliasInvalid),
            "maximum is 4"
        );
    }

    #[test]
    fn subscriptions_within_a_queues_claim_are_refused() {
        let claims = wharf_adapter_core::claims::Claims::from_claims(
            wharf_adapter_core::claims::parse(
                "jobs",
                &serde_json::json!({"spec": {"type": "queue", "mqtt_topics": ["jobs/+"]}}),
            )
            .expect("claims"),
        );
        let settings = SessionSettings {
            claims: std::sync::Arc::new(claims),
            ..SessionSettings::default()
        };
        let now = Instant::now();
        let mut s = Session::new(now, settings, "assigned".into());
        let mut c = Connect::new("c1");
        c.protocol = Protocol::V5;
        connect(&mut s, now, c);
        let filters = ["jobs/+", "jobs/1", "$share/g/jobs/+", "jobs/#", "#"];
        let a = s.handle(
            now,
            subscribe(filters.map(|f| sub(f, QoS::AtLeastOnce)).to_vec(), None),
        );
        let Some(Action::Send(Packet::SubAck(ack))) = a.first() else {
            panic!("{a:?}")
        };
        use SubscribeReasonCode::*;
        assert_eq!(
            ack.return_codes,
            // jobs/# and # reach other topics too: granted (the queue's messages are not
            // theirs).
            vec![
                ImplementationSpecific,
                ImplementationSpecific,
                ImplementationSpecific,
                QoS1,
                QoS1
            ]
        );
        // Every new subscription may reach another address: the driver looks again.
        assert!(a.contains(&Action::StartDelivery), "{a:?}");
        let again = s.handle(now, subscribe(vec![sub("x/y", QoS::AtMostOnce)], None));
        assert!(again.contains(&Action::StartDelivery), "{again:?}");
    }

    #[test]
    fn subscriptions_deliver_once_at_the_highest_granted_qos_with_flow_control() {
        let (mut s, now) = connected();
        let mut both = vec![sub("a/+", QoS::AtMostOnce), sub("a/#", QoS::ExactlyOnce)];
        both.push(sub("bad/#/x", QoS::AtLeastOnce));
        both.push(sub("$SYS/broker/load", QoS::AtLeastOnce));
        both.push(sub("$share/g/a/#", QoS::AtLeastOnce));
        both.push(sub("$share/g+/a", QoS::AtLeastOnce));
        let a = s.handle(now, subscribe(both, None));
        let [Action::Send(Packet::SubAck(ack)), Action::StartDelivery, ..] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(
            ack.return_codes,
            vec![
                SubscribeReasonCode::QoS0,
                SubscribeReasonCode::QoS2,
                SubscribeReasonCode::TopicFilterInvalid,
                SubscribeReasonCode::NotAuthorized,
                SubscribeReasonCode::QoS1,
                SubscribeReasonCode::TopicFilterInvalid,
            ]
        );
        assert!(
            a.contains(&Action::JoinShared {
                share: "$share/g/a/#".into()
            }),
            "shared subscriptions join their group, no retained messages: {a:?}"
        );
        // A shared subscription does not take part in the session's own deliveries.
        let shared_only = msg("a/b/c", QoS::AtLeastOnce);
        // a/# (QoS 2) matches it too, so the session's own delivery is that one's; the shared
        // subscription adds nothing there.
        let own = offer(&mut s, &shared_only, 99, 0);
        assert!(matches!(&own[..], [Action::Send(Packet::Publish(p))] if p.pkid == pkid_for(99)));
        s.handle(now, Packet::PubAck(PubAck::new(pkid_for(99))));
        let d = s
            .deliver_shared("$share/g/a/#", &shared_only, 100, 0)
            .expect("room");
        let p = only_publish(&d).clone();
        assert_eq!(p.pkid, pkid_for(100));
        assert_eq!(
            s.handle(now, Packet::PubAck(PubAck::new(p.pkid))),
            vec![Action::SharedDone {
                share: "$share/g/a/#".into(),
                offset: 100
            }],
            "the group's position moves, not the session's"
        );
        assert!(
            a[2..]
                .iter()
                .all(|x| matches!(x, Action::SendRetained { .. } | Action::JoinShared { .. })),
            "retained messages are offered for new subscriptions: {a:?}"
        );
        let p = only_publish(&offer(&mut s, &msg("a/b", QoS::ExactlyOnce), 0, 0)).clone();
        assert_eq!((p.qos, p.pkid), (QoS::ExactlyOnce, 1), "one copy");
        assert!(offer(&mut s, &msg("other", QoS::AtLeastOnce), 1, 0).is_empty());
        let p = only_publish(&offer(&mut s, &msg("a/b", QoS::AtMostOnce), 2, 0)).clone();
        assert_eq!(p.qos, QoS::AtMostOnce, "capped by the message's QoS");
        offer(&mut s, &msg("a/c", QoS::AtLeastOnce), 3, 0);
        assert!(!s.can_deliver(), "two deliveries in flight");
        // QoS 2 outbound: PUBREC -> PUBREL, then PUBCOMP frees the slot.
        assert_eq!(
            s.handle(now, Packet::PubRec(PubRec::new(1))),
            vec![
                Action::Done { offset: 0 },
                Action::Send(Packet::PubRel(PubRel::new(1)))
            ]
        );
        assert!(!s.can_deliver(), "still awaiting PUBCOMP");
        s.handle(now, Packet::PubComp(PubComp::new(1)));
        assert!(s.can_deliver());
        s.handle(now, Packet::PubAck(PubAck::new(pkid_for(3))));
        assert_eq!(s.delivery_room(), 2);
        let a = s.handle(
            now,
            Packet::Unsubscribe(Unsubscribe {
                pkid: 4,
                filters: vec!["a/#".into(), "never".into()],
                properties: None,
            }),
        );
        let [Action::Send(Packet::UnsubAck(ack))] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(
            ack.reasons,
            vec![
                UnsubAckReason::Success,
                UnsubAckReason::NoSubscriptionExisted
            ]
        );
    }

    #[test]
    fn v5_delivery_options_and_properties() {
        let props = ConnectProperties {
            session_expiry_interval: None,
            receive_maximum: Some(1),
            max_packet_size: None,
            topic_alias_max: Some(1),
            request_response_info: None,
            request_problem_info: None,
            user_properties: Vec::new(),
            authentication_method: None,
            authentication_data: None,
        };
        let (mut s, now) = connected_v5(Some(props));
        let mut own = sub("t/#", QoS::AtMostOnce);
        own.nolocal = true;
        s.handle(now, subscribe(vec![own], Some(7)));
        let mut rap = sub("t/+", QoS::AtLeastOnce);
        rap.preserve_retain = true;
        rap.retain_forward_rule = RetainForwardRule::Never;
        let a = s.handle(now, subscribe(vec![rap], Some(9)));
        assert!(!a.iter().any(|x| matches!(x, Action::SendRetained { .. })));

        let mut m = msg("t/x", QoS::AtLeastOnce);
        m.retain = true;
        m.timestamp_ms = 1_000;
        m.properties.message_expiry_interval = Some(10);
        m.properties.user_properties = vec![("b".into(), "1".into()), ("a".into(), "2".into())];
        m.properties.correlation_data = Some(Bytes::from_static(b"c"));
        m.properties.response_topic = Some("r".into());
        let p = only_publish(&offer(&mut s, &m, 10, 4_500)).clone();
        let pp = p.properties.as_ref().expect("properties");
        assert_eq!(pp.subscription_identifiers, vec![7, 9], "every matching id");
        assert_eq!(pp.message_expiry_interval, Some(7), "counted down");
        assert_eq!(
            pp.user_properties, m.properties.user_properties,
            "order kept"
        );
        assert_eq!((pp.topic_alias, p.topic.as_str()), (Some(1), "t/x"));
        assert!(p.retain, "retain as published");
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert!(!s.can_deliver(), "the client's receive maximum is 1");
        s.handle(now, Packet::PubAck(PubAck::new(p.pkid)));

        // The same topic again goes by alias only.
        let p = only_publish(&offer(&mut s, &m, 11, 4_500)).clone();
        assert_eq!(
            (p.topic.as_str(), p.properties.and_then(|x| x.topic_alias)),
            ("", Some(1))
        );
        s.handle(now, Packet::PubAck(PubAck::new(p.pkid)));
        assert!(offer(&mut s, &m, 12, 11_000).is_empty(), "expired");

        // No-local: our own publish reaches only the subscription without it.
        let mut own = msg("t/x", QoS::AtLeastOnce);
        own.origin = "c1".into();
        let p = only_publish(&offer(&mut s, &own, 13, 0)).clone();
        assert_eq!(
            p.properties.map(|x| x.subscription_identifiers),
            Some(vec![9])
        );
    }

    #[test]
    fn wills_are_due_unless_the_client_disconnects_cleanly() {
        let now = Instant::now();
        let will_connect = |v5: bool| {
            let mut c = Connect::new("w");
            c.protocol = if v5 { Protocol::V5 } else { Protocol::V4 };
            c.last_will = Some(LastWill::new("status/w", "gone", QoS::AtLeastOnce, true));
            c
        };
        let mut s = Session::new(now, SessionSettings::default(), "x".into());
        connect(&mut s, now, will_connect(false));
        assert!(s.timed_out(now).is_none());
        s.handle(now, Packet::Disconnect(Disconnect::new()));
        assert_eq!(s.take_will(), None, "clean DISCONNECT discards the will");

        let mut s = Session::new(now, SessionSettings::default(), "x".into());
        connect(&mut s, now, will_connect(true));
        let mut d = Disconnect::new();
        d.reason_code = DisconnectReasonCode::DisconnectWithWillMessage;
        assert_eq!(
            s.handle(now, Packet::Disconnect(d)),
            vec![Action::Disconnected { will: true }]
        );
        let w = s.take_will().expect("will");
        assert_eq!(
            (
                w.message.topic.as_str(),
                w.message.retain,
                &w.message.origin[..]
            ),
            ("status/w", true, "w")
        );

        let mut s = Session::new(now, SessionSettings::default(), "x".into());
        connect(&mut s, now, will_connect(false));
        assert!(s.timed_out(now + Duration::from_secs(1)).is_none());
        assert!(s.take_will().is_some(), "lost connection: the will is due");
    }

    #[test]
    fn persistent_sessions_resume_with_their_subscriptions_and_stable_packet_ids() {
        let now = Instant::now();
        let mut s = Session::new(now, SessionSettings::default(), "x".into());
        let mut c = Connect::new("dev");
        c.protocol = Protocol::V4;
        c.clean_session = false;
        assert_eq!(
            s.handle(now, Packet::Connect(c)),
            vec![Action::Resume {
                client_id: "dev".into(),
                clean_start: false,
                expiry: u32::MAX,
                login: None,
            }]
        );
        let stored = StoredSession {
            version: 1,
            client_id: "dev".into(),
            expiry: u32::MAX,
            subscriptions: vec![StoredSubscription {
                filter: "jobs/#".into(),
                qos: 2,
                no_local: false,
                retain_as_published: false,
                id: None,
            }],
            released: vec![77],
            disconnected_ms: Some(1),
            sent_upto: 0,
            streams: Vec::new(),
            adapter: None,
            orphaned_ms: None,
        };
        let a = s.resumed(Some(stored.clone()));
        assert!(matches!(&a[0], Action::Send(Packet::ConnAck(ack)) if ack.session_present));
        assert_eq!(a[1], Action::Send(Packet::PubRel(PubRel::new(77))));
        assert_eq!(a[2], Action::StartDelivery);
        assert_eq!(s.stored().subscriptions, stored.subscriptions);
        assert_eq!(s.stored().released, vec![77]);

        // A resend: DUP, and the packet id the offset fixes.
        let m = msg("jobs/1", QoS::ExactlyOnce);
        let a = s.deliver(m.clone(), 70_000, true, 0);
        let p = only_publish(&a).clone();
        assert_eq!((p.dup, p.pkid), (true, pkid_for(70_000)));
        // The same packet id in flight: held back, and nothing more is to be read.
        assert_eq!(s.deliver(m.clone(), 70_000 + 65_535, false, 0), vec![]);
        assert_eq!(s.held_at(), Some(70_000 + 65_535));
        assert_eq!(s.deliver_held(0), vec![], "still in flight");
        assert_eq!(s.held_at(), Some(70_000 + 65_535));
        // PUBREC: done, the release saved, then PUBREL (a crash between the two resends
        // PUBREL, never the message).
        let a = s.handle(now, Packet::PubRec(PubRec::new(p.pkid)));
        assert_eq!(a.len(), 3, "{a:?}");
        assert_eq!(a[0], Action::Done { offset: 70_000 });
        assert!(matches!(&a[1], Action::SaveSession(st) if st.released == vec![77, p.pkid]));
        assert_eq!(a[2], Action::Send(Packet::PubRel(PubRel::new(p.pkid))));
        assert_eq!(s.stored().released, vec![77, p.pkid]);
        // PUBCOMP completes it (saved with the next save).
        assert_eq!(s.handle(now, Packet::PubComp(PubComp::new(p.pkid))), vec![]);
        assert_eq!(s.stored().released, vec![77]);
        // The held message goes now, with its own offset and no DUP.
        let a = s.deliver_held(0);
        let held = only_publish(&a);
        assert_eq!((held.dup, held.pkid), (false, p.pkid));
        assert_eq!(s.held_at(), None);
        // Not for this session: done at once.
        assert_eq!(
            s.deliver(msg("other", QoS::AtLeastOnce), 5, false, 0),
            vec![Action::Done { offset: 5 }]
        );
        // Subscription changes are saved before they are acknowledged.
        let a = s.handle(now, subscribe(vec![sub("more", QoS::AtLeastOnce)], None));
        assert!(
            matches!(&a[0], Action::SaveSession(st) if st.subscriptions.len() == 2),
            "{a:?}"
        );
    }

    #[test]
    fn stored_sessions_expire_after_their_interval() {
        let mut st = StoredSession {
            version: 1,
            client_id: "c".into(),
            expiry: 10,
            subscriptions: Vec::new(),
            released: Vec::new(),
            disconnected_ms: None,
            sent_upto: 0,
            streams: Vec::new(),
            adapter: Some("run".into()),
            orphaned_ms: None,
        };
        assert!(
            !st.expired(i64::MAX),
            "still connected (or its adapter died unnoticed)"
        );
        // Its adapter found dead at 500: the expiry counts from then.
        st.orphaned_ms = Some(500);
        assert!(!st.expired(10_499));
        assert!(st.expired(10_500));
        st.disconnected_ms = Some(1_000);
        assert!(!st.expired(10_999));
        assert!(st.expired(11_000));
        st.expiry = u32::MAX;
        assert!(!st.expired(i64::MAX));
    }

    #[test]
    fn a_connect_resumes_a_stored_session_unless_it_cannot() {
        let stored = StoredSession {
            version: 1,
            client_id: "c".into(),
            expiry: 60,
            subscriptions: Vec::new(),
            released: vec![3],
            disconnected_ms: Some(1_000),
            sent_upto: 42,
            streams: Vec::new(),
            adapter: None,
            orphaned_ms: None,
        };
        let meta = serde_json::to_value(&stored).expect("json");
        // Resumed: recorded connected, here, with the new expiry; the rest kept.
        let r = StoredSession::resume(Some(&meta), false, 300, 2_000, "run-b");
        assert_eq!(r.session.as_ref(), Some(&stored));
        let written: StoredSession =
            serde_json::from_value(r.meta.expect("meta written")).expect("a stored session");
        assert_eq!(
            written,
            StoredSession {
                expiry: 300,
                disconnected_ms: None,
                adapter: Some("run-b".into()),
                ..stored.clone()
            }
        );
        // Not resumed: clean start, expired, stored with expiry 0, nothing or junk stored.
        let not = |r: Resumption| r.session.is_none() && r.meta.is_none();
        assert!(not(StoredSession::resume(
            Some(&meta),
            true,
            300,
            2_000,
            "b"
        )));
        assert!(not(StoredSession::resume(
            Some(&meta),
            false,
            300,
            61_000,
            "b"
        )));
        let ends = StoredSession {
            expiry: 0,
            ..stored.clone()
        };
        let ends = serde_json::to_value(&ends).expect("json");
        assert!(not(StoredSession::resume(
            Some(&ends),
            false,
            300,
            2_000,
            "b"
        )));
        assert!(not(StoredSession::resume(None, false, 300, 2_000, "b")));
        let junk = serde_json::json!({"not": "a session"});
        assert!(not(StoredSession::resume(
            Some(&junk),
            false,
            300,
            2_000,
            "b"
        )));
        assert!(!stored.ended_unclean());
        assert!(written_unclean(&meta));
    }

    /// A session recorded connected and never closed (its adapter died) ended unclean.
    fn written_unclean(meta: &serde_json::Value) -> bool {
        let r = StoredSession::resume(Some(meta), false, 300, 2_000, "run-b");
        let written: StoredSession =
            serde_json::from_value(r.meta.expect("meta")).expect("a stored session");
        written.ended_unclean()
    }

    #[test]
    fn marks_say_what_was_offered_and_what_carries_dup() {
        // A new stream: nothing was offered, nothing is a resend.
        let mut m = Marks::new(10);
        assert!(!m.moved());
        assert!(!m.offered(10));
        assert_eq!(m.sent_upto(), 11);
        assert!(m.moved());
        m.saved();
        assert!(!m.moved());
        // Reading back (a held message read again) does not move the mark back.
        assert!(!m.offered(10));
        assert_eq!(m.sent_upto(), 11);
        // Resumed after an orderly close: what was saved as sent is a resend.
        let mut m = Marks::resumed(5, None);
        assert!(m.offered(4));
        assert!(!m.offered(5));
        // Resumed after an unclean end: everything stored up to the head may have been sent.
        let mut m = Marks::resumed(5, Some(9));
        assert!(m.offered(8));
        assert!(!m.offered(9));
        // A head behind the saved mark changes nothing.
        let mut m = Marks::resumed(5, Some(2));
        assert!(m.offered(4));
        assert!(!m.offered(5));
    }

    #[test]
    fn a_saved_session_holds_its_positions_and_where_it_is_served() {
        let (s, _) = connected();
        let positions = [
            FollowedStream {
                stream: "default".into(),
                sent_upto: 7,
            },
            FollowedStream {
                stream: "sensors".into(),
                sent_upto: 3,
            },
        ];
        let st = s.stored().at(positions.clone(), None, "run-a");
        assert_eq!(st.sent_upto, 7, "the default stream's mark, first");
        assert_eq!(st.streams, positions[1..].to_vec());
        assert_eq!(st.adapter.as_deref(), Some("run-a"), "connected here");
        let st = s.stored().at(positions, Some(5), "run-a");
        assert_eq!((st.adapter, st.disconnected_ms), (None, Some(5)));
    }

    #[test]
    fn each_save_holds_the_releases_decided_before_it_only() {
        // Two PUBRECs read at once: the session handles both before the driver carries out
        // the first save. That save must not hold the second release (its message is not
        // acknowledged until the second `Done`): a session resumed from it would send PUBREL
        // for the second and then the message again — a QoS 2 duplicate.
        let now = Instant::now();
        let mut s = Session::new(now, SessionSettings::default(), "x".into());
        let mut c = Connect::new("dev");
        c.protocol = Protocol::V4;
        c.clean_session = false;
        s.handle(now, Packet::Connect(c));
        s.resumed(None);
        s.handle(now, subscribe(vec![sub("t", QoS::ExactlyOnce)], None));
        let p1 = only_publish(&s.deliver(msg("t", QoS::ExactlyOnce), 10, false, 0)).pkid;
        let p2 = only_publish(&s.deliver(msg("t", QoS::ExactlyOnce), 11, false, 0)).pkid;
        let mut actions = s.handle(now, Packet::PubRec(PubRec::new(p1)));
        actions.extend(s.handle(now, Packet::PubRec(PubRec::new(p2))));
        let saves: Vec<(Vec<u16>, usize)> = actions
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Action::SaveSession(st) => Some((st.released.clone(), i)),
                _ => None,
            })
            .collect();
        let done = |offset| actions.iter().position(|a| *a == Action::Done { offset });
        assert_eq!(saves.len(), 2, "{actions:?}");
        assert_eq!(saves[0].0, vec![p1]);
        assert_eq!(saves[1].0, vec![p1, p2]);
        assert!(done(10) < Some(saves[0].1) && done(11) < Some(saves[1].1));
        assert!(done(11) > Some(saves[0].1), "{actions:?}");
    }

    #[test]
    fn a_clean_session_releases_qos2_without_saving() {
        let (mut s, now) = connected();
        s.handle(now, subscribe(vec![sub("t", QoS::ExactlyOnce)], None));
        let a = s.deliver(msg("t", QoS::ExactlyOnce), 4, false, 0);
        let pkid = only_publish(&a).pkid;
        assert_eq!(
            s.handle(now, Packet::PubRec(PubRec::new(pkid))),
            vec![
                Action::Done { offset: 4 },
                Action::Send(Packet::PubRel(PubRel::new(pkid)))
            ]
        );
        assert!(s.stored().released.is_empty());
    }

    #[test]
    fn keep_alive_is_one_and_a_half_times() {
        let (mut s, now) = connected();
        assert!(!s.keep_alive_expired(now + Duration::from_secs(15)));
        assert!(s.keep_alive_expired(now + Duration::from_millis(15_001)));
        assert!(matches!(
            s.timed_out(now + Duration::from_secs(16)).as_deref(),
            Some([Action::Close {
                reason: "keep-alive expired"
            }])
        ));
        let (mut s, now) = connected_v5(None);
        let a = s.timed_out(now + Duration::from_secs(16)).expect("expired");
        assert_eq!(
            disconnect_code(&a),
            Some(DisconnectReasonCode::KeepAliveTimeout)
        );
    }

    #[test]
    fn a_connection_must_start_with_connect_in_time() {
        let now = Instant::now();
        let mut s = Session::new(now, SessionSettings::default(), "a".into());
        assert_eq!(s.timed_out(now + Duration::from_secs(9)), None);
        assert_eq!(
            s.timed_out(now + Duration::from_secs(11)),
            Some(vec![Action::Close {
                reason: "no CONNECT in time"
            }])
        );
    }

    fn grants(addresses: &[&str], actions: &[Permit]) -> Grants {
        Grants::of(Some(vec![wharf_auth::Permission {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            actions: actions.to_vec(),
        }]))
    }

    #[test]
    fn a_publish_the_user_may_not_send_is_refused_in_each_version_s_terms() {
        let only_sensors = grants(&["sensors/*"], &[Permit::Send]);
        let (mut s, now) = connected_v5(None);
        assert!(s.set_grants(only_sensors.clone()).is_empty());
        assert!(matches!(
            &s.handle(now, publish("sensors/1", QoS::AtLeastOnce, 1))[..],
            [Action::Append { .. }]
        ));
        let a = s.handle(now, publish("orders", QoS::AtLeastOnce, 2));
        assert!(
            matches!(&a[..], [Action::Send(Packet::PubAck(ack))]
            if ack.pkid == 2 && ack.reason == PubAckReason::NotAuthorized),
            "{a:?}"
        );
        let a = s.handle(now, publish("orders", QoS::ExactlyOnce, 3));
        assert!(
            matches!(&a[..], [Action::Send(Packet::PubRec(r))]
            if r.pkid == 3 && r.reason == PubRecReason::NotAuthorized),
            "{a:?}"
        );
        assert!(
            s.handle(now, publish("orders", QoS::AtMostOnce, 0))
                .is_empty()
        );
        // MQTT 3.1.1: acknowledged as usual, not stored [MQTT-3.3.5-2].
        let (mut s, now) = connected();
        s.set_grants(only_sensors);
        let a = s.handle(now, publish("orders", QoS::AtLeastOnce, 4));
        assert!(
            matches!(&a[..], [Action::Send(Packet::PubAck(ack))]
            if ack.pkid == 4 && ack.reason == PubAckReason::Success),
            "{a:?}"
        );
        let a = s.handle(now, publish("orders", QoS::ExactlyOnce, 5));
        assert!(
            matches!(&a[..], [Action::Send(Packet::PubRec(r))] if r.pkid == 5),
            "{a:?}"
        );
        let a = s.handle(now, Packet::PubRel(PubRel::new(5)));
        assert!(
            matches!(&a[..], [Action::Send(Packet::PubComp(c))] if c.pkid == 5),
            "{a:?}"
        );
    }

    #[test]
    fn a_subscription_the_user_may_not_receive_is_refused_and_a_revoked_one_disconnects() {
        let (mut s, now) = connected_v5(None);
        s.set_grants(grants(&["sensors/*"], &[Permit::Receive]));
        let a = s.handle(
            now,
            subscribe(
                vec![
                    sub("sensors/#", QoS::AtLeastOnce),
                    sub("#", QoS::AtLeastOnce),
                    sub("$share/g/orders", QoS::AtLeastOnce),
                ],
                None,
            ),
        );
        let acks: Vec<_> = sent(&a)
            .into_iter()
            .filter_map(|p| match p {
                Packet::SubAck(ack) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            acks,
            [vec![
                SubscribeReasonCode::QoS1,
                SubscribeReasonCode::NotAuthorized,
                SubscribeReasonCode::NotAuthorized
            ]]
        );
        // Still allowed: nothing happens. Taken away: DISCONNECT 0x87.
        assert!(
            s.set_grants(grants(&["sensors/*"], &[Permit::Receive, Permit::Send]))
                .is_empty()
        );
        let a = s.set_grants(grants(&["other"], &[Permit::Receive]));
        assert!(
            matches!(&a[..], [Action::Send(Packet::Disconnect(d)), Action::Close { .. }]
            if d.reason_code == DisconnectReasonCode::NotAuthorized),
            "{a:?}"
        );
    }

    #[test]
    fn a_publish_beyond_the_tenant_s_limits_is_refused_with_quota_exceeded() {
        let (mut s, now) = connected_v5(None);
        let quota = std::sync::Arc::new(wharf_adapter_core::quota::Quota::default());
        quota.set_max_message_bytes(Some(1));
        s.use_settings(std::sync::Arc::new(SessionSettings {
            quota: quota.clone(),
            ..SessionSettings::default()
        }));
        // publish() carries a one-byte payload: within the limit.
        assert!(matches!(
            &s.handle(now, publish("a", QoS::AtLeastOnce, 1))[..],
            [Action::Append { .. }]
        ));
        let mut big = Publish::new("a", QoS::AtLeastOnce, "too big");
        big.pkid = 2;
        let a = s.handle(now, Packet::Publish(big));
        assert!(
            matches!(&a[..], [Action::Send(Packet::PubAck(ack))]
            if ack.pkid == 2 && ack.reason == PubAckReason::QuotaExceeded),
            "{a:?}"
        );
        quota.set_storage_full(true);
        let a = s.handle(now, publish("a", QoS::ExactlyOnce, 3));
        assert!(
            matches!(&a[..], [Action::Send(Packet::PubRec(r))]
            if r.pkid == 3 && r.reason == PubRecReason::QuotaExceeded),
            "{a:?}"
        );
    }

    #[test]
    fn a_will_the_user_may_not_publish_refuses_the_connect() {
        let now = Instant::now();
        let mut s = Session::new(now, SessionSettings::default(), "assigned".into());
        let mut c = Connect::new("c1");
        c.protocol = Protocol::V5;
        c.last_will = Some(mqttbytes::v5::LastWill::new(
            "alarms/c1",
            "gone",
            QoS::AtLeastOnce,
            false,
        ));
        let a = s.handle(now, Packet::Connect(c));
        assert!(matches!(&a[..], [Action::Resume { .. }]), "{a:?}");
        let a = s.set_grants(grants(&["sensors/*"], &[Permit::Send]));
        assert!(
            matches!(&a[..], [Action::Send(Packet::ConnAck(ack)), Action::Close { .. }]
            if ack.code == ConnectReturnCode::NotAuthorized),
            "{a:?}"
        );
    }
}
