//! The group-commit writer: one task per log handle turns queued appends (for any number of
//! streams) into one segment per flush, and answers each appender only once the segment's
//! object write has succeeded.
//!
//! Commit protocol (see `log/README.md`): the next segment number is `index.segment_seq + 1`.
//! The writer creates `segments/<n>` with `PutMode::Create`. If the key is taken, it reads the
//! object back: its own bytes mean an earlier attempt landed (the response was lost); anyone
//! else's segment is applied to the index and the batch is re-encoded with fresh offsets at
//! `n + 1`.

use std::{collections::BTreeMap, sync::Arc};

use bytes::{Bytes, BytesMut};

use tokio::{
    sync::{OwnedSemaphorePermit, mpsc, oneshot},
    time::Instant,
};
use uuid::Uuid;
use wharf_log_format::{
    Offset, Record, StoredRecord, StreamId,
    segment::{self, Segment, SegmentHeader},
};

use crate::{
    LogError, Result,
    log::Shared,
    paths,
    store::{Created, create},
};

pub(crate) enum Request {
    Append {
        stream: StreamId,
        records: Vec<Record>,
        reply: oneshot::Sender<Result<Offset>>,
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
}

impl Request {
    pub fn append(
        stream: StreamId,
        records: Vec<Record>,
        reply: oneshot::Sender<Result<Offset>>,
        budget: OwnedSemaphorePermit,
    ) -> Self {
        Request::Append {
            stream,
            records,
            reply,
            enqueued: Instant::now(),
            budget,
        }
    }

    pub fn trim(trims: BTreeMap<StreamId, Offset>, reply: oneshot::Sender<Result<Offset>>) -> Self {
        Request::Trim {
            trims,
            reply,
            enqueued: Instant::now(),
        }
    }

    fn enqueued(&self) -> Instant {
        match self {
            Request::Append { enqueued, .. } | Request::Trim { enqueued, .. } => *enqueued,
        }
    }
}

/// One flush being assembled.
#[derive(Default)]
struct Batch {
    groups: BTreeMap<StreamId, Vec<Record>>,
    trims: BTreeMap<StreamId, Offset>,
    /// Who to answer: the stream (None for trims) and the position in its group.
    replies: Vec<(Option<StreamId>, usize, oneshot::Sender<Result<Offset>>)>,
    bytes: usize,
    /// The appends' shares of the pending-bytes budget: released when the batch is done.
    budget: Vec<OwnedSemaphorePermit>,
}

impl Batch {
    fn push(&mut self, req: Request) {
        match req {
            Request::Append {
                stream,
                records,
                reply,
                budget,
                ..
            } => {
                self.budget.push(budget);
                let group = self.groups.entry(stream.clone()).or_default();
                self.replies.push((Some(stream), group.len(), reply));
                self.bytes += records.iter().map(Record::size).sum::<usize>();
                group.extend(records);
            }
            Request::Trim { trims, reply, .. } => {
                for (s, o) in trims {
                    let t = self.trims.entry(s).or_default();
                    *t = (*t).max(o);
                }
                self.replies.push((None, 0, reply));
            }
        }
    }

