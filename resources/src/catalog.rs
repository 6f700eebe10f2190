//! Resources as the store keeps them: each in a catalog (`catalog/<Kind>/<name>/`, see
//! `log/README.md`), its status beside it (`catalog/<Kind>.status/<name>/`).
//!
//! Addresses live in their tenant's catalog; Plans, Tenants and Users in the default tenant's
//! (the store root's), since they are about the whole installation. [`Catalogs`] opens the
//! logs of other tenants when first needed and keeps them.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value;
use tokio::sync::Mutex;
use wharf_log::{Log, LogError};
use wharf_log_format::catalog::{CatalogEntry, DEFAULT_TENANT};

use crate::{Any, Invalid, in_tenant, status::Status};

/// A resource as stored: its JSON (with `metadata.generation`, and `metadata.tenant` for an
/// address), its generation, and its status (Pending if nothing has looked at this generation).
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub kind: String,
    pub name: String,
    /// The tenant whose catalog holds it.
    pub tenant: String,
    pub generation: u64,
    pub resource: Value,
    pub status: Status,
    pub updated_ms: i64,
}

impl Stored {
    /// The resource with its status, as the API returns it.
    pub fn to_json(&self) -> Value {
        let mut out = self.resource.clone();
        if let Some(o) = out.as_object_mut() {
            o.insert(
                "status".into(),
                serde_json::to_value(&self.status).unwrap_or(Value::Null),
            );
        }
        out
    }
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// Not at the generation the caller expected (create of an existing one: expected 0).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Store(#[from] LogError),
}

/// The catalogs of every tenant of a store.
#[derive(Clone)]
pub struct Catalogs {
    root: Log,
    open: Arc<Mutex<BTreeMap<String, Log>>>,
}

impl std::fmt::Debug for Catalogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Catalogs({})", self.root.store().url)
    }
}

impl Catalogs {
    /// Over the store whose root log is `root`.
    pub fn new(root: Log) -> Self {
        Self {
            root,
            open: Arc::default(),
        }
    }

    /// Use `log` for tenant `name` (a log the process has open already).
    pub async fn with_log(&self, name: &str, log: Log) {
        self.open.lock().await.insert(name.to_string(), log);
    }

    pub fn root(&self) -> &Log {
        &self.root
    }

    /// The log of tenant `name`, opened on first need.
    pub async fn log(&self, name: &str) -> Result<Log, LogError> {
        if name == DEFAULT_TENANT {
            return Ok(self.root.clone());
        }
        let mut open = self.open.lock().await;
        if let Some(log) = open.get(name) {
            return Ok(log.clone());
        }
        let log = Log::open_with(
            self.root.store().tenant(name)?,
            self.root.settings().clone(),
            self.root.clock().clone(),
        )
        .await?;
        open.insert(name.to_string(), log.clone());
        Ok(log)
    }

    /// The log holding resources of `kind` for `tenant`.
    async fn log_for(&self, kind: &str, tenant: &str) -> Result<Log, LogError> {
        if in_tenant(kind) {
            self.log(tenant).await
        } else {
            Ok(self.root.clone())
        }
    }

    /// Every live resource of `kind` (in `tenant`, for addresses), with status.
    pub async fn list(&self, kind: &str, tenant: &str) -> Result<Vec<Stored>, LogError> {
        let log = self.log_for(kind, tenant).await?;
        let catalog = log.catalog();
        let statuses: BTreeMap<String, Status> = catalog
            .list(&crate::status::kind_of(kind))
            .await?
            .into_iter()
            .filter_map(|e| Some((e.name, serde_json::from_value(e.body).ok()?)))
            .collect();
        let mut out = Vec::new();
        for e in catalog.list(kind).await? {
            let status = statuses.get(&e.name).cloned();
            out.push(Stored::from_entry(e, tenant, status));
        }
        Ok(out)
    }

    /// One resource, with status.
    pub async fn get(
        &self,
        kind: &str,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Stored>, LogError> {
        let catalog = self.log_for(kind, tenant).await?.catalog();
        let Some(e) = catalog.get(kind, name).await? else {
            return Ok(None);
        };
        let status = catalog
            .get(&crate::status::kind_of(kind), name)
            .await?
            .and_then(|s| serde_json::from_value(s.body).ok());
        Ok(Some(Stored::from_entry(e, tenant, status)))
    }

    /// Create or replace a resource (checked again here: the catalog holds only resources
    /// that validate). An address goes to its `metadata.tenant`, else `tenant`. `expected`:
    /// the generation it must be at (0: must not exist). Returns the new generation.
    pub async fn apply(
        &self,
        resource: &Any,
        tenant: &str,
        expected: Option<u64>,
    ) -> Result<u64, WriteError> {
        let kind = resource.kind();
        let tenant = resource.metadata().tenant.as_deref().unwrap_or(tenant);
        let mut body = resource.to_json();
        // The generation is the catalog's to say; the tenant is where it is kept.
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("generation");
        }
        let catalog = self.log_for(kind, tenant).await?.catalog();
        let name = resource.name();
        if let Any::Address(address) = resource {
            self.check_claims(address, tenant).await?;
        }
        let result = match expected {
            Some(n) => {
                let at = current_or_tombstone(&catalog, kind, name, n).await?;
                catalog.put_if(kind, name, at, body).await
            }
            None => catalog.put(kind, name, body).await,
        };
        match result {
            Ok(generation) => Ok(generation),
            Err(LogError::Conflict(m)) => Err(WriteError::Conflict(m)),
            Err(e) => Err(e.into()),
        }
    }

