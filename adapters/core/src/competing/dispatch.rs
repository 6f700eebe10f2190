//! The competing consumer's decisions, without I/O: which member gets the next message, what a
//! member's outcome does to it, what a leaving member gives back. The task around it
//! ([`super`]) reads the store, sends, and carries out what this returns.
//!
//! Messages are known by their position (`wharf_log::pack_position`: a stream index and an
//! offset). Every position is in at most one place: waiting (`ready`, in delivery order) or
//! with one member (`inflight`).

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    ops::Range,
};

use wharf_log::unpack_position as unpack;

/// A message waiting for, or with, a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending<T> {
    pub position: u64,
    pub item: T,
    /// Deliveries that failed (counted towards the address's `max_delivery`).
    pub delivery_count: u32,
    /// Members that said they cannot take it.
    avoid: Vec<u64>,
}

impl<T> Pending<T> {
    pub fn new(position: u64, item: T) -> Self {
        Self {
            position,
            item,
            delivery_count: 0,
            avoid: Vec::new(),
        }
    }
}

/// What a member did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: acknowledged for every adapter.
    Done,
    /// Not handled: first in line again. `failed` counts as a failed delivery (toward the
    /// address's `max_delivery`); `elsewhere`: not to this member again.
    Again { failed: bool, elsewhere: bool },
    /// Refused: to the dead-letter address (or dropped when there is none).
    Refused,
}

/// What the task must do after a [`Dispatcher::settle`].
#[derive(Debug, PartialEq, Eq)]
pub enum Settled<T> {
    /// Acknowledge the position in the shared cursor.
    Ack(u64),
    /// Dead-letter it (then acknowledge it).
    DeadLetter(Pending<T>),
    /// Nothing (queued again, or not known here any more).
    Nothing,
}

/// Who gets what. See the module docs.
#[derive(Debug)]
pub struct Dispatcher<T> {
    /// Members by id, with their credit (messages they may be sent before asking again).
    members: BTreeMap<u64, u32>,
    ready: VecDeque<Pending<T>>,
    /// Positions with a member, and which.
    inflight: HashMap<u64, (u64, Pending<T>)>,
    /// Every position in `ready` or `inflight`.
    held: HashSet<u64>,
    /// Round robin: the next member id to try first.
    next: u64,
}

impl<T> Default for Dispatcher<T> {
    fn default() -> Self {
        Self {
            members: BTreeMap::new(),
            ready: VecDeque::new(),
            inflight: HashMap::new(),
            held: HashSet::new(),
            next: 0,
        }
    }
}

impl<T> Dispatcher<T> {
    pub fn join(&mut self, member: u64, credit: u32) {
        self.members.insert(member, credit);
    }

    /// Set a member's credit (AMQP flow: the credit is what the link has now, not an increment).
    pub fn set_credit(&mut self, member: u64, credit: u32) {
        if let Some(c) = self.members.get_mut(&member) {
            *c = credit;
        }
    }

