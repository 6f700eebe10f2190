//! Golden fixtures: bytes written by format versions 1 and 2, committed to the repository.
//! Decoding them must keep working in every later build; re-encoding the JSON ones must give
//! the same bytes. Regenerate (only for a *new* version, never to paper over a change) with
//! `WHARF_BLESS=1 cargo test -p wharf-log-format --test golden`.

use std::{collections::BTreeMap, path::PathBuf};

use bytes::Bytes;
use uuid::Uuid;
use wharf_log_format::{
    Epoch, Offset, Record, StreamId,
    acks::AckSet,
    catalog::CatalogEntry,
    checkpoint::Checkpoint,
    cursor::CursorState,
    journal::{self, EntryKind, External, FileHeader, FileIndex, Parsed},
    json::{self, Versioned},
    lease::LeaseRecord,
    segment::{self, BatchRef, RefStream, SegmentHeader},
};

fn fixture(name: &str) -> PathBuf {
    // The directory at run time (cargo sets it), not the one this was built in: a shared
    // target directory can hold a build made in another clone.
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into()))
        .join("tests/fixtures")
        .join(name)
}

fn bless() -> bool {
    std::env::var_os("WHARF_BLESS").is_some()
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).expect("valid")
}

fn segment_v1() -> (SegmentHeader, Vec<(StreamId, Offset, Vec<Record>)>) {
    let header = SegmentHeader {
        seq: 42,
        commit_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        writer: "golden".into(),
        created_ms: 1_795_000_000_000,
        trims: BTreeMap::from([(sid("orders"), Offset(3))]),
        compacts: Default::default(),
        ..Default::default()
    };
    let groups = vec![
        (
            sid("orders"),
            Offset(7),
            vec![
                Record {
                    timestamp_ms: 1_795_000_000_001,
                    key: Some(Bytes::from_static(b"orders/eu")),
                    headers: Some(Bytes::from_static(&[0x00, 0x53, 0x70, 0xc0])),
                    payload: Bytes::from_static(b"{\"id\":1}"),
                },
                Record {
                    timestamp_ms: 1_795_000_000_002,
                    key: None,
                    headers: None,
                    payload: Bytes::from_static(&[0xff, 0x00, 0x01]),
                },
            ],
        ),
        (
            sid("telemetry~0"),
            Offset(0),
            vec![Record::new(1_795_000_000_003, Bytes::from_static(b"21.5"))],
        ),
    ];
    (header, groups)
}

#[test]
fn segment_v1_decodes() {
    let (header, groups) = segment_v1();
    let path = fixture("segment-v1.arrow");
    if bless() {
        let bytes = segment::encode(
            &header,
            groups.iter().map(|(s, o, r)| (s, *o, r.as_slice())),
        )
        .expect("encode");
        std::fs::write(&path, &bytes).expect("write fixture");
    }
    let bytes = std::fs::read(&path).expect("fixture present");
    let seg = segment::decode(Bytes::from(bytes)).expect("decode fixture");
    assert_eq!(seg.header, header);
    for (s, first, recs) in &groups {
        let got = seg.stream(s);
        assert_eq!(got.len(), recs.len());
        for (i, (g, r)) in got.iter().zip(recs).enumerate() {
            assert_eq!(g.offset, Offset(first.0 + i as u64));
            assert_eq!(&g.record, r);
        }
    }
}

#[test]
fn compaction_segment_v1_decodes() {
    let header = SegmentHeader {
        seq: 43,
        commit_id: Uuid::from_u128(7),
        writer: "golden".into(),
        created_ms: 1_795_000_000_100,
        trims: BTreeMap::new(),
        compacts: [sid("orders")].into(),
        ..Default::default()
    };
    let records = vec![
        Record::new(1_795_000_000_001, Bytes::from_static(b"a")),
        Record::new(1_795_000_000_002, Bytes::from_static(b"b")),
    ];
    let orders = sid("orders");
    let path = fixture("segment-v1-compaction.arrow");
    if bless() {
        let bytes =
            segment::encode(&header, [(&orders, Offset(7), records.as_slice())]).expect("encode");
        std::fs::write(&path, &bytes).expect("write fixture");
    }
    let seg = segment::decode(Bytes::from(std::fs::read(&path).expect("fixture present")))
        .expect("decode fixture");
    assert_eq!(seg.header, header);
    let got: Vec<_> = seg
        .stream(&orders)
        .iter()
        .map(|r| (r.offset, r.record.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Offset(7), records[0].clone()),
            (Offset(8), records[1].clone())
        ]
    );
}

