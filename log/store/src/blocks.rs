//! Competing readers of one stream across processes: the stream's offsets are cut into
//! **blocks** of a fixed size; a process takes a block by lease (`<prefix>.<n>`), reads only
//! the blocks it holds, and acknowledges what it handled in one cursor shared by every process
//! (commits merge, so no one fences anyone). A block fully written and fully acknowledged is
//! retired (its lease objects deleted); a block whose holder died is taken by another process
//! once the lease expires, and its records not yet acknowledged are read again there.
//!
//! This is how AMQP queues and MQTT shared subscriptions spread one stream over consumers on
//! several adapters. Order is kept within a block, not across blocks held by different
//! processes. A process holds at most [`MAX_BLOCKS`] blocks at once, so with a backlog the
//! others get the next ones; at the tail of a stream, the block being written is served by
//! whoever took it.

use std::{collections::BTreeMap, fmt, ops::Range, time::Duration};

use tokio::sync::watch;
use wharf_log_format::{Offset, StoredRecord, StreamId};

use crate::{Cursor, Lease, Log, Result};

/// Blocks one process holds at once (the rest are left to the others).
pub const MAX_BLOCKS: usize = 2;
/// Leases tried per read when looking for a block to take.
const MAX_TRIES: usize = 8;
/// After finding every candidate block held by others, wait this long before asking again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A block of the stream this process holds the lease of.
struct Block {
    lease: Lease,
    /// Next offset of the block to read.
    pos: Offset,
}

/// One process's share of a stream read by competing processes. See the module docs.
pub struct Blocks {
    log: Log,
    stream: StreamId,
    /// Lease names are `<prefix>.<block number>`.
    prefix: String,
    holder: String,
    ttl: Duration,
    size: u64,
    /// The acknowledgements, shared by every process (commits merge).
    cursor: Cursor,
    held: BTreeMap<u64, Block>,
    /// The last read found nothing new.
    at_end: bool,
    /// No block could be taken: try again after this (the log clock's ms; others hold them
    /// until their leases, judged on the same clock, expire).
    retry_at: Option<i64>,
    committed: watch::Receiver<u64>,
    poll: tokio::time::Interval,
}

impl fmt::Debug for Blocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocks")
            .field("stream", &self.stream)
            .field("prefix", &self.prefix)
            .field("held", &self.held.keys().collect::<Vec<_>>())
            .field("committed", &self.cursor.committed())
            .finish()
    }
}

impl Log {
    /// Read `cursor`'s stream competing with other processes by blocks of `size` offsets,
    /// leased as `<prefix>.<n>` by `holder` for `ttl`.
    pub fn blocks(
        &self,
        cursor: Cursor,
        prefix: &str,
        holder: &str,
        ttl: Duration,
        size: u64,
    ) -> Blocks {
        let mut poll = tokio::time::interval(self.settings().poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Blocks {
            log: self.clone(),
            stream: cursor.stream().clone(),
            prefix: prefix.to_string(),
            holder: holder.to_string(),
            ttl,
            size: size.max(1),
            cursor,
            held: BTreeMap::new(),
            at_end: false,
            retry_at: None,
            committed: self.shared.committed.subscribe(),
            poll,
        }
    }
}

impl Blocks {
    /// Acknowledge `offset` (committed with the next [`Blocks::commit`]).
    pub fn ack(&mut self, offset: Offset) {
        self.cursor.ack(offset);
    }

    /// Whether the last read found nothing new (wait with [`Blocks::wait`] before reading
    /// again).
    pub fn at_end(&self) -> bool {
        self.at_end
    }

    /// The offsets of block `n`.
    fn range(&self, n: u64) -> Range<u64> {
        n * self.size..(n + 1) * self.size
    }

    fn next_offset(&self) -> u64 {
        self.log.stream(&self.stream).map_or(0, |s| s.next_offset)
    }

