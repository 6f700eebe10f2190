//! Reading: from an offset, from a time, and tailing.

use std::fmt;

use tokio::sync::watch;
use wharf_log_format::{Offset, StoredRecord, StreamId};

use crate::{Log, Result};

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
            let entry = self.shared.index_snapshot(|index| {
                let idx = index.stream(stream)?;
                pos = pos.max(idx.start_offset);
                idx.locate(pos).copied()
            });
            let Some(entry) = entry else { break };
            match self.shared.load_segment(entry.seq).await? {
                Some(seg) => {
                    let start = self
                        .shared
                        .index_snapshot(|i| i.stream(stream).map_or(0, |s| s.start_offset));
                    out.extend(
                        seg.stream(stream)
                            .iter()
                            .filter(|r| r.offset.0 >= pos.max(start))
                            .take(max - out.len())
                            .cloned(),
                    );
                }
                // Deleted by retention in another process since our index was built.
                None => tracing::debug!(seq = entry.seq, "segment gone; records were trimmed"),
            }
            pos = entry.end_offset();
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
                && let Some(r) = seg
                    .stream(stream)
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
        Tail {
            log: self.clone(),
            stream: stream.clone(),
            pos: from,
            committed: self.shared.committed.subscribe(),
        }
    }
}

/// A reader following one stream. See [`Log::tail`].
pub struct Tail {
    log: Log,
    stream: StreamId,
    pos: Offset,
    committed: watch::Receiver<u64>,
}

impl fmt::Debug for Tail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tail")
            .field("stream", &self.stream)
            .field("pos", &self.pos)
            .finish()
    }
}

impl Tail {
    /// The offset the next record will have.
    pub fn position(&self) -> Offset {
        self.pos
    }

    /// Wait for and return the next records (at most `max`, at least one).
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<StoredRecord>> {
        loop {
            self.committed.borrow_and_update();
            let records = self.log.read(&self.stream, self.pos, max).await?;
            if let Some(last) = records.last() {
                self.pos = last.offset.next();
                return Ok(records);
            }
            tokio::select! {
                changed = self.committed.changed() => {
                    if changed.is_err() {
                        return Err(crate::LogError::Closed);
                    }
                }
                _ = tokio::time::sleep(self.log.settings().poll_interval) => {
                    // A store hiccup must not end a long-lived tail: keep polling.
                    match self.log.refresh().await {
                        Err(e) if e.kind() == crate::ErrorKind::Unavailable => {
                            tracing::warn!(stream = %self.stream, error = %e, "tail poll failed; retrying");
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
