//! Reading: from an offset, from a time, and tailing.

use std::fmt;

use futures::StreamExt;
use tokio::sync::watch;
use wharf_log_format::{Offset, StoredRecord, StreamId};

use crate::{Log, Result};

/// Segments a reader fetches side by side (a read, a refresh catching up).
pub(crate) const READ_AHEAD: usize = 8;

impl Log {
    /// Up to `max` records of `stream` from `from` on (or from the stream's start, if `from`
    /// was trimmed). Empty when there is nothing at or after `from` yet.
    pub async fn read(
        &self,
        stream: &StreamId,
        from: Offset,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        let mut pos = from.0;
        while out.len() < max {
            // The next segments of the stream, as many as `max` records need (at most
            // READ_AHEAD), fetched side by side and used in order: a reader behind by many
            // small segments (one per batch another writer made) catches up in a few request
            // latencies, not one per segment.
            let entries = self.shared.index_snapshot(|index| {
                let Some(idx) = index.stream(stream) else {
                    return Vec::new();
                };
                pos = pos.max(idx.start_offset);
                let first = idx.entries.partition_point(|e| e.end_offset() <= pos);
                let mut wanted = 0u64;
                idx.entries[first..]
                    .iter()
                    .take(READ_AHEAD)
                    .take_while(|e| {
                        let more = wanted < (max - out.len()) as u64;
                        wanted += e.end_offset().saturating_sub(pos.max(e.first_offset));
                        more
                    })
                    .copied()
                    .collect::<Vec<_>>()
            });
            if entries.is_empty() {
                break;
            }
            // Owned futures (no borrow of `self` in a closure): a reader's future stays Send.
            let mut fetched: futures::stream::FuturesOrdered<_> = entries
                .iter()
                .map(|e| {
                    let (shared, stream, seq) = (self.shared.clone(), stream.clone(), e.seq);
                    async move {
                        match shared.load_segment(seq).await? {
                            Some(seg) => shared
                                .stream_records(&seg, &stream)
                                .await
                                .map(|r| Some(r.into_owned())),
                            // Deleted by retention in another process since our index was built.
                            None => {
                                tracing::debug!(seq, "segment gone; records were trimmed");
                                Ok(None)
                            }
                        }
                    }
                })
                .collect();
            for entry in &entries {
                let Some(records) = fetched.next().await.transpose()? else {
                    break;
                };
                if let Some(records) = records {
                    let start = self
                        .shared
                        .index_snapshot(|i| i.stream(stream).map_or(0, |s| s.start_offset));
                    out.extend(
                        records
                            .into_iter()
                            .filter(|r| r.offset.0 >= pos.max(start))
                            .take(max - out.len()),
                    );
                }
                pos = entry.end_offset();
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The offset of the first record of `stream` with a timestamp at or after `ts_ms`
    /// (`None` if there is none yet). Timestamps are the appenders' clocks, so across writers
    /// they are only roughly ordered; this returns the first match in offset order.
    pub async fn offset_for_time(&self, stream: &StreamId, ts_ms: i64) -> Result<Option<Offset>> {
        let entries = self.shared.index_snapshot(|index| {
            index
                .stream(stream)
                .map(|i| {
                    i.entries
                        .iter()
                        .filter(|e| e.max_ts_ms >= ts_ms)
                        .copied()
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        });
        for entry in entries {
            if let Some(seg) = self.shared.load_segment(entry.seq).await?
                && let Some(r) = self
                    .shared
                    .stream_records(&seg, stream)
                    .await?
                    .iter()
                    .find(|r| r.record.timestamp_ms >= ts_ms)
            {
                return Ok(Some(r.offset));
            }
        }
        Ok(None)
    }

    /// Follow `stream` from `from`: new records written by this process arrive as soon as
    /// they are durable; records from other processes after at most one poll interval.
    pub fn tail(&self, stream: &StreamId, from: Offset) -> Tail {
        let mut tails = self.tails();
        tails.follow(stream, from);
        Tail(tails)
    }

    /// Follow several streams with one reader (a subscriber whose filters span addresses):
    /// one wait, one poll. Add streams with [`Tails::follow`]; each keeps its own position.
    pub fn tails(&self) -> Tails {
        Tails {
            log: self.clone(),
            streams: Vec::new(),
            next: 0,
            committed: self.shared.committed.subscribe(),
            background: None,
        }
    }
}

/// A record's place among several streams (those of a [`Tails`], or of a shared
/// subscription): the stream's index in the top 16 bits, the offset below — so the first
/// stream's positions are its offsets.
pub fn pack_position(stream: usize, offset: u64) -> u64 {
    ((stream as u64) << 48) | (offset & OFFSET_MASK)
}

/// The stream index and offset of a [`pack_position`] position.
pub fn unpack_position(position: u64) -> (usize, u64) {
    ((position >> 48) as usize, position & OFFSET_MASK)
}

const OFFSET_MASK: u64 = (1 << 48) - 1;

/// A reader following several streams. See [`Log::tails`].
pub struct Tails {
    log: Log,
    /// Each stream and the offset its next record will have, in the order added.
    streams: Vec<(StreamId, Offset)>,
    /// The stream read first next time (streams take turns).
    next: usize,
    committed: watch::Receiver<u64>,
    /// A background reader: the log's client count, which sets its pace.
    background: Option<watch::Receiver<usize>>,
}

impl fmt::Debug for Tails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tails")
            .field("streams", &self.streams)
            .finish()
    }
}

impl Tails {
    /// Make this a background reader: while the log has no clients in this process
    /// ([`Log::client`]) it looks for other processes' segments every `idle_poll_interval`
    /// instead of every `poll_interval` (records of this process still arrive at once, and a
    /// client's arrival wakes it).
    pub fn background(mut self) -> Self {
        self.background = Some(self.log.clients());
        self
    }

    /// Follow `stream` from `from` too, and return its index (stable: streams are never
    /// removed). A stream already followed keeps its position.
    pub fn follow(&mut self, stream: &StreamId, from: Offset) -> usize {
        if let Some(i) = self.index_of(stream) {
            return i;
        }
        self.streams.push((stream.clone(), from));
        self.streams.len() - 1
    }

    /// The index of `stream`, if it is followed.
    pub fn index_of(&self, stream: &StreamId) -> Option<usize> {
        self.streams.iter().position(|(s, _)| s == stream)
    }

    /// The offset the next record of stream `i` will have.
    pub fn position(&self, i: usize) -> Option<Offset> {
        self.streams.get(i).map(|(_, p)| *p)
    }

    /// Read stream `i` from `to` on (back, to read records again, or ahead).
    pub fn seek(&mut self, i: usize, to: Offset) {
        if let Some((_, p)) = self.streams.get_mut(i) {
            *p = to;
        }
    }

    /// Wait for the next records of one of the streams (at most `max`, at least one) and
    /// return them with the stream's index. Streams with records take turns.
    pub async fn next_batch(&mut self, max: usize) -> Result<(usize, Vec<StoredRecord>)> {
        if self.streams.is_empty() {
            return std::future::pending().await;
        }
        loop {
            self.committed.borrow_and_update();
            let n = self.streams.len();
            for k in 0..n {
                let i = (self.next + k) % n;
                let (stream, pos) = &self.streams[i];
                let records = self.log.read(stream, *pos, max).await?;
                if let Some(last) = records.last() {
                    self.streams[i].1 = last.offset.next();
                    self.next = (i + 1) % n;
                    return Ok((i, records));
                }
            }
            let settings = self.log.settings();
            let idle = self.background.as_ref().is_some_and(|c| *c.borrow() == 0);
            let every = if idle {
                settings.idle_poll_interval
            } else {
                settings.poll_interval
            };
            let clients = async {
                match self.background.as_mut() {
                    // A client arrived: go on at its pace.
                    Some(c) if idle => {
                        let _ = c.wait_for(|n| *n > 0).await;
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.committed.changed() => {
                    if changed.is_err() {
                        return Err(crate::LogError::Closed);
                    }
                }
                () = clients => {}
                _ = tokio::time::sleep(every) => {
                    // A store hiccup must not end a long-lived tail: keep polling.
                    match self.log.shared.poll_every(every).await {
                        Err(e) if e.kind() == crate::ErrorKind::Unavailable => {
                            tracing::warn!(streams = ?self.streams, error = %e, "tail poll failed; retrying");
                        }
                        r => {
                            r?;
                        }
                    }
                }
            }
        }
    }
}

/// A reader following one stream. See [`Log::tail`].
#[derive(Debug)]
pub struct Tail(Tails);

impl Tail {
    /// See [`Tails::background`].
    pub fn background(self) -> Self {
        Self(self.0.background())
    }

    /// The offset the next record will have.
    pub fn position(&self) -> Offset {
        // Always followed, at index 0 (see `Log::tail`).
        self.0.position(0).unwrap_or(Offset(0))
    }

    /// Wait for and return the next records (at most `max`, at least one).
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<StoredRecord>> {
        self.0.next_batch(max).await.map(|(_, records)| records)
    }
}
