//! The log handle: open, the shared index, segment cache and refresh.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    hash::Hash,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot, watch};
use wharf_log_format::{
    FormatError, Offset, Record, StoredRecord, StreamId,
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
    /// This process's batch series (`batches/<id>/<n>`), and what it knows of its commits.
    pub(crate) own: Mutex<OwnSeries>,
    /// Appenders of our batch objects waiting for the commit (offsets, and the durable
    /// answer while the sequencer does not know this writer yet), by series and number.
    awaiting: Mutex<HashMap<(String, u64), Vec<Waiter>>>,
    /// The sequencer role (see `sequencer.rs`).
    pub(crate) role: crate::sequencer::Role,
    /// Where the sequencer's poller hands the batch objects it finds to the writer task.
    pub(crate) found: mpsc::UnboundedSender<Arc<Segment>>,
    /// This handle's name in the segments it commits (`wharf.writer`): the writer id and a
    /// random part, so a writer can tell commits of its batches by someone else.
    pub(crate) committer: String,
    /// When a reader last checked whether the log needs a sequencer (see [`Shared::poll`]).
    role_check: Mutex<Option<Instant>>,
    /// Clients of this log connected to the process ([`Log::client`]).
    clients: watch::Sender<usize>,
    /// Batch objects being read: readers of one segment's streams share one GET each.
    loading: Mutex<HashMap<(String, u64), Arc<BatchCell>>>,
    /// When a segment someone else committed was last applied here.
    others_committed: Mutex<Option<Instant>>,
    /// Callers of [`Log::settle`] waiting now (the writer follows the log for them).
    settling: std::sync::atomic::AtomicUsize,
    /// The highest batch of each of our series that is durable and was not known to be
    /// committed when the writer last looked (the writer's own copy, for [`Log::settle`]).
    pending: Mutex<BTreeMap<String, u64>>,
}

type BatchCell = tokio::sync::OnceCell<Option<Arc<Segment>>>;

/// A client of a log, counted until dropped (see [`Log::client`]).
pub struct ClientGuard(Arc<Shared>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl std::fmt::Debug for ClientGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientGuard")
    }
}

/// An appender of a batch object, answered when the batch is committed.
pub(crate) struct Waiter {
    pub stream: StreamId,
    pub pos: usize,
    pub durable: Option<oneshot::Sender<Result<()>>>,
    pub offset: oneshot::Sender<Result<Offset>>,
}

/// This process's series of batch objects.
pub(crate) struct OwnSeries {
    /// `<writer id>.<random>`: unique per log handle, and renewed after a failed PUT.
    pub id: String,
    /// The number the next batch gets.
    pub next: u64,
    /// When a commit of one of the series' batches was last applied here.
    pub last_commit_seen: Option<Instant>,
    /// When the series' newest batch was numbered.
    pub last_batch: Option<Instant>,
}

/// How long after the last commit of a writer's batches the sequencer keeps polling it; a
/// writer that has seen no commit of its batches for half of this waits for the commit before
/// it answers its appenders (the sequencer may have stopped looking).
pub(crate) const WRITER_ACTIVE: Duration = Duration::from_secs(60);

/// A series the index does not know whose first batch is older than this is not committed by
/// the sequencer or a barrier: checkpoints forget writers idle for a day, and such a series'
/// batches were committed long ago (or abandoned after a failed PUT). A new writer's first
/// batch is committed within seconds — or, with no sequencer at all, by the writer itself.
pub(crate) const UNKNOWN_WRITER_MAX_AGE: Duration = Duration::from_secs(20 * 3600);

pub(crate) struct State {
    index: Checkpoint,
    cache: SegmentCache<u64>,
    /// Batch objects read or written here, by series and number.
    batches: SegmentCache<(String, u64)>,
    /// Highest checkpoint this process knows to be persisted.
    last_checkpoint: u64,
}

