//! What an address holds and who reads it, from the log (for `wharf describe address` and
//! the console): its stream's offsets and size, and every cursor on it (an AMQP queue's
//! `amqp-queue`, MQTT shared subscriptions' `mqtt-share.*`, persistent sessions'
//! `mqtt-session.*`, durable subscriptions') with its backlog — records not yet acknowledged.

use serde_json::{Value, json};
use wharf_log::Log;

/// Offsets, size and cursors of address `name`'s stream (a `queue`: with its backlog), read now (a LIST and a GET per
/// cursor). The backlog of a cursor is the records from its committed offset to the end that
/// it has not acknowledged.
pub async fn address(log: &Log, name: &str, queue: bool) -> Result<Value, wharf_log::LogError> {
    let Some(stream) = wharf_resources::address::stream_of(name) else {
        return Ok(json!({"stream": null}));
    };
    log.refresh().await?;
    let index = log.stream(&stream);
    let (end, start, bytes) = index
        .as_ref()
        .map_or((0, 0, 0), |i| (i.next_offset, i.start_offset, i.bytes()));
    let mut cursors = Vec::new();
    for cursor_name in log.cursor_names(&stream, "").await? {
        let c = log.cursor(&stream, &cursor_name).await?;
        let committed = c.committed().0.min(end);
        let acked_above: u64 = c
            .acks()
            .ranges
            .iter()
            .map(|&(from, to)| to.min(end).saturating_sub(from.max(committed)))
            .sum();
        cursors.push(json!({
            "name": cursor_name,
            "committed": committed,
            "backlog": end.saturating_sub(committed).saturating_sub(acked_above),
        }));
    }
    let queue_backlog = cursors
        .iter()
        .find(|c| c["name"] == "amqp-queue")
        .map(|c| c["backlog"].clone());
    Ok(json!({
        "stream": stream.as_str(),
        "end_offset": end,
        "start_offset": start,
        "records": end.saturating_sub(start),
        "bytes": bytes,
        "cursors": cursors,
        // A queue's backlog; a queue never read has every record waiting. A topic has one
        // per subscription (its cursors).
        "backlog": match (queue, queue_backlog) {
            (true, Some(b)) => b,
            (true, None) => json!(end.saturating_sub(start)),
            (false, _) => Value::Null,
        },
    }))
}
