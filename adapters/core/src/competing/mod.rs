//! `Competing`: competing consumers of one or more streams, across adapters — each message
//! goes to one member, whichever adapter it is on. AMQP queues (and shared durable
//! subscriptions) and MQTT shared subscriptions are this consumer with their own [`Rules`].
//!
//! Across adapters the streams are read by blocks ([`wharf_log::Blocks`]: an adapter leases a
//! block of offsets and acknowledges in a cursor every adapter shares, commits merge); inside
//! an adapter, one task per consumer holds the blocks and hands each message to a local
//! member ([`dispatch::Dispatcher`]: round robin among members with credit and room). A member
//! that leaves gives its unsettled messages back, first in line; when the last member here
//! leaves, the blocks are given up at once; the blocks of an adapter that died are taken by
//! another when their leases expire, and what in them was not acknowledged is delivered
//! again — at least once across an adapter's death.
//!
//! One task per consumer key per adapter (`Competing::join` starts it with the first member;
//! it ends a lease period after the last member left). Commands come on an unbounded channel:
//! they are a connection's credit and outcomes, bounded by what it was sent.

pub mod dispatch;

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

use crate::runtime::Background;
use wharf_log::{Blocks, Log, pack_position as pack, unpack_position as unpack};
use wharf_log_format::{Offset, StoredRecord, StreamId};

pub use dispatch::{Dispatcher, Outcome, Pending, Settled};

/// What a protocol decides about the messages of one competing consumer. The task calls
/// these; they run on it, one at a time.
pub trait Rules: Send + Sync + 'static {
    /// A message as the protocol holds it until a member settles it.
    type Item: Send + Sync + 'static;
    /// What a member is sent.
    type Out: Send + 'static;

    /// The message of record `r` of source `stream` (an index into the sources), or `None`
    /// when it is not for this consumer (acknowledged as read).
    fn accept(&self, stream: usize, r: StoredRecord) -> Option<Self::Item>;

    /// What member `member` is sent for a message at `position`.
    fn deliver(&self, member: u64, position: u64, pending: &Pending<Self::Item>) -> Self::Out;

    /// What a member is told after a drain found nothing more (AMQP flow with drain).
    fn drained(&self, member: u64) -> Option<Self::Out>;

    /// Whether the message has expired (`now_ms`: the log clock): it is dead-lettered
    /// instead of delivered.
    fn expired(&self, _item: &Self::Item, _now_ms: i64) -> bool {
        false
    }

    /// The address's limit of failed deliveries, as of now (it may have changed).
    fn max_delivery(&mut self) -> impl Future<Output = Option<u32>> + Send {
        async { None }
    }

    /// Move a message to the dead-letter address. `true`: done (it is acknowledged here);
    /// `false`: not now (it waits again, last in line).
    fn dead_letter(&mut self, _pending: &Pending<Self::Item>) -> impl Future<Output = bool> + Send {
        async { true }
    }

    /// Streams to read besides those read now (`reading`), with where to start (called every
    /// lease renewal: MQTT groups follow addresses that claim topics of their filter).
    fn new_sources(&mut self, _reading: &[StreamId]) -> impl Future<Output = Vec<Source>> + Send {
        async { Vec::new() }
    }
}

/// A stream a competing consumer reads.
#[derive(Clone, Debug)]
pub struct Source {
    pub stream: StreamId,
    /// The cursor every adapter acknowledges in.
    pub cursor: String,
    /// Block leases are `<lease_prefix>.<n>`.
    pub lease_prefix: String,
    /// Where a cursor that does not exist yet starts.
    pub start: Start,
}

/// Where a new consumer starts reading a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At the stream's start (a queue: everything stored is for it).
    First,
    /// At the stream's end when the first member joins (a subscription: what comes next);
    /// persisted at once, so every adapter starts there.
    End,
    /// At an offset (persisted at once, as `End`).
    At(u64),
}

/// How a competing consumer's task works.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The holder name of block leases (the adapter's run id).
    pub holder: String,
    /// Block lease time-to-live; leases are renewed every third of it.
    pub lease_ttl: Duration,
    /// Offsets per block.
    pub block: u64,
    /// Messages read ahead of the members' credit.
    pub read_ahead: usize,
    /// How often acknowledgements are committed.
    pub commit_every: Duration,
    /// The process's background tasks: a consumer's task is one, and at shutdown commits
    /// and releases its blocks.
    pub background: Background,
}

