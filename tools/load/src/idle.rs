//! Idle connections against any MQTT broker: open N connections (CONNECT, CONNACK), hold
//! them, and report the broker's resident memory per connection (from /proc, given its pid).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[derive(Parser, Debug)]
pub struct IdleArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// The broker's process id: its VmRSS is read before and after.
    #[arg(long)]
    pid: Option<u32>,
    /// How long to hold the connections once all are open.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Connections being opened at once (1: one after another; more: a reconnect storm).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// An MQTT 3.1.1 CONNECT: clean session, keep-alive 300 s.
fn connect_packet(id: &str) -> Vec<u8> {
    let mut vh = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0x01, 0x2c];
    vh.extend((id.len() as u16).to_be_bytes());
    vh.extend(id.as_bytes());
    let mut p = vec![0x10];
    let mut len = vh.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        p.push(b);
        if len == 0 {
            break;
        }
    }
    p.extend(vh);
    p
}

pub async fn run(args: IdleArgs) -> Result<()> {
    let before = args.pid.map(rss_kib).transpose()?;
    let started = std::time::Instant::now();
    let workers = args.concurrency.clamp(1, args.connections.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (host, port, total) = (args.host.clone(), args.port, args.connections);
        tasks.spawn(async move {
            let mut held = Vec::new();
            let mut latencies = Vec::new();
            for i in (w..total).step_by(workers) {
                let t = std::time::Instant::now();
                let mut s = TcpStream::connect((host.as_str(), port))
                    .await
                    .with_context(|| format!("connection {i}"))?;
                s.write_all(&connect_packet(&format!("idle-{i}"))).await?;
                let mut ack = [0u8; 4];
                s.read_exact(&mut ack).await?;
                if ack[0] != 0x20 || ack[3] != 0 {
                    bail!("connection {i}: CONNACK {ack:?}");
                }
                latencies.push(t.elapsed());
                held.push(s);
            }
            Ok::<_, anyhow::Error>((held, latencies))
        });
    }
    let mut held = Vec::with_capacity(args.connections);
    let mut latencies = Vec::with_capacity(args.connections);
    while let Some(done) = tasks.join_next().await {
        let (h, l) = done??;
        held.extend(h);
        latencies.extend(l);
    }
    let connect_s = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0)
    };
    tokio::time::sleep(args.hold).await;
    let after = args.pid.map(rss_kib).transpose()?;
    let per = match (before, after) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b)) as f64 / args.connections as f64),
        _ => None,
    };
    println!(
        "{}",
        serde_json::json!({
            "connections": held.len(),
            "connect_seconds": (connect_s * 100.0).round() / 100.0,
            "connects_per_second": (args.connections as f64 / connect_s).round(),
            "connect_ms_p50": pct(0.5),
            "connect_ms_p99": pct(0.99),
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": per.map(|p| (p * 100.0).round() / 100.0),
        })
    );
    Ok(())
}
