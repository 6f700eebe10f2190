//! The writer: one task per log handle turns queued appends (for any number of streams) into
//! flushes, and answers each appender once its records are durable.
//!
//! Data is split from ordering (see `log/README.md`, "Commit protocol"):
//! - The **sequencer** (the process holding the lease `log-sequencer`) commits: it writes
//!   the numbered segments. Its own appends go into the segment inline; batch objects other
//!   writers made durable are committed by reference (`wharf.batches`), in each writer's
//!   order. Creating segment `n` with `PutMode::Create` is the compare-and-swap on the whole
//!   history: whoever loses reads the winner, drops what the winner already committed, and
//!   tries `n + 1`.
//! - Every **other writer** puts each flush under a name only it writes
//!   (`batches/<writer>/<n>`), several at once, and acknowledges them in order when their PUTs
//!   return: no race, no waiting for the order. The sequencer finds the batches by polling and
//!   commits them; a batch that waits longer than `commit_timeout` (the sequencer died, or
//!   does not know this writer yet) is committed by its own writer, the same way.

use std::{
    collections::{BTreeMap, VecDeque},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesOrdered};
use tokio::{
    sync::{OwnedSemaphorePermit, mpsc, oneshot},
    time::Instant,
};
use uuid::Uuid;
use wharf_log_format::{
    Offset, Record, StoredRecord, StreamId,
    segment::{self, BatchRef, RefStream, Segment, SegmentHeader},
};

use crate::{
    LogError, Result,
    log::{Shared, WRITER_ACTIVE, Waiter},
    paths,
    store::{Created, create, create_as},
};

pub(crate) enum Request {
    Append {
        stream: StreamId,
        records: Vec<Record>,
        /// Answered once the records are durable.
        durable: oneshot::Sender<Result<()>>,
        /// Answered once they have offsets (committed into the numbered series).
        offset: oneshot::Sender<Result<Offset>>,
        /// The caller waits for the offsets: a writer that is not the sequencer commits the
        /// batch itself at once rather than wait for the sequencer to find it.
        urgent: bool,
        enqueued: Instant,
        /// The records' share of `max_pending_bytes`, given back once they are durable (or
        /// failed).
        budget: OwnedSemaphorePermit,
    },
    Trim {
        trims: BTreeMap<StreamId, Offset>,
        reply: oneshot::Sender<Result<Offset>>,
        enqueued: Instant,
    },
    /// Commit, now, every batch any writer acknowledged before this request (see [`barrier`]).
    Barrier {
        reply: oneshot::Sender<Result<Offset>>,
        enqueued: Instant,
    },
}

impl Request {
    fn enqueued(&self) -> Instant {
        match self {
            Request::Append { enqueued, .. }
            | Request::Trim { enqueued, .. }
            | Request::Barrier { enqueued, .. } => *enqueued,
        }
    }
}

enum Reply {
    Append {
        stream: StreamId,
        pos: usize,
        durable: oneshot::Sender<Result<()>>,
        offset: oneshot::Sender<Result<Offset>>,
    },
    Trim(oneshot::Sender<Result<Offset>>),
}

/// One flush being assembled.
#[derive(Default)]
struct Batch {
    groups: BTreeMap<StreamId, Vec<Record>>,
    trims: BTreeMap<StreamId, Offset>,
    replies: Vec<Reply>,
    bytes: usize,
    urgent: bool,
    /// Holds a trim or a barrier: committed as a segment, never put as a batch object.
    commit_now: bool,
    /// The appends' shares of the pending-bytes budget: released when the batch is durable.
    budget: Vec<OwnedSemaphorePermit>,
    first_enqueued: Option<Instant>,
}

