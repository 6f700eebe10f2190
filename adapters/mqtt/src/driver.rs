//! The tokio side: accept connections and run one task per connection that owns the socket,
//! decodes packets with mqttbytes, feeds the [`Session`] and carries out its actions against
//! the log.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::BytesMut;
use futures::{StreamExt, stream::FuturesOrdered};
use mqttbytes::v5::{DisconnectReasonCode, Packet};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};
use wharf_log::Log;
use wharf_log_format::{Offset, StreamId};

use crate::{
    codec::{self, Peek, Version, peek_connect},
    message::Message,
    retained::{Retained, retained_stream},
    session::{Action, Session, SessionSettings},
};

/// Settings of the MQTT listener.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    pub session: SessionSettings,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            session: SessionSettings::default(),
        }
    }
}

/// The stream that holds every MQTT publish of the default tenant (the default topic
/// address); records are laid out as [`crate::message`] describes.
pub fn default_stream() -> StreamId {
    // A constant, valid id.
    StreamId::new("mqtt-default").unwrap_or_else(|_| unreachable!("valid stream id"))
}

/// Accept MQTT connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    log: Log,
    settings: MqttSettings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let retained = Arc::new(Retained::default());
    let ids = Arc::new(AtomicU64::new(0));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (log, settings, retained) = (log.clone(), settings.clone(), retained.clone());
        let id = format!(
            "wharf-{}-{}",
            std::process::id(),
            ids.fetch_add(1, Ordering::Relaxed)
        );
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(reason) = connection(socket, peer, log, retained, settings, id).await {
                tracing::info!(%peer, reason, "mqtt connection closed");
            }
        });
    }
}

/// Run one connection until it closes; `Err` carries the reason for an abnormal close.
async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    log: Log,
    retained: Arc<Retained>,
    settings: MqttSettings,
    assigned_id: String,
) -> Result<(), String> {
    let _ = socket.set_nodelay(true);
    let mut session = Session::new(
        Instant::now().into_std(),
        settings.session.clone(),
        assigned_id,
    );
    let mut conn = Conn {
        log,
        stream: default_stream(),
        retained,
        retained_queue: VecDeque::new(),
        version: None,
        output: BytesMut::new(),
        pending: FuturesOrdered::new(),
        tail: None,
        max_packet: settings.session.max_packet_size as usize,
    };
    let end = conn.run(&mut socket, peer, &mut session).await;
    flush(&mut socket, &mut conn.output).await;
    let will_due = match &end {
        Ok(will) => *will,
        Err(_) => true,
    };
    if will_due && let Some(will) = session.take_will() {
        conn.publish_will(will).await;
    }
    end.map(|_| ())
}

/// The per-connection I/O state around a [`Session`].
struct Conn {
    log: Log,
    stream: StreamId,
    retained: Arc<Retained>,
    /// Retained messages owed to new subscriptions: (filter, message), sent as the in-flight
    /// window allows.
    retained_queue: VecDeque<(String, Message)>,
    version: Option<Version>,
    output: BytesMut,
    pending: FuturesOrdered<futures::future::BoxFuture<'static, (u64, bool)>>,
    tail: Option<wharf_log::Tail>,
    max_packet: usize,
}

