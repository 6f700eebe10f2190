//! Wills that survive their adapter, for every protocol: when an adapter process dies, another
//! one publishes the wills of the clients that were connected to it.
//!
//! - Every adapter holds a lease `mqtt-adapter.<run id>` ([`names::adapter_lease`]) in each
//!   tenant where it has had a client or registered a will, renewed every third of its TTL
//!   (`MqttSettings::adapter_lease`, 10 s by default); a will is registered only once it is
//!   held.
//! - A connection with a will registers it in the stream `mqtt-wills` (key = client id,
//!   payload = a JSON [`WillRecord`] naming the adapter and the connection) once its session
//!   is resumed, and writes a tombstone when the will is settled: published, or discarded by a
//!   clean DISCONNECT. A will names the stream it goes to (an AMQP `$will` link's), or none:
//!   then it is a topic message published through the [`PublishWill`] the registry was started
//!   with (MQTT's: routed by the topic claims and retained like a publish).
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

use crate::runtime::Background;
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use wharf_log::Log;
use wharf_log_format::{Offset, Record, StoredRecord, StreamId};

use crate::{
    keyed::{Keyed, due, snapshot_and_trim},
    names::{self, adapter_lease, wills_stream},
    takeover::Takeover,
};

/// Publishes a will that names no stream: a topic message in its protocol's record layout
/// (`record.key` = topic, `timestamp_ms` 0). MQTT supplies it (`wharf_mqtt::publish`); it
/// publishes the message exactly as a client publish would be stored.
pub trait PublishWill: Send + Sync + std::fmt::Debug {
    fn publish(&self, record: Record) -> BoxFuture<'_, Result<(), String>>;
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

    /// The will's record as registered: key = topic, the headers and payload as they are,
    /// timestamp 0 (set when it is published).
    pub fn record(&self) -> Result<Record, String> {
        Ok(Record {
            timestamp_ms: 0,
            key: Some(Bytes::from(self.topic.clone().into_bytes())),
            headers: Some(Bytes::from(
                B64.decode(&self.headers).map_err(|e| e.to_string())?,
            )),
            payload: Bytes::from(B64.decode(&self.payload).map_err(|e| e.to_string())?),
        })
    }
}

