//! The conformance suite: what every store must do for the log to be correct. Run it with
//! [`run`] against a factory of fresh, empty stores.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use wharf_log::{
    ErrorKind, Log, LogSettings, ManualClock, Store, SystemClock, format::checkpoint::Retention,
};
use wharf_log_format::{Offset, Record, StreamId};

use crate::{FaultConfig, FaultStore};

/// Settings that make the suite quick: short linger, frequent checkpoints, fast polling.
pub fn quick_settings() -> LogSettings {
    LogSettings {
        linger: Some(Duration::from_millis(1)),
        flush_interval: Some(Duration::ZERO),
        checkpoint_every: 4,
        poll_interval: Duration::from_millis(20),
        retry_backoff: Duration::from_millis(2),
        commit_timeout: Duration::from_millis(200),
        sequencer_ttl: Duration::from_secs(1),
        sequencer_idle: Duration::from_secs(2),
        ..LogSettings::default()
    }
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).expect("valid stream id")
}

fn rec(payload: String) -> Record {
    Record {
        timestamp_ms: 0,
        key: Some(Bytes::from_static(b"k")),
        headers: None,
        payload: Bytes::from(payload),
    }
}

async fn open(store: &Store) -> Log {
    Log::open_with(store.clone(), quick_settings(), Arc::new(SystemClock))
        .await
        .expect("open log")
}

/// Open through a store that injects faults: opening may itself hit them, and a real process
/// would retry too.
async fn open_retrying(store: &Store, settings: &LogSettings) -> Log {
    loop {
        if let Ok(l) = Log::open_with(store.clone(), settings.clone(), Arc::new(SystemClock)).await
        {
            break l;
        }
    }
}

async fn open_with_clock(store: &Store, clock: ManualClock) -> Log {
    Log::open_with(store.clone(), quick_settings(), Arc::new(clock))
        .await
        .expect("open")
}

/// Run every case against fresh stores from `fresh`.
pub async fn run(name: &str, fresh: &dyn Fn() -> Store) {
    macro_rules! case {
        ($f:ident) => {
            eprintln!("conformance[{name}]: {}", stringify!($f));
            $f(&fresh()).await;
        };
    }
    case!(conditional_put_is_honoured);
    case!(append_then_read_back);
    case!(reopen_sees_everything_via_checkpoint);
    case!(concurrent_writers_share_a_stream);
    case!(tail_sees_local_and_remote_appends);
    case!(tails_follow_several_streams);
    case!(readers_share_one_poll);
    case!(read_from_time);
    case!(cursors_merge_and_survive_reopen);
    case!(a_cursor_created_twice_at_once_keeps_the_first_start);
    case!(cursor_take_over_fences_the_previous_holder);
    case!(cursors_are_listed_and_deleted);
    case!(leases_expire_and_fence);
    case!(retired_leases_leave_no_objects);
    case!(blocks_split_a_stream_between_processes);
    case!(catalog_put_list_watch_delete);
    case!(tenants_share_nothing_but_the_bucket);
    case!(retention_trims);
    case!(garbage_collection_frees_trimmed_segments);
    case!(compaction_rehomes_records_and_frees_mixed_segments);
    case!(faults_lose_and_duplicate_nothing);
    case!(many_writers_split_data_from_ordering);
    case!(sequencer_dies_and_wakes_up_late);
    case!(batch_faults_lose_and_duplicate_nothing);
    case!(an_append_that_waits_for_its_offset_orders_after_every_acknowledgement);
}

/// Append to another stream until a persisted checkpoint covers every segment written so far
/// (`what` names them in the failure).
async fn append_until_checkpointed(log: &Log, what: &str) {
    let head = log.segment_seq();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while log.last_checkpoint() < head {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint covers {what}"
        );
        log.append(&sid("filler"), rec("x".into()))
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn conditional_put_is_honoured(store: &Store) {
    store
        .verify_conditional_put()
        .await
        .expect("store must honour put-if-absent");
}

async fn append_then_read_back(store: &Store) {
    let log = open(store).await;
    let streams = [sid("a"), sid("b"), sid("c")];
    let mut tasks = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let log = log.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for n in 0..50 {
                offsets.push(
                    log.append(&s, rec(format!("{i}-{n}")))
                        .await
                        .expect("append"),
                );
            }
            offsets
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let offsets = t.await.expect("join");
        assert_eq!(
            offsets,
            (0..50).map(Offset).collect::<Vec<_>>(),
            "stream {i}: dense offsets"
        );
    }
    let many = log
        .append_many(&streams[0], (0..10).map(|n| rec(format!("m{n}"))).collect())
        .await
        .expect("append_many");
    assert_eq!(many, Offset(50));
    for (i, s) in streams.iter().enumerate() {
        let got = log.read(s, Offset(0), 1000).await.expect("read");
        let want = if i == 0 { 60 } else { 50 };
        assert_eq!(got.len(), want);
        for (n, r) in got.iter().enumerate().take(50) {
            assert_eq!(r.offset, Offset(n as u64));
            assert_eq!(r.record.payload, Bytes::from(format!("{i}-{n}")));
            assert_eq!(r.record.key.as_deref(), Some(&b"k"[..]));
        }
        let tail = log.read(s, Offset(45), 3).await.expect("read from offset");
        assert_eq!(
            tail.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            vec![45, 46, 47]
        );
    }
    assert!(
        log.read(&sid("nothing"), Offset(0), 10)
            .await
            .expect("read")
            .is_empty()
    );
}

