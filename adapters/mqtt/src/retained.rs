//! Retained messages, kept in the log so every adapter sees the same ones.
//!
//! A PUBLISH with the retain flag is stored twice: in the topic stream like any message, and in
//! the stream `mqtt-retained` (same record layout, [`crate::message`]); PUBACK waits for
//! both. An empty payload clears the topic's retained message. Each adapter keeps the latest
//! retained message per topic in memory, built from `mqtt-retained`; before it answers a
//! SUBSCRIBE it reads what other adapters stored since (one store refresh), so a client sees
//! every retained message acknowledged before it subscribed, whichever adapter it is on.
//!
//! **Compaction** (`wharf_adapter_core::keyed`): when `mqtt-retained` holds more than twice as many
//! records as there are retained topics (and at least 1,024), the adapter holding the lease
//! `mqtt-retained-compact` appends a snapshot — a copy of every retained message as of the
//! offset it has read to (flag bit 1 of the record headers, with that offset) — and trims the
//! stream there. So the stream stays about the size of the retained set, and an adapter
//! starting up reads that much. Memory: one copy of each retained message per adapter process
//! (like Mosquitto's).

use std::time::Duration;

use tokio::sync::Mutex;
pub use wharf_adapter_core::names::retained_stream;
use wharf_adapter_core::{
    keyed::{Keyed, due, snapshot_and_trim},
    names::RETAINED_COMPACT_LEASE,
    topic::matches,
};
use wharf_log::Log;
use wharf_log_format::{Offset, StoredRecord};

use crate::message::{Message, snapshot_of};

/// The retained messages an adapter knows of. Shared by its connections.
#[derive(Debug, Default)]
pub struct Retained {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Offset of the next record of `mqtt-retained` to apply.
    next: u64,
    /// The retained message of each topic.
    topics: Keyed<String, Message>,
}

impl State {
    fn apply(&mut self, r: &StoredRecord) {
        let offset = r.offset.0;
        self.next = self.next.max(offset + 1);
        let mut m = match Message::from_record(r) {
            Ok(m) => m,
            Err(why) => {
                tracing::warn!(offset, why, "bad retained record; skipped");
                return;
            }
        };
        // Kept for as long as it is the topic's retained message: a copy of its own, not a
        // slice that would keep the whole segment it was read from in memory.
        m.payload = bytes::Bytes::copy_from_slice(&m.payload);
        if let Some(c) = m.properties.correlation_data.as_mut() {
            *c = bytes::Bytes::copy_from_slice(c);
        }
        match snapshot_of(r) {
            Some(as_of) => self.topics.snapshot(m.topic.clone(), m, as_of),
            None if m.payload.is_empty() => self.topics.clear(m.topic, offset),
            None => self.topics.set(m.topic.clone(), m, offset),
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
        state.topics.retain(|_, m| !m.expired(now_ms));
        Ok(filters
            .iter()
            .flat_map(|f| {
                state
                    .topics
                    .iter()
                    .filter(|(t, _)| matches(f, t))
                    .map(|(_, m)| (f.clone(), m.clone()))
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
        let (as_of, copies) = {
            let mut state = self.state.lock().await;
            state.catch_up(log).await?;
            if !due(log, &stream, state.topics.len()) {
                return Ok(None);
            }
            let now_ms = log.clock().now_ms();
            let as_of = state.next;
            let copies: Vec<_> = state
                .topics
                .iter()
                .filter(|(_, m)| !m.expired(now_ms))
                .map(|(_, m)| m.to_snapshot_record(as_of))
                .collect();
            (as_of, copies)
        };
        let lease = RETAINED_COMPACT_LEASE;
        let done = snapshot_and_trim(log, &stream, lease, holder, ttl, as_of, copies).await?;
        Ok(done.then_some(as_of))
    }
}

#[cfg(test)]
mod tests {
    use mqttbytes::QoS;
    use wharf_log::Store;

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
