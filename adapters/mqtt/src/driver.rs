//! The tokio side: accept connections and run one task per connection that owns the socket,
//! decodes packets with mqttbytes, feeds the [`Session`] and carries out its actions against
//! the log.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use bytes::BytesMut;
use futures::{StreamExt, stream::FuturesOrdered};
use mqttbytes::v5::{DisconnectReasonCode, Packet};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
    time::Instant,
};
use wharf_adapter_core::runtime::{
    Router, Tenancy,
    listen::{Active, Handshake, Handshakes, accept_connections},
};
use wharf_auth::{Auth, Verdict};
// Positions the session sees: the followed stream's index in the top 16 bits, the offset in
// the stream below (so the default stream's offsets are unchanged, and packet ids derived
// from them stay stable across reconnects).
use wharf_adapter_core::{
    bridge::Bridge,
    claims::Claims,
    errors::StoreFailure,
    following::Following,
    names::{self, default_stream},
    runtime::Background,
    takeover::{Registration, Takeover},
    wills::Wills,
};
use wharf_log::{Log, pack_position as pack, unpack_position as unpack};
use wharf_log_format::{Offset, StreamId, catalog::DEFAULT_TENANT};

use crate::{
    codec::{self, Peek, ReadError, Version, peek_connect},
    ended::Ended,
    message::Message,
    publish::{WillPublisher, store},
    retained::Retained,
    session::{
        Action, FollowedStream, Login, Marks, Session, SessionSettings, StoredSession, Will,
    },
    shared::{Membership, SharedDelivery, SharedGroups},
};

/// Settings of the MQTT adapter.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Connections served at once by each listener; more wait in the accept queue.
    pub max_connections: usize,
    /// Connections that have not sent an accepted CONNECT yet, at most (the longest waiting
    /// is closed to make room: [`wharf_adapter_core::runtime::listen::Handshakes`]).
    pub max_handshakes: usize,
    pub session: SessionSettings,
    /// TTL of the lease that says this adapter is alive; after it expires, another adapter
    /// publishes the wills of this one's clients (`wharf_adapter_core::wills`).
    pub adapter_lease: Duration,
    /// Offsets per block of a shared subscription's stream: adapters with members take
    /// blocks by lease to share the group's messages ([`crate::shared`]).
    pub share_block: u64,
    /// How often the adapter checks whether `mqtt-retained` and `mqtt-wills` are due for
    /// compaction (`wharf_adapter_core::keyed`).
    pub compact_every: Duration,
    /// How often one adapter deletes the stored sessions that expired.
    pub session_sweep_every: Duration,
    /// Maps other protocols' records to MQTT messages (cross-protocol delivery); wired by the
    /// process. Empty: what AMQP clients send to `/topic/...` is not delivered to MQTT.
    pub bridge: Bridge,
    /// The process's background tasks (shared groups, the adapter lease, followers, upkeep),
    /// cancelled and awaited at shutdown after the connections ended.
    pub background: Background,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_handshakes: 256,
            session: SessionSettings::default(),
            adapter_lease: Duration::from_secs(10),
            share_block: 1024,
            compact_every: Duration::from_secs(60),
            session_sweep_every: Duration::from_secs(3600),
            bridge: Bridge::default(),
            background: Background::new(),
        }
    }
}

/// Delete the stored sessions that expired (their cursors on every stream they followed), and
/// cursors of clean sessions that hold none — under the lease `mqtt-session-sweep`, so one
/// adapter at a time does it. A session is expired when its expiry interval has passed since
/// its connection ended; a session whose adapter died has no recorded end and is kept until
/// the client comes back and leaves again. A client that resumes its session while it is
/// being deleted keeps what it wrote (deleting removes only the generations read here).
/// Returns how many cursors were deleted.
pub async fn sweep_expired_sessions(
    log: &Log,
    holder: &str,
    ttl: Duration,
) -> wharf_log::Result<usize> {
    let Some(lease) = log
        .acquire_lease(names::SESSION_SWEEP_LEASE, holder, ttl)
        .await?
    else {
        return Ok(0);
    };
    let default = default_stream();
    let mut deleted = 0;
    // Whether each adapter named by a connected session is gone: one lease read per adapter
    // per sweep, however many sessions it serves.
    let mut gone: BTreeMap<String, bool> = BTreeMap::new();
    for name in log
        .cursor_names(&default, names::SESSION_CURSOR_PREFIX)
        .await?
    {
        if !lease.is_valid() {
            break; // the next sweep goes on
        }
        let mut cursor = log.cursor(&default, &name).await?;
        let now_ms = log.clock().now_ms();
        let stored = cursor
            .meta()
            .and_then(|m| serde_json::from_value::<StoredSession>(m.clone()).ok());
        let others = match stored {
            Some(s) if s.expired(now_ms) => s.streams,
            Some(s) if s.disconnected_ms.is_none() && s.orphaned_ms.is_none() => {
                let Some(run) = &s.adapter else { continue };
                let dead = match gone.get(run) {
                    Some(&dead) => dead,
                    None => {
                        let dead = adapter_is_gone(log, run, now_ms).await;
                        gone.insert(run.clone(), dead);
                        dead
                    }
                };
                if dead {
                    // Its connection ended when its adapter died: count the expiry from now.
                    // A plain commit: if the client took the session over meanwhile, the
                    // commit finds its higher epoch and fails (fenced), and the session stays.
                    let orphaned = StoredSession {
                        orphaned_ms: Some(now_ms),
                        ..s
                    };
                    cursor.set_meta(serde_json::to_value(orphaned).ok());
                    if let Err(e) = cursor.commit().await {
                        tracing::debug!(session = name, error = %e, "not marked orphaned");
                    }
                }
                continue;
            }
            Some(_) => continue,
            None => Vec::new(), // a clean session's leftover: nothing stored in it
        };
        for f in others {
            if let Ok(stream) = StreamId::new(f.stream) {
                log.cursor(&stream, &name).await?.delete().await;
            }
        }
        cursor.delete().await;
        deleted += 1;
    }
    let _ = lease.release().await;
    Ok(deleted)
}

/// Whether the adapter (MQTT service) with run id `run` is gone: its lease expired, was
/// released, or was taken by another adapter (to publish its clients' wills). An adapter whose
/// lease is not written yet is starting, not gone.
async fn adapter_is_gone(log: &Log, run: &str, now_ms: i64) -> bool {
    match log.lease_state(&names::adapter_lease(run)).await {
        Ok(Some(l)) => l.is_free(now_ms) || l.holder != run,
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(adapter = run, error = %e, "cannot read an adapter lease");
            false
        }
    }
}

/// How a listener's connections carry MQTT.
#[derive(Clone)]
pub enum Transport {
    /// MQTT over TCP (1883).
    Tcp,
    /// MQTT over TLS (8883).
    Tls(tokio_rustls::TlsAcceptor),
    /// MQTT over WebSocket on path `/mqtt`, subprotocol `mqtt`; over TLS if an acceptor is
    /// given.
    WebSocket(Option<tokio_rustls::TlsAcceptor>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Tls(_) => "tls",
            Transport::WebSocket(None) => "ws",
            Transport::WebSocket(Some(_)) => "wss",
        })
    }
}

