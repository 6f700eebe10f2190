//! Per-message acknowledgement state: a committed offset plus acknowledged ranges beyond it, as
//! Pulsar subscriptions keep. Merging two ack sets is a union, so concurrent ackers on
//! different processes can reconcile by merging (acknowledgement is a monotone fact).

use serde::{Deserialize, Serialize};

use crate::Offset;

/// The set of acknowledged offsets of one cursor.
///
/// Invariants (checked by [`AckSet::is_normal`]): every offset `< committed` is acknowledged;
/// `ranges` are half-open `[start, end)`, sorted, disjoint, non-adjacent, and start strictly
/// after `committed` (a range starting at `committed` is folded into it).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct AckSet {
    pub committed: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<(u64, u64)>,
}

impl AckSet {
    /// An ack set where everything before `committed` is acknowledged.
    pub fn starting_at(committed: Offset) -> Self {
        Self {
            committed: committed.0,
            ranges: Vec::new(),
        }
    }

    /// First offset not known to be acknowledged.
    pub fn committed(&self) -> Offset {
        Offset(self.committed)
    }

    pub fn is_acked(&self, offset: Offset) -> bool {
        let o = offset.0;
        if o < self.committed {
            return true;
        }
        // ranges are sorted: find the last range starting at or before `o`.
        let idx = self.ranges.partition_point(|&(s, _)| s <= o);
        idx > 0 && o < self.ranges[idx - 1].1
    }

    /// Acknowledge one offset. Returns false if it was already acknowledged.
    pub fn ack(&mut self, offset: Offset) -> bool {
        self.ack_range(offset.0, offset.0 + 1)
    }

    /// Acknowledge `[start, end)`. Returns false if nothing new was acknowledged.
    pub fn ack_range(&mut self, start: u64, end: u64) -> bool {
        if end <= start || end <= self.committed {
            return false;
        }
        let before = self.clone();
        self.ranges.push((start.max(self.committed), end));
        self.normalize();
        *self != before
    }

    /// Everything below `offset` becomes acknowledged (for trimming and "ack up to").
    pub fn ack_below(&mut self, offset: Offset) -> bool {
        self.ack_range(self.committed, offset.0)
    }

    /// Union with another ack set (commutative, associative, idempotent).
    pub fn merge(&mut self, other: &AckSet) {
        self.committed = self.committed.max(other.committed);
        self.ranges.extend_from_slice(&other.ranges);
        self.normalize();
    }

    /// Offsets in `[from, to)` that are not acknowledged, in order, at most `limit` of them.
    pub fn unacked(&self, from: Offset, to: Offset, limit: usize) -> Vec<Offset> {
        let mut out = Vec::new();
        let mut o = from.0.max(self.committed);
        let mut idx = self.ranges.partition_point(|&(_, e)| e <= o);
        while o < to.0 && out.len() < limit {
            match self.ranges.get(idx) {
                Some(&(s, e)) if s <= o => {
                    o = e;
                    idx += 1;
                }
                _ => {
                    out.push(Offset(o));
                    o += 1;
                }
            }
        }
        out
    }

    fn normalize(&mut self) {
        let committed = self.committed;
        self.ranges.retain(|&(s, e)| e > committed && e > s);
        for r in &mut self.ranges {
            r.0 = r.0.max(committed);
        }
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        if let Some(&(s, e)) = merged.first()
            && s <= self.committed
        {
            self.committed = e;
            merged.remove(0);
        }
        self.ranges = merged;
    }

    /// Whether the invariants hold (used by decoders and property tests).
    pub fn is_normal(&self) -> bool {
        let mut prev_end = self.committed;
        for &(s, e) in &self.ranges {
            if s <= prev_end || e <= s {
                return false;
            }
            prev_end = e;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn out_of_order_acks_fold_into_committed() {
        let mut a = AckSet::default();
        assert!(a.ack(Offset(2)));
        assert!(a.ack(Offset(1)));
        assert_eq!(a.committed, 0);
        assert_eq!(a.ranges, vec![(1, 3)]);
        assert!(a.ack(Offset(0)));
        assert_eq!(a.committed, 3);
        assert!(a.ranges.is_empty());
        assert!(!a.ack(Offset(1)), "re-ack is a no-op");
        assert_eq!(
            a.unacked(Offset(0), Offset(6), 10),
            vec![Offset(3), Offset(4), Offset(5)]
        );
    }

    fn model_strategy() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(0u64..64, 0..80)
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(acks in model_strategy(), other in model_strategy()) {
            let mut a = AckSet::default();
            let mut model = BTreeSet::new();
            for &o in &acks {
                prop_assert_eq!(a.ack(Offset(o)), model.insert(o));
                prop_assert!(a.is_normal());
            }
            for o in 0..70 {
                prop_assert_eq!(a.is_acked(Offset(o)), model.contains(&o));
            }
            let expected: Vec<Offset> =
                (0..70).filter(|o| !model.contains(o)).take(5).map(Offset).collect();
            prop_assert_eq!(a.unacked(Offset(0), Offset(70), 5), expected);

            // merge is a union, and commutative
            let mut b = AckSet::default();
            for &o in &other { b.ack(Offset(o)); model.insert(o); }
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            prop_assert!(ab.is_normal());
            for o in 0..70 {
                prop_assert_eq!(ab.is_acked(Offset(o)), model.contains(&o));
            }
        }
    }
}
