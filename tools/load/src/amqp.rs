//! `wharf-load amqp`: queue send → receive load against any AMQP 1.0 broker (Wharf, RabbitMQ
//! with its AMQP 1.0 plugin, Artemis, ...), with the `fe2o3-amqp` client. Senders keep
//! `--window` unsettled messages in flight (each counts when the broker says accepted); one
//! receiver with `--credit` accepts what it gets (in batches of a quarter of its credit) and
//! measures end-to-end latency from a send timestamp carried in the payload.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use fe2o3_amqp::{
    Connection, Receiver, Sender, Session,
    connection::ConnectionHandle,
    link::receiver::CreditMode,
    sasl_profile::SaslProfile,
    types::{
        messaging::{Body, Header, Message},
        primitives::{Binary, Value},
    },
};
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
pub struct AmqpArgs {
    /// Broker URL, e.g. amqp://127.0.0.1:5672 (amqp://user:pass@host:port for SASL PLAIN).
    #[arg(long, default_value = "amqp://127.0.0.1:5672")]
    url: String,
    /// Queue address (RabbitMQ 3.10: /amq/queue/NAME for a declared queue, or /queue/NAME).
    #[arg(long, default_value = "load")]
    queue: String,
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Unsettled messages in flight per sender.
    #[arg(long, default_value_t = 200)]
    window: usize,
    /// Receiver link credit.
    #[arg(long, default_value_t = 200)]
    credit: u32,
    /// Payload size in bytes (at least 8: the send timestamp).
    #[arg(long, default_value_t = 100)]
    size: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// Open a connection with TCP_NODELAY (fe2o3-amqp's own `open` leaves Nagle on, which holds
/// small frames such as flows and dispositions back by up to a delayed ACK — 40 ms — and made
/// its receiver, not the broker, the bound at about 5k msg/s against any broker).
async fn open(url: &str, id: String) -> Result<ConnectionHandle<()>> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
    let port = parsed.port().unwrap_or(5672);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    stream.set_nodelay(true)?;
    let builder = Connection::builder().container_id(id).scheme("amqp");
    let handle = if parsed.username().is_empty() {
        builder.open_with_stream(stream).await?
    } else {
        let profile = SaslProfile::try_from(&parsed).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        builder
            .sasl_profile(profile)
            .open_with_stream(stream)
            .await?
    };
    Ok(handle)
}

fn stamp(payload: &[u8], start: Instant) -> Option<u64> {
    let b: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    let sent_us = u64::from_le_bytes(b);
    Some(
        (start.elapsed().as_micros() as u64)
            .saturating_sub(sent_us)
            .max(1),
    )
}

pub async fn run(args: AmqpArgs) -> Result<()> {
    let start = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));

    let mut rconn = open(&args.url, "wharf-load-receiver".into())
        .await
        .context("receiver connection")?;
    let mut rsession = Session::begin(&mut rconn).await?;
    let mut receiver = Receiver::builder()
        .name("wharf-load-receiver")
        .source(args.queue.as_str())
        .credit_mode(CreditMode::Auto(args.credit))
        .attach(&mut rsession)
        .await
        .context("receiver attach")?;
    let (r, l) = (received.clone(), latency.clone());
    // Accepted in batches (one disposition for many): a disposition per message makes the
    // client, not the broker, the bottleneck (fe2o3-amqp: about 6k/s either way).
    let batch = (args.credit as usize / 4).max(1);
    let receiving = tokio::spawn(async move {
        let mut unsettled = Vec::with_capacity(batch);
        loop {
            let delivery = match receiver.recv::<Body<Value>>().await {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("receiver: {e}");
                    return;
                }
            };
            if let Body::Data(batch) = delivery.body()
                && let Some(data) = batch.iter().next()
                && let Some(us) = stamp(&data.0, start)
                && let Ok(mut h) = l.lock()
            {
                let _ = h.record(us);
            }
            r.fetch_add(1, Ordering::Relaxed);
            unsettled.push(delivery);
            if unsettled.len() >= batch {
                if receiver.accept_all(&unsettled).await.is_err() {
                    return;
                }
                unsettled.clear();
            }
        }
    });

    let measure_from = Instant::now();
    let received_before = received.load(Ordering::Relaxed);
    let end = measure_from + args.duration;
    let mut tasks = Vec::new();
    for p in 0..args.senders {
        let (url, queue, accepted) = (args.url.clone(), args.queue.clone(), accepted.clone());
        let (window, size) = (args.window.max(1), args.size.max(8));
        tasks.push(tokio::spawn(async move {
            let mut conn = open(&url, format!("wharf-load-sender-{p}")).await?;
            let mut session = Session::begin(&mut conn).await?;
            let mut sender =
                Sender::attach(&mut session, format!("wharf-load-sender-{p}"), queue).await?;
            let mut inflight = VecDeque::new();
            while Instant::now() < end {
                let mut payload = vec![b'x'; size];
                payload[..8].copy_from_slice(&(start.elapsed().as_micros() as u64).to_le_bytes());
                // Durable, so that a broker that keeps transient messages in memory (RabbitMQ)
                // stores these as Wharf stores every message.
                let m = Message::builder()
                    .header(Header {
                        durable: true,
                        ..Default::default()
                    })
                    .data(Binary::from(payload))
                    .build();
                inflight.push_back(sender.send_batchable(m).await?);
                if inflight.len() >= window
                    && let Some(f) = inflight.pop_front()
                    && f.await?.is_accepted()
                {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
            for f in inflight {
                if f.await?.is_accepted() {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = sender.close().await;
            let _ = session.end().await;
            let _ = conn.close().await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = measure_from.elapsed().as_secs_f64();
    let got_in_window = received.load(Ordering::Relaxed) - received_before;
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiving.abort();
    let h = latency.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "broker": args.url, "queue": args.queue, "senders": args.senders,
            "window": args.window, "credit": args.credit, "size": args.size,
            "seconds": (elapsed * 100.0).round() / 100.0,
            "accepted": accepted.load(Ordering::Relaxed),
            "accepted_per_s": (accepted.load(Ordering::Relaxed) as f64 / elapsed).round(),
            "received": received.load(Ordering::Relaxed) - received_before,
            "received_per_s": (got_in_window as f64 / elapsed).round(),
            "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": h.max() as f64 / 1000.0},
        })
    );
    Ok(())
}
