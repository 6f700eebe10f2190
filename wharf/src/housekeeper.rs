//! The housekeeper: a role one process of a deployment holds at a time (a lease in the
//! default tenant's log, `housekeeping`), taken by whichever `wharf up` or `wharf adapter`
//! gets it first and taken over within [`TTL`] when its holder dies. Its holder
//!
//! - writes every resource's status (`wharf_functions::reconcile`) every [`RECONCILE`];
//! - runs retention, compaction and garbage collection over every tenant's log every
//!   `--housekeeping` (a pass runs in its own task, so the lease is renewed meanwhile).
//!
//! Both are safe to run twice at once (statuses are decided from the whole catalog, and
//! housekeeping commits are create-only), so a holder paused past its lease costs only
//! duplicate work. At shutdown the lease is released: another process takes over at once.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{Mutex, watch};
use wharf_log::{Lease, Log};
use wharf_resources::Catalogs;

use crate::{housekeeping, settings::Settings, tenants::Tenants};

/// How long the lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// How often statuses are looked at.
pub const RECONCILE: Duration = Duration::from_secs(2);
const LEASE: &str = "housekeeping";

/// What the housekeeper works on.
pub struct Housekeeper {
    pub tenants: Arc<Tenants>,
    pub catalogs: Catalogs,
    pub settings: Settings,
    /// Between housekeeping passes.
    pub every: Duration,
    /// Tenants that exist without a Tenant resource (the users file's).
    pub implicit_tenants: BTreeSet<String>,
}

impl Housekeeper {
    /// Run until `stopped` turns true: wait for the lease, do the work while holding it.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let holder = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "wharf".into()),
            std::process::id()
        );
        let root = self.tenants.default().log.clone();
        let this = Arc::new(self);
        loop {
            match root.acquire_lease(LEASE, &holder, TTL).await {
                Ok(Some(lease)) => {
                    tracing::info!(holder, "holding the housekeeping role");
                    if this.hold(lease, &mut stopped).await {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot look at the housekeeping lease"),
            }
            tokio::select! {
                _ = async { let _ = stopped.wait_for(|s| *s).await; } => return,
                _ = tokio::time::sleep(TTL / 3) => {}
            }
        }
    }

    /// Work while `lease` holds; true when stopped (the lease released), false when lost.
    async fn hold(self: &Arc<Self>, mut lease: Lease, stopped: &mut watch::Receiver<bool>) -> bool {
        let mut renew = tokio::time::interval(TTL / 3);
        renew.tick().await;
        let mut reconcile = tokio::time::interval(RECONCILE);
        let mut housekeeping = tokio::time::interval(self.every);
        let unserved: Arc<Mutex<BTreeMap<String, Log>>> = Arc::default();
        let mut reconciler = wharf_functions::reconcile::Reconciler::new(
            self.catalogs.clone(),
            self.implicit_tenants.clone(),
        );
        let mut pass: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                _ = async { let _ = stopped.wait_for(|s| *s).await; } => {
                    if let Some(p) = pass.take() {
                        p.abort();
                    }
                    if let Err(e) = lease.release().await {
                        tracing::debug!(error = %e, "housekeeping lease not released");
                    }
                    return true;
                }
                _ = renew.tick() => {
                    if let Err(e) = lease.renew(TTL).await {
                        tracing::warn!(error = %e, "lost the housekeeping role");
                        if let Some(p) = pass.take() {
                            p.abort();
                        }
                        return false;
                    }
                }
                _ = reconcile.tick() => {
                    match reconciler.pass().await {
                        Ok(r) if r.written > 0 => tracing::debug!(written = r.written, "statuses written"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "reconciling failed; will retry"),
                    }
                }
                _ = housekeeping.tick() => {
                    if pass.as_ref().is_some_and(|p| !p.is_finished()) {
                        continue; // the last pass is still running
                    }
                    let (this, unserved) = (self.clone(), unserved.clone());
                    pass = Some(tokio::spawn(async move {
                        let mut unserved = unserved.lock().await;
                        housekeeping::every_tenant(&this.tenants, &mut unserved, &this.settings).await;
                    }));
                }
            }
        }
    }
}
