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

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;
use wharf_log::{Blocks, Log, pack_position as pack, unpack_position as unpack};
use wharf_log_format::{Offset, StreamId};

use wharf_adapter_core::{bridge::Bridge, claims::Claims, names::share_cursor, topic::matches};

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

#[derive(Debug)]
enum Cmd {
    Join(u64, mpsc::Sender<SharedDelivery>),
    Leave(u64),
    /// The member is done with the offset (acknowledged, or sent at QoS 0).
    Ack(u64, u64),
    /// The member could not take it now: give it to someone else.
    Nack(u64, u64),
}

/// The shared subscriptions of one adapter.
#[derive(Debug)]
pub struct SharedGroups {
    log: Log,
    claims: Arc<Claims>,
    run: String,
    ttl: Duration,
    /// Offsets per block (the unit adapters take by lease).
    block: u64,
    groups: Mutex<HashMap<String, mpsc::UnboundedSender<Cmd>>>,
    next_member: std::sync::atomic::AtomicU64,
    /// Maps what other protocols stored under matching topics to MQTT messages.
    bridge: Bridge,
}

/// One connection's membership of a group; dropping it leaves the group.
#[derive(Debug)]
pub struct Membership {
    cmd: mpsc::UnboundedSender<Cmd>,
    member: u64,
}

impl Membership {
    pub fn ack(&self, offset: u64) {
        let _ = self.cmd.send(Cmd::Ack(self.member, offset));
    }

    pub fn nack(&self, offset: u64) {
        let _ = self.cmd.send(Cmd::Nack(self.member, offset));
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Leave(self.member));
    }
}

