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
    let mut held = Vec::with_capacity(args.connections);
    let started = std::time::Instant::now();
    for i in 0..args.connections {
        let mut s = TcpStream::connect((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("connection {i}"))?;
        s.write_all(&connect_packet(&format!("idle-{i}"))).await?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await?;
        if ack[0] != 0x20 || ack[3] != 0 {
            bail!("connection {i}: CONNACK {ack:?}");
        }
        held.push(s);
    }
    let connect_s = started.elapsed().as_secs_f64();
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
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": per.map(|p| (p * 100.0).round() / 100.0),
        })
    );
    Ok(())
}
