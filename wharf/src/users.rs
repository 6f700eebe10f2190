//! Users and tenants are live: `User` resources in the default tenant's catalog are followed
//! (one LIST every [`POLL`]; a changed one is read) and handed to `Auth`, which connections
//! check their grants against; a tenant a user or a `Tenant` resource names is served from
//! then on, without a restart.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::watch;
use wharf_auth::Auth;
use wharf_log::{CatalogEvent, CatalogWatch, Log};
use wharf_resources::{Spec, TenantSpec, User, UserSpec};

use crate::tenants::Tenants;

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

    /// Look once: hand the users to `auth` if any changed; the tenants newly named (by a
    /// Tenant resource, or as a user's tenant).
    pub async fn poll(&mut self, auth: &Auth) -> wharf_log::Result<Vec<String>> {
        let mut named = Vec::new();
        let mut changed = false;
        for event in self.users.poll().await? {
            changed = true;
            match event {
                CatalogEvent::Put(e) => match User::from_json(&e.body) {
                    Ok(user) => {
                        named.push(user.spec.tenant().to_string());
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
            if let CatalogEvent::Put(e) = event {
                named.push(e.name);
            }
        }
        Ok(named)
    }
}

/// Follow users and tenants until `stopped`: users to `tenants`' auth, new tenants served.
pub async fn follow(
    mut follower: Follower,
    tenants: Arc<Tenants>,
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
                for name in named {
                    if let Err(e) = tenants.ensure(&name).await {
                        tracing::warn!(tenant = name, error = %e, "cannot serve the tenant; will retry");
                        // Seen again at the next change only: forget it so that the next
                        // poll reports it.
                        follower.tenant_watch =
                            tenants.default().log.catalog().watch(TenantSpec::KIND);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read users and tenants from the catalog"),
        }
    }
}
