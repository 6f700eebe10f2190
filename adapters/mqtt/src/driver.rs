//! The tokio side: accept connections and run one task per connection that owns the socket,
//! decodes packets with mqttbytes, feeds the [`Session`] and carries out its actions against
//! the log.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, stream::FuturesOrdered};
use mqttbytes::v4;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};
use wharf_log::Log;
use wharf_log_format::{Offset, Record, StoredRecord, StreamId};

use crate::session::{Action, Message, Session, SessionSettings};

/// Settings of the MQTT listener.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Largest packet accepted from a client, in bytes.
    pub max_packet_size: usize,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    pub session: SessionSettings,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            max_packet_size: 1 << 20,
            max_connections: 10_000,
            session: SessionSettings::default(),
        }
    }
}

/// The stream that holds every MQTT publish of the default tenant (the default topic
/// address). Records: key = topic name, headers = `[1, qos, retain]`, payload as received.
pub fn default_stream() -> StreamId {
    // A constant, valid id.
    StreamId::new("mqtt-default").unwrap_or_else(|_| unreachable!("valid stream id"))
}

const HEADER_VERSION: u8 = 1;

fn to_record(m: &Message, now_ms: i64) -> Record {
    Record {
        timestamp_ms: now_ms,
        key: Some(Bytes::from(m.topic.clone().into_bytes())),
        headers: Some(Bytes::from(vec![
            HEADER_VERSION,
            m.qos as u8,
            u8::from(m.retain),
        ])),
        payload: m.payload.clone(),
    }
}

/// A stored record as an MQTT message; `None` if it is not one (logged by the caller).
pub fn from_record(r: &StoredRecord) -> Option<Message> {
    let topic = String::from_utf8(r.record.key.as_ref()?.to_vec()).ok()?;
    let h = r.record.headers.as_ref()?;
    if h.len() < 3 || h[0] != HEADER_VERSION {
        return None;
    }
    let qos = mqttbytes::qos(h[1]).ok()?;
    Some(Message {
        topic,
        qos,
        retain: h[2] == 1,
        payload: r.record.payload.clone(),
    })
}

/// Accept MQTT connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    log: Log,
    settings: MqttSettings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(settings.max_connections));
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
        let (log, settings) = (log.clone(), settings.clone());
        let id = format!(
            "wharf-{}-{}",
            std::process::id(),
            ids.fetch_add(1, Ordering::Relaxed)
        );
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(reason) = connection(socket, peer, log, settings, id).await {
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
    settings: MqttSettings,
    assigned_id: String,
) -> Result<(), String> {
    let _ = socket.set_nodelay(true);
    let stream = default_stream();
    let mut session = Session::new(
        Instant::now().into_std(),
        settings.session.clone(),
        assigned_id,
    );
    let mut input = BytesMut::with_capacity(4096);
    let mut output = BytesMut::new();
    let mut pending = FuturesOrdered::new();
    let mut tail = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        if let Some(&first) = input.first()
            && !session.first_byte_acceptable(first)
        {
            return Err(format!(
                "{peer}: first packet is not CONNECT (byte {first:#04x})"
            ));
        }
        // Decode and handle every complete packet received so far.
        let mut actions = Vec::new();
        loop {
            match v4::read(&mut input, settings.max_packet_size) {
                Ok(packet) => actions.extend(session.handle(Instant::now().into_std(), packet)),
                Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => {
                    // Malformed or oversized: MQTT 3.1.1 closes without a reply [MQTT-4.8.0-1].
                    flush(&mut socket, &mut output).await;
                    return Err(format!("bad packet from {}: {e:?}", session.client_id()));
                }
            }
        }
        let mut closing = None;
        for action in actions {
            match action {
                Action::Send(p) => write(&p, &mut output)?,
                Action::Append { token, message } => {
                    let record = to_record(&message, log.clock().now_ms());
                    match log.submit(&stream, vec![record]).await {
                        Ok(p) => {
                            pending.push_back(async move { (token, p.durable().await.is_ok()) })
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "append failed");
                            for a in session.appended(token, false) {
                                if let Action::Close { reason } = a {
                                    closing = Some(Err(reason))
                                }
                            }
                        }
                    }
                }
                Action::StartDelivery => {
                    if tail.is_none() {
                        let head = log.stream(&stream).map_or(0, |s| s.next_offset);
                        tail = Some(log.tail(&stream, Offset(head)));
                    }
                }
                Action::Close { reason } => closing = Some(Err(reason)),
                Action::Disconnected => closing = Some(Ok(())),
            }
        }
        flush(&mut socket, &mut output).await;
        if let Some(end) = closing {
            return end.map_err(str::to_string);
        }
        let room = session.delivery_room();
        let deliver = tail.is_some() && room > 0;
        tokio::select! {
            read = socket.read_buf(&mut input) => match read {
                Ok(0) => return Err(format!("{} went away without DISCONNECT", session.client_id())),
                Ok(_) => {}
                Err(e) => return Err(format!("read from {peer}: {e}")),
            },
            Some((token, ok)) = pending.next(), if !pending.is_empty() => {
                for a in session.appended(token, ok) {
                    match a {
                        Action::Send(p) => write(&p, &mut output)?,
                        Action::Close { reason } => { flush(&mut socket, &mut output).await; return Err(reason.into()); }
                        _ => {}
                    }
                }
            }
            batch = async { match tail.as_mut() { Some(t) => t.next_batch(room).await, None => std::future::pending().await } }, if deliver => {
                let batch = batch.map_err(|e| format!("reading the log: {e}"))?;
                for r in &batch {
                    match from_record(r) {
                        Some(m) => for a in session.deliver(&m) {
                            if let Action::Send(p) = a { write(&p, &mut output)?; }
                        },
                        None => tracing::warn!(offset = r.offset.0, "not an MQTT record; skipped"),
                    }
                }
            }
            _ = tick.tick() => {
                if let Some(why) = session.timed_out(Instant::now().into_std()) {
                    return Err(format!("{peer} {}: {why}", session.client_id()));
                }
            }
        }
    }
}

fn write(p: &v4::Packet, out: &mut BytesMut) -> Result<(), String> {
    let r = match p {
        v4::Packet::ConnAck(x) => x.write(out),
        v4::Packet::Publish(x) => x.write(out),
        v4::Packet::PubAck(x) => x.write(out),
        v4::Packet::PubRec(x) => x.write(out),
        v4::Packet::PubComp(x) => x.write(out),
        v4::Packet::SubAck(x) => x.write(out),
        v4::Packet::UnsubAck(x) => x.write(out),
        v4::Packet::PingResp => v4::PingResp.write(out),
        other => return Err(format!("server does not send {other:?}")),
    };
    r.map(|_| ()).map_err(|e| format!("encode: {e:?}"))
}

async fn flush(socket: &mut TcpStream, out: &mut BytesMut) {
    if !out.is_empty() {
        let _ = socket.write_all(out).await;
        out.clear();
    }
}
