//! Wills that survive their adapter: when an adapter process dies, another one publishes the
//! wills of the clients that were connected to it.
//!
//! - Every adapter holds a lease `mqtt-adapter.<run id>` in each tenant where it has had a
//!   client or registered a will, renewed every third of its TTL
//!   (`MqttSettings::adapter_lease`, 10 s by default); a will is registered only once it is
//!   held.
//! - A connection with a will registers it in the stream `mqtt-wills` (key = client id,
//!   payload = a JSON [`WillRecord`] naming the adapter and the connection) once its session
//!   is resumed, and writes a tombstone when the will is settled: published, or discarded by a
//!   clean DISCONNECT.
//! - Every adapter follows `mqtt-wills` and keeps the unsettled wills of all adapters (in the
//!   background: every `idle_poll_interval` while the tenant has no client here). Every
//!   half TTL it looks at the leases of the adapters that have some: when one has expired,
//!   it reads the store's newest wills and connections, then tries to take that lease; the one survivor that wins (lease epochs are exclusive)
//!   publishes those wills — unless the client has connected again since, when the will had
//!   a delay — and tombstones them.
//!
//! So a will is published at least once after its adapter dies (twice only if the publisher
//! dies too between publishing and its tombstone), within about 1.5 × the lease TTL.
//!
//! `mqtt-wills` is compacted by snapshot ([`crate::keyed`], lease `mqtt-wills-compact`): the
//! unsettled registrations are copied (`snapshot_of` set) and the stream trimmed, so it stays
//! about the size of the connections with wills, and a starting adapter reads that much.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wharf_log::Log;
use wharf_log_format::{Offset, Record, StoredRecord, StreamId};

use crate::{
    keyed::{Keyed, due, snapshot_and_trim},
    message::Message,
    session::Will,
    takeover::Takeover,
};

/// The stream of will registrations of the default tenant.
pub fn wills_stream() -> StreamId {
    StreamId::new("mqtt-wills").unwrap_or_else(|_| unreachable!("valid stream id"))
}

pub(crate) fn lease_name(adapter: &str) -> String {
    format!("mqtt-adapter.{adapter}")
}

/// One record of `mqtt-wills` (JSON payload; a persisted contract, version 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WillRecord {
    pub version: u32,
    /// Run id of the adapter the client is connected to.
    pub adapter: String,
    /// Offset of the connection's record in `mqtt-connects`.
    pub connection: u64,
    pub client_id: String,
    /// `true`: the will is settled (tombstone); the fields below are then empty.
    #[serde(default)]
    pub settled: bool,
    #[serde(default)]
    pub delay_ms: u64,
    /// The will message as a `mqtt-default` record: topic, base64 headers and payload.
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub headers: String,
    #[serde(default)]
    pub payload: String,
    /// Another protocol's will (the AMQP adapter's): append `key = topic`, `headers`, `payload`
    /// to this stream as they are. Empty: an MQTT will, published to `mqtt-default`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stream: String,
    /// A snapshot copy (compaction) as of this offset of `mqtt-wills`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_of: Option<u64>,
}

impl WillRecord {
    const VERSION: u32 = 1;

    /// The record that says a connection's will is published or withdrawn.
    fn tombstone(adapter: String, connection: u64, client_id: String) -> Self {
        Self {
            version: Self::VERSION,
            adapter,
            connection,
            client_id,
            settled: true,
            delay_ms: 0,
            topic: String::new(),
            headers: String::new(),
            payload: String::new(),
            stream: String::new(),
            snapshot_of: None,
        }
    }

    fn message(&self) -> Option<Message> {
        let record = Record {
            timestamp_ms: 0,
            key: Some(Bytes::from(self.topic.clone().into_bytes())),
            headers: Some(Bytes::from(B64.decode(&self.headers).ok()?)),
            payload: Bytes::from(B64.decode(&self.payload).ok()?),
        };
        Message::from_record(&StoredRecord {
            stream: wills_stream(),
            offset: Offset(0),
            record,
        })
        .ok()
    }
}

