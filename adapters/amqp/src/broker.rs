//! Addresses over the log: what a name is (queue or topic), where its messages are, and who
//! gets them.
//!
//! - Every address is a stream named like the address (`/` becomes `~`).
//! - A **queue** is served on each adapter by one [`wharf_adapter_core::competing`] consumer
//!   per address ([`Queues`]; the AMQP rules are [`Queue`]'s), competing with
//!   the other adapters by **blocks** ([`wharf_log::Blocks`]): the queue's offsets are cut into blocks (`[amqp] queue_block`, 8,192 offsets by default);
//!   an adapter whose consumers have credit takes the lease `amqp-queue.<stream>.<n>` of the
//!   next block with messages not yet acknowledged (at most 2 at once), hands its
//!   messages to its consumer links with credit (round robin), and acknowledges each offset in
//!   the queue's cursor `amqp-queue` (shared by all adapters; commits merge) when the consumer
//!   settles it (accepted, rejected, or dead-lettered after `max_delivery` attempts). Released
//!   and modified messages go back to the front. A block fully written and acknowledged is
//!   released; a block whose adapter died is taken by another once its lease expires, and every
//!   message in it not yet acknowledged is delivered again. Within a block, order is kept;
//!   across blocks served by different adapters, it is not.
//! - A **topic** receiver follows the stream from its end (or, for a durable subscription,
//!   from its own cursor) — see [`Subscription`].
//! - Temporary addresses (`tmp.<uuid>`, for `dynamic` receivers) are topics nobody else
//!   declared; they live as long as their link (the stream is left to retention).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use wharf_adapter_core::bridge::Bridge;
use wharf_adapter_core::competing::{self, Competing, Pending, Rules, Source, Start};
use wharf_adapter_core::following::Following;
use wharf_adapter_core::names::{
    QUEUE_CURSOR, RESERVED_PREFIXES, block_lease_prefix, durable_subscription_cursor,
};
use wharf_log::{Cursor, Log, pack_position};
use wharf_log_format::{Offset, StoredRecord, StreamId};
use wharf_resources::{AddressSpec, AddressType};

use crate::message;

/// Kinds of stored address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Queue,
    Topic,
}

/// An address as the adapter uses it.
#[derive(Clone, Debug)]
pub struct Address {
    pub name: String,
    pub kind: Kind,
    pub stream: StreamId,
    /// Deliveries before a message goes to `dead_letter` (or is dropped).
    pub max_delivery: Option<u32>,
    pub dead_letter: Option<String>,
    /// `spec.ttl`: a message without its own TTL or expiry time expires this long after it
    /// was stored.
    pub ttl_ms: Option<i64>,
    /// For `/topic/<topic or filter>`: the MQTT topic (filter) in the default topic address.
    pub mqtt: Option<String>,
    /// For a `/topic/<filter>` spanning several addresses (the default topic address and
    /// those claiming topics it matches): the streams read besides `stream`.
    pub also: Vec<StreamId>,
}

impl Address {
    /// An address no catalog entry describes (no delivery limit, no dead-letter address).
    fn plain(name: impl Into<String>, kind: Kind, stream: StreamId) -> Self {
        Self {
            name: name.into(),
            kind,
            stream,
            max_delivery: None,
            dead_letter: None,
            ttl_ms: None,
            mqtt: None,
            also: Vec::new(),
        }
    }

    /// The record key of a message sent here: the MQTT topic, or the address.
    pub fn record_key(&self) -> &str {
        self.mqtt.as_deref().unwrap_or(&self.name)
    }
}

/// Why an address cannot be used.
#[derive(Debug)]
pub enum AddressError {
    NotFound(String),
    Invalid(String),
    /// The catalog could not be read or written.
    Store(wharf_log::LogError),
    /// Created on first use, then gone before it could be read back (deleted meanwhile).
    Vanished(String),
}

