//! Background readers (an adapter's wills and takeover followers): while the process counts no
//! client of the log they poll the store at the idle pace, so an idle tenant costs almost no
//! requests; once a client is counted they are back at `poll_interval`, and a client's
//! arrival wakes one that sleeps at the idle pace.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use wharf_log::{Log, LogSettings, Store, StoreKind, SystemClock};
use wharf_log_format::{Offset, Record, StreamId};
use wharf_log_testkit::{FaultConfig, FaultStore};

fn settings() -> LogSettings {
    LogSettings {
        poll_interval: Duration::from_millis(10),
        idle_poll_interval: Duration::from_secs(60),
        linger: Some(Duration::ZERO),
        ..LogSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_readers_of_a_log_without_clients_leave_the_store_alone() {
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let counted = Arc::new(FaultStore::new(inner.clone(), FaultConfig::default()));
    let reader = Log::open_with(
        Store::new(counted.clone(), StoreKind::Memory, "memory://"),
        settings(),
        Arc::new(SystemClock),
    )
    .await
    .expect("open reader");
    // Another process's log on the same store.
    let writer = Log::open_with(
        Store::new(inner, StoreKind::Memory, "memory://"),
        settings(),
        Arc::new(SystemClock),
    )
    .await
    .expect("open writer");
    let stream = StreamId::new("mqtt-wills").expect("stream");
    let mut tail = reader.tail(&stream, Offset(0)).background();
    let before = counted.stats.calls.load(Ordering::Relaxed);
    let first = tokio::time::timeout(Duration::from_millis(500), tail.next_batch(10)).await;
    assert!(first.is_err(), "nothing to read yet");
    writer
        .append(&stream, Record::new(0, b"will".to_vec()))
        .await
        .expect("append");
    let idle = tokio::time::timeout(Duration::from_millis(500), tail.next_batch(10)).await;
    assert!(idle.is_err(), "an idle background reader polled");
    let calls = counted.stats.calls.load(Ordering::Relaxed) - before;
    // A foreground reader would have looked about 100 times in that second.
    assert!(calls <= 2, "{calls} store requests in 1 s without clients");

    // A client arrives: the sleeping reader wakes and finds the other process's record.
    let _client = reader.client();
    let got = tokio::time::timeout(Duration::from_secs(10), tail.next_batch(10))
        .await
        .expect("a background reader with clients reads at the poll interval")
        .expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].record.payload[..], b"will");
    // And reads the next one at the fast pace too.
    writer
        .append(&stream, Record::new(0, b"second".to_vec()))
        .await
        .expect("append");
    let got = tokio::time::timeout(Duration::from_secs(10), tail.next_batch(10))
        .await
        .expect("read while the client is counted")
        .expect("read");
    assert_eq!(&got[0].record.payload[..], b"second");
}