/// The will machinery of one adapter. See the module docs.
#[derive(Debug)]
pub struct Wills {
    log: Log,
    /// Where an MQTT will is stored (the address claiming its topic, or the default one).
    claims: Arc<wharf_adapter_core::claims::Claims>,
    run: String,
    ttl: Duration,
    /// Unsettled wills of every adapter: (adapter, connection) -> record.
    pending: Mutex<Pending>,
    /// A will is to be registered: take the adapter lease now (see [`keep_lease`]).
    want_lease: Arc<tokio::sync::Notify>,
    /// The adapter lease is held (it is taken once, then renewed).
    lease_held: tokio::sync::watch::Receiver<bool>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Offset of the next record of `mqtt-wills` to apply.
    next: u64,
    wills: Keyed<(String, u64), WillRecord>,
}

impl Wills {
    /// Hold this adapter's lease, follow `mqtt-wills`, and publish dead adapters' wills
    /// through `publish` (which stores a message like a client publish).
    pub fn start(
        log: Log,
        claims: Arc<wharf_adapter_core::claims::Claims>,
        run: String,
        ttl: Duration,
        takeover: Arc<Takeover>,
    ) -> Arc<Self> {
        let (held_tx, lease_held) = tokio::sync::watch::channel(false);
        let want_lease = Arc::new(tokio::sync::Notify::new());
        let w = Arc::new(Self {
            log: log.clone(),
            claims,
            run,
            ttl,
            pending: Mutex::new(Pending::default()),
            want_lease: want_lease.clone(),
            lease_held,
        });
        tokio::spawn(keep_lease(
            log.clone(),
            w.run.clone(),
            ttl,
            want_lease,
            held_tx,
        ));
        let weak = Arc::downgrade(&w);
        tokio::spawn(async move {
            let stream = wills_stream();
            let start = log.stream(&stream).map_or(0, |s| s.start_offset);
            // In the background: a sweep that finds a dead adapter catches up first.
            let mut tail = log.tail(&stream, Offset(start)).background();
            let mut sweep = tokio::time::interval(ttl / 2);
            loop {
                tokio::select! {
                    batch = tail.next_batch(1024) => {
                        let Some(w) = weak.upgrade() else { return };
                        match batch {
                            Ok(batch) => w.apply(&batch),
                            Err(e) => {
                                tracing::warn!(error = %e, "following mqtt-wills failed; retrying");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                    _ = sweep.tick() => {
                        let Some(w) = weak.upgrade() else { return };
                        w.sweep(&takeover).await;
                    }
                }
            }
        });
        w
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, batch: &[StoredRecord]) {
        let mut p = self.lock();
        for r in batch {
            let offset = r.offset.0;
            p.next = p.next.max(offset + 1);
            match serde_json::from_slice::<WillRecord>(&r.record.payload) {
                Ok(w) => {
                    let key = (w.adapter.clone(), w.connection);
                    match w.snapshot_of {
                        Some(as_of) => p.wills.snapshot(key, w, as_of),
                        None if w.settled => p.wills.clear(key, offset),
                        None => p.wills.set(key, w, offset),
                    }
                }
                Err(e) => tracing::warn!(offset, error = %e, "bad will record"),
            }
        }
    }

    fn record(&self, w: &WillRecord) -> Record {
        Record {
            timestamp_ms: self.log.clock().now_ms(),
            key: Some(Bytes::from(w.client_id.clone().into_bytes())),
            headers: None,
            payload: Bytes::from(serde_json::to_vec(w).unwrap_or_default()),
        }
    }

    async fn append(&self, w: &WillRecord) -> wharf_log::Result<()> {
        if !w.settled {
            // A will is registered only under a held adapter lease: without one, the others
            // would take this adapter for dead (or, not written yet, for starting for ever).
            self.want_lease.notify_one();
            let mut held = self.lease_held.clone();
            match tokio::time::timeout(self.ttl, held.wait_for(|h| *h)).await {
                Ok(Ok(_)) => {}
                _ => {
                    return Err(wharf_log::LogError::Batch {
                        kind: wharf_log::ErrorKind::Unavailable,
                        message: "the adapter lease could not be taken; the will is not registered"
                            .into(),
                    });
                }
            }
        }
        self.log
            .append(&wills_stream(), self.record(w))
            .await
            .map(|_| ())
    }

    /// Compact `mqtt-wills` if it is due and no other adapter is at it (lease for `ttl`):
    /// copy the unsettled registrations applied so far, then trim the stream to where they
    /// were read up to. True if it did.
    pub async fn compact(&self, ttl: Duration) -> wharf_log::Result<bool> {
        let stream = wills_stream();
        let (as_of, copies) = {
            let p = self.lock();
            if !due(&self.log, &stream, p.wills.len()) {
                return Ok(false);
            }
            let copies: Vec<Record> = p
                .wills
                .iter()
                .map(|(_, w)| {
                    self.record(&WillRecord {
                        snapshot_of: Some(p.next),
                        ..w.clone()
                    })
                })
                .collect();
            (p.next, copies)
        };
        let lease = "mqtt-wills-compact";
        snapshot_and_trim(&self.log, &stream, lease, &self.run, ttl, as_of, copies).await
    }

    /// Register the will of a connection (durably, before it can be needed).
    pub async fn register(
        &self,
        client_id: &str,
        connection: u64,
        will: &Will,
    ) -> wharf_log::Result<()> {
        let r = will.message.to_record(0);
        self.append(&WillRecord {
            version: WillRecord::VERSION,
            adapter: self.run.clone(),
            connection,
            client_id: client_id.to_string(),
            settled: false,
            delay_ms: will.delay.as_millis() as u64,
            topic: will.message.topic.clone(),
            headers: B64.encode(r.headers.unwrap_or_default()),
            payload: B64.encode(&r.payload),
            stream: String::new(),
            snapshot_of: None,
        })
        .await
    }

    /// Register another protocol's will: `record` is appended to `stream` as it is if the
    /// connection (`owner` names the client; `connection` must not collide with MQTT
    /// connection numbers) is lost — by this adapter, or by a survivor if this adapter dies.
    pub async fn register_record(
        &self,
        owner: &str,
        connection: u64,
        stream: &StreamId,
        record: &Record,
    ) -> wharf_log::Result<()> {
        let key = record.key.as_deref().unwrap_or_default();
        self.append(&WillRecord {
            version: WillRecord::VERSION,
            adapter: self.run.clone(),
            connection,
            client_id: owner.to_string(),
            settled: false,
            delay_ms: 0,
            topic: String::from_utf8_lossy(key).into_owned(),
            headers: B64.encode(record.headers.clone().unwrap_or_default()),
            payload: B64.encode(&record.payload),
            stream: stream.as_str().to_string(),
            snapshot_of: None,
        })
        .await
    }

    /// The connection's will is settled (published, or discarded).
    pub async fn settle(&self, client_id: &str, connection: u64) {
        let w = WillRecord::tombstone(self.run.clone(), connection, client_id.to_string());
        if let Err(e) = self.append(&w).await {
            tracing::warn!(error = %e, client = client_id, "could not settle a will");
        }
    }

    /// Publish the wills of adapters whose lease expired, if we win the right to.
    async fn sweep(&self, takeover: &Takeover) {
        // The other adapters that have wills (each one's are read again once it is gone).
        let adapters: std::collections::BTreeSet<String> = self
            .lock()
            .wills
            .iter()
            .map(|((adapter, _), _)| adapter.clone())
            .filter(|a| *a != self.run)
            .collect();
        let now = self.log.clock().now_ms();
        let mut caught_up = false;
        for adapter in adapters {
            let name = lease_name(&adapter);
            let free = match self.log.lease_state(&name).await {
                Ok(Some(l)) => l.is_free(now),
                // Not written yet (an adapter takes its lease as it starts): wait. Taking it
                // here would lock the adapter out of its own lease.
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(error = %e, adapter, "cannot read an adapter lease");
                    continue;
                }
            };
            if !free {
                continue;
            }
            if !caught_up {
                // The followers may be at the idle pace: read what the store has first, so
                // that the dead adapter's newest wills and its clients' reconnections are
                // known.
                caught_up = true;
                if let Err(e) = self.log.refresh().await {
                    tracing::warn!(error = %e, "cannot catch up before publishing wills");
                    return;
                }
                let stream = wills_stream();
                let followed = crate::takeover::caught_up(CATCH_UP, || {
                    let head = self.log.stream(&stream).map_or(0, |s| s.next_offset);
                    self.lock().next >= head
                });
                if !(followed.await && takeover.caught_up(CATCH_UP).await) {
                    tracing::warn!("wills or connections not caught up; publishing next sweep");
                    return;
                }
            }
            let wills: Vec<WillRecord> = self
                .lock()
                .wills
                .iter()
                .filter(|((a, _), _)| *a == adapter)
                .map(|(_, w)| w.clone())
                .collect();
            // Exactly one survivor gets the dead adapter's lease, and with it its wills.
            match self.log.acquire_lease(&name, &self.run, self.ttl).await {
                Ok(Some(_lease)) => {}
                _ => continue,
            }
            tracing::info!(
                adapter,
                wills = wills.len(),
                "adapter is gone; publishing its clients' wills"
            );
            for w in wills {
                let back = w.delay_ms > 0 && takeover.reconnected_since(&w.client_id, w.connection);
                if !back && let Err(e) = self.publish(&w).await {
                    tracing::warn!(error = %e, client = w.client_id, "could not publish a will; will retry");
                    continue;
                }
                let settled = WillRecord::tombstone(w.adapter, w.connection, w.client_id);
                if let Err(e) = self.append(&settled).await {
                    tracing::warn!(error = %e, "could not settle a will");
                }
            }
        }
    }

    /// Publish a dead adapter's client's will: an MQTT will as a publish; another protocol's
    /// (with a `stream`) as its record, appended as it is.
    async fn publish(&self, w: &WillRecord) -> Result<(), String> {
        if !w.stream.is_empty() {
            self.publish_record(w).await?;
            tracing::info!(
                owner = w.client_id,
                stream = w.stream,
                "will of a dead adapter's client published"
            );
            return Ok(());
        }
        match w.message() {
            Some(m) => {
                crate::publish::store_now(&self.log, &self.claims, &m)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(
                    client = w.client_id,
                    topic = m.topic,
                    "will of a dead adapter's client published"
                );
            }
            None => tracing::warn!(client = w.client_id, "unreadable will record; dropped"),
        }
        Ok(())
    }

    async fn publish_record(&self, w: &WillRecord) -> Result<(), String> {
        let stream = StreamId::new(w.stream.clone()).map_err(|e| e.to_string())?;
        let record = Record {
            timestamp_ms: self.log.clock().now_ms(),
            key: Some(Bytes::from(w.topic.clone().into_bytes())),
            headers: Some(Bytes::from(
                B64.decode(&w.headers).map_err(|e| e.to_string())?,
            )),
            payload: Bytes::from(B64.decode(&w.payload).map_err(|e| e.to_string())?),
        };
        self.log
            .append(&stream, record)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Hold `mqtt-adapter.<run>` for as long as this process lives.
/// How long a sweep waits for the followers to apply what a refresh found.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Take this adapter's lease once it is needed — a client of the tenant connects here (the
/// log counts it), or a will is to be registered — and renew it from then on. An adapter
/// without clients in a tenant holds no lease there: idle tenants cost no renewals.
async fn keep_lease(
    log: Log,
    run: String,
    ttl: Duration,
    wanted: Arc<tokio::sync::Notify>,
    held: tokio::sync::watch::Sender<bool>,
) {
    let name = lease_name(&run);
    let mut clients = log.clients();
    tokio::select! {
        _ = clients.wait_for(|n| *n > 0) => {}
        () = wanted.notified() => {}
    }
    loop {
        let mut lease = match log.acquire_lease(&name, &run, ttl).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                tracing::error!(name, "our adapter lease is held by another process");
                tokio::time::sleep(ttl).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the adapter lease; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        held.send_replace(true);
        loop {
            tokio::time::sleep(ttl / 3).await;
            if let Err(e) = lease.renew(ttl).await {
                // Fenced: another adapter thought we were dead and took over our wills.
                tracing::error!(error = %e, "lost the adapter lease; our clients' wills may be published twice");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mqttbytes::QoS;

    use super::*;

    /// Compaction keeps exactly the unsettled registrations: an adapter that starts after it
    /// knows the same wills as one that read every record.
    #[tokio::test]
    async fn compaction_keeps_the_unsettled_wills() {
        let store = wharf_log::Store::open("memory://").expect("store");
        let log = Log::open(store).await.expect("log");
        let claims = Arc::new(wharf_adapter_core::claims::Claims::default());
        let start = |run: &str| {
            let takeover = Takeover::start(log.clone());
            let hour = Duration::from_secs(3600);
            Wills::start(log.clone(), claims.clone(), run.into(), hour, takeover)
        };
        let a = start("a");
        let will = Will {
            message: Message::new("gone", QoS::AtLeastOnce, "bye"),
            delay: Duration::ZERO,
        };
        for c in 0..1100u64 {
            a.register(&format!("dev-{c}"), c, &will)
                .await
                .expect("register");
        }
        for c in 0..1050u64 {
            a.settle(&format!("dev-{c}"), c).await;
        }
        let head = log.stream(&wills_stream()).expect("stream").next_offset;
        assert_eq!(head, 2150);
        let applied = |w: &Arc<Wills>| {
            let p = w.lock();
            (p.next, p.wills.iter().map(|(k, _)| k.1).collect::<Vec<_>>())
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while applied(&a).0 < head {
            assert!(tokio::time::Instant::now() < deadline, "wills followed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            a.compact(Duration::from_secs(30)).await.expect("compact"),
            "due: 2150 records, 50 wills"
        );
        let index = log.stream(&wills_stream()).expect("stream");
        assert_eq!((index.start_offset, index.next_offset), (2150, 2200));
        assert!(
            !a.compact(Duration::from_secs(30)).await.expect("compact"),
            "not due any more"
        );
        let b = start("b");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while applied(&b).0 < 2200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "b read the snapshot"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(applied(&b).1, (1050..1100).collect::<Vec<_>>());
        assert_eq!(applied(&b).1, applied(&a).1);
    }

    #[test]
    fn will_records_round_trip_the_message() {
        let mut m = Message::new("status/dev", QoS::AtLeastOnce, "gone");
        m.retain = true;
        m.origin = "dev".into();
        m.properties.content_type = Some("text/plain".into());
        let r = m.to_record(0);
        let w = WillRecord {
            version: 1,
            adapter: "a".into(),
            connection: 7,
            client_id: "dev".into(),
            settled: false,
            delay_ms: 0,
            topic: m.topic.clone(),
            headers: B64.encode(r.headers.unwrap_or_default()),
            payload: B64.encode(&r.payload),
            stream: String::new(),
            snapshot_of: None,
        };
        let json = serde_json::to_string(&w).expect("json");
        assert!(
            !json.contains("stream"),
            "MQTT wills are written as before: {json}"
        );
        let back: WillRecord = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.message(), Some(m));
    }
}