/// One adapter's MQTT service: what all its listeners and connections share.
#[derive(Debug)]
pub struct Mqtt {
    /// The tenant whose log this is, and where other tenants' clients go.
    tenancy: Tenancy<Mqtt>,
    log: Log,
    settings: MqttSettings,
    session_settings: Arc<SessionSettings>,
    auth: Arc<Auth>,
    retained: Retained,
    takeover: Arc<Takeover>,
    wills: Arc<Wills>,
    shared_groups: Arc<SharedGroups>,
    claims: Arc<Claims>,
    run: String,
    ids: std::sync::atomic::AtomicU64,
    /// Turns true when the adapter shuts down: every connection ends (MQTT 5: 0x8B).
    stopping: tokio::sync::watch::Sender<bool>,
    /// Turns true when this service's tenant is deleted: its connections end.
    deleted: tokio::sync::watch::Sender<bool>,
    /// Connections being served (by all listeners).
    active: Active,
    /// Connections that have not sent an accepted CONNECT yet.
    handshakes: Handshakes,
}

impl Mqtt {
    /// Start the service of `tenant` on its `log` (it follows the takeover stream from now
    /// on).
    pub fn new(tenant: &str, log: Log, settings: MqttSettings, auth: Arc<Auth>) -> Arc<Self> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let takeover = Takeover::start(log.clone(), &settings.background);
        let claims = settings.session.claims.clone();
        let wills = Wills::start(
            log.clone(),
            Arc::new(WillPublisher::new(log.clone(), claims.clone())),
            run.clone(),
            settings.adapter_lease,
            takeover.clone(),
            &settings.background,
        );
        let shared_groups = SharedGroups::new(
            log.clone(),
            claims.clone(),
            run.clone(),
            settings.adapter_lease,
            settings.share_block,
            settings.bridge,
            settings.background.clone(),
        );
        let mqtt = Arc::new(Self {
            tenancy: Tenancy::new(tenant),
            takeover,
            wills,
            shared_groups,
            claims,
            log,
            session_settings: Arc::new(settings.session.clone()),
            handshakes: Handshakes::new(settings.max_handshakes),
            settings,
            auth,
            retained: Retained::default(),
            run,
            ids: std::sync::atomic::AtomicU64::new(0),
            stopping: tokio::sync::watch::channel(false).0,
            deleted: tokio::sync::watch::channel(false).0,
            active: Active::default(),
        });
        // Background upkeep, each under a lease so that one adapter does it at a time.
        let background = &mqtt.settings.background;
        background.periodic("mqtt-compact", mqtt.settings.compact_every, &mqtt, |m| async move {
            if let Err(e) = m.retained.compact(&m.log, &m.run, m.upkeep_lease()).await {
                tracing::warn!(error = %e, "compacting mqtt-retained failed; trying again later");
            }
            if let Err(e) = m.wills.compact(m.upkeep_lease()).await {
                tracing::warn!(error = %e, "compacting mqtt-wills failed; trying again later");
            }
        });
        let every = mqtt.settings.session_sweep_every;
        background.periodic("mqtt-session-sweep", every, &mqtt, |m| async move {
            match sweep_expired_sessions(&m.log, &m.run, m.upkeep_lease()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "expired sessions deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, "sweeping expired sessions failed; trying again later")
                }
            }
        });
        mqtt
    }

    /// Hand clients of other tenants to the services `router` finds (set once, before
    /// serving).
    pub fn route_tenants(&self, router: Router<Mqtt>) {
        self.tenancy.route(router);
    }

    /// The TTL of the leases that let one adapter at a time do background upkeep.
    fn upkeep_lease(&self) -> Duration {
        self.settings.adapter_lease.max(Duration::from_secs(30))
    }

    /// Load the topic claims of the catalog's addresses and keep them current (every
    /// `every`); call before serving.
    pub async fn follow_claims(&self, every: Duration) -> wharf_log::Result<()> {
        self.claims
            .follow(&self.log, every, &self.settings.background)
            .await
    }

    /// The addresses claiming MQTT topics (the AMQP adapter routes `/topic/...` by them).
    pub fn claims(&self) -> Arc<Claims> {
        self.claims.clone()
    }

    /// The wills registry (also used by the AMQP adapter for its clients' wills).
    pub fn wills(&self) -> Arc<Wills> {
        self.wills.clone()
    }

    /// End every connection (MQTT 5 clients get DISCONNECT 0x8B "server shutting down";
    /// persistent sessions save their position; wills are published, as for any connection the
    /// server closes) and wait up to `grace` for them to finish.
    pub async fn shutdown(&self, grace: Duration) {
        self.active.stop(&self.stopping, grace, "mqtt").await
    }

    /// Its tenant was deleted: end its connections (MQTT 5 DISCONNECT 0x87 saying why).
    pub fn tenant_deleted(&self) {
        let _ = self.deleted.send(true);
    }

    /// Accept connections on `listener` until `shutdown` resolves.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        transport: Transport,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        serve_listener(self.clone(), listener, transport, shutdown).await
    }
}

/// Serve MQTT over TCP on `listener` with default credentials rules (tests, tools).
pub async fn serve(
    listener: TcpListener,
    log: Log,
    settings: MqttSettings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mqtt = Mqtt::new(DEFAULT_TENANT, log, settings, Arc::new(Auth::default()));
    mqtt.serve(listener, Transport::Tcp, shutdown).await
}

async fn serve_listener(
    shared: Arc<Mqtt>,
    listener: TcpListener,
    transport: Transport,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max = shared.settings.max_connections;
    accept_connections(listener, max, shutdown, |socket, peer, local, permit| {
        let n = shared
            .ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Unique across adapters and restarts: assigned ids name sessions in the store.
        let assigned = format!("wharf-{}-{n}", shared.run);
        let shared = shared.clone();
        let transport = transport.clone();
        // Each transport's future is boxed: the task holds only the one in use (an idle
        // connection's memory is counted in the docs).
        let active = shared.active.enter();
        tokio::spawn(async move {
            let (_permit, _active) = (permit, active);
            let Some(handshake) = shared.handshakes.enter() else {
                tracing::info!(%peer, "mqtt connection refused: every handshake place is taken by clients whose credentials are being checked");
                return;
            };
            let c = Accepted { peer, local, shared, assigned, handshake };
            let end = match transport {
                Transport::Tcp => Box::pin(connection(socket, c)).await,
                Transport::Tls(acceptor) => Box::pin(over_tls(acceptor, socket, c)).await,
                Transport::WebSocket(tls) => Box::pin(over_websocket(tls, socket, c)).await,
            };
            if let Err(reason) = end {
                tracing::info!(%peer, %reason, "mqtt connection closed");
            }
        });
    })
    .await
}

