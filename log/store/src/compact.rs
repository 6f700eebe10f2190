//! Compaction: rewrite runs of small index entries of a stream (old group-commit segments,
//! which mix many streams) into one segment per run holding only that stream.
//!
//! It keeps the index (and so checkpoints) small, makes reading history a few large GETs
//! instead of many small ones, and lets garbage collection free the mixed segments. A
//! compaction is an ordinary commit: a create-only numbered segment whose `wharf.compacts`
//! header names the re-homed streams; every process applies it the same way (see
//! `wharf_log_format::checkpoint`), and a compaction that lost a race is ignored.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;
use wharf_log_format::{
    Offset, Record, StreamId,
    checkpoint::{IndexEntry, StreamIndex},
    segment::{self, SegmentHeader},
};

use crate::{Log, LogError, Result, paths, writer::create_next};

/// What one compaction run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Compaction segments written.
    pub segments_written: u64,
    /// Index entries those runs replaced.
    pub entries_replaced: u64,
    pub records: u64,
    pub bytes: u64,
}

/// One compaction commit: for each stream, a run of consecutive index entries (by position)
/// to re-home, all from the segments in `seqs`.
#[derive(Debug, Default)]
struct Batch {
    seqs: BTreeSet<u64>,
    runs: BTreeMap<StreamId, Vec<IndexEntry>>,
}

/// An index entry with its stream and its position in the stream's entry list.
type Placed<'a> = (&'a StreamId, usize, IndexEntry);

