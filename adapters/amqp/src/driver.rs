//! The tokio side: accept connections (TCP or TLS) and run one task per connection that owns
//! the socket, feeds the [`Connection`] engine and carries out its events against the log and
//! the [`broker`](crate::broker).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use fe2o3_amqp_types::{
    definitions::{
        AmqpError, ConnectionError, Error, ErrorCondition, ReceiverSettleMode, Role,
        SenderSettleMode,
    },
    messaging::{Accepted, DeliveryState, Rejected, Released, TargetArchetype},
    performatives::Attach,
    primitives::Symbol,
};
use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, watch},
};
use wharf_adapter_core::competing::Outcome;
use wharf_adapter_core::errors::StoreFailure;
use wharf_adapter_core::runtime::{
    Router, Tenancy,
    listen::{Active, Handshake, Handshakes, accept_connections},
};
use wharf_adapter_core::wills::Wills;
use wharf_auth::{Action as Permit, Auth, Grants, Verdict};
use wharf_log::Log;
use wharf_log_format::{Offset, Record, StreamId};
use wharf_resources::permission;

use crate::{
    attach::{ReceiverPlan, SenderPlan, SourcePlan, plan_receiver, plan_sender, plan_source},
    broker::{
        Address, AddressError, Addresses, Consumer, Queues, Subscription, ToLink, durable_cursor,
    },
    ended::Ended,
    engine::{self, Connection, Delivery, Event, LinkId, SendError},
    message::{self, Sections},
};

/// Settings of the AMQP adapter.
#[derive(Clone, Debug)]
pub struct AmqpSettings {
    pub engine: engine::Config,
    /// Create an address on first use (type from the terminus capabilities, queue if none).
    pub auto_create: bool,
    /// TTL of the leases by which adapters serve blocks of a queue; after an adapter dies,
    /// its blocks are served again by another within this time.
    pub queue_lease: Duration,
    /// Offsets per block of a queue (the unit adapters take by lease). Smaller blocks spread
    /// a queue over adapters more finely; each block costs a few store requests.
    pub queue_block: u64,
    /// Connections served at once by each listener.
    pub max_connections: usize,
    /// Connections that have not finished their handshake (SASL, open) yet, at most (the
    /// longest waiting is closed to make room: [`wharf_adapter_core::runtime::listen::Handshakes`]).
    pub max_handshakes: usize,
    /// A connection that has not sent its open (after the protocol headers and SASL) within
    /// this is closed.
    pub handshake_timeout: Duration,
    /// Maps other protocols' records to AMQP messages (cross-protocol delivery); wired by
    /// the process. Empty: MQTT publishes reach AMQP receivers as their bare payload.
    pub bridge: wharf_adapter_core::bridge::Bridge,
    /// The process's background tasks (queue consumers), cancelled and awaited at shutdown
    /// after the connections ended.
    pub background: wharf_adapter_core::runtime::Background,
    /// The tenant's limits (message size, storage), set live: a transfer beyond them is
    /// rejected (`amqp:link:message-size-exceeded`, `amqp:resource-limit-exceeded`).
    pub quota: Arc<wharf_adapter_core::quota::Quota>,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            engine: engine::Config::default(),
            auto_create: true,
            queue_lease: Duration::from_secs(10),
            queue_block: 8192,
            max_connections: 10_000,
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(10),
            bridge: wharf_adapter_core::bridge::Bridge::default(),
            background: wharf_adapter_core::runtime::Background::new(),
            quota: Arc::default(),
        }
    }
}

/// One adapter's AMQP service: what all its listeners and connections share.
#[derive(Debug)]
pub struct Amqp {
    /// The tenant whose log this is, and where other tenants' clients go.
    tenancy: Tenancy<Amqp>,
    log: Log,
    settings: AmqpSettings,
    auth: Arc<Auth>,
    addresses: Arc<Addresses>,
    queues: Queues,
    links: AtomicU64,
    /// Where wills are registered so that another adapter publishes them if this one dies
    /// (the MQTT adapter's registry; `None`: wills live only as long as this process).
    wills: Option<Arc<Wills>>,
    stopping: watch::Sender<bool>,
    /// Turns true when this service's tenant is deleted: its connections are closed.
    deleted: watch::Sender<bool>,
    /// Connections being served (by all listeners).
    active: Active,
    /// Connections that have not finished their handshake yet.
    handshakes: Handshakes,
}

/// Records a connection may have waiting to be durable before it stops reading.
const MAX_PENDING_RECORDS: usize = 16_384;

fn err(condition: impl Into<fe2o3_amqp_types::definitions::ErrorCondition>, d: String) -> Error {
    Error::new(condition, Some(d), None)
}

