//! A series of create-only numbered JSON objects under one prefix (`<dir>/<n:020>.json`): the
//! building block of cursors, leases and catalog entries. The highest number is current;
//! writing number `n + 1` with `PutMode::Create` is the compare-and-swap.

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use wharf_log_format::json::{self, Versioned};

use crate::{
    LogError, Result,
    paths::{self, parse_number},
    settings::LogSettings,
    store::{Created, create, get_bytes, retry},
};

pub(crate) struct Series<'a> {
    pub store: &'a dyn ObjectStore,
    pub settings: &'a LogSettings,
    pub dir: Path,
}

/// Result of a conditional write in a series.
pub(crate) enum Write<T> {
    Done,
    /// Number `n` was taken; here is what holds it.
    Lost(T),
}

impl<'a> Series<'a> {
    /// The log's checkpoints (`checkpoints/<seq>.json`).
    pub fn checkpoints(store: &'a dyn ObjectStore, settings: &'a LogSettings) -> Self {
        Series {
            store,
            settings,
            dir: paths::checkpoints_dir(),
        }
    }

    /// All numbers in the series, ascending.
    pub async fn numbers(&self) -> Result<Vec<u64>> {
        let listed: Vec<_> = retry(self.settings, &self.dir, || async {
            self.store
                .list(Some(&self.dir))
                .try_collect::<Vec<_>>()
                .await
        })
        .await
        .map_err(|e| LogError::store(&self.dir, e))?;
        let mut numbers: Vec<u64> = listed
            .iter()
            .filter(|m| {
                m.location
                    .prefix_match(&self.dir)
                    .is_some_and(|mut p| p.nth(1).is_none())
            })
            .filter_map(|m| parse_number(&m.location))
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    pub async fn get<T: Versioned>(&self, n: u64) -> Result<Option<T>> {
        let path = paths::numbered(&self.dir, n);
        match get_bytes(self.store, self.settings, &path).await {
            Ok(bytes) => json::decode(&bytes)
                .map(Some)
                .map_err(|e| LogError::format(&path, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(LogError::store(&path, e)),
        }
    }

    /// The highest-numbered object, if any.
    pub async fn latest<T: Versioned>(&self) -> Result<Option<(u64, T)>> {
        for _ in 0..self.settings.retry_attempts {
            let Some(&n) = self.numbers().await?.last() else {
                return Ok(None);
            };
            if let Some(v) = self.get(n).await? {
                return Ok(Some((n, v)));
            }
            // Pruned between list and get: list again.
        }
        Err(LogError::Conflict(format!("{} keeps changing", self.dir)))
    }

    /// Create number `n`; if it is taken, return what holds it.
    pub async fn write<T: Versioned>(&self, n: u64, value: &T) -> Result<Write<T>> {
        let path = paths::numbered(&self.dir, n);
        match create(self.store, self.settings, &path, json::encode(value).into()).await? {
            Created::Ours => Ok(Write::Done),
            Created::Theirs(bytes) => json::decode(&bytes)
                .map(Write::Lost)
                .map_err(|e| LogError::format(&path, e)),
        }
    }

    /// Delete objects numbered below `below` (best effort; a failure is logged).
    pub async fn prune(&self, below: u64) {
        let Ok(numbers) = self.numbers().await else {
            return;
        };
        for n in numbers.into_iter().filter(|&n| n < below) {
            let path = paths::numbered(&self.dir, n);
            if let Err(e) = self.store.delete(&path).await {
                tracing::debug!(%path, error = %e, "prune failed");
            }
        }
    }
}
