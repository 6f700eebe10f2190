//! The log handle: open, the shared index, segment cache and refresh.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::{mpsc, oneshot, watch};
use wharf_log_format::{
    Offset, Record, StreamId,
    checkpoint::{Checkpoint, Retention, StreamIndex},
    json,
    segment::{self, Segment},
};

use crate::{
    Clock, LogError, Result, SystemClock,
    paths::{self},
    series::Series,
    settings::LogSettings,
    store::{Store, create, get_bytes},
    writer::{self, Request},
};

/// A handle on the log in one store. Cheap to clone; all clones share one writer task, one
/// index and one segment cache.
#[derive(Clone)]
pub struct Log {
    pub(crate) shared: Arc<Shared>,
    appender: mpsc::Sender<Request>,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("store", &self.shared.store.url)
            .field("writer", &self.shared.writer_id)
            .finish()
    }
}

pub(crate) struct Shared {
    pub store: Store,
    pub settings: LogSettings,
    pub clock: Arc<dyn Clock>,
    pub writer_id: String,
    pub linger: Duration,
    pub flush_interval: Duration,
    state: Mutex<State>,
    /// The highest segment applied to the index; tails wait on it.
    pub committed: watch::Sender<u64>,
    /// Held while refreshing; holds when the last refresh started.
    refresh_lock: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// A checkpoint write is in progress.
    checkpointing: AtomicBool,
    /// When the index was last confirmed to be at the head of the log (a probe for the next
    /// segment found none, or we created it).
    fresh_at: Mutex<std::time::Instant>,
    /// Bytes that may be submitted and not yet durable (`max_pending_bytes`).
    pub pending_bytes: Arc<tokio::sync::Semaphore>,
}

pub(crate) struct State {
    index: Checkpoint,
    cache: SegmentCache,
    /// Highest checkpoint this process knows to be persisted.
    last_checkpoint: u64,
}

/// Decoded segments, evicted oldest-inserted first when over budget.
struct SegmentCache {
    budget: usize,
    max_segments: usize,
    used: usize,
    map: HashMap<u64, Arc<Segment>>,
    order: VecDeque<u64>,
}

impl SegmentCache {
    fn insert(&mut self, seg: Arc<Segment>) {
        let seq = seg.header.seq;
        if self.map.contains_key(&seq) {
            return;
        }
        self.used += cost(&seg);
        self.map.insert(seq, seg);
        self.order.push_back(seq);
        while (self.used > self.budget || self.order.len() > self.max_segments)
            && self.order.len() > 1
        {
            if let Some(old) = self.order.pop_front()
                && let Some(s) = self.map.remove(&old)
            {
                self.used -= cost(&s);
            }
        }
    }
}

/// What a decoded segment holds in memory, roughly: its encoded size, plus the structures
/// around each record and the segment (which dominate for the many one-record segments of
/// low-rate streams).
fn cost(seg: &Segment) -> usize {
    seg.size + 256 + 128 * seg.records.len()
}

impl Log {
    /// Open the log with default settings and the system clock.
    pub async fn open(store: Store) -> Result<Log> {
        Self::open_with(store, LogSettings::default(), Arc::new(SystemClock)).await
    }

