//! The catalog: configuration objects (addresses, plans, tenants) in the same store, each a
//! series of create-only revisions (`catalog/<kind>/<name>/<rev>.json`), listed and watched
//! by polling.

use std::{collections::BTreeMap, fmt};

use futures::TryStreamExt;
use object_store::ObjectStore;
use wharf_log_format::{
    catalog::{CatalogEntry, valid_name},
    json::Versioned,
};

use crate::{
    Log, LogError, Result,
    paths::{self, parse_number},
    series::{Series, Write},
    store::retry,
};

/// Access to the catalog of a log's store.
#[derive(Clone)]
pub struct Catalog {
    log: Log,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Catalog")
    }
}

/// A change seen by [`CatalogWatch`].
#[derive(Clone, Debug, PartialEq)]
pub enum CatalogEvent {
    Put(CatalogEntry),
    Deleted { kind: String, name: String },
}

impl Log {
    pub fn catalog(&self) -> Catalog {
        Catalog { log: self.clone() }
    }
}

fn check(kind: &str, name: &str) -> Result<()> {
    for (what, v) in [("catalog kind", kind), ("catalog name", name)] {
        if !valid_name(v) {
            return Err(LogError::invalid(
                what,
                format!("{v:?} may only contain A-Z a-z 0-9 . _ - and must not start with '.'"),
            ));
        }
    }
    Ok(())
}

impl Catalog {
    fn series(&self, kind: &str, name: &str) -> Series<'_> {
        Series {
            store: self.log.store().object_store.as_ref(),
            settings: self.log.settings(),
            dir: paths::catalog_dir(kind, name),
        }
    }

    /// The current revision of `kind/name` (tombstones included).
    async fn current(&self, kind: &str, name: &str) -> Result<Option<CatalogEntry>> {
        Ok(self.series(kind, name).latest().await?.map(|(_, e)| e))
    }

    /// The object, unless absent or deleted.
    pub async fn get(&self, kind: &str, name: &str) -> Result<Option<CatalogEntry>> {
        check(kind, name)?;
        Ok(self.current(kind, name).await?.filter(|e| !e.deleted))
    }

    /// The current revision of `kind/name` and whether it is a tombstone (`None`: never
    /// written, or pruned away).
    pub async fn revision(&self, kind: &str, name: &str) -> Result<Option<(u64, bool)>> {
        check(kind, name)?;
        Ok(self
            .current(kind, name)
            .await?
            .map(|e| (e.revision, e.deleted)))
    }

    /// Create or replace `kind/name`. Returns the new revision.
    pub async fn put(&self, kind: &str, name: &str, body: serde_json::Value) -> Result<u64> {
        self.write(kind, name, None, body, false).await
    }

    /// Replace `kind/name` only if its current revision is `expected` (0 = must not exist).
    pub async fn put_if(
        &self,
        kind: &str,
        name: &str,
        expected: u64,
        body: serde_json::Value,
    ) -> Result<u64> {
        self.write(kind, name, Some(expected), body, false).await
    }

    /// Delete `kind/name` (writes a tombstone). Returns false if it did not exist.
    pub async fn delete(&self, kind: &str, name: &str) -> Result<bool> {
        if self.get(kind, name).await?.is_none() {
            return Ok(false);
        }
        self.write(kind, name, None, serde_json::Value::Null, true)
            .await
            .map(|_| true)
    }

    async fn write(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
        body: serde_json::Value,
        deleted: bool,
    ) -> Result<u64> {
        check(kind, name)?;
        let series = self.series(kind, name);
        let mut current = series.latest::<CatalogEntry>().await?.map_or(0, |(n, _)| n);
        loop {
            if let Some(exp) = expected
                && exp != current
            {
                return Err(LogError::Conflict(format!(
                    "{kind}/{name} is at revision {current}, not {exp}"
                )));
            }
            let entry = CatalogEntry {
                version: CatalogEntry::VERSION,
                kind: kind.to_string(),
                name: name.to_string(),
                revision: current + 1,
                deleted,
                updated_ms: self.log.clock().now_ms(),
                body: body.clone(),
            };
            match series.write(current + 1, &entry).await? {
                Write::Done => {
                    if current > 1 {
                        series.prune(current).await;
                    }
                    return Ok(current + 1);
                }
                Write::Lost(_) => current += 1,
            }
        }
    }

    /// Current revision number of every object of `kind`, tombstones included.
    async fn revisions(&self, kind: &str) -> Result<BTreeMap<String, u64>> {
        let store: &dyn ObjectStore = self.log.store().object_store.as_ref();
        let dir = paths::catalog_kind_dir(kind);
        let listed: Vec<_> = retry(self.log.settings(), &dir, || async {
            store.list(Some(&dir)).try_collect::<Vec<_>>().await
        })
        .await
        .map_err(|e| LogError::store(&dir, e))?;
        let mut out = BTreeMap::new();
        for meta in listed {
            let parts: Vec<_> = meta.location.parts().collect();
            let (Some(name), Some(n)) = (
                parts
                    .len()
                    .checked_sub(2)
                    .map(|i| parts[i].as_ref().to_string()),
                parse_number(&meta.location),
            ) else {
                continue;
            };
            let rev = out.entry(name).or_insert(0);
            *rev = (*rev).max(n);
        }
        Ok(out)
    }

    /// Every live object of `kind`, by name.
    pub async fn list(&self, kind: &str) -> Result<Vec<CatalogEntry>> {
        check(kind, "x")?;
        let mut out = Vec::new();
        for (name, _) in self.revisions(kind).await? {
            if let Some(e) = self.get(kind, &name).await? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Watch `kind` for changes; the first call to [`CatalogWatch::changes`] reports every
    /// live object as `Put`.
    pub fn watch(&self, kind: &str) -> CatalogWatch {
        CatalogWatch {
            catalog: self.clone(),
            kind: kind.to_string(),
            seen: BTreeMap::new(),
        }
    }
}

/// Polls one kind of the catalog for changes.
#[derive(Debug)]
pub struct CatalogWatch {
    catalog: Catalog,
    kind: String,
    seen: BTreeMap<String, u64>,
}

impl CatalogWatch {
    /// Wait until something changed (polling every `poll_interval`) and return the changes.
    pub async fn changes(&mut self) -> Result<Vec<CatalogEvent>> {
        loop {
            let events = self.poll().await?;
            if !events.is_empty() {
                return Ok(events);
            }
            tokio::time::sleep(self.catalog.log.settings().poll_interval).await;
        }
    }

    /// Look once (one LIST) and return what changed since the last look, maybe nothing.
    pub async fn poll(&mut self) -> Result<Vec<CatalogEvent>> {
        {
            let now = self.catalog.revisions(&self.kind).await?;
            let mut events = Vec::new();
            for (name, &rev) in &now {
                if self.seen.get(name) == Some(&rev) {
                    continue;
                }
                match self.catalog.current(&self.kind, name).await? {
                    Some(e) if e.deleted => {
                        if self.seen.contains_key(name) {
                            events.push(CatalogEvent::Deleted {
                                kind: self.kind.clone(),
                                name: name.clone(),
                            });
                        }
                    }
                    Some(e) => events.push(CatalogEvent::Put(e)),
                    None => continue,
                }
                self.seen.insert(name.clone(), rev);
            }
            Ok(events)
        }
    }
}
