//! One client connection's MQTT session, as a state machine without I/O: the driver feeds it
//! decoded packets, durability results and stored messages, and carries out the [`Action`]s
//! it returns. Time is a parameter.
//!
//! This first slice speaks MQTT 3.1.1 and keeps its state in memory for the connection's
//! lifetime (clean sessions); see `adapters/README.md` for what is not built yet.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use bytes::Bytes;
use mqttbytes::{
    QoS,
    v4::{
        ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
        SubscribeReasonCode, UnsubAck,
    },
};

use crate::topic::{matches, valid_filter, valid_topic_name};

/// Limits of one session.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// QoS 1 deliveries awaiting PUBACK before delivery pauses.
    pub max_inflight: usize,
    /// A connection that has not sent CONNECT by then is closed.
    pub connect_timeout: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            max_inflight: 100,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A stored message offered to the session for delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    pub payload: Bytes,
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
    /// Close the connection (after sending what was queued): a protocol or store failure.
    Close {
        reason: &'static str,
    },
    /// The client ended the session cleanly with DISCONNECT: close without error.
    Disconnected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitConnect,
    Connected,
    Closed,
}

/// See the module docs.
#[derive(Debug)]
pub struct Session {
    settings: SessionSettings,
    state: State,
    client_id: String,
    keep_alive: Duration,
    last_seen: Instant,
    subscriptions: BTreeMap<String, QoS>,
    next_token: u64,
    /// Publishes waiting to be durable: token -> (QoS, packet id).
    pending: BTreeMap<u64, (QoS, u16)>,
    /// QoS 2 packet ids stored and acknowledged with PUBREC, awaiting PUBREL.
    qos2_received: BTreeSet<u16>,
    /// QoS 1 deliveries awaiting PUBACK.
    inflight: BTreeSet<u16>,
    next_pkid: u16,
    /// Client identifier to assign if the client sends an empty one.
    assigned_id: String,
}

fn close(reason: &'static str) -> Vec<Action> {
    vec![Action::Close { reason }]
}

impl Session {
    /// `assigned_id` is given to a client that connects with an empty identifier.
    pub fn new(now: Instant, settings: SessionSettings, assigned_id: String) -> Self {
        Self {
            settings,
            state: State::AwaitConnect,
            client_id: String::new(),
            keep_alive: Duration::ZERO,
            last_seen: now,
            subscriptions: BTreeMap::new(),
            next_token: 0,
            pending: BTreeMap::new(),
            qos2_received: BTreeSet::new(),
            inflight: BTreeSet::new(),
            next_pkid: 1,
            assigned_id,
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Handle one packet from the client.
    pub fn handle(&mut self, now: Instant, packet: Packet) -> Vec<Action> {
        self.last_seen = now;
        let actions = match (self.state, packet) {
            (State::Closed, _) => Vec::new(),
            (State::AwaitConnect, Packet::Connect(c)) => {
                if c.client_id.is_empty() && !c.clean_session {
                    // [MQTT-3.1.3-8]
                    self.state = State::Closed;
                    let mut a = vec![Action::Send(Packet::ConnAck(ConnAck::new(
                        ConnectReturnCode::BadClientId,
                        false,
                    )))];
                    a.extend(close("empty client id without clean session"));
                    return a;
                }
                self.client_id = if c.client_id.is_empty() {
                    std::mem::take(&mut self.assigned_id)
                } else {
                    c.client_id
                };
                self.keep_alive = Duration::from_secs(u64::from(c.keep_alive));
                self.state = State::Connected;
                // No stored session is kept yet, so there is never one present [MQTT-3.2.2-1].
                vec![Action::Send(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::Success,
                    false,
                )))]
            }
            (State::AwaitConnect, _) => close("first packet was not CONNECT"), // [MQTT-3.1.0-1]
            (State::Connected, Packet::Connect(_)) => close("second CONNECT"), // [MQTT-3.1.0-2]
            (State::Connected, Packet::Publish(p)) => self.publish(p),
            (State::Connected, Packet::PubAck(a)) => {
                self.inflight.remove(&a.pkid);
                Vec::new()
            }
            (State::Connected, Packet::PubRel(r)) => {
                // [MQTT-4.3.3-2]: PUBCOMP even if the id is unknown (a resent PUBREL).
                self.qos2_received.remove(&r.pkid);
                vec![Action::Send(Packet::PubComp(PubComp::new(r.pkid)))]
            }
            (State::Connected, Packet::Subscribe(s)) => {
                let had = !self.subscriptions.is_empty();
                let codes = s
                    .filters
                    .into_iter()
                    .map(|f| {
                        if !valid_filter(&f.path) {
                            return SubscribeReasonCode::Failure;
                        }
                        // Deliveries go out at QoS 0 or 1 in this slice; granting less than
                        // asked is allowed [MQTT-3.8.4-6].
                        let granted = if f.qos == QoS::AtMostOnce {
                            QoS::AtMostOnce
                        } else {
                            QoS::AtLeastOnce
                        };
                        self.subscriptions.insert(f.path, granted);
                        SubscribeReasonCode::Success(granted)
                    })
                    .collect();
                let mut a = vec![Action::Send(Packet::SubAck(SubAck::new(s.pkid, codes)))];
                if !had && !self.subscriptions.is_empty() {
                    a.push(Action::StartDelivery);
                }
                a
            }
            (State::Connected, Packet::Unsubscribe(u)) => {
                for t in &u.topics {
                    self.subscriptions.remove(t);
                }
                vec![Action::Send(Packet::UnsubAck(UnsubAck::new(u.pkid)))]
            }
            (State::Connected, Packet::PingReq) => vec![Action::Send(Packet::PingResp)],
            (State::Connected, Packet::Disconnect) => {
                self.state = State::Closed;
                return vec![Action::Disconnected];
            }
            (State::Connected, _) => close("packet a client must not send"),
        };
        if actions.iter().any(|a| matches!(a, Action::Close { .. })) {
            self.state = State::Closed;
        }
        actions
    }

