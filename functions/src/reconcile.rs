//! The reconciler: what each resource's status should be, from the whole catalog.
//!
//! [`decide`] is pure: given every resource (a [`Snapshot`]), it says the status of each —
//! - a resource that does not validate (written by hand, or by another version): **Failed**,
//!   naming the field;
//! - a Tenant or Address whose `spec.plan` names no Plan, a User whose tenant is neither the
//!   default one nor a Tenant resource nor a users-file tenant: **Pending**, saying what it
//!   waits for (it turns Ready when that appears);
//! - an Address whose `spec.mqtt_topics` overlap those of an address whose name sorts first:
//!   **Failed** (the adapters route such topics to the first, the same on every adapter);
//! - otherwise **Ready**.
//!
//! [`Reconciler::pass`] follows the catalog and writes only the statuses that differ from the
//! stored ones (phase, message or generation), so a pass over an unchanged catalog reads a
//! LIST per kind and tenant and writes nothing.
//! Any order of events converges: each pass decides from the whole catalog, not from events.

use std::collections::{BTreeMap, BTreeSet};

use wharf_adapter_core::claims;
use wharf_log::{CatalogEvent, CatalogWatch, LogError};
use wharf_log_format::catalog::DEFAULT_TENANT;
use wharf_resources::{
    Address, AddressSpec, Catalogs, Plan, PlanSpec, Spec, Stored, Tenant, TenantSpec, User,
    UserSpec,
    status::{Phase, Status},
};

/// Every resource, as stored.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub plans: Vec<Stored>,
    pub tenants: Vec<Stored>,
    pub users: Vec<Stored>,
    /// Addresses of every tenant.
    pub addresses: Vec<Stored>,
    /// Tenants that exist without a Tenant resource (the users file's).
    pub implicit_tenants: BTreeSet<String>,
}

/// A status to write: for `kind`/`name` in `tenant`'s catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub kind: &'static str,
    pub tenant: String,
    pub name: String,
    pub status: Status,
}

fn status(phase: Phase, message: Option<String>, generation: u64) -> Status {
    Status {
        phase,
        message,
        observed_generation: generation,
        updated: None,
    }
}

/// The status every resource of `snapshot` should have.
pub fn decide(snapshot: &Snapshot) -> Vec<Decision> {
    let mut out = Vec::new();
    let plans: BTreeSet<&str> = snapshot
        .plans
        .iter()
        .filter(|p| Plan::from_json(&p.resource).is_ok())
        .map(|p| p.name.as_str())
        .collect();
    let mut tenants: BTreeSet<&str> = snapshot.tenants.iter().map(|t| t.name.as_str()).collect();
    tenants.insert(DEFAULT_TENANT);
    tenants.extend(snapshot.implicit_tenants.iter().map(String::as_str));
    let needs_plan = |plan: &Option<String>| match plan {
        Some(p) if !plans.contains(p.as_str()) => Some(format!("waiting for plan {p:?}")),
        _ => None,
    };
    let mut push = |kind: &'static str, s: &Stored, phase, message| {
        out.push(Decision {
            kind,
            tenant: s.tenant.clone(),
            name: s.name.clone(),
            status: status(phase, message, s.generation),
        })
    };
    for p in &snapshot.plans {
        match Plan::from_json(&p.resource) {
            Ok(_) => push(PlanSpec::KIND, p, Phase::Ready, None),
            Err(e) => push(PlanSpec::KIND, p, Phase::Failed, Some(e.to_string())),
        }
    }
    for t in &snapshot.tenants {
        match Tenant::from_json(&t.resource) {
            Err(e) => push(TenantSpec::KIND, t, Phase::Failed, Some(e.to_string())),
            Ok(tenant) => match needs_plan(&tenant.spec.plan) {
                Some(wait) => push(TenantSpec::KIND, t, Phase::Pending, Some(wait)),
                None => push(TenantSpec::KIND, t, Phase::Ready, None),
            },
        }
    }
    for u in &snapshot.users {
        match User::from_json(&u.resource) {
            Err(e) => push(UserSpec::KIND, u, Phase::Failed, Some(e.to_string())),
            Ok(user) if !tenants.contains(user.spec.tenant()) => push(
                UserSpec::KIND,
                u,
                Phase::Pending,
                Some(format!("waiting for tenant {:?}", user.spec.tenant())),
            ),
            Ok(_) => push(UserSpec::KIND, u, Phase::Ready, None),
        }
    }
    // Addresses, per tenant: claims are compared within a tenant, the first by name wins.
    let mut by_tenant: BTreeMap<&str, Vec<&Stored>> = BTreeMap::new();
    for a in &snapshot.addresses {
        by_tenant.entry(a.tenant.as_str()).or_default().push(a);
    }
    for (_, mut addresses) in by_tenant {
        addresses.sort_by(|a, b| a.name.cmp(&b.name));
        let mut kept: Vec<claims::Claim> = Vec::new();
        for a in addresses {
            let address = match Address::from_json(&a.resource) {
                Ok(address) => address,
                Err(e) => {
                    push(AddressSpec::KIND, a, Phase::Failed, Some(e.to_string()));
                    continue;
                }
            };
            let own = match claims::parse(&a.name, &a.resource) {
                Ok(own) => own,
                Err(e) => {
                    push(AddressSpec::KIND, a, Phase::Failed, Some(e));
                    continue;
                }
            };
            let mut all = kept.clone();
            all.extend(own.iter().cloned());
            if let Some((first, second)) = claims::first_overlap(&all) {
                push(
                    AddressSpec::KIND,
                    a,
                    Phase::Failed,
                    Some(format!(
                        "spec.mqtt_topics: {:?} overlaps {:?} of address {} (a topic belongs to one address)",
                        second.filter, first.filter, first.address
                    )),
                );
                continue;
            }
            kept.extend(own);
            match needs_plan(&address.spec.plan) {
                Some(wait) => push(AddressSpec::KIND, a, Phase::Pending, Some(wait)),
                None => push(AddressSpec::KIND, a, Phase::Ready, None),
            }
        }
    }
    out
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub resources: usize,
    pub written: usize,
}

