//! Users and tenants are live: `User` resources in the default tenant's catalog are followed
//! (one LIST every [`POLL`]; a changed one is read) and handed to `Auth`, which connections
//! check their grants against; a tenant a `Tenant` resource declares is served from then on,
//! and no longer once the resource is deleted (its clients are disconnected), without a
//! restart. A User in a tenant that is not declared cannot connect (its status is Pending).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::watch;
use wharf_auth::Auth;
use wharf_log::{CatalogEvent, CatalogWatch, Log};
use wharf_resources::{Limits, Plan, PlanSpec, Spec, Tenant, TenantSpec, User, UserSpec};

use crate::tenants::Tenants as Served;

/// How often the catalog is looked at for changed users and tenants.
pub const POLL: Duration = Duration::from_secs(2);

/// The User resources and Tenant names of a catalog, kept up to date by polling it.
pub struct Follower {
    users: CatalogWatch,
    tenant_watch: CatalogWatch,
    plan_watch: CatalogWatch,
    known: BTreeMap<String, UserSpec>,
    tenant_specs: BTreeMap<String, TenantSpec>,
    plans: BTreeMap<String, PlanSpec>,
}

impl Follower {
    pub fn new(root: &Log) -> Self {
        Self {
            users: root.catalog().watch(UserSpec::KIND),
            tenant_watch: root.catalog().watch(TenantSpec::KIND),
            plan_watch: root.catalog().watch(PlanSpec::KIND),
            known: BTreeMap::new(),
            tenant_specs: BTreeMap::new(),
            plans: BTreeMap::new(),
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
                CatalogEvent::Put(e) => {
                    if let Ok(t) = Tenant::from_json(&e.body) {
                        self.tenant_specs.insert(e.name.clone(), t.spec);
                    }
                    named.declared.push(e.name)
                }
                CatalogEvent::Deleted { name, .. } => {
                    self.tenant_specs.remove(&name);
                    named.deleted.push(name)
                }
            }
        }
        for event in self.plan_watch.poll().await? {
            match event {
                CatalogEvent::Put(e) => match Plan::from_json(&e.body) {
                    Ok(p) => {
                        self.plans.insert(e.name, p.spec);
                    }
                    Err(_) => {
                        self.plans.remove(&e.name);
                    }
                },
                CatalogEvent::Deleted { name, .. } => {
                    self.plans.remove(&name);
                }
            }
        }
        Ok(named)
    }

    /// The limits of tenant `name`: its Tenant resource's over its plan's (none without one).
    pub fn limits(&self, name: &str) -> Limits {
        let Some(spec) = self.tenant_specs.get(name) else {
            return Limits::default();
        };
        let plan = spec
            .plan
            .as_ref()
            .and_then(|p| self.plans.get(p))
            .map(|p| p.limits.clone())
            .unwrap_or_default();
        spec.limits.over(&plan)
    }

    /// Hand every served tenant its limits, and tell it whether its log is over its storage
    /// limit (the bytes of its streams' readable segments, from the log's index).
    pub fn apply_limits(&self, tenants: &Served) {
        for (name, t) in tenants.list() {
            let limits = self.limits(&name);
            t.quota.set_max_message_bytes(limits.max_message_bytes);
            t.quota.set_max_storage_bytes(limits.max_storage_bytes);
            if limits.max_storage_bytes.is_some() {
                let used = t.log.held_bytes();
                if t.quota.set_storage_used(used) {
                    if t.quota.storage_full() {
                        tracing::warn!(tenant = name, used, max = ?limits.max_storage_bytes, "storage limit reached: messages refused");
                    } else {
                        tracing::info!(tenant = name, used, max = ?limits.max_storage_bytes, "under the storage limit again");
                    }
                }
            } else {
                t.quota.set_storage_full(false);
            }
        }
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
                follower.apply_limits(&tenants);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read users and tenants from the catalog"),
        }
    }
}