/// Decoded segments, evicted oldest-inserted first when over budget.
struct SegmentCache<K> {
    budget: usize,
    max_segments: usize,
    used: usize,
    map: HashMap<K, Arc<Segment>>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone> SegmentCache<K> {
    fn new(budget: usize, max_segments: usize) -> Self {
        Self {
            budget,
            max_segments,
            used: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn insert(&mut self, seq: K, seg: Arc<Segment>) {
        if self.map.contains_key(&seq) {
            return;
        }
        self.used += cost(&seg);
        self.map.insert(seq.clone(), seg);
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
        let (found, found_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            own: Mutex::new(OwnSeries {
                id: series_id(&writer_id),
                next: 1,
                last_commit_seen: None,
                last_batch: None,
            }),
            awaiting: Mutex::new(HashMap::new()),
            role: Default::default(),
            committer: series_id(&writer_id),
            role_check: Mutex::new(None),
            loading: Mutex::new(HashMap::new()),
            others_committed: Mutex::new(None),
            settling: Default::default(),
            pending: Mutex::new(BTreeMap::new()),
            clients: watch::channel(0).0,
            found,
            state: Mutex::new(State {
                index,
                cache: SegmentCache::new(settings.cache_bytes, settings.cache_segments),
                batches: SegmentCache::new(settings.cache_bytes / 4, settings.cache_segments),
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
        tokio::spawn(writer::run(shared.clone(), rx, found_rx));
        Ok(Log { shared, appender })
    }

    /// The store this log lives in.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn settings(&self) -> &LogSettings {
        &self.shared.settings
    }

    /// Count a client of this log (an adapter's connection of its tenant) while the guard
    /// lives. Background readers poll at `poll_interval` while there are clients, and at
    /// `idle_poll_interval` while there are none.
    pub fn client(&self) -> ClientGuard {
        self.shared.clients.send_modify(|n| *n += 1);
        ClientGuard(self.shared.clone())
    }

    /// How many clients are counted, and changes of it.
    pub fn clients(&self) -> watch::Receiver<usize> {
        self.shared.clients.subscribe()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// Append one record; returns its offset once the record is durable and committed.
    pub async fn append(&self, stream: &StreamId, record: Record) -> Result<Offset> {
        self.append_many(stream, vec![record]).await
    }

    /// Append records to one stream; they get consecutive offsets. Returns the first offset
    /// once all of them are durable and committed. Appends from many callers are
    /// group-committed. A caller that needs durability only uses [`Log::submit`] and
    /// [`Pending::durable`], which can answer before the order is settled.
    pub async fn append_many(&self, stream: &StreamId, records: Vec<Record>) -> Result<Offset> {
        self.submit_with(stream, records, true)
            .await?
            .committed()
            .await
    }

    /// Queue records for the next flush without waiting for it: submissions from one caller
    /// are stored in submission order, so a producer can keep many appends in flight and
    /// still have them in order. Waits only while the queue is full (backpressure).
    pub async fn submit(&self, stream: &StreamId, records: Vec<Record>) -> Result<Pending> {
        self.submit_with(stream, records, false).await
    }

    async fn submit_with(
        &self,
        stream: &StreamId,
        records: Vec<Record>,
        urgent: bool,
    ) -> Result<Pending> {
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
        let (durable, durable_rx) = oneshot::channel();
        let (offset, offset_rx) = oneshot::channel();
        self.appender
            .send(Request::Append {
                stream: stream.clone(),
                records,
                durable,
                offset,
                urgent,
                enqueued: tokio::time::Instant::now(),
                budget: share,
            })
            .await
            .map_err(|_| LogError::Closed)?;
        Ok(Pending {
            durable: durable_rx,
            offset: offset_rx,
        })
    }

    /// Move a stream's start to `start` (records below become unreadable). Durable on return.
    pub async fn trim(&self, trims: BTreeMap<StreamId, Offset>) -> Result<()> {
        if trims.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.appender
            .send(Request::Trim {
                trims,
                reply,
                enqueued: tokio::time::Instant::now(),
            })
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?.map(|_| ())
    }

    /// Order, now, everything any writer of this log acknowledged before this call: when it
    /// returns, those records are committed and in this handle's index, and whatever this
    /// handle appends afterwards gets later offsets. For a client that may have moved here
    /// from another process (an AMQP sender link attaching; MQTT's CONNECT gets it from its
    /// takeover record, an `append`). Costs a GET per recently active writer, and a commit
    /// when there is something to commit.
    pub async fn barrier(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.appender
            .send(Request::Barrier {
                reply,
                enqueued: tokio::time::Instant::now(),
            })
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

    /// The bytes of segment `seq` as stored (an Arrow IPC file, `log/README.md`), or `None`
    /// if there is no such segment (never written, or garbage collected).
    pub async fn segment_bytes(&self, seq: u64) -> Result<Option<bytes::Bytes>> {
        let path = paths::segment(seq);
        match get_bytes(
            self.shared.store.object_store.as_ref(),
            &self.shared.settings,
            &path,
        )
        .await
        {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(LogError::store(&path, e)),
        }
    }

    /// Look for segments written by other processes and apply them. Returns the highest
    /// applied segment number.
    pub async fn refresh(&self) -> Result<u64> {
        self.shared.refresh().await
    }

    /// Wait until every record this handle has acknowledged as durable is also committed (has
    /// an offset), or `2 × commit_timeout` passed. A reader that starts "from the head" calls
    /// this first, so that its start is after everything this process acknowledged: without it
    /// a subscription made right after a publish through this adapter could start before that
    /// publish (a writer's batches are acknowledged before they are ordered). Returns at once
    /// when nothing is waiting (always, on the sequencer).
    pub async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + 2 * self.shared.settings.commit_timeout;
        let mut seen = self.shared.committed.subscribe();
        self.shared.prune_awaiting();
        // The writer follows the log while someone settles.
        self.shared.settling.fetch_add(1, Ordering::AcqRel);
        let _done = SettleGuard(&self.shared.settling);
        while self.shared.has_unordered() || self.shared.has_uncommitted() {
            if tokio::time::timeout_at(deadline, seen.changed())
                .await
                .is_err()
            {
                tracing::debug!("settle: own batches still uncommitted");
                return;
            }
        }
    }

    /// A snapshot of every stream's head and index.
    pub fn streams(&self) -> BTreeMap<StreamId, StreamIndex> {
        self.shared.state().index.streams.clone()
    }

    /// Bytes of every stream's readable segments (segment granularity), summed under the
    /// index's lock rather than from a copy of it.
    pub fn held_bytes(&self) -> u64 {
        self.shared
            .state()
            .index
            .streams
            .values()
            .map(|s| s.bytes())
            .sum()
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

/// Counts a caller of [`Log::settle`] until dropped.
struct SettleGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for SettleGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Records queued by [`Log::submit`], not yet known to be durable.
#[derive(Debug)]
pub struct Pending {
    durable: oneshot::Receiver<Result<()>>,
    offset: oneshot::Receiver<Result<Offset>>,
}

impl Pending {
    /// Wait until the records are durable: they will be readable, in submission order, and
    /// are never lost. Their offsets may not be settled yet (see [`Pending::committed`]).
    pub async fn durable(self) -> Result<()> {
        // Nobody will ask for the offset: the writer need not keep a waiter for it.
        let Pending { durable, offset } = self;
        drop(offset);
        durable.await.map_err(|_| LogError::Closed)?
    }

    /// The two answers apart: durable, then committed (with the first offset).
    pub fn split(
        self,
    ) -> (
        impl Future<Output = Result<()>> + Send,
        impl Future<Output = Result<Offset>> + Send,
    ) {
        let (durable, offset) = (self.durable, self.offset);
        (
            async move { durable.await.map_err(|_| LogError::Closed)? },
            async move { offset.await.map_err(|_| LogError::Closed)? },
        )
    }

    /// Wait until the records are committed into the log's order; returns the first one's
    /// offset.
    pub async fn committed(self) -> Result<Offset> {
        self.durable.await.map_err(|_| LogError::Closed)??;
        self.offset.await.map_err(|_| LogError::Closed)?
    }
}

/// A series name for this log handle: the writer id made safe for a key, and a random part.
fn series_id(writer_id: &str) -> String {
    let clean: String = writer_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{clean}.{}", &random[..12])
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
        self.state().cache.insert(seg.header.seq, seg);
    }

    /// Remember a batch object (ours, or one the sequencer found) so reading it needs no GET.
    pub(crate) fn remember_batch(&self, seg: Arc<Segment>) {
        let key = (seg.header.writer.clone(), seg.header.seq);
        self.state().batches.insert(key, seg);
    }

    /// Batch `n` of `series`, from the cache or the store; `None` if it does not exist.
    ///
    /// Always asks the store when the batch is not cached: whoever looks for a batch that may
    /// not exist yet (the sequencer's poller, a barrier) must not be answered by a look that
    /// started before it was put.
    pub(crate) async fn load_batch(&self, series: &str, n: u64) -> Result<Option<Arc<Segment>>> {
        if let Some(seg) = self.state().batches.map.get(&(series.to_string(), n)) {
            return Ok(Some(seg.clone()));
        }
        self.read_batch(series, n).await
    }

    /// A batch a segment commits (so it exists): from the cache, or one GET however many
    /// readers want it at once (each tail of a segment's streams).
    async fn load_committed_batch(&self, series: &str, n: u64) -> Result<Option<Arc<Segment>>> {
        let key = (series.to_string(), n);
        if let Some(seg) = self.state().batches.map.get(&key) {
            return Ok(Some(seg.clone()));
        }
        let cell = self
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let result = cell
            .get_or_try_init(|| self.read_batch(series, n))
            .await
            .cloned();
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if loading.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            loading.remove(&key);
        }
        result
    }

    async fn read_batch(&self, series: &str, n: u64) -> Result<Option<Arc<Segment>>> {
        let path = paths::batch(series, n);
        let Some(seg) = self.fetch(&path).await? else {
            return Ok(None);
        };
        if !seg.header.batch || seg.header.seq != n || seg.header.writer != series {
            return Err(LogError::format(
                &path,
                FormatError::Corrupt {
                    what: "batch",
                    detail: format!("holds batch {} of {:?}", seg.header.seq, seg.header.writer),
                },
            ));
        }
        let seg = Arc::new(seg);
        self.remember_batch(seg.clone());
        Ok(Some(seg))
    }

    /// The records of `stream` that segment `seg` commits, in offset order: its own rows, or
    /// those of the batch objects it references (read, and given their offsets) when it does
    /// not hold their rows itself (format version 2).
    pub(crate) async fn stream_records<'a>(
        &self,
        seg: &'a Segment,
        stream: &StreamId,
    ) -> Result<Cow<'a, [StoredRecord]>> {
        if seg.header.inline {
            return Ok(Cow::Borrowed(seg.stream(stream)));
        }
        let refs: Vec<_> = seg
            .header
            .refs
            .iter()
            .filter_map(|r| r.streams.get(stream).map(|p| (r, *p)))
            .collect();
        if refs.is_empty() {
            return Ok(Cow::Borrowed(seg.stream(stream)));
        }
        // The batch objects side by side: one request's latency, not one per writer.
        let batches = futures::future::try_join_all(
            refs.iter()
                .map(|(r, _)| self.load_committed_batch(&r.writer, r.n)),
        )
        .await?;
        let mut out = Vec::new();
        for ((r, part), batch) in refs.into_iter().zip(batches) {
            let Some(batch) = batch else {
                return Err(LogError::format(
                    &paths::batch(&r.writer, r.n),
                    FormatError::Corrupt {
                        what: "batch",
                        detail: format!("committed by segment {} but missing", seg.header.seq),
                    },
                ));
            };
            let recs = batch.stream(stream);
            if recs.len() as u64 != part.count {
                return Err(LogError::format(
                    &paths::batch(&r.writer, r.n),
                    FormatError::Corrupt {
                        what: "batch",
                        detail: format!(
                            "{stream}: holds {} records, segment {} commits {}",
                            recs.len(),
                            seg.header.seq,
                            part.count
                        ),
                    },
                ));
            }
            out.extend(recs.iter().enumerate().map(|(i, r)| StoredRecord {
                stream: r.stream.clone(),
                offset: Offset(part.first_offset + i as u64),
                record: r.record.clone(),
            }));
        }
        out.extend(seg.stream(stream).iter().cloned());
        out.sort_by_key(|r| r.offset);
        Ok(Cow::Owned(out))
    }

    /// Whether a segment someone else committed was applied here within `within`: someone is
    /// committing (the sequencer, normally), so a batch of ours it has not committed yet is
    /// more likely not found yet than forgotten.
    pub(crate) fn others_committed_within(&self, within: Duration) -> bool {
        self.others_committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < within)
    }

    /// Whether an appender waits for the offset of a batch of ours.
    pub(crate) fn has_uncommitted(&self) -> bool {
        !self
            .awaiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The writer's record of our durable batches not known to be committed.
    pub(crate) fn set_pending(&self, pending: &BTreeMap<String, u64>) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if *p != *pending {
            p.clone_from(pending);
        }
    }

    /// Whether a batch this handle acknowledged as durable is not committed yet (as far as
    /// the index knows).
    pub(crate) fn has_unordered(&self) -> bool {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        pending
            .iter()
            .any(|(series, n)| *n > self.committed_of(series))
    }

    /// This handle's batch series.
    pub(crate) fn own_series(&self) -> String {
        self.own_lock().id.clone()
    }

    fn own_lock(&self) -> MutexGuard<'_, OwnSeries> {
        self.own.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next batch number of this handle's series.
    pub(crate) fn next_batch_number(&self) -> (String, u64) {
        let mut own = self.own_lock();
        if own
            .last_batch
            .is_some_and(|t| t.elapsed() >= 60 * WRITER_ACTIVE)
        {
            // Idle for an hour: a new series, so that checkpoints may forget the old one.
            own.id = series_id(&self.writer_id);
            own.next = 1;
            own.last_commit_seen = None;
        }
        own.last_batch = Some(Instant::now());
        let n = own.next;
        own.next += 1;
        (own.id.clone(), n)
    }

    /// After a failed batch PUT: continue under a new series name (the old one may have a
    /// hole that nobody can fill, so nothing after it will ever be committed).
    pub(crate) fn rotate_series(&self, old: &str) {
        let mut own = self.own_lock();
        if own.id == old {
            own.id = series_id(&self.writer_id);
            own.next = 1;
            own.last_commit_seen = None;
            own.last_batch = None;
        }
    }

    /// Whether a caller of [`Log::settle`] is waiting.
    pub(crate) fn settling(&self) -> bool {
        self.settling.load(Ordering::Acquire) > 0
    }

    /// Forget offset waiters nobody waits for any more (a writer that does not follow the log
    /// would keep them until it learns of their commit).
    pub(crate) fn prune_awaiting(&self) {
        self.awaiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, waiters| {
                waiters.retain(|w| !w.offset.is_closed() || w.durable.is_some());
                !waiters.is_empty()
            });
    }

    /// How far the index says `series` is committed.
    pub(crate) fn committed_of(&self, series: &str) -> u64 {
        self.state()
            .index
            .writers
            .get(series)
            .map_or(0, |w| w.committed)
    }

    /// Answer `waiters` when batch `n` of `series` is committed (at once, if it already is).
    pub(crate) fn await_commit(&self, series: &str, n: u64, waiters: Vec<Waiter>) {
        let key = (series.to_string(), n);
        self.awaiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), waiters);
        // It may have been committed before we registered (a fast sequencer).
        let done = {
            let st = self.state();
            st.index
                .writers
                .get(series)
                .is_some_and(|w| w.committed >= n)
        };
        if done {
            // The segment is applied: find its offsets again from the index.
            self.answer_from_index(&key);
        }
    }