async fn reopen_sees_everything_via_checkpoint(store: &Store) {
    let log = open(store).await;
    let s = sid("orders");
    for n in 0..20 {
        log.append(&s, rec(format!("{n}"))).await.expect("append");
    }
    assert!(
        log.last_checkpoint() >= 16,
        "a checkpoint is written every 4 segments"
    );
    // Count what a fresh open reads: one list of checkpoints, one checkpoint, and the few
    // segments after it -- not the whole history (which would be more than 20 calls).
    // Whether refresh reads ahead depends on how old the segments found are, that is on how
    // fast this store answered: asked one at a time, segments 17..=20 and the miss after
    // them are 5 GETs; read ahead (windows of 1, 1, 2 and 4) they are 8. Either way at most
    // 10 calls.
    let counting = Arc::new(FaultStore::new(
        store.object_store.clone(),
        FaultConfig::default(),
    ));
    let counted = Store::new(counting.clone(), store.kind, store.url.clone());
    let again = open(&counted).await;
    let calls = counting
        .stats
        .calls
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(calls <= 10, "open made {calls} store calls for 20 segments");
    assert_eq!(again.stream(&s).expect("stream").next_offset, 20);
    let got = again.read(&s, Offset(0), 100).await.expect("read");
    assert_eq!(got.len(), 20);
    // And the reopened handle keeps appending where the first stopped.
    assert_eq!(
        again.append(&s, rec("x".into())).await.expect("append"),
        Offset(20)
    );
    log.refresh().await.expect("refresh");
    assert_eq!(
        log.append(&s, rec("y".into())).await.expect("append"),
        Offset(21)
    );
}

/// However many readers of a process wait for other processes' segments, the process asks
/// the store at most about twice per poll interval (not once per reader per interval), and
/// every reader still gets the record another process appends.
async fn readers_share_one_poll(store: &Store) {
    let counting = Arc::new(FaultStore::new(
        store.object_store.clone(),
        FaultConfig::default(),
    ));
    let counted = Store::new(counting.clone(), store.kind, store.url.clone());
    let reader = open(&counted).await;
    let writer = open(store).await;
    let s = sid("polled");
    const READERS: usize = 50;
    let waiting: Vec<_> = (0..READERS)
        .map(|_| {
            let mut tail = reader.tail(&s, Offset(0));
            tokio::spawn(async move { tail.next_batch(10).await })
        })
        .collect();
    let calls = || {
        counting
            .stats
            .calls
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = calls();
    let idle = Duration::from_secs(1);
    tokio::time::sleep(idle).await;
    let polled = calls() - before;
    // 20 ms interval: at most one poll per 10 ms, so about 100 in a second (each one GET of
    // the next segment number); one poll per reader per interval would be 2,500.
    assert!(
        polled <= 150,
        "{READERS} idle readers made {polled} store calls in {idle:?}"
    );
    writer.append(&s, rec("x".into())).await.expect("append");
    for w in waiting {
        let got = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a reader saw the record")
            .expect("task")
            .expect("read");
        assert_eq!(got.len(), 1);
    }
}

async fn concurrent_writers_share_a_stream(store: &Store) {
    let s = sid("shared");
    let mut tasks = Vec::new();
    for w in 0..4 {
        let log = open(store).await;
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..40 {
                let o = log
                    .append(&s, rec(format!("w{w}-{n}")))
                    .await
                    .expect("append");
                acked.push((o, format!("w{w}-{n}")));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("join"));
    }
    let reader = open(store).await;
    let got = reader.read(&s, Offset(0), 1000).await.expect("read");
    assert_eq!(got.len(), 160, "every acknowledged record, once");
    let by_offset: BTreeMap<u64, String> = got
        .iter()
        .map(|r| {
            (
                r.offset.0,
                String::from_utf8_lossy(&r.record.payload).into_owned(),
            )
        })
        .collect();
    assert_eq!(by_offset.len(), 160, "no offset twice");
    for (o, payload) in &acked {
        assert_eq!(
            by_offset.get(&o.0),
            Some(payload),
            "ack said {payload} is at {o}"
        );
    }
    for w in 0..4 {
        let mine: Vec<u64> = got
            .iter()
            .filter(|r| r.record.payload.starts_with(format!("w{w}-").as_bytes()))
            .map(|r| r.offset.0)
            .collect();
        assert!(mine.windows(2).all(|p| p[0] < p[1]), "writer {w} in order");
    }
}

async fn tail_sees_local_and_remote_appends(store: &Store) {
    let a = open(store).await;
    let b = open(store).await;
    let s = sid("t");
    let mut local = a.tail(&s, Offset(0));
    let mut remote = b.tail(&s, Offset(0));
    let writer = a.clone();
    let s2 = s.clone();
    tokio::spawn(async move {
        for n in 0..5 {
            writer
                .append(&s2, rec(format!("{n}")))
                .await
                .expect("append");
        }
    });
    for t in [&mut local, &mut remote] {
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let batch = tokio::time::timeout(Duration::from_secs(20), t.next_batch(10))
                .await
                .expect("tail delivers within 20s")
                .expect("tail");
            seen.extend(batch.into_iter().map(|r| r.offset.0));
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(t.position(), Offset(5));
    }
}

async fn tails_follow_several_streams(store: &Store) {
    let a = open(store).await;
    let b = open(store).await;
    let (x, y) = (sid("tx"), sid("ty"));
    a.append(&x, rec("x0".into())).await.expect("append");
    let mut local = a.tails();
    let mut remote = b.tails();
    for t in [&mut local, &mut remote] {
        assert_eq!(t.follow(&x, Offset(0)), 0);
        assert_eq!(t.follow(&y, Offset(0)), 1);
        assert_eq!(t.follow(&x, Offset(7)), 0, "a stream is followed once");
    }
    let writer = a.clone();
    let (x2, y2) = (x.clone(), y.clone());
    tokio::spawn(async move {
        for n in 0..4 {
            let s = if n % 2 == 0 { &y2 } else { &x2 };
            writer.append(s, rec(format!("{n}"))).await.expect("append");
        }
    });
    for t in [&mut local, &mut remote] {
        let mut seen: Vec<(usize, u64)> = Vec::new();
        while seen.len() < 5 {
            let (i, batch) = tokio::time::timeout(Duration::from_secs(20), t.next_batch(10))
                .await
                .expect("tails deliver within 20s")
                .expect("tails");
            seen.extend(batch.into_iter().map(|r| (i, r.offset.0)));
        }
        seen.sort();
        assert_eq!(seen, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]);
        assert_eq!(t.position(0), Some(Offset(3)));
        assert_eq!(t.position(1), Some(Offset(2)));
        // Read again from a position.
        t.seek(0, Offset(1));
        let (i, again) = t.next_batch(10).await.expect("read again");
        assert_eq!(i, 0);
        assert_eq!(again.first().map(|r| r.offset), Some(Offset(1)));
    }
}