    /// An address's `spec.mqtt_topics` must not overlap another address's in its tenant (a
    /// topic belongs to one address). Two applies at once can still both pass: the
    /// reconciler then fails the later one by name.
    async fn check_claims(&self, address: &crate::Address, tenant: &str) -> Result<(), WriteError> {
        let Some(own) = &address.spec.mqtt_topics else {
            return Ok(());
        };
        for other in self.log(tenant).await?.catalog().list("Address").await? {
            if other.name == address.name() {
                continue;
            }
            let Ok(spec) = crate::AddressSpec::of(&other.body) else {
                continue;
            };
            for (i, f) in own.iter().enumerate() {
                if let Some(g) = spec
                    .mqtt_topics
                    .iter()
                    .flatten()
                    .find(|g| crate::topic::overlap(f, g))
                {
                    return Err(Invalid::new(
                        format!("spec.mqtt_topics[{i}]"),
                        format!(
                            "{f:?} overlaps {g:?} of address {} in tenant {tenant} (a topic belongs to one address)",
                            other.name
                        ),
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Delete a resource and its status. False if it did not exist.
    pub async fn delete(&self, kind: &str, tenant: &str, name: &str) -> Result<bool, LogError> {
        let catalog = self.log_for(kind, tenant).await?.catalog();
        let existed = catalog.delete(kind, name).await?;
        if existed {
            catalog.delete(&crate::status::kind_of(kind), name).await?;
        }
        Ok(existed)
    }

    /// Record what became of generation `status.observed_generation` of a resource.
    pub async fn set_status(
        &self,
        kind: &str,
        tenant: &str,
        name: &str,
        status: &Status,
    ) -> Result<(), LogError> {
        let catalog = self.log_for(kind, tenant).await?.catalog();
        let body = serde_json::to_value(status).unwrap_or(Value::Null);
        catalog
            .put(&crate::status::kind_of(kind), name, body)
            .await
            .map(|_| ())
    }

    /// The tenants declared: the default one and those with a Tenant resource.
    pub async fn tenant_names(&self) -> Result<Vec<String>, LogError> {
        let mut names = vec![DEFAULT_TENANT.to_string()];
        for e in self
            .root
            .catalog()
            .list(<crate::TenantSpec as crate::Spec>::KIND)
            .await?
        {
            names.push(e.name);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// The revision a put-if must name for "at generation `n`": a deleted resource's series goes
/// on past its tombstone, so "must not exist" (0) means "at its tombstone" if it had one.
async fn current_or_tombstone(
    catalog: &wharf_log::Catalog,
    kind: &str,
    name: &str,
    n: u64,
) -> Result<u64, WriteError> {
    if n != 0 {
        return Ok(n);
    }
    match catalog.revision(kind, name).await? {
        None => Ok(0),
        Some((rev, true)) => Ok(rev),
        Some((rev, false)) => Err(WriteError::Conflict(format!(
            "{kind}/{name} exists (generation {rev})"
        ))),
    }
}

fn tenant_of(kind: &str, tenant: &str) -> String {
    if in_tenant(kind) {
        tenant.to_string()
    } else {
        DEFAULT_TENANT.to_string()
    }
}

impl Stored {
    /// A catalog entry of a resource kept in `tenant`'s catalog (for plans, tenants and users
    /// that is the default tenant's whatever `tenant` says), with its stored status, if any:
    /// `metadata.generation` (and an address's `metadata.tenant`) added.
    pub fn from_entry(e: CatalogEntry, tenant: &str, status: Option<Status>) -> Self {
        let tenant = tenant_of(&e.kind, tenant);
        let mut resource = e.body;
        if let Some(m) = resource.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("generation".into(), Value::from(e.revision));
            if in_tenant(&e.kind) {
                m.insert("tenant".into(), Value::from(tenant.clone()));
            }
        }
        Stored {
            status: Status::shown(status, e.revision),
            kind: e.kind,
            name: e.name,
            tenant,
            generation: e.revision,
            resource,
            updated_ms: e.updated_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Phase;
    use serde_json::json;
    use wharf_log::Store;

    async fn catalogs() -> Catalogs {
        let store = Store::open("memory://").expect("memory store");
        Catalogs::new(Log::open(store).await.expect("log"))
    }

    fn address(name: &str, tenant: Option<&str>) -> Any {
        let mut r = json!({"apiVersion": "wharf/v1", "kind": "Address",
                           "metadata": {"name": name}, "spec": {"type": "queue"}});
        if let Some(t) = tenant {
            r["metadata"]["tenant"] = json!(t);
        }
        Any::from_json(&r).expect("valid")
    }

    #[tokio::test]
    async fn generations_count_writes_and_status_follows_them() {
        let c = catalogs().await;
        let a = address("orders", None);
        assert_eq!(c.apply(&a, "default", Some(0)).await.expect("created"), 1);
        let got = c
            .get("Address", "default", "orders")
            .await
            .expect("read")
            .expect("there");
        assert_eq!(got.generation, 1);
        assert_eq!(got.status.phase, Phase::Pending);
        assert_eq!(got.resource["metadata"]["generation"], 1);
        assert_eq!(got.to_json()["status"]["phase"], "Pending");
        let ready = Status {
            phase: Phase::Ready,
            message: None,
            observed_generation: 1,
            updated: None,
        };
        c.set_status("Address", "default", "orders", &ready)
            .await
            .expect("status");
        let got = c
            .get("Address", "default", "orders")
            .await
            .expect("read")
            .expect("there");
        assert_eq!(got.status, ready);
        // Writing status is not a change of the resource.
        assert_eq!(got.generation, 1);
        assert_eq!(c.list("Address", "default").await.expect("list").len(), 1);
        // A create of an existing one conflicts; a replace makes generation 2, Pending again.
        assert!(matches!(
            c.apply(&a, "default", Some(0)).await,
            Err(WriteError::Conflict(_))
        ));
        assert_eq!(c.apply(&a, "default", None).await.expect("replaced"), 2);
        let got = c
            .get("Address", "default", "orders")
            .await
            .expect("read")
            .expect("there");
        assert_eq!(got.status.phase, Phase::Pending);
        // Deleted: gone with its status; created again, it goes on from its tombstone.
        assert!(
            c.delete("Address", "default", "orders")
                .await
                .expect("delete")
        );
        assert!(
            c.get("Address", "default", "orders")
                .await
                .expect("read")
                .is_none()
        );
        assert!(
            !c.delete("Address", "default", "orders")
                .await
                .expect("delete")
        );
        assert_eq!(c.apply(&a, "default", Some(0)).await.expect("created"), 4);
        let got = c
            .get("Address", "default", "orders")
            .await
            .expect("read")
            .expect("there");
        assert_eq!(
            got.status.phase,
            Phase::Pending,
            "no status left from before"
        );
    }

    #[tokio::test]
    async fn overlapping_topic_claims_are_refused_naming_the_field() {
        let c = catalogs().await;
        let claim = |name: &str, filter: &str| {
            Any::from_json(&json!({"apiVersion": "wharf/v1", "kind": "Address",
                "metadata": {"name": name}, "spec": {"type": "topic", "mqtt_topics": [format!("{name}/own"), filter.to_string()]}}))
            .expect("valid")
        };
        c.apply(&claim("a", "s/#"), "default", None)
            .await
            .expect("first");
        c.apply(&claim("a", "s/+"), "default", None)
            .await
            .expect("its own claims may change");
        match c.apply(&claim("b", "s/1"), "default", None).await {
            Err(WriteError::Invalid(e)) => {
                assert_eq!(e.field, "spec.mqtt_topics[1]", "{e}");
                assert!(e.problem.contains("address a"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        c.apply(&claim("b", "s/1"), "acme", None)
            .await
            .expect("another tenant");
    }

    #[tokio::test]
    async fn addresses_live_in_their_tenant_and_the_rest_at_the_root() {
        let c = catalogs().await;
        c.apply(&address("orders", Some("acme")), "default", None)
            .await
            .expect("applied");
        c.apply(&address("jobs", None), "acme", None)
            .await
            .expect("applied");
        assert!(c.list("Address", "default").await.expect("list").is_empty());
        let acme = c.list("Address", "acme").await.expect("list");
        let names: Vec<_> = acme.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["jobs", "orders"]);
        assert_eq!(acme[0].resource["metadata"]["tenant"], "acme");
        let tenant = Any::from_json(&json!({"apiVersion": "wharf/v1", "kind": "Tenant",
                                            "metadata": {"name": "acme"}}))
        .expect("valid");
        c.apply(&tenant, "acme", None).await.expect("applied");
        assert_eq!(c.list("Tenant", "whatever").await.expect("list").len(), 1);
        assert_eq!(c.tenant_names().await.expect("names"), ["acme", "default"]);
    }
}
