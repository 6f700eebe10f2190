//! The log's index: per-stream heads and where each stream's records are, as of one segment.
//!
//! [`Checkpoint`] is both the in-memory index every log handle keeps and the persisted
//! checkpoint object written every few segments, so opening a log reads one checkpoint plus
//! the few segments after it. Applying segments in order is deterministic: every process
//! that has applied segments `1..=n` holds the same checkpoint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{FormatError, Offset, StreamId, json::Versioned, segment::Segment};

/// Where one segment holds records of one stream. Persisted as a JSON array
/// `[seq, first_offset, count, min_ts_ms, max_ts_ms, bytes]` (checkpoints hold many).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(from = "[i64; 6]", into = "[i64; 6]")]
pub struct IndexEntry {
    pub seq: u64,
    pub first_offset: u64,
    pub count: u64,
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
    pub bytes: u64,
}

impl From<[i64; 6]> for IndexEntry {
    fn from(a: [i64; 6]) -> Self {
        Self {
            seq: a[0] as u64,
            first_offset: a[1] as u64,
            count: a[2] as u64,
            min_ts_ms: a[3],
            max_ts_ms: a[4],
            bytes: a[5] as u64,
        }
    }
}

impl From<IndexEntry> for [i64; 6] {
    fn from(e: IndexEntry) -> Self {
        [
            e.seq as i64,
            e.first_offset as i64,
            e.count as i64,
            e.min_ts_ms,
            e.max_ts_ms,
            e.bytes as i64,
        ]
    }
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

    /// Apply a compaction: `entry` holds copies of offsets `[first, end)`, which must be exactly
    /// covered by existing entries. Anything else (an overlapping compaction won the race, the
    /// range is not written yet, or it was trimmed away) leaves the index unchanged: a stale
    /// compaction is ignored, identically in every process.
    fn rehome(&mut self, entry: IndexEntry) {
        let (first, end) = (entry.first_offset, entry.end_offset());
        if end > self.next_offset || end <= self.start_offset {
            return;
        }
        let lo = self.entries.partition_point(|e| e.end_offset() <= first);
        let hi = self.entries.partition_point(|e| e.first_offset < end);
        let covered = &self.entries[lo..hi];
        let aligned = covered
            .first()
            .is_some_and(|e| e.first_offset == first || first < self.start_offset)
            && covered.last().is_some_and(|e| e.end_offset() == end);
        if aligned {
            self.entries.splice(lo..hi, [entry]);
        }
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
    /// Version 2: per writer of batch objects, how far its series is committed and which
    /// segments committed its batches (absent in version 1: nobody wrote batches).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub writers: BTreeMap<String, WriterIndex>,
}

/// One batch writer's series as of a checkpoint.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct WriterIndex {
    /// Batches `1..=committed` are committed (each exactly once, in number order).
    pub committed: u64,
    /// `[seq, first, last]`: segment `seq` committed batches `first..=last`. Only segments
    /// some stream may still read are listed (see [`Checkpoint::prune_writers`]): a committed
    /// batch listed nowhere belongs to a segment nothing reads, and may be deleted with it.
    #[serde(default)]
    pub segments: Vec<[u64; 3]>,
    /// Append time of the newest committed batch's segment (ms), to retire idle writers.
    #[serde(default)]
    pub last_ms: i64,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Self {
            version: Self::VERSION,
            segment_seq: 0,
            streams: BTreeMap::new(),
            writers: BTreeMap::new(),
        }
    }
}

