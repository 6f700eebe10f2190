//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 §4.8.2): each message matching the
//! filter goes to exactly one member of the group, whichever adapters the members are on.
//!
//! A group reads every stream its filter reaches: the default topic address's, and those of
//! topic addresses claiming topics it matches ([`wharf_adapter_core::claims`]). Every adapter with members
//! reads each of them competing with the others by blocks ([`wharf_log::Blocks`]): the
//! stream's offsets are cut into blocks (`[mqtt] share_block`, 1,024 by default), an adapter
//! takes one by lease (`mqtt-share.<hex key>.<n>` on the default stream,
//! `mqtt-share.<hex key>.<stream>.<n>` on others; at most two at once per stream), hands each
//! matching message in it to one of its local members (round robin among those with room),
//! and acknowledges the offset in the group's cursor on that stream (`mqtt-share.<hex key>`,
//! shared by the adapters; commits merge) when that member acknowledged it (QoS 1:
//! PUBACK, QoS 2: PUBREC, QoS 0: when sent). Messages that do not match are acknowledged as
//! read. A member that leaves with messages in flight gives them back and they go to another
//! member; an adapter whose last member leaves gives its blocks up at once, and the blocks of
//! an adapter that dies are taken by another when their leases expire
//! (`MqttSettings::adapter_lease`): whatever in them was not acknowledged is delivered again,
//! so delivery to the group is at least once across an adapter's death.
//!
//! An adapter only takes blocks while its members have room, so a backlog spreads over the
//! adapters; at the tail of the stream, the block being written is served by whichever adapter
//! took it until it is full.
//!
//! The group is a [`wharf_adapter_core::competing`] consumer (the one AMQP queues are);
//! this module gives it MQTT's rules: which records match the filter, what a member is sent,
//! which streams the filter reaches as claims change.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;
use wharf_log::Log;
use wharf_log_format::{StoredRecord, StreamId};

use wharf_adapter_core::{
    bridge::Bridge,
    claims::Claims,
    competing::{self, Competing, Pending, Rules, Source, Start},
    names::{block_lease_prefix, default_stream, share_cursor},
    runtime::Background,
    topic::matches,
};

use crate::{message::Message, session::share_filter};

/// A message for one member of a shared subscription.
#[derive(Debug)]
pub struct SharedDelivery {
    pub share: String,
    /// Where it is stored: the group's stream index and the offset, packed as a followed
    /// stream's are (so packet ids derive from it the same way).
    pub offset: u64,
    pub message: Message,
}

/// Where a connection's groups deliver to it.
type Outlet = mpsc::Sender<SharedDelivery>;

/// One connection's membership of a group (`ack` when done, `give_back` when it cannot take
/// a message now); dropping it leaves the group.
pub type Membership = competing::Member<Outlet>;

/// Matching messages read ahead of the members.
const READ_AHEAD: usize = 128;

/// The shared subscriptions of one adapter.
#[derive(Debug)]
pub struct SharedGroups {
    log: Log,
    claims: Arc<Claims>,
    groups: Competing<String, Group, Outlet>,
    next_member: AtomicU64,
    /// Maps what other protocols stored under matching topics to MQTT messages.
    bridge: Bridge,
}

impl SharedGroups {
    pub fn new(
        log: Log,
        claims: Arc<Claims>,
        run: String,
        ttl: Duration,
        block: u64,
        bridge: Bridge,
        background: Background,
    ) -> Arc<Self> {
        let settings = competing::Settings {
            holder: run,
            lease_ttl: ttl,
            block,
            read_ahead: READ_AHEAD,
            commit_every: Duration::from_millis(100),
            background,
        };
        Arc::new(Self {
            groups: Competing::new(log.clone(), settings),
            next_member: AtomicU64::new(1),
            bridge,
            log,
            claims,
        })
    }

    /// Join `share` with a channel the group delivers into. `None` if the name is too long to
    /// be stored (group + filter over 90 bytes).
    pub fn join(&self, share: &str, tx: Outlet) -> Option<Membership> {
        let (_, filter) = share_filter(share)?;
        let name = share_cursor(&share["$share/".len()..]);
        // Room for the block number in lease names (`<name>.<n>`).
        if name.len() > 180 {
            return None;
        }
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        // Members are limited by their channel's room, not by credit.
        Some(self.groups.join(share.to_string(), id, u32::MAX, tx, || {
            // The default topic address first (its positions are plain offsets), then the
            // topic addresses whose claims the filter reaches; a new group starts at their
            // ends.
            let sources = self
                .claims
                .reach(filter)
                .all_streams()
                .into_iter()
                .map(|stream| source(&name, stream, Start::End))
                .collect();
            let group = Group {
                log: self.log.clone(),
                claims: self.claims.clone(),
                bridge: self.bridge,
                share: share.to_string(),
                filter: filter.to_string(),
                name,
                claims_seen: self.claims.generation(),
            };
            (group, sources)
        }))
    }
}

/// The group's cursor on `stream` (`mqtt-share.<hex key>`, on every stream) and its block
/// leases (`mqtt-share.<hex key>.<n>` on the default stream, `….<stream>.<n>` on others).
fn source(name: &str, stream: StreamId, start: Start) -> Source {
    let lease_prefix = if stream == default_stream() {
        name.to_string()
    } else {
        block_lease_prefix(name, &stream)
    };
    Source {
        stream,
        cursor: name.to_string(),
        lease_prefix,
        start,
    }
}

/// What a shared subscription group decides: which records match its filter, what a member
/// is sent, and which streams it reads as addresses claim topics.
struct Group {
    log: Log,
    claims: Arc<Claims>,
    bridge: Bridge,
    share: String,
    filter: String,
    /// The group's cursor, and the prefix of its block leases.
    name: String,
    /// The claims' generation when the streams read were worked out.
    claims_seen: u64,
}

impl Rules for Group {
    type Item = Message;
    type Out = SharedDelivery;

    fn accept(&self, _stream: usize, r: StoredRecord) -> Option<Message> {
        Message::decode(&r, &self.bridge)
            .ok()
            .filter(|m| matches(&self.filter, &m.topic))
    }

    fn deliver(&self, _member: u64, position: u64, pending: &Pending<Message>) -> SharedDelivery {
        SharedDelivery {
            share: self.share.clone(),
            offset: position,
            message: pending.item.clone(),
        }
    }

    fn drained(&self, _member: u64) -> Option<SharedDelivery> {
        None
    }

    /// Addresses claim other topics now: read the streams the filter reaches that the group
    /// does not read yet, from [`wharf_adapter_core::claims::CLAIM_GRACE`] back (what was
    /// routed there while adapters had not all seen the claim).
    async fn new_sources(&mut self, reading: &[StreamId]) -> Vec<Source> {
        let generation = self.claims.generation();
        if generation == self.claims_seen {
            return Vec::new();
        }
        self.claims_seen = generation;
        let mut new = Vec::new();
        for stream in self.claims.reach(&self.filter).streams {
            if reading.contains(&stream) {
                continue;
            }
            let start = wharf_adapter_core::claims::late_start(&self.log, &stream).await;
            tracing::info!(share = self.share, %stream, start, "shared subscription follows a newly claimed address");
            new.push(source(&self.name, stream, Start::At(start)));
        }
        new
    }
}
