//! The competing consumer as a whole (task, blocks, cursor) on an in-memory log: two
//! "adapters" (two `Competing` with their own lease holder) share one stream.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use tokio::sync::mpsc;
use wharf_adapter_core::competing::{Competing, Outcome, Pending, Rules, Settings, Source, Start};
use wharf_adapter_core::runtime::Background;
use wharf_log::{Log, Store};
use wharf_log_format::{Offset, Record, StoredRecord, StreamId};

#[derive(Debug, PartialEq)]
enum Out {
    Msg {
        member: u64,
        position: u64,
        payload: Bytes,
        count: u32,
    },
    Drained(u64),
}

#[derive(Default)]
struct Test {
    dead: Arc<Mutex<Vec<u64>>>,
}

impl Rules for Test {
    type Item = Bytes;
    type Out = Out;

    fn accept(&self, _stream: usize, r: StoredRecord) -> Option<Bytes> {
        (!r.record.payload.starts_with(b"skip")).then_some(r.record.payload)
    }

    fn deliver(&self, member: u64, position: u64, pending: &Pending<Bytes>) -> Out {
        Out::Msg {
            member,
            position,
            payload: pending.item.clone(),
            count: pending.delivery_count,
        }
    }

    fn drained(&self, member: u64) -> Option<Out> {
        Some(Out::Drained(member))
    }

    async fn max_delivery(&mut self) -> Option<u32> {
        Some(2)
    }

    async fn dead_letter(&mut self, pending: &Pending<Bytes>) -> bool {
        self.dead.lock().expect("lock").push(pending.position);
        true
    }
}

type Consumers = Competing<&'static str, Test, mpsc::UnboundedSender<Out>>;

fn adapter(log: &Log, holder: &str) -> Consumers {
    Competing::new(
        log.clone(),
        Settings {
            holder: holder.into(),
            lease_ttl: Duration::from_millis(600),
            block: 10,
            read_ahead: 16,
            commit_every: Duration::from_millis(20),
            background: Background::new(),
        },
    )
}

fn stream() -> StreamId {
    StreamId::new("jobs").expect("id")
}

fn start(dead: &Arc<Mutex<Vec<u64>>>) -> impl FnOnce() -> (Test, Vec<Source>) + use<> {
    let dead = dead.clone();
    move || {
        let source = Source {
            stream: stream(),
            cursor: "q".into(),
            lease_prefix: "q.jobs".into(),
            start: Start::First,
        };
        (Test { dead }, vec![source])
    }
}

async fn log_with(payloads: impl IntoIterator<Item = String>) -> Log {
    let log = Log::open(Store::open("memory://").expect("store"))
        .await
        .expect("log");
    let records = payloads
        .into_iter()
        .map(|p| Record::new(1, Bytes::from(p)))
        .collect();
    log.append_many(&stream(), records).await.expect("append");
    log
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Out>) -> Option<Out> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .ok()
        .flatten()
}

/// Every message that is for the consumer goes to exactly one member, whichever adapter it
/// is on; the rest are skipped.
#[tokio::test]
async fn each_message_goes_to_one_member_across_adapters() {
    let log = log_with((0..100).map(|i| {
        if i % 10 == 3 {
            format!("skip {i}")
        } else {
            format!("m{i}")
        }
    }))
    .await;
    let dead = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = (adapter(&log, "a"), adapter(&log, "b"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let members = [
        a.join("jobs", 1, 1000, tx.clone(), start(&dead)),
        a.join("jobs", 2, 1000, tx.clone(), start(&dead)),
        b.join("jobs", 3, 1000, tx.clone(), start(&dead)),
    ];
    let mut got: BTreeMap<u64, (u64, Bytes)> = BTreeMap::new();
    while got.len() < 90 {
        let Some(Out::Msg {
            member,
            position,
            payload,
            ..
        }) = recv(&mut rx).await
        else {
            panic!("only {} of 90 delivered: {got:?}", got.len());
        };
        assert!(
            got.insert(position, (member, payload)).is_none(),
            "{position} delivered twice"
        );
        members[(member - 1) as usize].ack(position);
    }
    let expected: Vec<u64> = (0..100).filter(|i| i % 10 != 3).collect();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), expected);
    for (p, (_, payload)) in &got {
        assert_eq!(payload, &Bytes::from(format!("m{p}")));
    }
    let by_member = |m: u64| got.values().filter(|(x, _)| *x == m).count();
    assert!(
        by_member(1) > 0 && by_member(2) > 0,
        "round robin on adapter a"
    );
    assert!(by_member(3) > 0, "adapter b served blocks too");
}

