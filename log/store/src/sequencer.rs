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

use futures::future::join_all;
use object_store::ObjectStore;

use crate::{
    lease,
    log::{Shared, WRITER_ACTIVE},
    paths,
};

/// The lease whose holder sequences the log.
pub const SEQUENCER_LEASE: &str = "log-sequencer";

/// How often the sequencer lists `batches/` for writers it does not know. A new writer's
/// own commits would make it known, but while the sequencer commits back to back a writer
/// that must catch up one segment per round trip rarely wins a number: with a 10 s interval
/// such writers waited for this LIST (measured, 4 writers, no flush interval: ack p50 10 s;
/// with 1 s: 87 ms). One LIST per second, on the sequencer only.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

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
}

impl Role {
    pub(crate) fn saw_writer(&self, writer: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(writer.to_string(), Instant::now());
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
            Ok(None) => self.role.busy.store(false, Ordering::Release),
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
    delay: Duration,
    due: Instant,
    last_found: Instant,
}

/// While this process is the sequencer: find other writers' durable batches and hand them
/// to the writer task. A writer found recently is looked at every `poll_interval` (or
/// `flush_interval`, if longer), a quiet one less often (up to 5 intervals); one quiet for [`WRITER_ACTIVE`] is dropped after a
/// last look (it commits its own next batch, which makes it known again).
async fn poll_writers(shared: Arc<Shared>) {
    // A writer makes at most one batch per flush interval: looking more often finds nothing.
    let min = shared.settings.poll_interval.max(shared.flush_interval);
    let max = min * 5;
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut last_discovery: Option<Instant> = None;
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
            let e = watched.entry(w).or_insert(Watched {
                next: 0,
                delay: min,
                due: now,
                last_found: at,
            });
            e.last_found = e.last_found.max(at);
        }
        if last_discovery.is_none_or(|t| t.elapsed() >= DISCOVERY_INTERVAL) {
            last_discovery = Some(now);
            for w in discover(shared.store.object_store.as_ref()).await {
                if w != own && !watched.contains_key(&w) {
                    // Looked at a few times, then dropped unless it has batches.
                    watched.insert(
                        w,
                        Watched {
                            next: 0,
                            delay: max,
                            due: now,
                            last_found: now.checked_sub(WRITER_ACTIVE).unwrap_or(now),
                        },
                    );
                }
            }
        }
        let due: Vec<(String, u64)> = watched
            .iter_mut()
            .filter(|(_, w)| w.due <= now)
            .map(|(name, w)| {
                w.next = w.next.max(shared.committed_of(name) + 1);
                (name.clone(), w.next)
            })
            .collect();
        let looks = due.iter().map(|(w, n)| {
            let shared = shared.clone();
            async move { shared.load_batch(w, *n).await }
        });
        let results = join_all(looks).await;
        for ((name, n), result) in due.into_iter().zip(results) {
            let Some(w) = watched.get_mut(&name) else {
                continue;
            };
            match result {
                Ok(Some(seg)) => {
                    w.next = n + 1;
                    w.delay = min;
                    w.due = Instant::now();
                    w.last_found = Instant::now();
                    if shared.found.send(seg).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    w.delay = (w.delay * 2).min(max);
                    w.due = Instant::now() + w.delay;
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
        let next_due = watched.values().map(|w| w.due).min();
        let wait = next_due
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(min)
            .clamp(Duration::from_millis(1), min);
        tokio::time::sleep(wait).await;
    }
}

/// The writers that have batch objects in the store.
async fn discover(store: &dyn ObjectStore) -> Vec<String> {
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