impl Versioned for Checkpoint {
    const WHAT: &'static str = "checkpoint";
    const VERSION: u32 = 2;
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
        if !self.refs_follow(&segment.header.refs) {
            return Err(FormatError::corrupt(
                "segment",
                format!("segment {seq} commits batches out of their writers' order"),
            ));
        }
        let summaries = segment.committed_summaries()?;
        let compacts = &segment.header.compacts;
        for s in summaries.iter().filter(|s| !compacts.contains(&s.stream)) {
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
            let entry = IndexEntry {
                seq,
                first_offset: s.first_offset.0,
                count: s.count,
                min_ts_ms: s.min_ts_ms,
                max_ts_ms: s.max_ts_ms,
                bytes: s.bytes,
            };
            if compacts.contains(&s.stream) {
                if let Some(idx) = self.streams.get_mut(&s.stream) {
                    idx.rehome(entry);
                }
                continue;
            }
            let idx = self.streams.entry(s.stream).or_default();
            idx.entries.push(entry);
            idx.next_offset = s.first_offset.0 + s.count;
        }
        for (stream, start) in &segment.header.trims {
            if let Some(idx) = self.streams.get_mut(stream) {
                idx.trim_to(start.0);
            }
        }
        for r in &segment.header.refs {
            let w = self.writers.entry(r.writer.clone()).or_default();
            w.committed = r.n;
            w.last_ms = segment.header.created_ms;
            if segment.header.inline {
                // The segment holds the batch's rows: nobody reads the batch object again.
                continue;
            }
            match w.segments.last_mut() {
                Some(last) if last[0] == seq => last[2] = r.n,
                _ => w.segments.push([seq, r.n, r.n]),
            }
        }
        self.segment_seq = seq;
        Ok(())
    }

    /// Check that a segment's batch references continue each writer's series (the check
    /// [`Checkpoint::apply`] makes, without applying): `refs` in order, each the next batch
    /// of its writer.
    pub fn refs_follow(&self, refs: &[crate::segment::BatchRef]) -> bool {
        let mut next: BTreeMap<&str, u64> = BTreeMap::new();
        refs.iter().all(|r| {
            let n = next
                .entry(r.writer.as_str())
                .or_insert_with(|| self.writers.get(&r.writer).map_or(0, |w| w.committed) + 1);
            let ok = r.n == *n;
            *n += 1;
            ok
        })
    }

    /// Forget which segments committed batches once no stream reads those segments, and
    /// writers with nothing left to forget that have been idle since before `idle_before_ms`.
    /// Run on the copy that is persisted as a checkpoint: garbage collection deletes the
    /// batches a checkpoint no longer lists along with their segments.
    pub fn prune_writers(&mut self, idle_before_ms: i64) {
        let referenced = self.referenced_segments();
        self.writers.retain(|_, w| {
            w.segments.retain(|s| referenced.contains(&s[0]));
            !w.segments.is_empty() || w.last_ms >= idle_before_ms
        });
    }

    /// Whether batch `n` of `writer` is committed by a segment some stream may still read
    /// (as far as this checkpoint knows).
    pub fn batch_is_live(&self, writer: &str, n: u64) -> bool {
        self.writers
            .get(writer)
            .is_some_and(|w| w.segments.iter().any(|s| (s[1]..=s[2]).contains(&n)))
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

    /// Every segment some stream still reads from. Segments numbered up to `segment_seq` and
    /// not in this set are no longer needed.
    pub fn referenced_segments(&self) -> std::collections::BTreeSet<u64> {
        self.streams
            .values()
            .flat_map(|i| i.entries.iter().map(|e| e.seq))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use bytes::Bytes;
    use uuid::Uuid;

    use super::*;
    use crate::{
        Record,
        segment::{self, SegmentHeader},
    };

    fn seg(seq: u64, stream: &StreamId, first: u64, n: usize, compact: bool) -> Segment {
        let header = SegmentHeader {
            seq,
            commit_id: Uuid::nil(),
            writer: "t".into(),
            created_ms: 0,
            trims: BTreeMap::new(),
            compacts: if compact {
                BTreeSet::from([stream.clone()])
            } else {
                BTreeSet::new()
            },
            ..Default::default()
        };
        let recs: Vec<Record> = (0..n)
            .map(|i| Record::new(0, Bytes::from(format!("{i}"))))
            .collect();
        let bytes =
            segment::encode(&header, [(stream, Offset(first), recs.as_slice())]).expect("encode");
        segment::decode(bytes).expect("decode")
    }

    fn layout(cp: &Checkpoint, s: &StreamId) -> Vec<(u64, u64, u64)> {
        cp.stream(s)
            .map(|i| {
                i.entries
                    .iter()
                    .map(|e| (e.seq, e.first_offset, e.end_offset()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn compaction_replaces_exactly_covered_entries_and_ignores_stale_ones() {
        let s = StreamId::new("s").expect("id");
        let mut cp = Checkpoint::default();
        for seq in 1..=4 {
            cp.apply(&seg(seq, &s, seq - 1, 1, false)).expect("append");
        }
        // A compacts offsets 0..2 (segments 1, 2).
        cp.apply(&seg(5, &s, 0, 2, true)).expect("compaction A");
        assert_eq!(layout(&cp, &s), vec![(5, 0, 2), (3, 2, 3), (4, 3, 4)]);
        // B planned 1..3 from the old layout: it straddles A's entry, so it is ignored.
        cp.apply(&seg(6, &s, 1, 2, true))
            .expect("stale compaction B");
        assert_eq!(layout(&cp, &s), vec![(5, 0, 2), (3, 2, 3), (4, 3, 4)]);
        assert_eq!(
            cp.stream(&s).map(|i| i.next_offset),
            Some(4),
            "heads unchanged"
        );
        // A compaction of records not written yet is ignored too.
        cp.apply(&seg(7, &s, 3, 2, true)).expect("beyond head");
        assert_eq!(layout(&cp, &s).len(), 3);
        // C compacts everything that is left, including A's entry.
        cp.apply(&seg(8, &s, 0, 4, true)).expect("compaction C");
        assert_eq!(layout(&cp, &s), vec![(8, 0, 4)]);
        assert_eq!(cp.referenced_segments(), BTreeSet::from([8]));
        // Appends continue after the head.
        cp.apply(&seg(9, &s, 4, 1, false)).expect("append");
        assert!(
            cp.apply(&seg(10, &s, 9, 1, false)).is_err(),
            "a gap in offsets is corrupt"
        );
    }

    fn batch_ref(
        writer: &str,
        n: u64,
        stream: &StreamId,
        first: u64,
        count: u64,
    ) -> crate::segment::BatchRef {
        crate::segment::BatchRef {
            writer: writer.into(),
            n,
            streams: BTreeMap::from([(
                stream.clone(),
                crate::segment::RefStream {
                    first_offset: first,
                    count,
                    min_ts_ms: 0,
                    max_ts_ms: 0,
                    bytes: count,
                },
            )]),
        }
    }

    #[test]
    fn batches_are_committed_once_in_order_and_forgotten_with_their_segments() {
        let s = StreamId::new("s").expect("id");
        let mut cp = Checkpoint::default();
        // Segment 1 commits batches 1 and 2 of w (offsets 0..2, 2..5), then one own record.
        let mut one = seg(1, &s, 5, 1, false);
        one.header.refs = vec![batch_ref("w", 1, &s, 0, 2), batch_ref("w", 2, &s, 2, 3)];
        cp.apply(&one).expect("apply");
        assert_eq!(
            layout(&cp, &s),
            vec![(1, 0, 6)],
            "one entry covers batches and own rows"
        );
        assert_eq!(cp.writers["w"].committed, 2);
        assert!(cp.batch_is_live("w", 1) && cp.batch_is_live("w", 2));
        // Committing batch 2 again, or skipping to 4, is corrupt and changes nothing.
        for bad in [2, 4] {
            let mut again = seg(2, &s, 6, 1, false);
            again.header.refs = vec![batch_ref("w", bad, &s, 6, 1)];
            again.records.clear();
            again.streams.clear();
            assert!(cp.clone().apply(&again).is_err(), "batch {bad} after 2");
        }
        // Pieces of a stream that do not follow each other are corrupt.
        let mut gap = seg(2, &s, 8, 1, false);
        gap.header.refs = vec![batch_ref("w", 3, &s, 6, 1)];
        assert!(
            cp.clone().apply(&gap).is_err(),
            "7 is missing between the pieces"
        );
        // Once compaction re-homes segment 1's records, nothing lists w's batches: a
        // checkpoint forgets them (garbage collection then deletes them) and, idle, w itself.
        cp.apply(&seg(2, &s, 0, 6, true)).expect("compaction");
        let mut persisted = cp.clone();
        persisted.prune_writers(i64::MIN);
        assert!(!persisted.batch_is_live("w", 1));
        assert_eq!(
            persisted.writers["w"].committed, 2,
            "an active writer is kept"
        );
        persisted.prune_writers(i64::MAX);
        assert!(persisted.writers.is_empty(), "an idle one is forgotten");
    }
}