    fn publish(&mut self, p: Publish) -> Vec<Action> {
        if !valid_topic_name(&p.topic) {
            return close("invalid topic name in PUBLISH"); // [MQTT-3.3.2-2]
        }
        if p.qos == QoS::ExactlyOnce && self.qos2_received.contains(&p.pkid) {
            // A resent QoS 2 PUBLISH we already stored: acknowledge, do not store again.
            return vec![Action::Send(Packet::PubRec(PubRec::new(p.pkid)))];
        }
        let token = self.next_token;
        self.next_token += 1;
        if p.qos != QoS::AtMostOnce {
            self.pending.insert(token, (p.qos, p.pkid));
        }
        vec![Action::Append {
            token,
            message: Message {
                topic: p.topic,
                qos: p.qos,
                retain: p.retain,
                payload: p.payload,
            },
        }]
    }

    /// A stored publish is durable (`ok`) or could not be stored.
    pub fn appended(&mut self, token: u64, ok: bool) -> Vec<Action> {
        let Some((qos, pkid)) = self.pending.remove(&token) else {
            return Vec::new();
        };
        if !ok {
            // MQTT 3.1.1 has no negative acknowledgement: the client will resend.
            self.state = State::Closed;
            return close("could not store a message");
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

    /// Whether the session can take another delivery now.
    pub fn can_deliver(&self) -> bool {
        self.delivery_room() > 0
    }

    /// How many more messages may be offered now without overrunning the QoS 1 window.
    pub fn delivery_room(&self) -> usize {
        if self.state != State::Connected {
            return 0;
        }
        self.settings
            .max_inflight
            .saturating_sub(self.inflight.len())
    }

    /// Offer a stored message: sent once, at the highest QoS of the matching subscriptions
    /// capped by the message's own [MQTT-3.3.5-1].
    pub fn deliver(&mut self, m: &Message) -> Vec<Action> {
        if self.state != State::Connected {
            return Vec::new();
        }
        let Some(sub_qos) = self
            .subscriptions
            .iter()
            .filter(|(f, _)| matches(f, &m.topic))
            .map(|(_, q)| *q as u8)
            .max()
        else {
            return Vec::new();
        };
        let qos = if (m.qos as u8).min(sub_qos) == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let mut p = Publish::from_bytes(m.topic.clone(), qos, m.payload.clone());
        if qos == QoS::AtLeastOnce {
            let mut pkid = self.next_pkid;
            while self.inflight.contains(&pkid) {
                pkid = pkid.checked_add(1).unwrap_or(1);
            }
            self.next_pkid = pkid.checked_add(1).unwrap_or(1);
            self.inflight.insert(pkid);
            p.pkid = pkid;
        }
        vec![Action::Send(Packet::Publish(p))]
    }

    /// Whether the client has been silent for more than 1.5 × keep-alive [MQTT-3.1.2-24].
    pub fn keep_alive_expired(&self, now: Instant) -> bool {
        !self.keep_alive.is_zero() && now.duration_since(self.last_seen) > self.keep_alive * 3 / 2
    }

    /// Why the connection should be closed for silence now, if it should: no CONNECT within
    /// the connect timeout, or the keep-alive expired.
    pub fn timed_out(&self, now: Instant) -> Option<&'static str> {
        match self.state {
            State::AwaitConnect
                if now.duration_since(self.last_seen) > self.settings.connect_timeout =>
            {
                Some("no CONNECT in time")
            }
            State::Connected if self.keep_alive_expired(now) => Some("keep-alive expired"),
            _ => None,
        }
    }

    /// Whether the first byte of a connection's input can start a CONNECT packet; anything
    /// else is refused at once [MQTT-3.1.0-1] instead of waiting for a whole bogus packet.
    pub fn first_byte_acceptable(&self, byte: u8) -> bool {
        self.state != State::AwaitConnect || byte == 0x10
    }
}

#[cfg(test)]
mod tests {
    use mqttbytes::v4::{Connect, PubRel, Subscribe, Unsubscribe};

    use super::*;

