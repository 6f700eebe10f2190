//! Every stream, cursor and lease name the adapters write under, in one place.
//!
//! These are persisted: a name written by one version is read by the next, so a change here
//! is a change of the stored layout (`log/README.md`). The `mqtt-` prefix of the shared
//! streams is historical (they were the MQTT adapter's first); it is kept because stores hold
//! it. Addresses may not start with a reserved prefix ([`RESERVED_PREFIXES`]).

use wharf_log_format::StreamId;

fn fixed(name: &'static str) -> StreamId {
    // Only called with the constant, valid ids below.
    StreamId::new(name).unwrap_or_else(|_| unreachable!("valid stream id {name}"))
}

/// Address names that may not be declared: the adapters' own streams and temporary ones.
pub const RESERVED_PREFIXES: [&str; 3] = ["mqtt-", "amqp-", "tmp."];

// ---- Streams ----

/// The stream of topics no address claims (the default topic address): MQTT publishes to
/// unclaimed topics and AMQP sends to `/topic/<topic>` are stored here.
pub const DEFAULT_STREAM: &str = "mqtt-default";
/// The latest retained message per topic (compacted by snapshot).
pub const RETAINED_STREAM: &str = "mqtt-retained";
/// Will registrations of connected clients, of every protocol (compacted by snapshot).
pub const WILLS_STREAM: &str = "mqtt-wills";
/// One record per MQTT CONNECT: orders session takeovers across adapters.
pub const CONNECTS_STREAM: &str = "mqtt-connects";

/// [`DEFAULT_STREAM`] as a stream id.
pub fn default_stream() -> StreamId {
    fixed(DEFAULT_STREAM)
}

/// [`RETAINED_STREAM`] as a stream id.
pub fn retained_stream() -> StreamId {
    fixed(RETAINED_STREAM)
}

/// [`WILLS_STREAM`] as a stream id.
pub fn wills_stream() -> StreamId {
    fixed(WILLS_STREAM)
}

/// [`CONNECTS_STREAM`] as a stream id.
pub fn connects_stream() -> StreamId {
    fixed(CONNECTS_STREAM)
}

// ---- Cursors ----

/// Prefix of the cursors (on [`DEFAULT_STREAM`]) that hold MQTT persistent sessions.
pub const SESSION_CURSOR_PREFIX: &str = "mqtt-session.";
/// The cursor of an AMQP queue's competing consumers (one per queue stream).
pub const QUEUE_CURSOR: &str = "amqp-queue";

/// The cursor that holds `client_id`'s MQTT session (hex, so any client id works); `None` if
/// the client id is too long for a cursor name (at most 200 characters: 93 bytes).
pub fn session_cursor(client_id: &str) -> Option<String> {
    let name = format!("{SESSION_CURSOR_PREFIX}{}", hex(client_id));
    (name.len() <= 200).then_some(name)
}

/// The cursor of an MQTT shared subscription group (`share` is the part after `$share/`).
pub fn share_cursor(share: &str) -> String {
    format!("mqtt-share.{}", hex(share))
}

/// The cursor of an AMQP durable subscription of link `link` of container `container_id`.
pub fn durable_subscription_cursor(container_id: &str, link: &str) -> String {
    format!("amqp-sub.{}", hex(&format!("{container_id}/{link}")))
}

// ---- Leases ----

/// The liveness lease of adapter run `run` in a tenant: held while the adapter has clients
/// there; when it expires, another adapter publishes its clients' wills.
pub fn adapter_lease(run: &str) -> String {
    format!("mqtt-adapter.{run}")
}

/// One adapter at a time compacts [`WILLS_STREAM`].
pub const WILLS_COMPACT_LEASE: &str = "mqtt-wills-compact";
/// One adapter at a time compacts [`RETAINED_STREAM`].
pub const RETAINED_COMPACT_LEASE: &str = "mqtt-retained-compact";
/// One adapter at a time deletes expired MQTT sessions.
pub const SESSION_SWEEP_LEASE: &str = "mqtt-session-sweep";

/// The lease prefix of the blocks of offsets competing readers of `cursor` on `stream` take
/// (`<prefix>.<block>`); `/` in stream names is not allowed in lease names.
pub fn block_lease_prefix(cursor: &str, stream: &StreamId) -> String {
    format!("{cursor}.{}", stream.as_str().replace('~', "_"))
}

/// `s` as lowercase hex: client ids, share names and link names become cursor and lease
/// names whatever characters they hold.
pub fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable() {
        // Persisted: these exact strings are in existing stores.
        assert_eq!(default_stream().as_str(), "mqtt-default");
        assert_eq!(retained_stream().as_str(), "mqtt-retained");
        assert_eq!(wills_stream().as_str(), "mqtt-wills");
        assert_eq!(connects_stream().as_str(), "mqtt-connects");
        assert_eq!(hex("a/b é"), "612f6220c3a9");
        assert_eq!(session_cursor("c1").as_deref(), Some("mqtt-session.6331"));
        assert_eq!(session_cursor(&"x".repeat(94)), None);
        assert!(session_cursor(&"x".repeat(93)).is_some());
        assert_eq!(share_cursor("g/a/#"), "mqtt-share.672f612f23");
        assert_eq!(durable_subscription_cursor("c", "l"), "amqp-sub.632f6c");
        assert_eq!(adapter_lease("r1"), "mqtt-adapter.r1");
        let s = StreamId::new("a~b").expect("id");
        assert_eq!(block_lease_prefix(QUEUE_CURSOR, &s), "amqp-queue.a_b");
    }
}