/// A connection accepted, before MQTT starts on it.
struct Accepted {
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Mqtt>,
    /// The client id assigned if it sends an empty one.
    assigned: String,
    /// Its place among connections not let in yet.
    handshake: Handshake,
}

impl Accepted {
    /// Run a transport's handshake (TLS, WebSocket upgrade) within the connect timeout, and
    /// until a newer connection needs the place.
    async fn within_deadline<T>(
        &mut self,
        what: &'static str,
        handshake: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, Ended> {
        let deadline = Instant::now() + self.shared.settings.session.connect_timeout;
        let peer = self.peer;
        let failed = |why: String| Ended::Handshake { what, peer, why };
        self.handshake
            .bounded(deadline, handshake)
            .await
            .map_err(|why| failed(format!("{why} ([mqtt] connect_timeout, max_handshakes)")))?
            .map_err(failed)
    }
}

async fn tls_handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    socket: tokio::net::TcpStream,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, String> {
    acceptor.accept(socket).await.map_err(|e| e.to_string())
}

/// A TLS handshake, then MQTT.
async fn over_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    socket: tokio::net::TcpStream,
    mut c: Accepted,
) -> Result<(), Ended> {
    let tls = c
        .within_deadline("TLS handshake", tls_handshake(acceptor, socket))
        .await?;
    connection(tls, c).await
}

/// A WebSocket upgrade (after a TLS handshake if `tls`), then MQTT.
async fn over_websocket(
    tls: Option<tokio_rustls::TlsAcceptor>,
    socket: tokio::net::TcpStream,
    mut c: Accepted,
) -> Result<(), Ended> {
    let ws = c
        .within_deadline("WebSocket handshake", async move {
            match tls {
                Some(acceptor) => {
                    let tls = tls_handshake(acceptor, socket)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?;
                    crate::ws::accept(tls).await
                }
                None => crate::ws::accept(socket).await,
            }
        })
        .await?;
    connection(ws, c).await
}

/// Run one connection until it closes; `Err` carries the reason for an abnormal close.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    accepted: Accepted,
) -> Result<(), Ended> {
    let Accepted {
        peer,
        local,
        shared,
        assigned: assigned_id,
        handshake,
    } = accepted;
    let mut session = Session::new(
        Instant::now().into_std(),
        shared.session_settings.clone(),
        assigned_id,
    );
    let mut conn = Conn {
        max_packet: shared.settings.session.max_packet_size as usize,
        _client: shared.log.client(),
        flow: wharf_adapter_core::metrics::Flow::new(
            wharf_adapter_core::record::Protocol::Mqtt,
            shared.tenancy.own(),
        ),
        user: None,
        grants_seen: 0,
        tenant_deleted: None,
        shared,
        local,
        retained_queue: VecDeque::new(),
        version: None,
        output: BytesMut::new(),
        pending: None,
        pending_records: 0,
        following: None,
        reading: false,
        registration: None,
        kicked: None,
        will_registered: false,
        shares: BTreeMap::new(),
        shared_tx: None,
        shared_rx: None,
        peer_gone: false,
        handshake: Some(Box::new(handshake)),
    };
    let end = conn.run(&mut socket, peer, &mut session).await;
    flush(&mut socket, &mut conn.output).await;
    // The server ends it (a DISCONNECT or refusing CONNACK sent, or just a close): the client
    // must get to read what was sent before the socket goes.
    let linger = end.is_err() && !conn.peer_gone;
    let will_due = match &end {
        Ok(will) => *will,
        Err(_) => true,
    };
    Box::pin(conn.save_on_close(&session)).await;
    match session.take_will() {
        Some(will) if will_due => conn.publish_will(will),
        _ if conn.will_registered => {
            // Discarded by a clean DISCONNECT: other adapters must not publish it.
            if let Some(reg) = conn.registration.as_ref() {
                let (wills, client, offset) = (
                    conn.shared.wills.clone(),
                    session.client_id().to_string(),
                    reg.offset,
                );
                // Owned by the background: a shutdown waits for it (else another adapter
                // would publish the discarded will).
                let background = &conn.shared.settings.background;
                background.spawn(async move { wills.settle(&client, offset).await });
            }
        }
        _ => {}
    }
    if linger {
        wharf_adapter_core::runtime::listen::close_gracefully(
            &mut socket,
            wharf_adapter_core::runtime::listen::LINGER,
        )
        .await;
    }
    end.map(|_| ())
}

// A session keeps [`Marks`] per followed stream besides its cursor (the default topic
// address is always the first stream; a persistent session's cursor there,
// `mqtt-session.<hex id>`, holds the [`StoredSession`] as its meta).

/// The per-connection I/O state around a [`Session`].
struct Conn {
    shared: Arc<Mqtt>,
    /// Counts this connection as a client of its tenant's log (see `wharf_log::Log::client`).
    _client: wharf_log::ClientGuard,
    /// Its metrics (counted as a connection of its tenant while it lives).
    flow: wharf_adapter_core::metrics::Flow,
    /// The user it was let in as (`None`: anonymous), and the generation of the users whose
    /// grants its session has (`Auth::generation`): checked at every read and every second.
    user: Option<String>,
    grants_seen: u64,
    /// Turns true when its tenant is deleted (the tenant's service's, after CONNECT).
    tenant_deleted: Option<tokio::sync::watch::Receiver<bool>>,
    /// The listener's address (anonymous access depends on it).
    local: SocketAddr,
    /// Retained messages owed to new subscriptions: (filter, message), sent as the in-flight
    /// window allows.
    retained_queue: VecDeque<(String, Message)>,
    version: Option<Version>,
    output: BytesMut,
    /// Batches of publishes being stored: their tokens, and whether they became durable.
    pending: Option<Box<PendingBatches>>,
    /// Publishes in `pending`.
    pending_records: usize,
    /// The followed streams (a resumed session's from its resumption, others' from the
    /// first subscription on).
    following: Option<Box<Following<Marks>>>,
    /// Reading them (from the first subscription on).
    reading: bool,
    registration: Option<Registration>,
    kicked: Option<tokio::sync::oneshot::Receiver<()>>,
    /// The will is registered in `mqtt-wills` and must be settled when the connection ends.
    will_registered: bool,
    /// Shared subscriptions joined, and where their groups deliver to this connection.
    shares: BTreeMap<String, Membership>,
    shared_tx: Option<mpsc::Sender<SharedDelivery>>,
    shared_rx: Option<mpsc::Receiver<SharedDelivery>>,
    max_packet: usize,
    /// The client closed the connection (or it broke): nothing more to read from it.
    peer_gone: bool,
    /// Its place among the connections that have not been let in yet (until CONNECT is
    /// accepted).
    handshake: Option<Box<Handshake>>,
}

impl Conn {
    fn log(&self) -> &Log {
        &self.shared.log
    }