/// The reconciler of one holder of the role: it follows the catalog with watches (one LIST
/// per kind and tenant per pass; a resource is read again only when it changed) and remembers
/// the statuses it read once at the start and wrote since, so that a pass over an unchanged
/// catalog costs a LIST per kind (plans, tenants, users) and per tenant (addresses), and writes
/// nothing.
#[derive(Debug)]
pub struct Reconciler {
    catalogs: Catalogs,
    implicit_tenants: BTreeSet<String>,
    watches: BTreeMap<(&'static str, String), CatalogWatch>,
    /// Every resource seen, by (kind, tenant, name).
    seen: BTreeMap<(&'static str, String, String), Stored>,
    /// The statuses stored, as far as this holder knows: read once, then what it wrote.
    statuses: Option<BTreeMap<(&'static str, String, String), Status>>,
}

impl Reconciler {
    pub fn new(catalogs: Catalogs, implicit_tenants: BTreeSet<String>) -> Self {
        Self {
            catalogs,
            implicit_tenants,
            watches: BTreeMap::new(),
            seen: BTreeMap::new(),
            statuses: None,
        }
    }

    /// Apply the changes of `kind` in `tenant` to what is seen.
    async fn follow(&mut self, kind: &'static str, tenant: &str) -> Result<(), LogError> {
        let key = (kind, tenant.to_string());
        if !self.watches.contains_key(&key) {
            let catalog = self
                .catalogs
                .log(if in_root(kind) {
                    DEFAULT_TENANT
                } else {
                    tenant
                })
                .await?
                .catalog();
            self.watches.insert(key.clone(), catalog.watch(kind));
        }
        let Some(watch) = self.watches.get_mut(&key) else {
            return Ok(());
        };
        for event in watch.poll().await? {
            match event {
                CatalogEvent::Put(e) => {
                    let stored = Stored::from_entry(e, tenant, None);
                    self.seen
                        .insert((kind, tenant.to_string(), stored.name.clone()), stored);
                }
                CatalogEvent::Deleted { name, .. } => {
                    self.seen.remove(&(kind, tenant.to_string(), name.clone()));
                    if let Some(s) = self.statuses.as_mut() {
                        s.remove(&(kind, tenant.to_string(), name));
                    }
                }
            }
        }
        Ok(())
    }

    /// The statuses stored now, read once (the first pass of a new holder).
    async fn load_statuses(&mut self, tenants: &BTreeSet<String>) -> Result<(), LogError> {
        if self.statuses.is_some() {
            return Ok(());
        }
        let mut out = BTreeMap::new();
        for kind in [
            PlanSpec::KIND,
            TenantSpec::KIND,
            UserSpec::KIND,
            AddressSpec::KIND,
        ] {
            let in_tenants: Vec<&str> = if in_root(kind) {
                vec![DEFAULT_TENANT]
            } else {
                tenants.iter().map(String::as_str).collect()
            };
            for t in in_tenants {
                let catalog = self.catalogs.log(t).await?.catalog();
                for e in catalog
                    .list(&wharf_resources::status::kind_of(kind))
                    .await?
                {
                    if let Ok(status) = serde_json::from_value::<Status>(e.body) {
                        out.insert((kind, t.to_string(), e.name), status);
                    }
                }
            }
        }
        self.statuses = Some(out);
        Ok(())
    }

    /// One pass: follow the catalog, decide, write the statuses that changed.
    pub async fn pass(&mut self) -> Result<Report, LogError> {
        for kind in [PlanSpec::KIND, TenantSpec::KIND, UserSpec::KIND] {
            self.follow(kind, DEFAULT_TENANT).await?;
        }
        let mut tenants: BTreeSet<String> = self.implicit_tenants.clone();
        tenants.insert(DEFAULT_TENANT.to_string());
        tenants.extend(
            self.seen
                .keys()
                .filter(|(k, _, _)| *k == TenantSpec::KIND)
                .map(|(_, _, name)| name.clone()),
        );
        // Tenants no longer declared: forget their addresses.
        self.watches
            .retain(|(kind, t), _| in_root(kind) || tenants.contains(t));
        self.seen
            .retain(|(kind, t, _), _| in_root(kind) || tenants.contains(t));
        for t in &tenants {
            self.follow(AddressSpec::KIND, t).await?;
        }
        self.load_statuses(&tenants).await?;
        let mut snapshot = Snapshot {
            implicit_tenants: self.implicit_tenants.clone(),
            ..Snapshot::default()
        };
        for ((kind, _, _), s) in &self.seen {
            match *kind {
                k if k == PlanSpec::KIND => snapshot.plans.push(s.clone()),
                k if k == TenantSpec::KIND => snapshot.tenants.push(s.clone()),
                k if k == UserSpec::KIND => snapshot.users.push(s.clone()),
                _ => snapshot.addresses.push(s.clone()),
            }
        }
        let decisions = decide(&snapshot);
        let mut report = Report {
            resources: decisions.len(),
            written: 0,
        };
        let statuses = self.statuses.get_or_insert_with(BTreeMap::new);
        for d in decisions {
            let key = (d.kind, d.tenant.clone(), d.name.clone());
            let same = statuses.get(&key).is_some_and(|s| {
                s.phase == d.status.phase
                    && s.message == d.status.message
                    && s.observed_generation == d.status.observed_generation
            });
            if same {
                continue;
            }
            let mut status = d.status.clone();
            status.updated =
                Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            self.catalogs
                .set_status(d.kind, &d.tenant, &d.name, &status)
                .await?;
            tracing::info!(kind = d.kind, tenant = %d.tenant, name = %d.name, phase = ?status.phase,
                           message = status.message.as_deref().unwrap_or(""), "status");
            statuses.insert(key, status);
            report.written += 1;
        }
        Ok(report)
    }
}

/// Plans, tenants and users are kept in the default tenant's catalog.
fn in_root(kind: &str) -> bool {
    !wharf_resources::in_tenant(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(
        kind: &str,
        tenant: &str,
        name: &str,
        spec: serde_json::Value,
        generation: u64,
    ) -> Stored {
        Stored {
            kind: kind.into(),
            name: name.into(),
            tenant: tenant.into(),
            generation,
            resource: json!({"apiVersion": "wharf/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}),
            status: Status::pending(generation),
            updated_ms: 0,
        }
    }

    fn phase_of<'a>(d: &'a [Decision], name: &str) -> (&'a Phase, Option<&'a str>) {
        let s = &d.iter().find(|d| d.name == name).expect("decided").status;
        (&s.phase, s.message.as_deref())
    }

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    #[test]
    fn what_is_missing_keeps_a_resource_pending_until_it_appears() {
        let mut s = Snapshot {
            tenants: vec![stored(
                "Tenant",
                "default",
                "acme",
                json!({"plan": "small"}),
                1,
            )],
            users: vec![
                stored(
                    "User",
                    "default",
                    "u1",
                    json!({"tenant": "acme", "password_hash": HASH}),
                    1,
                ),
                stored(
                    "User",
                    "default",
                    "u2",
                    json!({"tenant": "nowhere", "password_hash": HASH}),
                    1,
                ),
                stored(
                    "User",
                    "default",
                    "u3",
                    json!({"tenant": "seeded", "password_hash": HASH}),
                    1,
                ),
            ],
            implicit_tenants: BTreeSet::from(["seeded".to_string()]),
            ..Snapshot::default()
        };
        let d = decide(&s);
        assert_eq!(
            phase_of(&d, "acme"),
            (&Phase::Pending, Some("waiting for plan \"small\""))
        );
        assert_eq!(
            phase_of(&d, "u1").0,
            &Phase::Ready,
            "the tenant resource exists"
        );
        assert_eq!(phase_of(&d, "u2").0, &Phase::Pending);
        assert_eq!(phase_of(&d, "u3").0, &Phase::Ready, "a users-file tenant");
        s.plans
            .push(stored("Plan", "default", "small", json!({}), 1));
        assert_eq!(phase_of(&decide(&s), "acme").0, &Phase::Ready);
    }

    #[test]
    fn overlapping_claims_fail_the_later_address_by_name() {
        let s = Snapshot {
            addresses: vec![
                stored(
                    "Address",
                    "default",
                    "b",
                    json!({"type": "topic", "mqtt_topics": ["s/+"]}),
                    1,
                ),
                stored(
                    "Address",
                    "default",
                    "a",
                    json!({"type": "topic", "mqtt_topics": ["s/#"]}),
                    3,
                ),
                stored(
                    "Address",
                    "acme",
                    "c",
                    json!({"type": "topic", "mqtt_topics": ["s/#"]}),
                    1,
                ),
                stored("Address", "default", "bad", json!({"max_delivery": 0}), 2),
            ],
            ..Snapshot::default()
        };
        let d = decide(&s);
        assert_eq!(phase_of(&d, "a").0, &Phase::Ready);
        let (phase, message) = phase_of(&d, "b");
        assert_eq!(phase, &Phase::Failed);
        assert!(
            message.is_some_and(|m| m.contains("address a")),
            "{message:?}"
        );
        assert_eq!(
            phase_of(&d, "c").0,
            &Phase::Ready,
            "another tenant's claims are its own"
        );
        let (phase, message) = phase_of(&d, "bad");
        assert_eq!(phase, &Phase::Failed);
        assert!(
            message.is_some_and(|m| m.starts_with("spec.max_delivery")),
            "{message:?}"
        );
        let a = d.iter().find(|d| d.name == "a").expect("a");
        assert_eq!(a.status.observed_generation, 3);
    }

    #[tokio::test]
    async fn a_pass_writes_changed_statuses_only() {
        let log = wharf_log::Log::open(wharf_log::Store::open("memory://").expect("store"))
            .await
            .expect("log");
        let c = Catalogs::new(log);
        let address = wharf_resources::Any::from_json(&json!({"apiVersion": "wharf/v1",
            "kind": "Address", "metadata": {"name": "orders"}}))
        .expect("valid");
        c.apply(&address, "default", None).await.expect("applied");
        let report = |resources, written| Report { resources, written };
        let mut r = Reconciler::new(c.clone(), BTreeSet::new());
        assert_eq!(r.pass().await.expect("pass"), report(1, 1));
        assert_eq!(r.pass().await.expect("pass"), report(1, 0));
        // A new holder reads the statuses once and writes nothing either.
        let mut next = Reconciler::new(c.clone(), BTreeSet::new());
        assert_eq!(next.pass().await.expect("pass"), report(1, 0));
        let got = c
            .get("Address", "default", "orders")
            .await
            .expect("read")
            .expect("there");
        assert_eq!(got.status.phase, Phase::Ready);
        assert!(got.status.updated.is_some());
        c.apply(&address, "default", None).await.expect("applied");
        assert_eq!(
            r.pass().await.expect("pass"),
            report(1, 1),
            "generation 2 looked at"
        );
        c.delete("Address", "default", "orders")
            .await
            .expect("deleted");
        assert_eq!(r.pass().await.expect("pass"), report(0, 0));
        // Created again: looked at again (its old status went with it).
        c.apply(&address, "default", None).await.expect("applied");
        assert_eq!(r.pass().await.expect("pass"), report(1, 1));
    }
}
