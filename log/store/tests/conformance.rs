//! The conformance suite against every store available here: memory, the local filesystem
//! (fsync on) and, when `WHARF_TEST_S3_URLS` is set, real S3-compatible servers. In CI
//! (`CI=true`) a missing S3 configuration is a failure, not a skip.

use std::sync::Arc;

use wharf_log::{Store, StoreKind};
use wharf_log_testkit::{conformance, s3_urls, with_fresh_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    conformance::run("memory", &|| {
        Store::new(
            Arc::new(object_store::memory::InMemory::new()),
            StoreKind::Memory,
            "memory://",
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_filesystem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    conformance::run("file", &move || {
        let sub = root.join(uuid::Uuid::new_v4().to_string());
        Store::open(&format!("file://{}", sub.display())).expect("open file store")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_compatible_servers() {
    let urls = s3_urls();
    if urls.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set WHARF_TEST_S3_URLS (see .ci/run)"
        );
        eprintln!("WHARF_TEST_S3_URLS is not set: skipping the S3 conformance run");
        return;
    }
    for url in urls {
        conformance::run(&url, &|| {
            Store::open(&with_fresh_prefix(&url)).expect("open s3 store")
        })
        .await;
    }
}
