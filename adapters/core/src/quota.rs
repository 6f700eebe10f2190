//! A tenant's limits as the adapters enforce them, from its `Tenant` resource over its
//! `Plan`'s (set live by the process that follows the catalog):
//!
//! - `max_message_bytes`: a larger message is refused — MQTT 5 PUBACK / PUBREC 0x97 (Quota
//!   exceeded) with a reason string, MQTT 3.1.1 acknowledged and not stored (it has no way to
//!   say no [MQTT-3.3.5-2]), AMQP `amqp:link:message-size-exceeded`;
//! - `max_storage_bytes`: while the tenant's log holds more, every message is refused the same
//!   way (AMQP `amqp:resource-limit-exceeded`) until retention brings it under.
//!
//! One `Quota` per tenant, shared by its services and read by each connection at every
//! message (two atomic loads).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Quota {
    /// 0: no limit.
    max_message_bytes: AtomicU64,
    /// 0: no limit; what [`Quota::set_storage_used`] compares with.
    max_storage_bytes: AtomicU64,
    storage_full: AtomicBool,
}

/// Why a message is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    MessageSize { max: u64 },
    Storage,
}

impl Exceeded {
    pub fn reason(self) -> String {
        match self {
            Self::MessageSize { max } => {
                format!("message larger than the tenant's limit of {max} bytes")
            }
            Self::Storage => "the tenant's storage is full (max_storage_bytes)".to_string(),
        }
    }
}

impl Quota {
    pub fn set_max_message_bytes(&self, max: Option<u64>) {
        self.max_message_bytes
            .store(max.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn set_storage_full(&self, full: bool) {
        self.storage_full.store(full, Ordering::Relaxed);
    }

    pub fn set_max_storage_bytes(&self, max: Option<u64>) {
        self.max_storage_bytes
            .store(max.unwrap_or(0), Ordering::Relaxed);
    }

    /// The tenant's log holds `bytes` now: full if that is over its limit. Whether that
    /// changed.
    pub fn set_storage_used(&self, bytes: u64) -> bool {
        let max = self.max_storage_bytes.load(Ordering::Relaxed);
        let full = max > 0 && bytes > max;
        self.storage_full.swap(full, Ordering::Relaxed) != full
    }

    pub fn storage_full(&self) -> bool {
        self.storage_full.load(Ordering::Relaxed)
    }

    /// Whether a message of `bytes` may be stored now.
    pub fn check(&self, bytes: usize) -> Result<(), Exceeded> {
        let max = self.max_message_bytes.load(Ordering::Relaxed);
        if max > 0 && bytes as u64 > max {
            return Err(Exceeded::MessageSize { max });
        }
        if self.storage_full.load(Ordering::Relaxed) {
            return Err(Exceeded::Storage);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_what_exceeds_them_and_nothing_else() {
        let q = Quota::default();
        assert_eq!(q.check(10_000_000), Ok(()), "no limit by default");
        q.set_max_message_bytes(Some(100));
        assert_eq!(q.check(100), Ok(()));
        assert_eq!(q.check(101), Err(Exceeded::MessageSize { max: 100 }));
        q.set_storage_full(true);
        assert_eq!(q.check(1), Err(Exceeded::Storage));
        q.set_storage_full(false);
        q.set_max_message_bytes(None);
        assert!(!q.set_storage_used(u64::MAX), "no storage limit by default");
        q.set_max_storage_bytes(Some(1000));
        assert!(!q.set_storage_used(1000), "not full, as before");
        assert!(q.set_storage_used(1001), "full now");
        assert!(!q.set_storage_used(1002), "still full");
        assert!(q.storage_full());
        assert_eq!(q.check(1), Err(Exceeded::Storage));
        assert!(q.set_storage_used(10), "under again");
        assert_eq!(q.check(101), Ok(()), "no size limit any more");
    }
}
