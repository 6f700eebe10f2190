//! # wharf-load
//!
//! Load generator for Wharf and other brokers: `wharf-load log` drives the log directly
//! (producers append durably to a store; throughput, ack latency percentiles, object store
//! requests per second); `wharf-load mqtt` / `mqtt-idle` and `wharf-load amqp` drive any
//! MQTT or AMQP 1.0 broker, so that Wharf and the others are measured the same way.
//!
//! Two modes: `--rate R` is open-loop (records are due on a schedule and latency is measured
//! from when each was due, so a stall is not hidden by coordinated omission); `--rate 0` is
//! closed-loop, each producer keeping `--window` appends in flight, for maximum throughput.

mod amqp;
mod idle;
mod mqtt;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use wharf_log::{Log, LogSettings, Store, SystemClock};
use wharf_log_format::{Record, StreamId};
use wharf_log_testkit::{FaultConfig, FaultStore};

#[derive(Parser, Debug)]
#[command(name = "wharf-load", about = "Load generator for Wharf")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Append to the log directly.
    Log(LogArgs),
    /// Publish → subscribe through any MQTT broker.
    Mqtt(mqtt::MqttArgs),
    /// Hold idle MQTT connections and report the broker's memory per connection.
    MqttIdle(idle::IdleArgs),
    /// Queue send → receive through any AMQP 1.0 broker.
    Amqp(amqp::AmqpArgs),
}

