//! Periodic log housekeeping run by `wharf up`: retention, compaction, then garbage
//! collection.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use wharf_adapter_core::names;
use wharf_log::{Log, format::checkpoint::Retention};
use wharf_log_format::StreamId;

use crate::{
    settings::{RetentionSettings, Settings},
    tenants::{Tenants, open_log},
};

/// Retention per address from the catalog: `Address` resources' `spec.retention` (an age such
/// as `"7d"`) and `spec.retention_bytes`. Streams are named after their address (`orders`, or
/// `orders~3` for partition 3).
pub async fn policies(log: &Log) -> Result<BTreeMap<String, Retention>> {
    let mut out = BTreeMap::new();
    for entry in log.catalog().list("Address").await? {
        let spec = match wharf_resources::AddressSpec::of(&entry.body) {
            Ok(spec) => spec,
            Err(e) => {
                // Written by hand or by another version: the default retention, and say so.
                tracing::warn!(address = %entry.name, error = %e, "ignoring an Address resource that does not validate");
                continue;
            }
        };
        out.insert(
            entry.name,
            Retention {
                max_age_ms: spec.retention().map(|d| d.as_millis() as i64),
                max_bytes: spec.retention_bytes,
            },
        );
    }
    Ok(out)
}

/// The retention of one stream: its address's, else the built-in one of the MQTT adapter's
/// own streams, else the default.
fn policy_for(
    address: &str,
    per_address: &BTreeMap<String, Retention>,
    default: Retention,
) -> Retention {
    if let Some(r) = per_address.get(address) {
        return *r;
    }
    match address {
        // The latest retained message of a topic, and the will registration of a connection
        // open for months, may sit anywhere in these: trimming them by age or size would lose
        // them (compaction by key is what they need).
        names::RETAINED_STREAM | names::WILLS_STREAM => Retention::default(),
        // Connect records only order takeovers among connections open now.
        names::CONNECTS_STREAM => Retention {
            max_age_ms: Some(CONNECTS_KEPT.as_millis() as i64),
            max_bytes: None,
        },
        _ => default,
    }
}

/// How long CONNECT records are kept.
const CONNECTS_KEPT: Duration = Duration::from_secs(3600);

/// One housekeeping pass over every tenant's log: the served ones, and those in the store that
/// this process no longer serves (opened into `unserved` on first need). A failing tenant is
/// logged and tried again next time; the others go on.
pub async fn every_tenant(
    served: &Tenants,
    unserved: &mut BTreeMap<String, Log>,
    settings: &Settings,
) {
    let root = served.default().log.store().clone();
    match root.tenants().await {
        Ok(names) => {
            for name in names {
                if served.get(&name).is_some() || unserved.contains_key(&name) {
                    continue;
                }
                match open_log(&root, &name, settings).await {
                    Ok(log) => {
                        unserved.insert(name, log);
                    }
                    Err(e) => {
                        tracing::warn!(tenant = name, error = %e, "cannot open the tenant's log for housekeeping")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list the tenants in the store"),
    }
    let served = served.list();
    let logs = served
        .iter()
        .map(|(name, t)| (name, &t.log))
        .chain(unserved.iter());
    for (name, log) in logs {
        if let Err(e) = run_once(log, &settings.retention).await {
            tracing::warn!(tenant = name, error = %e, "housekeeping failed; will retry");
        }
    }
}

/// One housekeeping pass.
pub async fn run_once(log: &Log, defaults: &RetentionSettings) -> Result<()> {
    log.refresh().await?;
    let per_address = policies(log).await?;
    let default = Retention {
        max_age_ms: defaults.max_age.map(|d: Duration| d.as_millis() as i64),
        max_bytes: defaults.max_bytes,
    };
    let trimmed = log
        .apply_retention(|stream: &StreamId| policy_for(stream.address(), &per_address, default))
        .await?;
    if !trimmed.is_empty() {
        tracing::info!(streams = trimmed.len(), "retention trimmed streams");
    }
    let compaction = log.compact(64).await?;
    let gc = log.collect_garbage().await?;
    tracing::debug!(?compaction, ?gc, "housekeeping done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mqtt_adapters_streams_have_their_own_retention() {
        let default = Retention {
            max_age_ms: Some(1_000),
            max_bytes: Some(10),
        };
        let mut per_address = BTreeMap::new();
        let none = BTreeMap::new();
        assert_eq!(policy_for("orders", &none, default), default);
        assert_eq!(policy_for("mqtt-default", &none, default), default);
        assert_eq!(
            policy_for("mqtt-retained", &none, default),
            Retention::default(),
            "never trimmed by the default"
        );
        assert_eq!(
            policy_for("mqtt-wills", &none, default),
            Retention::default()
        );
        assert_eq!(
            policy_for("mqtt-connects", &none, default).max_age_ms,
            Some(3_600_000)
        );
        let declared = Retention {
            max_age_ms: Some(5),
            max_bytes: None,
        };
        per_address.insert("mqtt-retained".to_string(), declared);
        assert_eq!(
            policy_for("mqtt-retained", &per_address, default),
            declared,
            "a declared address wins"
        );
    }
}
