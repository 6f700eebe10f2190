//! Storing publishes: each message to the stream of its topic's address (the default topic
//! address unless an address claims the topic), with a copy in the retained stream when it has
//! the retain flag. Used by connections ([`crate::driver`]) and by the wills of dead adapters'
//! clients ([`WillPublisher`]), so a will is stored exactly as a publish would be.

use std::{future::Future, sync::Arc};

use futures::future::BoxFuture;
use wharf_adapter_core::{
    claims::{Claims, claim_of},
    names::{default_stream, wills_stream},
    wills::PublishWill,
};
use wharf_log::Log;
use wharf_log_format::{Offset, Record, StoredRecord, StreamId};

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

/// Publishes the MQTT wills of a dead adapter's clients for the shared wills registry
/// (`wharf_adapter_core::wills`): decoded from their record and stored exactly as a client
/// publish would be ([`store_now`]).
#[derive(Debug)]
pub struct WillPublisher {
    log: Log,
    claims: Arc<Claims>,
}

impl WillPublisher {
    pub fn new(log: Log, claims: Arc<Claims>) -> Self {
        Self { log, claims }
    }
}

impl PublishWill for WillPublisher {
    fn publish(&self, record: Record) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let stored = StoredRecord {
                stream: wills_stream(),
                offset: Offset(0),
                record,
            };
            match Message::from_record(&stored) {
                Ok(m) => store_now(&self.log, &self.claims, &m)
                    .await
                    .map_err(|e| e.to_string()),
                Err(why) => {
                    tracing::warn!(why, "unreadable will record; dropped");
                    Ok(())
                }
            }
        })
    }
}
