//! What bounds a log's memory: `max_pending_bytes` for what is submitted and not yet durable
//! (a submission past the budget waits until earlier records are durable, so a producer
//! faster than the store waits instead of growing the process's memory), and `cache_bytes`
//! for decoded segments — whose records must not keep the buffers they were appended from.

use std::{sync::Arc, time::Duration};

use wharf_log::{Log, LogSettings, Store, StoreKind, SystemClock};
use wharf_log_format::{Record, StreamId};
use wharf_log_testkit::{FaultConfig, FaultStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_past_the_pending_budget_wait_for_durability() {
    // Every store call takes 300 ms: the first flush is in flight for that long.
    let slow = FaultStore::new(
        Arc::new(object_store::memory::InMemory::new()),
        FaultConfig {
            latency: Some(Duration::from_millis(300)..Duration::from_millis(301)),
            ..Default::default()
        },
    );
    let store = Store::new(Arc::new(slow), StoreKind::Memory, "memory://");
    let settings = LogSettings {
        max_segment_bytes: 4096,
        max_pending_bytes: 4096,
        linger: Some(Duration::ZERO),
        ..LogSettings::default()
    };
    let log = Log::open_with(store, settings, Arc::new(SystemClock))
        .await
        .expect("open");
    let stream = StreamId::new("s").expect("stream");
    let record = || Record::new(0, vec![7u8; 3000]);
    let first = log.submit(&stream, vec![record()]).await.expect("submit");
    // 3,000 more bytes would make 6,000 pending: the second submission waits.
    let second = tokio::spawn({
        let (log, stream) = (log.clone(), stream.clone());
        async move { log.submit(&stream, vec![record()]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!second.is_finished(), "submitted past the budget");
    first.durable().await.expect("first durable");
    let second = second.await.expect("task").expect("submit");
    assert_eq!(second.committed().await.expect("second durable").0, 1);
}

/// A record appended as a slice of a larger buffer (as adapters append slices of a
/// connection's read buffer) is cached as a copy of its own: the cache's budget counts what
/// it holds, not a read buffer behind each record.
#[tokio::test]
async fn cached_records_do_not_keep_the_buffers_they_came_from() {
    let store = Store::new(
        Arc::new(object_store::memory::InMemory::new()),
        StoreKind::Memory,
        "memory://",
    );
    let log = Log::open_with(store, LogSettings::default(), Arc::new(SystemClock))
        .await
        .expect("open");
    let stream = StreamId::new("s").expect("stream");
    let read_buffer = bytes::Bytes::from(vec![1u8; 64 * 1024]);
    let mut r = Record::new(0, read_buffer.slice(100..200));
    r.key = Some(read_buffer.slice(0..5));
    log.append(&stream, r).await.expect("append");
    let back = log
        .read(&stream, wharf_log_format::Offset(0), 1)
        .await
        .expect("read");
    let got = &back[0].record;
    assert_eq!(&got.payload[..], &read_buffer[100..200]);
    let within = |b: &bytes::Bytes| {
        let range = read_buffer.as_ptr_range();
        range.contains(&b.as_ptr())
    };
    assert!(
        !within(&got.payload),
        "the cached payload is a slice of the read buffer"
    );
    assert!(
        !within(got.key.as_ref().expect("key")),
        "the cached key too"
    );
}