#[derive(Parser, Debug)]
struct LogArgs {
    /// Store URL (a fresh directory is best: file:///tmp/wharf-bench).
    #[arg(long)]
    store: String,
    /// Concurrent producers (each its own stream unless --one-stream).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// All producers append to one stream.
    #[arg(long)]
    one_stream: bool,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Total records per second; 0 = as fast as possible (closed loop).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Appends in flight per producer in closed-loop mode.
    #[arg(long, default_value_t = 1000)]
    window: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Least time between flush starts (default: the store's).
    #[arg(long, value_parser = humantime::parse_duration)]
    flush_interval: Option<Duration>,
    /// Group-commit linger (default: the store's).
    #[arg(long, value_parser = humantime::parse_duration)]
    linger: Option<Duration>,
    /// Add this latency to every store request, as "MIN..MAX" (e.g. 30ms..120ms), to
    /// emulate a remote object store with a local one.
    #[arg(long, value_parser = parse_latency)]
    store_latency: Option<std::ops::Range<Duration>>,
    /// Also follow every stream with an in-process tail and report how long after a record
    /// was acknowledged the tail had it (negative: the tail was woken before the appender).
    #[arg(long)]
    tail: bool,
    /// Follow every stream and report how long after it was appended a record of *another*
    /// process became readable here (run several `wharf-load log` on one store; clocks are
    /// the host's, so run them on one host).
    #[arg(long)]
    observe: bool,
    /// Also report ack p50/p99/max for each second of the run (by when records were due), to
    /// tell a start-up tail from a steady one.
    #[arg(long)]
    timeline: bool,
}

struct Stats {
    latency: Mutex<Histogram<u64>>,
    /// Ack instant of each (stream, offset), for the tail measurement.
    acks: std::sync::Mutex<std::collections::HashMap<(String, u64), Instant>>,
    track_acks: bool,
    acked: AtomicU64,
    failed: AtomicU64,
    /// Ack latency by the second (since the start) the record was due, for `--timeline`.
    by_second: std::sync::Mutex<Vec<Histogram<u64>>>,
    /// `--observe` latency by the second it was seen in.
    seen_by_second: std::sync::Mutex<Vec<Histogram<u64>>>,
    start: Instant,
}

impl Stats {
    async fn record(&self, since: Instant, ack: Option<(&StreamId, u64)>) {
        let ok = ack.is_some();
        if let Some((s, o)) = ack.filter(|_| self.track_acks) {
            let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
            acks.insert((s.to_string(), o), Instant::now());
        }
        if ok {
            self.acked.fetch_add(1, Ordering::Relaxed);
            let us = since.elapsed().as_micros() as u64;
            let _ = self.latency.lock().await.record(us.max(1));
            let second = since.saturating_duration_since(self.start).as_secs() as usize;
            let mut by = self.by_second.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = by.get_mut(second) {
                let _ = h.record(us.max(1));
            }
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The stream producer `p` appends to (and its tail follows).
fn stream_of(args: &LogArgs, p: usize) -> Result<StreamId> {
    Ok(StreamId::new(if args.one_stream {
        "load".to_string()
    } else {
        format!("load-{p}")
    })?)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = match Cli::parse().command {
        Command::Log(args) => args,
        Command::Mqtt(args) => return mqtt::run(args).await,
        Command::MqttIdle(args) => return idle::run(args).await,
        Command::Amqp(args) => return amqp::run(args).await,
    };
    let opened = Store::open(&args.store)?;
    opened.verify_conditional_put().await?;
    let counting = Arc::new(FaultStore::new(
        opened.object_store.clone(),
        FaultConfig {
            latency: args.store_latency.clone(),
            ..FaultConfig::default()
        },
    ));
    let store = Store::new(counting.clone(), opened.kind, opened.url.clone());
    let settings = LogSettings {
        flush_interval: args.flush_interval,
        linger: args.linger,
        ..LogSettings::default()
    };
    let log = Log::open_with(store, settings, Arc::new(SystemClock)).await?;
    let stats = Arc::new(Stats {
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        acks: Default::default(),
        track_acks: args.tail,
        by_second: std::sync::Mutex::new(
            (0..=args.duration.as_secs())
                .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3))
                .collect::<Result<_, _>>()?,
        ),
        seen_by_second: std::sync::Mutex::new(
            (0..=args.duration.as_secs() + 3)
                .map(|_| Histogram::new_with_bounds(1, 120_000_000, 3))
                .collect::<Result<_, _>>()?,
        ),
        start: Instant::now(),
    });
    // Tail readers: microseconds from the ack to the tail's delivery (0 when the tail had the
    // record first: it is woken when the segment is applied, just before appenders are told).
    let tail_hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        120_000_000,
        3,
    )?));
    let tail_first = Arc::new(AtomicU64::new(0));
    let mut tails = Vec::new();
    if args.tail {
        for p in 0..(if args.one_stream { 1 } else { args.producers }) {
            let stream = stream_of(&args, p)?;
            let (log, stats, hist) = (log.clone(), stats.clone(), tail_hist.clone());
            let first = tail_first.clone();
            tails.push(tokio::spawn(async move {
                let mut tail = log.tail(&stream, wharf_log_format::Offset(0));
                while let Ok(batch) = tail.next_batch(10_000).await {
                    let seen = Instant::now();
                    for r in batch {
                        let key = (stream.to_string(), r.offset.0);
                        // The appender may not have been answered yet: wait for its ack.
                        let acked = loop {
                            let a = stats
                                .acks
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&key);
                            if let Some(a) = a {
                                break a;
                            }
                            tokio::task::yield_now().await;
                        };
                        if seen < acked {
                            first.fetch_add(1, Ordering::Relaxed);
                        }
                        let us = seen.saturating_duration_since(acked).as_micros() as u64;
                        let _ = hist.lock().await.record(us.max(1));
                    }
                }
            }));
        }
    }
    // Cross-process visibility: records of other processes, append time to readable here.
    let seen_hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        120_000_000,
        3,
    )?));
    let marker = Bytes::from(format!("load-{}", std::process::id()));
    let mut observers = Vec::new();
    if args.observe {
        for p in 0..(if args.one_stream { 1 } else { args.producers }) {
            let stream = stream_of(&args, p)?;
            let from = log.stream(&stream).map_or(0, |s| s.next_offset);
            let (log, hist, marker) = (log.clone(), seen_hist.clone(), marker.clone());
            let stats = stats.clone();
            observers.push(tokio::spawn(async move {
                let mut tail = log.tail(&stream, wharf_log_format::Offset(from));
                while let Ok(batch) = tail.next_batch(10_000).await {
                    let now = wharf_log::Clock::now_ms(&SystemClock);
                    let second = stats.start.elapsed().as_secs() as usize;
                    let mut h = hist.lock().await;
                    let mut by = stats
                        .seen_by_second
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    for r in batch
                        .iter()
                        .filter(|r| r.record.key.as_ref() != Some(&marker))
                    {
                        let ms = (now - r.record.timestamp_ms).max(0) as u64;
                        let _ = h.record((ms * 1000).max(1));
                        if let Some(h) = by.get_mut(second) {
                            let _ = h.record((ms * 1000).max(1));
                        }
                    }
                }
            }));
        }
    }
    let payload = Bytes::from(vec![b'x'; args.size]);
    let calls_before = counting.stats.calls.load(Ordering::Relaxed);
    let kinds_before = counting.stats.kinds();
    let start = stats.start;
    let end = start + args.duration;
    let mut tasks = Vec::new();
    for p in 0..args.producers {
        let stream = stream_of(&args, p)?;
        let (log, stats, payload) = (log.clone(), stats.clone(), payload.clone());
        let marker = marker.clone();
        let per_producer = args.rate as f64 / args.producers as f64;
        let window = args.window;
        tasks.push(tokio::spawn(async move {
            produce(
                log,
                stream,
                marker,
                payload,
                stats,
                per_producer,
                window,
                start,
                end,
            )
            .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let calls_during = counting.stats.calls.load(Ordering::Relaxed);
    let kinds: serde_json::Map<String, serde_json::Value> = counting
        .stats
        .kinds()
        .into_iter()
        .map(|(k, n)| {
            let per_s = (n - kinds_before.get(&k).copied().unwrap_or(0)) as f64 / elapsed;
            (k, serde_json::json!((per_s * 100.0).round() / 100.0))
        })
        .collect();
    if args.tail {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for t in &tails {
            t.abort();
        }
    }
    if args.observe {
        // Let the last records of the others arrive.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for t in &observers {
            t.abort();
        }
    }
    let sh = seen_hist.lock().await;
    let seen_ms = |q: f64| sh.value_at_quantile(q) as f64 / 1000.0;
    let th = tail_hist.lock().await;
    let tail_ms = |q: f64| th.value_at_quantile(q) as f64 / 1000.0;
    let calls = calls_during - calls_before;
    let h = stats.latency.lock().await;
    let acked = stats.acked.load(Ordering::Relaxed);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "store": args.store, "producers": args.producers, "size": args.size,
            "rate_target": args.rate, "seconds": (elapsed * 100.0).round() / 100.0,
            "acked": acked, "failed": stats.failed.load(Ordering::Relaxed),
            "records_per_s": (acked as f64 / elapsed).round(),
            "mb_per_s": ((acked as f64 * args.size as f64 / elapsed / 1e6) * 10.0).round() / 10.0,
            "ack_ms": {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0},
            "segments": log.segment_seq(),
            "tail_after_ack_ms": if args.tail {
                serde_json::json!({"p50": tail_ms(0.5), "p99": tail_ms(0.99), "max": tail_ms(1.0),
                    "n": th.len(), "tail_first": tail_first.load(Ordering::Relaxed)})
            } else { serde_json::Value::Null },
            "store_requests_per_s": ((calls as f64 / elapsed) * 10.0).round() / 10.0,
            "store_requests_per_s_by_kind": kinds,
            "timeline_ms": if args.timeline { timeline(&stats.by_second) } else { serde_json::Value::Null },
            "visible_timeline_ms": if args.timeline && args.observe {
                timeline(&stats.seen_by_second)
            } else { serde_json::Value::Null },
            "others_visible_ms": if args.observe {
                serde_json::json!({"p50": seen_ms(0.5), "p99": seen_ms(0.99), "max": sh.max() as f64 / 1000.0, "n": sh.len()})
            } else { serde_json::Value::Null },
        })
    );
    Ok(())
}