fn check_json<T: Versioned + PartialEq + std::fmt::Debug>(name: &str, value: T) {
    check_json_with(name, value, json::encode)
}

fn check_json_with<T: Versioned + PartialEq + std::fmt::Debug>(
    name: &str,
    value: T,
    encode: fn(&T) -> Vec<u8>,
) {
    let path = fixture(name);
    if bless() {
        std::fs::write(&path, encode(&value)).expect("write fixture");
    }
    let bytes = std::fs::read(&path).expect("fixture present");
    let decoded: T = json::decode(&bytes).expect("decode fixture");
    assert_eq!(decoded, value, "{name} decodes to the same value");
    assert_eq!(encode(&value), bytes, "{name} encodes to the same bytes");
}

#[test]
fn json_objects_v1() {
    let mut cp = Checkpoint::default();
    let (mut header, groups) = segment_v1();
    header.seq = 1;
    header.trims.clear();
    let groups: Vec<_> = groups
        .into_iter()
        .map(|(s, _, r)| (s, Offset(0), r))
        .collect();
    let bytes = segment::encode(
        &header,
        groups.iter().map(|(s, o, r)| (s, *o, r.as_slice())),
    )
    .expect("encode");
    cp.apply(&segment::decode(bytes).expect("decode"))
        .expect("apply");
    // Written by version 1: no writers of batch objects.
    cp.version = 1;
    check_json_with("checkpoint-v1.json", cp, json::encode_compact);

    check_json(
        "cursor-v1.json",
        CursorState {
            version: 1,
            stream: sid("orders"),
            name: "workers".into(),
            generation: 9,
            epoch: Epoch(2),
            acks: AckSet {
                committed: 100,
                ranges: vec![(102, 105), (110, 111)],
            },
            updated_ms: 1_795_000_000_000,
            meta: None,
        },
    );
    // Owners may keep their own state with the position (MQTT sessions do).
    check_json(
        "cursor-v1-meta.json",
        CursorState {
            version: 1,
            stream: sid("orders"),
            name: "workers".into(),
            generation: 9,
            epoch: Epoch(2),
            acks: AckSet {
                committed: 100,
                ranges: vec![(102, 105), (110, 111)],
            },
            updated_ms: 1_795_000_000_000,
            meta: Some(serde_json::json!({"kind": "mqtt-session", "subscriptions": [["a/#", 1]]})),
        },
    );
    check_json(
        "lease-v1.json",
        LeaseRecord {
            version: 1,
            name: "session.client-1".into(),
            revision: 4,
            epoch: Epoch(2),
            holder: "adapter-a".into(),
            holder_id: "5b1f6c1e-0000-4000-8000-000000000001".into(),
            expires_ms: 1_795_000_010_000,
            released: false,
        },
    );
    check_json(
        "catalog-v1.json",
        CatalogEntry {
            version: 1,
            kind: "Address".into(),
            name: "orders".into(),
            revision: 1,
            deleted: false,
            updated_ms: 1_795_000_000_000,
            body: serde_json::json!({"apiVersion": "wharf/v1", "kind": "Address",
                "metadata": {"name": "orders", "tenant": "default"},
                "spec": {"type": "queue", "max_delivery": 5}}),
        },
    );
}