async fn read_from_time(store: &Store) {
    let log = open(store).await;
    let s = sid("timed");
    for (n, ts) in [1000, 2000, 3000, 4000].into_iter().enumerate() {
        let r = Record {
            timestamp_ms: ts,
            ..rec(format!("{n}"))
        };
        log.append(&s, r).await.expect("append");
    }
    assert_eq!(
        log.offset_for_time(&s, 0).await.expect("t"),
        Some(Offset(0))
    );
    assert_eq!(
        log.offset_for_time(&s, 2500).await.expect("t"),
        Some(Offset(2))
    );
    assert_eq!(
        log.offset_for_time(&s, 4000).await.expect("t"),
        Some(Offset(3))
    );
    assert_eq!(log.offset_for_time(&s, 4001).await.expect("t"), None);
}

async fn cursors_merge_and_survive_reopen(store: &Store) {
    let a = open(store).await;
    let b = open(store).await;
    let s = sid("q");
    for n in 0..10 {
        a.append(&s, rec(format!("{n}"))).await.expect("append");
    }
    let mut ca = a.cursor(&s, "workers").await.expect("cursor");
    let mut cb = b.cursor(&s, "workers").await.expect("cursor");
    // Two processes ack out of order, concurrently.
    for o in [1, 3, 5] {
        ca.ack(Offset(o));
    }
    for o in [0, 2, 7] {
        cb.ack(Offset(o));
    }
    ca.commit().await.expect("commit a");
    cb.commit().await.expect("commit b (merges a)");
    assert_eq!(cb.committed(), Offset(4));
    let c = open(store)
        .await
        .cursor(&s, "workers")
        .await
        .expect("reopen");
    for o in 0..10 {
        assert_eq!(
            c.is_acked(Offset(o)),
            [0, 1, 2, 3, 5, 7].contains(&o),
            "offset {o}"
        );
    }
    assert_eq!(
        c.unacked(Offset(0), Offset(10), 10),
        vec![Offset(4), Offset(6), Offset(8), Offset(9)]
    );
    ca.reload().await.expect("reload");
    assert!(ca.is_acked(Offset(7)));
    assert!(matches!(a.cursor(&s, "bad/name").await, Err(e) if e.kind() == ErrorKind::Invalid));
}

/// Two processes start the same new cursor at once (a shared subscription's first members on
/// two adapters), each at its own head: the first creation wins and the other takes its start,
/// rather than merging the two (the later start would win, and the records between the two
/// starts would be skipped by both).
async fn a_cursor_created_twice_at_once_keeps_the_first_start(store: &Store) {
    let a = open(store).await;
    let b = open(store).await;
    let s = sid("shared");
    for n in 0..10 {
        a.append(&s, rec(format!("{n}"))).await.expect("append");
    }
    // a looked (nothing there) with its head at 10 ...
    let mut late = a
        .cursor_from(&s, "group", Offset(10))
        .await
        .expect("cursor");
    assert!(!late.exists());
    // ... while b created it at 4 ...
    let first = b
        .cursor_starting_at(&s, "group", Offset(4))
        .await
        .expect("create");
    assert_eq!(first.committed(), Offset(4));
    // ... so a's creation loses and takes b's start.
    late.create().await.expect("create loses");
    assert!(late.exists());
    assert_eq!(late.committed(), Offset(4));
    assert!(!late.is_acked(Offset(4)) && late.is_acked(Offset(3)));
    late.ack(Offset(4));
    late.commit().await.expect("commit");
    let reopened = open(store).await.cursor(&s, "group").await.expect("reopen");
    assert_eq!(reopened.committed(), Offset(5));
    assert!(!reopened.is_acked(Offset(9)));
}

/// The newest claimant of a cursor wins at once (an MQTT session taken over by a reconnect):
/// it sees the committed acks and meta, and the previous holder can no longer commit.
async fn cursor_take_over_fences_the_previous_holder(store: &Store) {
    let a = open(store).await;
    let b = open(store).await;
    let s = sid("sessions");
    let mut old = a.cursor(&s, "client").await.expect("cursor");
    assert!(!old.exists());
    old.take_over().await.expect("first claim");
    old.ack(Offset(0));
    old.set_meta(Some(serde_json::json!({"subscriptions": ["a/#"]})));
    old.commit().await.expect("commit");
    let mut new = b.cursor(&s, "client").await.expect("cursor");
    assert!(new.exists());
    new.take_over().await.expect("take over");
    assert!(new.epoch() > old.epoch());
    assert!(new.is_acked(Offset(0)));
    assert_eq!(
        new.meta(),
        Some(&serde_json::json!({"subscriptions": ["a/#"]}))
    );
    old.ack(Offset(1));
    assert!(
        matches!(old.commit().await, Err(e) if e.kind() == ErrorKind::Fenced),
        "the previous holder is fenced"
    );
    // Two claimants racing from the same generation: both succeed in turn, the later one
    // with the higher epoch, and the earlier is fenced.
    let mut x = a.cursor(&s, "client").await.expect("cursor");
    let mut y = b.cursor(&s, "client").await.expect("cursor");
    x.take_over().await.expect("x");
    y.take_over().await.expect("y");
    assert!(y.epoch() > x.epoch());
    x.ack(Offset(2));
    assert!(matches!(x.commit().await, Err(e) if e.kind() == ErrorKind::Fenced));
    y.ack(Offset(2));
    y.commit().await.expect("the winner commits");
    // A taker that records itself: the update sees the latest committed meta (y's, written
    // after z opened its handle) and its result is what the take-over wrote.
    let mut z = a.cursor(&s, "client").await.expect("cursor");
    y.set_meta(Some(serde_json::json!({"subscriptions": ["b/#"]})));
    y.commit().await.expect("commit");
    z.take_over_updating(|meta| {
        let mut m = meta.unwrap_or_default();
        m["owner"] = "z".into();
        Some(m)
    })
    .await
    .expect("z");
    let seen = b.cursor(&s, "client").await.expect("cursor");
    assert_eq!(
        seen.meta(),
        Some(&serde_json::json!({"subscriptions": ["b/#"], "owner": "z"}))
    );
}

