//! `wharf address apply|list|delete`: Address resources in the store's catalog.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use wharf_log::Log;
use wharf_log_format::catalog::DEFAULT_TENANT;

use crate::{settings::Settings, tenants::open_log};

/// Check an Address resource (`wharf_resources`: fields this version does not know are kept)
/// and the topics it claims; its name.
fn validate(resource: &Value) -> Result<String> {
    let address = wharf_resources::Address::from_json(resource).map_err(anyhow::Error::msg)?;
    let name = address.name().to_string();
    wharf_adapter_core::claims::parse(&name, resource).map_err(anyhow::Error::msg)?;
    Ok(name)
}

/// Apply every resource in `file` (one JSON object, or an array of them), each to the log of
/// the tenant its `metadata.tenant` names, else `tenant`. `root` is the default tenant's log
/// (the store root); other tenants' logs are opened for the time it takes.
pub async fn apply(root: &Log, settings: &Settings, file: &Path, tenant: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let resources = match parsed {
        Value::Array(items) => items,
        one => vec![one],
    };
    // Validate all before writing any.
    let mut by_tenant: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for (i, r) in resources.into_iter().enumerate() {
        let name = validate(&r).with_context(|| format!("{}: resource {i}", file.display()))?;
        let t = r["metadata"]["tenant"]
            .as_str()
            .unwrap_or(tenant)
            .to_string();
        by_tenant.entry(t).or_default().push((name, r));
    }
    let mut logs = Vec::new();
    for (t, resources) in by_tenant {
        let log = if t == DEFAULT_TENANT {
            root.clone()
        } else {
            open_log(root.store(), &t, settings).await?
        };
        check_claims(&log, &resources, file, &t).await?;
        logs.push((t, log, resources));
    }
    for (t, log, resources) in logs {
        for (name, resource) in resources {
            let rev = log.catalog().put("Address", &name, resource).await?;
            if t == DEFAULT_TENANT {
                println!("address/{name} applied (revision {rev})");
            } else {
                println!("address/{name} applied in tenant {t} (revision {rev})");
            }
        }
    }
    Ok(())
}

/// No topic claimed twice in one tenant: by `resources`, or by them and the addresses already
/// declared there.
async fn check_claims(
    log: &Log,
    resources: &[(String, Value)],
    file: &Path,
    tenant: &str,
) -> Result<()> {
    let mut claims = Vec::new();
    for e in log.catalog().list("Address").await? {
        if !resources.iter().any(|(name, _)| *name == e.name) {
            claims.extend(wharf_adapter_core::claims::parse(&e.name, &e.body).unwrap_or_default());
        }
    }
    for (name, r) in resources {
        claims.extend(wharf_adapter_core::claims::parse(name, r).map_err(anyhow::Error::msg)?);
    }
    if let Some((a, b)) = wharf_adapter_core::claims::first_overlap(&claims) {
        bail!(
            "{}: spec.mqtt_topics of {} ({}) and of {} ({}) overlap in tenant {tenant}: a topic belongs to one address",
            file.display(),
            a.address,
            a.filter,
            b.address,
            b.filter
        );
    }
    Ok(())
}

pub async fn list(log: &Log) -> Result<()> {
    for e in log.catalog().list("Address").await? {
        println!("{}", e.body);
    }
    Ok(())
}

pub async fn delete(log: &Log, name: &str) -> Result<()> {
    if log.catalog().delete("Address", name).await? {
        println!("address/{name} deleted");
        Ok(())
    } else {
        bail!("address/{name} does not exist")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(spec: Value) -> Result<String> {
        validate(&serde_json::json!({
            "apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "orders"}, "spec": spec
        }))
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            spec(
                serde_json::json!({"type": "queue", "max_delivery": 5, "dead_letter": "orders.dlq"})
            )
            .expect("valid"),
            "orders"
        );
        for (bad, field) in [
            (serde_json::json!({"type": "fifo"}), "spec.type"),
            (serde_json::json!({"max_delivery": 0}), "spec.max_delivery"),
            (
                serde_json::json!({"max_delivery": "5"}),
                "spec.max_delivery",
            ),
            (
                serde_json::json!({"dead_letter": "bad name!"}),
                "spec.dead_letter",
            ),
            (serde_json::json!({"retention": "soon"}), "spec.retention"),
            (
                serde_json::json!({"mqtt_topics": ["a/#/b"]}),
                "spec.mqtt_topics",
            ),
        ] {
            let e = spec(bad).expect_err("invalid").to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