    /// A persistent session (its position is stored).
    fn persistent(&self) -> bool {
        self.following.as_ref().is_some_and(|f| f.is_durable())
    }

    /// Forget the stored session (another connection owns it now).
    fn drop_cursors(&mut self) {
        if let Some(f) = self.following.as_mut() {
            f.drop_cursors();
        }
    }

    /// Serve until the connection ends: `Ok(will_due)` after DISCONNECT, `Err(why)`
    /// otherwise (the will is due then).
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        socket: &mut S,
        peer: SocketAddr,
        session: &mut Session,
    ) -> Result<bool, Ended> {
        let mut input = BytesMut::new();
        // A one-second tick without a heap-allocated timer (an idle connection's size is
        // counted): a fresh inline sleep each time round the loop.
        let mut next_tick = Instant::now() + Duration::from_secs(1);
        let mut stopping = self.shared.stopping.subscribe();
        loop {
            let version = match self.version {
                Some(v) => v,
                None => match peek_connect(&input) {
                    Peek::Incomplete => None,
                    Peek::Connect(v) => {
                        self.version = Some(v);
                        session.speaks(v);
                        Some(v)
                    }
                    Peek::UnsupportedLevel(level) => {
                        // [MQTT-3.1.2-2]: a client of an older version gets the 3.1.1
                        // CONNACK 0x01 (MQTT 3.1 clients read it), one of a newer version
                        // the MQTT 5 CONNACK 0x84 Unsupported Protocol Version; then close.
                        let _ = if level < 4 {
                            mqttbytes::v4::ConnAck::new(
                                mqttbytes::v4::ConnectReturnCode::RefusedProtocolVersion,
                                false,
                            )
                            .write(&mut self.output)
                        } else {
                            let mut ack = mqttbytes::v5::ConnAck::new(
                                mqttbytes::v5::ConnectReturnCode::UnsupportedProtocolVersion,
                                false,
                            );
                            ack.properties = Some(mqttbytes::v5::ConnAckProperties::new());
                            ack.write(&mut self.output)
                        };
                        return Err(Ended::UnsupportedLevel { peer, level });
                    }
                    Peek::NotConnect => {
                        let first = input.first().copied().unwrap_or_default();
                        return Err(Ended::NotConnect { peer, first });
                    }
                }
                .unwrap_or(Version::V311),
            };
            // Decode and handle every complete packet received so far.
            let mut actions = self.grants_changed(session);
            while self.version.is_some() {
                match codec::read(version, &mut input, self.max_packet) {
                    Ok(packet) => actions.extend(session.handle(Instant::now().into_std(), packet)),
                    Err(ReadError::Incomplete) => break,
                    Err(ReadError::Invalid(v)) => {
                        if let Some(max) = crate::strict::stated_max_packet(&input) {
                            session.limit_packets(max); // a malformed CONNECT's refusal fits it
                        }
                        // MQTT 5 clients are told why (CONNACK or DISCONNECT with the reason
                        // code [MQTT-4.13.1-1]); 3.1.1 ones are just closed [MQTT-4.8.0-1].
                        actions.extend(session.fail(v.code, v.why));
                        Box::pin(self.carry_out(session, actions)).await?;
                        return Err(Ended::BadPacket {
                            peer,
                            client: session.client_id().to_string(),
                            why: v.why,
                        });
                    }
                }
                if actions
                    .iter()
                    .any(|a| matches!(a, Action::Close { .. } | Action::Resume { .. }))
                {
                    // After CONNECT, nothing more is read until the session is resumed.
                    break;
                }
            }
            if let Some(end) = Box::pin(self.carry_out(session, actions)).await? {
                return Ok(end);
            }
            self.deliver_ready(session)?;
            flush(socket, &mut self.output).await;
            // An idle connection holds no buffers worth counting (10,000 idle clients must not
            // cost 80 MB): drop large empty ones; a read starts small and grows with traffic.
            if self.output.capacity() > IDLE_BUFFER {
                self.output = BytesMut::new();
            }
            if input.is_empty() && input.capacity() > IDLE_BUFFER {
                input = BytesMut::new();
            }
            if input.capacity() - input.len() < 64 {
                let busy = !input.is_empty() || self.reading;
                input.reserve(if busy { 8 * 1024 } else { 64 });
            }
            let room = session.delivery_room();
            let deliver = self.reading && session.held_at().is_none() && room > 0;
            // Backpressure: a client publishing faster than the store takes it waits (its TCP
            // window fills) instead of growing our memory.
            // Counted in records, above any QoS 1/2 window (receive maximum), so that a whole
            // window is always read and stored in one flush.
            let readable = self.pending_records < MAX_PENDING_RECORDS;
            tokio::select! {
                read = socket.read_buf(&mut input), if readable => match read {
                    Ok(0) => {
                        self.peer_gone = true;
                        return Err(Ended::PeerGone { client: session.client_id().to_string() });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.peer_gone = true;
                        return Err(Ended::Read { peer, source: e });
                    }
                },
                Some((tokens, result)) = async { match self.pending.as_mut() { Some(p) => p.next().await, None => None } }, if self.pending.as_ref().is_some_and(|p| !p.is_empty()) => {
                    self.pending_records -= tokens.len();
                    let a: Vec<Action> = tokens.into_iter().flat_map(|t| session.appended(t, result)).collect();
                    if let Some(end) = Box::pin(self.carry_out(session, a)).await? {
                        return Ok(end);
                    }
                }
                batch = async { match self.following.as_mut() { Some(f) => Box::pin(f.next_batch(room)).await, None => std::future::pending().await } }, if deliver => {
                    let (i, batch) = batch.map_err(Ended::store("reading the log"))?;
                    let mut batch = batch.into_iter();
                    let now_ms = self.log().clock().now_ms();
                    for r in batch.by_ref() {
                        let offset = r.offset.0;
                        let Some(f) = self.following.as_mut().and_then(|f| f.get_mut(i)) else { break };
                        let dup = f.extra.offered(offset);
                        if f.cursor.as_ref().is_some_and(|c| c.is_acked(r.offset)) {
                            continue; // done before this connection
                        }
                        match Message::decode(&r, &self.shared.settings.bridge) {
                            Ok(m) => {
                                let a = session.deliver(m, pack(i, offset), dup, now_ms);
                                self.carry_out_delivery(session, a)?;
                                if session.held_at().is_some() {
                                    break;
                                }
                            }
                            Err(why) => {
                                tracing::warn!(offset, why, "not an MQTT record; skipped");
                                self.done(pack(i, offset));
                            }
                        }
                    }
                    if batch.len() > 0
                        && let (Some(held), Some(t)) = (session.held_at(), self.following.as_mut())
                    {
                        // Held back behind a packet id in flight: read the rest again later.
                        t.seek(i, Offset(unpack(held).1 + 1));
                    }
                }
                Some(d) = async { match self.shared_rx.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } }, if room > 0 => {
                    let now_ms = self.log().clock().now_ms();
                    match session.deliver_shared(&d.share, &d.message, d.offset, now_ms) {
                        Some(a) => { Box::pin(self.carry_out(session, a)).await?; }
                        None => {
                            if let Some(m) = self.shares.get(&d.share) {
                                m.give_back(d.offset);
                            }
                        }
                    }
                }
                _ = async { match self.kicked.as_mut() { Some(k) => { let _ = k.await; } None => std::future::pending().await } }, if self.kicked.is_some() => {
                    self.kicked = None;
                    if let Some(p) = session.server_disconnect(DisconnectReasonCode::SessionTakenOver, "another connection took the session over") {
                        self.send(session, &p)?;
                    }
                    // Leave the cursors to the new owner.
                    self.drop_cursors();
                    return Err(Ended::TakenOver { client: session.client_id().to_string() });
                }
                _ = async { match self.handshake.as_mut() { Some(h) => h.evicted().await, None => std::future::pending().await } }, if self.handshake.is_some() => {
                    return Err(Ended::Evicted { peer });
                }
                _ = async { match self.tenant_deleted.as_mut() { Some(d) => { let _ = d.wait_for(|s| *s).await; } None => std::future::pending().await } }, if self.tenant_deleted.is_some() => {
                    if let Some(p) = session.server_disconnect(DisconnectReasonCode::NotAuthorized, "the tenant was deleted") {
                        self.send(session, &p)?;
                    }
                    return Err(Ended::TenantDeleted { client: session.client_id().to_string() });
                }
                _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    if let Some(p) = session.server_disconnect(DisconnectReasonCode::ServerShuttingDown, "the adapter is shutting down; connect again") {
                        self.send(session, &p)?;
                    }
                    return Err(Ended::ShuttingDown { client: session.client_id().to_string() });
                }
                _ = tokio::time::sleep_until(next_tick) => {
                    next_tick = Instant::now() + Duration::from_secs(1);
                    if let Some(a) = session.timed_out(Instant::now().into_std()) {
                        Box::pin(self.carry_out(session, a)).await?;
                    }
                    let revoked = self.grants_changed(session);
                    if !revoked.is_empty() && let Some(end) = Box::pin(self.carry_out(session, revoked)).await? {
                        return Ok(end);
                    }
                    if self.reading && self.following.as_ref().is_some_and(|f| f.claims_changed()) {
                        // Addresses claim other topics now: follow what the filters reach.
                        Box::pin(self.follow_streams(session, true)).await?;
                    }
                    let moved = self.following.as_ref().is_some_and(|f| f.streams().iter().any(|f| {
                        f.cursor.as_ref().is_some_and(|c| c.is_dirty()) || f.extra.moved()
                    }));
                    if moved {
                        Box::pin(self.save(session, None)).await?;
                    }
                }
            }
        }
    }

    /// The session's grants again if the users changed since it last got them (a user's
    /// permissions are live): what that requires (a disconnect, if a subscription is no
    /// longer allowed).
    fn grants_changed(&mut self, session: &mut Session) -> Vec<Action> {
        let auth = &self.shared.auth;
        let Some(user) = &self.user else {
            return Vec::new();
        };
        let now = auth.generation();
        if now == self.grants_seen {
            return Vec::new();
        }
        self.grants_seen = now;
        session.set_grants(auth.grants(Some(user)))
    }

    /// Offer what can be offered without waiting: a held message, then retained ones.
    fn deliver_ready(&mut self, session: &mut Session) -> Result<(), Ended> {
        let now_ms = self.log().clock().now_ms();
        let a = session.deliver_held(now_ms);
        self.carry_out_delivery(session, a)?;
        while session.can_deliver()
            && let Some((filter, m)) = self.retained_queue.pop_front()
        {
            let a = session.deliver_retained(&filter, &m, now_ms);
            self.carry_out_delivery(session, a)?;
        }
        Ok(())
    }

    fn carry_out_delivery(
        &mut self,
        session: &mut Session,
        actions: Vec<Action>,
    ) -> Result<(), Ended> {
        for a in actions {
            match a {
                Action::Send(p) => self.send(session, &p)?,
                other => self.delivery_ended(other),
            }
        }
        Ok(())
    }

    /// A delivery needs nothing more: move the session's position (`Done`) or its shared
    /// group's (`SharedDone`) on.
    fn delivery_ended(&mut self, action: Action) {
        match action {
            Action::Done { offset } => self.done(offset),
            Action::SharedDone { share, offset } => {
                if let Some(m) = self.shares.get(&share) {
                    m.ack(offset);
                }
            }
            _ => {}
        }
    }

    /// The stored message at packed `position` needs nothing more from this session.
    fn done(&mut self, position: u64) {
        if position == u64::MAX {
            return; // a retained message: not from a followed stream
        }
        if let Some(f) = self.following.as_mut() {
            f.ack(position);
        }
    }

    /// Persist the session's position if it changed; a fenced cursor means another
    /// connection took the session over.
    async fn commit(&mut self, session: &Session) -> Result<(), Ended> {
        match self.following.as_mut() {
            Some(f) => f.commit().await.map_err(|_| Ended::TakenOver {
                client: session.client_id().to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Follow the streams the session's subscriptions reach: the default topic address, and
    /// each topic address that claims topics one of its filters matches (from its head: a
    /// subscription gets what is published after it). A persistent session keeps a cursor on
    /// each, fenced like the first. `late`: the claims changed after the subscriptions were
    /// made, so a newly reached stream is read from [`wharf_adapter_core::claims::CLAIM_GRACE`] back (what
    /// was routed there while this adapter had not seen the claim yet).
    async fn follow_streams(&mut self, session: &Session, late: bool) -> Result<(), Ended> {
        let log = self.log().clone();
        if !late {
            // From the head after everything this adapter acknowledged (see `Log::settle`).
            log.settle().await;
        }
        let persistent = self.persistent();
        let claims = &self.shared.claims;
        // The first subscription of a session with nothing stored: the default topic address
        // from its head (a resumed session follows what it followed, from its positions).
        let following = self.following.get_or_insert_with(|| {
            let mut f = Following::new(&log, claims.clone());
            let default = default_stream();
            let head = log.stream(&default).map_or(0, |s| s.next_offset);
            f.follow(default, Offset(head), None, Marks::new(0));
            Box::new(f)
        });
        self.reading = true;
        let wanted = following.newly_reached(session.filters(), late).await;
        if wanted.is_empty() {
            return Ok(());
        }
        let name = names::session_cursor(session.client_id());
        for (stream, from) in wanted {
            let cursor = match (&name, persistent) {
                (Some(name), true) => {
                    let mut c =
                        log.cursor_from(&stream, name, from)
                            .await
                            .map_err(Ended::store(format!(
                                "opening the session's cursor on {stream}"
                            )))?;
                    c.take_over().await.map_err(Ended::store(format!(
                        "taking the session's cursor on {stream}"
                    )))?;
                    c.ack_below(from);
                    Some(c)
                }
                _ => None,
            };
            following.follow(stream, from, cursor, Marks::new(from.0));
        }
        if persistent {
            self.save(session, None).await?;
        }
        Ok(())
    }

    /// Carry out actions: `Ok(Some(will_due))` when the client disconnected, `Err` when the
    /// connection must close.
    async fn carry_out(
        &mut self,
        session: &mut Session,
        actions: Vec<Action>,
    ) -> Result<Option<bool>, Ended> {
        let mut end = Ok(None);
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(p) => self.send(session, &p)?,
                Action::Append { token, message } => {
                    // Every publish decoded from one read goes to the log in one submission.
                    let mut tokens = vec![token];
                    let mut messages = vec![message];
                    while let Some(Action::Append { .. }) = queue.front() {
                        if let Some(Action::Append { token, message }) = queue.pop_front() {
                            tokens.push(token);
                            messages.push(message);
                        }
                    }
                    for m in &messages {
                        self.flow.received(m.payload.len());
                    }
                    let started = Instant::now();
                    let meter = self.flow.durable();
                    match store(self.log(), &self.shared.claims, &messages).await {
                        Ok(durable) => {
                            self.pending_records += tokens.len();
                            self.pending
                                .get_or_insert_with(Default::default)
                                .push_back(Box::pin(async move {
                                    let result = durable.await.map_err(|e| StoreFailure::from(&e));
                                    meter.took(started.elapsed());
                                    (tokens, result)
                                }))
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "append failed");
                            let failure = StoreFailure::from(&e);
                            for t in tokens {
                                queue.extend(session.appended(t, Err(failure)));
                            }
                        }
                    }
                }
                Action::Resume {
                    client_id,
                    clean_start,
                    expiry,
                    login,
                } => {
                    if let Some(h) = self.handshake.as_mut() {
                        h.checking();
                    }
                    let user = match self.authenticate(login).await {
                        Verdict::Allowed(user) => {
                            self.handshake = None; // let in: no longer a handshake
                            user
                        }
                        refused => {
                            tracing::info!(client = client_id, ?refused, "connection refused");
                            queue.extend(session.not_allowed(refused == Verdict::BadCredentials));
                            continue;
                        }
                    };
                    // From here on the connection lives in its user's tenant, with its grants.
                    let tenant = self.shared.auth.tenant_of(user.as_deref()).to_string();
                    self.grants_seen = self.shared.auth.generation();
                    let refused = session.set_grants(self.shared.auth.grants(user.as_deref()));
                    if !refused.is_empty() {
                        tracing::info!(client = client_id, "connection refused: will not allowed");
                        queue.extend(refused);
                        continue;
                    }
                    self.user = user;
                    match self.shared.tenancy.service(&self.shared, &tenant).await {
                        Ok(service) => {
                            session.use_settings(service.session_settings.clone());
                            self._client = service.log.client();
                            self.tenant_deleted = Some(service.deleted.subscribe());
                            self.flow = wharf_adapter_core::metrics::Flow::new(
                                wharf_adapter_core::record::Protocol::Mqtt,
                                &tenant,
                            );
                            self.shared = service;
                        }
                        Err(e) => {
                            tracing::info!(client = client_id, tenant, error = %e, "no service for the tenant: refused");
                            queue.extend(session.resume_failed());
                            continue;
                        }
                    }
                    let a = match self.resume(&client_id, clean_start, expiry).await {
                        Ok(stored) => {
                            self.register_will(session).await;
                            session.resumed(stored)
                        }
                        Err(e) => {
                            tracing::warn!(client = client_id, error = %e, "could not resume the session");
                            session.resume_failed()
                        }
                    };
                    queue.extend(a);
                }
                Action::StartDelivery => self.follow_streams(session, false).await?,
                Action::SendRetained { filter } => {
                    // The filters of one SUBSCRIBE share one catch-up with the store.
                    let mut filters = vec![filter];
                    while let Some(Action::SendRetained { .. }) = queue.front() {
                        if let Some(Action::SendRetained { filter }) = queue.pop_front() {
                            filters.push(filter);
                        }
                    }
                    let now_ms = self.log().clock().now_ms();
                    match self
                        .shared
                        .retained
                        .matching(self.log(), &filters, now_ms)
                        .await
                    {
                        Ok(found) => self.retained_queue.extend(found),
                        Err(e) => {
                            tracing::warn!(error = %e, ?filters, "could not read retained messages")
                        }
                    }
                }
                Action::SaveSession(snapshot) => self.save_as(session, *snapshot, None).await?,
                a @ (Action::Done { .. } | Action::SharedDone { .. }) => self.delivery_ended(a),
                Action::JoinShared { share } => {
                    let tx = match &self.shared_tx {
                        Some(tx) => tx.clone(),
                        None => {
                            // Small: what waits here waits for this member only, while in
                            // the group's queue it goes to whichever member has room first.
                            let (tx, rx) = mpsc::channel(8);
                            self.shared_rx = Some(rx);
                            self.shared_tx = Some(tx.clone());
                            tx
                        }
                    };
                    match self.shared.shared_groups.join(&share, tx) {
                        Some(mut m) => {
                            // The SUBACK (already in the output buffer) goes out after this:
                            // once the client has it, the group's start is stored and what
                            // is published next reaches it.
                            if !m.serving(Duration::from_secs(5)).await {
                                tracing::warn!(
                                    share,
                                    "shared subscription not serving yet after 5 s; acknowledged anyway"
                                );
                            }
                            self.shares.insert(share, m);
                        }
                        None => tracing::warn!(
                            share,
                            "shared subscription name too long to store; not served"
                        ),
                    }
                }
                Action::LeaveShared { share } => {
                    self.shares.remove(&share);
                }
                Action::Close { reason } => {
                    let client = session.client_id().to_string();
                    end = Err(Ended::Closed { client, reason })
                }
                Action::Disconnected { will } => end = Ok(Some(will)),
            }
        }
        end
    }

    /// Check a client's credentials against the users and the anonymous rule
    /// ([`Auth::verify`]: argon2 off the async threads, a few at a time).
    fn authenticate(
        &self,
        login: Option<Login>,
    ) -> impl std::future::Future<Output = Verdict> + Send + use<> {
        let (auth, local) = (self.shared.auth.clone(), self.local);
        async move {
            let (user, password) = match login {
                Some(l) => (Some(l.username), Some(l.password.into_bytes())),
                None => (None, None),
            };
            auth.verify(local, user, password).await
        }
    }

    /// Register the session's will in the log, so that another adapter publishes it if this
    /// one dies. Best effort: without it the will still works while this adapter lives.
    async fn register_will(&mut self, session: &Session) {
        let (Some(will), Some(reg)) = (session.will(), self.registration.as_ref()) else {
            return;
        };
        match self
            .shared
            .wills
            .register(
                session.client_id(),
                reg.offset,
                will.delay,
                &will.message.to_record(0),
            )
            .await
        {
            Ok(()) => self.will_registered = true,
            Err(e) => tracing::warn!(error = %e, "could not register a will in the log"),
        }
    }

    /// Claim `client_id`'s session (closing any older connection of it, on any adapter) and
    /// load what is stored of it. `Ok(None)`: a new session.
    async fn resume(
        &mut self,
        client_id: &str,
        clean_start: bool,
        expiry: u32,
    ) -> wharf_log::Result<Option<StoredSession>> {
        let (registration, kicked) = self.shared.takeover.announce(client_id).await?;
        self.registration = Some(registration);
        self.kicked = Some(kicked);
        // Longer ids are refused persistent sessions at CONNECT: nothing can be stored.
        let Some(name) = names::session_cursor(client_id) else {
            return Ok(None);
        };
        let log = self.log().clone();
        let default = default_stream();
        let head = log.stream(&default).map_or(0, |s| s.next_offset);
        let mut cursor = log.cursor_from(&default, &name, Offset(head)).await?;
        if !cursor.exists() && expiry == 0 {
            return Ok(None); // a clean session, nothing stored: no store writes at all
        }
        let now_ms = log.clock().now_ms();
        let run = self.shared.run.clone();
        let mut stored = None;
        cursor
            .take_over_updating(|meta| {
                let r = StoredSession::resume(meta.as_ref(), clean_start, expiry, now_ms, &run);
                stored = r.session;
                r.meta.or(meta)
            })
            .await?;
        if stored.is_none() {
            // A new session (or the old one discarded): start at the head.
            cursor.ack_below(Offset(head));
            cursor.set_meta(None);
        }
        if expiry == 0 && stored.is_none() {
            // Clean session: the stored one is discarded [MQTT-3.1.2-6]; nothing is kept.
            cursor.commit().await?;
            return Ok(None);
        }
        // With expiry 0 and a stored session (Clean Start 0, no Session Expiry Interval: how
        // most MQTT 5 clients reconnect), the session is resumed and ends when this connection
        // does [MQTT-3.1.2-4, 3.1.2-23]: `save_on_close` deletes it then.
        let unclean = stored.as_ref().is_some_and(StoredSession::ended_unclean);
        if unclean {
            // See what other adapters stored up to now (the old connection may have sent it).
            log.refresh().await?;
        }
        let unclean_head =
            |stream: &StreamId| unclean.then(|| log.stream(stream).map_or(0, |s| s.next_offset));
        let sent = stored.as_ref().map_or(0, |s| s.sent_upto);
        let marks = Marks::resumed(sent, unclean_head(&default));
        let mut following = Following::new(&log, self.shared.claims.clone());
        following.follow(default, Offset(head), Some(cursor), marks);
        // The other addresses it followed, in the same order (packet ids depend on it).
        for f in stored.iter().flat_map(|s| &s.streams) {
            let Ok(stream) = StreamId::new(f.stream.clone()) else {
                continue;
            };
            let head = log.stream(&stream).map_or(0, |s| s.next_offset);
            let mut c = log.cursor_from(&stream, &name, Offset(head)).await?;
            c.take_over().await?;
            let marks = Marks::resumed(f.sent_upto, unclean_head(&stream));
            following.follow(stream, Offset(head), Some(c), marks);
        }
        self.following = Some(Box::new(following));
        Ok(stored)
    }

    /// Persist the session now (subscriptions, released packet ids, positions).
    async fn save(&mut self, session: &Session, disconnected_ms: Option<i64>) -> Result<(), Ended> {
        self.save_as(session, session.stored(), disconnected_ms)
            .await
    }

    /// Persist `snapshot` (see [`Action::SaveSession`]) with the positions as they are now.
    async fn save_as(
        &mut self,
        session: &Session,
        snapshot: StoredSession,
        disconnected_ms: Option<i64>,
    ) -> Result<(), Ended> {
        if self.persistent()
            && let Some(following) = self.following.as_mut()
        {
            let positions = following.streams().iter().map(|f| FollowedStream {
                stream: f.stream.as_str().to_string(),
                sent_upto: f.extra.sent_upto(),
            });
            let meta = snapshot.at(positions, disconnected_ms, &self.shared.run);
            let meta = serde_json::to_value(meta).ok();
            for f in following.streams_mut() {
                f.extra.saved();
            }
            if let Some(c) = following.get_mut(0).and_then(|f| f.cursor.as_mut()) {
                c.set_meta(meta);
            }
        }
        self.commit(session).await
    }

    /// The connection ended: a persistent session records when (its expiry counts from
    /// then) and its final position; a resumed session whose expiry is now 0 ends, and is
    /// deleted from the store (every stream it followed).
    async fn save_on_close(&mut self, session: &Session) {
        if self.persistent() && !session.persistent() {
            let following = self.following.as_mut();
            for f in following.into_iter().flat_map(|f| f.streams_mut()) {
                if let Some(c) = f.cursor.take() {
                    c.delete().await;
                }
            }
            return;
        }
        if self.persistent() {
            let now = self.log().clock().now_ms();
            if let Err(e) = self.save(session, Some(now)).await {
                tracing::info!(
                    client = session.client_id(),
                    reason = %e,
                    "session not saved at close"
                );
            }
        }
    }

    /// Encode `p` for the client, within the client's maximum packet size: a delivery over
    /// it is dropped [MQTT-3.1.2-24]; any other packet is sent without its reason string and
    /// user properties [MQTT-3.1.2-25].
    fn send(&mut self, session: &mut Session, p: &Packet) -> Result<(), Ended> {
        let version = self.version.unwrap_or(Version::V311);
        let before = self.output.len();
        codec::write(version, p, &mut self.output).map_err(|e| Ended::Encode(format!("{e:?}")))?;
        let fits = session
            .client_max_packet()
            .is_none_or(|max| self.output.len() - before <= max);
        if fits {
            if let Packet::Publish(publish) = p {
                self.flow.delivered(publish.payload.len());
            }
            return Ok(());
        }
        let max = session.client_max_packet().unwrap_or(usize::MAX);
        self.output.truncate(before);
        match p {
            Packet::Publish(publish) => {
                for a in session.too_large(publish.pkid) {
                    self.delivery_ended(a);
                }
                tracing::debug!(
                    topic = publish.topic,
                    "delivery larger than the client's maximum packet size dropped"
                );
            }
            other => {
                if let Some(small) = codec::without_optional_properties(other) {
                    codec::write(version, &small, &mut self.output)
                        .map_err(|e| Ended::Encode(format!("{e:?}")))?;
                }
                if self.output.len() - before > max {
                    // Only a CONNACK's fixed properties could do this, with a tiny limit.
                    self.output.truncate(before);
                    tracing::info!(max, "packet larger than the client's maximum not sent");
                }
            }
        }
        Ok(())
    }

    /// Publish a will once its delay has passed — unless the client connected again
    /// meanwhile, on any adapter (best effort: the client is gone, nobody awaits an ack).
    /// A background task: a shutdown waits for a will being published; one still waiting
    /// out its delay is left to the other adapters if it is registered in the log (they
    /// publish it when this adapter's lease is gone, its delay counted), and published at once
    /// otherwise (nobody else knows of it).
    fn publish_will(&mut self, will: Will) {
        let log = self.log().clone();
        let claims = self.shared.claims.clone();
        let takeover = self.shared.takeover.clone();
        let since = self.registration.as_ref().map(|r| r.offset);
        let (wills, registered) = (self.shared.wills.clone(), self.will_registered);
        let background = self.shared.settings.background.clone();
        let stopping = background.cancelled();
        background.spawn(async move {
            if !will.delay.is_zero() {
                let stopped = tokio::select! {
                    _ = tokio::time::sleep(will.delay) => false,
                    _ = stopping => true,
                };
                if stopped && registered {
                    tracing::info!(
                        client = will.message.origin,
                        "adapter stopping: the delayed will is left to the other adapters"
                    );
                    return;
                }
                if stopped {
                    tracing::info!(
                        client = will.message.origin,
                        "adapter stopping: a will not registered in the log is published before its delay ends"
                    );
                }
                if let Some(offset) = since
                    && takeover.reconnected_since(&will.message.origin, offset)
                {
                    tracing::info!(
                        client = will.message.origin,
                        "client is back; will cancelled"
                    );
                    if let (true, Some(offset)) = (registered, since) {
                        wills.settle(&will.message.origin, offset).await;
                    }
                    return;
                }
            }
            let stored = match store(&log, &claims, std::slice::from_ref(&will.message)).await {
                Ok(durable) => durable.await,
                Err(e) => Err(e),
            };
            if stored.is_ok()
                && let (true, Some(offset)) = (registered, since)
            {
                wills.settle(&will.message.origin, offset).await;
            }
            match stored {
                Ok(()) => tracing::info!(
                    topic = will.message.topic,
                    client = will.message.origin,
                    "will published"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, client = will.message.origin, "could not publish a will")
                }
            }
        });
    }
}

