//! Group-commit segments: one Arrow IPC *file* per commit, holding records of many streams.
//!
//! Layout (format version 1), readable with `pyarrow.ipc.open_file`:
//!
//! | column      | Arrow type                    | null | meaning                            |
//! |-------------|-------------------------------|------|------------------------------------|
//! | `stream`    | Utf8                          | no   | stream id                          |
//! | `offset`    | UInt64                        | no   | offset within the stream           |
//! | `timestamp` | Timestamp(Millisecond, "UTC") | no   | append time                        |
//! | `key`       | Binary                        | yes  | key or topic                       |
//! | `headers`   | Binary                        | yes  | protocol headers as received       |
//! | `payload`   | Binary                        | no   | payload as received                |
//!
//! Rows are grouped by stream (streams in byte order) and, within a stream, have consecutive
//! offsets. Schema metadata carries the header: `wharf.format` = `segment`, `wharf.version`,
//! `wharf.seq`, `wharf.commit_id`, `wharf.writer`, `wharf.created_ms`, `wharf.trims` (JSON
//! object: stream -> new start offset) for retention commits, and, only on compaction commits,
//! `wharf.compacts` (JSON object: stream -> first offset): that stream's rows here are copies of
//! records already in the log, re-homed into this segment.
//!
//! Format version 2 adds two things, and a version-2 object is written only when it uses them
//! (an object without either is written as version 1, byte for byte as before):
//! - `wharf.batches` on a segment (JSON array of [`BatchRef`]): the segment also commits
//!   *batch objects* other writers made durable, giving their records offsets. Their rows are
//!   not in this file; a reader assembles them from the batch objects.
//! - `wharf.format` = `batch`: a batch object (`batches/<writer>/<n>.arrow`), the same columns,
//!   with each stream's offsets counted from 0 (the committing segment's `wharf.batches` entry
//!   says where they start); `wharf.seq` is the batch's number in its writer's series.
//!
//! Format version 3 adds `wharf.inline` = `true` on a segment with `wharf.batches`: the rows of
//! the batch objects it commits are in this file too, with their offsets (per stream, the
//! referenced batches' records in reference order, then the segment's own), so a reader never
//! needs the batch objects; `wharf.batches` still says which batches were committed where (the
//! writers' bookkeeping). A version-2 reader refuses it rather than count those rows twice.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::Cursor,
    sync::Arc,
};

use arrow_array::{
    Array, ArrayRef, BinaryArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
    builder::{BinaryBuilder, StringBuilder},
};
use arrow_ipc::{reader::FileReader, writer::FileWriter};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use uuid::Uuid;

use crate::{FormatError, Offset, Record, StoredRecord, StreamId};

/// The newest segment format version this build writes and reads (see the module docs).
pub const SEGMENT_VERSION: u32 = 3;

/// A batch object committed by a segment: writer `writer`'s batch number `n`. Per stream,
/// what the index needs without reading the batch: the offset its records start at here,
/// their count, timestamps and bytes. JSON: `{"writer", "n", "streams": {id: [first, count,
/// min_ts_ms, max_ts_ms, bytes]}}`.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct BatchRef {
    pub writer: String,
    pub n: u64,
    pub streams: BTreeMap<StreamId, RefStream>,
}

/// One stream's part of a [`BatchRef`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(from = "[i64; 5]", into = "[i64; 5]")]
pub struct RefStream {
    pub first_offset: u64,
    pub count: u64,
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
    pub bytes: u64,
}

impl From<[i64; 5]> for RefStream {
    fn from(a: [i64; 5]) -> Self {
        Self {
            first_offset: a[0] as u64,
            count: a[1] as u64,
            min_ts_ms: a[2],
            max_ts_ms: a[3],
            bytes: a[4] as u64,
        }
    }
}

impl From<RefStream> for [i64; 5] {
    fn from(r: RefStream) -> Self {
        [
            r.first_offset as i64,
            r.count as i64,
            r.min_ts_ms,
            r.max_ts_ms,
            r.bytes as i64,
        ]
    }
}

