//! Storing publishes: each message to the stream of its topic's address (the default topic
//! address unless an address claims the topic), with a copy in the retained stream when it has
//! the retain flag. Used by connections ([`crate::driver`]) and by the wills of dead adapters'
//! clients ([`crate::wills`]), so a will is stored exactly as a publish would be.

use std::future::Future;

use wharf_adapter_core::{
    claims::{Claims, claim_of},
    names::default_stream,
};
use wharf_log::Log;
use wharf_log_format::StreamId;

use crate::{message::Message, retained::retained_stream};

/// Store one message like a client publish and wait until it is durable.
pub async fn store_now(log: &Log, claims: &Claims, m: &Message) -> wharf_log::Result<()> {
    store(log, claims, std::slice::from_ref(m)).await?.await
}

/// Submit messages for storage, in order: each to the stream of its topic's address (the
/// default topic address unless one claims the topic), and those with the retain flag to the
/// retained stream too. The future resolves when every copy is durable.
pub async fn store(
    log: &Log,
    claims: &Claims,
    messages: &[Message],
) -> wharf_log::Result<impl Future<Output = wharf_log::Result<()>> + use<>> {
    let now = log.clock().now_ms();
    let records: Vec<_> = messages.iter().map(|m| m.to_record(now)).collect();
    let retained: Vec<_> = messages
        .iter()
        .zip(&records)
        .filter(|(m, _)| m.retain)
        .map(|(_, r)| r.clone())
        .collect();
    let retained = if retained.is_empty() {
        None
    } else {
        Some(log.submit(&retained_stream(), retained).await?)
    };
    // One snapshot of the claims for the batch; messages grouped by stream, in order.
    let (default, claims) = (default_stream(), claims.current());
    let mut by_stream: Vec<(&StreamId, Vec<_>)> = Vec::new();
    for (m, r) in messages.iter().zip(records) {
        let stream = claim_of(&claims, &m.topic).map_or(&default, |c| &c.stream);
        match by_stream.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, rs)) => rs.push(r),
            None => by_stream.push((stream, vec![r])),
        }
    }
    let mut submitted = Vec::with_capacity(by_stream.len());
    for (stream, records) in by_stream {
        submitted.push(log.submit(stream, records).await?);
    }
    Ok(async move {
        if let Some(r) = retained {
            r.durable().await?;
        }
        for s in submitted {
            s.durable().await?;
        }
        Ok(())
    })
}