/// The stream of an address: the name with `/` as `~`; other characters outside
/// `A-Z a-z 0-9 . _ -` are refused.
pub fn stream_of(name: &str) -> Result<StreamId, AddressError> {
    let invalid = || {
        AddressError::Invalid(format!(
            "address {name:?} may only contain A-Z a-z 0-9 . _ - / and must not start with '.'"
        ))
    };
    wharf_resources::address::stream_of(name).ok_or_else(invalid)
}

/// The address `name` from its catalog entry (parsed and checked by `wharf_resources`).
fn parse_spec(name: &str, body: &serde_json::Value) -> Result<Address, AddressError> {
    let spec = AddressSpec::of(body)
        .map_err(|e| AddressError::Invalid(format!("address {name:?}: {e}")))?;
    // Topics and multicast fan out to every receiver; queues, anycast and subscriptions (a
    // durable subscription's consumers compete) give each message to one.
    let kind = match spec.kind() {
        AddressType::Topic | AddressType::Multicast => Kind::Topic,
        AddressType::Queue | AddressType::Anycast | AddressType::Subscription => Kind::Queue,
    };
    Ok(Address {
        name: name.to_string(),
        kind,
        stream: stream_of(name)?,
        max_delivery: spec.max_delivery,
        ttl_ms: spec.ttl().map(|t| t.as_millis() as i64),
        dead_letter: spec.dead_letter,
        mqtt: None,
        also: Vec::new(),
    })
}

/// The Address resource written when an address is created on first use.
pub fn auto_resource(tenant: &str, name: &str, kind: Kind) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "wharf/v1",
        "kind": "Address",
        "metadata": {"name": name, "tenant": tenant, "annotations": {"wharf/auto-created": "amqp"}},
        "spec": {"type": match kind { Kind::Queue => "queue", Kind::Topic => "topic" }},
    })
}

/// The address table of one adapter: the catalog's Address resources, cached, with
/// auto-creation.
#[derive(Debug)]
pub struct Addresses {
    log: Log,
    /// The tenant whose catalog this is (named in the resources created on first use).
    tenant: String,
    auto_create: bool,
    /// Addresses claiming MQTT topics: `/topic/...` goes to them.
    claims: Arc<wharf_adapter_core::claims::Claims>,
    /// Resolved addresses, as of a generation of the catalog's Address resources (the claims'
    /// generation: it moves whenever any Address changes, so a changed spec is seen within
    /// the claims' refresh interval).
    cache: Mutex<(u64, HashMap<String, Address>)>,
    /// Maps what MQTT clients published on those streams to AMQP messages.
    bridge: Bridge,
}

impl Addresses {
    pub fn new(
        log: Log,
        tenant: &str,
        auto_create: bool,
        claims: Arc<wharf_adapter_core::claims::Claims>,
        bridge: Bridge,
    ) -> Self {
        Self {
            log,
            tenant: tenant.to_string(),
            auto_create,
            claims,
            cache: Mutex::new((0, HashMap::new())),
            bridge,
        }
    }

    /// How other protocols' records on these addresses' streams are delivered over AMQP.
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// The MQTT topic claims `/topic/...` addresses are resolved by.
    pub fn claims(&self) -> &Arc<wharf_adapter_core::claims::Claims> {
        &self.claims
    }

    /// The catalog's generation the cache must be as of.
    fn generation(&self) -> u64 {
        self.claims.generation()
    }

    fn cached(&self, name: &str) -> Option<Address> {
        let mut c = self.cache.lock().ok()?;
        let now = self.generation();
        if c.0 != now {
            // An Address changed somewhere: look everything up again.
            *c = (now, HashMap::new());
        }
        c.1.get(name).cloned()
    }

    fn remember(&self, a: &Address) {
        if let Ok(mut c) = self.cache.lock() {
            c.1.insert(a.name.clone(), a.clone());
        }
    }

