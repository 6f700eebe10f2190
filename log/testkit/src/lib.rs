//! # wharf-log-testkit
//!
//! Test support for `wharf-log`, used only as a dev-dependency:
//! - [`FaultStore`]: an `ObjectStore` wrapper that injects latency, transient errors (503s,
//!   timeouts) and "the write succeeded but the response was lost";
//! - [`conformance`]: the one suite every store must pass (memory, local filesystem, a real
//!   S3-compatible server);
//! - [`test_stores`]: the stores the suite runs against in this environment.
//!
//! What it is not: a mock. The fault store wraps real stores and only adds failures.

pub mod conformance;
mod fault;

pub use fault::{FaultConfig, FaultStats, FaultStore};

use std::sync::Arc;

use wharf_log::{Store, StoreKind};

/// The stores to run the conformance suite against here: memory, a temporary directory, and
/// the S3-compatible servers named by `WHARF_TEST_S3_URLS` (space-separated `s3://` URLs;
/// `AWS_*` variables configure them). Each store gets a fresh prefix.
pub fn test_stores() -> Vec<(String, Store, Option<tempfile::TempDir>)> {
    let mut out = Vec::new();
    out.push((
        "memory".to_string(),
        Store::new(
            Arc::new(object_store::memory::InMemory::new()),
            StoreKind::Memory,
            "memory://",
        ),
        None,
    ));
    if let Ok(dir) = tempfile::tempdir()
        && let Ok(store) = Store::open(&format!("file://{}", dir.path().display()))
    {
        out.push(("file".to_string(), store, Some(dir)));
    }
    for url in s3_urls() {
        let url = with_fresh_prefix(&url);
        match Store::open(&url) {
            Ok(store) => out.push((url.clone(), store, None)),
            Err(e) => panic!("WHARF_TEST_S3_URLS names {url}, which does not open: {e}"),
        }
    }
    out
}

/// The S3 URLs configured for tests (empty when none).
pub fn s3_urls() -> Vec<String> {
    std::env::var("WHARF_TEST_S3_URLS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `s3://bucket[/prefix][?query]` with a new random path part appended to the prefix.
pub fn with_fresh_prefix(url: &str) -> String {
    let (path, query) = url
        .split_once('?')
        .map_or((url, None), |(p, q)| (p, Some(q)));
    let fresh = format!("{}/{}", path.trim_end_matches('/'), uuid::Uuid::new_v4());
    match query {
        Some(q) => format!("{fresh}?{q}"),
        None => fresh,
    }
}
