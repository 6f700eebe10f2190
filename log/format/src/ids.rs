use std::fmt;

use serde::{Deserialize, Serialize};

use crate::FormatError;

/// Longest stream name accepted; keeps object keys well under S3's 1024-byte limit.
pub const MAX_STREAM_ID_LEN: usize = 200;

/// The name of a stream (one per address, or per address partition).
///
/// Stream ids are used verbatim in object keys, so the alphabet is restricted to
/// `[A-Za-z0-9._-]` plus `~` (reserved for partition suffixes such as `orders~3`), must not
/// start with `.` and are 1 to [`MAX_STREAM_ID_LEN`] bytes long.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    pub fn new(name: impl Into<String>) -> Result<Self, FormatError> {
        let name = name.into();
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '~');
        if name.is_empty() || name.len() > MAX_STREAM_ID_LEN {
            return Err(FormatError::Invalid {
                what: "stream id",
                detail: format!("{name:?} must be 1 to {MAX_STREAM_ID_LEN} bytes"),
            });
        }
        if name.starts_with('.') || !name.chars().all(ok_char) {
            return Err(FormatError::Invalid {
                what: "stream id",
                detail: format!(
                    "{name:?} may only contain A-Z a-z 0-9 . _ - ~ and must not start with '.'"
                ),
            });
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Partition `n` of this stream: `orders` -> `orders~3`. A partitioned address is a set of
    /// independent streams with their own offsets.
    pub fn partition(&self, n: u32) -> StreamId {
        StreamId(format!("{}~{n}", self.address()))
    }

    /// The address part: `orders~3` -> `orders`.
    pub fn address(&self) -> &str {
        self.0.split_once('~').map_or(&self.0, |(a, _)| a)
    }

    /// The partition number, if this is a partition stream.
    pub fn partition_number(&self) -> Option<u32> {
        self.0.split_once('~').and_then(|(_, n)| n.parse().ok())
    }
}

impl TryFrom<String> for StreamId {
    type Error = FormatError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

/// Position of a record in its stream: strictly increasing, never reused, dense (each append
/// takes the next offset; trimming moves the start, it does not renumber).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl Offset {
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A fencing token: the number of a lease claim. A holder acting with an epoch lower than the
/// highest one it finds in a series is a zombie and must stop.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_validated() {
        assert!(StreamId::new("orders").is_ok());
        assert!(StreamId::new("orders~3").is_ok());
        assert!(StreamId::new("a.b_c-d").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(201)] {
            assert!(StreamId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn partitions() {
        let s = StreamId::new("orders").expect("valid");
        let p = s.partition(3);
        assert_eq!(p.as_str(), "orders~3");
        assert_eq!(p.address(), "orders");
        assert_eq!(p.partition_number(), Some(3));
        assert_eq!(p.partition(4).as_str(), "orders~4");
        assert_eq!(s.partition_number(), None);
    }

    #[test]
    fn stream_id_serde_rejects_invalid() {
        assert!(serde_json::from_str::<StreamId>("\"a/b\"").is_err());
        let id: StreamId = serde_json::from_str("\"ok\"").expect("valid");
        assert_eq!(id.as_str(), "ok");
    }
}
