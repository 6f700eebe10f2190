//! Read-ahead: a process behind by many segments fetches several at once (a refresh that
//! finds old segments, a read of a stream spread over many small segments) and gets exactly
//! what fetching one at a time gives, in order; near the head a refresh asks for one segment
//! at a time, since a look for a segment that does not exist yet is a request too.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use object_store::memory::InMemory;
use wharf_log::{Log, LogSettings, ManualClock, Store, StoreKind};
use wharf_log_format::{Offset, Record, StreamId};
use wharf_log_testkit::{FaultConfig, FaultStore};

/// At most this many segments are fetched side by side (`READ_AHEAD` in the log).
const READ_AHEAD: u64 = 8;

/// Every GET of the reader takes 5 ms, so that GETs fetched side by side overlap.
fn slow() -> FaultConfig {
    FaultConfig {
        latency: Some(Duration::from_millis(5)..Duration::from_millis(6)),
        ..FaultConfig::default()
    }
}

async fn open(store: Arc<dyn object_store::ObjectStore>, clock: &ManualClock) -> Log {
    let settings = LogSettings {
        // Nothing here depends on polling; a long interval keeps "near the head" steady on a
        // slow machine (segments younger than the interval are near).
        poll_interval: Duration::from_secs(5),
        // The reader keeps almost nothing cached, so its reads fetch segments.
        cache_segments: 2,
        ..LogSettings::default()
    };
    Log::open_with(
        Store::new(store, StoreKind::Memory, "memory://"),
        settings,
        Arc::new(clock.clone()),
    )
    .await
    .expect("open")
}

/// Append one record per segment, `n` of them, the two streams interleaved (every third to
/// `t`); returns the payloads of each stream in order.
async fn write(log: &Log, s: &StreamId, t: &StreamId, n: usize) -> (Vec<String>, Vec<String>) {
    let (mut in_s, mut in_t) = (Vec::new(), Vec::new());
    for i in 0..n {
        let payload = format!("record {i}");
        let (stream, list) = if i % 3 == 2 {
            (t, &mut in_t)
        } else {
            (s, &mut in_s)
        };
        log.append(stream, Record::new(0, payload.clone().into_bytes()))
            .await
            .expect("append");
        list.push(payload);
    }
    (in_s, in_t)
}

#[tokio::test]
async fn a_reader_behind_many_segments_reads_exactly_what_was_written() {
    let memory: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let clock = ManualClock::new(1_700_000_000_000);
    let counting = Arc::new(FaultStore::new(memory.clone(), slow()));
    let reader = open(counting.clone(), &clock).await;
    let writer = open(memory, &clock).await;
    let (s, t) = (
        StreamId::new("s").expect("s"),
        StreamId::new("t").expect("t"),
    );
    let (in_s, in_t) = write(&writer, &s, &t, 40).await;
    let max_at_once = || counting.stats.max_gets_in_flight.swap(0, Ordering::SeqCst);
    let head = writer.segment_seq();

    // A minute later the reader catches up: the segments it finds are old, so it reads ahead.
    clock.advance_ms(60_000);
    let before = counting.stats.calls.load(Ordering::Relaxed);
    max_at_once();
    assert_eq!(reader.refresh().await.expect("refresh"), head);
    assert!(max_at_once() > 1, "segments were looked for side by side");
    let calls = counting.stats.calls.load(Ordering::Relaxed) - before;
    assert!(
        calls <= 40 + READ_AHEAD,
        "catching up on 40 segments took {calls} requests: at most one per segment and one \
         read-ahead window in vain"
    );

    // A read of many records fetches the segments they are in side by side.
    let all = reader.read(&s, Offset(0), 100).await.expect("read");
    assert_eq!(all.len(), in_s.len());
    assert!(max_at_once() > 1, "a read fetched segments side by side");

    // Every start and every limit gives the records one at a time would, in order.
    for (stream, expected) in [(&s, &in_s), (&t, &in_t)] {
        for from in 0..=expected.len() {
            for max in [1, 2, 5, 9, 100] {
                let got = reader
                    .read(stream, Offset(from as u64), max)
                    .await
                    .expect("read");
                let want = &expected[from..(from + max).min(expected.len())];
                let offsets: Vec<u64> = got.iter().map(|r| r.offset.0).collect();
                let payloads: Vec<String> = got
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.record.payload).into_owned())
                    .collect();
                assert_eq!(payloads, want, "{stream:?} from {from}, max {max}");
                assert_eq!(
                    offsets,
                    (from as u64..from as u64 + want.len() as u64).collect::<Vec<_>>(),
                    "{stream:?} from {from}, max {max}: offsets"
                );
            }
        }
    }
}

#[tokio::test]
async fn near_the_head_a_refresh_asks_for_one_segment_at_a_time() {
    let memory: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let clock = ManualClock::new(1_700_000_000_000);
    let counting = Arc::new(FaultStore::new(memory.clone(), slow()));
    let reader = open(counting.clone(), &clock).await;
    let writer = open(memory, &clock).await;
    let (s, t) = (
        StreamId::new("s").expect("s"),
        StreamId::new("t").expect("t"),
    );
    let calls = || counting.stats.calls.load(Ordering::Relaxed);
    let max_at_once = || counting.stats.max_gets_in_flight.swap(0, Ordering::SeqCst);

    // Four fresh segments: four looks that find one each and one that finds the end.
    write(&writer, &s, &t, 4).await;
    let before = calls();
    max_at_once();
    reader.refresh().await.expect("refresh");
    let near = calls() - before;
    assert_eq!(
        near, 5,
        "near the head: one look per segment and one past the end"
    );
    assert_eq!(max_at_once(), 1, "near the head: one look at a time");

    // Nothing new: one look.
    let before = calls();
    reader.refresh().await.expect("refresh");
    assert_eq!(calls() - before, 1, "an idle refresh asks once");

    // Four segments a minute old: read ahead, and still at most a window in vain.
    write(&writer, &s, &t, 4).await;
    clock.advance_ms(60_000);
    let before = calls();
    max_at_once();
    reader.refresh().await.expect("refresh");
    let behind = calls() - before;
    assert!(max_at_once() > 1, "behind: looks side by side");
    assert!(
        (5..=4 + READ_AHEAD).contains(&behind),
        "behind: {behind} requests for 4 segments"
    );
    assert_eq!(reader.segment_seq(), writer.segment_seq());
}
