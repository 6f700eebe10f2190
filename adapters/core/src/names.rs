//! Stream and cursor names the adapters share.
//!
//! These are persisted: a name written by one version is read by the next, so a change here
//! is a change of the stored layout (`log/README.md`).

use wharf_log_format::StreamId;

/// The stream of topics no address claims (the default topic address): MQTT publishes to
/// unclaimed topics and AMQP sends to `/topic/<topic>` are stored here.
pub fn default_stream() -> StreamId {
    // A constant, valid id.
    StreamId::new("mqtt-default").unwrap_or_else(|_| unreachable!("valid stream id"))
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
        assert_eq!(hex("a/b é"), "612f6220c3a9");
    }
}
