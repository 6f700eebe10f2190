//! Garbage collection: delete segments that no stream needs any more.
//!
//! A segment numbered up to a *persisted* checkpoint C at least `gc_grace` old may be deleted
//! once C no longer references it (its records were trimmed, or compacted into a later
//! segment). Later segments never reference it again: applying segments only removes index
//! entries or adds ones pointing at the new segment. A process whose view is fresh (confirmed
//! at the head within `gc_grace / 2`) is already past C, so it never needs a deleted segment;
//! one whose view is older reloads from the newest checkpoint before trusting a missing
//! segment as the end of the log (see `Shared::refresh`), so a deleted number is never taken
//! for a free one.

use futures::{StreamExt, TryStreamExt};
use wharf_log_format::checkpoint::Checkpoint;

use crate::{
    Log, LogError, Result,
    paths::{self, parse_number},
    series::Series,
    store::retry,
};

/// What one garbage collection run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The checkpoint it worked from (0 if none was old enough).
    pub checkpoint: u64,
    /// Segments up to the checkpoint that are still referenced.
    pub referenced_segments: u64,
    pub deleted_segments: u64,
    /// Batch objects deleted: committed by a segment the checkpoint no longer needs, or
    /// left behind by a writer whose series broke off (never committed, older than the grace).
    pub deleted_batches: u64,
}

impl Log {
    /// Delete segments no stream needs any more (after retention trimmed them).
    pub async fn collect_garbage(&self) -> Result<GcReport> {
        let store = self.store().object_store.clone();
        let settings = self.settings();
        let now_ms = self.clock().now_ms();
        let grace_ms = settings.gc_grace.as_millis() as i64;
        let dir = paths::checkpoints_dir();
        let listed: Vec<_> = retry(settings, &dir, || {
            store.list(Some(&dir)).try_collect::<Vec<_>>()
        })
        .await
        .map_err(|e| LogError::store(&dir, e))?;
        let Some(number) = listed
            .iter()
            .filter(|m| m.last_modified.timestamp_millis() <= now_ms - grace_ms)
            .filter_map(|m| parse_number(&m.location))
            .max()
        else {
            return Ok(GcReport::default());
        };
        let Some(checkpoint) = Series::checkpoints(store.as_ref(), settings)
            .get::<Checkpoint>(number)
            .await?
        else {
            // Pruned meanwhile: a newer one will be old enough next time.
            return Ok(GcReport::default());
        };
        let upto = checkpoint.segment_seq;
        let referenced = checkpoint.referenced_segments();
        let segments = paths::segments_dir();
        let doomed: Vec<_> = retry(settings, &segments, || {
            store.list(Some(&segments)).try_collect::<Vec<_>>()
        })
        .await
        .map_err(|e| LogError::store(&segments, e))?
        .into_iter()
        .filter(|m| {
            parse_number(&m.location).is_some_and(|n| n <= upto && !referenced.contains(&n))
        })
        .map(|m| m.location)
        .collect();
        let deleted = delete_all(store.as_ref(), doomed, "segment").await;
        if deleted > 0 {
            tracing::info!(deleted, checkpoint = upto, "garbage collected segments");
        }
        let deleted_batches = self.collect_batches(&checkpoint, now_ms - grace_ms).await?;
        Ok(GcReport {
            checkpoint: upto,
            referenced_segments: referenced.range(..=upto).count() as u64,
            deleted_segments: deleted,
            deleted_batches,
        })
    }

    /// Delete the batch objects checkpoint `c` says nothing needs: committed (as of `c`) by a
    /// segment `c` no longer references, or never committed and stuck behind a hole in their
    /// series (the writer's PUT of the missing number failed; nothing after it is committed)
    /// and written before `old_ms`.
    async fn collect_batches(&self, c: &Checkpoint, old_ms: i64) -> Result<u64> {
        let store = self.store().object_store.clone();
        let dir = paths::batches_dir();
        let listed: Vec<_> = retry(self.settings(), &dir, || {
            store.list(Some(&dir)).try_collect::<Vec<_>>()
        })
        .await
        .map_err(|e| LogError::store(&dir, e))?;
        let mut by_writer: std::collections::BTreeMap<String, Vec<(u64, i64, _)>> =
            Default::default();
        for m in listed {
            let mut parts = m.location.parts();
            let (Some(_), Some(w)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(n) = parse_number(&m.location) else {
                continue;
            };
            by_writer.entry(w.as_ref().to_string()).or_default().push((
                n,
                m.last_modified.timestamp_millis(),
                m.location,
            ));
        }
        let mut doomed = Vec::new();
        for (w, objects) in by_writer {
            let committed = c.writers.get(&w).map_or(0, |i| i.committed);
            let stuck = !objects.iter().any(|(n, _, _)| *n == committed + 1);
            for (n, modified, path) in objects {
                let dead = if n <= committed {
                    !c.batch_is_live(&w, n)
                } else {
                    stuck && modified <= old_ms
                };
                if dead {
                    doomed.push(path);
                }
            }
        }
        let deleted = delete_all(store.as_ref(), doomed, "batch").await;
        if deleted > 0 {
            tracing::info!(deleted, "garbage collected batch objects");
        }
        Ok(deleted)
    }
}

/// Delete `paths` (already gone counts as deleted); a failure is logged and left for the next
/// run. Returns how many are gone.
async fn delete_all(
    store: &dyn object_store::ObjectStore,
    paths: Vec<object_store::path::Path>,
    what: &str,
) -> u64 {
    let mut deleted = 0;
    let mut results = store.delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed());
    while let Some(r) = results.next().await {
        match r {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => tracing::warn!(error = %e, "{what} delete failed; will retry next run"),
        }
    }
    deleted
}