#[test]
fn newer_versions_are_refused_clearly() {
    let err = json::decode::<CursorState>(br#"{"version": 2, "anything": true}"#)
        .expect_err("future version");
    assert!(
        err.to_string()
            .contains("unsupported cursor format version 2"),
        "{err}"
    );
    let err = json::decode::<LeaseRecord>(b"not json").expect_err("garbage");
    assert!(err.to_string().contains("corrupt lease"), "{err}");
}

/// Version 2: a batch object, a segment that commits it by reference, and the checkpoint
/// after both (with its writer's series).
fn batch_v2() -> (SegmentHeader, Vec<Record>) {
    let header = SegmentHeader {
        seq: 5,
        commit_id: Uuid::from_u128(0x42),
        writer: "adapter-b.0123456789ab".into(),
        created_ms: 1_795_000_000_200,
        batch: true,
        ..Default::default()
    };
    let records = vec![
        Record {
            timestamp_ms: 1_795_000_000_201,
            key: Some(Bytes::from_static(b"sensors/1")),
            headers: Some(Bytes::from_static(&[0x01, 0x01])),
            payload: Bytes::from_static(b"21.5"),
        },
        Record::new(1_795_000_000_202, Bytes::from_static(b"22.0")),
    ];
    (header, records)
}

fn segment_v2() -> (SegmentHeader, Vec<Record>) {
    let header = SegmentHeader {
        seq: 1,
        commit_id: Uuid::from_u128(0x43),
        writer: "adapter-a".into(),
        created_ms: 1_795_000_000_300,
        refs: vec![BatchRef {
            writer: "adapter-b.0123456789ab".into(),
            n: 1,
            streams: BTreeMap::from([(
                sid("mqtt-default"),
                RefStream {
                    first_offset: 0,
                    count: 2,
                    min_ts_ms: 1_795_000_000_201,
                    max_ts_ms: 1_795_000_000_202,
                    bytes: 30,
                },
            )]),
        }],
        ..Default::default()
    };
    // The sequencer's own record, after the batch's two.
    (
        header,
        vec![Record::new(1_795_000_000_301, Bytes::from_static(b"own"))],
    )
}

fn check_arrow(
    name: &str,
    header: &SegmentHeader,
    stream: &StreamId,
    first: u64,
    records: &[Record],
) {
    let path = fixture(name);
    if bless() {
        let bytes = segment::encode(header, [(stream, Offset(first), records)]).expect("encode");
        std::fs::write(&path, &bytes).expect("write fixture");
    }
    let seg = segment::decode(Bytes::from(std::fs::read(&path).expect("fixture present")))
        .expect("decode fixture");
    assert_eq!(&seg.header, header, "{name}");
    let got: Vec<_> = seg
        .stream(stream)
        .iter()
        .map(|r| (r.offset.0, r.record.clone()))
        .collect();
    let want: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (first + i as u64, r.clone()))
        .collect();
    assert_eq!(got, want, "{name}");
}

/// The checkpoint after applying the segment fixture `name` to an empty one.
fn checkpoint_after(name: &str) -> Checkpoint {
    let seg = segment::decode(Bytes::from(
        std::fs::read(fixture(name)).expect("fixture present"),
    ))
    .expect("decode");
    let mut cp = Checkpoint::default();
    cp.apply(&seg).expect("apply");
    cp
}

#[test]
fn batch_and_segment_v2_decode_and_checkpoint_v2_round_trips() {
    let stream = sid("mqtt-default");
    let (bh, brecs) = batch_v2();
    check_arrow("batch-v2.arrow", &bh, &stream, 0, &brecs);
    let (sh, srecs) = segment_v2();
    check_arrow("segment-v2.arrow", &sh, &stream, 2, &srecs);
    // The checkpoint after the segment: the batch's records are offsets 0 and 1, ours 2.
    let cp = checkpoint_after("segment-v2.arrow");
    let idx = cp.stream(&stream).expect("indexed");
    assert_eq!(
        (idx.next_offset, idx.entries.len(), idx.entries[0].count),
        (3, 1, 3)
    );
    assert_eq!(cp.writers["adapter-b.0123456789ab"].committed, 1);
    assert!(cp.batch_is_live("adapter-b.0123456789ab", 1));
    check_json_with("checkpoint-v2.json", cp, json::encode_compact);
}