/// `[p50, p99, max]` in milliseconds for each second that has values.
fn timeline(by_second: &std::sync::Mutex<Vec<Histogram<u64>>>) -> serde_json::Value {
    let by = by_second.lock().unwrap_or_else(|p| p.into_inner());
    let ms = |us: u64| us as f64 / 1000.0;
    serde_json::json!(
        by.iter()
            .filter(|h| !h.is_empty())
            .map(|h| [
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max())
            ])
            .collect::<Vec<_>>()
    )
}

fn parse_latency(s: &str) -> Result<std::ops::Range<Duration>, String> {
    let (lo, hi) = s
        .split_once("..")
        .ok_or("expected MIN..MAX, e.g. 30ms..120ms")?;
    let p = |v: &str| humantime::parse_duration(v).map_err(|e| format!("{v:?}: {e}"));
    Ok(p(lo)?..p(hi)?)
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    log: Log,
    stream: StreamId,
    marker: Bytes,
    payload: Bytes,
    stats: Arc<Stats>,
    rate: f64,
    window: usize,
    start: Instant,
    end: Instant,
) -> Result<()> {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut in_flight = 0usize;
    let mut sent = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Open loop: how many records are due by now, each with its due time.
        let due: Vec<Instant> = if rate > 0.0 {
            // Records 0..=floor(elapsed * rate) are due by now (record i at i / rate).
            let target = ((now - start).as_secs_f64() * rate) as u64 + 1;
            let due = (sent..target)
                .map(|i| start + Duration::from_secs_f64(i as f64 / rate))
                .collect();
            if target == sent {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            due
        } else {
            while in_flight >= window {
                done_rx.recv().await;
                in_flight -= 1;
            }
            vec![now]
        };
        for t in due {
            let record = Record {
                timestamp_ms: wharf_log::Clock::now_ms(&SystemClock),
                key: Some(marker.clone()),
                headers: None,
                payload: payload.clone(),
            };
            let pending = log.submit(&stream, vec![record]).await?;
            let (stats, done) = (stats.clone(), done_tx.clone());
            let s = stream.clone();
            tokio::spawn(async move {
                // The ack is the durable answer; the tail measurement needs the offset (asking
                // for it makes a writer follow the log for its commits).
                let offset = if stats.track_acks {
                    let (durable, committed) = pending.split();
                    match durable.await {
                        Ok(()) => committed.await.ok(),
                        Err(_) => None,
                    }
                } else {
                    pending
                        .durable()
                        .await
                        .ok()
                        .map(|()| wharf_log_format::Offset(0))
                };
                stats.record(t, offset.map(|o| (&s, o.0))).await;
                let _ = done.send(());
            });
            sent += 1;
            in_flight += 1;
        }
        while done_rx.try_recv().is_ok() {
            in_flight -= 1;
        }
    }
    while in_flight > 0 && done_rx.recv().await.is_some() {
        in_flight -= 1;
    }
    Ok(())
}
