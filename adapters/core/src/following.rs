//! `Following`: one subscriber's reader of the streams its filters reach — an MQTT session,
//! an AMQP topic receiver. Every subscriber gets every message (unlike
//! [`crate::competing`]).
//!
//! It follows the default topic address's stream and those of topic addresses claiming
//! topics its filters match; when the claims change it follows the newly reached streams from
//! [`crate::claims::CLAIM_GRACE`] back ([`Following::newly_reached`]). A durable subscriber
//! keeps a cursor per stream (its acknowledgements; newest holder wins: commits of an older
//! one are fenced, and [`Following::commit`] reports it). Positions are
//! [`wharf_log::pack_position`]s: the stream's index (in the order followed, stable) and the
//! offset. What a protocol keeps per stream besides (MQTT: what was sent, what is resent
//! with DUP) is the `X` of each [`Followed`].

use std::sync::Arc;

use wharf_log::{Cursor, ErrorKind, Log, Tails, unpack_position as unpack};
use wharf_log_format::{Offset, StoredRecord, StreamId};

use crate::claims::{Claims, late_start};

/// A followed stream.
#[derive(Debug)]
pub struct Followed<X> {
    pub stream: StreamId,
    /// A durable subscriber's cursor on it.
    pub cursor: Option<Cursor>,
    /// What the protocol keeps per stream.
    pub extra: X,
}

/// The durable subscriber's cursors were taken over by a newer holder (fenced); they are
/// dropped here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TakenOver;

/// See the module docs.
#[derive(Debug)]
pub struct Following<X> {
    log: Log,
    tails: Tails,
    streams: Vec<Followed<X>>,
    claims: Arc<Claims>,
    /// The claims' generation when the streams followed were last worked out.
    claims_seen: u64,
}

impl<X> Following<X> {
    pub fn new(log: &Log, claims: Arc<Claims>) -> Self {
        Self {
            tails: log.tails(),
            log: log.clone(),
            claims_seen: claims.generation(),
            claims,
            streams: Vec::new(),
        }
    }

    /// Follow `stream` too: from its cursor's position if there is one (what it
    /// acknowledged is skipped), else from `from`. Returns its index.
    pub fn follow(
        &mut self,
        stream: StreamId,
        from: Offset,
        cursor: Option<Cursor>,
        extra: X,
    ) -> usize {
        let start = cursor.as_ref().map_or(from, Cursor::committed);
        let i = self.tails.follow(&stream, start);
        if i == self.streams.len() {
            self.streams.push(Followed {
                stream,
                cursor,
                extra,
            });
        }
        i
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn streams(&self) -> &[Followed<X>] {
        &self.streams
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Followed<X>> {
        self.streams.get_mut(i)
    }

    /// The streams, to change what is kept of each (not which are followed: positions
    /// depend on the order).
    pub fn streams_mut(&mut self) -> impl Iterator<Item = &mut Followed<X>> {
        self.streams.iter_mut()
    }

    pub fn is_following(&self, stream: &StreamId) -> bool {
        self.streams.iter().any(|f| f.stream == *stream)
    }

    /// The next records of one of the streams (at most `max`, at least one; streams take
    /// turns) with its index. Cancel-safe.
    pub async fn next_batch(
        &mut self,
        max: usize,
    ) -> wharf_log::Result<(usize, Vec<StoredRecord>)> {
        self.tails.next_batch(max).await
    }

    /// Read stream `i` from `to` on.
    pub fn seek(&mut self, i: usize, to: Offset) {
        self.tails.seek(i, to);
    }

    /// The offset the next record read of stream `i` will have.
    pub fn position(&self, i: usize) -> Option<Offset> {
        self.tails.position(i)
    }

    /// Whether the durable subscriber acknowledged record `offset` of stream `i` (before
    /// this connection, say: it is not sent again).
    pub fn is_acked(&self, i: usize, offset: Offset) -> bool {
        self.streams
            .get(i)
            .and_then(|f| f.cursor.as_ref())
            .is_some_and(|c| c.is_acked(offset))
    }

    /// The message at `position` needs nothing more (committed with the next
    /// [`Following::commit`]).
    pub fn ack(&mut self, position: u64) {
        let (i, offset) = unpack(position);
        if let Some(c) = self.streams.get_mut(i).and_then(|f| f.cursor.as_mut()) {
            c.ack(Offset(offset));
        }
    }

    /// A durable subscriber (its position is stored).
    pub fn is_durable(&self) -> bool {
        self.streams.first().is_some_and(|f| f.cursor.is_some())
    }

    /// Acknowledgements not committed yet.
    pub fn is_dirty(&self) -> bool {
        self.streams
            .iter()
            .any(|f| f.cursor.as_ref().is_some_and(Cursor::is_dirty))
    }

    /// Forget the cursors (another connection owns the subscription now).
    pub fn drop_cursors(&mut self) {
        for f in &mut self.streams {
            f.cursor = None;
        }
    }

    /// Commit the acknowledgements. Other failures are logged and tried again at the next
    /// commit; a fenced cursor drops them all.
    pub async fn commit(&mut self) -> Result<(), TakenOver> {
        for f in &mut self.streams {
            let Some(c) = f.cursor.as_mut().filter(|c| c.is_dirty()) else {
                continue;
            };
            match c.commit().await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Fenced => {
                    self.drop_cursors();
                    return Err(TakenOver);
                }
                Err(e) => {
                    tracing::warn!(stream = %f.stream, error = %e, "could not commit a subscriber's position; will retry");
                }
            }
        }
        Ok(())
    }

    /// Whether addresses claim other topics than when the streams were last worked out.
    pub fn claims_changed(&self) -> bool {
        self.claims.generation() != self.claims_seen
    }

    /// The streams `filters` reach that are not followed yet, each with where to start:
    /// `late` (the claims changed after the subscriptions were made): from
    /// [`crate::claims::CLAIM_GRACE`] back, what was routed there while adapters had not all
    /// seen the claim; otherwise the stream's end (a subscription gets what comes next).
    /// The caller follows them ([`Following::follow`]), with a cursor if it is durable.
    pub async fn newly_reached<'a>(
        &mut self,
        filters: impl IntoIterator<Item = &'a str>,
        late: bool,
    ) -> Vec<(StreamId, Offset)> {
        self.claims_seen = self.claims.generation();
        let mut wanted: Vec<StreamId> = Vec::new();
        for filter in filters {
            for s in self.claims.reach(filter).streams {
                if !wanted.contains(&s) && !self.is_following(&s) {
                    wanted.push(s);
                }
            }
        }
        let mut out = Vec::with_capacity(wanted.len());
        for stream in wanted {
            let from = if late {
                let from = late_start(&self.log, &stream).await;
                tracing::info!(%stream, from, "following a newly claimed address");
                from
            } else {
                self.log.stream(&stream).map_or(0, |s| s.next_offset)
            };
            out.push((stream, Offset(from)));
        }
        out
    }

    /// Try [`Following::newly_reached`] again at the next check (opening a cursor failed).
    pub fn recheck_claims(&mut self) {
        self.claims_seen = u64::MAX;
    }
}
