//! Session takeover across adapters: when a client id connects again, wherever that is, the
//! older connection is closed (MQTT 5: DISCONNECT 0x8E) [MQTT-3.1.4-3].
//!
//! Every CONNECT appends a record to the stream `mqtt-connects` (key = client id, payload = a
//! connection id unique to this adapter run) before CONNACK. Each adapter follows that
//! stream — one tail per adapter, not per connection — and closes a local connection when a
//! record for its client id comes after the connection's own record. The log orders
//! concurrent connects, so exactly the newest connection survives. Locally that takes well
//! under a millisecond; across adapters one log poll interval (100 ms by default).
//!
//! It also tells whether a client reconnected after a given connect record, which cancels a
//! delayed will ([`Takeover::reconnected_since`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::runtime::Background;
use bytes::Bytes;
use tokio::sync::oneshot;
use wharf_log::Log;
use wharf_log_format::{Offset, Record};

pub use crate::names::connects_stream;

#[derive(Debug)]
struct Entry {
    connection: String,
    /// Offset of this connection's own connect record, once the tail has seen it.
    offset: Option<u64>,
    kick: Option<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct Registry {
    local: HashMap<String, Vec<Entry>>,
    /// Offset of the newest connect record seen per client id (since this adapter started).
    latest: HashMap<String, u64>,
}

/// One adapter's view of who is connected where. See the module docs.
#[derive(Debug)]
pub struct Takeover {
    log: Log,
    run: String,
    next: AtomicU64,
    registry: Mutex<Registry>,
    /// The offset of the next connect record the tail will apply.
    applied: AtomicU64,
}

/// A registered connection; dropping it unregisters.
#[derive(Debug)]
pub struct Registration {
    takeover: Arc<Takeover>,
    client_id: String,
    connection: String,
    /// Offset of this connection's connect record.
    pub offset: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut r = self.takeover.lock();
        if let Some(v) = r.local.get_mut(&self.client_id) {
            v.retain(|e| e.connection != self.connection);
            if v.is_empty() {
                r.local.remove(&self.client_id);
            }
        }
    }
}

impl Takeover {
    /// Start following `mqtt-connects` from its current end.
    pub fn start(log: Log, background: &Background) -> Arc<Self> {
        let t = Arc::new(Self {
            log: log.clone(),
            run: uuid::Uuid::new_v4().simple().to_string(),
            next: AtomicU64::new(0),
            registry: Mutex::new(Registry::default()),
            applied: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&t);
        let stream = connects_stream();
        let head = log.stream(&stream).map_or(0, |s| s.next_offset);
        t.applied.store(head, Ordering::Release);
        // In the background: only this adapter's clients can be taken over, and while it has
        // some, the log counts them and the tail keeps the fast pace.
        let mut tail = log.tail(&stream, Offset(head)).background();
        let cancelled = background.cancelled();
        background.spawn(async move {
            tokio::pin!(cancelled);
            loop {
                let next = tokio::select! {
                    next = tail.next_batch(1024) => next,
                    () = &mut cancelled => return,
                };
                let batch = match next {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "following mqtt-connects failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let Some(t) = weak.upgrade() else { return };
                let mut r = t.lock();
                for rec in batch {
                    let (Some(key), payload) = (&rec.record.key, &rec.record.payload) else {
                        continue;
                    };
                    let client = String::from_utf8_lossy(key).into_owned();
                    let connection = String::from_utf8_lossy(payload);
                    let offset = rec.offset.0;
                    r.latest.insert(client.clone(), offset);
                    for e in r.local.get_mut(&client).into_iter().flatten() {
                        if e.connection == connection {
                            e.offset = Some(offset);
                        } else if e.offset.is_some_and(|o| o < offset)
                            && let Some(kick) = e.kick.take()
                        {
                            let _ = kick.send(());
                        }
                    }
                }
                t.applied.store(tail.position().0, Ordering::Release);
            }
        });
        t
    }

    /// Wait (up to `within`) until every connect record the log knows of is applied: after a
    /// [`Log::refresh`], this view is as current as the store. False if it took longer.
    pub async fn caught_up(&self, within: std::time::Duration) -> bool {
        caught_up(within, || {
            let head = self
                .log
                .stream(&connects_stream())
                .map_or(0, |s| s.next_offset);
            self.applied.load(Ordering::Acquire) >= head
        })
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announce a new connection of `client_id` (durably): older connections of it, here or
    /// on other adapters, will be closed. The receiver fires when a newer one takes over.
    pub async fn announce(
        self: &Arc<Self>,
        client_id: &str,
    ) -> wharf_log::Result<(Registration, oneshot::Receiver<()>)> {
        let connection = format!("{}-{}", self.run, self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        // Register before appending, so that no later record can slip by unseen.
        self.lock()
            .local
            .entry(client_id.to_string())
            .or_default()
            .push(Entry {
                connection: connection.clone(),
                offset: None,
                kick: Some(tx),
            });
        let mut registration = Registration {
            takeover: self.clone(),
            client_id: client_id.to_string(),
            connection: connection.clone(),
            offset: 0,
        };
        let record = Record {
            timestamp_ms: self.log.clock().now_ms(),
            key: Some(Bytes::from(client_id.as_bytes().to_vec())),
            headers: None,
            payload: Bytes::from(connection.into_bytes()),
        };
        registration.offset = self.log.append(&connects_stream(), record).await?.0;
        Ok((registration, rx))
    }

    /// Whether `client_id` connected again (anywhere) after the connect record at `offset`.
    /// Records from other adapters are seen within one log poll interval.
    pub fn reconnected_since(&self, client_id: &str, offset: u64) -> bool {
        self.lock()
            .latest
            .get(client_id)
            .is_some_and(|&o| o > offset)
    }
}

/// Wait (up to `within`) until `done` holds, looking every few milliseconds.
pub(crate) async fn caught_up(within: std::time::Duration, done: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wharf_log::Store;

    use super::*;

    #[tokio::test]
    async fn the_newest_connection_of_a_client_id_wins() {
        let log = Log::open(Store::open("memory://").expect("store"))
            .await
            .expect("log");
        // Two adapters on one store (here: one log, two registries).
        let a = Takeover::start(log.clone(), &Background::new());
        let b = Takeover::start(log.clone(), &Background::new());
        let (first, mut kicked_first) = a.announce("dev-1").await.expect("announce");
        let (_other, mut other_kicked) = a.announce("dev-2").await.expect("announce");
        let (second, mut kicked_second) = b.announce("dev-1").await.expect("announce");
        assert!(second.offset > first.offset);
        tokio::time::timeout(Duration::from_secs(5), &mut kicked_first)
            .await
            .expect("the older connection is kicked")
            .expect("sender kept until kick");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(kicked_second.try_recv().is_err(), "the newest survives");
        assert!(other_kicked.try_recv().is_err(), "other ids untouched");
        assert!(a.reconnected_since("dev-1", first.offset));
        assert!(!b.reconnected_since("dev-1", second.offset));
    }
}
