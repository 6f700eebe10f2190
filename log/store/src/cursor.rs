//! Durable consumer positions with per-message acknowledgement.
//!
//! A cursor is a series of create-only generations (`cursors/<stream>/<name>/<gen>.json`).
//! Committing writes generation `g + 1`. If another process took it first, its ack set is
//! merged into ours (acknowledgement is a monotone fact, so the union is right) and we try
//! `g + 2` — unless it carries a higher fencing epoch, in which case we are a zombie and stop.

use std::{collections::BTreeSet, fmt};

use futures::TryStreamExt;
use object_store::ObjectStore;

use wharf_log_format::{
    Epoch, Offset, StreamId, acks::AckSet, catalog::valid_name, cursor::CursorState,
    json::Versioned,
};

use crate::{
    Lease, Log, LogError, Result, paths,
    series::{Series, Write},
    store::retry,
};

/// Generations kept behind the current one (older ones are deleted after a commit).
const KEEP_GENERATIONS: u64 = 2;

/// One process's handle on a durable cursor. See the module docs.
pub struct Cursor {
    log: Log,
    stream: StreamId,
    name: String,
    generation: u64,
    epoch: Epoch,
    acks: AckSet,
    meta: Option<serde_json::Value>,
    dirty: bool,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("stream", &self.stream)
            .field("name", &self.name)
            .field("generation", &self.generation)
            .field("epoch", &self.epoch)
            .field("committed", &self.acks.committed)
            .finish()
    }
}

impl Log {
    /// Open (or create, starting at the stream's start) the cursor `name` on `stream`.
    pub async fn cursor(&self, stream: &StreamId, name: &str) -> Result<Cursor> {
        let start = self.stream(stream).map_or(0, |s| s.start_offset);
        self.cursor_from(stream, name, Offset(start)).await
    }

    /// Open the cursor `name`; a cursor that does not exist yet starts at `start` (use the
    /// stream's next offset for "only new records").
    pub async fn cursor_from(
        &self,
        stream: &StreamId,
        name: &str,
        start: Offset,
    ) -> Result<Cursor> {
        if !valid_name(name) {
            return Err(LogError::invalid(
                "cursor name",
                format!("{name:?} may only contain A-Z a-z 0-9 . _ - and must not start with '.'"),
            ));
        }
        let mut cursor = Cursor {
            log: self.clone(),
            stream: stream.clone(),
            name: name.to_string(),
            generation: 0,
            epoch: Epoch(0),
            acks: AckSet::starting_at(start),
            meta: None,
            dirty: false,
        };
        if let Some((n, state)) = cursor.series().latest::<CursorState>().await? {
            cursor.generation = n;
            cursor.epoch = state.epoch;
            cursor.acks = state.acks;
            cursor.meta = state.meta;
        }
        Ok(cursor)
    }

    /// [`Log::cursor_from`] for a cursor that readers on other processes may resume: one that
    /// does not exist yet is committed at `start` before it is returned, so every process
    /// starts it there — not at whatever head the next one to open it sees, had this process
    /// died before its first commit.
    pub async fn cursor_starting_at(
        &self,
        stream: &StreamId,
        name: &str,
        start: Offset,
    ) -> Result<Cursor> {
        let mut cursor = self.cursor_from(stream, name, start).await?;
        cursor.create().await?;
        Ok(cursor)
    }
}

impl Log {
    /// The names of the cursors on `stream` that start with `prefix` (one LIST of the
    /// stream's cursors), sorted.
    pub async fn cursor_names(&self, stream: &StreamId, prefix: &str) -> Result<Vec<String>> {
        let store: &dyn ObjectStore = self.store().object_store.as_ref();
        let dir = paths::cursors_dir(stream);
        let listed: Vec<_> = retry(self.settings(), &dir, || async {
            store.list(Some(&dir)).try_collect::<Vec<_>>().await
        })
        .await
        .map_err(|e| LogError::store(&dir, e))?;
        let names: BTreeSet<String> = listed
            .iter()
            .filter_map(|meta| {
                let parts: Vec<_> = meta.location.parts().collect();
                let name = parts.get(parts.len().checked_sub(2)?)?.as_ref();
                name.starts_with(prefix).then(|| name.to_string())
            })
            .collect();
        Ok(names.into_iter().collect())
    }
}

impl Cursor {
    /// Delete the cursor as this handle last saw it: every generation up to the one it read or
    /// wrote. A generation another process wrote since survives, and with it the cursor (a
    /// delete never removes state its caller did not see). Best effort: objects a failed
    /// delete leaves behind are deleted by the next one.
    pub async fn delete(self) {
        self.series().prune(self.generation + 1).await;
    }

