//! Leases: time-bounded claims on a named resource ("this process owns this session"),
//! fenced by epoch.
//!
//! A lease is a series of create-only versions (`leases/<name>/<rev>.json`). Acquiring writes
//! the next version with `epoch + 1` if the current one is expired or released; renewing and
//! releasing write the next version with the same epoch. Whoever loses the race for a version
//! number has lost the lease. Expiry is judged on wall clocks, so hosts need roughly
//! synchronised clocks; resources guarded by a lease also record its epoch (see
//! [`crate::Cursor::fence`]), so a paused holder that resumes after losing the lease is
//! refused when it writes, whatever its clock says.

use std::{fmt, sync::Arc, time::Duration};

use wharf_log_format::{Epoch, catalog::valid_name, json::Versioned, lease::LeaseRecord};

use crate::{
    Log, LogError, Result,
    log::Shared,
    paths,
    series::{Series, Write},
};

/// A lease this process holds (or held: see [`Lease::is_valid`]).
pub struct Lease {
    shared: Arc<Shared>,
    record: LeaseRecord,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("record", &self.record)
            .finish()
    }
}

fn series<'a>(shared: &'a Shared, name: &str) -> Series<'a> {
    Series {
        store: shared.store.object_store.as_ref(),
        settings: &shared.settings,
        dir: paths::lease_dir(name),
    }
}

impl Log {
    /// Try to acquire the lease `name` for `ttl`. `Ok(None)` if someone else holds it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        acquire(&self.shared, name, holder, ttl).await
    }

    /// The current version of the lease `name`, if it was ever taken.
    pub async fn lease_state(&self, name: &str) -> Result<Option<LeaseRecord>> {
        Ok(series(&self.shared, name).latest().await?.map(|(_, r)| r))
    }
}

/// [`Log::acquire_lease`] for the log's own roles (which must not keep a [`Log`] handle, and
/// with it the writer task, alive).
pub(crate) async fn acquire(
    shared: &Arc<Shared>,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Lease>> {
    if !valid_name(name) {
        return Err(LogError::invalid("lease name", format!("{name:?}")));
    }
    let series = series(shared, name);
    let now = shared.clock.now_ms();
    let (revision, epoch) = match series.latest::<LeaseRecord>().await? {
        None => (1, Epoch(1)),
        Some((n, current)) if current.is_free(now) => (n + 1, Epoch(current.epoch.0 + 1)),
        Some(_) => return Ok(None),
    };
    let record = LeaseRecord {
        version: LeaseRecord::VERSION,
        name: name.to_string(),
        revision,
        epoch,
        holder: holder.to_string(),
        holder_id: uuid::Uuid::new_v4().to_string(),
        expires_ms: now + ttl.as_millis() as i64,
        released: false,
    };
    match series.write(revision, &record).await? {
        Write::Done => {
            if revision > 2 {
                series.prune(revision - 1).await;
            }
            Ok(Some(Lease {
                shared: shared.clone(),
                record,
            }))
        }
        Write::Lost(_) => Ok(None),
    }
}

impl Lease {
    /// The fencing token of this claim.
    pub fn epoch(&self) -> Epoch {
        self.record.epoch
    }

    pub fn record(&self) -> &LeaseRecord {
        &self.record
    }

    /// Whether this process may still act on the lease by its own clock. A holder must stop
    /// acting when this turns false, but fencing (not this check) is what protects data.
    pub fn is_valid(&self) -> bool {
        !self.record.released && self.shared.clock.now_ms() < self.record.expires_ms
    }

    /// Extend the lease to `ttl` from now. Fails with [`LogError::Fenced`] if someone else
    /// took it meanwhile.
    pub async fn renew(&mut self, ttl: Duration) -> Result<()> {
        let mut next = self.record.clone();
        next.revision += 1;
        next.expires_ms = self.shared.clock.now_ms() + ttl.as_millis() as i64;
        self.write(next).await
    }

    /// Give the lease up for good and delete its objects: for a lease on something finished
    /// that nobody will claim again (a fully acknowledged block of a queue). Best effort: a
    /// failed delete leaves objects behind, nothing worse. Whoever took the name afterwards
    /// would start a new series at epoch 1, so use it only where no one will.
    pub async fn retire(self) {
        series(&self.shared, &self.record.name)
            .prune(u64::MAX)
            .await;
    }

    /// Give the lease up so that another process can take it at once.
    pub async fn release(mut self) -> Result<()> {
        let mut next = self.record.clone();
        next.revision += 1;
        next.released = true;
        self.write(next).await
    }

    async fn write(&mut self, next: LeaseRecord) -> Result<()> {
        let series = series(&self.shared, &self.record.name);
        match series.write(next.revision, &next).await? {
            Write::Done => {
                series.prune(next.revision - 1).await;
                self.record = next;
                Ok(())
            }
            Write::Lost(theirs) => Err(LogError::Fenced {
                what: "lease",
                name: self.record.name.clone(),
                ours: self.record.epoch.0,
                theirs: theirs.epoch.0,
            }),
        }
    }
}