impl RefStream {
    /// The part of a batch's stream summary (offsets counted from 0) committed at `first`.
    pub fn at(first: u64, s: &StreamSummary) -> Self {
        Self {
            first_offset: first,
            count: s.count,
            min_ts_ms: s.min_ts_ms,
            max_ts_ms: s.max_ts_ms,
            bytes: s.bytes,
        }
    }
}
const WHAT: &str = "segment";

/// What a segment says about itself (Arrow schema metadata).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SegmentHeader {
    /// The segment's number in the log (equals the number in its object key).
    pub seq: u64,
    /// Unique per commit attempt; a writer recognises its own segment after an ambiguous
    /// response by comparing it.
    pub commit_id: Uuid,
    /// The writer process's id (free text for operators).
    pub writer: String,
    pub created_ms: i64,
    /// Retention commits: stream -> new start offset.
    pub trims: BTreeMap<StreamId, Offset>,
    /// Compaction commits: streams whose rows in this segment re-home existing offsets.
    pub compacts: BTreeSet<StreamId>,
    /// Batch objects this segment commits, in order (version 2).
    pub refs: Vec<BatchRef>,
    /// This is a batch object, not a numbered segment (version 2): `seq` is the batch number,
    /// offsets count from 0 per stream.
    pub batch: bool,
    /// A batch object an appender waits on for its offset (`wharf.barrier` = `true`): whoever
    /// commits it first commits every batch other writers made durable before it.
    pub barrier: bool,
    /// The rows of the batches in `refs` are in this segment too (`wharf.inline` = `true`,
    /// version 3).
    pub inline: bool,
}

/// A decoded segment.
#[derive(Clone, Debug)]
pub struct Segment {
    pub header: SegmentHeader,
    /// Records grouped by stream, offsets consecutive within a stream.
    pub records: Vec<StoredRecord>,
    /// Per stream, in stream order: the index range of its records in `records` (a sorted
    /// list, not a map: most segments hold one or two streams, and cached segments are many).
    pub streams: Vec<(StreamId, std::ops::Range<usize>)>,
    /// Encoded size in bytes.
    pub size: usize,
}

impl Segment {
    /// The records of one stream in this segment.
    pub fn stream(&self, stream: &StreamId) -> &[StoredRecord] {
        match self.streams.binary_search_by(|(s, _)| s.cmp(stream)) {
            Ok(i) => &self.records[self.streams[i].1.clone()],
            Err(_) => &[],
        }
    }

    /// Per-stream summaries (what the index keeps).
    pub fn summaries(&self) -> impl Iterator<Item = StreamSummary> + '_ {
        self.streams.iter().map(|(stream, range)| {
            let recs = &self.records[range.clone()];
            StreamSummary {
                stream: stream.clone(),
                first_offset: recs[0].offset,
                count: recs.len() as u64,
                min_ts_ms: recs
                    .iter()
                    .map(|r| r.record.timestamp_ms)
                    .min()
                    .unwrap_or(0),
                max_ts_ms: recs
                    .iter()
                    .map(|r| r.record.timestamp_ms)
                    .max()
                    .unwrap_or(0),
                bytes: recs.iter().map(|r| r.record.size() as u64).sum(),
            }
        })
    }
}

