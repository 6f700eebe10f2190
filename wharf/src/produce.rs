//! Appending and consuming from the command line.

use std::{
    io::{BufRead, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::Result;
use bytes::Bytes;
use clap::Args;
use futures::{StreamExt, stream::FuturesOrdered};
use serde_json::json;
use wharf_log::{ErrorKind, Lease, Log, LogError};
use wharf_log_format::Record;

use crate::inspect::{record_json, stream_id};

/// Exit code of a consumer that lost its lease to another process.
const EXIT_FENCED: u8 = 3;

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// Stream to append to.
    stream: String,
    /// Generate this many records (`<prefix><n>`) instead of reading standard input.
    #[arg(long)]
    count: Option<u64>,
    /// Payload prefix of generated records.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Appends kept in flight (they are stored in order).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Stream to read.
    stream: String,
    /// Cursor name; the cursor is created at the stream's start if new.
    #[arg(long, default_value = "cli")]
    cursor: String,
    /// Be the only consumer of this cursor: hold a lease on it, fence it, and stop (exit 3)
    /// if another process takes it over.
    #[arg(long)]
    exclusive: bool,
    /// Lease time-to-live with --exclusive; renewed every third of it.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Keep waiting for new records.
    #[arg(long)]
    follow: bool,
    /// Stop after this many records.
    #[arg(long, default_value_t = u64::MAX)]
    max: u64,
}

fn print_line(v: serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// Print one JSON line per durable record: `{"offset": n, "payload": "..."}`.
pub async fn append(log: &Log, args: AppendArgs) -> Result<ExitCode> {
    let stream = stream_id(&args.stream)?;
    let payloads: Box<dyn Iterator<Item = Result<String>>> = match args.count {
        Some(n) => {
            let prefix = args.prefix.clone();
            Box::new((0..n).map(move |i| Ok(format!("{prefix}{i}"))))
        }
        None => Box::new(
            std::io::stdin()
                .lock()
                .lines()
                .map(|l| l.map_err(anyhow::Error::from))
                .collect::<Vec<_>>()
                .into_iter(),
        ),
    };
    let mut in_flight = FuturesOrdered::new();
    for payload in payloads {
        let payload = payload?;
        let record = Record::new(log.clock().now_ms(), Bytes::from(payload.clone()));
        let pending = log.submit(&stream, vec![record]).await?;
        in_flight.push_back(async move { (pending.committed().await, payload) });
        while in_flight.len() >= args.concurrency.max(1) {
            if let Some((r, p)) = in_flight.next().await {
                print_line(json!({"offset": r?.0, "payload": p}))?;
            }
        }
    }
    while let Some((r, p)) = in_flight.next().await {
        print_line(json!({"offset": r?.0, "payload": p}))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Hold `lease` or report being fenced.
async fn keep_lease(lease: &mut Lease, ttl: Duration) -> Result<(), LogError> {
    if !lease.is_valid() {
        // Our own clock says the claim ran out (we were paused?): renewing succeeds only if
        // nobody took the lease meanwhile.
        tracing::warn!("lease expired by our clock; trying to renew");
    }
    lease.renew(ttl).await
}

pub async fn consume(log: &Log, args: ConsumeArgs) -> Result<ExitCode> {
    let stream = stream_id(&args.stream)?;
    let mut cursor = log.cursor(&stream, &args.cursor).await?;
    let mut lease = None;
    if args.exclusive {
        let name = format!("cursor.{}.{}", stream, args.cursor);
        let holder = format!("wharf-consume-{}", std::process::id());
        let acquired = loop {
            if let Some(l) = log.acquire_lease(&name, &holder, args.lease_ttl).await? {
                break l;
            }
            tokio::time::sleep(args.lease_ttl / 4).await;
        };
        tracing::info!(lease = %name, epoch = acquired.epoch().0, "lease acquired");
        cursor.fence(&acquired).await?;
        lease = Some(acquired);
    }
    let mut tail = log.tail(&stream, cursor.committed());
    let mut pos = cursor.committed(); // without --follow
    let mut renew = tokio::time::interval(args.lease_ttl / 3);
    let mut seen = 0u64;
    while seen < args.max {
        let batch = if args.follow {
            tokio::select! {
                b = tail.next_batch(100) => b?,
                _ = renew.tick(), if lease.is_some() => {
                    if let Some(l) = lease.as_mut()
                        && let Err(e) = keep_lease(l, args.lease_ttl).await
                    {
                        return stop(e);
                    }
                    continue;
                }
            }
        } else {
            let b = log.read(&stream, pos, 100).await?;
            match b.last() {
                Some(last) => pos = last.offset.next(),
                None => break,
            }
            b
        };
        // Never hand out a record while our claim may have lapsed.
        if let Some(l) = lease.as_mut()
            && !l.is_valid()
            && let Err(e) = keep_lease(l, args.lease_ttl).await
        {
            return stop(e);
        }
        for r in &batch {
            if cursor.is_acked(r.offset) || seen >= args.max {
                continue;
            }
            print_line(record_json(r))?;
            cursor.ack(r.offset);
            seen += 1;
        }
        if let Err(e) = cursor.commit().await {
            return stop(e);
        }
    }
    if let Some(l) = lease {
        l.release().await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// End a consumer on a log error: exit code 3 if another process fenced it, an error otherwise.
fn stop(e: LogError) -> Result<ExitCode> {
    if e.kind() == ErrorKind::Fenced {
        eprintln!("wharf: fenced: {e}");
        return Ok(ExitCode::from(EXIT_FENCED));
    }
    Err(e.into())
}