async fn retired_leases_leave_no_objects(store: &Store) {
    let log = Log::open_with(store.clone(), quick_settings(), Arc::new(SystemClock))
        .await
        .expect("open");
    let ttl = Duration::from_secs(10);
    let mut lease = log
        .acquire_lease("block-7", "a", ttl)
        .await
        .expect("acquire")
        .expect("free");
    lease.renew(ttl).await.expect("renew");
    lease.retire().await;
    assert!(
        log.lease_state("block-7").await.expect("state").is_none(),
        "every version deleted"
    );
}

/// Competing readers by blocks: two processes never read the same unacknowledged record,
/// a retired block leaves no lease behind, and a dead holder's blocks are read again by the
/// other once their leases expire (only what was not acknowledged).
async fn blocks_split_a_stream_between_processes(store: &Store) {
    let clock = ManualClock::new(1_000_000);
    let open_at = |clock: ManualClock| open_with_clock(store, clock);
    let a = open_at(clock.clone()).await;
    let q = sid("blocked");
    for i in 0..10 {
        a.append(&q, rec(format!("{i}"))).await.expect("append");
    }
    let b = open_at(clock.clone()).await;
    let ttl = Duration::from_secs(10);
    let blocks = |log: &Log, holder: &'static str| {
        let log = log.clone();
        let q = q.clone();
        async move {
            let cursor = log.cursor(&q, "competing").await.expect("cursor");
            log.blocks(cursor, "blocked-q", holder, ttl, 4)
        }
    };
    let offsets = |rs: Vec<wharf_log_format::StoredRecord>| -> Vec<u64> {
        rs.into_iter().map(|r| r.offset.0).collect()
    };
    let mut ba = blocks(&a, "a").await;
    let mut bb = blocks(&b, "b").await;
    // a takes blocks 0 and 1 (two at most), b the open block 2.
    let got_a = offsets(ba.read(100, |_| false).await);
    assert_eq!(got_a, (0..8).collect::<Vec<_>>());
    let got_b = offsets(bb.read(100, |_| false).await);
    assert_eq!(got_b, vec![8, 9], "b reads only what a does not hold");
    assert!(bb.read(100, |_| false).await.is_empty());

    // a acknowledges block 0: retired, its lease objects deleted.
    for o in 0..4 {
        ba.ack(Offset(o));
    }
    ba.commit().await.expect("commit");
    assert!(
        a.lease_state("blocked-q.0").await.expect("state").is_none(),
        "a finished block leaves no lease"
    );
    // a dies holding block 1 (4..8, not acknowledged); b acknowledges 8 and 9.
    drop(ba);
    bb.ack(Offset(8));
    bb.ack(Offset(9));
    bb.commit().await.expect("commit");
    a.append(&q, rec("10".into())).await.expect("append");
    a.append(&q, rec("11".into())).await.expect("append");
    b.refresh().await.expect("refresh");
    assert_eq!(
        offsets(bb.read(100, |_| false).await),
        vec![10, 11],
        "block 1 is a's until its lease expires"
    );
    clock.advance_ms(11_000);
    let again = offsets(bb.read(100, |o| o.0 == 5).await);
    assert_eq!(
        again,
        vec![4, 6, 7],
        "a's unacknowledged records, less what b skips"
    );
    // b stops: the blocks it holds are free for the next reader at once.
    bb.close().await;
    let mut bc = blocks(&b, "c").await;
    let rest = offsets(bc.read(100, |_| false).await);
    assert_eq!(
        rest,
        vec![4, 5, 6, 7, 10, 11],
        "only unacknowledged records, again"
    );

    // c keeps 4 (block 1) unacknowledged; the blocks after it are found however many of
    // them are finished.
    for o in [5, 6, 7, 10, 11] {
        bc.ack(Offset(o));
    }
    bc.commit().await.expect("commit");
    for i in 12..60 {
        b.append(&q, rec(format!("{i}"))).await.expect("append");
    }
    let mut bd = blocks(&b, "d").await;
    let mut all = Vec::new();
    loop {
        let got = offsets(bd.read(100, |_| false).await);
        if got.is_empty() {
            break;
        }
        for &o in &got {
            bd.ack(Offset(o));
        }
        bd.commit().await.expect("commit");
        all.extend(got);
    }
    assert_eq!(
        all,
        (12..60).collect::<Vec<_>>(),
        "12 blocks past a held one"
    );
}

/// Cursors are listed by name prefix; deleting one removes what its handle saw, and a
/// generation written since by another process keeps the cursor alive.
async fn cursors_are_listed_and_deleted(store: &Store) {
    let a = open(store).await;
    let b = open(store).await;
    let s = sid("listed");
    for name in ["sess.a", "sess.b", "other"] {
        let mut c = a.cursor(&s, name).await.expect("cursor");
        c.ack(Offset(0));
        c.commit().await.expect("commit");
    }
    assert_eq!(
        a.cursor_names(&s, "sess.").await.expect("names"),
        ["sess.a", "sess.b"]
    );
    // b moves sess.b on after a read it: a's stale handle does not delete it.
    let stale = a.cursor(&s, "sess.b").await.expect("cursor");
    let mut moved = b.cursor(&s, "sess.b").await.expect("cursor");
    moved.ack(Offset(1));
    moved.commit().await.expect("commit");
    stale.delete().await;
    let again = b.cursor(&s, "sess.b").await.expect("cursor");
    assert!(
        again.exists() && again.is_acked(Offset(1)),
        "newer generation kept"
    );
    a.cursor(&s, "sess.a").await.expect("cursor").delete().await;
    assert!(!a.cursor(&s, "sess.a").await.expect("cursor").exists());
    assert_eq!(
        a.cursor_names(&s, "sess.").await.expect("names"),
        ["sess.b"]
    );
    assert_eq!(
        a.cursor_names(&s, "").await.expect("names"),
        ["other", "sess.b"]
    );
}

