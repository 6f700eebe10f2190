//! Segments carry the rows of the batch objects they commit (format version 3): a process
//! that reads another writer's records fetches the segment only, never the batch object.

use std::{sync::Arc, time::Duration};

use object_store::memory::InMemory;
use wharf_log::{Log, LogSettings, Store, StoreKind};
use wharf_log_format::{Offset, Record, StreamId};
use wharf_log_testkit::{FaultConfig, FaultStore};

async fn open(store: Arc<dyn object_store::ObjectStore>) -> Log {
    let settings = LogSettings {
        poll_interval: Duration::from_millis(20),
        ..LogSettings::default()
    };
    Log::open_with(
        Store::new(store, StoreKind::Memory, "memory://"),
        settings,
        Arc::new(wharf_log::SystemClock),
    )
    .await
    .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_committed_batches_fetch_segments_only() {
    let memory: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let s = StreamId::new("orders").expect("s");
    // The sequencer: the first to append.
    let sequencer = open(memory.clone()).await;
    sequencer
        .append(&s, Record::new(0, b"seq-0".to_vec()))
        .await
        .expect("append");
    // Another writer: its appends are batch objects the sequencer finds and commits.
    let writer = open(memory.clone()).await;
    for i in 0..5 {
        writer
            .submit(&s, vec![Record::new(0, format!("w-{i}").into_bytes())])
            .await
            .expect("submit")
            .durable()
            .await
            .expect("durable");
    }
    sequencer
        .append(&s, Record::new(0, b"seq-1".to_vec()))
        .await
        .expect("append");
    // Wait until everything is committed: 7 records in the stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sequencer.stream(&s).map_or(0, |i| i.next_offset) < 7 {
        assert!(tokio::time::Instant::now() < deadline, "not committed");
        sequencer.refresh().await.expect("refresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A third process reads everything, counting what it asks the store.
    let counting = Arc::new(FaultStore::new(memory.clone(), FaultConfig::default()));
    let reader = open(counting.clone()).await;
    reader.refresh().await.expect("refresh");
    let got: Vec<String> = reader
        .read(&s, Offset(0), 100)
        .await
        .expect("read")
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.record.payload).to_string())
        .collect();
    let mut expected = vec!["seq-0".to_string()];
    expected.extend((0..5).map(|i| format!("w-{i}")));
    expected.push("seq-1".into());
    let mut sorted = got.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "every record once");
    // The writer's records are in its order.
    let mine: Vec<&String> = got.iter().filter(|p| p.starts_with("w-")).collect();
    assert_eq!(
        mine,
        (0..5)
            .map(|i| format!("w-{i}"))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>()
    );
    let kinds = counting.stats.kinds();
    assert!(
        kinds.get("get segments").copied().unwrap_or(0) > 0,
        "the reader read segments: {kinds:?}"
    );
    assert_eq!(
        kinds.get("get batches").copied().unwrap_or(0),
        0,
        "no batch object was fetched: {kinds:?}"
    );
}
