//! `wharf-load mqtt`: publish → subscribe load against any MQTT broker (Wharf, Mosquitto, ...),
//! with the `rumqttc` client. Publishers send to `load/<n>` as fast as their in-flight window
//! allows; one subscriber on `load/#` counts what arrives and measures end-to-end latency
//! from a send timestamp carried in the payload. `--sub-port` puts the subscriber on another
//! listener (another adapter: cross-adapter fan-out); `--rate` paces the publishers (latency
//! below saturation); `--subscribers N --share GROUP` makes the subscribers members of the
//! shared subscription `$share/GROUP/load/#` (each message to one of them).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Parser;
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[derive(Parser, Debug)]
pub struct MqttArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// QoS of publishes and of the subscription (0 or 1).
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Payload size in bytes (at least 8: the send timestamp).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Publishes in flight per publisher (QoS 1).
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The subscriber's port, if not `--port` (another adapter on the same store).
    #[arg(long)]
    sub_port: Option<u16>,
    /// Subscribers (each counts what it receives; without `--share` each gets everything).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Subscribe as members of the shared subscription `$share/<GROUP>/load/#`.
    #[arg(long)]
    share: Option<String>,
    /// Publishes per second per publisher (0: as fast as the in-flight window allows).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// User name for every client (with `--password`); anonymous if absent.
    #[arg(long)]
    username: Option<String>,
    #[arg(long, env = "WHARF_LOAD_PASSWORD", default_value = "")]
    password: String,
}

fn options(id: &str, args: &MqttArgs, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, args.host.clone(), port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(args.inflight.max(1));
    o.set_max_packet_size(1 << 20, 1 << 20);
    if let Some(user) = &args.username {
        o.set_credentials(user.clone(), args.password.clone());
    }
    o
}

pub async fn run(args: MqttArgs) -> Result<()> {
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let start = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));

    // Subscribers first, so that they see everything.
    let sub_port = args.sub_port.unwrap_or(args.port);
    let filter = match &args.share {
        Some(group) => format!("$share/{group}/load/#"),
        None => "load/#".to_string(),
    };
    let mut subscribers = Vec::new();
    for i in 0..args.subscribers.max(1) {
        let id = match i {
            0 => "wharf-load-sub".to_string(),
            _ => format!("wharf-load-sub-{i}"),
        };
        let (sub, mut sub_loop) = AsyncClient::new(options(&id, &args, sub_port), 1000);
        sub.subscribe(filter.as_str(), qos).await?;
        let (r, l) = (received.clone(), latency.clone());
        subscribers.push(tokio::spawn(async move {
            // Keeps the client (and so its event loop) alive with the task.
            let _sub = sub;
            loop {
                match sub_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        r.fetch_add(1, Ordering::Relaxed);
                        if p.payload.len() >= 8 {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(&p.payload[..8]);
                            let sent_us = u64::from_le_bytes(b);
                            let now_us = start.elapsed().as_micros() as u64;
                            if let Ok(mut h) = l.lock() {
                                let _ = h.record(now_us.saturating_sub(sent_us).max(1));
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) | Ok(_) => {}
                    Err(e) => {
                        eprintln!("subscriber: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let measure_from = Instant::now();
    let received_before = received.load(Ordering::Relaxed);
    let end = measure_from + args.duration;
    let mut tasks = Vec::new();
    for p in 0..args.publishers {
        let (client, mut eventloop) = AsyncClient::new(
            options(&format!("wharf-load-pub-{p}"), &args, args.port),
            1000,
        );
        let acked = acked.clone();
        let driver = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("publisher: {e}");
                        return;
                    }
                }
            }
        });
        let (sent, size) = (sent.clone(), args.size.max(8));
        let mut pace = (args.rate > 0).then(|| {
            let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        tasks.push(tokio::spawn(async move {
            let topic = format!("load/{p}");
            while Instant::now() < end {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                let mut payload = vec![b'x'; size];
                payload[..8].copy_from_slice(&(start.elapsed().as_micros() as u64).to_le_bytes());
                if client.publish(&topic, qos, false, payload).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let _ = client.disconnect().await;
            driver.abort();
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = measure_from.elapsed().as_secs_f64();
    // Let in-flight messages arrive, but count throughput over the publishing window.
    let got_in_window = received.load(Ordering::Relaxed) - received_before;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in subscribers {
        s.abort();
    }
    let h = latency.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "broker": format!("{}:{}", args.host, args.port), "subscriber_port": sub_port,
            "subscribers": args.subscribers.max(1), "filter": filter,
            "publishers": args.publishers, "rate": args.rate,
            "qos": args.qos, "size": args.size, "seconds": (elapsed * 100.0).round() / 100.0,
            "sent": sent.load(Ordering::Relaxed), "acked": acked.load(Ordering::Relaxed),
            "received": received.load(Ordering::Relaxed) - received_before,
            "received_per_s": (got_in_window as f64 / elapsed).round(),
            "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": h.max() as f64 / 1000.0},
        })
    );
    Ok(())
}