    /// A temporary address for a dynamic terminus.
    pub fn temporary(&self) -> Address {
        let name = format!("tmp.{}", uuid::Uuid::new_v4().simple());
        let stream = StreamId::new(name.clone()).unwrap_or_else(|_| unreachable!("valid"));
        let a = Address::plain(name, Kind::Topic, stream);
        self.remember(&a);
        a
    }

    /// Look `name` up; create it if it is unknown and auto-create is on (`wanted` from the
    /// terminus capabilities: a topic if it says `topic`, else a queue).
    pub async fn resolve(&self, name: &str, wanted: Option<Kind>) -> Result<Address, AddressError> {
        if let Some(a) = self.cached(name) {
            return Ok(a);
        }
        if let Some(topic) = name.strip_prefix(crate::bridge::TOPIC_PREFIX) {
            // An MQTT topic (or filter): in the address that claims it, else in the default
            // topic address. A topic a queue claims is that queue; a filter spanning several
            // addresses reads each of them (the default one first).
            if !wharf_adapter_core::topic::valid_filter(topic) {
                return Err(AddressError::Invalid(format!(
                    "{topic:?} is not an MQTT topic name or filter"
                )));
            }
            let reach = self.claims.reach(topic);
            if let Some(queue) = reach.queue {
                return Ok(Address {
                    mqtt: Some(topic.into()),
                    ..Address::plain(queue.clone(), Kind::Queue, stream_of(&queue)?)
                });
            }
            let mut streams = reach.all_streams().into_iter();
            let stream = streams
                .next()
                .unwrap_or_else(wharf_adapter_core::names::default_stream);
            return Ok(Address {
                mqtt: Some(topic.into()),
                also: streams.collect(),
                ..Address::plain(name, Kind::Topic, stream)
            });
        }
        if let Some(rest) = name.strip_prefix("tmp.") {
            // Someone else's temporary address (a reply-to): a topic of that name.
            if rest.is_empty() {
                return Err(AddressError::NotFound(name.into()));
            }
            let a = Address::plain(name, Kind::Topic, stream_of(name)?);
            self.remember(&a);
            return Ok(a);
        }
        let stream = stream_of(name)?;
        if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Err(AddressError::Invalid(format!(
                "address {name:?} is reserved for Wharf's own streams"
            )));
        }
        if name.contains('/') {
            // Catalog names cannot hold '/': such addresses are never declared, and one created
            // on first use is not recorded (its kind comes from each link's capabilities).
            if !self.auto_create {
                return Err(AddressError::NotFound(name.into()));
            }
            return Ok(Address::plain(name, wanted.unwrap_or(Kind::Queue), stream));
        }
        let catalog = self.log.catalog();
        let key = stream.as_str().to_string();
        if let Some(entry) = catalog
            .get("Address", &key)
            .await
            .map_err(AddressError::Store)?
        {
            let a = parse_spec(name, &entry.body)?;
            self.remember(&a);
            return Ok(a);
        }
        if !self.auto_create {
            return Err(AddressError::NotFound(name.into()));
        }
        let kind = wanted.unwrap_or(Kind::Queue);
        let body = auto_resource(&self.tenant, &key, kind);
        // Whoever creates it first decides its kind.
        let _ = catalog.put_if("Address", &key, 0, body).await;
        let entry = catalog
            .get("Address", &key)
            .await
            .map_err(AddressError::Store)?
            .ok_or_else(|| AddressError::Vanished(name.into()))?;
        let a = parse_spec(name, &entry.body)?;
        tracing::info!(address = name, kind = ?a.kind, "address created on first use");
        self.remember(&a);
        Ok(a)
    }
}

/// A message for a consumer link.
#[derive(Debug)]
pub struct Outbound {
    /// Which of the connection's links.
    pub link: u64,
    pub offset: u64,
    pub payload: Bytes,
    pub delivery_count: u32,
}

/// What a queue or subscription tells a connection.
#[derive(Debug)]
pub enum ToLink {
    Deliver(Outbound),
    /// Nothing more to send now after a drain request: complete the drain.
    Drained(u64),
}