/// Publishes of one connection being stored, in order (allocated on a connection's first
/// publish: idle subscribers do without).
type PendingBatches =
    FuturesOrdered<futures::future::BoxFuture<'static, (Vec<u64>, Result<(), StoreFailure>)>>;

/// Buffer capacity an idle connection may keep.
const IDLE_BUFFER: usize = 1024;

/// Publishes from one connection being stored at once, at most (then it is not read).
const MAX_PENDING_RECORDS: usize = 16_384;

async fn flush<S: AsyncWrite + Unpin>(socket: &mut S, out: &mut BytesMut) {
    if !out.is_empty() {
        let _ = socket.write_all(out).await;
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use wharf_log::Store;

    use super::*;
    use crate::session::FollowedStream;

    /// The sweeper deletes expired sessions (on every stream they followed) and clean
    /// leftovers, and keeps sessions not expired and those whose end is not recorded.
    #[tokio::test]
    async fn sweeper_deletes_expired_sessions_only() {
        let log = Log::open(Store::open("memory://").expect("store"))
            .await
            .expect("log");
        let default = default_stream();
        let other = StreamId::new("sensors").expect("stream");
        let now = log.clock().now_ms();
        let session = |disconnected_ms: Option<i64>, expiry: u32| StoredSession {
            version: StoredSession::VERSION,
            client_id: String::new(),
            expiry,
            subscriptions: Vec::new(),
            released: Vec::new(),
            disconnected_ms,
            sent_upto: 0,
            streams: vec![FollowedStream {
                stream: "sensors".into(),
                sent_upto: 0,
            }],
            adapter: None,
            orphaned_ms: None,
        };
        // Connected through an adapter that died (its lease expired), and through a live one.
        let on = |adapter: &str| StoredSession {
            adapter: Some(adapter.into()),
            ..session(None, 1)
        };
        let dead = log
            .acquire_lease("mqtt-adapter.dead", "dead", Duration::from_millis(1))
            .await
            .expect("lease");
        assert!(dead.is_some());
        let _live = log
            .acquire_lease("mqtt-adapter.live", "live", Duration::from_secs(60))
            .await
            .expect("lease");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cases = [
            (
                "mqtt-session.expired",
                Some(session(Some(now - 20_000), 10)),
            ),
            ("mqtt-session.fresh", Some(session(Some(now - 5_000), 10))),
            ("mqtt-session.connected", Some(session(None, 10))),
            ("mqtt-session.orphan", Some(on("dead"))),
            ("mqtt-session.live", Some(on("live"))),
            ("mqtt-session.forever", Some(session(Some(0), u32::MAX))),
            ("mqtt-session.clean", None),
        ];
        for (name, stored) in &cases {
            let mut c = log.cursor(&default, name).await.expect("cursor");
            c.set_meta(
                stored
                    .as_ref()
                    .map(|s| serde_json::to_value(s).expect("json")),
            );
            c.ack(Offset(0));
            c.commit().await.expect("commit");
            let mut o = log.cursor(&other, name).await.expect("cursor");
            o.ack(Offset(0));
            o.commit().await.expect("commit");
        }
        let n = sweep_expired_sessions(&log, "me", Duration::from_secs(30))
            .await
            .expect("sweep");
        assert_eq!(n, 2);
        assert_eq!(
            log.cursor_names(&default, "mqtt-session.")
                .await
                .expect("names"),
            [
                "mqtt-session.connected",
                "mqtt-session.forever",
                "mqtt-session.fresh",
                "mqtt-session.live",
                "mqtt-session.orphan"
            ]
        );
        // The orphan's expiry (1 s) counts from the sweep that found its adapter gone; the
        // live adapter's session is left alone.
        let meta = |name: &str| {
            let log = log.clone();
            let name = name.to_string();
            async move {
                let c = log.cursor(&default_stream(), &name).await.expect("cursor");
                serde_json::from_value::<StoredSession>(c.meta().cloned().expect("meta"))
                    .expect("stored session")
            }
        };
        assert!(meta("mqtt-session.orphan").await.orphaned_ms.is_some());
        assert_eq!(meta("mqtt-session.live").await.orphaned_ms, None);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let n = sweep_expired_sessions(&log, "me", Duration::from_secs(30))
            .await
            .expect("sweep");
        assert_eq!(n, 1, "the orphan, a second after it was found");
        assert!(
            !log.cursor_names(&default, "mqtt-session.orphan")
                .await
                .expect("names")
                .iter()
                .any(|n| n == "mqtt-session.orphan")
        );
        // The expired sessions' cursors on the other stream went with them (the clean
        // leftover's is unknown to it and stays).
        assert_eq!(
            log.cursor_names(&other, "mqtt-session.")
                .await
                .expect("names"),
            [
                "mqtt-session.clean",
                "mqtt-session.connected",
                "mqtt-session.forever",
                "mqtt-session.fresh",
                "mqtt-session.live"
            ]
        );
    }
}
