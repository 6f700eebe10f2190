//! Retained messages, kept in the log so every adapter sees the same ones.
//!
//! A PUBLISH with the retain flag is stored twice: in the topic stream like any message, and in
//! the stream `mqtt-retained` (same record layout, [`crate::message`]); PUBACK waits for
//! both. An empty payload clears the topic's retained message. Each adapter keeps the latest
//! retained message per topic in memory, built from `mqtt-retained`; before it answers a
//! SUBSCRIBE it reads what other adapters stored since (one store refresh), so a client sees
//! every retained message acknowledged before it subscribed, whichever adapter it is on.
//!
//! Memory: one copy of each retained message per adapter process (like Mosquitto's). The
//! stream itself keeps every retained publish until compaction by key exists (a known limit).

use std::collections::BTreeMap;

use tokio::sync::Mutex;
use wharf_log::Log;
use wharf_log_format::{Offset, StoredRecord, StreamId};

use crate::{message::Message, topic::matches};

/// The stream of retained messages of the default tenant.
pub fn retained_stream() -> StreamId {
    StreamId::new("mqtt-retained").unwrap_or_else(|_| unreachable!("valid stream id"))
}

/// The retained messages an adapter knows of. Shared by its connections.
#[derive(Debug, Default)]
pub struct Retained {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Offset of the next record of `mqtt-retained` to apply.
    next: u64,
    topics: BTreeMap<String, Message>,
}

impl State {
    fn apply(&mut self, r: &StoredRecord) {
        self.next = self.next.max(r.offset.0 + 1);
        match Message::from_record(r) {
            Ok(m) if m.payload.is_empty() => {
                self.topics.remove(&m.topic);
            }
            Ok(m) => {
                self.topics.insert(m.topic.clone(), m);
            }
            Err(why) => tracing::warn!(offset = r.offset.0, why, "bad retained record; skipped"),
        }
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
        let stream = retained_stream();
        let mut state = self.state.lock().await;
        log.refresh().await?;
        let head = log.stream(&stream).map_or(0, |s| s.next_offset);
        while state.next < head {
            let batch = log.read(&stream, Offset(state.next), 1024).await?;
            if batch.is_empty() {
                break; // trimmed under us; nothing more to read
            }
            for r in &batch {
                state.apply(r);
            }
        }
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

    #[tokio::test]
    async fn set_replace_clear_and_match_with_wildcards() {
        let log = log().await;
        let r = Retained::default();
        retain(&log, "a/1", "one").await;
        retain(&log, "a/2", "two").await;
        retain(&log, "$SYS/x", "sys").await;
        let topics = |v: Vec<(String, Message)>| {
            v.into_iter()
                .map(|(_, m)| format!("{}={}", m.topic, String::from_utf8_lossy(&m.payload)))
                .collect::<Vec<_>>()
        };
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