impl Segment {
    /// Per-stream summaries of everything this segment commits: its own rows and the batch
    /// objects it references, merged into one summary per stream (the pieces of a stream are
    /// consecutive: batches in reference order, then the segment's own rows). `Err` names a
    /// stream whose pieces do not follow each other.
    pub fn committed_summaries(&self) -> Result<Vec<StreamSummary>, FormatError> {
        if self.header.refs.is_empty() || self.header.inline {
            return Ok(self.summaries().collect());
        }
        let mut pieces: BTreeMap<StreamId, Vec<StreamSummary>> = BTreeMap::new();
        for r in &self.header.refs {
            for (s, p) in &r.streams {
                pieces.entry(s.clone()).or_default().push(StreamSummary {
                    stream: s.clone(),
                    first_offset: Offset(p.first_offset),
                    count: p.count,
                    min_ts_ms: p.min_ts_ms,
                    max_ts_ms: p.max_ts_ms,
                    bytes: p.bytes,
                });
            }
        }
        for s in self.summaries() {
            pieces.entry(s.stream.clone()).or_default().push(s);
        }
        let mut out = Vec::with_capacity(pieces.len());
        for (stream, mut parts) in pieces {
            parts.sort_by_key(|p| p.first_offset);
            let mut merged = parts[0].clone();
            for p in &parts[1..] {
                if p.first_offset.0 != merged.first_offset.0 + merged.count {
                    return Err(FormatError::corrupt(
                        WHAT,
                        format!("stream {stream}: the committed pieces are not consecutive"),
                    ));
                }
                merged.count += p.count;
                merged.min_ts_ms = merged.min_ts_ms.min(p.min_ts_ms);
                merged.max_ts_ms = merged.max_ts_ms.max(p.max_ts_ms);
                merged.bytes += p.bytes;
            }
            out.push(merged);
        }
        Ok(out)
    }
}

/// What one segment holds of one stream.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamSummary {
    pub stream: StreamId,
    pub first_offset: Offset,
    pub count: u64,
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
    pub bytes: u64,
}

fn schema(metadata: HashMap<String, String>) -> Schema {
    Schema::new(vec![
        Field::new("stream", DataType::Utf8, false),
        Field::new("offset", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("key", DataType::Binary, true),
        Field::new("headers", DataType::Binary, true),
        Field::new("payload", DataType::Binary, false),
    ])
    .with_metadata(metadata)
}

/// Encode a segment. `streams` maps each stream to its first offset and records (in order).
pub fn encode<'a, I>(header: &SegmentHeader, streams: I) -> Result<Bytes, FormatError>
where
    I: IntoIterator<Item = (&'a StreamId, Offset, &'a [Record])>,
{
    let mut groups: Vec<(&StreamId, Offset, &[Record])> = streams.into_iter().collect();
    groups.sort_by(|a, b| a.0.cmp(b.0));
    let rows: usize = groups.iter().map(|g| g.2.len()).sum();
    let payload_bytes: usize = groups
        .iter()
        .flat_map(|g| g.2.iter())
        .map(|r| r.payload.len())
        .sum();

    let mut stream_b = StringBuilder::with_capacity(rows, rows * 8);
    let mut offset_v = Vec::with_capacity(rows);
    let mut ts_v = Vec::with_capacity(rows);
    let mut key_b = BinaryBuilder::with_capacity(rows, 0);
    let mut headers_b = BinaryBuilder::with_capacity(rows, 0);
    let mut payload_b = BinaryBuilder::with_capacity(rows, payload_bytes);
    for (stream, first, records) in &groups {
        for (i, r) in records.iter().enumerate() {
            stream_b.append_value(stream.as_str());
            offset_v.push(first.0 + i as u64);
            ts_v.push(r.timestamp_ms);
            key_b.append_option(r.key.as_deref());
            headers_b.append_option(r.headers.as_deref());
            payload_b.append_value(&r.payload);
        }
    }

    let trims: BTreeMap<&str, u64> = header
        .trims
        .iter()
        .map(|(s, o)| (s.as_str(), o.0))
        .collect();
    let version = if header.inline {
        3
    } else if header.batch || !header.refs.is_empty() {
        2
    } else {
        1
    };
    let format = if header.batch { "batch" } else { "segment" };
    let metadata = HashMap::from([
        ("wharf.format".to_string(), format.to_string()),
        ("wharf.version".to_string(), version.to_string()),
        ("wharf.seq".to_string(), header.seq.to_string()),
        ("wharf.commit_id".to_string(), header.commit_id.to_string()),
        ("wharf.writer".to_string(), header.writer.clone()),
        (
            "wharf.created_ms".to_string(),
            header.created_ms.to_string(),
        ),
        (
            "wharf.trims".to_string(),
            serde_json::to_string(&trims).unwrap_or_else(|_| "{}".into()),
        ),
    ]);
    let mut metadata = metadata;
    if header.barrier {
        metadata.insert("wharf.barrier".to_string(), "true".to_string());
    }
    if header.inline {
        if header.batch || header.refs.is_empty() {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: "inline rows without batch references".into(),
            });
        }
        metadata.insert("wharf.inline".to_string(), "true".to_string());
    }
    if !header.refs.is_empty() {
        metadata.insert(
            "wharf.batches".to_string(),
            serde_json::to_string(&header.refs).map_err(|e| FormatError::Invalid {
                what: WHAT,
                detail: e.to_string(),
            })?,
        );
    }
    if !header.compacts.is_empty() {
        let compacts: BTreeMap<&str, u64> = groups
            .iter()
            .filter(|g| header.compacts.contains(g.0))
            .map(|g| (g.0.as_str(), g.1.0))
            .collect();
        if compacts.len() != header.compacts.len() {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: "a compacted stream has no rows".into(),
            });
        }
        metadata.insert(
            "wharf.compacts".to_string(),
            serde_json::to_string(&compacts).unwrap_or_else(|_| "{}".into()),
        );
    }
    let schema = Arc::new(schema(metadata));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(stream_b.finish()),
        Arc::new(UInt64Array::from(offset_v)),
        Arc::new(TimestampMillisecondArray::from(ts_v).with_timezone("UTC")),
        Arc::new(key_b.finish()),
        Arc::new(headers_b.finish()),
        Arc::new(payload_b.finish()),
    ];
    let invalid = |e: arrow_schema::ArrowError| FormatError::Invalid {
        what: WHAT,
        detail: e.to_string(),
    };
    let mut out = Vec::with_capacity(payload_bytes + rows * 48 + 1024);
    {
        let mut writer = FileWriter::try_new(&mut out, &schema).map_err(invalid)?;
        if rows > 0 {
            let batch = RecordBatch::try_new(schema.clone(), columns).map_err(invalid)?;
            writer.write(&batch).map_err(invalid)?;
        }
        writer.finish().map_err(invalid)?;
    }
    Ok(Bytes::from(out))
}