    fn connected() -> (Session, Instant) {
        let now = Instant::now();
        let settings = SessionSettings {
            max_inflight: 2,
            ..SessionSettings::default()
        };
        let mut s = Session::new(now, settings, "assigned".into());
        let mut c = Connect::new("c1");
        c.keep_alive = 10;
        let a = s.handle(now, Packet::Connect(c));
        assert_eq!(
            a,
            vec![Action::Send(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false
            )))]
        );
        (s, now)
    }

    fn publish(topic: &str, qos: QoS, pkid: u16) -> Packet {
        let mut p = Publish::new(topic, qos, "x");
        p.pkid = pkid;
        Packet::Publish(p)
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
    }

    #[test]
    fn empty_client_id_needs_clean_session() {
        let now = Instant::now();
        let mut s = Session::new(now, SessionSettings::default(), "assigned".into());
        let mut c = Connect::new("");
        c.clean_session = false;
        let a = s.handle(now, Packet::Connect(c));
        assert_eq!(
            a[0],
            Action::Send(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::BadClientId,
                false
            )))
        );
        let mut s = Session::new(now, SessionSettings::default(), "assigned".into());
        s.handle(now, Packet::Connect(Connect::new("")));
        assert_eq!(s.client_id(), "assigned");
    }

    #[test]
    fn puback_and_pubrec_only_after_the_message_is_stored() {
        let (mut s, now) = connected();
        let a = s.handle(now, publish("a/b", QoS::AtLeastOnce, 7));
        let [Action::Append { token, .. }] = a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(
            s.appended(token, true),
            vec![Action::Send(Packet::PubAck(PubAck::new(7)))]
        );

        let a = s.handle(now, publish("a/b", QoS::ExactlyOnce, 8));
        let [Action::Append { token, .. }] = a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(
            s.appended(token, true),
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
            matches!(s.appended(token, false)[..], [Action::Close { .. }]),
            "store failure: no PUBACK"
        );
    }

    #[test]
    fn invalid_topic_names_close() {
        let (mut s, now) = connected();
        assert!(matches!(
            s.handle(now, publish("a/+", QoS::AtMostOnce, 0))[..],
            [Action::Close { .. }]
        ));
    }

    #[test]
    fn subscriptions_deliver_once_at_the_highest_granted_qos_with_flow_control() {
        let (mut s, now) = connected();
        let mut sub = Subscribe::new("a/+", QoS::AtMostOnce);
        sub.pkid = 1;
        sub.add("a/#".into(), QoS::ExactlyOnce);
        sub.add("bad/#/x".into(), QoS::AtLeastOnce);
        let a = s.handle(now, Packet::Subscribe(sub));
        assert_eq!(
            a,
            vec![
                Action::Send(Packet::SubAck(SubAck::new(
                    1,
                    vec![
                        SubscribeReasonCode::Success(QoS::AtMostOnce),
                        SubscribeReasonCode::Success(QoS::AtLeastOnce),
                        SubscribeReasonCode::Failure,
                    ]
                ))),
                Action::StartDelivery,
            ]
        );
        let m = |topic: &str, qos| Message {
            topic: topic.into(),
            qos,
            retain: false,
            payload: Bytes::from_static(b"p"),
        };
        let out = s.deliver(&m("a/b", QoS::ExactlyOnce));
        let [Action::Send(Packet::Publish(ref p))] = out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (p.qos, p.pkid),
            (QoS::AtLeastOnce, 1),
            "one copy, overlapping subscriptions"
        );
        assert!(s.deliver(&m("other", QoS::AtLeastOnce)).is_empty());
        let out = s.deliver(&m("a/b", QoS::AtMostOnce));
        let [Action::Send(Packet::Publish(ref p))] = out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(p.qos, QoS::AtMostOnce, "capped by the message's QoS");
        s.deliver(&m("a/c", QoS::AtLeastOnce));
        assert!(!s.can_deliver(), "two QoS 1 deliveries in flight");
        s.handle(now, Packet::PubAck(PubAck::new(1)));
        assert!(s.can_deliver());
        let a = s.handle(now, Packet::Unsubscribe(Unsubscribe::new("a/#")));
        assert!(matches!(a[..], [Action::Send(Packet::UnsubAck(_))]));
    }

    #[test]
    fn keep_alive_is_one_and_a_half_times() {
        let (s, now) = connected();
        assert!(!s.keep_alive_expired(now + Duration::from_secs(15)));
        assert!(s.keep_alive_expired(now + Duration::from_millis(15_001)));
        assert_eq!(
            s.timed_out(now + Duration::from_secs(16)),
            Some("keep-alive expired")
        );
    }

    #[test]
    fn a_connection_must_start_with_connect_in_time() {
        let now = Instant::now();
        let s = Session::new(now, SessionSettings::default(), "a".into());
        assert!(s.first_byte_acceptable(0x10));
        assert!(!s.first_byte_acceptable(b'G'));
        assert_eq!(s.timed_out(now + Duration::from_secs(9)), None);
        assert_eq!(
            s.timed_out(now + Duration::from_secs(11)),
            Some("no CONNECT in time")
        );
    }
}