impl Conn {
    /// Serve until the connection ends: `Ok(will_due)` after DISCONNECT, `Err(reason)`
    /// otherwise (the will is due then).
    async fn run(
        &mut self,
        socket: &mut TcpStream,
        peer: SocketAddr,
        session: &mut Session,
    ) -> Result<bool, String> {
        let mut input = BytesMut::with_capacity(4096);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let version = match self.version {
                Some(v) => v,
                None => match peek_connect(&input) {
                    Peek::Incomplete => None,
                    Peek::Connect(v) => {
                        self.version = Some(v);
                        Some(v)
                    }
                    Peek::UnsupportedLevel(level) => {
                        // [MQTT-3.1.2-2]: CONNACK 0x01 (a 3.1 client reads it), then close.
                        let _ = mqttbytes::v4::ConnAck::new(
                            mqttbytes::v4::ConnectReturnCode::RefusedProtocolVersion,
                            false,
                        )
                        .write(&mut self.output);
                        return Err(format!("{peer}: unsupported protocol level {level}"));
                    }
                    Peek::NotConnect => {
                        let first = input.first().copied().unwrap_or_default();
                        return Err(format!(
                            "{peer}: first packet is not CONNECT (byte {first:#04x})"
                        ));
                    }
                }
                .unwrap_or(Version::V311),
            };
            // Decode and handle every complete packet received so far.
            let mut actions = Vec::new();
            while self.version.is_some() {
                match codec::read(version, &mut input, self.max_packet) {
                    Ok(packet) => actions.extend(session.handle(Instant::now().into_std(), packet)),
                    Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                    Err(e) => {
                        // MQTT 5 clients are told why [MQTT-4.13.1-1]; 3.1.1 ones are just
                        // closed [MQTT-4.8.0-1].
                        let (code, why) = match e {
                            mqttbytes::Error::PayloadSizeLimitExceeded(_) => {
                                (DisconnectReasonCode::PacketTooLarge, "packet too large")
                            }
                            _ => (DisconnectReasonCode::MalformedPacket, "malformed packet"),
                        };
                        actions.extend(session.fail(code, why));
                        self.carry_out(session, actions).await?;
                        return Err(format!("bad packet from {}: {e:?}", session.client_id()));
                    }
                }
                if actions.iter().any(|a| matches!(a, Action::Close { .. })) {
                    break;
                }
            }
            if let Some(end) = self.carry_out(session, actions).await? {
                return Ok(end);
            }
            while session.can_deliver()
                && let Some((filter, m)) = self.retained_queue.pop_front()
            {
                let a = session.deliver_retained(&filter, &m, self.log.clock().now_ms());
                self.send_all(session, a)?;
            }
            flush(socket, &mut self.output).await;
            let room = session.delivery_room();
            let deliver = self.tail.is_some() && room > 0;
            tokio::select! {
                read = socket.read_buf(&mut input) => match read {
                    Ok(0) => return Err(format!("{} went away without DISCONNECT", session.client_id())),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read from {peer}: {e}")),
                },
                Some((token, ok)) = self.pending.next(), if !self.pending.is_empty() => {
                    let a = session.appended(token, ok);
                    if let Some(end) = self.carry_out(session, a).await? {
                        return Ok(end);
                    }
                }
                batch = async { match self.tail.as_mut() { Some(t) => t.next_batch(room).await, None => std::future::pending().await } }, if deliver => {
                    let batch = batch.map_err(|e| format!("reading the log: {e}"))?;
                    let now_ms = self.log.clock().now_ms();
                    for r in &batch {
                        match Message::from_record(r) {
                            Ok(m) => {
                                let a = session.deliver(&m, now_ms);
                                self.send_all(session, a)?;
                            }
                            Err(why) => tracing::warn!(offset = r.offset.0, why, "not an MQTT record; skipped"),
                        }
                    }
                }
                _ = tick.tick() => {
                    if let Some(a) = session.timed_out(Instant::now().into_std()) {
                        self.carry_out(session, a).await?;
                    }
                }
            }
        }
    }

    /// Carry out actions: `Ok(Some(will_due))` when the client disconnected, `Err` when the
    /// connection must close.
    async fn carry_out(
        &mut self,
        session: &mut Session,
        actions: Vec<Action>,
    ) -> Result<Option<bool>, String> {
        let mut end = Ok(None);
        for action in actions {
            match action {
                Action::Send(p) => self.send(session, &p)?,
                Action::Append { token, message } => {
                    match store(&self.log, &self.stream, &message).await {
                        Ok(durable) => self
                            .pending
                            .push_back(Box::pin(async move { (token, durable.await.is_ok()) })),
                        Err(e) => {
                            tracing::warn!(error = %e, "append failed");
                            let a = session.appended(token, false);
                            if let Some(e) = Box::pin(self.carry_out(session, a)).await? {
                                end = Ok(Some(e));
                            }
                        }
                    }
                }
                Action::StartDelivery => {
                    if self.tail.is_none() {
                        let head = self.log.stream(&self.stream).map_or(0, |s| s.next_offset);
                        self.tail = Some(self.log.tail(&self.stream, Offset(head)));
                    }
                }
                Action::SendRetained { filter } => {
                    let now_ms = self.log.clock().now_ms();
                    match self.retained.matching(&self.log, &filter, now_ms).await {
                        Ok(found) => self
                            .retained_queue
                            .extend(found.into_iter().map(|m| (filter.clone(), m))),
                        Err(e) => {
                            tracing::warn!(error = %e, filter, "could not read retained messages")
                        }
                    }
                }
                Action::Close { reason } => end = Err(reason.to_string()),
                Action::Disconnected { will } => end = Ok(Some(will)),
            }
        }
        end
    }

    fn send_all(&mut self, session: &mut Session, actions: Vec<Action>) -> Result<(), String> {
        for a in actions {
            if let Action::Send(p) = a {
                self.send(session, &p)?;
            }
        }
        Ok(())
    }

    /// Encode `p` for the client; a delivery over the client's maximum packet size is
    /// dropped instead [MQTT-3.1.2-24].
    fn send(&mut self, session: &mut Session, p: &Packet) -> Result<(), String> {
        let version = self.version.unwrap_or(Version::V311);
        let before = self.output.len();
        codec::write(version, p, &mut self.output).map_err(|e| format!("encode: {e:?}"))?;
        if let (Packet::Publish(publish), Some(max)) = (p, session.client_max_packet())
            && self.output.len() - before > max
        {
            self.output.truncate(before);
            session.too_large(publish.pkid);
            tracing::debug!(
                topic = publish.topic,
                "delivery larger than the client's maximum packet size dropped"
            );
        }
        Ok(())
    }

    /// Store a will message (best effort: the client is gone, nobody awaits an ack).
    async fn publish_will(&mut self, will: crate::session::Will) {
        if !will.delay.is_zero() {
            tokio::time::sleep(will.delay).await;
        }
        let stored = match store(&self.log, &self.stream, &will.message).await {
            Ok(durable) => durable.await,
            Err(e) => Err(e),
        };
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
    }
}

/// Submit a message for storage: to the topic stream, and to the retained stream too if
/// it has the retain flag. The future resolves when every copy is durable.
async fn store(
    log: &Log,
    stream: &StreamId,
    message: &Message,
) -> wharf_log::Result<impl std::future::Future<Output = wharf_log::Result<()>> + use<>> {
    let record = message.to_record(log.clock().now_ms());
    let retained = if message.retain {
        Some(log.submit(&retained_stream(), vec![record.clone()]).await?)
    } else {
        None
    };
    let main = log.submit(stream, vec![record]).await?;
    Ok(async move {
        if let Some(r) = retained {
            r.durable().await?;
        }
        main.durable().await.map(|_| ())
    })
}

async fn flush(socket: &mut TcpStream, out: &mut BytesMut) {
    if !out.is_empty() {
        let _ = socket.write_all(out).await;
        out.clear();
    }
}