impl Amqp {
    /// The service of `tenant` on its `log`; `wills` and `claims` are the MQTT adapter's of
    /// the same tenant.
    pub fn new(
        tenant: &str,
        log: Log,
        mut settings: AmqpSettings,
        auth: Arc<Auth>,
        wills: Option<Arc<Wills>>,
        claims: Arc<wharf_adapter_core::claims::Claims>,
    ) -> Arc<Self> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        settings.engine.container_id = format!("wharf-{run}");
        let addresses = Arc::new(Addresses::new(
            log.clone(),
            tenant,
            settings.auto_create,
            claims,
            settings.bridge,
        ));
        let queues = Queues::new(
            log.clone(),
            run,
            settings.queue_lease,
            settings.queue_block,
            addresses.clone(),
            settings.background.clone(),
        );
        Arc::new(Self {
            tenancy: Tenancy::new(tenant),
            log,
            addresses,
            queues,
            handshakes: Handshakes::new(settings.max_handshakes),
            settings,
            auth,
            links: AtomicU64::new(1),
            wills,
            stopping: watch::channel(false).0,
            deleted: watch::channel(false).0,
            active: Active::default(),
        })
    }

    /// Hand clients of other tenants to the services `router` finds (set once, before
    /// serving).
    pub fn route_tenants(&self, router: Router<Amqp>) {
        self.tenancy.route(router);
    }

    /// Close every connection (`amqp:connection:forced`) and wait up to `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.active.stop(&self.stopping, grace, "amqp").await
    }

    /// Its tenant was deleted: close its connections (`amqp:connection:forced`, saying why).
    pub fn tenant_deleted(&self) {
        let _ = self.deleted.send(true);
    }

    /// Accept connections on `listener` (TLS first if `tls`) until `shutdown` resolves.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let max = self.settings.max_connections;
        accept_connections(listener, max, shutdown, |socket, peer, local, permit| {
            let (shared, tls, active) = (self.clone(), tls.clone(), self.active.enter());
            tokio::spawn(async move {
                let (_permit, _active) = (permit, active);
                let Some(mut handshake) = shared.handshakes.enter() else {
                    tracing::info!(%peer, "amqp connection refused: every handshake place is taken by clients whose credentials are being checked");
                    return;
                };
                let deadline = tokio::time::Instant::now() + shared.settings.handshake_timeout;
                let end = match tls {
                    None => Box::pin(connection(socket, peer, local, shared, handshake, deadline)).await,
                    Some(acceptor) => {
                        match handshake.bounded(deadline, acceptor.accept(socket)).await {
                            Ok(Ok(s)) => Box::pin(connection(s, peer, local, shared, handshake, deadline)).await,
                            Ok(Err(e)) => Err(Ended::Tls(e.to_string())),
                            Err(why) => Err(Ended::Tls(format!("{why} ([amqp] handshake_timeout, max_handshakes)"))),
                        }
                    }
                };
                if let Err(reason) = end {
                    tracing::info!(%peer, %reason, "amqp connection closed");
                }
            });
        })
        .await
    }
}

/// What we keep of one link.
enum LinkState {
    /// The peer registers its will on the address `$will` (see [`WILL_ADDRESS`]).
    Will,
    /// The peer sends; messages go to `address` (None: anonymous relay, `to` on each).
    In { address: Option<Address> },
    /// We send from a queue.
    Queue {
        id: u64,
        consumer: Consumer,
        presettled: bool,
    },
    /// We send from a topic (or temporary address).
    Topic {
        id: u64,
        sub: Subscription,
        presettled: bool,
    },
}

type Settled = Vec<(LinkId, u32, DeliveryState)>;

/// The address a client sends its will to: the last message sent there (its `to` says where it
/// goes) is published if the connection ends without the client's close; closing the link
/// withdraws it. The MQTT will, for AMQP clients.
pub const WILL_ADDRESS: &str = "$will";

static WILL_IDS: AtomicU64 = AtomicU64::new(0);

/// Records for one stream from one read, and who sent each (link, delivery id, pre-settled).
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    senders: Vec<(LinkId, u32, bool)>,
}