    /// Up to `want` records from the blocks held, taking the next block with records not yet
    /// acknowledged when those run dry. Acknowledged records are left out, and so are those
    /// `skip` says this process has already (in flight).
    pub async fn read(&mut self, want: usize, skip: impl Fn(Offset) -> bool) -> Vec<StoredRecord> {
        let mut out = Vec::new();
        let mut got_any = false;
        loop {
            let next = self.next_offset();
            let numbers: Vec<u64> = self.held.keys().copied().collect();
            for n in numbers {
                let left = want.saturating_sub(out.len());
                let end = self.range(n).end.min(next);
                let Some(b) = self.held.get_mut(&n) else {
                    continue;
                };
                if left == 0 || b.pos.0 >= end {
                    continue;
                }
                let limit = left.min((end - b.pos.0) as usize);
                match self.log.read(&self.stream, b.pos, limit).await {
                    Ok(records) => {
                        for r in records {
                            if r.offset.0 >= end {
                                break;
                            }
                            b.pos = r.offset.next();
                            got_any = true;
                            if self.cursor.is_acked(r.offset) || skip(r.offset) {
                                continue;
                            }
                            out.push(r);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(stream = %self.stream, block = n, error = %e, "block read failed")
                    }
                }
            }
            if out.len() >= want || !self.take_block(next).await {
                break;
            }
        }
        self.at_end = !got_any;
        out
    }

    /// Take the next block with records not yet acknowledged if every held one is read to
    /// the end and there is room for one more. True if one was taken.
    async fn take_block(&mut self, next: u64) -> bool {
        let drained = self
            .held
            .iter()
            .all(|(n, b)| b.pos.0 >= self.range(*n).end.min(next));
        let now = self.log.clock().now_ms();
        let may_try = self.retry_at.is_none_or(|t| now >= t);
        if !drained || self.held.len() >= MAX_BLOCKS || next == 0 || !may_try {
            return false;
        }
        // Candidates: blocks with a record not acknowledged, in order. Finished blocks are
        // skipped without counting, so one old record held elsewhere does not hide the rest.
        let mut from = self.cursor.committed().0;
        let mut tries = 0;
        let mut contended = false;
        while tries < MAX_TRIES {
            let Some(first) = self
                .cursor
                .acks()
                .unacked(Offset(from), Offset(next), 1)
                .first()
                .copied()
            else {
                break;
            };
            let n = first.0 / self.size;
            let Range { start, end } = self.range(n);
            from = end;
            if self.held.contains_key(&n) {
                continue;
            }
            tries += 1;
            let name = format!("{}.{n}", self.prefix);
            match self.log.acquire_lease(&name, &self.holder, self.ttl).await {
                Ok(Some(lease)) => {
                    // Others may have acknowledged some of it: see their acks first.
                    if let Err(e) = self.cursor.reload().await {
                        tracing::warn!(stream = %self.stream, error = %e, "cursor reload failed");
                    }
                    let pos = Offset(start);
                    self.held.insert(n, Block { lease, pos });
                    self.retry_at = None;
                    return true;
                }
                Ok(None) => contended = true,
                Err(e) => {
                    tracing::warn!(stream = %self.stream, lease = name, error = %e, "block lease");
                    contended = true;
                    break;
                }
            }
        }
        if contended {
            // Others hold what there is: ask again in a while, not on every read.
            self.retry_at = Some(now + RETRY_AFTER.as_millis() as i64);
        }
        false
    }

    /// Wait until a read may find more: a segment committed in this process, or a poll
    /// interval (after which the log is refreshed from the store). Cancel-safe.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.committed.changed() => {}
            _ = self.poll.tick() => {
                if let Err(e) = self.log.shared.poll().await {
                    tracing::warn!(stream = %self.stream, error = %e, "log refresh failed");
                }
            }
        }
        self.at_end = false;
    }

    /// Read again at the next [`Blocks::read`] even if the last one found nothing (something
    /// may have arrived: a caller waiting on several readers at once learnt it from another).
    pub fn rearm(&mut self) {
        self.at_end = false;
    }

    /// Renew the leases of the blocks held (every `ttl / 3` or so). Returns the offset
    /// ranges of blocks lost to another process: whatever of them this process still has
    /// queued is theirs to deliver now.
    pub async fn renew(&mut self) -> Vec<Range<u64>> {
        let mut lost = Vec::new();
        for (n, b) in self.held.iter_mut() {
            if let Err(e) = b.lease.renew(self.ttl).await {
                tracing::warn!(stream = %self.stream, block = n, error = %e, "block lease lost");
                lost.push(*n);
            }
        }
        lost.into_iter()
            .map(|n| {
                self.held.remove(&n);
                self.range(n)
            })
            .collect()
    }

    /// Whether a block held is fully written and fully acknowledged: [`Blocks::commit`]
    /// would retire it and make room for the next (call it now rather than at the next tick
    /// when the readers wait for more).
    pub fn has_finished_block(&self) -> bool {
        let next = self.next_offset();
        self.held.keys().any(|&n| self.finished(n, next))
    }

    /// Whether block `n` is fully written (`next`: the stream's next offset) and fully
    /// acknowledged.
    fn finished(&self, n: u64, next: u64) -> bool {
        let Range { start, end } = self.range(n);
        next >= end
            && self
                .cursor
                .acks()
                .unacked(Offset(start), Offset(end), 1)
                .is_empty()
    }

    /// Commit the acknowledgements (if any are new) and retire the blocks fully written and
    /// fully acknowledged.
    pub async fn commit(&mut self) -> Result<()> {
        if self.cursor.is_dirty() {
            self.cursor.commit().await?;
        }
        if self.held.is_empty() {
            return Ok(());
        }
        let next = self.next_offset();
        let done: Vec<u64> = self
            .held
            .keys()
            .copied()
            .filter(|&n| self.finished(n, next))
            .collect();
        for n in done {
            // Finished for good: its lease objects go too.
            if let Some(b) = self.held.remove(&n) {
                b.lease.retire().await;
            }
            self.at_end = false;
        }
        Ok(())
    }

    /// Stop reading: commit, and release the blocks held so that others take them at once.
    pub async fn close(mut self) {
        if let Err(e) = self.cursor.commit().await {
            tracing::warn!(stream = %self.stream, error = %e, "cursor commit on close failed");
        }
        for (_, b) in std::mem::take(&mut self.held) {
            if let Err(e) = b.lease.release().await {
                tracing::debug!(stream = %self.stream, error = %e, "block release");
            }
        }
    }
}