/// The will machinery of one adapter. See the module docs.
#[derive(Debug)]
pub struct Wills {
    log: Log,
    /// Publishes the wills that name no stream (topic messages).
    publish: Arc<dyn PublishWill>,
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
    /// Hold this adapter's lease, follow `mqtt-wills`, and publish dead adapters' wills:
    /// those naming a stream by appending their record to it, the others through `publish`.
    pub fn start(
        log: Log,
        publish: Arc<dyn PublishWill>,
        run: String,
        ttl: Duration,
        takeover: Arc<Takeover>,
        background: &Background,
    ) -> Arc<Self> {
        let (held_tx, lease_held) = tokio::sync::watch::channel(false);
        let want_lease = Arc::new(tokio::sync::Notify::new());
        let w = Arc::new(Self {
            log: log.clone(),
            publish,
            run,
            ttl,
            pending: Mutex::new(Pending::default()),
            want_lease: want_lease.clone(),
            lease_held,
        });
        background.spawn(keep_lease(
            log.clone(),
            w.run.clone(),
            ttl,
            want_lease,
            held_tx,
            background.cancelled(),
        ));
        let weak = Arc::downgrade(&w);
        let cancelled = background.cancelled();
        background.spawn(async move {
            tokio::pin!(cancelled);
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
                    () = &mut cancelled => return,
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
        let lease = names::WILLS_COMPACT_LEASE;
        snapshot_and_trim(&self.log, &stream, lease, &self.run, ttl, as_of, copies).await
    }

    /// Register the will of a connection (durably, before it can be needed): a topic message
    /// (`record.key` = topic) that [`PublishWill`] publishes `delay` after the connection is
    /// lost, unless the client connected again by then.
    pub async fn register(
        &self,
        client_id: &str,
        connection: u64,
        delay: Duration,
        record: &Record,
    ) -> wharf_log::Result<()> {
        self.append(&self.registration(client_id, connection, delay, None, record))
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
        let w = self.registration(owner, connection, Duration::ZERO, Some(stream), record);
        self.append(&w).await
    }

    /// The registration of `record` as a connection's will (`stream`: appended there as it
    /// is; `None`: a topic message for [`PublishWill`]).
    fn registration(
        &self,
        client_id: &str,
        connection: u64,
        delay: Duration,
        stream: Option<&StreamId>,
        record: &Record,
    ) -> WillRecord {
        let key = record.key.as_deref().unwrap_or_default();
        WillRecord {
            version: WillRecord::VERSION,
            adapter: self.run.clone(),
            connection,
            client_id: client_id.to_string(),
            settled: false,
            delay_ms: delay.as_millis() as u64,
            topic: String::from_utf8_lossy(key).into_owned(),
            headers: B64.encode(record.headers.clone().unwrap_or_default()),
            payload: B64.encode(&record.payload),
            stream: stream.map(|s| s.as_str().to_string()).unwrap_or_default(),
            snapshot_of: None,
        }
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
            let name = adapter_lease(&adapter);
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

    /// Publish a dead adapter's client's will: one naming a stream as its record, appended
    /// as it is; a topic message through [`PublishWill`].
    async fn publish(&self, w: &WillRecord) -> Result<(), String> {
        if w.stream.is_empty() {
            let Ok(record) = w.record() else {
                tracing::warn!(client = w.client_id, "unreadable will record; dropped");
                return Ok(());
            };
            self.publish.publish(record).await?;
            tracing::info!(
                client = w.client_id,
                topic = w.topic,
                "will of a dead adapter's client published"
            );
            return Ok(());
        }
        let stream = StreamId::new(w.stream.clone()).map_err(|e| e.to_string())?;
        let mut record = w.record()?;
        record.timestamp_ms = self.log.clock().now_ms();
        self.log
            .append(&stream, record)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            owner = w.client_id,
            stream = w.stream,
            "will of a dead adapter's client published"
        );
        Ok(())
    }
}

/// How long a sweep waits for the followers to apply what a refresh found.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Take this adapter's lease once it is needed — a client of the tenant connects here (the
/// log counts it), or a will is to be registered — and renew it from then on, until the
/// [`Wills`] it serves is dropped (its `lease_held` receiver closes the channel). An adapter
/// without clients in a tenant holds no lease there: idle tenants cost no renewals.
async fn keep_lease(
    log: Log,
    run: String,
    ttl: Duration,
    wanted: Arc<tokio::sync::Notify>,
    held: tokio::sync::watch::Sender<bool>,
    cancelled: tokio_util::sync::WaitForCancellationFutureOwned,
) {
    tokio::pin!(cancelled);
    let name = adapter_lease(&run);
    let mut clients = log.clients();
    tokio::select! {
        _ = clients.wait_for(|n| *n > 0) => {}
        () = wanted.notified() => {}
        () = held.closed() => return,
        () = &mut cancelled => return,
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
            tokio::select! {
                () = tokio::time::sleep(ttl / 3) => {}
                // The registry is gone: stop renewing (the lease expires; survivors then
                // publish any will still registered).
                () = held.closed() => return,
                // Shutting down, connections ended: release the lease, so that survivors
                // publish at once any will still registered (delayed ones too).
                () = &mut cancelled => {
                    if let Err(e) = lease.release().await {
                        tracing::warn!(error = %e, "could not release the adapter lease");
                    }
                    return;
                }
            }
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
    use super::*;

    #[derive(Debug, Default)]
    struct Published(Mutex<Vec<Record>>);

    impl PublishWill for Published {
        fn publish(&self, record: Record) -> BoxFuture<'_, Result<(), String>> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(record);
            Box::pin(async { Ok(()) })
        }
    }

    fn topic_record(topic: &str) -> Record {
        Record {
            timestamp_ms: 0,
            key: Some(Bytes::from(topic.to_string().into_bytes())),
            headers: Some(Bytes::from_static(&[2, 1, 0, 0, 0])),
            payload: Bytes::from_static(b"bye"),
        }
    }

    /// A registry for adapter `run` on `log`, its tasks (and its takeover follower's) in
    /// `background`.
    fn registry(
        log: &Log,
        run: &str,
        ttl: Duration,
        publish: Arc<Published>,
        background: &Background,
    ) -> Arc<Wills> {
        let takeover = Takeover::start(log.clone(), background);
        Wills::start(log.clone(), publish, run.into(), ttl, takeover, background)
    }

    /// Compaction keeps exactly the unsettled registrations: an adapter that starts after it
    /// knows the same wills as one that read every record.
    #[tokio::test]
    async fn compaction_keeps_the_unsettled_wills() {
        let store = wharf_log::Store::open("memory://").expect("store");
        let log = Log::open(store).await.expect("log");
        let start = |run: &str| {
            let hour = Duration::from_secs(3600);
            registry(&log, run, hour, Arc::default(), &Background::new())
        };
        let a = start("a");
        let will = topic_record("gone");
        for c in 0..1100u64 {
            a.register(&format!("dev-{c}"), c, Duration::ZERO, &will)
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

    /// A registration keeps the record byte for byte, and topic wills are written as before
    /// stream wills existed (no `stream` field).
    #[test]
    fn will_records_round_trip_the_record() {
        let r = topic_record("status/dev");
        let w = WillRecord {
            version: 1,
            adapter: "a".into(),
            connection: 7,
            client_id: "dev".into(),
            settled: false,
            delay_ms: 0,
            topic: "status/dev".into(),
            headers: B64.encode(r.headers.clone().unwrap_or_default()),
            payload: B64.encode(&r.payload),
            stream: String::new(),
            snapshot_of: None,
        };
        let json = serde_json::to_string(&w).expect("json");
        assert!(
            !json.contains("stream"),
            "topic wills are written as before: {json}"
        );
        let back: WillRecord = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.record(), Ok(r));
    }

    /// A dead adapter's wills are published by a survivor: the topic will through
    /// `PublishWill`, the stream will appended to its stream; both tombstoned once.
    #[tokio::test]
    async fn a_survivor_publishes_a_dead_adapters_wills() {
        let store = wharf_log::Store::open("memory://").expect("store");
        let log = Log::open(store).await.expect("log");
        let ttl = Duration::from_millis(300);
        let dead_publish = Arc::new(Published::default());
        let dead = registry(&log, "dead", ttl, dead_publish.clone(), &Background::new());
        dead.register("mq", 1, Duration::ZERO, &topic_record("status/mq"))
            .await
            .expect("register");
        let target = StreamId::new("orders").expect("id");
        let mut amqp = topic_record("ignored");
        amqp.headers = Some(Bytes::from_static(&[0x81, 0]));
        dead.register_record("container-1", 1 << 63, &target, &amqp)
            .await
            .expect("register");
        // Dropped, the registry stops renewing its lease, as a killed process would.
        drop(dead);
        let survivor_publish = Arc::new(Published::default());
        let _survivor = registry(
            &log,
            "survivor",
            ttl,
            survivor_publish.clone(),
            &Background::new(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let topic = survivor_publish.0.lock().map(|v| v.len()).unwrap_or(0);
            let stream = log.stream(&target).map_or(0, |s| s.next_offset);
            if topic == 1 && stream == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "survivor published (topic {topic}, stream {stream})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let published = survivor_publish.0.lock().expect("lock")[0].clone();
        assert_eq!(published.key.as_deref(), Some(&b"status/mq"[..]));
        assert_eq!(published.payload, Bytes::from_static(b"bye"));
        assert!(dead_publish.0.lock().expect("lock").is_empty());
        let mut tail = log.tail(&target, Offset(0));
        let got = tail.next_batch(10).await.expect("read");
        assert_eq!(got[0].record.headers, amqp.headers);
        assert!(got[0].record.timestamp_ms > 0, "stamped when published");
    }

    /// At shutdown the adapter lease is released, so a survivor publishes the wills still
    /// registered at once rather than after the lease's time-to-live (30 s here).
    #[tokio::test]
    async fn a_shut_down_adapter_releases_its_lease() {
        let store = wharf_log::Store::open("memory://").expect("store");
        let log = Log::open(store).await.expect("log");
        let ttl = Duration::from_secs(30);
        let background = Background::new();
        let leaving = registry(&log, "leaving", ttl, Arc::default(), &background);
        leaving
            .register("mq", 1, Duration::ZERO, &topic_record("status/mq"))
            .await
            .expect("register");
        assert!(background.shutdown(Duration::from_secs(10)).await);
        let survivor_publish = Arc::new(Published::default());
        let _survivor = registry(
            &log,
            "survivor",
            ttl,
            survivor_publish.clone(),
            &Background::new(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while survivor_publish.0.lock().map(|v| v.len()).unwrap_or(0) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the survivor did not publish the will: the lease was not released"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