    /// Open the log: read the latest checkpoint, then apply the segments written after it.
    pub async fn open_with(
        store: Store,
        settings: LogSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Log> {
        settings.validate()?;
        let checkpoints = Series::checkpoints(store.object_store.as_ref(), &settings);
        let mut index = Checkpoint::default();
        // The newest checkpoint that still exists (one may be pruned while we list).
        for n in checkpoints.numbers().await?.into_iter().rev() {
            if let Some(checkpoint) = checkpoints.get(n).await? {
                index = checkpoint;
                break;
            }
        }
        let writer_id = if settings.writer_id.is_empty() {
            format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "wharf".into()),
                std::process::id()
            )
        } else {
            settings.writer_id.clone()
        };
        let linger = settings.linger_for(store.kind);
        let flush_interval = settings.flush_interval_for(store.kind);
        let (committed, _) = watch::channel(index.segment_seq);
        let last_checkpoint = index.segment_seq;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                index,
                cache: SegmentCache {
                    budget: settings.cache_bytes,
                    max_segments: settings.cache_segments,
                    used: 0,
                    map: HashMap::new(),
                    order: VecDeque::new(),
                },
                last_checkpoint,
            }),
            store,
            clock,
            writer_id,
            linger,
            flush_interval,
            committed,
            refresh_lock: tokio::sync::Mutex::new(None),
            checkpointing: AtomicBool::new(false),
            fresh_at: Mutex::new(std::time::Instant::now()),
            pending_bytes: Arc::new(tokio::sync::Semaphore::new(settings.max_pending_bytes)),
            settings,
        });
        shared.refresh().await?;
        let (appender, rx) = mpsc::channel(shared.settings.max_pending_appends);
        tokio::spawn(writer::run(shared.clone(), rx));
        Ok(Log { shared, appender })
    }

    /// The store this log lives in.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn settings(&self) -> &LogSettings {
        &self.shared.settings
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// Append one record; returns its offset once the record is durable.
    pub async fn append(&self, stream: &StreamId, record: Record) -> Result<Offset> {
        self.append_many(stream, vec![record]).await
    }

    /// Append records to one stream; they get consecutive offsets. Returns the first offset
    /// once all of them are durable. Appends from many callers are group-committed.
    pub async fn append_many(&self, stream: &StreamId, records: Vec<Record>) -> Result<Offset> {
        self.submit(stream, records).await?.durable().await
    }

    /// Queue records for the next flush without waiting for it: submissions from one caller
    /// are stored in submission order, so a producer can keep many appends in flight and
    /// still have them in order. Waits only while the queue is full (backpressure).
    pub async fn submit(&self, stream: &StreamId, records: Vec<Record>) -> Result<Pending> {
        if records.is_empty() {
            return Err(LogError::invalid("append", "no records"));
        }
        // Wait while too many bytes are on their way to the store (one submission larger
        // than the whole budget takes all of it).
        let bytes: usize = records.iter().map(Record::size).sum();
        let budget = &self.shared.pending_bytes;
        let want = bytes.clamp(1, self.shared.settings.max_pending_bytes);
        let share = budget
            .clone()
            .acquire_many_owned(u32::try_from(want).unwrap_or(u32::MAX))
            .await
            .map_err(|_| LogError::Closed)?;
        let (reply, rx) = oneshot::channel();
        self.appender
            .send(Request::append(stream.clone(), records, reply, share))
            .await
            .map_err(|_| LogError::Closed)?;
        Ok(Pending(rx))
    }

    /// Move a stream's start to `start` (records below become unreadable). Durable on return.
    pub async fn trim(&self, trims: BTreeMap<StreamId, Offset>) -> Result<()> {
        if trims.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.appender
            .send(Request::trim(trims, reply))
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?.map(|_| ())
    }

    /// Apply retention: trim every stream by its policy (segment granularity). Returns the
    /// new start offsets.
    pub async fn apply_retention(
        &self,
        policy: impl Fn(&StreamId) -> Retention,
    ) -> Result<BTreeMap<StreamId, Offset>> {
        self.refresh().await?;
        let now = self.shared.clock.now_ms();
        let plan = self.shared.state().index.plan_retention(now, policy);
        self.trim(plan.clone()).await?;
        Ok(plan)
    }

    /// Look for segments written by other processes and apply them. Returns the highest
    /// applied segment number.
    pub async fn refresh(&self) -> Result<u64> {
        self.shared.refresh().await
    }

    /// A snapshot of every stream's head and index.
    pub fn streams(&self) -> BTreeMap<StreamId, StreamIndex> {
        self.shared.state().index.streams.clone()
    }

    /// A snapshot of one stream's head and index.
    pub fn stream(&self, stream: &StreamId) -> Option<StreamIndex> {
        self.shared.state().index.stream(stream).cloned()
    }

    /// Changes whenever this process commits or learns of a new segment: readers waiting
    /// for records wait on it (and poll the store for other processes' segments).
    pub fn watch_segments(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// The highest segment number applied to this handle's index.
    pub fn segment_seq(&self) -> u64 {
        self.shared.state().index.segment_seq
    }

    /// Number of the newest persisted checkpoint this process knows of.
    pub fn last_checkpoint(&self) -> u64 {
        self.shared.state().last_checkpoint
    }
}

