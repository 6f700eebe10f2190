//! One table from the log's error kinds to what an adapter tells its client when the store
//! did not take a message.
//!
//! | log error kind | failure | MQTT 5 PUBACK/PUBREC | MQTT 3.1.1 | AMQP transfer outcome | AMQP attach refused |
//! | --- | --- | --- | --- | --- | --- |
//! | `Unavailable`, `Conflict` | [`StoreFailure::Unavailable`] | 0x80 + reason string | connection closed (the client resends) | `released` | `amqp:internal-error` + "attach again" |
//! | `Closed` | [`StoreFailure::Closed`] | 0x80 + reason string | connection closed | `released` | `amqp:internal-error` + "attach again" |
//! | `Invalid`, `NotFound`, `Fenced` | [`StoreFailure::Refused`] | 0x80 + reason string | connection closed | `rejected`, `amqp:internal-error` + reason | `amqp:internal-error` + reason |
//! | `Corrupt` | [`StoreFailure::Corrupt`] | 0x80 + reason string | connection closed | `rejected`, `amqp:internal-error` + reason | `amqp:internal-error` + reason |
//!
//! An attach that needs the store (a durable subscription's cursors, an address created on
//! first use, a will registered) and fails is refused with `amqp:internal-error` — AMQP has no
//! "try again" condition for links — and a description that says whether attaching again may
//! work ([`StoreFailure::attach_reason`]), followed by the store's own message.
//!
//! MQTT 5 has no "try again" reason code for PUBACK/PUBREC, so every failure is 0x80
//! (unspecified error) and the reason string says what happened and whether publishing again
//! helps; MQTT 3.1.1 has no negative acknowledgement, so the connection is closed and the
//! client resends. AMQP has the distinction: `released` says the message was not acted upon
//! and may be sent again (AMQP 1.0 §3.4.5; Proton's `on_released`, rhea's `released`), so
//! failures that sending again may cure are released, and the others rejected with an error
//! whose description is the reason string.

use wharf_log::ErrorKind;

/// Why the store did not take a message, as a client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFailure {
    /// Slow, unreachable or raced (`Unavailable`, `Conflict`): publishing again may work.
    Unavailable,
    /// The log is closing (the adapter shuts down): publish again, to another adapter.
    Closed,
    /// The store refused the request itself (`Invalid`, `NotFound`, `Fenced`).
    Refused,
    /// Stored data could not be read: an operator must look.
    Corrupt,
}

impl From<ErrorKind> for StoreFailure {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Unavailable | ErrorKind::Conflict => Self::Unavailable,
            ErrorKind::Closed => Self::Closed,
            ErrorKind::Invalid | ErrorKind::NotFound | ErrorKind::Fenced => Self::Refused,
            ErrorKind::Corrupt => Self::Corrupt,
        }
    }
}

impl From<&wharf_log::LogError> for StoreFailure {
    fn from(e: &wharf_log::LogError) -> Self {
        e.kind().into()
    }
}

impl StoreFailure {
    /// The reason string for the client (MQTT 5 reason string, AMQP error description).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unavailable => "the store is unavailable; publish again",
            Self::Closed => "the server is shutting down; publish again",
            Self::Refused => "the store refused the message",
            Self::Corrupt => "stored data is damaged; the operator has been told",
        }
    }

    /// The description of an AMQP attach refused because the store failed.
    pub fn attach_reason(self) -> &'static str {
        match self {
            Self::Unavailable => "the store is unavailable; attach again",
            Self::Closed => "the server is shutting down; attach again",
            Self::Refused => "the store refused the request",
            Self::Corrupt => "stored data is damaged; the operator has been told",
        }
    }

    /// Whether the same publish may succeed if sent again.
    pub fn retry(self) -> bool {
        matches!(self, Self::Unavailable | Self::Closed)
    }

    /// What an AMQP sender is told for an unsettled transfer that was not stored: `None`:
    /// `released` (send again); `Some(condition)`: `rejected` with that error condition and
    /// [`StoreFailure::reason`] as its description.
    pub fn amqp_rejection(self) -> Option<&'static str> {
        (!self.retry()).then_some("amqp:internal-error")
    }

    /// The MQTT 5 PUBACK / PUBREC reason code: 0x80 (unspecified error) for all — the only
    /// code of the spec's list (§3.4.2.1) that fits a server-side store failure.
    pub fn mqtt5_publish_reason(self) -> u8 {
        0x80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_row() {
        use ErrorKind::*;
        let rows = [
            (Unavailable, StoreFailure::Unavailable, true),
            (Conflict, StoreFailure::Unavailable, true),
            (Closed, StoreFailure::Closed, true),
            (Invalid, StoreFailure::Refused, false),
            (NotFound, StoreFailure::Refused, false),
            (Fenced, StoreFailure::Refused, false),
            (Corrupt, StoreFailure::Corrupt, false),
        ];
        for (kind, failure, retry) in rows {
            let f = StoreFailure::from(kind);
            assert_eq!((f, f.retry()), (failure, retry), "{kind:?}");
            assert_eq!(f.mqtt5_publish_reason(), 0x80);
            assert_eq!(
                f.amqp_rejection().is_none(),
                retry,
                "{kind:?}: released iff retry"
            );
            assert!(!f.reason().is_empty());
            assert_eq!(
                f.attach_reason().ends_with("attach again"),
                retry,
                "{kind:?}"
            );
        }
    }
}
