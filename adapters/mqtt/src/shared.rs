//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 §4.8.2): each message matching the
//! filter goes to exactly one member of the group, whichever adapters the members are on.
//!
//! One adapter at a time serves a group: the one holding the lease `mqtt-share.<hex key>`.
//! It reads the topic stream from the group's cursor (same name), hands each matching message
//! to one of its local members (round robin among those with room), and acknowledges the
//! offset in the cursor when that member acknowledged it (QoS 1: PUBACK, QoS 2: PUBREC, QoS 0:
//! when sent). A member that leaves with messages in flight gives them back and they go to
//! another member. Adapters whose members are not served keep trying the lease; when the
//! serving adapter has no members left it releases it, and when it dies the lease expires
//! (`MqttSettings::adapter_lease`) and another adapter resumes from the cursor — messages
//! delivered but not yet committed (at most a second's worth) are delivered again, so
//! delivery to the group is at least once across an adapter's death.
//!
//! Load is spread over the members on the serving adapter; members on other adapters take
//! over only when those are gone (a known limit: no balancing across adapters yet).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;
use wharf_log::{Cursor, Lease, Log, Tail};
use wharf_log_format::{Offset, StreamId};

use crate::{claims::Claims, message::Message, session::share_filter, topic::matches};

/// A message for one member of a shared subscription.
#[derive(Debug)]
pub struct SharedDelivery {
    pub share: String,
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
    /// The default topic address's stream.
    stream: StreamId,
    claims: Arc<Claims>,
    run: String,
    ttl: Duration,
    groups: Mutex<HashMap<String, mpsc::UnboundedSender<Cmd>>>,
    next_member: std::sync::atomic::AtomicU64,
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

/// `s` in lower-case hex: any string as characters that stream, cursor and lease names allow.
pub fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

impl SharedGroups {
    pub fn new(
        log: Log,
        stream: StreamId,
        claims: Arc<Claims>,
        run: String,
        ttl: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            log,
            stream,
            claims,
            run,
            ttl,
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
        let name = format!("mqtt-share.{}", hex(&share["$share/".len()..]));
        if name.len() > 200 {
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
                // A group reads one stream: the address that claims its whole filter, else
                // the default topic address.
                let reach = self.claims.reach(filter);
                let stream = match &reach.streams[..] {
                    [only] if !reach.default => only.clone(),
                    _ => self.stream.clone(),
                };
                let group = Group {
                    stream,
                    shared: self.clone(),
                    share: share.to_string(),
                    filter: filter.to_string(),
                    name,
                    members: BTreeMap::new(),
                    queue: VecDeque::new(),
                    rr: 0,
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
    stream: StreamId,
    share: String,
    filter: String,
    name: String,
    members: BTreeMap<u64, Member>,
    /// Matching messages not yet with a member (new, or given back).
    queue: VecDeque<(u64, Message)>,
    rr: u64,
}

/// What the serving adapter holds for a group.
struct Serving {
    lease: Lease,
    cursor: Cursor,
    tail: Tail,
}

impl Group {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let ttl = self.shared.ttl;
        let mut serving: Option<Serving> = None;
        let mut tick = tokio::time::interval(ttl / 3);
        let mut want_serve = true;
        loop {
            if want_serve && serving.is_none() && !self.members.is_empty() {
                want_serve = false;
                serving = self.try_serve().await;
            }
            self.dispatch(serving.as_mut());
            let room = self.queue.len() < 1024;
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        want_serve |= matches!(cmd, Cmd::Join(..));
                        self.handle(cmd, serving.as_mut())
                    }
                    None => return,
                },
                batch = async { match serving.as_mut() { Some(s) => Box::pin(s.tail.next_batch(256)).await, None => std::future::pending().await } }, if room => {
                    let Some(s) = serving.as_mut() else { continue };
                    match batch {
                        Ok(batch) => {
                            for r in batch {
                                let o = r.offset.0;
                                if s.cursor.is_acked(r.offset) {
                                    continue;
                                }
                                match Message::from_record(&r) {
                                    Ok(m) if matches(&self.filter, &m.topic) => self.queue.push_back((o, m)),
                                    _ => { s.cursor.ack(r.offset); }
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, share = self.share, "reading for a shared subscription failed"),
                    }
                }
                _ = tick.tick() => {
                    if self.members.is_empty() {
                        if let Some(mut s) = serving.take() {
                            let _ = s.cursor.commit().await;
                            let _ = s.lease.release().await;
                        }
                        let mut groups = self.shared.groups.lock().unwrap_or_else(|e| e.into_inner());
                        // Another connection may have joined since: only leave if none did.
                        if rx.is_empty() {
                            groups.remove(&self.share);
                            return;
                        }
                        continue;
                    }
                    match serving.as_mut() {
                        Some(s) => {
                            let ok = s.lease.renew(ttl).await.is_ok() && s.cursor.commit().await.is_ok();
                            if !ok {
                                tracing::warn!(share = self.share, "lost a shared subscription to another adapter");
                                serving = None;
                                self.queue.clear();
                                for m in self.members.values_mut() {
                                    m.inflight.clear();
                                }
                            }
                        }
                        None => serving = self.try_serve().await,
                    }
                }
            }
        }
    }

    /// Become the serving adapter if the lease is free.
    async fn try_serve(&self) -> Option<Serving> {
        let log = &self.shared.log;
        let lease = log
            .acquire_lease(&self.name, &self.shared.run, self.shared.ttl)
            .await
            .ok()??;
        let head = log.stream(&self.stream).map_or(0, |s| s.next_offset);
        let mut cursor = log
            .cursor_from(&self.stream, &self.name, Offset(head))
            .await
            .ok()?;
        cursor.fence(&lease).await.ok()?;
        let tail = log.tail(&self.stream, cursor.committed());
        tracing::info!(
            share = self.share,
            from = cursor.committed().0,
            "serving a shared subscription"
        );
        Some(Serving {
            lease,
            cursor,
            tail,
        })
    }

    fn handle(&mut self, cmd: Cmd, serving: Option<&mut Serving>) {
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
            }
            Cmd::Ack(id, o) => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.inflight.remove(&o);
                }
                if let Some(s) = serving {
                    s.cursor.ack(Offset(o));
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
    fn dispatch(&mut self, serving: Option<&mut Serving>) {
        if serving.is_none() {
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