/// An outlet a member is sent on: room, and a send that gives the value back when it fails.
pub trait Outlet<T>: Send + Sync + 'static {
    fn has_room(&self) -> bool;
    /// `Err((value, gone))`: not sent; `gone` if the receiver is gone for good.
    fn offer(&self, value: T) -> Result<(), (T, bool)>;
}

impl<T: Send + 'static> Outlet<T> for mpsc::Sender<T> {
    fn has_room(&self) -> bool {
        self.capacity() > 0
    }

    fn offer(&self, value: T) -> Result<(), (T, bool)> {
        self.try_send(value).map_err(|e| match e {
            mpsc::error::TrySendError::Full(v) => (v, false),
            mpsc::error::TrySendError::Closed(v) => (v, true),
        })
    }
}

impl<T: Send + 'static> Outlet<T> for mpsc::UnboundedSender<T> {
    fn has_room(&self) -> bool {
        !self.is_closed()
    }

    fn offer(&self, value: T) -> Result<(), (T, bool)> {
        self.send(value).map_err(|e| (e.0, true))
    }
}

/// What members tell their consumer's task. The channel is unbounded but bounded by
/// construction: per member one `Join` and one `Leave`, at most one `Credit` waiting (credit
/// is coalesced in the member's [`CreditSlot`]), and a `Settle` per message it was sent and
/// has not settled (the consumer sends only within credit).
enum Cmd<O> {
    /// A member, its credit and outlet, its credit slot, and who to tell once the consumer
    /// serves.
    Join(u64, u32, O, Arc<CreditSlot>, oneshot::Sender<()>),
    /// The member's credit slot changed.
    Credit(u64),
    Settle(u64, u64, Outcome),
    Leave(u64),
}

/// A member's latest credit, written by the member and taken by the task: however many
/// flow updates a client sends while the task is busy, one `Credit` command waits.
#[derive(Debug, Default)]
struct CreditSlot(Mutex<SlotState>);

#[derive(Debug, Default)]
struct SlotState {
    credit: u32,
    /// Drains asked for so far (a drain is never merged away: the task drains once for any
    /// number of requests it had not seen, with the latest credit).
    drains: u64,
    /// A `Credit` command is on its way.
    notified: bool,
}

impl CreditSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

type Registry<K, O> = Arc<Mutex<HashMap<K, mpsc::UnboundedSender<Cmd<O>>>>>;

/// The competing consumers of one adapter, by key (an AMQP queue, an MQTT share name).
pub struct Competing<K, R: Rules, O> {
    log: Log,
    settings: Settings,
    running: Registry<K, O>,
    _rules: std::marker::PhantomData<fn() -> R>,
}

impl<K, R: Rules, O> std::fmt::Debug for Competing<K, R, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Competing")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One member's place in a competing consumer; dropping it leaves (what it had not settled
/// goes to the others).
pub struct Member<O> {
    cmd: mpsc::UnboundedSender<Cmd<O>>,
    id: u64,
    credit: Arc<CreditSlot>,
    serving: Option<oneshot::Receiver<()>>,
}

impl<O> std::fmt::Debug for Member<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("id", &self.id).finish()
    }
}

impl<O> Member<O> {
    /// The member may be sent `credit` messages from now; with `drain`, whatever is there
    /// now is sent and the rest of the credit is given up ([`Rules::drained`] tells it).
    /// The latest credit wins (AMQP flow credit is absolute); a drain is kept until the
    /// consumer has seen it.
    pub fn credit(&self, credit: u32, drain: bool) {
        let mut slot = self.credit.lock();
        slot.credit = credit;
        slot.drains += u64::from(drain);
        if !slot.notified {
            slot.notified = true;
            let _ = self.cmd.send(Cmd::Credit(self.id));
        }
    }

    pub fn settle(&self, position: u64, outcome: Outcome) {
        let _ = self.cmd.send(Cmd::Settle(self.id, position, outcome));
    }

    /// Wait (up to `timeout`) until the consumer serves this member: its cursors are open,
    /// so a new subscription's start is stored and what is sent from now on reaches it. Answer
    /// the subscribe or attach after this. `false` if it did not within `timeout` (the store
    /// is slow or failing; the consumer keeps trying).
    pub async fn serving(&mut self, timeout: Duration) -> bool {
        let Some(rx) = self.serving.take() else {
            return true;
        };
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }

    /// Handled: acknowledged for every adapter.
    pub fn ack(&self, position: u64) {
        self.settle(position, Outcome::Done);
    }