/// Where a connection's queues and subscriptions send to it.
type Outlet = mpsc::UnboundedSender<ToLink>;

/// One consumer link's place in a queue (credit, outcomes); dropping it leaves (unsettled
/// messages go back).
pub type Consumer = competing::Member<Outlet>;

/// Records read ahead of the consumers' credit.
const READ_AHEAD: usize = 256;

/// The queues this adapter has consumers on: each a [`competing`] consumer of the queue's
/// stream (the one MQTT shared subscriptions are), with the AMQP rules of [`Queue`].
#[derive(Debug)]
pub struct Queues {
    log: Log,
    addresses: Arc<Addresses>,
    queues: Competing<String, Queue, Outlet>,
}

impl Queues {
    /// `block`: offsets per block, the unit adapters take by lease to serve a queue.
    pub fn new(
        log: Log,
        run: String,
        lease_ttl: Duration,
        block: u64,
        addresses: Arc<Addresses>,
        background: wharf_adapter_core::runtime::Background,
    ) -> Self {
        let settings = competing::Settings {
            holder: run,
            lease_ttl,
            block,
            read_ahead: READ_AHEAD,
            commit_every: Duration::from_millis(20),
            background,
        };
        Self {
            queues: Competing::new(log.clone(), settings),
            log,
            addresses,
        }
    }

    /// Add a consumer link (`link`, unique in this process) to `queue`; messages come on
    /// `tx`.
    ///
    /// `shared`: the cursor name of a shared durable subscription on a topic, whose links
    /// compete for the topic's messages as a queue's consumers do (starting at the topic's end
    /// when the subscription is new).
    pub fn join(&self, queue: &Address, shared: Option<String>, link: u64, tx: Outlet) -> Consumer {
        let key = match &shared {
            Some(sub) => format!("{}#{sub}", queue.name),
            None => queue.name.clone(),
        };
        let start = match shared {
            Some(_) => Start::End,
            None => Start::First,
        };
        let cursor = shared.unwrap_or_else(|| QUEUE_CURSOR.to_string());
        // Credit comes with the link's first flow.
        self.queues.join(key, link, 0, tx, || {
            let source = Source {
                stream: queue.stream.clone(),
                lease_prefix: block_lease_prefix(&cursor, &queue.stream),
                cursor,
                start,
            };
            let rules = Queue {
                log: self.log.clone(),
                address: queue.clone(),
                spec_seen: self.addresses.generation(),
                addresses: self.addresses.clone(),
            };
            (rules, vec![source])
        })
    }
}

/// A queue's AMQP rules: every record is for it; expired messages, rejected ones and those
/// over `max_delivery` go to its dead-letter address.
struct Queue {
    log: Log,
    address: Address,
    /// The catalog generation `address`'s spec is as of.
    spec_seen: u64,
    addresses: Arc<Addresses>,
}

impl Rules for Queue {
    type Item = StoredRecord;
    type Out = ToLink;

    fn accept(&self, _stream: usize, r: StoredRecord) -> Option<StoredRecord> {
        Some(r)
    }

    fn deliver(&self, member: u64, position: u64, pending: &Pending<StoredRecord>) -> ToLink {
        ToLink::Deliver(Outbound {
            link: member,
            offset: position,
            payload: message::for_delivery(
                &crate::bridge::amqp_payload(&pending.item, self.addresses.bridge()),
                pending.delivery_count,
            ),
            delivery_count: pending.delivery_count,
        })
    }

    fn drained(&self, member: u64) -> Option<ToLink> {
        Some(ToLink::Drained(member))
    }

    fn expired(&self, item: &StoredRecord, now_ms: i64) -> bool {
        message::expires_ms(&item.record)
            .or_else(|| {
                self.address
                    .ttl_ms
                    .map(|ttl| item.record.timestamp_ms + ttl)
            })
            .is_some_and(|t| t <= now_ms)
    }