    fn series(&self) -> Series<'_> {
        Series {
            store: self.log.store().object_store.as_ref(),
            settings: self.log.settings(),
            dir: paths::cursor_dir(&self.stream, &self.name),
        }
    }

    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The acknowledgement state as this handle knows it (including uncommitted acks).
    pub fn acks(&self) -> &AckSet {
        &self.acks
    }

    /// First offset not acknowledged.
    pub fn committed(&self) -> Offset {
        self.acks.committed()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn is_acked(&self, offset: Offset) -> bool {
        self.acks.is_acked(offset)
    }

    /// Whether there are acks not yet committed.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Acknowledge one offset (in memory until [`Cursor::commit`]).
    pub fn ack(&mut self, offset: Offset) -> bool {
        let new = self.acks.ack(offset);
        self.dirty |= new;
        new
    }

    /// Acknowledge everything below `offset`.
    pub fn ack_below(&mut self, offset: Offset) -> bool {
        let new = self.acks.ack_below(offset);
        self.dirty |= new;
        new
    }

    /// Unacknowledged offsets in `[from, to)`, at most `limit`.
    pub fn unacked(&self, from: Offset, to: Offset, limit: usize) -> Vec<Offset> {
        self.acks.unacked(from, to, limit)
    }

    /// Whether the cursor was ever committed (it has a generation in the store).
    pub fn exists(&self) -> bool {
        self.generation > 0
    }

    /// The owner's state kept with the position (see [`CursorState::meta`]).
    pub fn meta(&self) -> Option<&serde_json::Value> {
        self.meta.as_ref()
    }

    /// Replace the owner's state; written by the next [`Cursor::commit`].
    pub fn set_meta(&mut self, meta: Option<serde_json::Value>) {
        self.meta = meta;
        self.dirty = true;
    }

    /// Take the cursor from whoever holds it now, without a lease: commit with an epoch
    /// above every epoch written so far, so the newest taker wins and every earlier holder's
    /// later commits fail with [`LogError::Fenced`]. For owners where the latest claimant must
    /// win at once (an MQTT client reconnecting takes its session over). Merges the latest
    /// committed acks and meta first.
    pub async fn take_over(&mut self) -> Result<()> {
        self.take_over_updating(|meta| meta).await
    }

    /// [`Cursor::take_over`], writing `update(the latest committed meta)` as the meta (it may
    /// be called more than once, on each attempt's latest meta): a new owner records itself
    /// in the same write that fences the previous one.
    pub async fn take_over_updating(
        &mut self,
        mut update: impl FnMut(Option<serde_json::Value>) -> Option<serde_json::Value>,
    ) -> Result<()> {
        loop {
            let mut latest = self.meta.take();
            if let Some((n, theirs)) = self.series().latest::<CursorState>().await?
                && n >= self.generation
            {
                self.generation = n;
                self.epoch = self.epoch.max(theirs.epoch);
                self.acks.merge(&theirs.acks);
                latest = theirs.meta;
            }
            self.meta = update(latest);
            self.epoch = Epoch(self.epoch.0 + 1);
            let n = self.generation + 1;
            match self.series().write(n, &self.state(n)).await? {
                Write::Done => {
                    self.committed_as(n).await;
                    return Ok(());
                }
                // Someone wrote n meanwhile: read it and go above its epoch.
                Write::Lost(_) => {}
            }
        }
    }

    /// Generation `n` is ours: note it and delete one that fell out of the kept window.
    async fn committed_as(&mut self, n: u64) {
        self.generation = n;
        self.dirty = false;
        if n > KEEP_GENERATIONS {
            let old = paths::numbered(
                &paths::cursor_dir(&self.stream, &self.name),
                n - KEEP_GENERATIONS - 1,
            );
            let _ =
                object_store::ObjectStoreExt::delete(self.log.store().object_store.as_ref(), &old)
                    .await;
        }
    }

    fn state(&self, n: u64) -> CursorState {
        CursorState {
            version: CursorState::VERSION,
            stream: self.stream.clone(),
            name: self.name.clone(),
            generation: n,
            epoch: self.epoch,
            acks: self.acks.clone(),
            updated_ms: self.log.clock().now_ms(),
            meta: self.meta.clone(),
        }
    }

    /// Guard this cursor with a lease: commits carry the lease's epoch, and a commit that
    /// finds a higher epoch fails with [`LogError::Fenced`]. Writes a generation at once, so a
    /// previous holder's later commits are refused.
    pub async fn fence(&mut self, lease: &Lease) -> Result<()> {
        self.epoch = self.epoch.max(lease.epoch());
        self.dirty = true;
        self.commit().await
    }

    /// Store a cursor that does not exist yet as it is (its first generation). If another
    /// process created it first, take theirs instead: two readers starting the same cursor at
    /// once must not merge their starts (the later start would win, and what lies between
    /// the two would be skipped by both). Nothing to do for a cursor that exists.
    pub async fn create(&mut self) -> Result<()> {
        if self.exists() {
            return Ok(());
        }
        match self.series().write(1, &self.state(1)).await? {
            Write::Done => self.committed_as(1).await,
            Write::Lost(theirs) => {
                let theirs: CursorState = theirs;
                self.epoch = theirs.epoch;
                self.acks = theirs.acks;
                self.meta = theirs.meta;
                self.generation = 1;
                self.dirty = false;
            }
        }
        Ok(())
    }

    /// Persist the acks. Concurrent commits from other processes are merged.
    pub async fn commit(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        loop {
            let n = self.generation + 1;
            match self.series().write(n, &self.state(n)).await? {
                Write::Done => {
                    self.committed_as(n).await;
                    return Ok(());
                }
                Write::Lost(theirs) => self.absorb(n, theirs)?,
            }
        }
    }

    /// Merge in what other processes committed.
    pub async fn reload(&mut self) -> Result<()> {
        if let Some((n, theirs)) = self.series().latest::<CursorState>().await?
            && n > self.generation
        {
            self.absorb(n, theirs)?;
        }
        Ok(())
    }

    fn absorb(&mut self, n: u64, theirs: CursorState) -> Result<()> {
        if theirs.epoch > self.epoch {
            return Err(LogError::Fenced {
                what: "cursor",
                name: format!("{}/{}", self.stream, self.name),
                ours: self.epoch.0,
                theirs: theirs.epoch.0,
            });
        }
        self.acks.merge(&theirs.acks);
        self.generation = n;
        Ok(())
    }
}
