//! Latest value per key, from a stream that is compacted by **snapshot** (`mqtt-retained`:
//! topic → retained message; `mqtt-wills`: connection → registered will).
//!
//! Such a stream holds changes (set or clear a key) in offset order. When it has grown well
//! past the live set, the adapter holding the stream's compaction lease appends a *snapshot*:
//! one copy of every live value as of offset `S` (everything before `S` applied), each copy
//! marked with `S`; then it trims the stream to `S`. A reader applies a snapshot copy only if
//! its key did not change at an offset `>= S` (a change other adapters stored between `S` and
//! the copies is newer and wins), so a reader that read everything and one that starts at the
//! trimmed start end with the same values. Copies written twice (a compactor that died before
//! trimming, and another that snapshots again) are harmless: same rule.

use std::{collections::BTreeMap, time::Duration};

use wharf_log::Log;
use wharf_log_format::{Offset, Record, StreamId};

/// Below this many records a stream is not compacted.
pub const COMPACT_MIN_RECORDS: u64 = 1024;
/// Snapshot copies appended per durable append.
const SNAPSHOT_CHUNK: usize = 512;

/// The live values of a snapshot-compacted stream, with what it takes to apply changes and
/// snapshot copies in any order the stream holds them.
#[derive(Debug)]
pub struct Keyed<K, V> {
    /// Each live key's value, with the offset of the change that set it (for a value taken
    /// from a snapshot: just below the offset the snapshot is as of).
    values: BTreeMap<K, (u64, V)>,
    /// Keys cleared, with the offset of the clearing record: an older snapshot copy read after
    /// it must not bring the value back. Forgotten once a snapshot newer than them is read.
    cleared: BTreeMap<K, u64>,
}

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Self {
            values: BTreeMap::new(),
            cleared: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V> Keyed<K, V> {
    /// A change at `offset`: `key` now holds `value`.
    pub fn set(&mut self, key: K, value: V, offset: u64) {
        self.cleared.remove(&key);
        self.values.insert(key, (offset, value));
    }

    /// A change at `offset`: `key` holds nothing.
    pub fn clear(&mut self, key: K, offset: u64) {
        self.values.remove(&key);
        self.cleared.insert(key, offset);
    }

    /// A snapshot copy as of `as_of`: applied unless `key` changed at or after `as_of`.
    pub fn snapshot(&mut self, key: K, value: V, as_of: u64) {
        self.cleared.retain(|_, at| *at >= as_of);
        let changed_since = self.values.get(&key).is_some_and(|(at, _)| *at >= as_of)
            || self.cleared.contains_key(&key);
        if !changed_since {
            self.values.insert(key, (as_of.saturating_sub(1), value));
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.values.get(key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.values.iter().map(|(k, (_, v))| (k, v))
    }

    /// Drop the values `keep` says no (expired ones): nothing in the stream changes.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.values.retain(|k, (_, v)| keep(k, v));
    }
}

/// Whether `stream` is due for compaction with `live` values: it holds at least
/// [`COMPACT_MIN_RECORDS`] records and more than twice `live`.
pub fn due(log: &Log, stream: &StreamId, live: usize) -> bool {
    log.stream(stream).is_some_and(|s| {
        let records = s.next_offset - s.start_offset;
        records >= COMPACT_MIN_RECORDS.max(2 * live as u64)
    })
}

/// Compact `stream`: under the lease `lease` (skipped if another process holds it), append
/// `copies` — the live values as of `as_of`, marked so — then trim the stream to `as_of`.
/// True if it did.
pub async fn snapshot_and_trim(
    log: &Log,
    stream: &StreamId,
    lease: &str,
    holder: &str,
    ttl: Duration,
    as_of: u64,
    copies: Vec<Record>,
) -> wharf_log::Result<bool> {
    let Some(lease) = log.acquire_lease(lease, holder, ttl).await? else {
        return Ok(false);
    };
    let start = log.stream(stream).map_or(0, |s| s.start_offset);
    if as_of <= start {
        let _ = lease.release().await;
        return Ok(false); // someone compacted past it meanwhile
    }
    let kept = copies.len();
    for chunk in copies.chunks(SNAPSHOT_CHUNK) {
        if !lease.is_valid() {
            // Too slow: another adapter may be at it. The copies written are harmless.
            return Ok(false);
        }
        log.append_many(stream, chunk.to_vec()).await?;
    }
    if !lease.is_valid() {
        return Ok(false);
    }
    log.trim(BTreeMap::from([(stream.clone(), Offset(as_of))]))
        .await?;
    tracing::info!(%stream, from = start, to = as_of, kept, "compacted");
    let _ = lease.release().await;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot copy loses to a change at or after the offset it is as of (stored by
    /// another adapter between the snapshot's reading and its writing), and wins otherwise.
    #[test]
    fn snapshot_copies_lose_to_newer_changes() {
        let mut k = Keyed::default();
        k.set("a", "old", 3);
        k.set("b", "old", 4);
        k.set("c", "old", 5);
        k.clear("e", 6);
        // Stored after the snapshot's head (10), before its copies.
        k.set("a", "new", 12);
        k.clear("b", 13);
        // ("e" was cleared before 10: a snapshot as of 10 stands for that state.)
        for key in ["a", "b", "c", "d", "e"] {
            k.snapshot(key, "snap", 10);
        }
        let now: Vec<(&str, &str)> = k.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            now,
            [("a", "new"), ("c", "snap"), ("d", "snap"), ("e", "snap")]
        );
        // A later snapshot's copy replaces one from an earlier snapshot.
        k.snapshot("c", "later", 20);
        assert_eq!(k.get(&"c"), Some(&"later"));
    }
}