    /// Could not take it now: to someone else (or to this member again later).
    pub fn give_back(&self, position: u64) {
        self.settle(
            position,
            Outcome::Again {
                failed: false,
                elsewhere: false,
            },
        );
    }
}

impl<O> Drop for Member<O> {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Leave(self.id));
    }
}

impl<K, R, O> Competing<K, R, O>
where
    K: Hash + Eq + Clone + Send + 'static,
    R: Rules,
    O: Outlet<R::Out>,
{
    pub fn new(log: Log, settings: Settings) -> Self {
        Self {
            log,
            settings: Settings {
                block: settings.block.max(1),
                ..settings
            },
            running: Arc::new(Mutex::new(HashMap::new())),
            _rules: std::marker::PhantomData,
        }
    }

    /// Join the consumer `key` as member `id` (unique among its members: an AMQP link id, say)
    /// with `credit` and an outlet; `start` gives its rules and sources when this adapter has
    /// no member of it yet.
    pub fn join(
        &self,
        key: K,
        id: u64,
        credit: u32,
        outlet: O,
        start: impl FnOnce() -> (R, Vec<Source>),
    ) -> Member<O> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cmd = running
            .entry(key.clone())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let (rules, sources) = start();
                let task = Task {
                    log: self.log.clone(),
                    settings: self.settings.clone(),
                    rules,
                    sources,
                    blocks: None,
                    dispatcher: Dispatcher::default(),
                    outlets: HashMap::new(),
                    credits: HashMap::new(),
                    not_serving_yet: Vec::new(),
                };
                self.settings
                    .background
                    .spawn(task.run(key, self.running.clone(), rx));
                tx
            })
            .clone();
        // Sent under the lock: a task that finds its channel empty under it may end.
        let (serving_tx, serving) = oneshot::channel();
        let slot = Arc::new(CreditSlot::default());
        let _ = cmd.send(Cmd::Join(id, credit, outlet, slot.clone(), serving_tx));
        Member {
            cmd,
            id,
            credit: slot,
            serving: Some(serving),
        }
    }
}

struct Task<R: Rules, O> {
    log: Log,
    settings: Settings,
    rules: R,
    /// What the consumer reads, in a fixed order (positions carry the index).
    sources: Vec<Source>,
    /// The blocks held of `sources[i]` (a prefix of them), while serving members.
    blocks: Option<Vec<Blocks>>,
    dispatcher: Dispatcher<R::Item>,
    outlets: HashMap<u64, O>,
    /// Each member's credit slot and the drains of it already done.
    credits: HashMap<u64, (Arc<CreditSlot>, u64)>,
    /// Members waiting for the consumer to serve (its cursors open: a new subscription's
    /// start is stored).
    not_serving_yet: Vec<oneshot::Sender<()>>,
}