/// Tenants' logs live side by side in one store: the same stream, cursor, lease and catalog
/// names in each stay apart, and the default tenant's garbage collection (over the root)
/// leaves the other tenants' segments alone.
async fn tenants_share_nothing_but_the_bucket(store: &Store) {
    assert!(store.tenant("Not_A_Label").is_err());
    let settings = LogSettings {
        gc_grace: Duration::ZERO,
        ..quick_settings()
    };
    let open_tenant = |name: &str| {
        let t = store.tenant(name).expect("tenant store");
        Log::open_with(t, settings.clone(), Arc::new(SystemClock))
    };
    let root = open_tenant("default").await.expect("open");
    let acme = open_tenant("acme").await.expect("open");
    let globex = open_tenant("globex").await.expect("open");
    let s = sid("mqtt-default");
    for (log, who) in [(&root, "root"), (&acme, "acme"), (&globex, "globex")] {
        for n in 0..3 {
            log.append(&s, rec(format!("{who}-{n}")))
                .await
                .expect("append");
        }
        log.catalog()
            .put("Address", "orders", serde_json::json!({ "owner": who }))
            .await
            .expect("catalog put");
        let mut c = log.cursor(&s, "sess").await.expect("cursor");
        c.ack(Offset(0));
        c.commit().await.expect("commit");
    }
    let lease = acme
        .acquire_lease("upkeep", "a", Duration::from_secs(60))
        .await
        .expect("acquire");
    assert!(lease.is_some());
    assert!(
        globex
            .acquire_lease("upkeep", "g", Duration::from_secs(60))
            .await
            .expect("acquire")
            .is_some(),
        "a lease of the same name in another tenant is another lease"
    );
    assert_eq!(store.tenants().await.expect("tenants"), ["acme", "globex"]);
    // The root's housekeeping over everything it has: nothing of acme's goes.
    root.trim(BTreeMap::from([(s.clone(), Offset(3))]))
        .await
        .expect("trim");
    append_until_checkpointed(&root, "the trim").await;
    root.compact(64).await.expect("compact");
    root.collect_garbage().await.expect("gc");
    let reopened = open_tenant("acme").await.expect("reopen");
    for (log, who) in [(&reopened, "acme"), (&globex, "globex")] {
        let got = log.read(&s, Offset(0), 100).await.expect("read");
        let payloads: Vec<_> = got
            .iter()
            .map(|r| String::from_utf8_lossy(&r.record.payload).into_owned())
            .collect();
        assert_eq!(payloads, [0, 1, 2].map(|n| format!("{who}-{n}")), "{who}");
        let entry = log
            .catalog()
            .get("Address", "orders")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(entry.body["owner"], who);
        let c = log.cursor(&s, "sess").await.expect("cursor");
        assert!(c.is_acked(Offset(0)) && !c.is_acked(Offset(1)));
    }
}

async fn leases_expire_and_fence(store: &Store) {
    let clock = ManualClock::new(1_000_000);
    let open_at = |clock: ManualClock| open_with_clock(store, clock);
    let a = open_at(clock.clone()).await;
    let b = open_at(clock.clone()).await;
    let ttl = Duration::from_secs(10);
    let mut la = a
        .acquire_lease("session-x", "a", ttl)
        .await
        .expect("acquire")
        .expect("free");
    assert!(
        b.acquire_lease("session-x", "b", ttl)
            .await
            .expect("acquire")
            .is_none(),
        "held"
    );
    la.renew(ttl).await.expect("renew");
    let s = sid("guarded");
    let mut ca = a.cursor(&s, "owner").await.expect("cursor");
    ca.fence(&la).await.expect("fence a");
    ca.ack(Offset(0));
    ca.commit().await.expect("commit as holder");

    // a pauses past expiry; b takes over with a higher epoch and fences the cursor.
    clock.advance_ms(11_000);
    let lb = b
        .acquire_lease("session-x", "b", ttl)
        .await
        .expect("acquire")
        .expect("expired");
    assert!(lb.epoch() > la.epoch());
    assert!(!la.is_valid());
    let mut cb = b.cursor(&s, "owner").await.expect("cursor");
    cb.fence(&lb).await.expect("fence b");

    // The zombie resumes: its writes are refused, and change nothing.
    let err = la.renew(ttl).await.expect_err("zombie renew");
    assert_eq!(err.kind(), ErrorKind::Fenced);
    ca.ack(Offset(1));
    let err = ca.commit().await.expect_err("zombie commit");
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    let check = open_at(clock.clone())
        .await
        .cursor(&s, "owner")
        .await
        .expect("cursor");
    assert!(!check.is_acked(Offset(1)), "fenced ack must not land");
    assert_eq!(check.epoch(), lb.epoch());

    // Release lets the next holder in at once.
    lb.release().await.expect("release");
    let lc = a
        .acquire_lease("session-x", "a", ttl)
        .await
        .expect("acquire")
        .expect("released");
    assert_eq!(lc.epoch().0, la.epoch().0 + 2);
}

async fn catalog_put_list_watch_delete(store: &Store) {
    let log = open(store).await;
    let cat = log.catalog();
    let mut watch = cat.watch("Address");
    let body = serde_json::json!({"apiVersion": "wharf/v1", "kind": "Address",
        "metadata": {"name": "orders"}, "spec": {"type": "queue"}});
    assert_eq!(
        cat.put("Address", "orders", body.clone())
            .await
            .expect("put"),
        1
    );
    assert_eq!(
        cat.put(
            "Address",
            "events",
            serde_json::json!({"spec": {"type": "topic"}})
        )
        .await
        .expect("put"),
        1
    );
    let first = tokio::time::timeout(Duration::from_secs(20), watch.changes())
        .await
        .expect("watch")
        .expect("changes");
    assert_eq!(first.len(), 2);
    assert_eq!(
        cat.get("Address", "orders")
            .await
            .expect("get")
            .expect("exists")
            .body,
        body
    );
    let err = cat
        .put_if("Address", "orders", 0, body.clone())
        .await
        .expect_err("exists");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        cat.put_if("Address", "orders", 1, serde_json::json!({"v": 2}))
            .await
            .expect("cas"),
        2
    );
    assert!(cat.delete("Address", "events").await.expect("delete"));
    assert!(!cat.delete("Address", "events").await.expect("delete again"));
    let names: Vec<String> = cat
        .list("Address")
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["orders".to_string()]);
    let mut events = Vec::new();
    while events.len() < 2 {
        events.extend(
            tokio::time::timeout(Duration::from_secs(20), watch.changes())
                .await
                .expect("watch")
                .expect("changes"),
        );
    }
    assert!(events.contains(&wharf_log::CatalogEvent::Deleted {
        kind: "Address".into(),
        name: "events".into()
    }));
}

