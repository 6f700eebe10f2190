//! The sequencer role: the one process that normally commits the log's numbered segments.
//!
//! Any process may commit (creating segment `n` with `PutMode::Create` is the
//! compare-and-swap), so the role is about speed, not safety: with one committer nobody races
//! for numbers. The holder of the lease `log-sequencer` commits its own appends inline and,
//! by reference, the batch objects other writers made durable, which it finds by polling each
//! active writer's next batch number. It takes the role on its first append if the lease is
//! free, and gives it up after `sequencer_idle` without appends of its own. A writer whose
//! batches wait longer than `commit_timeout` commits them itself and tries to take the role
//! (the holder died, or is paused). A paused holder that wakes up is harmless: its commits
//! still go through the compare-and-swap, and its renewal fails.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use object_store::ObjectStore;

use crate::{
    Result, lease,
    log::{Shared, WRITER_ACTIVE},
    paths,
};
use wharf_log_format::segment::Segment;

/// The lease whose holder sequences the log.
pub const SEQUENCER_LEASE: &str = "log-sequencer";

/// How often the sequencer lists `batches/` for writers it does not know. A new writer's
/// own commits would make it known, but while the sequencer commits back to back a writer
/// that must catch up one segment per round trip rarely wins a number: with a 10 s interval
/// such writers waited for this LIST (measured, 4 writers, no flush interval: ack p50 10 s;
/// with 1 s: 87 ms). One LIST per second, on the sequencer only.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// After a listing found a new writer, the next few come this soon: writers tend to arrive
/// together (a deployment, a scale-out), and each waits for the listing that finds it.
const DISCOVERY_SOON: Duration = Duration::from_millis(250);
const DISCOVERY_SOON_ROUNDS: u32 = 4;

#[derive(Default)]
pub(crate) struct Role {
    /// This process holds the lease (by its own clock).
    active: AtomicBool,
    /// An attempt to take the role, or the task holding it, is running.
    busy: AtomicBool,
    /// The log handle is closing: give the role up.
    closing: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
    last_append: Mutex<Option<Instant>>,
    /// Writers whose batches were committed recently: the poller looks at them.
    seen: Mutex<HashMap<String, Instant>>,
    /// When an attempt to take the role last found another process holding it.
    other_holder: Mutex<Option<Instant>>,
}

impl Role {
    pub(crate) fn saw_writer(&self, writer: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(writer.to_string(), Instant::now());
    }

    /// Another process was found holding the role within `within`.
    pub(crate) fn other_holder_within(&self, within: Duration) -> bool {
        self.other_holder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < within)
    }
}

impl Shared {
    pub(crate) fn is_sequencer(&self) -> bool {
        self.role.active.load(Ordering::Acquire)
    }

    /// Note an append of this process (the role is kept while they come).
    pub(crate) fn touch(&self) {
        *self
            .role
            .last_append
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// The log handle is closing.
    pub(crate) fn step_down(&self) {
        self.role.closing.store(true, Ordering::Release);
        self.role.active.store(false, Ordering::Release);
    }

    /// Take the role if the lease is free; returns when the attempt is over.
    pub(crate) async fn try_become_sequencer(self: &Arc<Self>) {
        if self.role.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        *self
            .role
            .last_attempt
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let ttl = self.settings.sequencer_ttl;
        match lease::acquire(self, SEQUENCER_LEASE, &self.writer_id, ttl).await {
            Ok(Some(lease)) => {
                tracing::info!(writer = %self.writer_id, epoch = lease.epoch().0, "took the sequencer role");
                // Take over: look at every writer the index knows once (their batches may wait).
                {
                    let st_writers: Vec<String> =
                        self.index_snapshot(|i| i.writers.keys().cloned().collect());
                    let mut seen = self.role.seen.lock().unwrap_or_else(|p| p.into_inner());
                    for w in st_writers {
                        seen.entry(w).or_insert_with(Instant::now);
                    }
                }
                self.role.active.store(true, Ordering::Release);
                tokio::spawn(hold(self.clone(), lease));
                tokio::spawn(poll_writers(self.clone()));
            }
            Ok(None) => {
                *self
                    .role
                    .other_holder
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                self.role.busy.store(false, Ordering::Release);
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not try the sequencer lease");
                self.role.busy.store(false, Ordering::Release);
            }
        }
    }

    /// [`Shared::try_become_sequencer`] in the background, at most once per half TTL.
    pub(crate) fn try_become_sequencer_soon(self: Arc<Self>) {
        if self.role.busy.load(Ordering::Acquire) {
            return;
        }
        let recent = self
            .role
            .last_attempt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < self.settings.sequencer_ttl / 2);
        if recent {
            return;
        }
        tokio::spawn(async move { self.try_become_sequencer().await });
    }
}