/// A member that leaves gives what it had not settled to another, first and in order, with
/// the delivery counted.
#[tokio::test]
async fn a_leaving_member_gives_back_in_order() {
    let log = log_with((0..8).map(|i| format!("m{i}"))).await;
    let dead = Arc::new(Mutex::new(Vec::new()));
    let a = adapter(&log, "a");
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let m1 = a.join("jobs", 1, 5, tx1, start(&dead));
    let m2 = a.join("jobs", 2, 0, tx2, start(&dead));
    let mut first = Vec::new();
    for _ in 0..5 {
        match recv(&mut rx1).await {
            Some(Out::Msg { position, .. }) => first.push(position),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(first, vec![0, 1, 2, 3, 4]);
    m1.ack(1);
    drop(m1);
    m2.credit(10, false);
    let mut second = Vec::new();
    for _ in 0..7 {
        match recv(&mut rx2).await {
            Some(Out::Msg {
                position, count, ..
            }) => second.push((position, count)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        second,
        vec![(0, 1), (2, 1), (3, 1), (4, 1), (5, 0), (6, 0), (7, 0)]
    );
}

/// Failed deliveries count; at `max_delivery` the message is dead-lettered and acknowledged
/// for every adapter. A drain sends what there is, then says so.
#[tokio::test]
async fn dead_letter_after_max_delivery_and_drain() {
    let log = log_with((0..3).map(|i| format!("m{i}"))).await;
    let dead = Arc::new(Mutex::new(Vec::new()));
    let a = adapter(&log, "a");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let m = a.join("jobs", 7, 0, tx, start(&dead));
    m.credit(10, true);
    let mut seen = Vec::new();
    loop {
        match recv(&mut rx).await {
            Some(Out::Msg { position, .. }) => seen.push(position),
            Some(Out::Drained(7)) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, vec![0, 1, 2]);
    let failed = Outcome::Again {
        failed: true,
        elsewhere: false,
    };
    m.ack(0);
    m.ack(2);
    m.settle(1, failed);
    m.credit(10, false);
    match recv(&mut rx).await {
        Some(Out::Msg {
            position: 1,
            count: 1,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    m.settle(1, failed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dead.lock().expect("lock").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*dead.lock().expect("lock"), vec![1]);
    // Leaving commits: another adapter finds nothing left to deliver.
    drop(m);
    loop {
        let c = log.cursor(&stream(), "q").await.expect("cursor");
        if (0..3).all(|o| c.is_acked(Offset(o))) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = adapter(&log, "b");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let m = b.join("jobs", 8, 10, tx, start(&dead));
    m.credit(10, true);
    assert_eq!(recv(&mut rx).await, Some(Out::Drained(8)));
}

/// A new subscription (starting at the stream's end) serves its member once its start is
/// stored: `serving` returns after that, so what is appended next reaches the member, and an
/// adapter opening it later starts at the same place.
#[tokio::test]
async fn serving_means_the_start_is_stored() {
    let log = log_with((0..5).map(|i| format!("old{i}"))).await;
    let dead = Arc::new(Mutex::new(Vec::new()));
    let a = adapter(&log, "a");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start_at_end = {
        let dead = dead.clone();
        move || {
            let source = Source {
                stream: stream(),
                cursor: "sub".into(),
                lease_prefix: "sub.jobs".into(),
                start: Start::End,
            };
            (Test { dead }, vec![source])
        }
    };
    let mut m = a.join("sub", 1, 10, tx, start_at_end);
    assert!(m.serving(Duration::from_secs(10)).await);
    assert!(
        m.serving(Duration::from_secs(1)).await,
        "asking again is fine"
    );
    let stored = log.cursor(&stream(), "sub").await.expect("cursor");
    assert!(stored.exists(), "the start is stored before serving");
    assert_eq!(stored.committed(), Offset(5));
    log.append(&stream(), Record::new(1, Bytes::from("new")))
        .await
        .expect("append");
    match recv(&mut rx).await {
        Some(Out::Msg {
            position: 5,
            payload,
            ..
        }) => assert_eq!(payload, Bytes::from("new")),
        other => panic!("{other:?}"),
    }
}
