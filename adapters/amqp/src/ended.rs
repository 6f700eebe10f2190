//! Why an AMQP connection ended, other than by a clean close: typed, so a caller can tell a
//! client that went away from a protocol error or a refused handshake; each is logged with
//! its `Display` text.

#[derive(Debug, thiserror::Error)]
pub enum Ended {
    /// The TLS handshake failed or took too long.
    #[error("TLS handshake: {0}")]
    Tls(String),
    /// The client closed the socket without closing the connection.
    #[error("peer closed the socket")]
    PeerGone,
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("write: {0}")]
    Write(std::io::Error),
    /// No AMQP open within `[amqp] handshake_timeout`.
    #[error("no open within [amqp] handshake_timeout")]
    HandshakeTimeout,
    /// Closed before its open to make room for newer connections.
    #[error("closed before its open to make room for newer connections ([amqp] max_handshakes)")]
    Evicted,
    /// The client closed the connection with an error.
    #[error("peer closed with {condition}")]
    ClosedByPeer { condition: String },
    /// This adapter closed the connection with an error (a protocol violation, a limit, the
    /// adapter shutting down).
    #[error("{condition}: {description}")]
    Closed {
        condition: String,
        description: String,
    },
}
