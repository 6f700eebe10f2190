//! `wharf address apply|list|delete`: Address resources in the store's catalog.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use wharf_log::Log;
use wharf_log_format::catalog::valid_name;

/// Check the parts of an Address resource the log relies on; the rest of the spec is the
/// adapters' to interpret.
fn validate(resource: &Value) -> Result<String> {
    if resource["apiVersion"] != "wharf/v1" {
        bail!(
            "apiVersion must be \"wharf/v1\", not {}",
            resource["apiVersion"]
        );
    }
    if resource["kind"] != "Address" {
        bail!("kind must be \"Address\", not {}", resource["kind"]);
    }
    let Some(name) = resource["metadata"]["name"].as_str() else {
        bail!("metadata.name is missing");
    };
    if !valid_name(name) || name.contains('~') {
        bail!(
            "metadata.name {name:?} may only contain A-Z a-z 0-9 . _ - and must not start with '.'"
        );
    }
    if let Some(r) = resource["spec"].get("retention") {
        let ok = r
            .as_str()
            .is_some_and(|s| humantime::parse_duration(s).is_ok());
        if !ok {
            bail!("spec.retention {r} is not a duration such as \"7d\"");
        }
    }
    if let Some(b) = resource["spec"].get("retention_bytes")
        && !b.is_u64()
    {
        bail!("spec.retention_bytes {b} is not a whole number of bytes");
    }
    Ok(name.to_string())
}

/// Apply every resource in `file`: one JSON object, or an array of them.
pub async fn apply(log: &Log, file: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let resources = match parsed {
        Value::Array(items) => items,
        one => vec![one],
    };
    // Validate all before writing any.
    let named = resources
        .iter()
        .enumerate()
        .map(|(i, r)| validate(r).with_context(|| format!("{}: resource {i}", file.display())))
        .collect::<Result<Vec<_>>>()?;
    for (name, resource) in named.iter().zip(resources) {
        let rev = log.catalog().put("Address", name, resource).await?;
        println!("address/{name} applied (revision {rev})");
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