    /// Answer waiters of a batch whose committing segment was applied before they were
    /// registered: find it among the cached segments.
    fn answer_from_index(&self, key: &(String, u64)) {
        let seg = {
            let st = self.state();
            st.cache
                .map
                .values()
                .find(|s| {
                    s.header
                        .refs
                        .iter()
                        .any(|r| r.writer == key.0 && r.n == key.1)
                })
                .cloned()
        };
        if let Some(seg) = seg {
            self.answer_refs(&seg);
        } else if let Some(waiters) = self
            .awaiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
        {
            // Committed, but the segment is no longer cached: durable, offsets unknown here.
            for w in waiters {
                if let Some(d) = w.durable {
                    let _ = d.send(Ok(()));
                }
                let _ = w.offset.send(Err(LogError::Conflict(
                    "the batch was committed; its segment is no longer cached".into(),
                )));
            }
        }
    }

    /// The apply hook: answer the appenders of our batches this segment commits.
    fn answer_refs(&self, seg: &Segment) {
        if seg.header.refs.is_empty() {
            return;
        }
        let own = self.own_series();
        // A commit of our batch says the sequencer looks at this writer if someone else made
        // it, or if we made it while another process holds the role: the holder applies our
        // commit (it must, to number its next segment), which makes it poll us from then on,
        // and a holder that takes over later looks at every writer in the index.
        let by_other = seg.header.writer != self.committer
            || self
                .role
                .other_holder_within(self.settings.sequencer_ttl / 2);
        let mut seen_own = false;
        for r in &seg.header.refs {
            seen_own |= r.writer == own && by_other;
            self.role.saw_writer(&r.writer);
            let waiters = self
                .awaiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(r.writer.clone(), r.n));
            for w in waiters.into_iter().flatten() {
                if let Some(d) = w.durable {
                    let _ = d.send(Ok(()));
                }
                let _ = w.offset.send(match r.streams.get(&w.stream) {
                    Some(p) => Ok(Offset(p.first_offset + w.pos as u64)),
                    None => Err(LogError::Closed),
                });
            }
        }
        if seen_own {
            self.own_lock().last_commit_seen = Some(Instant::now());
        }
    }

    /// The segment `seq`, from the cache or the store; `None` if it does not exist.
    pub(crate) async fn load_segment(&self, seq: u64) -> Result<Option<Arc<Segment>>> {
        if let Some(seg) = self.state().cache.map.get(&seq) {
            return Ok(Some(seg.clone()));
        }
        let path = paths::segment(seq);
        let Some(seg) = self.fetch(&path).await? else {
            return Ok(None);
        };
        let seg = Arc::new(seg);
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

    /// GET and decode the segment or batch object at `path`; `None` if it does not exist.
    async fn fetch(&self, path: &object_store::path::Path) -> Result<Option<Segment>> {
        let bytes = match get_bytes(self.store.object_store.as_ref(), &self.settings, path).await {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(LogError::store(path, e)),
        };
        segment::decode(bytes)
            .map(Some)
            .map_err(|e| LogError::format(path, e))
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
        st.cache.insert(seq, seg.clone());
        drop(st);
        if seg.header.writer != self.committer {
            *self
                .others_committed
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        self.answer_refs(seg);
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
    pub(crate) async fn poll(self: &Arc<Self>) -> Result<()> {
        self.poll_every(self.settings.poll_interval).await
    }

    /// [`Shared::poll`] for a reader that polls every `interval`.
    pub(crate) async fn poll_every(self: &Arc<Self>, interval: Duration) -> Result<()> {
        self.refresh_unless_within(interval / 2).await.map(|_| ())?;
        self.check_role();
        Ok(())
    }

    /// Readers keep the log sequenced when its writers cannot: every `sequencer_ttl`, a
    /// process that waits for records and is not the sequencer takes the role if it is free
    /// and other writers were active within [`WRITER_ACTIVE`] (their acknowledged batches may
    /// wait for a commit: their sequencer died, then they did). Nothing is asked of the
    /// store when no other writer is active (one adapter, or idle ones).
    fn check_role(self: &Arc<Self>) {
        if self.is_sequencer() {
            return;
        }
        {
            let mut last = self.role_check.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < self.settings.sequencer_ttl) {
                return;
            }
            *last = Some(Instant::now());
        }
        let since = self.clock.now_ms() - WRITER_ACTIVE.as_millis() as i64;
        let own = self.own_series();
        let active = self.index_snapshot(|i| {
            i.writers
                .iter()
                .any(|(w, idx)| *w != own && idx.last_ms >= since)
        });
        if active {
            self.clone().try_become_sequencer_soon();
        }
    }

    async fn refresh_unless_within(&self, recent: Duration) -> Result<u64> {
        let mut last = self.refresh_lock.lock().await;
        if !recent.is_zero() && last.is_some_and(|at| at.elapsed() < recent) {
            return Ok(self.next_seq() - 1);
        }
        *last = Some(std::time::Instant::now());
        // Look for one segment, then — while the segments found are older than an interval,
        // so that more are likely behind them — for as many at once as were found so far (at
        // most READ_AHEAD): a process behind by many segments catches up in a few request
        // latencies. Near the head (the newest found was written within the interval) it
        // asks for one at a time, as a segment that does not exist yet costs a request too.
        let near = self
            .settings
            .poll_interval
            .max(self.flush_interval)
            .as_millis() as i64;
        let mut found = 0usize;
        let mut behind = false;
        loop {
            let next = self.next_seq();
            let window = if behind {
                found.clamp(1, crate::read::READ_AHEAD) as u64
            } else {
                1
            };
            let looks =
                futures::future::join_all((next..next + window).map(|s| self.load_segment(s)))
                    .await;
            for (i, look) in looks.into_iter().enumerate() {
                match look? {
                    Some(seg) => {
                        behind = self.clock.now_ms().saturating_sub(seg.header.created_ms) > near;
                        self.apply(&seg)?;
                        found += 1;
                    }
                    None if i == 0 => {
                        // A stale view may be missing a segment because garbage collection
                        // deleted it, not because it was never written: catch up from a
                        // checkpoint first.
                        if self.view_is_stale() && self.reload_from_checkpoint(next).await? {
                            break;
                        }
                        self.mark_fresh();
                        return Ok(next - 1);
                    }
                    // The newest segment; any found after it was written meanwhile (it is
                    // cached: the next refresh applies it without asking).
                    None => {
                        self.mark_fresh();
                        return Ok(self.next_seq() - 1);
                    }
                }
            }
        }
    }

    pub(crate) fn mark_fresh(&self) {
        *self.fresh_at.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    /// Whether the index was confirmed at the head of the log within `within`.
    pub(crate) fn fresh_within(&self, within: Duration) -> bool {
        self.fresh_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            < within
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
        let snapshot = {
            let mut st = self.state();
            // Which segments committed which batches matters only while some stream reads
            // them: forget the rest here too, so the list does not grow for ever.
            let referenced = st.index.referenced_segments();
            for w in st.index.writers.values_mut() {
                w.segments.retain(|s| referenced.contains(&s[0]));
            }
            st.index.clone()
        };
        let mut snapshot = snapshot;
        // A view loaded from an older checkpoint is written as the current version.
        snapshot.version = <Checkpoint as json::Versioned>::VERSION;
        // Writers idle for a day are forgotten (a writer idle for `WRITER_ACTIVE` starts a
        // new series before it writes again, so none of them comes back).
        snapshot.prune_writers(self.clock.now_ms() - 24 * 3600 * 1000);
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