impl SharedGroups {
    pub fn new(
        log: Log,
        claims: Arc<Claims>,
        run: String,
        ttl: Duration,
        block: u64,
        bridge: Bridge,
    ) -> Arc<Self> {
        Arc::new(Self {
            bridge,
            log,
            claims,
            run,
            ttl,
            block: block.max(1),
            groups: Mutex::new(HashMap::new()),
            next_member: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Join `share` with a channel the group delivers into. `None` if the name is too long to
    /// be stored (group + filter over 90 bytes).
    pub fn join(
        self: &Arc<Self>,
        share: &str,
        tx: mpsc::Sender<SharedDelivery>,
    ) -> Option<Membership> {
        let (_, filter) = share_filter(share)?;
        let name = share_cursor(&share["$share/".len()..]);
        // Room for the block number in lease names (`<name>.<n>`).
        if name.len() > 180 {
            return None;
        }
        let member = self
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let cmd = groups
            .entry(share.to_string())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                // The default topic address first (its positions are plain offsets), then
                // the topic addresses whose claims the filter reaches.
                let streams = self.claims.reach(filter).all_streams();
                let group = Group {
                    streams,
                    shared: self.clone(),
                    share: share.to_string(),
                    filter: filter.to_string(),
                    name,
                    members: BTreeMap::new(),
                    queue: VecDeque::new(),
                    rr: 0,
                    blocks: None,
                    claims_seen: self.claims.generation(),
                };
                tokio::spawn(group.run(rx));
                tx
            })
            .clone();
        let _ = cmd.send(Cmd::Join(member, tx));
        Some(Membership { cmd, member })
    }
}

struct Member {
    tx: mpsc::Sender<SharedDelivery>,
    inflight: BTreeMap<u64, Message>,
}

struct Group {
    shared: Arc<SharedGroups>,
    /// The streams the group reads, in a fixed order (positions carry the index).
    streams: Vec<StreamId>,
    share: String,
    filter: String,
    /// The group's cursor, and the prefix of its block leases.
    name: String,
    members: BTreeMap<u64, Member>,
    /// Matching messages not yet with a member (new, or given back), by position.
    queue: VecDeque<(u64, Message)>,
    rr: u64,
    /// The blocks this adapter reads on each stream, while it has members.
    blocks: Option<Vec<Blocks>>,
    /// The claims' generation when `streams` was worked out.
    claims_seen: u64,
}

/// Matching messages read ahead of the members.
const READ_AHEAD: usize = 128;

impl Group {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let ttl = self.shared.ttl;
        let mut renew = tokio::time::interval(ttl / 3);
        let mut commit = tokio::time::interval(Duration::from_millis(100));
        loop {
            if self.blocks.is_none() && !self.members.is_empty() {
                self.open().await;
            }
            self.dispatch();
            let want = self.wants_more();
            if want && self.blocks.iter().flatten().any(|b| !b.at_end()) {
                self.read().await;
                continue;
            }
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else {
                        self.close().await;
                        return;
                    };
                    self.handle(cmd).await;
                    while let Ok(cmd) = rx.try_recv() {
                        self.handle(cmd).await;
                    }
                }
                _ = renew.tick() => {
                    if self.members.is_empty() {
                        self.close().await;
                        let mut groups = self.shared.groups.lock().unwrap_or_else(|e| e.into_inner());
                        // Another connection may have joined since: only leave if none did.
                        if rx.is_empty() {
                            groups.remove(&self.share);
                            return;
                        }
                        continue;
                    }
                    self.follow_new_claims().await;
                    for (i, b) in self.blocks.iter_mut().flatten().enumerate() {
                        for lost in b.renew().await {
                            // Another adapter delivers these now.
                            tracing::warn!(share = self.share, blocks = ?lost, "lost a block of a shared subscription to another adapter");
                            self.queue.retain(|(p, _)| {
                                let (j, o) = unpack(*p);
                                j != i || !lost.contains(&o)
                            });
                        }
                    }
                }
                _ = commit.tick() => {
                    for b in self.blocks.iter_mut().flatten() {
                        if let Err(e) = b.commit().await {
                            tracing::warn!(share = self.share, error = %e, "shared subscription cursor commit failed");
                        }
                    }
                }
                _ = async {
                    match self.blocks.as_mut() {
                        Some(bs) if !bs.is_empty() => {
                            futures::future::select_all(bs.iter_mut().map(|b| Box::pin(b.wait()))).await;
                        }
                        _ => std::future::pending().await,
                    }
                }, if want => {
                    // Something may be new on any of them: read them all again.
                    for b in self.blocks.iter_mut().flatten() {
                        b.rearm();
                    }
                }
            }
        }
    }

    /// Start reading (the first member joined): open the group's cursor on each stream, new
    /// at the stream's end. Tried again on the next event if the store fails.
    async fn open(&mut self) {
        let mut blocks = Vec::with_capacity(self.streams.len());
        self.shared.log.settle().await;
        for i in 0..self.streams.len() {
            let head = self
                .shared
                .log
                .stream(&self.streams[i])
                .map_or(0, |s| s.next_offset);
            match self.blocks_of(i, head).await {
                Some(b) => blocks.push(b),
                None => return,
            }
        }
        tracing::debug!(share = self.share, streams = ?self.streams, "serving a shared subscription");
        self.blocks = Some(blocks);
    }

    /// Open the group's cursor on stream `i` (new ones at `start`) and read it by blocks.
    async fn blocks_of(&self, i: usize, start: u64) -> Option<Blocks> {
        let log = &self.shared.log;
        let stream = &self.streams[i];
        // A new group starts here for every adapter (if this one dies before its first
        // commit, a member joining elsewhere must not start it at that adapter's head).
        let cursor = match log
            .cursor_starting_at(stream, &self.name, Offset(start))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(share = self.share, %stream, error = %e, "shared subscription cursor");
                return None;
            }
        };
        let prefix = match i {
            // The default topic address's leases carry no stream name.
            0 if *stream == wharf_adapter_core::names::default_stream() => self.name.clone(),
            _ => format!("{}.{}", self.name, stream.as_str().replace('~', "_")),
        };
        Some(log.blocks(
            cursor,
            &prefix,
            &self.shared.run,
            self.shared.ttl,
            self.shared.block,
        ))
    }

    /// Addresses claim other topics now: read the streams the filter reaches that the group
    /// does not read yet, from [`wharf_adapter_core::claims::CLAIM_GRACE`] back (what was routed there
    /// while adapters had not all seen the claim).
    async fn follow_new_claims(&mut self) {
        let generation = self.shared.claims.generation();
        if generation == self.claims_seen {
            return;
        }
        self.claims_seen = generation;
        let log = self.shared.log.clone();
        for stream in self.shared.claims.reach(&self.filter).streams {
            if self.streams.contains(&stream) {
                continue;
            }
            let start = wharf_adapter_core::claims::late_start(&log, &stream).await;
            tracing::info!(share = self.share, %stream, start, "shared subscription follows a newly claimed address");
            self.streams.push(stream);
            let i = self.streams.len() - 1;
            if self.blocks.is_some() {
                match self.blocks_of(i, start).await {
                    Some(b) => {
                        if let Some(bs) = self.blocks.as_mut() {
                            bs.push(b);
                        }
                    }
                    None => {
                        // Try again at the next tick.
                        self.streams.pop();
                        self.claims_seen = u64::MAX;
                        return;
                    }
                }
            }
        }
    }

    /// No members left here: commit, give the blocks up to the other adapters at once, and
    /// forget what was queued (it is theirs now).
    async fn close(&mut self) {
        for b in self.blocks.take().into_iter().flatten() {
            b.close().await;
        }
        self.queue.clear();
    }

    /// Whether to read on: reading, few messages queued, and a member with room.
    fn wants_more(&self) -> bool {
        self.blocks.is_some()
            && self.queue.len() < READ_AHEAD
            && self.members.values().any(|m| m.tx.capacity() > 0)
    }

    /// Queue the matching messages of the next records of the blocks held, from each stream
    /// in turn; acknowledge the others.
    async fn read(&mut self) {
        let Some(blocks) = self.blocks.as_mut() else {
            return;
        };
        for (i, b) in blocks.iter_mut().enumerate() {
            if b.at_end() {
                continue;
            }
            let (queue, members) = (&self.queue, &self.members);
            // What this adapter holds of stream i: only a block read again (taken back) can
            // hold it, so records past the highest held offset skip the search.
            let held = |p: u64| unpack(p).0 == i;
            let highest = queue
                .iter()
                .map(|(p, _)| *p)
                .chain(members.values().flat_map(|m| m.inflight.keys().copied()))
                .filter(|&p| held(p))
                .max();
            let have = |o: Offset| {
                let p = pack(i, o.0);
                highest.is_some_and(|h| p <= h)
                    && (queue.iter().any(|(q, _)| *q == p)
                        || members.values().any(|m| m.inflight.contains_key(&p)))
            };
            let want = READ_AHEAD.saturating_sub(queue.len()).max(1);
            let records = b.read(want, have).await;
            for r in records {
                match Message::decode(&r, &self.shared.bridge) {
                    Ok(m) if matches(&self.filter, &m.topic) => {
                        self.queue.push_back((pack(i, r.offset.0), m))
                    }
                    _ => b.ack(r.offset),
                }
            }
        }
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join(id, tx) => {
                self.members.insert(
                    id,
                    Member {
                        tx,
                        inflight: BTreeMap::new(),
                    },
                );
            }
            Cmd::Leave(id) => {
                if let Some(m) = self.members.remove(&id) {
                    // Given back, first in line for the others [MQTT-4.8.2-6].
                    for (o, msg) in m.inflight.into_iter().rev() {
                        self.queue.push_front((o, msg));
                    }
                }
                if self.members.is_empty() {
                    self.close().await;
                }
            }
            Cmd::Ack(id, p) => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.inflight.remove(&p);
                }
                let (i, o) = unpack(p);
                if let Some(b) = self.blocks.as_mut().and_then(|bs| bs.get_mut(i)) {
                    b.ack(Offset(o));
                }
            }
            Cmd::Nack(id, o) => {
                if let Some(msg) = self
                    .members
                    .get_mut(&id)
                    .and_then(|m| m.inflight.remove(&o))
                {
                    self.queue.push_front((o, msg));
                }
            }
        }
    }

    /// Hand queued messages to members with room, round robin.
    fn dispatch(&mut self) {
        if self.blocks.is_none() {
            return;
        }
        let ids: BTreeSet<u64> = self.members.keys().copied().collect();
        while let Some((o, msg)) = self.queue.pop_front() {
            let start = self.rr;
            let next = ids
                .range(start..)
                .chain(ids.range(..start))
                .copied()
                .find(|id| self.members.get(id).is_some_and(|m| m.tx.capacity() > 0));
            let Some(id) = next else {
                self.queue.push_front((o, msg));
                return;
            };
            self.rr = id + 1;
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            let d = SharedDelivery {
                share: self.share.clone(),
                offset: o,
                message: msg.clone(),
            };
            if m.tx.try_send(d).is_ok() {
                m.inflight.insert(o, msg);
            } else {
                self.queue.push_front((o, msg));
                return;
            }
        }
    }
}