    async fn max_delivery(&mut self) -> Option<u32> {
        self.refresh_spec().await;
        self.address.max_delivery
    }

    /// Append a copy to the dead-letter address, if there is one (without one, the message
    /// is dropped).
    async fn dead_letter(&mut self, pending: &Pending<StoredRecord>) -> bool {
        self.refresh_spec().await;
        let Some(dlq) = self.address.dead_letter.clone() else {
            return true;
        };
        match self.addresses.resolve(&dlq, Some(Kind::Queue)).await {
            Ok(target) => {
                let mut record = pending.item.record.clone();
                record.key = Some(Bytes::copy_from_slice(target.name.as_bytes()));
                if let Err(e) = self.log.append(&target.stream, record).await {
                    tracing::warn!(queue = %self.address.name, error = %e, "dead-letter append failed; message stays");
                    return false;
                }
            }
            Err(e) => {
                tracing::warn!(queue = %self.address.name, dead_letter = dlq, error = ?e, "dead-letter address unusable; message dropped")
            }
        }
        true
    }
}

impl Queue {
    /// Take up a changed `max_delivery` / `dead_letter` of the address (its stream and kind
    /// stay: the queue is that stream).
    async fn refresh_spec(&mut self) {
        let now = self.addresses.generation();
        if now == self.spec_seen {
            return;
        }
        self.spec_seen = now;
        match self.addresses.resolve(&self.address.name, None).await {
            Ok(a) => {
                self.address.max_delivery = a.max_delivery;
                self.address.dead_letter = a.dead_letter;
                self.address.ttl_ms = a.ttl_ms;
            }
            Err(e) => {
                tracing::debug!(queue = %self.address.name, error = ?e, "address spec not refreshed")
            }
        }
    }
}

/// A topic (or temporary address) receiver: follows the stream and sends as credit allows.
/// A durable one reads from its own cursor (`amqp-sub.<hex of container-id/link name>` on the
/// topic's stream): what it settles is acknowledged there, so after a detach or a dead
/// adapter it resumes — on any adapter — with what it had not settled.
#[derive(Debug)]
pub struct Subscription {
    credit: watch::Sender<(u32, u64)>,
    settle: mpsc::UnboundedSender<u64>,
    /// Ends the task; `true`: the link was closed, so a durable subscription ends with it.
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

/// The cursor name of a durable subscription.
pub fn durable_name(container_id: &str, link: &str) -> String {
    durable_subscription_cursor(container_id, link)
}

/// Open (or resume) a durable subscription on `stream`: new ones start at the stream's end.
/// The newest holder wins (an older connection's commits are fenced).
pub async fn durable_cursor(log: &Log, stream: &StreamId, name: &str) -> wharf_log::Result<Cursor> {
    let end = Offset(log.stream(stream).map_or(0, |s| s.next_offset));
    let mut cursor = log.cursor_from(stream, name, end).await?;
    cursor.take_over().await?;
    if cursor.meta().is_some_and(|m| m["ended"] == true) {
        // Its link was closed: a new subscription of the same name starts at the end.
        cursor.ack_below(end);
        cursor.set_meta(None);
        cursor.commit().await?;
    }
    Ok(cursor)
}

struct SubTask {
    link: u64,
    tx: mpsc::UnboundedSender<ToLink>,
    /// The streams followed: the address's, then any others a `/topic/<filter>` reaches; a
    /// durable subscription's cursor on each.
    following: Following<()>,
    /// Receiving from the default topic address: only records whose topic matches.
    mqtt_filter: Option<String>,
    /// A `/topic/<filter>` receiver follows addresses that claim topics of the filter later.
    follows_claims: bool,
    /// A durable subscription's cursor name (for streams it starts following later).
    durable: Option<String>,
    /// Maps MQTT publishes to AMQP messages.
    bridge: Bridge,
}

/// What became of a record offered to a subscription.
#[derive(PartialEq, Eq)]
enum Offered {
    Sent,
    /// Not for this receiver (acknowledged already, or another topic).
    Skipped,
    /// The connection is gone.
    Closed,
}

impl SubTask {
    /// Offer record `r` of stream `i`; its delivery carries the packed position.
    fn deliver(&self, i: usize, r: StoredRecord) -> Offered {
        if self.following.is_acked(i, r.offset) {
            return Offered::Skipped;
        }
        if let Some(filter) = &self.mqtt_filter {
            let topic = r
                .record
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok());
            if !topic.is_some_and(|t| wharf_adapter_core::topic::matches(filter, t)) {
                return Offered::Skipped;
            }
        }
        let payload = crate::bridge::amqp_payload(&r, &self.bridge);
        let out = Outbound {
            link: self.link,
            offset: pack_position(i, r.offset.0),
            payload,
            delivery_count: 0,
        };
        if self.tx.send(ToLink::Deliver(out)).is_ok() {
            Offered::Sent
        } else {
            Offered::Closed
        }
    }