impl Batch {
    fn push(&mut self, req: Request) {
        self.first_enqueued.get_or_insert(req.enqueued());
        match req {
            Request::Append {
                stream,
                records,
                durable,
                offset,
                urgent,
                budget,
                ..
            } => {
                self.budget.push(budget);
                self.urgent |= urgent;
                let group = self.groups.entry(stream.clone()).or_default();
                self.replies.push(Reply::Append {
                    stream,
                    pos: group.len(),
                    durable,
                    offset,
                });
                self.bytes += records.iter().map(Record::size).sum::<usize>();
                group.extend(records);
            }
            Request::Trim { trims, reply, .. } => {
                for (s, o) in trims {
                    let t = self.trims.entry(s).or_default();
                    *t = (*t).max(o);
                }
                self.commit_now = true;
                self.replies.push(Reply::Trim(reply));
            }
            Request::Barrier { reply, .. } => {
                self.commit_now = true;
                self.urgent = true;
                self.replies.push(Reply::Trim(reply));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    fn fail(self, err: &LogError) {
        for r in self.replies {
            match r {
                Reply::Append {
                    durable, offset, ..
                } => {
                    let _ = durable.send(Err(copy_error(err)));
                    let _ = offset.send(Err(copy_error(err)));
                }
                Reply::Trim(reply) => {
                    let _ = reply.send(Err(copy_error(err)));
                }
            }
        }
    }
}

/// Errors are not `Clone` (they hold sources); every waiter gets one with the same kind.
pub(crate) fn copy_error(err: &LogError) -> LogError {
    LogError::Batch {
        kind: err.kind(),
        message: err.to_string(),
    }
}

/// A batch object of ours that is durable and not yet known to be committed.
struct Own {
    series: String,
    n: u64,
    seg: Arc<Segment>,
    durable_at: Instant,
    /// An appender waits for the offset: commit with a barrier (see [`barrier`]).
    urgent: bool,
}

/// A batch object PUT in flight.
struct Put {
    series: String,
    n: u64,
    seg: Arc<Segment>,
    batch: Batch,
}

type PutFuture = Pin<Box<dyn Future<Output = (Put, Result<()>)> + Send>>;

struct Committed {
    batch: Batch,
    result: Result<Option<(u64, BTreeMap<StreamId, Offset>)>>,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Request>,
    mut remote_rx: mpsc::UnboundedReceiver<Arc<Segment>>,
) {
    let settings = shared.settings.clone();
    let mut open = true;
    let mut batch = Batch::default();
    let mut last_flush: Option<Instant> = None;
    let mut last_commit: Option<Instant> = None;
    let mut puts: FuturesOrdered<PutFuture> = FuturesOrdered::new();
    let mut commit: Option<BoxFuture<'static, Committed>> = None;
    // The commit in flight carries records of ours inline: nothing later of ours may be put
    // as a batch object until it is done (someone else could commit that batch first).
    let mut inline_in_flight = false;
    let mut refresh: Option<BoxFuture<'static, ()>> = None;
    // Batch objects found by the sequencer's poller (other writers'), by writer and number.
    let mut remote: BTreeMap<(String, u64), Arc<Segment>> = BTreeMap::new();
    let mut own: VecDeque<Own> = VecDeque::new();
    // The highest batch of each of our series that is durable: whatever of it is not known to
    // be committed is pending, whether or not `own` still holds it (see the tick).
    // (Shared with `Log::settle`, which waits for them to be committed.)
    let mut durable_upto: BTreeMap<String, u64> = BTreeMap::new();
    // A PUT failed: the in-flight batches after it may not be acknowledged (order), and the
    // series continues under a new name (its number may or may not exist).
    let mut broken_series: Option<String> = None;
    // How often a writer with batches waiting looks for their commit (and its timeouts).
    let mut tick = tokio::time::interval(settings.poll_interval.max(shared.flush_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tried_role = false;
    let mut ticks = 0u64;
    loop {
        let sequencer = shared.is_sequencer();
        // Forget our batches the index says are committed (the apply hook answered them).
        own.retain(|o| o.n > shared.committed_of(&o.series));
        durable_upto.retain(|series, n| *n > shared.committed_of(series));
        shared.set_pending(&durable_upto);
        remote.retain(|(w, n), _| *n > shared.committed_of(w));
        // At most one commit per half flush interval: the sequencer's segments are requests
        // like any writer's flushes (and every other process reads each one), and a found batch
        // waits for the next slot — half an interval at most, a quarter on average (with a
        // whole interval, the slot was the largest part of making another writer's records
        // visible). Committing every found batch at once cost ~25 % more requests per writer
        // when readers also fetched each batch object (see log/README.md); segments now carry
        // the batches' rows.
        // Half an interval while batches of two writers or more wait (under load); a whole one
        // for a lone found batch (a trickle), so that a trickle is not a segment per batch.
        // Something to commit besides the inline batch: batches that continue their series.
        let continues = |w: &str, n: u64| n == shared.committed_of(w) + 1;
        let waiting = remote.keys().filter(|(w, n)| continues(w, *n)).count();
        let slot = if waiting >= 2 {
            shared.flush_interval / 2
        } else {
            shared.flush_interval
        };
        let interval_ok = last_commit.is_none_or(|t| t.elapsed() >= slot);
        // Someone else sequences this log: we applied their segments lately, or — when this
        // process does not follow the log, so it cannot tell — we found the lease held lately.
        // Our pending batches are then theirs to commit. Not a lease alone when an appender
        // waits for an offset (`Pending::committed`: it wants the commit, not a promise of it)
        // or when this process follows the log and sees no commits (a killed holder's lease
        // holds until it expires).
        shared.prune_awaiting();
        let waited_on = shared.has_uncommitted();
        let following = shared.fresh_within(settings.commit_timeout);
        let trusted = open
            && (shared.others_committed_within(settings.commit_timeout)
                || (!waited_on
                    && !following
                    && shared.role.other_holder_within(settings.sequencer_ttl)));
        let commit_reason = commit.is_none()
            && if sequencer {
                puts.is_empty()
                    && (remote.keys().any(|(w, n)| continues(w, *n)) || !durable_upto.is_empty())
            } else {
                // A batch an appender waits on the offset of is committed at once. Any other
                // is left to the sequencer while someone sequences (a new writer is found by a
                // listing of `batches/`, then in its rhythm); otherwise one that waited
                // `commit_timeout` is committed by us.
                let timeout = settings.commit_timeout;
                own.iter().any(|o| o.urgent)
                    || pending_age(&own, &durable_upto, &shared)
                        .into_iter()
                        // `None`: forgotten here because someone was sequencing.
                        .any(|waited| !trusted && waited.is_none_or(|w| w >= timeout))
            };
        let wants_commit = commit_reason && interval_ok;
        let deadline = match batch.first_enqueued {
            Some(first) if !batch.is_empty() => Some(
                (first + shared.linger)
                    .max(last_flush.map_or(first, |t| t + shared.flush_interval)),
            ),
            _ => None,
        };
        let full = batch.bytes >= settings.max_segment_bytes;
        let can_put = !sequencer
            && !inline_in_flight
            && !batch.commit_now
            && puts.len() < settings.max_flushes_in_flight
            && broken_series.is_none();
        // The sequencer commits its own records inline, once its batches from before it took
        // the role are durable (they get the earlier offsets); trims are commits anywhere.
        let inline_ok = commit.is_none() && ((sequencer || batch.commit_now) && puts.is_empty());
        let flush_now = !batch.is_empty()
            && deadline.is_some_and(|d| full || d <= Instant::now())
            && (can_put || inline_ok);
        if flush_now || wants_commit {
            let take = flush_now && inline_ok;
            if flush_now {
                last_flush = Some(Instant::now());
            }
            if flush_now && !take {
                let b = std::mem::take(&mut batch);
                puts.push_back(put_batch(shared.clone(), b));
            } else {
                // Both ways here (an inline flush, a wanted commit) need no commit in flight.
                last_commit = Some(Instant::now());
                // A commit: our inline batch (sequencer, or a trim), our durable batches
                // not yet committed, and (sequencer) the batches found for other writers.
                let inline = if take {
                    std::mem::take(&mut batch)
                } else {
                    Batch::default()
                };
                let mut barrier = inline.urgent || own.iter().any(|o| o.urgent);
                let mut candidates: Vec<Arc<Segment>> = own.iter().map(|o| o.seg.clone()).collect();
                let pending: Vec<(String, u64)> =
                    durable_upto.iter().map(|(s, n)| (s.clone(), *n)).collect();
                if sequencer {
                    candidates.extend(remote.values().cloned());
                    barrier |= remote.values().any(|r| r.header.barrier);
                } else {
                    // Committing our own: make sure someone is sequencing.
                    shared.clone().try_become_sequencer_soon();
                }
                inline_in_flight = !inline.groups.is_empty();
                tracing::trace!(
                    sequencer,
                    trusted,
                    waited_on,
                    barrier,
                    own = own.len(),
                    "commit"
                );
                commit = Some(
                    commit_batches(shared.clone(), inline, candidates, pending, barrier).boxed(),
                );
            }
            continue;
        }
        let sleep_until = deadline
            .filter(|_| can_put || inline_ok)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let wait_interval = last_commit
            .map(|t| t + slot)
            .filter(|_| commit_reason && !interval_ok);
        tokio::select! {
            Some((put, result)) = puts.next(), if !puts.is_empty() => {
                match result {
                    Ok(()) if broken_series.as_ref() != Some(&put.series) => {
                        let upto = durable_upto.entry(put.series.clone()).or_default();
                        *upto = (*upto).max(put.n);
                        shared.set_pending(&durable_upto);
                        own.push_back(Own {
                            series: put.series.clone(),
                            n: put.n,
                            seg: put.seg.clone(),
                            durable_at: Instant::now(),
                            urgent: put.batch.urgent,
                        });
                        answer_durable_batch(&shared, put);
                    }
                    Ok(()) => put.batch.fail(&LogError::Batch {
                        kind: crate::ErrorKind::Unavailable,
                        message: "an earlier batch of this writer failed to be stored".into(),
                    }),
                    Err(e) => {
                        tracing::warn!(series = %put.series, n = put.n, error = %e, "batch write failed; continuing under a new series");
                        put.batch.fail(&e);
                        if broken_series.is_none() {
                            broken_series = Some(put.series.clone());
                        }
                    }
                }
                if puts.is_empty() && let Some(old) = broken_series.take() {
                    // Our batches of the old series that are durable stay in `own` and are
                    // committed; the rest of it is never committed.
                    shared.rotate_series(&old);
                }
            }
            done = async { match commit.as_mut() { Some(c) => c.await, None => std::future::pending().await } }, if commit.is_some() => {
                commit = None;
                inline_in_flight = false;
                let Committed { batch: b, result } = done;
                match result {
                    Ok(Some((seq, firsts))) => answer_inline(b, seq, &firsts),
                    Ok(None) => answer_inline(b, 0, &BTreeMap::new()),
                    Err(e) => b.fail(&e),
                }
                if shared.checkpoint_due() {
                    let shared = shared.clone();
                    tokio::spawn(async move { shared.write_checkpoint().await });
                }
            }
            req = rx.recv(), if open && !full => match req {
                Some(req) => {
                    if !tried_role {
                        // The first append: take the sequencer role if it is free, so that
                        // a lone process commits inline from its first flush.
                        tried_role = true;
                        shared.try_become_sequencer().await;
                    }
                    shared.touch();
                    batch.push(req);
                }
                None => open = false,
            },
            Some(seg) = remote_rx.recv() => {
                let key = (seg.header.writer.clone(), seg.header.seq);
                if key.1 > shared.committed_of(&key.0) {
                    remote.insert(key, seg);
                }
            }
            () = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {}
            () = async { match wait_interval { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } }, if wait_interval.is_some() => {}
            () = async { match refresh.as_mut() { Some(r) => r.await, None => std::future::pending().await } }, if refresh.is_some() => {
                refresh = None;
            }
            _ = tick.tick() => {
                // Learning that our batches were committed means reading every segment, a
                // request each: done while something needs it — an appender waits on an offset,
                // a reader settles (`Log::settle`), `own` grows large (a busy writer: the cost is
                // spread over many records), nobody is known to sequence, or the handle closes.
                // A writer that only writes, at a trickle, asks the store for its puts and, every
                // half lease TTL, for the sequencer's lease.
                ticks += 1;
                let own_bytes: usize = own.iter().map(|o| o.seg.size).sum();
                let due = own.iter().any(|o| o.urgent)
                    || waited_on
                    || shared.settling()
                    || own_bytes > OWN_MEMORY
                    || (!trusted && ticks.is_multiple_of(2));
                if refresh.is_none() && !durable_upto.is_empty() && due {
                    tracing::trace!(
                        waited_on,
                        trusted,
                        settling = shared.settling(),
                        own_bytes,
                        "writer follows the log"
                    );
                    let shared = shared.clone();
                    refresh = Some(async move {
                        if let Err(e) = shared.poll().await {
                            tracing::debug!(error = %e, "refresh failed");
                        }
                    }.boxed());
                }
                if trusted {
                    // The store has them; whoever commits them reads them there.
                    own.retain(|o| o.urgent || o.durable_at.elapsed() < 2 * WRITER_ACTIVE);
                }
                let waiting = pending_age(&own, &durable_upto, &shared)
                    .into_iter()
                    .any(|w| w.is_none_or(|w| w >= settings.commit_timeout));
                if !sequencer && waiting {
                    // Keeps `trusted` true while a sequencer holds the lease, and takes the
                    // role when nobody does (at most once per half lease TTL).
                    shared.clone().try_become_sequencer_soon();
                }
            }
        }
        if !open
            && batch.is_empty()
            && puts.is_empty()
            && commit.is_none()
            && durable_upto.is_empty()
        {
            break;
        }
    }
    shared.step_down();
}

/// Data of our pending batches kept in memory (for committing them ourselves without reading
/// them back) before the writer reads the segments to learn which are committed.
const OWN_MEMORY: usize = 16 << 20;

/// For each of our series with pending batches: how long its first pending batch has waited
/// (`None`: `own` no longer holds it, it waited long).
fn pending_age(
    own: &VecDeque<Own>,
    durable_upto: &BTreeMap<String, u64>,
    shared: &Shared,
) -> Vec<Option<Duration>> {
    durable_upto
        .keys()
        .map(|series| {
            let first = shared.committed_of(series) + 1;
            own.iter()
                .find(|o| o.series == *series && o.n == first)
                .map(|o| o.durable_at.elapsed())
        })
        .collect()
}

/// Encode a flush as a batch object of this writer's series and put it.
fn put_batch(shared: Arc<Shared>, batch: Batch) -> PutFuture {
    let (series, n) = shared.next_batch_number();
    // Offsets count from 0 in a batch object: `into_segment` with no first offsets.
    let zero = BTreeMap::new();
    let header = SegmentHeader {
        seq: n,
        commit_id: Uuid::new_v4(),
        writer: series.clone(),
        created_ms: shared.clock.now_ms(),
        batch: true,
        barrier: batch.urgent,
        ..Default::default()
    };
    async move {
        let encoded = segment::encode(
            &header,
            batch
                .groups
                .iter()
                .map(|(s, recs)| (s, Offset(0), recs.as_slice())),
        );
        let path = paths::batch(&series, n);
        let bytes = match encoded {
            Ok(b) => b,
            Err(e) => {
                let seg = Arc::new(into_segment(header, &batch.groups, &zero, 0));
                let put = Put {
                    series,
                    n,
                    seg,
                    batch,
                };
                return (put, Err(LogError::format(&path, e)));
            }
        };
        let seg = Arc::new(into_segment(header, &batch.groups, &zero, bytes.len()));
        let result = match create(
            shared.store.object_store.as_ref(),
            &shared.settings,
            &path,
            bytes,
        )
        .await
        {
            Ok(Created::Ours) => {
                // Cached only once stored: a cached batch counts as existing (a process that
                // later sweeps this series, after it was abandoned, must not commit a batch
                // whose PUT failed).
                shared.remember_batch(seg.clone());
                Ok(())
            }
            Ok(Created::Theirs(_)) => Err(LogError::format(
                &path,
                wharf_log_format::FormatError::Corrupt {
                    what: "batch",
                    detail: "another writer wrote under this writer's name".into(),
                },
            )),
            Err(e) => Err(e),
        };
        (
            Put {
                series,
                n,
                seg,
                batch,
            },
            result,
        )
    }
    .boxed()
}

/// A batch object is durable: answer its appenders now, and their offsets once it is committed
/// (for those who still wait for them).
fn answer_durable_batch(shared: &Shared, put: Put) {
    let Put {
        series, n, batch, ..
    } = put;
    let mut waiters = Vec::new();
    for r in batch.replies {
        if let Reply::Append {
            stream,
            pos,
            durable,
            offset,
        } = r
        {
            let _ = durable.send(Ok(()));
            if !offset.is_closed() {
                waiters.push(Waiter {
                    stream,
                    pos,
                    durable: None,
                    offset,
                });
            }
        }
    }
    drop(batch.budget);
    if !waiters.is_empty() {
        shared.await_commit(&series, n, waiters);
    }
}

fn answer_inline(batch: Batch, seq: u64, firsts: &BTreeMap<StreamId, Offset>) {
    for r in batch.replies {
        match r {
            Reply::Append {
                stream,
                pos,
                durable,
                offset,
            } => {
                let _ = durable.send(Ok(()));
                let _ = offset.send(match firsts.get(&stream) {
                    Some(f) => Ok(Offset(f.0 + pos as u64)),
                    None => Err(LogError::Closed),
                });
            }
            Reply::Trim(reply) => {
                let _ = reply.send(Ok(Offset(seq)));
            }
        }
    }
}

/// Commit into the numbered series: the inline batch, and those of `candidates` (batch
/// objects, in each writer's order) not committed yet. Returns the segment number and the
/// inline streams' first offsets, or `None` if there was nothing left to commit.
async fn commit_batches(
    shared: Arc<Shared>,
    batch: Batch,
    mut candidates: Vec<Arc<Segment>>,
    pending: Vec<(String, u64)>,
    barrier: bool,
) -> Committed {
    if barrier {
        candidates.extend(self::barrier(&shared).await);
    }
    // Our pending batches that memory no longer holds: read back, after catching up with the
    // log (those committed meanwhile are not read).
    let held = |series: &str, n: u64, c: &[Arc<Segment>]| {
        c.iter()
            .any(|s| s.header.writer == series && s.header.seq == n)
    };
    if pending.iter().any(|(series, upto)| {
        (shared.committed_of(series) + 1..=*upto).any(|n| !held(series, n, &candidates))
    }) {
        if let Err(e) = shared.refresh().await {
            tracing::debug!(error = %e, "could not catch up before committing our batches");
        }
        for (series, upto) in &pending {
            let first = shared.committed_of(series) + 1;
            for n in first..=*upto {
                if held(series, n, &candidates) {
                    continue;
                }
                match shared.load_batch(series, n).await {
                    Ok(Some(seg)) => candidates.push(seg),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%series, n, error = %e, "could not read back a batch of ours");
                        break;
                    }
                }
            }
        }
    }
    let commit_id = Uuid::new_v4();
    let mut last = None;
    let mut streams: Vec<StreamId> = batch.groups.keys().cloned().collect();
    let mut writers: Vec<String> = Vec::new();
    for c in &candidates {
        streams.extend(c.streams.iter().map(|(s, _)| s.clone()));
        if !writers.contains(&c.header.writer) {
            writers.push(c.header.writer.clone());
        }
    }
    streams.sort();
    streams.dedup();
    let created = create_next(&shared, &streams, &writers, false, |seq, view| {
        // The candidates each writer's series continues with, in order.
        let mut next: BTreeMap<&str, u64> = BTreeMap::new();
        let mut sorted: Vec<&Arc<Segment>> = candidates.iter().collect();
        sorted.sort_by(|a, b| {
            (&a.header.writer, a.header.seq).cmp(&(&b.header.writer, b.header.seq))
        });
        let mut heads = view.heads.clone();
        let mut refs = Vec::new();
        // The committed batches' rows go into the segment too (format version 3): readers
        // never fetch a batch object. Up to `max_segment_bytes` of them; a writer's batches
        // that do not fit wait for the next commit (with every later one of that writer).
        let mut rows: BTreeMap<StreamId, Vec<Record>> = BTreeMap::new();
        let mut room = shared
            .settings
            .max_segment_bytes
            .saturating_sub(batch.bytes);
        for c in sorted {
            let w = c.header.writer.as_str();
            let want = next
                .entry(w)
                .or_insert_with(|| view.committed.get(w).copied().unwrap_or(0) + 1);
            if c.header.seq != *want {
                continue;
            }
            let size: usize = c.records.iter().map(|r| r.record.size()).sum();
            if size > room && !refs.is_empty() {
                *want = u64::MAX;
                continue;
            }
            room = room.saturating_sub(size);
            *want += 1;
            let mut streams = BTreeMap::new();
            for summary in c.summaries() {
                let head = heads.entry(summary.stream.clone()).or_insert(0);
                streams.insert(summary.stream.clone(), RefStream::at(*head, &summary));
                *head += summary.count;
            }
            for (stream, range) in &c.streams {
                rows.entry(stream.clone())
                    .or_default()
                    .extend(c.records[range.clone()].iter().map(|r| r.record.clone()));
            }
            refs.push(BatchRef {
                writer: c.header.writer.clone(),
                n: c.header.seq,
                streams,
            });
        }
        if refs.is_empty() && batch.groups.is_empty() && batch.trims.is_empty() {
            // Nothing (left) to commit: a barrier that found everything committed already.
            return Ok(None);
        }
        // Where each stream starts in this segment, and where our own records start.
        let starts: BTreeMap<StreamId, Offset> = rows
            .keys()
            .chain(batch.groups.keys())
            .map(|s| (s.clone(), Offset(view.heads.get(s).copied().unwrap_or(0))))
            .collect();
        let firsts: BTreeMap<StreamId, Offset> = batch
            .groups
            .keys()
            .map(|s| (s.clone(), Offset(heads.get(s).copied().unwrap_or(0))))
            .collect();
        for (s, recs) in &batch.groups {
            rows.entry(s.clone())
                .or_default()
                .extend(recs.iter().cloned());
        }
        let header = SegmentHeader {
            seq,
            commit_id,
            writer: shared.committer.clone(),
            created_ms: shared.clock.now_ms(),
            trims: batch.trims.clone(),
            inline: !refs.is_empty(),
            refs,
            ..Default::default()
        };
        let bytes = segment::encode(
            &header,
            rows.iter().map(|(s, recs)| (s, starts[s], recs.as_slice())),
        )
        .map_err(|e| LogError::format(&paths::segment(seq), e))?;
        last = Some((header, firsts, bytes.len(), rows, starts));
        Ok(Some(bytes))
    })
    .await;
    let (seq, (header, firsts, size, rows, starts)) = match (created, last) {
        (Ok(Some(seq)), Some(last)) => (seq, last),
        (Ok(None), _) => {
            return Committed {
                batch,
                result: Ok(None),
            };
        }
        (Err(e), _) => {
            return Committed {
                batch,
                result: Err(e),
            };
        }
        (Ok(Some(_)), None) => {
            return Committed {
                batch,
                result: Err(LogError::Closed),
            };
        }
    };
    if tracing::enabled!(tracing::Level::TRACE) {
        for r in &header.refs {
            if let Some(c) = candidates
                .iter()
                .find(|c| c.header.writer == r.writer && c.header.seq == r.n)
            {
                // Clocks of different processes: a difference, not a duration.
                let after_ms = header.created_ms - c.header.created_ms;
                tracing::trace!(seq, writer = %r.writer, n = r.n, after_ms, "batch committed");
            }
        }
    }
    let seg = Arc::new(into_segment(header, &rows, &starts, size));
    if let Err(e) = shared.apply(&seg) {
        // Our own segment does not follow the index: someone broke the protocol.
        tracing::error!(seq, error = %e, "own segment does not apply");
        return Committed {
            batch,
            result: Err(e),
        };
    }
    Committed {
        batch,
        result: Ok(Some((seq, firsts))),
    }
}

/// The batches of other writers that are durable now and not committed, so that a commit
/// can put them first: what an appender that waits for its offset relies on.
///
/// Acknowledging a batch before it is ordered means two writers' batches are ordered by
/// when the sequencer finds them, not by when they became durable. That is harmless between
/// independent publishers, but not for a client that moves: an MQTT client acknowledged by
/// adapter X, reconnecting to adapter Y, must not have its next messages ordered before the
/// ones X acknowledged. Its CONNECT appends a takeover record and waits for its offset, and
/// that commit first reads every recently active writer's next batches (a writer answers
/// before the commit only while its batches were committed within [`WRITER_ACTIVE`] / 2, so
/// an older one has nothing acknowledged that waits) and commits them with it. Whatever was
/// acknowledged before the CONNECT is then ordered before whatever follows it.
///
/// The writers are those of the index as of the store's newest segment: it is read first. A
/// writer may answer before the commit once its own commit of an earlier batch was applied
/// (while another process held the role), so a committer whose view is older than that commit
/// would not know the writer at all.
///
/// [`WRITER_ACTIVE`]: crate::log::WRITER_ACTIVE
async fn barrier(shared: &Arc<Shared>) -> Vec<Arc<Segment>> {
    if let Err(e) = shared.refresh().await {
        tracing::warn!(error = %e, "barrier could not read the newest segments");
    }
    let own = shared.own_series();
    let now = shared.clock.now_ms();
    // A writer acknowledges its batches before they are committed whenever it writes; a
    // series idle for an hour is never written again (its writer starts a new one), so the
    // writers committed within two hours are all that may have acknowledged something.
    let since = now - 2 * 3600 * 1000;
    let (mut writers, known): (Vec<(String, u64)>, std::collections::HashSet<String>) = shared
        .index_snapshot(|i| {
            (
                i.writers
                    .iter()
                    .filter(|(w, idx)| **w != own && idx.last_ms >= since)
                    .map(|(w, idx)| (w.clone(), idx.committed + 1))
                    .collect(),
                i.writers.keys().cloned().collect(),
            )
        });
    // Writers answer their batches as soon as they are durable, so a new series has answered
    // batches before any is committed: the index does not know it, a listing of `batches/` does (it lists every batch PUT
    // that returned before it started, so everything acknowledged before this barrier).
    for w in crate::sequencer::discover(shared.store.object_store.as_ref()).await {
        if w != own && !known.contains(&w) {
            writers.push((w, 1));
        }
    }
    let too_old = now - crate::log::UNKNOWN_WRITER_MAX_AGE.as_millis() as i64;
    let looks = writers.into_iter().map(|(w, first)| {
        let shared = shared.clone();
        async move {
            let mut found = Vec::new();
            let mut n = first;
            loop {
                match shared.load_batch(&w, n).await {
                    Ok(Some(seg)) if n == 1 && seg.header.created_ms < too_old => {
                        tracing::debug!(writer = %w, "barrier skips a long-forgotten series");
                        break;
                    }
                    Ok(Some(seg)) => {
                        found.push(seg);
                        n += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(writer = %w, n, error = %e, "barrier could not read a batch");
                        break;
                    }
                }
            }
            found
        }
    });
    futures::future::join_all(looks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// What a committer needs to know of the index to encode segment `n`.
pub(crate) struct View {
    /// The next offset of each stream asked for.
    pub heads: BTreeMap<StreamId, u64>,
    /// How far each writer asked for is committed.
    pub committed: BTreeMap<String, u64>,
}

/// Create the next segment. `encode(seq, view)` builds it for number `seq`, given the index
/// as of segment `seq - 1`, or returns `None` when there is nothing (left) to commit. If
/// another writer took the number, its segment is applied and `encode` is called again for
/// the following one. Returns the number of the segment created; the caller applies it.
///
/// `own_file`: the segment should be a file of its own on the local filesystem (a compaction;
/// see [`crate::store::create_as`]).
pub(crate) async fn create_next(
    shared: &Shared,
    streams: &[StreamId],
    writers: &[String],
    own_file: bool,
    mut encode: impl FnMut(u64, &View) -> Result<Option<Bytes>>,
) -> Result<Option<u64>> {
    // Never pick a segment number from a view that garbage collection may have overtaken;
    // and catch up (reading ahead) with a view that is merely old — a writer that only writes
    // does not follow the log — rather than lose the race for each number on the way.
    let recent = 4 * shared.settings.poll_interval.max(shared.flush_interval);
    if shared.view_is_stale() || !shared.fresh_within(recent) {
        shared.refresh().await?;
    }
    loop {
        let (seq, view) = shared.index_snapshot(|index| {
            let heads = streams
                .iter()
                .map(|s| (s.clone(), index.stream(s).map_or(0, |i| i.next_offset)))
                .collect();
            let committed = writers
                .iter()
                .map(|w| (w.clone(), index.writers.get(w).map_or(0, |i| i.committed)))
                .collect();
            (index.next_seq(), View { heads, committed })
        });
        let Some(bytes) = encode(seq, &view)? else {
            return Ok(None);
        };
        let path = paths::segment(seq);
        match create_as(
            shared.store.object_store.as_ref(),
            &shared.settings,
            &path,
            bytes,
            own_file,
        )
        .await
        {
            Ok(Created::Ours) => {
                shared.mark_fresh();
                return Ok(Some(seq));
            }
            Ok(Created::Theirs(bytes)) => {
                let seg = segment::decode(bytes).map_err(|e| {
                    let e = LogError::format(&path, e);
                    tracing::error!(error = %e, "segment written by another writer is unreadable");
                    e
                })?;
                shared.cache(Arc::new(seg));
                shared.refresh().await?;
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "segment write failed");
                return Err(e);
            }
        }
    }
}

/// Build the decoded form of a segment or batch we just wrote, without decoding it.
///
/// The records' bytes are copied into one buffer of the segment's own: as appended they are
/// often slices of a connection's read buffer, and a cached segment holding those would keep
/// every read buffer they came from alive — memory the cache's budget does not see (measured:
/// 66 MB of read buffers behind a 64 MiB cache of 1 KiB messages).
pub(crate) fn into_segment(
    header: SegmentHeader,
    groups: &BTreeMap<StreamId, Vec<Record>>,
    firsts: &BTreeMap<StreamId, Offset>,
    size: usize,
) -> Segment {
    let total: usize = groups
        .values()
        .flatten()
        .map(|r| {
            r.payload.len()
                + r.key.as_ref().map_or(0, Bytes::len)
                + r.headers.as_ref().map_or(0, Bytes::len)
        })
        .sum();
    let mut own = BytesMut::with_capacity(total);
    for r in groups.values().flatten() {
        own.extend_from_slice(r.key.as_deref().unwrap_or_default());
        own.extend_from_slice(r.headers.as_deref().unwrap_or_default());
        own.extend_from_slice(&r.payload);
    }
    let mut own = own.freeze();
    let mut take = |n: usize| own.split_to(n);
    let mut records = Vec::with_capacity(groups.values().map(Vec::len).sum());
    let mut streams = BTreeMap::new();
    for (stream, recs) in groups {
        let start = records.len();
        let first = firsts.get(stream).map_or(0, |f| f.0);
        for (i, r) in recs.iter().enumerate() {
            let key = r.key.as_ref().map(|k| take(k.len()));
            let headers = r.headers.as_ref().map(|h| take(h.len()));
            records.push(StoredRecord {
                stream: stream.clone(),
                offset: Offset(first + i as u64),
                record: Record {
                    timestamp_ms: r.timestamp_ms,
                    key,
                    headers,
                    payload: take(r.payload.len()),
                },
            });
        }
        streams.insert(stream.clone(), start..records.len());
    }
    Segment {
        header,
        records,
        streams: streams.into_iter().collect(),
        size,
    }
}
