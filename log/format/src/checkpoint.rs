//! The log's index: per-stream heads and where each stream's records are, as of one segment.
//!
//! [`Checkpoint`] is both the in-memory index every log handle keeps and the persisted
//! checkpoint object written every few segments, so opening a log reads one checkpoint plus
//! the few segments after it. Applying segments in order is deterministic: every process
//! that has applied segments `1..=n` holds the same checkpoint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{FormatError, Offset, StreamId, json::Versioned, segment::Segment};

/// Where one segment holds records of one stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct IndexEntry {
    pub seq: u64,
    pub first_offset: u64,
    pub count: u64,
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
    pub bytes: u64,
}

impl IndexEntry {
    pub fn end_offset(&self) -> u64 {
        self.first_offset + self.count
    }
}

/// One stream's head and index.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct StreamIndex {
    /// The offset the next appended record gets.
    pub next_offset: u64,
    /// First offset still readable (records below were trimmed).
    pub start_offset: u64,
    /// Segments holding readable records of this stream, in offset order.
    pub entries: Vec<IndexEntry>,
}

impl StreamIndex {
    /// Bytes of the readable records (at segment granularity).
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// The entry holding `offset`, if it is readable.
    pub fn locate(&self, offset: u64) -> Option<&IndexEntry> {
        let idx = self.entries.partition_point(|e| e.end_offset() <= offset);
        self.entries.get(idx)
    }

    /// First entry that may hold a record with timestamp `>= ts_ms`.
    pub fn locate_time(&self, ts_ms: i64) -> Option<&IndexEntry> {
        self.entries.iter().find(|e| e.max_ts_ms >= ts_ms)
    }

    fn trim_to(&mut self, start: u64) {
        let start = start.min(self.next_offset);
        if start <= self.start_offset {
            return;
        }
        self.start_offset = start;
        self.entries.retain(|e| e.end_offset() > start);
    }
}

/// Retention limits for one stream; `None` means unlimited.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Retention {
    pub max_age_ms: Option<i64>,
    pub max_bytes: Option<u64>,
}

/// The index of the whole log as of segment `segment_seq` (0 = before the first segment).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub segment_seq: u64,
    pub streams: BTreeMap<StreamId, StreamIndex>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Self {
            version: Self::VERSION,
            segment_seq: 0,
            streams: BTreeMap::new(),
        }
    }
}

impl Versioned for Checkpoint {
    const WHAT: &'static str = "checkpoint";
    const VERSION: u32 = 1;
}

impl Checkpoint {
    /// The number the next segment must have.
    pub fn next_seq(&self) -> u64 {
        self.segment_seq + 1
    }

    pub fn stream(&self, id: &StreamId) -> Option<&StreamIndex> {
        self.streams.get(id)
    }

    /// Apply the next segment. Fails (and changes nothing) if it is not the next one or its
    /// offsets do not continue the streams' heads.
    pub fn apply(&mut self, segment: &Segment) -> Result<(), FormatError> {
        let seq = segment.header.seq;
        if seq != self.next_seq() {
            return Err(FormatError::corrupt(
                "segment",
                format!("segment {seq} applied after {}", self.segment_seq),
            ));
        }
        let summaries: Vec<_> = segment.summaries().collect();
        for s in &summaries {
            let next = self.streams.get(&s.stream).map_or(0, |i| i.next_offset);
            if s.first_offset.0 != next {
                return Err(FormatError::corrupt(
                    "segment",
                    format!(
                        "segment {seq}: stream {} starts at {} but its head is {next}",
                        s.stream, s.first_offset
                    ),
                ));
            }
        }
        for s in summaries {
            let idx = self.streams.entry(s.stream).or_default();
            idx.entries.push(IndexEntry {
                seq,
                first_offset: s.first_offset.0,
                count: s.count,
                min_ts_ms: s.min_ts_ms,
                max_ts_ms: s.max_ts_ms,
                bytes: s.bytes,
            });
            idx.next_offset = s.first_offset.0 + s.count;
        }
        for (stream, start) in &segment.header.trims {
            if let Some(idx) = self.streams.get_mut(stream) {
                idx.trim_to(start.0);
            }
        }
        self.segment_seq = seq;
        Ok(())
    }

    /// New start offsets that retention asks for, at segment granularity: whole index entries
    /// older than `max_age` or beyond `max_bytes` (oldest first) are dropped, the newest
    /// entry of a stream never is.
    pub fn plan_retention(
        &self,
        now_ms: i64,
        policy: impl Fn(&StreamId) -> Retention,
    ) -> BTreeMap<StreamId, Offset> {
        let mut out = BTreeMap::new();
        for (id, idx) in &self.streams {
            let r = policy(id);
            let mut total = idx.bytes();
            let mut new_start = idx.start_offset;
            for e in idx.entries.iter().take(idx.entries.len().saturating_sub(1)) {
                let too_old = r.max_age_ms.is_some_and(|age| e.max_ts_ms < now_ms - age);
                let too_big = r.max_bytes.is_some_and(|max| total > max);
                if !(too_old || too_big) {
                    break;
                }
                total -= e.bytes;
                new_start = e.end_offset();
            }
            if new_start > idx.start_offset {
                out.insert(id.clone(), Offset(new_start));
            }
        }
        out
    }

    /// Segments no stream needs any more: every number below the result.
    pub fn deletable_below(&self) -> u64 {
        self.streams
            .values()
            .filter_map(|i| i.entries.first().map(|e| e.seq))
            .min()
            .unwrap_or(self.next_seq())
    }
}