async fn retention_trims(store: &Store) {
    let clock = ManualClock::new(10_000);
    let log = Log::open_with(store.clone(), quick_settings(), Arc::new(clock.clone()))
        .await
        .expect("open");
    let s = sid("r");
    for n in 0..6 {
        let r = Record {
            timestamp_ms: clock_now(&clock),
            ..rec(format!("{n}"))
        };
        log.append(&s, r).await.expect("append");
        clock.advance_ms(1000);
    }
    // Age: at 16s, records older than 13.5s (offsets 0..=3, one per segment) go.
    let plan = log
        .apply_retention(|_| Retention {
            max_age_ms: Some(2500),
            max_bytes: None,
        })
        .await
        .expect("retention");
    assert_eq!(plan.get(&s), Some(&Offset(4)));
    let got = log.read(&s, Offset(0), 100).await.expect("read");
    assert_eq!(got.first().map(|r| r.offset), Some(Offset(4)));
    // Trims are commits: another process sees them.
    let other = open(store).await;
    assert_eq!(other.stream(&s).expect("stream").start_offset, 4);
    // Offsets are never reused after a trim.
    assert_eq!(
        log.append(&s, rec("after".into())).await.expect("append"),
        Offset(6)
    );
}

async fn garbage_collection_frees_trimmed_segments(store: &Store) {
    // Grace 0: checkpoints are old enough at once, and every view counts as stale.
    let settings = LogSettings {
        gc_grace: Duration::ZERO,
        ..quick_settings()
    };
    let open_gc = || Log::open_with(store.clone(), settings.clone(), Arc::new(SystemClock));
    let a = open_gc().await.expect("open");
    let stale = open_gc().await.expect("open"); // its view stays at segment 0
    let s = sid("gc");
    for n in 0..12 {
        a.append(&s, rec(format!("{n}"))).await.expect("append"); // one segment each
    }
    a.trim(BTreeMap::from([(s.clone(), Offset(10))]))
        .await
        .expect("trim");
    // GC works from persisted checkpoints: write segments until one covers the trim.
    append_until_checkpointed(&a, "the trim").await;
    let report = a.collect_garbage().await.expect("gc");
    // Segments 1..=10 held only trimmed records of gc; the trim commit holds no rows.
    assert_eq!(report.deleted_segments, 11, "{report:?}");
    assert_eq!(
        a.collect_garbage()
            .await
            .expect("gc again")
            .deleted_segments,
        0
    );
    let got = a.read(&s, Offset(0), 100).await.expect("read");
    assert_eq!(
        got.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
        vec![10, 11]
    );

    // The stale handle finds segment 1 gone, catches up from a checkpoint, and appends after
    // the head -- it never re-creates a deleted segment number.
    stale.refresh().await.expect("stale refresh");
    assert_eq!(stale.segment_seq(), a.segment_seq());
    assert_eq!(
        stale.append(&s, rec("late".into())).await.expect("append"),
        Offset(12)
    );
    a.refresh().await.expect("refresh");
    let got = a.read(&s, Offset(0), 100).await.expect("read");
    assert_eq!(
        got.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
        vec![10, 11, 12]
    );
    let fresh = open(store).await;
    assert_eq!(fresh.stream(&s).expect("gc").start_offset, 10);
}

async fn compaction_rehomes_records_and_frees_mixed_segments(store: &Store) {
    let settings = LogSettings {
        gc_grace: Duration::ZERO,
        compaction_min_age: 0,
        compaction_target_bytes: 4096,
        ..quick_settings()
    };
    let open_c = || Log::open_with(store.clone(), settings.clone(), Arc::new(SystemClock));
    let a = open_c().await.expect("open");
    let b = open_c().await.expect("open");
    let (x, y) = (sid("x"), sid("y"));
    // Two streams flushed together: every segment mixes them.
    for n in 0..20 {
        let px = a
            .submit(&x, vec![rec(format!("x{n}"))])
            .await
            .expect("submit");
        let py = a
            .submit(&y, vec![rec(format!("y{n}"))])
            .await
            .expect("submit");
        px.durable().await.expect("x");
        py.durable().await.expect("y");
    }
    let before_x = a.read(&x, Offset(0), 100).await.expect("read");
    let before_y = a.read(&y, Offset(0), 100).await.expect("read");
    assert!(
        a.stream(&x).expect("x").entries.len() >= 10,
        "many small entries"
    );

    let report = a.compact(100).await.expect("compact");
    assert_eq!(report.records, 40, "{report:?}");
    for s in [&x, &y] {
        assert_eq!(
            a.stream(s).expect("stream").entries.len(),
            1,
            "{s}: one entry after"
        );
    }
    assert_eq!(a.read(&x, Offset(0), 100).await.expect("read"), before_x);
    assert_eq!(a.read(&y, Offset(0), 100).await.expect("read"), before_y);
    // Another process applies the compaction commits identically.
    b.refresh().await.expect("refresh");
    assert_eq!(b.stream(&x), a.stream(&x));
    assert_eq!(
        b.read(&y, Offset(5), 3).await.expect("read"),
        before_y[5..8].to_vec()
    );
    assert_eq!(
        a.compact(100).await.expect("again").segments_written,
        0,
        "nothing left to compact"
    );

    // The mixed segments are no longer referenced: GC frees them.
    append_until_checkpointed(&a, "the compaction").await;
    let gc = a.collect_garbage().await.expect("gc");
    assert!(gc.deleted_segments >= 10, "{gc:?}");
    let fresh = open(store).await;
    assert_eq!(
        fresh.read(&x, Offset(0), 100).await.expect("read"),
        before_x
    );
    assert_eq!(
        a.append(&x, rec("after".into())).await.expect("append"),
        Offset(20)
    );
}

fn clock_now(c: &ManualClock) -> i64 {
    use wharf_log::Clock;
    c.now_ms()
}