/// Records queued by [`Log::submit`], not yet known to be durable.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Offset>>);

impl Pending {
    /// Wait until the records are durable; returns the first one's offset.
    pub async fn durable(self) -> Result<Offset> {
        self.0.await.map_err(|_| LogError::Closed)?
    }
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere already; the index itself is only mutated
        // by `Checkpoint::apply`, which leaves it unchanged on error.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn index_snapshot<T>(&self, f: impl FnOnce(&Checkpoint) -> T) -> T {
        f(&self.state().index)
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.state().index.next_seq()
    }

    /// Remember a decoded segment so that applying or reading it needs no GET.
    pub(crate) fn cache(&self, seg: Arc<Segment>) {
        self.state().cache.insert(seg);
    }

    /// The segment `seq`, from the cache or the store; `None` if it does not exist.
    pub(crate) async fn load_segment(&self, seq: u64) -> Result<Option<Arc<Segment>>> {
        if let Some(seg) = self.state().cache.map.get(&seq) {
            return Ok(Some(seg.clone()));
        }
        let path = paths::segment(seq);
        let bytes = match get_bytes(self.store.object_store.as_ref(), &self.settings, &path).await {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(LogError::store(&path, e)),
        };
        let seg = Arc::new(segment::decode(bytes).map_err(|e| LogError::format(&path, e))?);
        if seg.header.seq != seq {
            return Err(LogError::format(
                &path,
                wharf_log_format::FormatError::Corrupt {
                    what: "segment",
                    detail: format!("holds number {}", seg.header.seq),
                },
            ));
        }
        self.cache(seg.clone());
        Ok(Some(seg))
    }

    /// Apply a segment if it is the next one. Returns whether it was applied now (false if it
    /// was already applied).
    pub(crate) fn apply(&self, seg: &Arc<Segment>) -> Result<bool> {
        let mut st = self.state();
        let seq = seg.header.seq;
        if seq <= st.index.segment_seq {
            return Ok(false);
        }
        st.index
            .apply(seg)
            .map_err(|e| LogError::format(&paths::segment(seq), e))?;
        st.cache.insert(seg.clone());
        drop(st);
        self.committed.send_replace(seq);
        Ok(true)
    }

    /// Apply every segment after the index's head that exists in the store.
    pub(crate) async fn refresh(&self) -> Result<u64> {
        self.refresh_unless_within(Duration::ZERO).await
    }

    /// What readers waiting for other processes' segments call every `poll_interval`: a
    /// refresh, unless one (by any reader, or any caller of [`Log::refresh`]) started within
    /// half the interval. However many readers wait, a process then asks the store at most
    /// twice per interval, not once per reader per interval; a reader learns of a segment at
    /// most 1.5 intervals after it was written (a refresh that finds one wakes every reader).
    pub(crate) async fn poll(&self) -> Result<()> {
        self.refresh_unless_within(self.settings.poll_interval / 2)
            .await
            .map(|_| ())
    }

    async fn refresh_unless_within(&self, recent: Duration) -> Result<u64> {
        let mut last = self.refresh_lock.lock().await;
        if !recent.is_zero() && last.is_some_and(|at| at.elapsed() < recent) {
            return Ok(self.next_seq() - 1);
        }
        *last = Some(std::time::Instant::now());
        loop {
            let next = self.next_seq();
            match self.load_segment(next).await? {
                Some(seg) => {
                    self.apply(&seg)?;
                }
                None => {
                    // A stale view may be missing a segment because garbage collection deleted
                    // it, not because it was never written: catch up from a checkpoint first.
                    if self.view_is_stale() && self.reload_from_checkpoint(next).await? {
                        continue;
                    }
                    self.mark_fresh();
                    return Ok(next - 1);
                }
            }
        }
    }

    pub(crate) fn mark_fresh(&self) {
        *self.fresh_at.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    pub(crate) fn view_is_stale(&self) -> bool {
        let fresh_at = *self.fresh_at.lock().unwrap_or_else(|p| p.into_inner());
        fresh_at.elapsed() >= self.settings.gc_grace / 2
    }

    /// Replace the index with the newest checkpoint if it covers segment `next`. Returns
    /// whether it did.
    async fn reload_from_checkpoint(&self, next: u64) -> Result<bool> {
        let series = Series::checkpoints(self.store.object_store.as_ref(), &self.settings);
        let Some(&newest) = series.numbers().await?.last() else {
            return Ok(false);
        };
        if newest < next {
            return Ok(false);
        }
        let Some(index) = series.get::<Checkpoint>(newest).await? else {
            return Ok(false);
        };
        let seq = index.segment_seq;
        {
            let mut st = self.state();
            if seq <= st.index.segment_seq {
                return Ok(false);
            }
            tracing::info!(
                from = st.index.segment_seq,
                to = seq,
                "stale view: reloaded from checkpoint"
            );
            st.index = index;
            st.last_checkpoint = st.last_checkpoint.max(seq);
        }
        self.committed.send_replace(seq);
        Ok(true)
    }

    /// Whether a checkpoint is due and none is being written; if so, this claims the write
    /// and the caller must call [`Shared::write_checkpoint`]. The interval grows with the index (one more segment per 1,000 index entries), so
    /// that rewriting a large checkpoint stays a bounded share of what is written; opening
    /// replays at most that many segments.
    pub(crate) fn checkpoint_due(&self) -> bool {
        let st = self.state();
        let since = st.index.segment_seq.saturating_sub(st.last_checkpoint);
        // Cheap test first: this runs after every flush.
        if since < self.settings.checkpoint_every {
            return false;
        }
        let entries: usize = st.index.streams.values().map(|s| s.entries.len()).sum();
        since >= (entries as u64 / 1000).max(self.settings.checkpoint_every)
            && !self.checkpointing.swap(true, Ordering::AcqRel)
    }

    /// Write a checkpoint now unless one is being written.
    pub(crate) async fn checkpoint_now(&self) {
        if !self.checkpointing.swap(true, Ordering::AcqRel) {
            self.write_checkpoint().await;
        }
    }

    /// Persist a checkpoint of the index as it is now, and prune old ones. The caller has set
    /// `checkpointing` (see [`Shared::checkpoint_due`]).
    pub(crate) async fn write_checkpoint(&self) {
        self.write_checkpoint_inner().await;
        self.checkpointing.store(false, Ordering::Release);
    }

    async fn write_checkpoint_inner(&self) {
        let snapshot = self.state().index.clone();
        let seq = snapshot.segment_seq;
        let path = paths::checkpoint(seq);
        let bytes = json::encode_compact(&snapshot);
        match create(
            self.store.object_store.as_ref(),
            &self.settings,
            &path,
            bytes.into(),
        )
        .await
        {
            Ok(_) => {
                let mut st = self.state();
                st.last_checkpoint = st.last_checkpoint.max(seq);
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "checkpoint write failed; will retry later");
                return;
            }
        }
        let series = Series::checkpoints(self.store.object_store.as_ref(), &self.settings);
        if let Ok(numbers) = series.numbers().await
            && numbers.len() > self.settings.keep_checkpoints
        {
            let keep_from = numbers[numbers.len() - self.settings.keep_checkpoints];
            series.prune(keep_from).await;
        }
    }
}
