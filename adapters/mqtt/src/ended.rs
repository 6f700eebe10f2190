//! Why a connection ended, other than by the client's DISCONNECT: typed, so the driver and
//! its callers can tell a client that went away from a session taken over, a protocol
//! violation or a store failure; each is logged with its `Display` text. A will is due after
//! every one of them ([MQTT-3.1.2-8]).

use std::net::SocketAddr;

use wharf_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum Ended {
    /// A TLS or WebSocket handshake failed or took too long.
    #[error("{what} with {peer}: {why}")]
    Handshake {
        what: &'static str,
        peer: SocketAddr,
        why: String,
    },
    /// CONNECT of a protocol level this adapter does not speak (refused with CONNACK).
    #[error("{peer}: unsupported protocol level {level}")]
    UnsupportedLevel { peer: SocketAddr, level: u8 },
    /// The first packet is not CONNECT [MQTT-3.1.0-1].
    #[error("{peer}: first packet is not CONNECT (byte {first:#04x})")]
    NotConnect { peer: SocketAddr, first: u8 },
    /// A packet that does not decode (MQTT 5 clients are told why first).
    #[error("bad packet from {peer} (client {client:?}): {why}")]
    BadPacket {
        peer: SocketAddr,
        client: String,
        why: &'static str,
    },
    /// The session closed the connection: a protocol violation, a timeout, a refused CONNECT
    /// or a store failure a 3.1.1 client can only learn of this way.
    #[error("{client}: {reason}")]
    Closed {
        client: String,
        reason: &'static str,
    },
    /// The client closed the socket without DISCONNECT.
    #[error("{client} went away without DISCONNECT")]
    PeerGone { client: String },
    /// Reading from the socket failed.
    #[error("read from {peer}: {source}")]
    Read {
        peer: SocketAddr,
        source: std::io::Error,
    },
    /// A newer connection of the same client took the session over (on any adapter), or
    /// fenced its cursors.
    #[error("{client}: session taken over")]
    TakenOver { client: String },
    /// Closed before CONNECT to make room for newer connections.
    #[error(
        "{peer}: closed before CONNECT to make room for newer connections ([mqtt] max_handshakes)"
    )]
    Evicted { peer: SocketAddr },
    /// The adapter is shutting down (MQTT 5 clients got DISCONNECT 0x8B).
    #[error("{client}: adapter shutting down")]
    ShuttingDown { client: String },
    /// Its tenant was deleted (MQTT 5 clients got DISCONNECT 0x87 saying so).
    #[error("{client}: its tenant was deleted")]
    TenantDeleted { client: String },
    /// The log failed while reading for the session or keeping its position.
    #[error("{what}: {source}")]
    Store { what: String, source: LogError },
    /// A packet for the client could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
}

impl Ended {
    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(LogError) -> Self {
        let what = what.into();
        move |source| Self::Store { what, source }
    }
}
