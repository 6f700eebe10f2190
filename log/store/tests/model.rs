//! Model-based property test: random sequences of appends from two handles (two "processes"),
//! crashes (a handle dropped and reopened from the store), trims, cursor acks and appends whose
//! write lands but whose response is lost. After every step, what each handle reads must equal
//! a plain in-memory model.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
use proptest::prelude::*;
use wharf_log::{Log, LogSettings, Store, StoreKind, SystemClock};
use wharf_log_format::{Offset, Record, StreamId};
use wharf_log_testkit::{FaultConfig, FaultStore};

#[derive(Clone, Debug)]
enum Op {
    Append {
        handle: usize,
        stream: usize,
        n: usize,
    },
    /// The segment write lands but every response is lost: the append fails, the record may
    /// be stored. The model learns which at the next check.
    AppendLostResponse {
        handle: usize,
        stream: usize,
    },
    Crash {
        handle: usize,
    },
    Trim {
        stream: usize,
        keep: usize,
    },
    Ack {
        handle: usize,
        stream: usize,
        offset: u64,
    },
    /// Rewrite small entries into per-stream segments; reads must not change.
    Compact {
        handle: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..3usize, 1..4usize).prop_map(|(handle, stream, n)| Op::Append { handle, stream, n }),
        1 => (0..2usize, 0..3usize).prop_map(|(handle, stream)| Op::AppendLostResponse { handle, stream }),
        2 => (0..2usize).prop_map(|handle| Op::Crash { handle }),
        1 => (0..3usize, 0..4usize).prop_map(|(stream, keep)| Op::Trim { stream, keep }),
        2 => (0..2usize, 0..3usize, 0..12u64).prop_map(|(handle, stream, offset)| Op::Ack { handle, stream, offset }),
        1 => (0..2usize).prop_map(|handle| Op::Compact { handle }),
    ]
}

struct Model {
    /// Per stream: start offset and all records ever appended (index = offset).
    streams: Vec<(u64, Vec<Bytes>)>,
    /// Records whose append failed ambiguously, per stream: each may appear once, at any
    /// later point (a batch object that landed is committed whenever it is found).
    uncertain: Vec<Vec<Bytes>>,
    acked: Vec<std::collections::BTreeSet<u64>>,
    /// Where the cursor started: a cursor starts at the stream's start offset as of its first
    /// commit (everything below counts as acknowledged); until then, at the current start.
    cursor_base: Vec<Option<u64>>,
}

impl Model {
    fn is_acked(&self, stream: usize, offset: u64) -> bool {
        let base = self.cursor_base[stream].unwrap_or(self.streams[stream].0);
        offset < base || self.acked[stream].contains(&offset)
    }
}

fn settings() -> LogSettings {
    LogSettings {
        linger: Some(Duration::ZERO),
        checkpoint_every: 3,
        retry_attempts: 2,
        retry_backoff: Duration::from_millis(1),
        compaction_min_age: 0,
        compaction_target_bytes: 4096,
        ..LogSettings::default()
    }
}

async fn open(store: &Store) -> Log {
    Log::open_with(store.clone(), settings(), Arc::new(SystemClock))
        .await
        .expect("open")
}