struct Conn {
    shared: Arc<Amqp>,
    /// Counts this connection as a client of its tenant's log (see `wharf_log::Log::client`).
    client: wharf_log::ClientGuard,
    /// Its metrics (counted as a connection of its tenant while it lives).
    flow: wharf_adapter_core::metrics::Flow,
    engine: Connection,
    local: SocketAddr,
    container_id: String,
    user: Option<String>,
    /// What the user may do, as of users generation `grants_seen` (`Auth::generation`).
    grants: Grants,
    grants_seen: u64,
    /// Turns true when its tenant is deleted (the tenant's service's, after SASL).
    tenant_deleted: Option<watch::Receiver<bool>>,
    /// The links a permission was checked for: what they do, on which name. A permission
    /// taken away detaches them (`amqp:unauthorized-access`).
    guarded: HashMap<LinkId, (Permit, String)>,
    links: HashMap<LinkId, LinkState>,
    by_id: HashMap<u64, LinkId>,
    tx: mpsc::UnboundedSender<ToLink>,
    /// Our unsettled sends on queue links → the queue offset.
    unsettled: HashMap<(LinkId, u32), u64>,
    appends: FuturesUnordered<BoxFuture<'static, (usize, Settled)>>,
    pending_records: usize,
    /// Messages of the current read, per stream, waiting to be appended together.
    batch: HashMap<StreamId, Batch>,
    /// The registered will: where to, and the message.
    will: Option<(Address, Bytes)>,
    /// This connection's number in the wills registry (high bit set: never an MQTT one).
    will_id: u64,
    /// The peer closed the connection with a close frame (its will is not published).
    closed_by_peer: bool,
}