/// Group old, small entries by segment; take segments in number order until a batch holds
/// `target` bytes. Each stream contributes the first contiguous run of its entries that lie
/// in the batch's segments (a stream's rows in a segment must be one offset range); a batch
/// is worth writing if it replaces at least two entries of some stream or empties a segment.
fn plan(
    streams: &BTreeMap<StreamId, StreamIndex>,
    head: u64,
    target: u64,
    min_age: u64,
) -> Vec<Batch> {
    let mut by_seq: BTreeMap<u64, Vec<Placed<'_>>> = BTreeMap::new();
    for (id, idx) in streams {
        for (pos, e) in idx.entries.iter().enumerate() {
            if e.bytes < target / 2 && e.seq + min_age <= head {
                by_seq.entry(e.seq).or_default().push((id, pos, *e));
            }
        }
    }
    let mut batches = Vec::new();
    let mut current: Vec<(u64, &Vec<Placed<'_>>)> = Vec::new();
    let mut bytes = 0;
    let mut close = |current: &mut Vec<(u64, &Vec<Placed<'_>>)>| {
        let mut batch = Batch::default();
        let mut positions: BTreeMap<&StreamId, Vec<(usize, IndexEntry)>> = BTreeMap::new();
        for (seq, entries) in current.drain(..) {
            batch.seqs.insert(seq);
            for (id, pos, e) in entries {
                positions.entry(id).or_default().push((*pos, *e));
            }
        }
        for (id, mut list) in positions {
            list.sort_by_key(|(pos, _)| *pos);
            let mut run: Vec<IndexEntry> = Vec::new();
            let mut last = None;
            for (pos, e) in list {
                if last.is_some_and(|l: usize| l + 1 != pos) {
                    break;
                }
                run.push(e);
                last = Some(pos);
            }
            batch.runs.insert(id.clone(), run);
        }
        let merges = batch.runs.values().any(|r| r.len() >= 2);
        let frees = batch.seqs.len() >= 2;
        if merges || frees {
            batches.push(batch);
        }
    };
    for (seq, entries) in &by_seq {
        let size: u64 = entries.iter().map(|(_, _, e)| e.bytes).sum();
        if bytes > 0 && bytes + size > target {
            close(&mut current);
            bytes = 0;
        }
        current.push((*seq, entries));
        bytes += size;
    }
    if !current.is_empty() {
        close(&mut current);
    }
    batches
}

impl Log {
    /// Compact the log once: at most `max_batches` new segments per call.
    pub async fn compact(&self, max_batches: usize) -> Result<CompactionReport> {
        self.refresh().await?;
        let settings = self.settings();
        let (head, streams) = self
            .shared
            .index_snapshot(|i| (i.segment_seq, i.streams.clone()));
        let mut report = CompactionReport::default();
        let batches = plan(
            &streams,
            head,
            settings.compaction_target_bytes,
            settings.compaction_min_age,
        );
        for batch in batches.into_iter().take(max_batches) {
            if let Some((records, bytes)) = self.compact_batch(&batch).await? {
                report.segments_written += 1;
                report.entries_replaced += batch.runs.values().map(|r| r.len() as u64).sum::<u64>();
                report.records += records;
                report.bytes += bytes;
            }
        }
        if report.segments_written > 0 {
            tracing::info!(?report, "compacted");
        }
        // Persist the smaller index now: garbage collection works from checkpoints, and a
        // fresh open reads the compacted index instead of replaying the compaction.
        if report.segments_written > 0 {
            self.shared.checkpoint_now().await;
        }
        Ok(report)
    }

    /// Write one batch; returns (records, bytes) re-homed, or None if its segments are gone
    /// (trimmed and collected meanwhile). Each input segment is read once.
    async fn compact_batch(&self, batch: &Batch) -> Result<Option<(u64, u64)>> {
        // stream -> entry's first offset -> its records. A run's entries may sit in segments
        // whose numbers are not in offset order (after an earlier compaction), so the pieces
        // are put back together by offset.
        let mut pieces: BTreeMap<&StreamId, BTreeMap<u64, Vec<Record>>> = BTreeMap::new();
        for &seq in &batch.seqs {
            let Some(seg) = self.shared.load_segment(seq).await? else {
                return Ok(None);
            };
            for (id, run) in &batch.runs {
                if !run.iter().any(|e| e.seq == seq) {
                    continue;
                }
                let stored = self.shared.stream_records(&seg, id).await?;
                for e in run.iter().filter(|e| e.seq == seq) {
                    let recs = stored
                        .iter()
                        .filter(|r| (e.first_offset..e.end_offset()).contains(&r.offset.0))
                        .map(|r| r.record.clone())
                        .collect();
                    pieces.entry(id).or_default().insert(e.first_offset, recs);
                }
            }
        }
        let mut groups: BTreeMap<StreamId, (Offset, Vec<Record>)> = BTreeMap::new();
        for (id, run) in &batch.runs {
            let (Some(first), Some(last)) = (run.first(), run.last()) else {
                continue;
            };
            let (first, end) = (first.first_offset, last.end_offset());
            let recs: Vec<Record> = pieces
                .remove(id)
                .into_iter()
                .flat_map(|m| m.into_values())
                .flatten()
                .collect();
            if recs.len() as u64 != end - first {
                return Err(LogError::Conflict(format!(
                    "{id}: run {first}..{end} holds {} records",
                    recs.len()
                )));
            }
            groups.insert(id.clone(), (Offset(first), recs));
        }
        let records: u64 = groups.values().map(|g| g.1.len() as u64).sum();
        let bytes: u64 = batch.runs.values().flatten().map(|e| e.bytes).sum();
        let commit_id = Uuid::new_v4();
        let shared = &self.shared;
        // A compaction is the long-lived form others read (pyarrow, DuckDB): a file of its own
        // on the local filesystem, not a journal entry.
        create_next(shared, &[], &[], true, |seq, _| {
            let header = SegmentHeader {
                seq,
                commit_id,
                writer: shared.committer.clone(),
                created_ms: shared.clock.now_ms(),
                trims: Default::default(),
                compacts: groups.keys().cloned().collect(),
                ..Default::default()
            };
            segment::encode(
                &header,
                groups
                    .iter()
                    .map(|(id, (first, recs))| (id, *first, recs.as_slice())),
            )
            .map(Some)
            .map_err(|e| LogError::format(&paths::segment(seq), e))
        })
        .await?;
        // Apply in order with anything written meanwhile (our segment is read back from the
        // store once; compaction is off the append path).
        self.refresh().await?;
        Ok(Some((records, bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, first: u64, count: u64, bytes: u64) -> IndexEntry {
        IndexEntry {
            seq,
            first_offset: first,
            count,
            min_ts_ms: 0,
            max_ts_ms: 0,
            bytes,
        }
    }

    fn index(entries: Vec<IndexEntry>) -> StreamIndex {
        StreamIndex {
            next_offset: entries.last().map_or(0, |e| e.end_offset()),
            start_offset: 0,
            entries,
        }
    }

    #[test]
    fn batches_take_old_small_segments_once_for_every_stream() {
        let (a, b) = (
            StreamId::new("a").expect("id"),
            StreamId::new("b").expect("id"),
        );
        let streams = BTreeMap::from([
            (
                a.clone(),
                index(vec![
                    e(1, 0, 1, 10),
                    e(2, 1, 1, 10),
                    e(3, 2, 5, 1000), // big: not re-homed, and it breaks a's run
                    e(4, 7, 1, 10),
                    e(9, 8, 1, 10), // too young
                ]),
            ),
            (
                b.clone(),
                index(vec![e(1, 0, 1, 10), e(2, 1, 1, 10), e(4, 2, 1, 10)]),
            ),
        ]);
        let batches = plan(&streams, 10, 100, 2);
        assert_eq!(batches.len(), 1);
        let batch = &batches[0];
        assert_eq!(
            batch.seqs,
            BTreeSet::from([1, 2, 4]),
            "each segment read once"
        );
        let seqs = |id: &StreamId| batch.runs[id].iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&a), vec![1, 2], "a's run stops at its big entry");
        assert_eq!(seqs(&b), vec![1, 2, 4]);

        // The target splits batches; a batch that would rewrite one segment into one is skipped.
        let batches = plan(&streams, 10, 45, 2);
        let sets: Vec<_> = batches.iter().map(|b| b.seqs.clone()).collect();
        assert_eq!(sets, vec![BTreeSet::from([1, 2])]);
    }
}