    async fn commit(&mut self) {
        if self.following.commit().await.is_err() {
            // Taken over by a newer connection: acknowledged there from now on.
            tracing::info!(
                link = self.link,
                "durable subscription taken over; no longer acknowledged here"
            );
        }
    }

    /// Addresses claim other topics now: follow the streams the filter reaches that are not
    /// followed yet, from [`wharf_adapter_core::claims::CLAIM_GRACE`] back.
    async fn follow_new_claims(&mut self) {
        let Some(filter) = self.mqtt_filter.as_deref() else {
            return;
        };
        if !self.follows_claims || !self.following.claims_changed() {
            return;
        }
        let log = self.following.log().clone();
        for (stream, from) in self.following.newly_reached([filter], true).await {
            let cursor = match &self.durable {
                Some(name) => match durable_cursor(&log, &stream, name).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(%stream, error = %e, "durable subscription cursor; trying again later");
                        self.following.recheck_claims();
                        return;
                    }
                },
                None => None,
            };
            self.following.follow(stream, from, cursor, ());
        }
    }

    async fn run(
        mut self,
        mut credit_rx: watch::Receiver<(u32, u64)>,
        mut settle_rx: mpsc::UnboundedReceiver<u64>,
        mut stop: tokio::sync::oneshot::Receiver<bool>,
    ) {
        let mut closed = false;
        let mut credit = 0u32;
        let mut drains = 0u64;
        let mut commit = tokio::time::interval(Duration::from_millis(100));
        let mut recheck = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = recheck.tick(), if self.follows_claims => {
                    self.follow_new_claims().await;
                }
                batch = self.following.next_batch(credit.max(1) as usize), if credit > 0 => {
                    let Ok((i, batch)) = batch else { return };
                    for r in batch {
                        match self.deliver(i, r) {
                            Offered::Sent => credit = credit.saturating_sub(1),
                            Offered::Skipped => {}
                            Offered::Closed => return,
                        }
                    }
                }
                changed = credit_rx.changed() => {
                    // The subscription was dropped (its stop signal may lose this race).
                    if changed.is_err() { break; }
                    let (c, d) = *credit_rx.borrow_and_update();
                    credit = c;
                    if d != drains {
                        drains = d;
                        if !self.drain(&mut credit).await {
                            return;
                        }
                        let _ = self.tx.send(ToLink::Drained(self.link));
                        credit = 0;
                    }
                }
                Some(position) = settle_rx.recv() => self.following.ack(position),
                // Only while there is something to commit: a tick restarts `next_batch`,
                // whose store poll would never complete under a steady tick.
                _ = commit.tick(), if self.following.is_dirty() => {
                    self.commit().await
                }
                how = &mut stop => {
                    closed = how.unwrap_or(false);
                    break;
                }
            }
        }
        // Ending: acknowledge what was settled before the link went, then commit.
        while let Ok(position) = settle_rx.try_recv() {
            self.following.ack(position);
        }
        if closed {
            // Closing a durable link ends the subscription (spec 3.5.3 with expiry never):
            // marked ended; the next attach of that name starts afresh.
            for c in self
                .following
                .streams_mut()
                .filter_map(|f| f.cursor.as_mut())
            {
                c.set_meta(Some(serde_json::json!({"ended": true})));
            }
        }
        self.commit().await;
    }

    /// Send what is in the store now (others may have stored it: look), as far as `credit`
    /// goes. `false`: the connection is gone.
    async fn drain(&mut self, credit: &mut u32) -> bool {
        let log = self.following.log().clone();
        if let Err(e) = log.refresh().await {
            tracing::warn!(error = %e, "log refresh before a drain failed");
        }
        for i in 0..self.following.streams().len() {
            let stream = self.following.streams()[i].stream.clone();
            while *credit > 0 {
                let Some(pos) = self.following.position(i) else {
                    break;
                };
                let Ok(batch) = log.read(&stream, pos, *credit as usize).await else {
                    break;
                };
                let Some(last) = batch.last() else { break };
                self.following.seek(i, last.offset.next());
                for r in batch {
                    match self.deliver(i, r) {
                        Offered::Sent => *credit = credit.saturating_sub(1),
                        Offered::Skipped => {}
                        Offered::Closed => return false,
                    }
                }
            }
        }
        true
    }
}