/// Keep the lease while appends come; give it up when idle or closing.
async fn hold(shared: Arc<Shared>, mut lease: crate::Lease) {
    let ttl = shared.settings.sequencer_ttl;
    loop {
        tokio::time::sleep(ttl / 3).await;
        let idle = shared
            .role
            .last_append
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|t| t.elapsed() >= shared.settings.sequencer_idle);
        if idle || shared.role.closing.load(Ordering::Acquire) {
            shared.role.active.store(false, Ordering::Release);
            if let Err(e) = lease.release().await {
                tracing::debug!(error = %e, "sequencer lease release failed");
            }
            break;
        }
        if let Err(e) = lease.renew(ttl).await {
            if e.kind() == crate::ErrorKind::Fenced || !lease.is_valid() {
                tracing::info!(error = %e, "lost the sequencer role");
                break;
            }
            tracing::debug!(error = %e, "sequencer lease renewal failed; will retry");
        }
    }
    shared.role.active.store(false, Ordering::Release);
    shared.role.busy.store(false, Ordering::Release);
}

struct Watched {
    /// The next batch number to look for (at least the committed one plus one).
    next: u64,
    /// How long after a miss to look again (doubles per miss, up to 5 intervals).
    delay: Duration,
    due: Instant,
    last_found: Instant,
    /// `created_ms` of the last batch found.
    last_created: Option<i64>,
    /// The writer's time between batches lately (ms, smoothed): a writer that makes one now
    /// and then (a trickle) is looked at less often than once per interval.
    gap_ms: i64,
    /// A look is in flight.
    looking: bool,
}

impl Watched {
    fn new(delay: Duration, due: Instant, last_found: Instant) -> Self {
        Self {
            next: 0,
            delay,
            due,
            last_found,
            last_created: None,
            gap_ms: 0,
            looking: false,
        }
    }
}

type Look = BoxFuture<'static, (String, u64, Instant, Result<Option<Arc<Segment>>>)>;