    pub fn credit(&self, member: u64) -> u32 {
        self.members.get(&member).copied().unwrap_or(0)
    }

    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// A member leaves: what it had not settled goes back first in line, in position order,
    /// each counted as a failed delivery.
    pub fn leave(&mut self, member: u64) {
        self.members.remove(&member);
        let mut back: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, (m, _))| *m == member)
            .map(|(p, _)| *p)
            .collect();
        // Newest first onto the front, so they go out again in order.
        back.sort_unstable_by(|a, b| b.cmp(a));
        for p in back {
            if let Some((_, mut pending)) = self.inflight.remove(&p) {
                pending.delivery_count += 1;
                self.ready.push_front(pending);
            }
        }
    }

    /// Whether `position` is waiting or with a member here.
    pub fn holds(&self, position: u64) -> bool {
        self.held.contains(&position)
    }

    /// Queue a message read from the store, last in line.
    pub fn push(&mut self, position: u64, item: T) {
        if self.held.insert(position) {
            self.ready.push_back(Pending::new(position, item));
        }
    }

    /// Messages waiting for a member.
    pub fn waiting(&self) -> usize {
        self.ready.len()
    }

    /// Whether reading more is useful: fewer than `read_ahead` waiting and a member with
    /// credit that `room` says can take one.
    pub fn wants_more(&self, read_ahead: usize, room: impl Fn(u64) -> bool) -> bool {
        self.ready.len() < read_ahead && self.members.iter().any(|(&m, &c)| c > 0 && room(m))
    }

    /// The message first in line.
    pub fn front(&self) -> Option<&Pending<T>> {
        self.ready.front()
    }

    /// Take the message first in line out (expired, say: the caller dead-letters it).
    pub fn pop_front(&mut self) -> Option<Pending<T>> {
        let p = self.ready.pop_front()?;
        self.held.remove(&p.position);
        Some(p)
    }

    /// The next delivery: the message first in line and the member it goes to — the next in
    /// round robin with credit that `room` says can take one and that did not refuse it. Its
    /// credit is taken; call [`Dispatcher::sent`] or [`Dispatcher::unsent`] with the result.
    /// `None` when nothing waits or no member can take the first in line (order is kept: the
    /// messages behind it wait too).
    pub fn next(&mut self, room: impl Fn(u64) -> bool) -> Option<(u64, Pending<T>)> {
        let front = self.ready.front()?;
        let member = self
            .members
            .range(self.next..)
            .chain(self.members.range(..self.next))
            .find(|&(m, &c)| c > 0 && room(*m) && !front.avoid.contains(m))
            .map(|(&m, _)| m)?;
        self.next = member + 1;
        if let Some(c) = self.members.get_mut(&member) {
            *c -= 1;
        }
        let pending = self.ready.pop_front()?;
        Some((member, pending))
    }

    /// The delivery [`Dispatcher::next`] chose reached the member.
    pub fn sent(&mut self, member: u64, pending: Pending<T>) {
        self.inflight.insert(pending.position, (member, pending));
    }

    /// It did not (the member's channel is full or gone): first in line again, and the
    /// member gets nothing more until it asks (`gone`) or its credit is given back.
    pub fn unsent(&mut self, member: u64, pending: Pending<T>, gone: bool) {
        self.ready.push_front(pending);
        if let Some(c) = self.members.get_mut(&member) {
            if gone {
                *c = 0;
            } else {
                *c = c.saturating_add(1);
            }
        }
    }

    /// A member settled `position`. `max_delivery`: the address's limit on failed deliveries
    /// (reaching it dead-letters the message). A position not (or no longer) with the member
    /// is still acknowledged when done: someone handled it.
    pub fn settle(
        &mut self,
        member: u64,
        position: u64,
        outcome: Outcome,
        max_delivery: Option<u32>,
    ) -> Settled<T> {
        let pending = match self.inflight.get(&position) {
            Some((m, _)) if *m == member => self.inflight.remove(&position).map(|(_, p)| p),
            _ => None,
        };
        let Some(mut pending) = pending else {
            return match outcome {
                Outcome::Done => Settled::Ack(position),
                _ => Settled::Nothing,
            };
        };
        match outcome {
            Outcome::Done => {
                self.held.remove(&position);
                Settled::Ack(position)
            }
            Outcome::Refused => {
                self.held.remove(&position);
                Settled::DeadLetter(pending)
            }
            Outcome::Again { failed, elsewhere } => {
                if failed {
                    pending.delivery_count += 1;
                }
                if elsewhere {
                    pending.avoid.push(member);
                }
                if failed && max_delivery.is_some_and(|max| pending.delivery_count >= max) {
                    self.held.remove(&position);
                    Settled::DeadLetter(pending)
                } else {
                    self.ready.push_front(pending);
                    Settled::Nothing
                }
            }
        }
    }

    /// A dead-letter append failed: the message waits again, last in line.
    pub fn retry_later(&mut self, pending: Pending<T>) {
        self.held.insert(pending.position);
        self.ready.push_back(pending);
    }

    /// Blocks of stream `stream` were lost to another adapter: forget what of them waits here
    /// (theirs to deliver now). What members have stays with them; their outcomes still count.
    pub fn lost(&mut self, stream: usize, ranges: &[Range<u64>]) {
        let gone = |p: u64| {
            let (s, o) = unpack(p);
            s == stream && ranges.iter().any(|r| r.contains(&o))
        };
        let held = &mut self.held;
        self.ready.retain(|pending| {
            let keep = !gone(pending.position);
            if !keep {
                held.remove(&pending.position);
            }
            keep
        });
    }

    /// Stop serving (no members left here): forget everything waiting; it is the other
    /// adapters' to deliver.
    pub fn clear(&mut self) {
        self.ready.clear();
        self.inflight.clear();
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_log::pack_position as pack;

    fn all(_: u64) -> bool {
        true
    }

    fn deliver_all(d: &mut Dispatcher<&'static str>) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while let Some((m, p)) = d.next(all) {
            out.push((m, p.position));
            d.sent(m, p);
        }
        out
    }

    #[test]
    fn round_robin_within_credit_in_order() {
        let mut d = Dispatcher::default();
        d.join(1, 2);
        d.join(2, 1);
        for p in 0..5 {
            d.push(p, "m");
        }
        assert_eq!(deliver_all(&mut d), vec![(1, 0), (2, 1), (1, 2)]);
        // Out of credit: the rest waits.
        assert_eq!(d.waiting(), 2);
        assert!(!d.wants_more(10, all));
        d.set_credit(2, 5);
        assert_eq!(deliver_all(&mut d), vec![(2, 3), (2, 4)]);
        assert!(d.wants_more(10, all));
        assert!(!d.wants_more(0, all));
    }

    #[test]
    fn room_is_asked_per_member() {
        let mut d = Dispatcher::default();
        d.join(1, u32::MAX);
        d.join(2, u32::MAX);
        for p in 0..3 {
            d.push(p, "m");
        }
        let mut got = Vec::new();
        while let Some((m, p)) = d.next(|m| m == 2) {
            got.push((m, p.position));
            d.sent(m, p);
        }
        assert_eq!(got, vec![(2, 0), (2, 1), (2, 2)]);
        assert!(!d.wants_more(10, |_| false));
    }

    #[test]
    fn a_full_channel_puts_the_message_back_first() {
        let mut d = Dispatcher::default();
        d.join(1, 3);
        d.push(7, "a");
        d.push(8, "b");
        let (m, p) = d.next(all).expect("a delivery");
        d.unsent(m, p, false);
        assert_eq!(d.credit(1), 3, "credit given back");
        assert_eq!(d.front().map(|p| p.position), Some(7));
        let (m, p) = d.next(all).expect("a delivery");
        d.unsent(m, p, true);
        assert_eq!(d.credit(1), 0, "a gone member gets nothing more");
        assert_eq!(d.front().map(|p| p.position), Some(7));
    }

    #[test]
    fn a_leaving_member_gives_back_in_order_counted() {
        let mut d = Dispatcher::default();
        d.join(1, 10);
        for p in [3, 1, 2] {
            d.push(p, "m");
        }
        deliver_all(&mut d);
        d.push(9, "later");
        d.leave(1);
        assert!(!d.has_members());
        let order: Vec<(u64, u32)> = std::iter::from_fn(|| d.pop_front())
            .map(|p| (p.position, p.delivery_count))
            .collect();
        assert_eq!(order, vec![(1, 1), (2, 1), (3, 1), (9, 0)]);
    }

    #[test]
    fn outcomes() {
        let mut d = Dispatcher::default();
        d.join(1, 10);
        d.join(2, 10);
        for p in 0..4 {
            d.push(p, "m");
        }
        deliver_all(&mut d); // 0,2 → 1; 1,3 → 2
        assert_eq!(d.settle(1, 0, Outcome::Done, None), Settled::Ack(0));
        assert!(!d.holds(0));
        // Not this member's: no effect unless done.
        assert_eq!(
            d.settle(
                1,
                1,
                Outcome::Again {
                    failed: true,
                    elsewhere: false
                },
                None
            ),
            Settled::Nothing
        );
        assert!(d.holds(1));
        match d.settle(2, 1, Outcome::Refused, None) {
            Settled::DeadLetter(p) => assert_eq!(p.position, 1),
            other => panic!("{other:?}"),
        }
        // Released: first in line again, not counted; undeliverable here: not to member 1.
        let again = Outcome::Again {
            failed: false,
            elsewhere: true,
        };
        assert_eq!(d.settle(1, 2, again, Some(1)), Settled::Nothing);
        assert_eq!(
            d.front().map(|p| (p.position, p.delivery_count)),
            Some((2, 0))
        );
        let (m, p) = d.next(|m| m == 1 || m == 2).expect("member 2 takes it");
        assert_eq!((m, p.position), (2, 2));
        d.sent(m, p);
        // Failed twice with max_delivery 2: dead-lettered.
        let failed = Outcome::Again {
            failed: true,
            elsewhere: false,
        };
        assert_eq!(d.settle(2, 2, failed, Some(2)), Settled::Nothing);
        let (m, p) = d.next(all).expect("again");
        assert_eq!((m, p.position, p.delivery_count), (2, 2, 1));
        d.sent(m, p);
        match d.settle(2, 2, failed, Some(2)) {
            Settled::DeadLetter(p) => assert_eq!((p.position, p.delivery_count), (2, 2)),
            other => panic!("{other:?}"),
        }
        // Done for a position no longer here is still acknowledged.
        assert_eq!(d.settle(1, 42, Outcome::Done, None), Settled::Ack(42));
    }

    #[test]
    fn avoided_by_everyone_waits_and_blocks_the_line() {
        let mut d = Dispatcher::default();
        d.join(1, 10);
        d.push(0, "m");
        d.push(1, "n");
        let (m, p) = d.next(all).expect("delivered");
        d.sent(m, p);
        let here = Outcome::Again {
            failed: false,
            elsewhere: true,
        };
        d.settle(1, 0, here, None);
        assert!(d.next(all).is_none());
        d.join(2, 10);
        assert_eq!(d.next(all).map(|(m, p)| (m, p.position)), Some((2, 0)));
    }

    #[test]
    fn lost_blocks_forget_what_waits_of_that_stream() {
        let mut d = Dispatcher::default();
        d.join(1, 1);
        for (s, o) in [(0, 5), (0, 6), (1, 5), (0, 20)] {
            d.push(pack(s, o), "m");
        }
        let (m, p) = d.next(all).expect("one delivered");
        assert_eq!(p.position, pack(0, 5));
        d.sent(m, p);
        let lost = [0..10, 100..110];
        d.lost(0, &lost);
        let left: Vec<u64> = std::iter::from_fn(|| d.pop_front())
            .map(|p| p.position)
            .collect();
        assert_eq!(left, vec![pack(1, 5), pack(0, 20)]);
        assert!(d.holds(pack(0, 5)), "still with the member");
        assert!(!d.holds(pack(0, 6)));
        assert_eq!(
            d.settle(1, pack(0, 5), Outcome::Done, None),
            Settled::Ack(pack(0, 5))
        );
    }

    #[test]
    fn positions_are_held_once() {
        let mut d = Dispatcher::default();
        d.push(1, "a");
        d.push(1, "again");
        assert_eq!(d.waiting(), 1);
        d.clear();
        assert!(!d.holds(1));
        assert_eq!(d.waiting(), 0);
    }
}
