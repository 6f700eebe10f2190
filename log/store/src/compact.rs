//! Compaction: rewrite runs of small index entries of a stream (old group-commit segments,
//! which mix many streams) into one segment per run holding only that stream.
//!
//! It keeps the index (and so checkpoints) small, makes reading history a few large GETs
//! instead of many small ones, and lets garbage collection free the mixed segments. A
//! compaction is an ordinary commit: a create-only numbered segment whose `wharf.compacts`
//! header names the re-homed streams; every process applies it the same way (see
//! `wharf_log_format::checkpoint`), and a compaction that lost a race is ignored.

use std::collections::BTreeSet;

use uuid::Uuid;
use wharf_log_format::{
    Offset, Record, StreamId,
    checkpoint::IndexEntry,
    segment::{self, SegmentHeader},
};

use crate::{Log, LogError, Result, paths, writer::create_next};

/// What one compaction run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Runs of entries rewritten (one new segment each).
    pub runs: u64,
    /// Index entries those runs replaced.
    pub entries_replaced: u64,
    pub records: u64,
    pub bytes: u64,
}

/// Pick runs of consecutive small entries: each entry smaller than half the target, a run of
/// at least two entries and at most `target` bytes, all in segments at least `min_age`
/// segments older than the head.
fn plan(entries: &[IndexEntry], head: u64, target: u64, min_age: u64) -> Vec<Vec<IndexEntry>> {
    let mut runs = Vec::new();
    let mut run: Vec<IndexEntry> = Vec::new();
    let mut bytes = 0;
    let flush = |run: &mut Vec<IndexEntry>, runs: &mut Vec<Vec<IndexEntry>>| {
        if run.len() >= 2 {
            runs.push(std::mem::take(run));
        }
        run.clear();
    };
    for e in entries {
        let eligible = e.bytes < target / 2 && e.seq + min_age <= head;
        if !eligible || bytes + e.bytes > target {
            flush(&mut run, &mut runs);
            bytes = 0;
        }
        if eligible {
            run.push(*e);
            bytes += e.bytes;
        }
    }
    flush(&mut run, &mut runs);
    runs
}

impl Log {
    /// Compact every stream once (at most `max_runs` new segments per call).
    pub async fn compact(&self, max_runs: usize) -> Result<CompactionReport> {
        self.refresh().await?;
        let settings = self.settings();
        let (head, streams) = self
            .shared
            .index_snapshot(|i| (i.segment_seq, i.streams.clone()));
        let mut report = CompactionReport::default();
        'streams: for (stream, index) in streams {
            let runs = plan(
                &index.entries,
                head,
                settings.compaction_target_bytes,
                settings.compaction_min_age,
            );
            for run in runs {
                if report.runs as usize >= max_runs {
                    break 'streams;
                }
                if let Some(n) = self.compact_run(&stream, &run).await? {
                    report.runs += 1;
                    report.entries_replaced += run.len() as u64;
                    report.records += n;
                    report.bytes += run.iter().map(|e| e.bytes).sum::<u64>();
                }
            }
        }
        if report.runs > 0 {
            tracing::info!(?report, "compacted");
        }
        Ok(report)
    }

    /// Rewrite one run; returns the number of records re-homed (None if the run's segments
    /// are gone, e.g. trimmed and collected meanwhile).
    async fn compact_run(&self, stream: &StreamId, run: &[IndexEntry]) -> Result<Option<u64>> {
        let (first, end) = match (run.first(), run.last()) {
            (Some(f), Some(l)) => (f.first_offset, l.end_offset()),
            _ => return Ok(None),
        };
        let mut records: Vec<Record> = Vec::with_capacity((end - first) as usize);
        for e in run {
            let Some(seg) = self.shared.load_segment(e.seq).await? else {
                return Ok(None);
            };
            records.extend(seg.stream(stream).iter().map(|r| r.record.clone()));
        }
        if records.len() as u64 != end - first {
            return Err(LogError::Conflict(format!(
                "{stream}: run {first}..{end} holds {} records",
                records.len()
            )));
        }
        let commit_id = Uuid::new_v4();
        let shared = &self.shared;
        let seq = create_next(shared, &[], |seq, _| {
            let header = SegmentHeader {
                seq,
                commit_id,
                writer: shared.writer_id.clone(),
                created_ms: shared.clock.now_ms(),
                trims: Default::default(),
                compacts: BTreeSet::from([stream.clone()]),
            };
            segment::encode(&header, [(stream, Offset(first), records.as_slice())])
                .map_err(|e| LogError::format(&paths::segment(seq), e))
        })
        .await?;
        // Apply in order with anything written meanwhile (our segment is read back from the
        // store once; compaction is off the append path).
        self.refresh().await?;
        debug_assert!(self.segment_seq() >= seq);
        Ok(Some(end - first))
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

    #[test]
    fn plans_runs_of_small_old_entries() {
        let entries = [
            e(1, 0, 1, 10),
            e(2, 1, 1, 10),
            e(3, 2, 5, 1000), // big: breaks the run
            e(4, 7, 1, 10),
            e(5, 8, 1, 10),
            e(6, 9, 1, 10),
            e(9, 10, 1, 10), // too young
        ];
        let runs = plan(&entries, 10, 100, 2);
        let seqs: Vec<Vec<u64>> = runs
            .iter()
            .map(|r| r.iter().map(|e| e.seq).collect())
            .collect();
        assert_eq!(seqs, vec![vec![1, 2], vec![4, 5, 6]]);
        // A run stops at the target size.
        let runs = plan(&entries[3..6], 10, 25, 0);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].len(), 2);
    }
}
