//! Retained messages, kept in the log so every adapter sees the same ones.
//!
//! A PUBLISH with the retain flag is stored twice: in the topic stream like any message, and in
//! the stream `mqtt-retained` (same record layout, [`crate::message`]); PUBACK waits for
//! both. An empty payload clears the topic's retained message. Each adapter keeps the latest
//! retained message per topic in memory, built from `mqtt-retained`; before it answers a
//! SUBSCRIBE it reads what other adapters stored since (one store refresh), so a client sees
//! every retained message acknowledged before it subscribed, whichever adapter it is on.
//!
//! **Compaction.** When `mqtt-retained` holds more than twice as many records as there are
//! retained topics (and at least [`COMPACT_MIN_RECORDS`]), the adapter holding the lease
//! `mqtt-retained-compact` appends a *snapshot*: a copy of every retained message as of the
//! stream's head `H` (flagged, carrying `H`), then trims the stream to `H`. A reader applies a
//! snapshot copy only if the topic did not change at an offset `>= H` (a publish other
//! adapters stored between `H` and the snapshot is newer and wins); a reader that was behind
//! finds the stream starting at `H` and the snapshot standing for everything before it. So the
//! stream stays about the size of the retained set, and an adapter starting up reads that
//! much. Memory: one copy of each retained message per adapter process (like Mosquitto's).

use std::{collections::BTreeMap, time::Duration};

use tokio::sync::Mutex;
use wharf_log::Log;
use wharf_log_format::{Offset, StoredRecord, StreamId};

use crate::{
    message::{Message, snapshot_of},
    topic::matches,
};

/// The stream of retained messages of the default tenant.
pub fn retained_stream() -> StreamId {
    StreamId::new("mqtt-retained").unwrap_or_else(|_| unreachable!("valid stream id"))
}

/// Below this many records `mqtt-retained` is not compacted.
pub const COMPACT_MIN_RECORDS: u64 = 1024;
/// Snapshot copies appended per durable append.
const SNAPSHOT_CHUNK: usize = 512;

/// The retained messages an adapter knows of. Shared by its connections.
#[derive(Debug, Default)]
pub struct Retained {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Offset of the next record of `mqtt-retained` to apply.
    next: u64,
    /// The retained message of each topic, with the offset of the change that set it (for a
    /// message taken from a snapshot: just below the offset the snapshot is as of).
    topics: BTreeMap<String, (u64, Message)>,
    /// Topics cleared, with the offset of the clearing record: an older snapshot copy read
    /// after it must not bring the message back. Forgotten once a snapshot newer than them
    /// has been read.
    cleared: BTreeMap<String, u64>,
}

impl State {
    fn apply(&mut self, r: &StoredRecord) {
        let offset = r.offset.0;
        self.next = self.next.max(offset + 1);
        let m = match Message::from_record(r) {
            Ok(m) => m,
            Err(why) => {
                tracing::warn!(offset, why, "bad retained record; skipped");
                return;
            }
        };
        if let Some(as_of) = snapshot_of(r) {
            self.cleared.retain(|_, at| *at >= as_of);
            let changed_since = self
                .topics
                .get(&m.topic)
                .is_some_and(|(at, _)| *at >= as_of)
                || self.cleared.contains_key(&m.topic);
            if !changed_since {
                let at = as_of.saturating_sub(1);
                self.topics.insert(m.topic.clone(), (at, m));
            }
        } else if m.payload.is_empty() {
            self.topics.remove(&m.topic);
            self.cleared.insert(m.topic, offset);
        } else {
            self.cleared.remove(&m.topic);
            self.topics.insert(m.topic.clone(), (offset, m));
        }
    }