/// Serve one connection. Until the peer's open arrives it holds `handshake` (a place among
/// connections not let in yet) and must get there by `deadline`.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Amqp>,
    handshake: Handshake,
    deadline: tokio::time::Instant,
) -> Result<(), Ended> {
    let mut handshake = Some(Box::new(handshake));
    let mut config = shared.settings.engine.clone();
    config.allow_no_sasl = matches!(shared.auth.check(local, None, None), Verdict::Allowed(_));
    if !config.allow_no_sasl {
        config.mechanisms.retain(|m| *m != "ANONYMOUS");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut stopping = shared.stopping.subscribe();
    let mut conn = Conn {
        engine: Connection::new(config),
        client: shared.log.client(),
        flow: wharf_adapter_core::metrics::Flow::new(
            wharf_adapter_core::record::Protocol::Amqp,
            shared.tenancy.own(),
        ),
        shared,
        local,
        container_id: String::new(),
        user: None,
        grants: Grants::all(),
        grants_seen: 0,
        tenant_deleted: None,
        guarded: HashMap::new(),
        links: HashMap::new(),
        by_id: HashMap::new(),
        tx,
        unsettled: HashMap::new(),
        appends: FuturesUnordered::new(),
        pending_records: 0,
        batch: HashMap::new(),
        will: None,
        will_id: (1 << 63) | WILL_IDS.fetch_add(1, Ordering::Relaxed),
        closed_by_peer: false,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut result = Ok(());
    loop {
        let reading = conn.pending_records < MAX_PENDING_RECORDS;
        tokio::select! {
            n = socket.read(&mut buf), if reading => {
                match n {
                    Ok(0) => { result = Err(Ended::PeerGone); break; }
                    Ok(n) => conn.engine.feed(&buf[..n]),
                    Err(e) => { result = Err(Ended::Read(e)); break; }
                }
            }
            Some(msg) = rx.recv() => {
                conn.outbound(msg);
                while let Ok(msg) = rx.try_recv() {
                    conn.outbound(msg);
                }
            }
            Some((records, settled)) = conn.appends.next(), if !conn.appends.is_empty() => {
                conn.pending_records -= records;
                for (link, id, state) in settled {
                    conn.engine.settle_received(link, id, state);
                }
            }
            _ = tick.tick() => {
                let now = conn.shared.log.clock().now_ms().max(0) as u64;
                conn.engine.tick(now);
            }
            _ = stopping.wait_for(|s| *s) => {
                conn.engine.close(Some(err(ConnectionError::ConnectionForced, "server shutting down".into())));
            }
            _ = async { match conn.tenant_deleted.as_mut() { Some(d) => { let _ = d.wait_for(|s| *s).await; } None => std::future::pending().await } }, if conn.tenant_deleted.is_some() => {
                conn.tenant_deleted = None;
                conn.engine.close(Some(err(ConnectionError::ConnectionForced, "the tenant was deleted".into())));
            }
            _ = tokio::time::sleep_until(deadline), if handshake.is_some() => {
                result = Err(Ended::HandshakeTimeout);
                break;
            }
            _ = async { match handshake.as_mut() { Some(h) => h.evicted().await, None => std::future::pending().await } }, if handshake.is_some() => {
                result = Err(Ended::Evicted);
                break;
            }
        }
        if let Some(h) = handshake.as_mut()
            && conn.engine.sasl_pending()
        {
            h.checking(); // its credentials are checked next: not evicted meanwhile
        }
        let closed = conn.events(peer).await;
        if conn.engine.is_open() {
            handshake = None; // let in
        }
        let out = conn.engine.take_output();
        if !out.is_empty()
            && let Err(e) = socket.write_all(&out).await
        {
            result = Err(Ended::Write(e));
            break;
        }
        if closed.is_some() || conn.engine.is_done() {
            if let Some(Some(reason)) = closed {
                result = Err(reason);
            }
            // Wait for what was accepted but not yet durable? Those are not settled yet:
            // the client never saw them accepted, so dropping them here loses nothing promised.
            // The peer reads our close (or header) before the socket goes.
            wharf_adapter_core::runtime::listen::close_gracefully(
                &mut socket,
                wharf_adapter_core::runtime::listen::LINGER,
            )
            .await;
            break;
        }
    }
    if let Some((address, payload)) = conn.will.take() {
        if !conn.closed_by_peer {
            let now = conn.shared.log.clock().now_ms();
            let record = message::record(address.record_key(), payload, false, now);
            match conn.shared.log.append(&address.stream, record).await {
                Ok(_) => tracing::info!(%peer, address = %address.name, "AMQP will published"),
                Err(e) => tracing::warn!(%peer, error = %e, "AMQP will not published"),
            }
        }
        conn.settle_will().await;
    }
    result
}

/// The outcome of a transfer the store did not take (`core::errors`' table): released when
/// sending again may work, else rejected with the reason.
fn not_stored(e: &wharf_log::LogError) -> DeliveryState {
    let failure = StoreFailure::from(e);
    match failure.amqp_rejection() {
        None => DeliveryState::Released(Released {}),
        Some(condition) => DeliveryState::Rejected(Rejected {
            error: Some(err(
                ErrorCondition::Custom(Symbol::from(condition)),
                format!("{}: {e}", failure.reason()),
            )),
        }),
    }
}

fn address_error(e: AddressError) -> Error {
    match e {
        AddressError::NotFound(a) => err(AmqpError::NotFound, format!("no address {a:?}")),
        AddressError::Invalid(d) => err(AmqpError::InvalidField, d),
        AddressError::Store(e) => attach_failed(&e),
        AddressError::Vanished(a) => err(
            AmqpError::InternalError,
            format!("address {a:?} was deleted while it was being created; attach again"),
        ),
    }
}

/// An attach refused because the store failed (`core::errors`' table).
/// `amqp:unauthorized-access`, saying who may not do what where.
fn not_allowed(user: &str, action: Permit, name: &str) -> Error {
    let what = match action {
        Permit::Send => "send to",
        Permit::Receive => "receive from",
        Permit::Manage => "manage",
    };
    err(
        AmqpError::UnauthorizedAccess,
        format!("user {user:?} may not {what} {name:?}"),
    )
}

fn attach_failed(e: &wharf_log::LogError) -> Error {
    let failure = StoreFailure::from(e);
    err(
        AmqpError::InternalError,
        format!("{}: {e}", failure.attach_reason()),
    )
}

impl Conn {
    /// Carry out the engine's events. Returns `Some(reason)` when the connection is over
    /// (`Some(None)`: a clean close).
    async fn events(&mut self, peer: SocketAddr) -> Option<Option<Ended>> {
        let mut end = None;
        self.grants_changed();
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::SaslInit {
                    mechanism,
                    response,
                } => {
                    let (auth, local) = (self.shared.auth.clone(), self.local);
                    let verdict = match mechanism.as_str() {
                        // argon2 takes tens of milliseconds by design: off the async threads.
                        "PLAIN" => match engine::sasl_plain(&response) {
                            Some((user, password)) => {
                                auth.verify(local, Some(user), Some(password)).await
                            }
                            None => Verdict::BadCredentials,
                        },
                        "ANONYMOUS" => auth.check(local, None, None),
                        _ => Verdict::BadCredentials,
                    };
                    let verdict = match verdict {
                        Verdict::Allowed(user) => {
                            // From here on the connection lives in its user's tenant.
                            let tenant = self.shared.auth.tenant_of(user.as_deref()).to_string();
                            match self.shared.tenancy.service(&self.shared, &tenant).await {
                                Ok(service) => {
                                    self.client = service.log.client();
                                    self.tenant_deleted = Some(service.deleted.subscribe());
                                    self.flow = wharf_adapter_core::metrics::Flow::new(
                                        wharf_adapter_core::record::Protocol::Amqp,
                                        &tenant,
                                    );
                                    self.shared = service;
                                    Verdict::Allowed(user)
                                }
                                Err(e) => {
                                    tracing::info!(%peer, tenant, error = %e, "no service for the tenant: refused");
                                    Verdict::NotAuthorized
                                }
                            }
                        }
                        other => other,
                    };
                    match verdict {
                        Verdict::Allowed(user) => {
                            self.grants_seen = self.shared.auth.generation();
                            self.grants = self.shared.auth.grants(user.as_deref());
                            self.user = user;
                            self.engine.sasl_outcome(true);
                        }
                        other => {
                            tracing::info!(%peer, mechanism, ?other, "AMQP login refused");
                            self.engine.sasl_outcome(false);
                        }
                    }
                }
                Event::Opened { container_id, .. } => {
                    tracing::debug!(%peer, container_id, user = ?self.user, "AMQP connection open");
                    self.container_id = container_id;
                }
                Event::Attach { link, attach } => self.attach(link, *attach).await,
                Event::Message(d) => self.incoming(d).await,
                Event::Credit {
                    link,
                    credit,
                    drain,
                } => match self.links.get(&link) {
                    Some(LinkState::Queue { consumer, .. }) => consumer.credit(credit, drain),
                    Some(LinkState::Topic { sub, .. }) => sub.credit(credit, drain),
                    _ => {}
                },
                Event::Disposition {
                    link,
                    delivery_id,
                    settled,
                    state,
                } => {
                    if let Some(offset) = self.unsettled.remove(&(link, delivery_id)) {
                        match self.links.get(&link) {
                            Some(LinkState::Queue { consumer, .. }) => {
                                consumer.settle(offset, outcome(state.as_ref()))
                            }
                            // Any outcome ends a topic delivery (no redelivery on topics).
                            Some(LinkState::Topic { sub, .. }) => sub.settle(offset),
                            _ => {}
                        }
                    }
                    if !settled {
                        self.engine.settle_sent(link, delivery_id);
                    }
                }
                Event::Detached { link, closed, .. } => {
                    if closed
                        && matches!(self.links.get(&link), Some(LinkState::Will))
                        && self.will.take().is_some()
                    {
                        self.settle_will().await;
                    }
                    if closed && let Some(LinkState::Topic { sub, .. }) = self.drop_link(link) {
                        sub.close().await;
                    }
                }
                Event::Closed { error, by_peer } => {
                    self.closed_by_peer |= by_peer;
                    end = Some(match (error, by_peer) {
                        (None, _) => None,
                        (Some(e), true) => Some(Ended::ClosedByPeer {
                            condition: format!("{:?}", e.condition),
                        }),
                        (Some(e), false) => Some(Ended::Closed {
                            condition: format!("{:?}", e.condition),
                            description: e.description.unwrap_or_default(),
                        }),
                    });
                }
            }
        }
        self.submit().await;
        end
    }

    /// Forget a link; returns its state (dropping it ends a queue membership or a
    /// subscription).
    fn drop_link(&mut self, link: LinkId) -> Option<LinkState> {
        self.guarded.remove(&link);
        let state = self.links.remove(&link);
        if let Some(LinkState::Queue { id, .. } | LinkState::Topic { id, .. }) = &state {
            self.by_id.remove(id);
        }
        self.unsettled.retain(|(l, _), _| *l != link);
        state
    }

    /// Take the user's grants again if users changed: links it may no longer use are
    /// detached with `amqp:unauthorized-access`.
    fn grants_changed(&mut self) {
        let Some(user) = self.user.clone() else {
            return;
        };
        let now = self.shared.auth.generation();
        if now == self.grants_seen {
            return;
        }
        self.grants_seen = now;
        self.grants = self.shared.auth.grants(Some(&user));
        let revoked: Vec<(LinkId, Permit, String)> = self
            .guarded
            .iter()
            .filter(|(_, (action, name))| !self.grants.may(*action, name))
            .map(|(l, (a, n))| (*l, *a, n.clone()))
            .collect();
        for (link, action, name) in revoked {
            tracing::info!(
                user,
                ?action,
                name,
                "permission removed: detaching the link"
            );
            self.guarded.remove(&link);
            self.drop_link(link);
            self.engine
                .detach(link, Some(not_allowed(&user, action, &name)));
        }
    }

    /// Whether the user may do `action` on the AMQP address `address`; the refusal if not.
    fn permit(&self, action: Permit, address: &str) -> Result<String, Error> {
        let name = permission::amqp_name(address);
        if self.grants.may(action, name) {
            Ok(name.to_string())
        } else {
            Err(not_allowed(
                self.user.as_deref().unwrap_or("anonymous"),
                action,
                name,
            ))
        }
    }

    async fn attach(&mut self, link: LinkId, a: Attach) {
        let name = a.name.clone();
        match a.role {
            Role::Sender => {
                let target = match a.target.as_deref() {
                    Some(TargetArchetype::Target(t)) => Some(t.clone()),
                    _ => None,
                };
                let address = match plan_sender(target.as_ref(), WILL_ADDRESS) {
                    SenderPlan::Will => None,
                    SenderPlan::Temporary => Some(Ok(Some(self.shared.addresses.temporary()))),
                    SenderPlan::Named {
                        address,
                        capability,
                    } => {
                        match self.permit(Permit::Send, &address) {
                            Ok(checked) => {
                                self.guarded.insert(link, (Permit::Send, checked));
                            }
                            Err(e) => return self.engine.refuse_attach(link, name, e),
                        }
                        Some(
                            self.shared
                                .addresses
                                .resolve(&address, capability)
                                .await
                                .map(Some),
                        )
                    }
                    SenderPlan::AnonymousRelay => Some(Ok(None)),
                };
                let (state, target) = match address {
                    None => (LinkState::Will, target),
                    Some(Ok(address)) => {
                        // The sender may have sent on another adapter a moment ago: what it
                        // had acknowledged there is ordered before anything it sends here.
                        if let Err(e) = self.shared.log.barrier().await {
                            tracing::warn!(error = %e, "could not order earlier acknowledgements");
                        }
                        let target = target.map(|mut t| {
                            if let Some(a) = &address {
                                t.address = Some(a.name.clone());
                            }
                            t
                        });
                        (LinkState::In { address }, target)
                    }
                    Some(Err(e)) => return self.engine.refuse_attach(link, name, address_error(e)),
                };
                self.engine.accept_attach(
                    link,
                    name,
                    a.source.map(|s| *s),
                    target,
                    a.snd_settle_mode,
                    ReceiverSettleMode::First,
                );
                self.links.insert(link, state);
            }
            Role::Receiver => {
                let Some(mut source) = a.source.map(|s| *s) else {
                    return self.engine.refuse_attach(
                        link,
                        name,
                        err(AmqpError::InvalidField, "a receiver needs a source".into()),
                    );
                };
                let address = match plan_source(&source) {
                    Ok(SourcePlan::Temporary) => Ok(self.shared.addresses.temporary()),
                    Ok(SourcePlan::Named {
                        address,
                        capability,
                    }) => {
                        match self.permit(Permit::Receive, &address) {
                            Ok(checked) => {
                                self.guarded.insert(link, (Permit::Receive, checked));
                            }
                            Err(e) => return self.engine.refuse_attach(link, name, e),
                        }
                        self.shared.addresses.resolve(&address, capability).await
                    }
                    Err(why) => Err(AddressError::Invalid(why.into())),
                };
                let address = match address {
                    Ok(a) => a,
                    Err(e) => return self.engine.refuse_attach(link, name, address_error(e)),
                };
                source.address = Some(address.name.clone());
                let presettled = a.snd_settle_mode == SenderSettleMode::Settled;
                let id = self.shared.links.fetch_add(1, Ordering::Relaxed);
                let plan = plan_receiver(
                    &source,
                    address.kind,
                    address.mqtt.is_some(),
                    &self.container_id,
                    &name,
                );
                let state = match plan {
                    ReceiverPlan::Queue => LinkState::Queue {
                        id,
                        consumer: self.shared.queues.join(&address, None, id, self.tx.clone()),
                        presettled,
                    },
                    ReceiverPlan::SharedSubscription { cursor } => {
                        let mut consumer =
                            self.shared
                                .queues
                                .join(&address, Some(cursor), id, self.tx.clone());
                        // Attached once the subscription's start is stored: what is sent
                        // after the attach reaches it.
                        if !consumer.serving(Duration::from_secs(5)).await {
                            tracing::warn!(address = %address.name, "shared subscription not serving yet after 5 s; attached anyway");
                        }
                        LinkState::Queue {
                            id,
                            consumer,
                            presettled,
                        }
                    }
                    ReceiverPlan::Topic {
                        durable,
                        from_start,
                    } => {
                        let log = &self.shared.log;
                        if !from_start {
                            // From the head after what this adapter acknowledged.
                            log.settle().await;
                        }
                        let streams: Vec<StreamId> = std::iter::once(address.stream.clone())
                            .chain(address.also.iter().cloned())
                            .collect();
                        let from = |stream: &StreamId| {
                            if from_start {
                                Offset(0)
                            } else {
                                Offset(log.stream(stream).map_or(0, |s| s.next_offset))
                            }
                        };
                        // A durable subscription has a cursor on each stream it reads.
                        let mut cursors = Vec::new();
                        if let Some(cursor_name) = &durable {
                            for stream in &streams {
                                match durable_cursor(log, stream, cursor_name).await {
                                    Ok(c) => cursors.push(c),
                                    Err(e) => {
                                        let e = attach_failed(&e);
                                        return self.engine.refuse_attach(link, name, e);
                                    }
                                }
                            }
                        }
                        LinkState::Topic {
                            id,
                            sub: Subscription::start(
                                &self.shared.settings.background,
                                &self.shared.addresses,
                                streams.iter().map(|s| (s.clone(), from(s))).collect(),
                                id,
                                self.tx.clone(),
                                cursors,
                                address.mqtt.clone(),
                                durable,
                            ),
                            presettled,
                        }
                    }
                };
                let target = match a.target.as_deref() {
                    Some(TargetArchetype::Target(t)) => Some(t.clone()),
                    _ => None,
                };
                self.engine.accept_attach(
                    link,
                    name,
                    Some(source),
                    target,
                    a.snd_settle_mode,
                    a.rcv_settle_mode,
                );
                self.links.insert(link, state);
                self.by_id.insert(id, link);
            }
        }
    }

    /// A message from the peer: check it, find its address, queue it for the batch append.
    async fn incoming(&mut self, d: Delivery) {
        let reject = |e: Error| DeliveryState::Rejected(Rejected { error: Some(e) });
        let address = match self.links.get(&d.link) {
            Some(LinkState::In { address }) => address,
            Some(LinkState::Will) => return self.register_will(d).await,
            _ => return,
        };
        let sections = match Sections::parse(&d.payload) {
            Ok(s) => s,
            Err(message::Malformed(why)) => {
                if !d.settled {
                    let e = err(AmqpError::DecodeError, format!("not a message: {why}"));
                    self.engine
                        .settle_received(d.link, d.delivery_id, reject(e));
                }
                return;
            }
        };
        let address = match address {
            Some(a) => a.clone(),
            None => {
                let to = sections.properties(&d.payload).and_then(|p| p.to);
                if let Some(to) = &to
                    && let Err(e) = self.permit(Permit::Send, to)
                {
                    if !d.settled {
                        self.engine
                            .settle_received(d.link, d.delivery_id, reject(e));
                    }
                    return;
                }
                let resolved = match to {
                    Some(to) => self.shared.addresses.resolve(&to, None).await,
                    None => Err(AddressError::Invalid(
                        "a message on an anonymous link needs properties.to".into(),
                    )),
                };
                match resolved {
                    Ok(a) => a,
                    Err(e) => {
                        if !d.settled {
                            self.engine.settle_received(
                                d.link,
                                d.delivery_id,
                                reject(address_error(e)),
                            );
                        }
                        return;
                    }
                }
            }
        };
        if address
            .mqtt
            .as_deref()
            .is_some_and(|t| !wharf_adapter_core::topic::valid_topic_name(t))
        {
            if !d.settled {
                let e = err(
                    AmqpError::InvalidField,
                    format!("{} names a topic filter, not a topic", address.name),
                );
                self.engine
                    .settle_received(d.link, d.delivery_id, reject(e));
            }
            return;
        }
        if let Err(exceeded) = self.shared.settings.quota.check(d.payload.len()) {
            if !d.settled {
                let condition: fe2o3_amqp_types::definitions::ErrorCondition = match exceeded {
                    wharf_adapter_core::quota::Exceeded::MessageSize { .. } => {
                        fe2o3_amqp_types::definitions::LinkError::MessageSizeExceeded.into()
                    }
                    wharf_adapter_core::quota::Exceeded::Storage => {
                        AmqpError::ResourceLimitExceeded.into()
                    }
                };
                self.engine.settle_received(
                    d.link,
                    d.delivery_id,
                    reject(err(condition, exceeded.reason())),
                );
            }
            return;
        }
        let now = self.shared.log.clock().now_ms();
        self.flow.received(d.payload.len());
        let record = message::record(address.record_key(), d.payload, d.settled, now);
        let batch = self.batch.entry(address.stream).or_default();
        batch.records.push(record);
        batch.senders.push((d.link, d.delivery_id, d.settled));
    }

    /// A message on the `$will` link: kept (not stored) until the connection ends.
    async fn register_will(&mut self, d: Delivery) {
        let to = Sections::parse(&d.payload)
            .ok()
            .and_then(|s| s.properties(&d.payload))
            .and_then(|p| p.to);
        let outcome = match to {
            None => Err(err(
                AmqpError::InvalidField,
                "a will needs properties.to (where to publish it)".into(),
            )),
            Some(to) => match self.shared.addresses.resolve(&to, None).await {
                Ok(address) => {
                    // Registered in the store first, so that a survivor publishes it if this
                    // adapter dies.
                    let registered = match &self.shared.wills {
                        Some(wills) => {
                            let now = self.shared.log.clock().now_ms();
                            let record = message::record(
                                address.record_key(),
                                d.payload.clone(),
                                false,
                                now,
                            );
                            wills
                                .register_record(
                                    &self.container_id,
                                    self.will_id,
                                    &address.stream,
                                    &record,
                                )
                                .await
                                .map_err(|e| attach_failed(&e))
                        }
                        None => Ok(()),
                    };
                    registered.map(|()| self.will = Some((address, d.payload)))
                }
                Err(e) => Err(address_error(e)),
            },
        };
        if !d.settled {
            let state = match outcome {
                Ok(()) => DeliveryState::Accepted(Accepted {}),
                Err(e) => DeliveryState::Rejected(Rejected { error: Some(e) }),
            };
            self.engine.settle_received(d.link, d.delivery_id, state);
        }
    }

    /// The will is published or withdrawn: take it out of the registry.
    async fn settle_will(&mut self) {
        if let Some(wills) = &self.shared.wills {
            wills.settle(&self.container_id, self.will_id).await;
        }
    }

    /// Append the batch: one submission per stream; outcomes once durable.
    async fn submit(&mut self) {
        for (stream, Batch { records, senders }) in self.batch.drain() {
            let n = records.len();
            self.pending_records += n;
            let started = tokio::time::Instant::now();
            let meter = self.flow.durable();
            let pending = self.shared.log.submit(&stream, records).await;
            self.appends.push(Box::pin(async move {
                let state = match pending {
                    Ok(p) => p.durable().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                meter.took(started.elapsed());
                let state = match state {
                    Ok(()) => DeliveryState::Accepted(Accepted {}),
                    Err(e) => {
                        tracing::warn!(error = %e, "append failed; messages not accepted");
                        not_stored(&e)
                    }
                };
                let settled = senders
                    .into_iter()
                    .filter(|(_, _, presettled)| !presettled)
                    .map(|(l, id, _)| (l, id, state.clone()))
                    .collect();
                (n, settled)
            }));
        }
    }

    /// A message or a drain report from a queue or subscription.
    fn outbound(&mut self, msg: ToLink) {
        match msg {
            ToLink::Drained(id) => {
                if let Some(&link) = self.by_id.get(&id) {
                    self.engine.drained(link);
                }
            }
            ToLink::Deliver(o) => {
                let Some(&link) = self.by_id.get(&o.link) else {
                    return;
                };
                let (presettled, consumer, sub) = match self.links.get(&link) {
                    Some(LinkState::Queue {
                        presettled,
                        consumer,
                        ..
                    }) => (*presettled, Some(consumer), None),
                    Some(LinkState::Topic {
                        presettled, sub, ..
                    }) => (*presettled, None, Some(sub)),
                    _ => return,
                };
                let tag = o.offset.to_be_bytes();
                match self.engine.send(link, &tag, &o.payload, presettled) {
                    Ok(delivery_id) => {
                        self.flow.delivered(o.payload.len());
                        if !presettled {
                            self.unsettled.insert((link, delivery_id), o.offset);
                        } else if let Some(c) = consumer {
                            c.ack(o.offset);
                        } else if let Some(s) = sub {
                            s.settle(o.offset);
                        }
                    }
                    Err(SendError::NoCredit | SendError::UnknownLink) => {
                        if let Some(c) = consumer {
                            c.give_back(o.offset);
                        }
                    }
                }
            }
        }
    }
}

/// What a consumer's outcome means for the queue: accepted is done, rejected goes to the
/// dead-letter address, released and modified go back (modified may count as a failed
/// delivery, and keep it from this link).
fn outcome(state: Option<&DeliveryState>) -> Outcome {
    match state {
        Some(DeliveryState::Accepted(_)) | None => Outcome::Done,
        Some(DeliveryState::Rejected(_)) => Outcome::Refused,
        Some(DeliveryState::Modified(m)) => Outcome::Again {
            failed: m.delivery_failed.unwrap_or(false),
            elsewhere: m.undeliverable_here.unwrap_or(false),
        },
        Some(_) => Outcome::Again {
            failed: false,
            elsewhere: false,
        },
    }
}