/// While this process is the sequencer: find other writers' durable batches and hand them
/// to the writer task.
///
/// A writer makes at most one batch per flush interval unless its batches fill up, so an
/// active writer is looked at once per interval (`poll_interval` or `flush_interval`,
/// whichever is longer), each look an eighth of an interval earlier than the last found
/// one's rhythm: the looks drift towards the moment its PUTs land, and a miss (the PUT is
/// landing) is retried an eighth of an interval later. A batch found sooner than that after
/// the previous one means a backlog: look again at once. Misses back off to 5 intervals; a
/// writer quiet for [`WRITER_ACTIVE`] is dropped after a last look (it commits its own next
/// batch, which makes it known again). Looks run side by side, so a slow one delays no other.
async fn poll_writers(shared: Arc<Shared>) {
    let min = shared.settings.poll_interval.max(shared.flush_interval);
    let max = min * 5;
    let retry = (min / 8).max(Duration::from_millis(1));
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut looks: FuturesUnordered<Look> = FuturesUnordered::new();
    let mut discovery: Option<BoxFuture<'static, Vec<String>>> = None;
    let mut last_discovery: Option<Instant> = None;
    // Taking the role: the other writers' first batches may be landing right now.
    let mut soon_rounds = DISCOVERY_SOON_ROUNDS;
    // Every writer a listing has shown (a writer dropped as quiet is listed again while its
    // batches exist: that is not a new writer).
    let mut listed_before: std::collections::HashSet<String> = Default::default();
    while shared.is_sequencer() && !shared.found.is_closed() {
        let now = Instant::now();
        let own = shared.own_series();
        let seen: Vec<(String, Instant)> = shared
            .role
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (w, at) in seen {
            if w == own {
                continue;
            }
            let e = watched
                .entry(w)
                .or_insert_with(|| Watched::new(min, now, at));
            e.last_found = e.last_found.max(at);
        }
        let discovery_every = if soon_rounds > 0 {
            DISCOVERY_SOON
        } else {
            DISCOVERY_INTERVAL
        };
        if discovery.is_none() && last_discovery.is_none_or(|t| t.elapsed() >= discovery_every) {
            soon_rounds = soon_rounds.saturating_sub(1);
            last_discovery = Some(now);
            let store = shared.store.object_store.clone();
            discovery = Some(async move { discover(store.as_ref()).await }.boxed());
        }
        for (name, w) in watched
            .iter_mut()
            .filter(|(_, w)| !w.looking && w.due <= now)
        {
            w.looking = true;
            w.next = w.next.max(shared.committed_of(name) + 1);
            let (shared, name, n) = (shared.clone(), name.clone(), w.next);
            looks.push(
                async move {
                    let started = Instant::now();
                    let result = shared.load_batch(&name, n).await;
                    (name, n, started, result)
                }
                .boxed(),
            );
        }
        let next_due = watched
            .values()
            .filter(|w| !w.looking)
            .map(|w| w.due)
            .min()
            .unwrap_or(now + min)
            .min(now + min)
            .max(now + Duration::from_millis(1));
        tokio::select! {
            Some((name, n, started, result)) = looks.next(), if !looks.is_empty() => {
                let Some(w) = watched.get_mut(&name) else {
                    continue;
                };
                w.looking = false;
                let forgotten = crate::log::UNKNOWN_WRITER_MAX_AGE.as_millis() as i64;
                match result {
                    Ok(Some(seg)) if n == 1 && seg.header.created_ms < shared.clock.now_ms() - forgotten => {
                        // A series checkpoints forgot (see UNKNOWN_WRITER_MAX_AGE): not ours to
                        // commit again.
                        watched.remove(&name);
                    }
                    Ok(Some(seg)) => {
                        w.next = n + 1;
                        let created = seg.header.created_ms;
                        tracing::trace!(writer = %name, n, found_after_ms = shared.clock.now_ms() - created, "batch found");
                        // A backlog: batches made less than ¾ of an interval apart (the writer
                        // filled them), or one made more than an interval ago — the next is
                        // there already (at start-up a writer is found with a second of
                        // batches waiting: looking once per interval never caught up with it).
                        let interval_ms = min.as_millis() as i64;
                        let backlog = w.last_created.is_none_or(|prev| {
                            created.saturating_sub(prev) < interval_ms * 3 / 4
                        }) || shared.clock.now_ms().saturating_sub(created) > interval_ms;
                        if let Some(prev) = w.last_created {
                            let gap = created.saturating_sub(prev).clamp(0, 60_000);
                            w.gap_ms = (w.gap_ms + gap) / 2;
                        }
                        w.last_created = Some(created);
                        // A writer that makes a batch per interval is looked at once per
                        // interval, in its rhythm; one whose batches come further apart (at
                        // random, a trickle) after half its usual gap, then ever less often:
                        // each look is a request, found or not.
                        let gap = Duration::from_millis(w.gap_ms.max(0) as u64);
                        let wait = if gap > min * 2 { (gap / 2).min(max) } else { min };
                        w.delay = if gap > min * 2 { (gap / 8).max(retry) } else { retry };
                        w.due = if backlog { Instant::now() } else { started + wait - retry };
                        w.last_found = Instant::now();
                        if shared.found.send(seg).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        w.due = Instant::now() + w.delay;
                        w.delay = (w.delay * 2).min(max);
                        if w.last_found.elapsed() >= WRITER_ACTIVE {
                            watched.remove(&name);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(writer = %name, n, error = %e, "could not read a batch");
                        w.delay = max;
                        w.due = Instant::now() + w.delay;
                    }
                }
            }
            listed = async { match discovery.as_mut() { Some(d) => d.await, None => std::future::pending().await } }, if discovery.is_some() => {
                discovery = None;
                let at = Instant::now();
                let mut new = false;
                for w in listed {
                    if w != own && !watched.contains_key(&w) {
                        // Looked at a few times, then dropped unless it has batches.
                        let quiet = at.checked_sub(WRITER_ACTIVE).unwrap_or(at);
                        new |= listed_before.insert(w.clone());
                        watched.insert(w, Watched::new(retry, at, quiet));
                    }
                }
                if new {
                    soon_rounds = DISCOVERY_SOON_ROUNDS;
                }
            }
            () = tokio::time::sleep_until(next_due.into()) => {}
        }
    }
}

/// The writers that have batch objects in the store.
pub(crate) async fn discover(store: &dyn ObjectStore) -> Vec<String> {
    match store.list_with_delimiter(Some(&paths::batches_dir())).await {
        Ok(listed) => listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "could not list batches");
            Vec::new()
        }
    }
}