async fn faults_lose_and_duplicate_nothing(store: &Store) {
    let faulty = Arc::new(FaultStore::new(
        store.object_store.clone(),
        FaultConfig {
            latency: Some(Duration::from_micros(100)..Duration::from_millis(3)),
            fail_before: 0.15,
            fail_after: 0.15,
            seed: 42,
        },
    ));
    let s = sid("faulty");
    let mut tasks = Vec::new();
    for w in 0..3 {
        let store = Store::new(faulty.clone(), store.kind, store.url.clone());
        let settings = LogSettings {
            retry_attempts: 4,
            ..quick_settings()
        };
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let log = open_retrying(&store, &settings).await;
            let mut acked = Vec::new();
            for n in 0..40 {
                let payload = format!("w{w}-{n}");
                if let Ok(o) = log.append(&s, rec(payload.clone())).await {
                    acked.push((o, payload));
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("join"));
    }
    let injected = faulty
        .stats
        .failed_before
        .load(std::sync::atomic::Ordering::Relaxed)
        + faulty
            .stats
            .failed_after
            .load(std::sync::atomic::Ordering::Relaxed);
    assert!(injected > 10, "faults were injected ({injected})");
    assert!(
        acked.len() > 60,
        "most appends succeed through retries ({})",
        acked.len()
    );
    let reader = open(store).await;
    let got = reader.read(&s, Offset(0), 10_000).await.expect("read");
    let mut payloads = HashSet::new();
    for r in &got {
        assert!(
            payloads.insert(r.record.payload.clone()),
            "duplicated: {:?}",
            r.record.payload
        );
    }
    let by_offset: BTreeMap<u64, Bytes> = got
        .iter()
        .map(|r| (r.offset.0, r.record.payload.clone()))
        .collect();
    for (o, p) in &acked {
        assert_eq!(
            by_offset.get(&o.0),
            Some(&Bytes::from(p.clone())),
            "acknowledged {p} lost"
        );
    }
}

/// What `writer` submitted to `stream`, in order: payloads `"{writer}:{stream}:{n}"`.
fn payload(writer: usize, stream: &StreamId, n: usize) -> String {
    format!("{writer}:{stream}:{n}")
}

/// Submit `count` records to each of `streams` with up to `window` in flight (the durable
/// path: acknowledged once stored, ordered later); returns the payloads acknowledged.
async fn submit_many(
    log: &Log,
    writer: usize,
    streams: &[StreamId],
    numbers: std::ops::Range<usize>,
    window: usize,
) -> Vec<String> {
    use futures::StreamExt;
    let mut in_flight = futures::stream::FuturesOrdered::new();
    let mut acked = Vec::new();
    for n in numbers {
        for s in streams {
            let p = payload(writer, s, n);
            match log.submit(s, vec![rec(p.clone())]).await {
                Ok(pending) => in_flight.push_back(async move { (pending.durable().await, p) }),
                Err(e) => panic!("submit: {e}"),
            }
            while in_flight.len() >= window {
                if let Some((r, p)) = in_flight.next().await
                    && r.is_ok()
                {
                    acked.push(p);
                }
            }
        }
    }
    while let Some((r, p)) = in_flight.next().await {
        if r.is_ok() {
            acked.push(p);
        }
    }
    acked
}

/// Wait (up to 30 s: a liveness bound, not a speed measure) until a fresh reader sees every
/// acknowledged payload, then check each is there exactly once and each writer's records are
/// in submission order per stream.
async fn check_acked_readable(store: &Store, streams: &[StreamId], acked: &[String]) {
    let reader = open(store).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        reader.refresh().await.expect("refresh");
        let mut got: Vec<(StreamId, u64, String)> = Vec::new();
        for s in streams {
            for r in reader.read(s, Offset(0), 1_000_000).await.expect("read") {
                got.push((
                    s.clone(),
                    r.offset.0,
                    String::from_utf8_lossy(&r.record.payload).into_owned(),
                ));
            }
        }
        let seen: HashSet<&str> = got.iter().map(|g| g.2.as_str()).collect();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|p| !seen.contains(p.as_str()))
            .collect();
        if missing.is_empty() {
            assert_eq!(seen.len(), got.len(), "a record is stored twice");
            // Per writer and stream, offsets follow submission order.
            let mut last: BTreeMap<(StreamId, String), (usize, u64)> = BTreeMap::new();
            for (s, offset, p) in &got {
                let mut parts = p.rsplitn(2, ':');
                let n: usize = parts.next().and_then(|n| n.parse().ok()).expect("payload");
                let who = parts.next().expect("payload").to_string();
                if let Some((prev_n, prev_o)) = last.insert((s.clone(), who.clone()), (n, *offset))
                {
                    assert!(
                        n > prev_n && *offset > prev_o,
                        "{who} on {s}: record {n} at {offset} after record {prev_n} at {prev_o}"
                    );
                }
            }
            for s in streams {
                let offsets: Vec<u64> = got.iter().filter(|g| &g.0 == s).map(|g| g.1).collect();
                assert!(
                    offsets.iter().enumerate().all(|(i, o)| *o == i as u64),
                    "{s}: offsets are dense from 0"
                );
            }
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} acknowledged records never became readable, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Several writers on one log at once, each with many flushes in flight: one of them
/// sequences (commits the numbered segments), the others put batch objects under their own
/// names and are acknowledged on those PUTs. Nothing is lost, nothing is doubled, and every
/// writer's records keep its order.
async fn many_writers_split_data_from_ordering(store: &Store) {
    let streams = [sid("orders"), sid("telemetry")];
    let mut tasks = Vec::new();
    for w in 0..6 {
        let log = open(store).await;
        let streams = streams.clone();
        tasks.push(tokio::spawn(async move {
            let acked = submit_many(&log, w, &streams, 0..60, 16).await;
            // Appends that need their offset (the takeover records of MQTT) still get it.
            let o = log
                .append(&streams[0], rec(payload(w, &sid("x"), 0)))
                .await
                .expect("append with offset");
            let read = log.read(&streams[0], o, 1).await.expect("read own");
            assert_eq!(
                read.first().map(|r| r.offset),
                Some(o),
                "offset is where it is"
            );
            (acked, log)
        }));
    }
    let mut acked = Vec::new();
    let mut logs = Vec::new();
    for t in tasks {
        let (a, log) = t.await.expect("join");
        assert_eq!(a.len(), 120, "every durable submission acknowledged");
        acked.extend(a);
        logs.push(log);
    }
    check_acked_readable(store, &streams, &acked).await;
    // The data went through batch objects: some writers were not the sequencer.
    let batches: Vec<_> = {
        use futures::TryStreamExt;
        store
            .object_store
            .list(Some(&object_store::path::Path::from("batches")))
            .try_collect::<Vec<_>>()
            .await
            .expect("list batches")
    };
    assert!(
        !batches.is_empty(),
        "non-sequencer writers put batch objects"
    );
    drop(logs);
}

/// The sequencer stops (frozen: it looks killed to everyone else) while writers keep
/// appending: their batches are committed by themselves and then by a new sequencer. When the
/// old one wakes up late it is a zombie: its writes lose the compare-and-swap, it catches up,
/// and its own next appends still land once, after everything else it had acknowledged.
async fn sequencer_dies_and_wakes_up_late(store: &Store) {
    let freezable = Arc::new(FaultStore::new(
        store.object_store.clone(),
        FaultConfig::default(),
    ));
    let frozen_store = Store::new(freezable.clone(), store.kind, store.url.clone());
    let a = Log::open_with(frozen_store, quick_settings(), Arc::new(SystemClock))
        .await
        .expect("open");
    let streams = [sid("jobs")];
    // A appends first: it takes the sequencer role.
    let mut acked = submit_many(&a, 0, &streams, 0..20, 4).await;
    let b = open(store).await;
    let c = open(store).await;
    let before = submit_many(&b, 1, &streams, 0..10, 4).await;
    acked.extend(before);
    freezable.freeze(true);
    // A is gone for everyone else; B and C go on.
    let (rb, rc) = tokio::join!(
        submit_many(&b, 1, &streams, 10..50, 8),
        submit_many(&c, 2, &streams, 0..40, 8)
    );
    assert_eq!(
        (rb.len(), rc.len()),
        (40, 40),
        "appends go on without the sequencer"
    );
    acked.extend(rb);
    acked.extend(rc);
    check_acked_readable(store, &streams, &acked).await;
    // The sequencer role moved on.
    let lease = b
        .lease_state(wharf_log::SEQUENCER_LEASE)
        .await
        .expect("lease");
    assert!(
        lease.is_some_and(|l| !l.holder.is_empty()),
        "someone holds the role"
    );
    // A wakes up: its next appends land once, after what it acknowledged before.
    freezable.freeze(false);
    let late = submit_many(&a, 0, &streams, 20..30, 4).await;
    assert_eq!(late.len(), 10, "the woken writer's appends succeed");
    acked.extend(late);
    check_acked_readable(store, &streams, &acked).await;
}

/// Lost responses and 503s on every kind of object the durable path writes (batch objects,
/// segments that reference them, the sequencer lease): nothing acknowledged is lost, nothing
/// is stored twice.
async fn batch_faults_lose_and_duplicate_nothing(store: &Store) {
    let streams = [sid("faulty-batches")];
    let mut tasks = Vec::new();
    for w in 0..3 {
        let faulty = Arc::new(FaultStore::new(
            store.object_store.clone(),
            FaultConfig {
                latency: Some(Duration::from_micros(100)..Duration::from_millis(3)),
                fail_before: 0.1,
                fail_after: 0.1,
                seed: 7 + w as u64,
            },
        ));
        let store = Store::new(faulty.clone(), store.kind, store.url.clone());
        let settings = LogSettings {
            retry_attempts: 6,
            ..quick_settings()
        };
        let streams = streams.clone();
        tasks.push(tokio::spawn(async move {
            let log = open_retrying(&store, &settings).await;
            // Enough appends that dozens of faults land (a writer that only writes makes
            // few requests besides its puts).
            let acked = submit_many(&log, w, &streams, 0..150, 8).await;
            let injected = faulty
                .stats
                .failed_before
                .load(std::sync::atomic::Ordering::Relaxed)
                + faulty
                    .stats
                    .failed_after
                    .load(std::sync::atomic::Ordering::Relaxed);
            (acked, injected, log)
        }));
    }
    let mut acked = Vec::new();
    let mut logs = Vec::new();
    let mut injected = 0;
    for t in tasks {
        let (a, i, log) = t.await.expect("join");
        acked.extend(a);
        injected += i;
        logs.push(log);
    }
    assert!(injected > 10, "faults were injected ({injected})");
    assert!(
        acked.len() > 300,
        "most submissions succeed through retries ({})",
        acked.len()
    );
    check_acked_readable(store, &streams, &acked).await;
    drop(logs);
}

/// A client acknowledged by writer X that moves to writer Y (an MQTT reconnect to another
/// adapter) must find what X acknowledged ordered before what it does on Y: Y's CONNECT
/// appends a record and waits for its offset, and once that returns, every batch any writer
/// acknowledged before is committed (Y has it in its own index, no refresh needed).
async fn an_append_that_waits_for_its_offset_orders_after_every_acknowledgement(store: &Store) {
    let s = sid("moving-client");
    let t = sid("connects");
    let sequencer = open(store).await;
    sequencer
        .append(&t, rec("first".into()))
        .await
        .expect("append");
    let x = open(store).await;
    let y = open(store).await;
    for round in 0..20 {
        // X acknowledges a publish (durable; its order is settled later)...
        let p = format!("x-{round}");
        x.submit(&s, vec![rec(p.clone())])
            .await
            .expect("submit")
            .durable()
            .await
            .expect("durable");
        // ...the client reconnects to Y, whose takeover record waits for its offset...
        y.append(&t, rec(format!("y-{round}")))
            .await
            .expect("append");
        // ...and by then X's publish is ordered: Y reads it without asking the store.
        let got = y.read(&s, Offset(0), 1000).await.expect("read");
        assert!(
            got.iter().any(|r| r.record.payload == p.as_bytes()),
            "round {round}: {p} was acknowledged before Y's append but is not ordered before it"
        );
    }
}