async fn run(ops: Vec<Op>) {
    let faulty = Arc::new(FaultStore::new(
        Arc::new(object_store::memory::InMemory::new()),
        FaultConfig::default(),
    ));
    let store = Store::new(faulty.clone(), StoreKind::Memory, "memory://");
    let ids: Vec<StreamId> = (0..3)
        .map(|i| StreamId::new(format!("s{i}")).expect("id"))
        .collect();
    let mut handles = vec![open(&store).await, open(&store).await];
    let mut model = Model {
        streams: vec![(0, Vec::new()); 3],
        uncertain: vec![Vec::new(); 3],
        acked: vec![Default::default(); 3],
        cursor_base: vec![None; 3],
    };
    let mut counter = 0u64;
    for op in ops {
        match op {
            Op::Append { handle, stream, n } => {
                let payloads: Vec<Bytes> = (0..n)
                    .map(|_| {
                        counter += 1;
                        Bytes::from(format!("r{counter}"))
                    })
                    .collect();
                let records = payloads.iter().map(|p| Record::new(0, p.clone())).collect();
                let first = handles[handle]
                    .append_many(&ids[stream], records)
                    .await
                    .expect("append");
                resolve_below(&mut model, &handles[handle], &ids, stream, first.0).await;
                assert_eq!(
                    first.0,
                    model.streams[stream].1.len() as u64,
                    "offset of {op:?}"
                );
                model.streams[stream].1.extend(payloads);
            }
            Op::AppendLostResponse { handle, stream } => {
                counter += 1;
                let p = Bytes::from(format!("r{counter}"));
                faulty.set_config(FaultConfig {
                    fail_after: 1.0,
                    ..Default::default()
                });
                let r = handles[handle]
                    .append(&ids[stream], Record::new(0, p.clone()))
                    .await;
                faulty.set_config(FaultConfig::default());
                assert!(
                    r.is_err(),
                    "every response was lost, the append cannot succeed"
                );
                model.uncertain[stream].push(p);
            }
            Op::Crash { handle } => {
                handles[handle] = open(&store).await;
            }
            Op::Trim { stream, keep } => {
                resolve(&mut model, &handles[0], &ids, stream).await;
                let (start, recs) = &mut model.streams[stream];
                let target = (recs.len() as u64).saturating_sub(keep as u64);
                if target > *start {
                    handles[0]
                        .trim(BTreeMap::from([(ids[stream].clone(), Offset(target))]))
                        .await
                        .expect("trim");
                    *start = target;
                }
            }
            Op::Compact { handle } => {
                for i in 0..3 {
                    resolve(&mut model, &handles[handle], &ids, i).await;
                }
                handles[handle].compact(16).await.expect("compact");
            }
            Op::Ack {
                handle,
                stream,
                offset,
            } => {
                let mut c = handles[handle]
                    .cursor(&ids[stream], "model")
                    .await
                    .expect("cursor");
                // An ack below the cursor's start, or repeated, changes nothing and commits
                // nothing; a cursor never committed starts at the stream's current start.
                let new = !model.is_acked(stream, offset);
                assert_eq!(c.ack(Offset(offset)), new, "ack {offset} is new: {new}");
                c.commit().await.expect("commit");
                if new {
                    model.cursor_base[stream].get_or_insert(model.streams[stream].0);
                    model.acked[stream].insert(offset);
                }
            }
        }
        // Both handles, once refreshed, read exactly the model.
        for h in &handles {
            h.refresh().await.expect("refresh");
            for (i, id) in ids.iter().enumerate() {
                resolve(&mut model, h, &ids, i).await;
                let (start, recs) = &model.streams[i];
                let got = h.read(id, Offset(0), usize::MAX).await.expect("read");
                let want: Vec<(u64, Bytes)> = recs
                    .iter()
                    .enumerate()
                    .skip(*start as usize)
                    .map(|(o, p)| (o as u64, p.clone()))
                    .collect();
                let got: Vec<(u64, Bytes)> = got
                    .into_iter()
                    .map(|r| (r.offset.0, r.record.payload))
                    .collect();
                assert_eq!(got, want, "stream {id}");
                let c = h.cursor(id, "model").await.expect("cursor");
                for o in 0..12 {
                    assert_eq!(
                        c.is_acked(Offset(o)),
                        model.is_acked(i, o),
                        "ack {o} of {id}"
                    );
                }
            }
        }
    }
}

/// Settle uncertain records: after a refresh the log holds each either once, somewhere after
/// the point its append failed, or not (yet). Found ones join the model where they are.
async fn resolve(model: &mut Model, log: &Log, ids: &[StreamId], stream: usize) {
    resolve_below(model, log, ids, stream, u64::MAX).await
}

/// [`resolve`], for the uncertain records found below offset `below` only (an append that
/// just returned `below` settles what is before its records; what is after comes later).
async fn resolve_below(model: &mut Model, log: &Log, ids: &[StreamId], stream: usize, below: u64) {
    if model.uncertain[stream].is_empty() {
        return;
    }
    log.refresh().await.expect("refresh");
    let start = model.streams[stream].0;
    let got = log
        .read(&ids[stream], Offset(start), usize::MAX)
        .await
        .expect("read");
    let pending = std::mem::take(&mut model.uncertain[stream]);
    let mut found = Vec::new();
    for p in pending {
        let at: Vec<u64> = got
            .iter()
            .filter(|r| r.record.payload == p)
            .map(|r| r.offset.0)
            .collect();
        match at[..] {
            [o] if o < below => found.push((o, p)),
            [] | [_] => model.uncertain[stream].push(p),
            _ => panic!("the uncertain record {p:?} is stored {} times", at.len()),
        }
    }
    found.sort();
    for (o, p) in found {
        let recs = &mut model.streams[stream].1;
        assert!(
            o as usize <= recs.len(),
            "a record the model does not know is before {p:?} at {o}: log {:?}, model {:?}",
            got.iter()
                .map(|r| (r.offset.0, r.record.payload.clone()))
                .collect::<Vec<_>>(),
            recs
        );
        recs.insert(o as usize, p);
    }
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=5000 for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..25)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(run(ops));
    }
}
