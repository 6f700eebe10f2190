//! Criterion benchmarks of the log's hot path: segment encode/decode and durable append.
//!
//! `cargo bench -p wharf-log --bench append`. Throughput end to end (many producers, a fixed
//! rate, ack latency percentiles, PUTs per second) is measured by `wharf-load` instead.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wharf_log::{Log, LogSettings, Store, SystemClock};
use wharf_log_format::{
    Offset, Record, StreamId,
    segment::{self, SegmentHeader},
};

fn records(n: usize, size: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::new(i as i64, Bytes::from(vec![b'x'; size])))
        .collect()
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("segment");
    let stream = StreamId::new("bench").expect("id");
    for size in [100usize, 1024] {
        let recs = records(1000, size);
        let header = SegmentHeader {
            seq: 1,
            commit_id: uuid::Uuid::nil(),
            writer: "bench".into(),
            created_ms: 0,
            trims: Default::default(),
            compacts: Default::default(),
            ..Default::default()
        };
        g.throughput(Throughput::Elements(recs.len() as u64));
        g.bench_with_input(BenchmarkId::new("encode_1000", size), &recs, |b, recs| {
            b.iter(|| segment::encode(&header, [(&stream, Offset(0), recs.as_slice())]))
        });
        let bytes =
            segment::encode(&header, [(&stream, Offset(0), recs.as_slice())]).expect("encode");
        g.bench_with_input(BenchmarkId::new("decode_1000", size), &bytes, |b, bytes| {
            b.iter(|| segment::decode(bytes.clone()))
        });
    }
    g.finish();
}

fn durable_append(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = rt.block_on(async {
        let store = Store::open(&format!("file://{}", dir.path().display())).expect("store");
        let settings = LogSettings {
            linger: Some(Duration::ZERO),
            ..LogSettings::default()
        };
        Log::open_with(store, settings, Arc::new(SystemClock))
            .await
            .expect("log")
    });
    let stream = StreamId::new("bench").expect("id");
    let mut g = c.benchmark_group("append_file_fsync");
    g.sample_size(20);
    for batch in [1usize, 100, 1000] {
        let recs = records(batch, 100);
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("records_100B", batch), &recs, |b, recs| {
            b.to_async(&rt)
                .iter(|| log.append_many(&stream, recs.clone()))
        });
    }
    g.finish();
}

criterion_group!(benches, codec, durable_append);
criterion_main!(benches);
