//! Periodic log housekeeping run by `wharf up`: retention, compaction, then garbage
//! collection.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use wharf_log::{Log, format::checkpoint::Retention};
use wharf_log_format::StreamId;

use crate::settings::RetentionSettings;

/// Retention per address from the catalog: `Address` resources' `spec.retention` (an age such
/// as `"7d"`) and `spec.retention_bytes`. Streams are named after their address (`orders`, or
/// `orders~3` for partition 3).
pub async fn policies(log: &Log) -> Result<BTreeMap<String, Retention>> {
    let mut out = BTreeMap::new();
    for entry in log.catalog().list("Address").await? {
        let spec = &entry.body["spec"];
        let max_age_ms = match spec["retention"].as_str() {
            Some(s) => match humantime::parse_duration(s) {
                Ok(d) => Some(d.as_millis() as i64),
                Err(e) => {
                    tracing::warn!(address = %entry.name, retention = s, error = %e, "ignoring bad spec.retention");
                    None
                }
            },
            None => None,
        };
        let max_bytes = spec["retention_bytes"].as_u64();
        out.insert(
            entry.name,
            Retention {
                max_age_ms,
                max_bytes,
            },
        );
    }
    Ok(out)
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
        .apply_retention(|stream: &StreamId| {
            let address = stream.address();
            per_address.get(address).copied().unwrap_or(default)
        })
        .await?;
    if !trimmed.is_empty() {
        tracing::info!(streams = trimmed.len(), "retention trimmed streams");
    }
    let compaction = log.compact(64).await?;
    let gc = log.collect_garbage().await?;
    tracing::debug!(?compaction, ?gc, "housekeeping done");
    Ok(())
}
