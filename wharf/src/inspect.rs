//! Looking inside a store: streams, records, cursors.

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Args;
use serde_json::{Value, json};
use wharf_log::Log;
use wharf_log_format::{Offset, StoredRecord, StreamId};

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Stream to read.
    stream: String,
    /// First offset to print.
    #[arg(long, conflicts_with = "since")]
    from: Option<u64>,
    /// Start at the first record at or after this time: RFC 3339 (2026-11-24T10:00:00Z) or an
    /// age such as 10m.
    #[arg(long)]
    since: Option<String>,
    /// Print at most this many records.
    #[arg(long, default_value_t = u64::MAX)]
    limit: u64,
    /// Keep printing new records as they arrive.
    #[arg(long)]
    follow: bool,
}

pub fn stream_id(s: &str) -> Result<StreamId> {
    StreamId::new(s).with_context(|| format!("bad stream name {s:?}"))
}

/// A record as one JSON object: payload as text when it is UTF-8, base64 otherwise.
pub fn record_json(r: &StoredRecord) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut v = json!({
        "stream": r.stream.as_str(),
        "offset": r.offset.0,
        "timestamp_ms": r.record.timestamp_ms,
    });
    if let Some(k) = &r.record.key {
        v["key"] = match std::str::from_utf8(k) {
            Ok(s) => json!(s),
            Err(_) => json!({ "base64": b64(k) }),
        };
    }
    if let Some(h) = &r.record.headers {
        v["headers_base64"] = json!(b64(h));
    }
    match std::str::from_utf8(&r.record.payload) {
        Ok(s) => v["payload"] = json!(s),
        Err(_) => v["payload_base64"] = json!(b64(&r.record.payload)),
    }
    v
}

pub fn streams(log: &Log, as_json: bool) {
    let streams = log.streams();
    if as_json {
        for (id, s) in &streams {
            println!(
                "{}",
                json!({"stream": id.as_str(), "start_offset": s.start_offset,
                       "next_offset": s.next_offset, "records": s.next_offset - s.start_offset,
                       "bytes": s.bytes(), "segments": s.entries.len()})
            );
        }
        return;
    }
    println!(
        "{:<32} {:>12} {:>12} {:>12} {:>14} {:>9}",
        "STREAM", "START", "NEXT", "RECORDS", "BYTES", "SEGMENTS"
    );
    for (id, s) in &streams {
        println!(
            "{:<32} {:>12} {:>12} {:>12} {:>14} {:>9}",
            id.as_str(),
            s.start_offset,
            s.next_offset,
            s.next_offset - s.start_offset,
            s.bytes(),
            s.entries.len()
        );
    }
    println!(
        "{} streams, {} segments in the log",
        streams.len(),
        log.segment_seq()
    );
}

fn parse_since(s: &str, now_ms: i64) -> Result<i64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        return Ok(ms);
    }
    match humantime::parse_duration(s) {
        Ok(age) => Ok(now_ms - age.as_millis() as i64),
        Err(_) => bail!("--since {s:?} is neither an RFC 3339 time nor an age like 10m"),
    }
}

pub async fn dump(log: &Log, args: DumpArgs) -> Result<()> {
    let stream = stream_id(&args.stream)?;
    let start = match (&args.from, &args.since) {
        (Some(o), _) => Offset(*o),
        (None, Some(since)) => {
            let ts = parse_since(since, log.clock().now_ms())?;
            match log.offset_for_time(&stream, ts).await? {
                Some(o) => o,
                None if args.follow => Offset(log.stream(&stream).map_or(0, |s| s.next_offset)),
                None => return Ok(()),
            }
        }
        (None, None) => Offset(0),
    };
    let mut printed = 0u64;
    if args.follow {
        let mut tail = log.tail(&stream, start);
        while printed < args.limit {
            for r in tail.next_batch(1000).await? {
                println!("{}", record_json(&r));
                printed += 1;
                if printed >= args.limit {
                    break;
                }
            }
        }
        return Ok(());
    }
    let mut pos = start;
    while printed < args.limit {
        let batch = log.read(&stream, pos, 1000).await?;
        let Some(last) = batch.last() else { break };
        pos = last.offset.next();
        for r in &batch {
            println!("{}", record_json(r));
            printed += 1;
            if printed >= args.limit {
                break;
            }
        }
    }
    Ok(())
}

pub async fn cursor(log: &Log, stream: &str, name: &str) -> Result<()> {
    let stream = stream_id(stream)?;
    let c = log.cursor(&stream, name).await?;
    println!(
        "{}",
        json!({"stream": stream.as_str(), "cursor": name, "generation": c.generation(),
               "epoch": c.epoch().0, "committed": c.committed().0,
               "acked_ranges": c.acks().ranges, "exists": c.exists(), "meta": c.meta()})
    );
    Ok(())
}