impl Subscription {
    /// Follow `streams`, each from its `from` (the end for a new receiver) for link `link`;
    /// a durable subscription has a cursor per stream, and follows each from the cursor's
    /// position instead, skipping what it acknowledged. Deliveries carry positions
    /// ([`wharf_log::pack_position`]: the stream's index and the offset).
    ///
    /// `mqtt_filter` (for `/topic/<filter>` receivers): the filter records must match; the
    /// streams of addresses claiming topics of the filter later (by `addresses`' claims) are
    /// followed too; `durable` names the cursor to open on them. MQTT publishes are mapped
    /// by `addresses`' bridge. The task is one of `background`'s: a shutdown waits for its
    /// last commit.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        background: &wharf_adapter_core::runtime::Background,
        addresses: &Addresses,
        streams: Vec<(StreamId, Offset)>,
        link: u64,
        tx: mpsc::UnboundedSender<ToLink>,
        cursors: Vec<Cursor>,
        mqtt_filter: Option<String>,
        durable: Option<String>,
    ) -> Self {
        let mut following = Following::new(&addresses.log, addresses.claims.clone());
        let mut cursors = cursors.into_iter();
        for (stream, from) in streams {
            following.follow(stream, from, cursors.next(), ());
        }
        let (credit, credit_rx) = watch::channel((0u32, 0u64));
        let (settle, settle_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let sub = SubTask {
            follows_claims: mqtt_filter.is_some(),
            link,
            tx,
            following,
            mqtt_filter,
            durable,
            bridge: addresses.bridge,
        };
        let task = background.spawn(sub.run(credit_rx, settle_rx, stop_rx));
        Self {
            credit,
            settle,
            stop: Some(stop),
            task,
        }
    }

    /// The link's credit changed (`drain`: send what is there and report).
    pub fn credit(&self, credit: u32, drain: bool) {
        self.credit.send_modify(|(c, d)| {
            *c = credit;
            if drain {
                *d += 1;
            }
        });
    }

    /// The receiver settled `offset` (acknowledged in a durable subscription's cursor).
    pub fn settle(&self, offset: u64) {
        let _ = self.settle.send(offset);
    }

    /// The link was closed (not just detached): a durable subscription ends. Resolves once
    /// that is stored, so that a new attach of the same name sees it.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // A durable subscription commits what was settled before it ends.
        if let Some(stop) = self.stop.take()
            && stop.send(false).is_err()
        {
            self.task.abort();
        }
    }
}