/// A segment of version 3: it commits batch 1 of `adapter-b` (the batch of `batch_v2`) and
/// holds its rows, then its own record.
#[test]
fn segment_v3_holds_the_rows_of_the_batches_it_commits() {
    let stream = sid("mqtt-default");
    let (mut header, own) = segment_v2();
    header.inline = true;
    header.commit_id = Uuid::from_u128(0x44);
    let (_, batch_records) = batch_v2();
    let mut rows = batch_records.clone();
    rows.extend(own);
    check_arrow("segment-v3.arrow", &header, &stream, 0, &rows);
    let cp = checkpoint_after("segment-v3.arrow");
    let idx = cp.stream(&stream).expect("indexed");
    assert_eq!(
        (idx.next_offset, idx.entries.len(), idx.entries[0].count),
        (3, 1, 3),
        "the rows are counted once"
    );
    assert_eq!(cp.writers["adapter-b.0123456789ab"].committed, 1);
    assert!(
        !cp.batch_is_live("adapter-b.0123456789ab", 1),
        "nobody reads the batch object again"
    );
    // A version-3 segment whose reference points outside its rows is refused.
    let mut bad = header.clone();
    bad.refs[0]
        .streams
        .get_mut(&stream)
        .expect("part")
        .first_offset = 5;
    let bytes = segment::encode(&bad, [(&stream, Offset(0), rows.as_slice())]).expect("encode");
    assert!(segment::decode(bytes).is_err());
}

/// A journal file of version 1: header, two segments, an external one, a void later claim of
/// segment 1, a seal; and the index of that file.
#[test]
fn journal_v1_decodes() {
    let magic = 0x0123_4567_89ab_cdef;
    let header = FileHeader {
        number: 7,
        entry_magic: magic,
        created_ms: 1_795_000_000_000,
    };
    let external = External::new("00000000000000000003.00ff.arrow".into(), b"large segment");
    let entries: Vec<(EntryKind, &str, Vec<u8>)> = vec![
        (
            EntryKind::Object,
            "segments/00000000000000000001.arrow",
            b"segment one".to_vec(),
        ),
        (
            EntryKind::Object,
            "segments/00000000000000000002.arrow",
            b"segment two".to_vec(),
        ),
        (
            EntryKind::External,
            "segments/00000000000000000003.arrow",
            external.encode(),
        ),
        (
            EntryKind::Object,
            "segments/00000000000000000001.arrow",
            b"late claim".to_vec(),
        ),
        (EntryKind::Seal, "", Vec::new()),
    ];
    let mut expected = header.encode().to_vec();
    let mut index = Vec::new();
    for (i, (kind, key, body)) in entries.iter().enumerate() {
        let at = expected.len() as u64;
        let e =
            journal::encode(magic, *kind, key, body, 1_795_000_000_001 + i as i64).expect("encode");
        if i < 3 {
            index.push((
                key.to_string(),
                *kind as u8,
                at + (journal::ENTRY_HEADER_LEN + key.len()) as u64,
                body.len() as u32,
                journal::checksum(body),
                1_795_000_000_001 + i as i64,
            ));
        }
        expected.extend_from_slice(&e);
    }
    let idx = FileIndex {
        version: journal::VERSION,
        file: 7,
        entry_magic: magic,
        entries: index,
    };
    if bless() {
        std::fs::write(fixture("journal-v1.wal"), &expected).expect("bless");
        std::fs::write(fixture("journal-v1.idx"), idx.encode()).expect("bless");
    }
    let file = std::fs::read(fixture("journal-v1.wal")).expect("fixture");
    assert_eq!(file, expected, "the journal encoding changed");
    assert_eq!(
        FileHeader::decode(&file[..journal::FILE_HEADER_LEN]).expect("header"),
        header
    );
    let mut at = journal::FILE_HEADER_LEN;
    let mut found = Vec::new();
    while at < file.len() {
        match journal::parse(&file[at..], magic, true) {
            Parsed::Entry(e) => {
                let body = file[at + e.body_offset..at + e.body_offset + e.body_len].to_vec();
                found.push((e.kind, e.key.clone(), body));
                at += e.len;
            }
            other => panic!("at {at}: {other:?}"),
        }
    }
    assert_eq!(
        found,
        entries
            .iter()
            .map(|(k, key, b)| (*k, key.to_string(), b.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(External::decode(&found[2].2).expect("external"), external);
    let idx_bytes = std::fs::read(fixture("journal-v1.idx")).expect("fixture");
    assert_eq!(FileIndex::decode(&idx_bytes).expect("index"), idx);
}
