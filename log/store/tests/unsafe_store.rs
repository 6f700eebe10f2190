//! A store that silently ignores put-if-absent (as garage and s3s-fs do) is refused at
//! start-up with an error naming it.

use std::{fmt, ops::Range, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, memory::InMemory,
    path::Path,
};
use wharf_log::{ErrorKind, Store, StoreKind};

/// Turns every create-only write into an overwrite.
#[derive(Debug)]
struct IgnoresIfNoneMatch(InMemory);

impl fmt::Display for IgnoresIfNoneMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IgnoresIfNoneMatch")
    }
}

#[async_trait]
impl ObjectStore for IgnoresIfNoneMatch {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> Result<PutResult> {
        opts.mode = PutMode::Overwrite;
        self.0.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.0.get_opts(location, options).await
    }
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.0.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.0.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn store_ignoring_conditional_writes_is_refused() {
    let store = Store::new(
        Arc::new(IgnoresIfNoneMatch(InMemory::new())),
        StoreKind::S3,
        "s3://garage-like/bucket",
    );
    let err = store
        .verify_conditional_put()
        .await
        .expect_err("must be refused");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let msg = err.to_string();
    assert!(
        msg.contains("s3://garage-like/bucket"),
        "names the store: {msg}"
    );
    assert!(msg.contains("If-None-Match"), "says why: {msg}");
}

#[tokio::test]
async fn honest_stores_pass() {
    let store = Store::new(Arc::new(InMemory::new()), StoreKind::Memory, "memory://");
    store
        .verify_conditional_put()
        .await
        .expect("memory honours create-only");
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = Store::open(&format!("file://{}", dir.path().display())).expect("open");
    fs.verify_conditional_put()
        .await
        .expect("local filesystem honours create-only");
}