impl<R: Rules, O: Outlet<R::Out>> Task<R, O> {
    async fn run<K: Hash + Eq>(
        mut self,
        key: K,
        running: Registry<K, O>,
        mut rx: mpsc::UnboundedReceiver<Cmd<O>>,
    ) {
        let mut renew = tokio::time::interval(self.settings.lease_ttl / 3);
        let mut commit = tokio::time::interval(self.settings.commit_every);
        let cancelled = self.settings.background.cancelled();
        tokio::pin!(cancelled);
        loop {
            if self.blocks.is_none() && self.dispatcher.has_members() {
                self.open().await;
            }
            self.dispatch().await;
            let want = self.wants_more();
            if want && self.blocks.iter().flatten().any(|b| !b.at_end()) {
                // A backlog: read on without waiting.
                self.read().await;
                continue;
            }
            if want
                && self.blocks.iter().flatten().any(Blocks::has_finished_block)
                && self.commit().await
            {
                // The blocks held are read and a finished one was retired: take the next
                // now, not at the next commit tick (with a backlog the tick would cap the
                // rate at two blocks per tick).
                continue;
            }
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else {
                        self.close().await;
                        return;
                    };
                    self.command(cmd).await;
                    while let Ok(cmd) = rx.try_recv() {
                        self.command(cmd).await;
                    }
                }
                _ = renew.tick() => {
                    if !self.dispatcher.has_members() {
                        self.close().await;
                        let mut running = running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        // Joins are sent under this lock: none is on its way.
                        if rx.is_empty() {
                            running.remove(&key);
                            return;
                        }
                        continue;
                    }
                    self.follow_new_sources().await;
                    self.renew().await;
                }
                _ = commit.tick() => {
                    self.commit().await;
                }
                () = &mut cancelled => {
                    // Shutting down: commit, and give the blocks to the other adapters now.
                    self.close().await;
                    running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
                    return;
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

    async fn command(&mut self, cmd: Cmd<O>) {
        match cmd {
            Cmd::Join(id, credit, outlet, slot, serving) => {
                self.dispatcher.join(id, credit);
                self.outlets.insert(id, outlet);
                self.credits.insert(id, (slot, 0));
                // At once: a drain may be next in line, and the member waits for it.
                if self.blocks.is_none() {
                    self.open().await;
                }
                if self.blocks.is_some() {
                    let _ = serving.send(());
                } else {
                    self.not_serving_yet.push(serving);
                }
            }
            Cmd::Credit(member) => {
                let Some((slot, drained)) = self.credits.get_mut(&member) else {
                    return;
                };
                let (credit, drains) = {
                    let mut s = slot.lock();
                    s.notified = false;
                    (s.credit, s.drains)
                };
                let drain = drains > *drained;
                *drained = drains;
                self.dispatcher.set_credit(member, credit);
                if drain {
                    self.drain(member).await;
                }
            }
            Cmd::Settle(member, position, outcome) => {
                let max = match outcome {
                    Outcome::Again { failed: true, .. } => self.rules.max_delivery().await,
                    _ => None,
                };
                match self.dispatcher.settle(member, position, outcome, max) {
                    Settled::Ack(p) => self.ack(p),
                    Settled::DeadLetter(pending) => self.dead_letter(pending).await,
                    Settled::Nothing => {}
                }
            }
            Cmd::Leave(id) => {
                self.outlets.remove(&id);
                self.credits.remove(&id);
                self.dispatcher.leave(id);
                if !self.dispatcher.has_members() {
                    self.close().await;
                }
            }
        }
    }

    /// Send `member` what is in the store now (others may have stored it: look), reading
    /// until its credit is used or nothing is left; then its credit is gone.
    async fn drain(&mut self, member: u64) {
        if let Some(blocks) = self.blocks.as_mut() {
            if let Err(e) = self.log.refresh().await {
                tracing::warn!(error = %e, "log refresh before a drain failed");
            }
            for b in blocks.iter_mut() {
                b.rearm();
            }
        }
        loop {
            self.dispatch().await;
            let wants = self.dispatcher.credit(member) > 0;
            let more = self.blocks.iter().flatten().any(|b| !b.at_end());
            if wants && more && self.dispatcher.waiting() < self.settings.read_ahead {
                self.read().await;
            } else {
                break;
            }
        }
        self.dispatcher.set_credit(member, 0);
        if let (Some(out), Some(o)) = (self.rules.drained(member), self.outlets.get(&member)) {
            let _ = o.offer(out);
        }
    }

    /// Start serving (the first member joined): open the cursor of each source and read it
    /// by blocks. All or none; tried again on the next event if the store fails.
    async fn open(&mut self) {
        if self.sources.iter().any(|s| s.start == Start::End) {
            self.log.settle().await;
        }
        let mut blocks = Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            match self.open_source(s).await {
                Some(b) => blocks.push(b),
                None => return,
            }
        }
        tracing::debug!(sources = ?self.sources, "serving a competing consumer");
        self.blocks = Some(blocks);
        for waiting in self.not_serving_yet.drain(..) {
            let _ = waiting.send(());
        }
    }

    async fn open_source(&self, s: &Source) -> Option<Blocks> {
        let log = &self.log;
        let cursor = match s.start {
            Start::First => log.cursor(&s.stream, &s.cursor).await,
            // Persisted at once: a new consumer starts here for every adapter (if this one
            // died before its first commit, the next must not start at its own head).
            Start::End => {
                let end = log.stream(&s.stream).map_or(0, |s| s.next_offset);
                log.cursor_starting_at(&s.stream, &s.cursor, Offset(end))
                    .await
            }
            Start::At(o) => {
                log.cursor_starting_at(&s.stream, &s.cursor, Offset(o))
                    .await
            }
        };
        match cursor {
            Ok(c) => Some(log.blocks(
                c,
                &s.lease_prefix,
                &self.settings.holder,
                self.settings.lease_ttl,
                self.settings.block,
            )),
            Err(e) => {
                tracing::warn!(stream = %s.stream, cursor = s.cursor, error = %e, "competing consumer cursor");
                None
            }
        }
    }

    /// Read the new sources the rules name (from where they say), and retry opening those
    /// that failed before.
    async fn follow_new_sources(&mut self) {
        let reading: Vec<StreamId> = self.sources.iter().map(|s| s.stream.clone()).collect();
        for s in self.rules.new_sources(&reading).await {
            tracing::info!(stream = %s.stream, start = ?s.start, "competing consumer reads another stream");
            self.sources.push(s);
        }
        let Some(opened) = self.blocks.as_ref().map(Vec::len) else {
            return;
        };
        for i in opened..self.sources.len() {
            let Some(b) = self.open_source(&self.sources[i]).await else {
                // Tried again at the next renewal.
                return;
            };
            if let Some(bs) = self.blocks.as_mut() {
                bs.push(b);
            }
        }
    }

    async fn renew(&mut self) {
        for (i, b) in self.blocks.iter_mut().flatten().enumerate() {
            let lost = b.renew().await;
            if !lost.is_empty() {
                // Another adapter delivers these now.
                tracing::warn!(stream = %self.sources[i].stream, blocks = ?lost, "lost blocks of a competing consumer to another adapter");
                self.dispatcher.lost(i, &lost);
            }
        }
    }

    /// Commit every source's acknowledgements (retiring finished blocks). `false` if one
    /// failed.
    async fn commit(&mut self) -> bool {
        let mut ok = true;
        for (i, b) in self.blocks.iter_mut().flatten().enumerate() {
            if let Err(e) = b.commit().await {
                tracing::warn!(cursor = self.sources[i].cursor, error = %e, "competing consumer commit failed");
                ok = false;
            }
        }
        ok
    }

    /// No members left here: commit, give the blocks up to the other adapters at once, and
    /// forget what was waiting (it is theirs now).
    async fn close(&mut self) {
        for b in self.blocks.take().into_iter().flatten() {
            b.close().await;
        }
        self.dispatcher.clear();
    }

    fn ack(&mut self, position: u64) {
        let (i, o) = unpack(position);
        if let Some(b) = self.blocks.as_mut().and_then(|bs| bs.get_mut(i)) {
            b.ack(Offset(o));
        }
    }

    async fn dead_letter(&mut self, pending: Pending<R::Item>) {
        if self.rules.dead_letter(&pending).await {
            self.ack(pending.position);
        } else {
            self.dispatcher.retry_later(pending);
        }
    }

    fn wants_more(&self) -> bool {
        let outlets = &self.outlets;
        self.blocks.is_some()
            && self.dispatcher.wants_more(self.settings.read_ahead, |m| {
                outlets.get(&m).is_some_and(Outlet::has_room)
            })
    }

    /// Queue the next records of the blocks held, from each source in turn; acknowledge
    /// those that are not for this consumer.
    async fn read(&mut self) {
        let Some(blocks) = self.blocks.as_mut() else {
            return;
        };
        for (i, b) in blocks.iter_mut().enumerate() {
            if b.at_end() {
                continue;
            }
            let want = self
                .settings
                .read_ahead
                .saturating_sub(self.dispatcher.waiting())
                .max(1);
            let dispatcher = &self.dispatcher;
            let records = b.read(want, |o| dispatcher.holds(pack(i, o.0))).await;
            for r in records {
                let offset = r.offset;
                match self.rules.accept(i, r) {
                    Some(item) => self.dispatcher.push(pack(i, offset.0), item),
                    None => b.ack(offset),
                }
            }
        }
    }

    /// Hand waiting messages to members with credit and room, round robin; dead-letter
    /// the expired ones instead.
    async fn dispatch(&mut self) {
        if self.blocks.is_none() {
            return;
        }
        let now = self.log.clock().now_ms();
        loop {
            if self
                .dispatcher
                .front()
                .is_some_and(|p| self.rules.expired(&p.item, now))
            {
                if let Some(p) = self.dispatcher.pop_front() {
                    tracing::debug!(position = p.position, "message expired");
                    self.dead_letter(p).await;
                }
                continue;
            }
            let outlets = &self.outlets;
            let Some((member, pending)) = self
                .dispatcher
                .next(|m| outlets.get(&m).is_some_and(Outlet::has_room))
            else {
                return;
            };
            let out = self.rules.deliver(member, pending.position, &pending);
            match self.outlets.get(&member).map(|o| o.offer(out)) {
                Some(Ok(())) => self.dispatcher.sent(member, pending),
                Some(Err((_, gone))) => {
                    self.dispatcher.unsent(member, pending, gone);
                    if !gone {
                        return;
                    }
                }
                None => self.dispatcher.unsent(member, pending, true),
            }
        }
    }
}