    /// Apply everything stored in `mqtt-retained` so far, by any adapter.
    async fn catch_up(&mut self, log: &Log) -> wharf_log::Result<()> {
        let stream = retained_stream();
        log.refresh().await?;
        let head = log.stream(&stream).map_or(0, |s| s.next_offset);
        while self.next < head {
            let batch = log.read(&stream, Offset(self.next), 1024).await?;
            if batch.is_empty() {
                break; // trimmed under us; nothing more to read
            }
            for r in &batch {
                self.apply(r);
            }
        }
        Ok(())
    }
}

impl Retained {
    /// The retained messages whose topics match each of `filters` (not expired at `now_ms`),
    /// as (filter, message), after catching up once with everything stored in
    /// `mqtt-retained` so far, by any adapter.
    pub async fn matching(
        &self,
        log: &Log,
        filters: &[String],
        now_ms: i64,
    ) -> wharf_log::Result<Vec<(String, Message)>> {
        let mut state = self.state.lock().await;
        state.catch_up(log).await?;
        state.topics.retain(|_, (_, m)| !m.expired(now_ms));
        Ok(filters
            .iter()
            .flat_map(|f| {
                state
                    .topics
                    .iter()
                    .filter(|(t, _)| matches(f, t))
                    .map(|(_, (_, m))| (f.clone(), m.clone()))
            })
            .collect())
    }

    /// Compact `mqtt-retained` if it is due (see the module docs) and no other adapter is at
    /// it. Returns the offset the stream now starts at, if it compacted.
    pub async fn compact(
        &self,
        log: &Log,
        holder: &str,
        ttl: Duration,
    ) -> wharf_log::Result<Option<u64>> {
        let stream = retained_stream();
        let mut state = self.state.lock().await;
        state.catch_up(log).await?;
        let Some(index) = log.stream(&stream) else {
            return Ok(None);
        };
        let records = index.next_offset - index.start_offset;
        if records < COMPACT_MIN_RECORDS.max(2 * state.topics.len() as u64) {
            return Ok(None);
        }
        let Some(lease) = log
            .acquire_lease("mqtt-retained-compact", holder, ttl)
            .await?
        else {
            return Ok(None);
        };
        // Whatever was stored while the lease was taken belongs before the snapshot's head.
        state.catch_up(log).await?;
        let head = state.next;
        let now_ms = log.clock().now_ms();
        let snapshot: Vec<_> = state
            .topics
            .values()
            .filter(|(_, m)| !m.expired(now_ms))
            .map(|(_, m)| m.to_snapshot_record(head))
            .collect();
        drop(state);
        for chunk in snapshot.chunks(SNAPSHOT_CHUNK) {
            if !lease.is_valid() {
                return Ok(None); // too slow: another adapter may be at it; it starts over
            }
            log.append_many(&stream, chunk.to_vec()).await?;
        }
        if !lease.is_valid() {
            return Ok(None);
        }
        log.trim(BTreeMap::from([(stream, Offset(head))])).await?;
        tracing::info!(
            records,
            kept = snapshot.len(),
            from = head,
            "compacted mqtt-retained"
        );
        let _ = lease.release().await;
        Ok(Some(head))
    }
}

#[cfg(test)]
mod tests {
    use mqttbytes::QoS;
    use wharf_log::Store;
    use wharf_log_format::Record;

    use super::*;

    async fn log() -> Log {
        let store = Store::open("memory://").expect("store");
        Log::open(store).await.expect("log")
    }

    async fn retain(log: &Log, topic: &str, payload: &'static str) {
        let mut m = Message::new(topic, QoS::AtLeastOnce, payload);
        m.retain = true;
        log.append(&retained_stream(), m.to_record(log.clock().now_ms()))
            .await
            .expect("append");
    }

    fn topics(v: Vec<(String, Message)>) -> Vec<String> {
        v.into_iter()
            .map(|(_, m)| format!("{}={}", m.topic, String::from_utf8_lossy(&m.payload)))
            .collect()
    }