/// Decode a segment and check its invariants.
pub fn decode(bytes: Bytes) -> Result<Segment, FormatError> {
    let size = bytes.len();
    let reader =
        FileReader::try_new(Cursor::new(bytes), None).map_err(|e| FormatError::corrupt(WHAT, e))?;
    let schema = reader.schema();
    let meta = schema.metadata();
    let get = |k: &str| {
        meta.get(k)
            .ok_or_else(|| FormatError::corrupt(WHAT, format!("missing metadata {k}")))
    };
    let batch = match get("wharf.format")?.as_str() {
        "segment" => false,
        "batch" => true,
        _ => return Err(FormatError::corrupt(WHAT, "not a wharf segment")),
    };
    let version: u32 = get("wharf.version")?
        .parse()
        .map_err(|e| FormatError::corrupt(WHAT, e))?;
    if version == 0 || version > SEGMENT_VERSION || (batch && version < 2) {
        return Err(FormatError::UnsupportedVersion {
            what: WHAT,
            found: version,
            supported: SEGMENT_VERSION,
        });
    }
    let parse_i = |k: &str| -> Result<i64, FormatError> {
        get(k)?.parse().map_err(|e| FormatError::corrupt(WHAT, e))
    };
    let trims_raw: BTreeMap<String, u64> =
        serde_json::from_str(get("wharf.trims")?).map_err(|e| FormatError::corrupt(WHAT, e))?;
    let mut trims = BTreeMap::new();
    for (s, o) in trims_raw {
        trims.insert(
            StreamId::new(s).map_err(|e| FormatError::corrupt(WHAT, e))?,
            Offset(o),
        );
    }
    // Optional: absent on segments that are not compaction commits.
    let compacts_raw: BTreeMap<String, u64> = match meta.get("wharf.compacts") {
        Some(s) => serde_json::from_str(s).map_err(|e| FormatError::corrupt(WHAT, e))?,
        None => BTreeMap::new(),
    };
    let mut compact_firsts = BTreeMap::new();
    for (s, o) in compacts_raw {
        compact_firsts.insert(
            StreamId::new(s).map_err(|e| FormatError::corrupt(WHAT, e))?,
            Offset(o),
        );
    }
    let refs: Vec<BatchRef> = match meta.get("wharf.batches") {
        Some(s) => serde_json::from_str(s).map_err(|e| FormatError::corrupt(WHAT, e))?,
        None => Vec::new(),
    };
    let inline = meta.get("wharf.inline").is_some_and(|v| v == "true");
    if inline && (version < 3 || batch || refs.is_empty()) {
        return Err(FormatError::corrupt(
            WHAT,
            "wharf.inline on an object that is not a version-3 segment with batches",
        ));
    }
    let header = SegmentHeader {
        barrier: meta.get("wharf.barrier").is_some_and(|v| v == "true"),
        inline,
        refs,
        batch,
        compacts: compact_firsts.keys().cloned().collect(),
        seq: u64::try_from(parse_i("wharf.seq")?).map_err(|e| FormatError::corrupt(WHAT, e))?,
        commit_id: get("wharf.commit_id")?
            .parse()
            .map_err(|e| FormatError::corrupt(WHAT, e))?,
        writer: get("wharf.writer")?.clone(),
        created_ms: parse_i("wharf.created_ms")?,
        trims,
    };

    let mut records = Vec::new();
    let mut streams: BTreeMap<StreamId, std::ops::Range<usize>> = BTreeMap::new();
    let mut current: Option<StreamId> = None;
    for batch in reader {
        let batch = batch.map_err(|e| FormatError::corrupt(WHAT, e))?;
        let col = |i: usize| batch.column(i).as_any();
        let (Some(stream), Some(offset), Some(ts), Some(key), Some(headers), Some(payload)) = (
            col(0).downcast_ref::<StringArray>(),
            col(1).downcast_ref::<UInt64Array>(),
            col(2).downcast_ref::<TimestampMillisecondArray>(),
            col(3).downcast_ref::<BinaryArray>(),
            col(4).downcast_ref::<BinaryArray>(),
            col(5).downcast_ref::<BinaryArray>(),
        ) else {
            return Err(FormatError::corrupt(WHAT, "unexpected column types"));
        };
        for i in 0..batch.num_rows() {
            let name = stream.value(i);
            if current.as_ref().is_none_or(|c| c.as_str() != name) {
                let id = StreamId::new(name).map_err(|e| FormatError::corrupt(WHAT, e))?;
                if streams.contains_key(&id) {
                    return Err(FormatError::corrupt(WHAT, "stream rows are not grouped"));
                }
                streams.insert(id.clone(), records.len()..records.len());
                current = Some(id);
            }
            let Some(id) = current.clone() else { continue };
            let off = Offset(offset.value(i));
            if let Some(prev) = records.last().filter(|r: &&StoredRecord| r.stream == id)
                && prev.offset.0 + 1 != off.0
            {
                return Err(FormatError::corrupt(
                    WHAT,
                    format!("stream {id}: offset {off} follows {}", prev.offset),
                ));
            }
            let opt = |a: &BinaryArray| (!a.is_null(i)).then(|| Bytes::copy_from_slice(a.value(i)));
            records.push(StoredRecord {
                stream: id.clone(),
                offset: off,
                record: Record {
                    timestamp_ms: ts.value(i),
                    key: opt(key),
                    headers: opt(headers),
                    payload: Bytes::copy_from_slice(payload.value(i)),
                },
            });
            if let Some(r) = streams.get_mut(&id) {
                r.end = records.len();
            }
        }
    }
    if inline {
        // Every committed batch's rows are here, where its reference says.
        for r in &header.refs {
            for (s, part) in &r.streams {
                let rows = streams.get(s).map(|range| &records[range.clone()]);
                let first = rows
                    .and_then(|r| r.first())
                    .map_or(u64::MAX, |r| r.offset.0);
                let end = rows.and_then(|r| r.last()).map_or(0, |r| r.offset.0 + 1);
                if part.first_offset < first || part.first_offset + part.count > end {
                    return Err(FormatError::corrupt(
                        WHAT,
                        format!(
                            "stream {s}: batch {} of {} is not among the rows",
                            r.n, r.writer
                        ),
                    ));
                }
            }
        }
    }
    for (s, first) in &compact_firsts {
        let recs = streams.get(s).map(|r| &records[r.clone()]);
        if recs.and_then(|r| r.first()).map(|r| r.offset) != Some(*first) {
            return Err(FormatError::corrupt(
                WHAT,
                format!("compacted stream {s} does not start at {first}"),
            ));
        }
    }
    Ok(Segment {
        header,
        records,
        streams: streams.into_iter().collect(),
        size,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header(seq: u64) -> SegmentHeader {
        SegmentHeader {
            seq,
            commit_id: Uuid::from_u128(seq as u128),
            writer: "test".into(),
            created_ms: 1_700_000_000_000,
            trims: BTreeMap::new(),
            compacts: BTreeSet::new(),
            refs: Vec::new(),
            batch: false,
            barrier: false,
            inline: false,
        }
    }

    fn record_strategy() -> impl Strategy<Value = Record> {
        (
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(ts, k, h, p)| Record {
                timestamp_ms: ts,
                key: k.map(Bytes::from),
                headers: h.map(Bytes::from),
                payload: Bytes::from(p),
            })
    }

    proptest! {
        #[test]
        fn round_trip(
            groups in proptest::collection::btree_map(
                "[a-z]{1,6}", (0u64..1_000_000, proptest::collection::vec(record_strategy(), 1..8)), 0..5),
            trim in proptest::option::of(0u64..100),
        ) {
            let mut h = header(7);
            if let Some(t) = trim && t % 3 == 1 {
                // Version 2: a segment that also commits a batch object, or a batch itself.
                h.refs.push(BatchRef {
                    writer: "w.1".into(),
                    n: t,
                    streams: BTreeMap::from([(
                        StreamId::new("x").expect("valid"),
                        RefStream { first_offset: t, count: 2, min_ts_ms: -1, max_ts_ms: 5, bytes: 9 },
                    )]),
                });
            }
            h.batch = trim.is_some_and(|t| t % 3 == 2);
            h.barrier = h.batch && trim.is_some_and(|t| t % 2 == 0);
            let ids: Vec<(StreamId, u64, Vec<Record>)> = groups
                .into_iter()
                .map(|(s, (o, r))| (StreamId::new(s).expect("valid"), o, r))
                .collect();
            if let (Some(t), Some(first)) = (trim, ids.first()) {
                h.trims.insert(first.0.clone(), Offset(t));
                h.compacts.insert(first.0.clone());
            }
            let bytes = encode(&h, ids.iter().map(|(s, o, r)| (s, Offset(*o), r.as_slice())))
                .expect("encode");
            let seg = decode(bytes).expect("decode");
            prop_assert_eq!(&seg.header, &h);
            for (s, o, recs) in &ids {
                let got = seg.stream(s);
                prop_assert_eq!(got.len(), recs.len());
                for (i, (g, r)) in got.iter().zip(recs).enumerate() {
                    prop_assert_eq!(g.offset, Offset(o + i as u64));
                    prop_assert_eq!(&g.record, r);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(Bytes::from(bytes));
        }
    }

    #[test]
    fn truncated_segment_is_corrupt_not_a_panic() {
        let s = StreamId::new("a").expect("valid");
        let recs = vec![Record::new(1, "hello"); 3];
        let bytes = encode(&header(1), [(&s, Offset(0), recs.as_slice())]).expect("encode");
        for cut in [0, 8, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(bytes.slice(..cut)).is_err(), "cut at {cut} decoded");
        }
    }
}
