//! Users and tenants are live: `User` resources in the default tenant's catalog are followed
//! (one LIST every [`POLL`]; a changed one is read) and handed to `Auth`, which connections
//! check their grants against; a tenant a `Tenant` resource declares is served from then on,
//! and no longer once the resource is deleted (its clients are disconnected), without a
//! restart. A User in a tenant that is not declared cannot connect (its status is Pending).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::watch;
use wharf_auth::Auth;
use wharf_log::{CatalogEvent, CatalogWatch, Log};
use wharf_resources::{Spec, TenantSpec, User, UserSpec};

use crate::tenants::Tenants as Served;

/// How often the catalog is looked at for changed users and tenants.
pub const POLL: Duration = Duration::from_secs(2);

/// The User resources and Tenant names of a catalog, kept up to date by polling it.
pub struct Follower {
    users: CatalogWatch,
    tenant_watch: CatalogWatch,
    known: BTreeMap<String, UserSpec>,
}

impl Follower {
    pub fn new(root: &Log) -> Self {
        Self {
            users: root.catalog().watch(UserSpec::KIND),
            tenant_watch: root.catalog().watch(TenantSpec::KIND),
            known: BTreeMap::new(),
        }
    }

    /// Look once: hand the users to `auth` if any changed; the Tenant resources that
    /// appeared and those deleted.
    pub async fn poll(&mut self, auth: &Auth) -> wharf_log::Result<Tenants> {
        let mut named = Tenants::default();
        let mut changed = false;
        for event in self.users.poll().await? {
            changed = true;
            match event {
                CatalogEvent::Put(e) => match User::from_json(&e.body) {
                    Ok(user) => {
                        self.known.insert(e.name, user.spec);
                    }
                    Err(invalid) => {
                        // Its status says so (the reconciler); here it lets nobody in.
                        tracing::warn!(user = %e.name, error = %invalid, "ignoring a User resource that does not validate");
                        self.known.remove(&e.name);
                    }
                },
                CatalogEvent::Deleted { name, .. } => {
                    self.known.remove(&name);
                }
            }
        }
        if changed {
            let users = self
                .known
                .iter()
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect();
            if auth.set_resource_users(users) {
                tracing::info!(users = self.known.len(), "users changed");
            }
        }
        for event in self.tenant_watch.poll().await? {
            match event {
                CatalogEvent::Put(e) => named.declared.push(e.name),
                CatalogEvent::Deleted { name, .. } => named.deleted.push(name),
            }
        }
        Ok(named)
    }
}

/// Tenant resources that appeared or went.
#[derive(Debug, Default)]
pub struct Tenants {
    pub declared: Vec<String>,
    pub deleted: Vec<String>,
}

/// Follow users and tenants until `stopped`: users to `tenants`' auth, new tenants served.
pub async fn follow(
    mut follower: Follower,
    tenants: Arc<Served>,
    mut stopped: watch::Receiver<bool>,
) {
    let auth = tenants.auth();
    loop {
        tokio::select! {
            _ = async { let _ = stopped.wait_for(|s| *s).await; } => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        match follower.poll(&auth).await {
            Ok(named) => {
                for name in named.declared {
                    if let Err(e) = tenants.ensure(&name).await {
                        tracing::warn!(tenant = name, error = %e, "cannot serve the tenant; will retry");
                        // Reported again by a fresh watch: it sees every resource as new.
                        follower.tenant_watch =
                            tenants.default().log.catalog().watch(TenantSpec::KIND);
                    }
                }
                for name in named.deleted {
                    tenants.remove(&name);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read users and tenants from the catalog"),
        }
    }
}