    fn fail(self, err: &LogError) {
        for (_, _, reply) in self.replies {
            let _ = reply.send(Err(copy_error(err)));
        }
    }
}

/// Errors are not `Clone` (they hold sources); every waiter gets one with the same kind.
fn copy_error(err: &LogError) -> LogError {
    LogError::Batch {
        kind: err.kind(),
        message: err.to_string(),
    }
}

pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Request>) {
    let mut last_flush: Option<Instant> = None;
    while let Some(first) = rx.recv().await {
        // Wait for the linger, and for the flush interval since the last flush began.
        let deadline = (first.enqueued() + shared.linger)
            .max(last_flush.map_or(first.enqueued(), |t| t + shared.flush_interval));
        let mut batch = Batch::default();
        batch.push(first);
        let mut open = true;
        while batch.bytes < shared.settings.max_segment_bytes {
            match rx.try_recv() {
                Ok(req) => {
                    batch.push(req);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                req = rx.recv() => match req {
                    Some(req) => batch.push(req),
                    None => { open = false; break; }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        last_flush = Some(Instant::now());
        commit(&shared, batch).await;
        if !open {
            break;
        }
        // Checkpoints are written off the append path: a flush never waits for one.
        if shared.checkpoint_due() {
            let shared = shared.clone();
            tokio::spawn(async move { shared.write_checkpoint().await });
        }
    }
}

async fn commit(shared: &Shared, batch: Batch) {
    let commit_id = Uuid::new_v4();
    let mut last = None;
    let streams: Vec<StreamId> = batch.groups.keys().cloned().collect();
    let created = create_next(shared, &streams, |seq, heads| {
        let firsts: BTreeMap<StreamId, Offset> =
            heads.iter().map(|(s, h)| (s.clone(), Offset(*h))).collect();
        let header = SegmentHeader {
            seq,
            commit_id,
            writer: shared.writer_id.clone(),
            created_ms: shared.clock.now_ms(),
            trims: batch.trims.clone(),
            compacts: Default::default(),
        };
        let bytes = segment::encode(
            &header,
            batch
                .groups
                .iter()
                .map(|(s, recs)| (s, firsts[s], recs.as_slice())),
        )
        .map_err(|e| LogError::format(&paths::segment(seq), e))?;
        last = Some((header, firsts, bytes.len()));
        Ok(bytes)
    })
    .await;
    let (seq, (header, firsts, size)) = match (created, last) {
        (Ok(seq), Some(last)) => (seq, last),
        (Err(e), _) => return batch.fail(&e),
        (Ok(_), None) => return batch.fail(&LogError::Closed),
    };
    let seg = Arc::new(into_segment(header, &batch.groups, &firsts, size));
    if let Err(e) = shared.apply(&seg) {
        // Our own segment does not follow the index: someone broke the protocol.
        tracing::error!(seq, error = %e, "own segment does not apply");
        return batch.fail(&e);
    }
    for (stream, pos, reply) in batch.replies {
        let offset = match stream {
            Some(s) => Offset(firsts[&s].0 + pos as u64),
            None => Offset(seq),
        };
        let _ = reply.send(Ok(offset));
    }
}

/// Create the next segment. `encode(seq, heads)` builds it for number `seq`, given the next
/// offset of each of `streams` as of segment `seq - 1`. If another writer took the number,
/// its segment is applied and `encode` is called again for the following one. Returns the
/// number of the segment created; the caller applies it. See the module docs.
pub(crate) async fn create_next(
    shared: &Shared,
    streams: &[StreamId],
    mut encode: impl FnMut(u64, &BTreeMap<StreamId, u64>) -> Result<bytes::Bytes>,
) -> Result<u64> {
    // Never pick a segment number from a view that garbage collection may have overtaken.
    if shared.view_is_stale() {
        shared.refresh().await?;
    }
    loop {
        let (seq, heads) = shared.index_snapshot(|index| {
            let heads = streams
                .iter()
                .map(|s| (s.clone(), index.stream(s).map_or(0, |i| i.next_offset)))
                .collect();
            (index.next_seq(), heads)
        });
        let bytes = encode(seq, &heads)?;
        let path = paths::segment(seq);
        match create(
            shared.store.object_store.as_ref(),
            &shared.settings,
            &path,
            bytes,
        )
        .await
        {
            Ok(Created::Ours) => {
                shared.mark_fresh();
                return Ok(seq);
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

/// Build the decoded form of a segment we just wrote, without decoding it.
///
/// The records' bytes are copied into one buffer of the segment's own: as appended they are
/// often slices of a connection's read buffer, and a cached segment holding those would keep
/// every read buffer they came from alive — memory the cache's budget does not see (measured:
/// 66 MB of read buffers behind a 64 MiB cache of 1 KiB messages).
fn into_segment(
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
        for (i, r) in recs.iter().enumerate() {
            let key = r.key.as_ref().map(|k| take(k.len()));
            let headers = r.headers.as_ref().map(|h| take(h.len()));
            records.push(StoredRecord {
                stream: stream.clone(),
                offset: Offset(firsts[stream].0 + i as u64),
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