    /// Compaction keeps exactly the latest retained message of each topic: a fresh adapter
    /// reading the compacted stream sees what one that read every record sees, from a stream
    /// about the size of the retained set.
    #[tokio::test]
    async fn compaction_keeps_the_latest_per_topic() {
        let log = log().await;
        let (a, b) = (Retained::default(), Retained::default());
        for i in 0..1100u32 {
            let payload: &'static str = Box::leak(format!("v{i}").into_boxed_str());
            retain(&log, &format!("t/{}", i % 10), payload).await;
        }
        retain(&log, "t/9", "").await; // cleared
        let all = ["#".to_string()];
        let expected = topics(a.matching(&log, &all, 0).await.expect("m"));
        assert_eq!(expected.len(), 9);
        assert!(expected.contains(&"t/0=v1090".to_string()));
        let ttl = Duration::from_secs(30);
        let start = a.compact(&log, "a", ttl).await.expect("compact");
        assert_eq!(start, Some(1101), "trimmed to the head it was as of");
        let index = log.stream(&retained_stream()).expect("stream");
        assert_eq!(
            (index.start_offset, index.next_offset),
            (1101, 1110),
            "9 snapshot copies left"
        );
        retain(&log, "t/1", "after").await;
        assert_eq!(
            a.compact(&log, "a", ttl).await.expect("compact"),
            None,
            "not due"
        );
        let mut want = expected.clone();
        want[1] = "t/1=after".to_string();
        assert_eq!(topics(b.matching(&log, &all, 0).await.expect("m")), want);
        assert_eq!(topics(a.matching(&log, &all, 0).await.expect("m")), want);
    }

    /// A snapshot copy loses to a change at or after the offset it is as of (stored by
    /// another adapter between the snapshot's reading and its writing).
    #[test]
    fn snapshot_copies_lose_to_newer_changes() {
        let at = |offset: u64, r: Record| StoredRecord {
            stream: retained_stream(),
            offset: Offset(offset),
            record: r,
        };
        let msg = |topic: &str, payload: &'static str| {
            let mut m = Message::new(topic, QoS::AtLeastOnce, payload);
            m.retain = true;
            m
        };
        let mut s = State::default();
        s.apply(&at(3, msg("a", "old").to_record(0)));
        s.apply(&at(4, msg("b", "old").to_record(0)));
        s.apply(&at(5, msg("c", "old").to_record(0)));
        // Stored after the snapshot's head (10), before its copies.
        s.apply(&at(12, msg("a", "new").to_record(0)));
        s.apply(&at(13, msg("b", "").to_record(0)));
        for (o, t) in [(20, "a"), (21, "b"), (22, "c"), (23, "d")] {
            s.apply(&at(o, msg(t, "snap").to_snapshot_record(10)));
        }
        let now: Vec<String> = s
            .topics
            .values()
            .map(|(_, m)| format!("{}={}", m.topic, String::from_utf8_lossy(&m.payload)))
            .collect();
        assert_eq!(now, ["a=new", "c=snap", "d=snap"]);
        assert_eq!(s.next, 24);
    }

    #[tokio::test]
    async fn set_replace_clear_and_match_with_wildcards() {
        let log = log().await;
        let r = Retained::default();
        retain(&log, "a/1", "one").await;
        retain(&log, "a/2", "two").await;
        retain(&log, "$SYS/x", "sys").await;
        assert_eq!(
            topics(r.matching(&log, &["#".to_string()], 0).await.expect("m")),
            ["a/1=one", "a/2=two"]
        );
        retain(&log, "a/1", "uno").await;
        retain(&log, "a/2", "").await;
        assert_eq!(
            topics(r.matching(&log, &["a/+".to_string()], 0).await.expect("m")),
            ["a/1=uno"]
        );
        assert_eq!(
            topics(
                r.matching(&log, &["$SYS/#".to_string()], 0)
                    .await
                    .expect("m")
            ),
            ["$SYS/x=sys"]
        );
    }
}
