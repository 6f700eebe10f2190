//! Opening a store from a URL, transient-error retries, and the start-up safety check.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, aws::AmazonS3Builder,
    memory::InMemory, path::Path, prefix::PrefixStore,
};
use wharf_log_fs::{FsOptions, FsStore};

use wharf_log_format::catalog::{DEFAULT_TENANT, TENANT_RULE, valid_tenant};

use crate::{
    LogError, Result, paths,
    settings::{LogSettings, StoreKind},
};

/// A store opened from a URL.
#[derive(Clone)]
pub struct Store {
    pub object_store: Arc<dyn ObjectStore>,
    pub kind: StoreKind,
    /// The URL it was opened from, for messages.
    pub url: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

/// `store`, its requests counted (`crate::metrics`).
fn instrumented(store: impl ObjectStore) -> Arc<dyn ObjectStore> {
    Arc::new(crate::metrics::Instrumented::new(Arc::new(store)))
}

impl Store {
    /// Wrap an existing object store (tests, custom wrappers).
    pub fn new(
        object_store: Arc<dyn ObjectStore>,
        kind: StoreKind,
        url: impl Into<String>,
    ) -> Self {
        Self {
            object_store,
            kind,
            url: url.into(),
        }
    }

    /// Open a store from a URL:
    /// - `file://DIR`: the local filesystem, created if missing, fsync on, the log's segments
    ///   appended to a journal (`wharf-log-fs`);
    /// - `s3://bucket/prefix`: S3 or an S3-compatible server, configured by the standard `AWS_*`
    ///   variables (`AWS_ENDPOINT_URL` for a custom endpoint, `AWS_ALLOW_HTTP=true` for http),
    ///   or `s3://bucket/prefix?endpoint=http://host:port` (http allowed for that endpoint);
    /// - `memory://`: in memory, for tests.
    pub fn open(url: &str) -> Result<Self> {
        let invalid = |detail: String| LogError::invalid("store URL", format!("{url:?}: {detail}"));
        if url == "memory://" || url == "memory:" {
            return Ok(Self::new(
                instrumented(InMemory::new()),
                StoreKind::Memory,
                url,
            ));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket name".into()));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            let region = std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|_| "us-east-1".into());
            builder = builder.with_region(region);
            let mut endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("endpoint", v)) => endpoint = Some(v.to_string()),
                    _ => {
                        return Err(invalid(format!(
                            "unknown query parameter {pair:?} (only endpoint=URL)"
                        )));
                    }
                }
            }
            if let Some(endpoint) = endpoint {
                // Without credentials the S3 client falls back to EC2 instance metadata,
                // which an S3-compatible server on another host never has: say so plainly.
                let has_credentials = std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
                    || std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
                    || std::env::var_os("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
                    || std::env::var_os("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some();
                if !has_credentials {
                    return Err(invalid(format!(
                        "endpoint {endpoint} needs credentials: set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY"
                    )));
                }
                // An endpoint named in the URL itself says plain http is intended.
                if endpoint.starts_with("http://") && query.contains("endpoint=") {
                    builder = builder.with_allow_http(true);
                }
                // Custom endpoints (ministack, moto, MinIO) want path-style requests.
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            let s3 = builder.build().map_err(|e| invalid(e.to_string()))?;
            let prefix = prefix.trim_matches('/');
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                instrumented(s3)
            } else {
                instrumented(PrefixStore::new(s3, Path::from(prefix)))
            };
            return Ok(Self::new(store, StoreKind::S3, url));
        }
        let dir = match url.strip_prefix("file://") {
            Some(d) => d,
            None if url.contains("://") => {
                return Err(invalid(
                    "unknown scheme (use file:///ABSOLUTE/DIR, s3://bucket/prefix or memory://)"
                        .into(),
                ));
            }
            None => {
                return Err(invalid(
                    "not a store URL (use file:///ABSOLUTE/DIR, s3://bucket/prefix or memory://)"
                        .into(),
                ));
            }
        };
        if dir.is_empty() {
            return Err(invalid("no directory".into()));
        }
        // A relative directory would depend on where the process happens to start (and
        // `file://dir` names the host `dir` in URL terms): only absolute paths.
        if !std::path::Path::new(dir).is_absolute() {
            return Err(invalid(format!(
                "the directory must be absolute: file:///{} or file://$PWD/{}",
                dir.trim_start_matches("./"),
                dir.trim_start_matches("./")
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| invalid(format!("cannot create {dir}: {e}")))?;
        // Segments go to a journal (one append and one fdatasync per commit, not a file and two
        // fsyncs); everything else is a file, written with fsync (`wharf-log-fs`).
        let fs = FsStore::new(dir, FsOptions::default()).map_err(|e| invalid(e.to_string()))?;
        Ok(Self::new(instrumented(fs), StoreKind::File, url))
    }

    /// The store of tenant `name`: the root for the default tenant, `tenants/<name>/` for any
    /// other. A tenant's log has the whole layout of `log/README.md` under its prefix, so
    /// tenants share nothing but the bucket (and a log opened on one never lists another's
    /// keys: every listing is under a fixed top-level folder).
    pub fn tenant(&self, name: &str) -> Result<Self> {
        if !valid_tenant(name) {
            return Err(LogError::invalid(
                "tenant name",
                format!("{name:?} is not {TENANT_RULE}"),
            ));
        }
        if name == DEFAULT_TENANT {
            return Ok(self.clone());
        }
        Ok(Self::new(
            Arc::new(PrefixStore::new(
                self.object_store.clone(),
                paths::tenant_dir(name),
            )),
            self.kind,
            format!("{} (tenant {name})", self.url),
        ))
    }

    /// The tenants other than the default one that have anything in the store.
    pub async fn tenants(&self) -> Result<Vec<String>> {
        let dir = paths::tenants_dir();
        let listed = self
            .object_store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| LogError::store(&dir, e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| valid_tenant(n) && n != DEFAULT_TENANT)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Check that the store really honours put-if-absent: write a probe object twice with
    /// `PutMode::Create`; the second write must fail and the first content must survive.
    /// Some S3-compatible servers ignore `If-None-Match` and silently overwrite, which would
    /// let two writers both "win" a segment number.
    pub async fn verify_conditional_put(&self) -> Result<()> {
        let path = paths::probe(&uuid::Uuid::new_v4().to_string());
        let unsafe_store = |detail: String| LogError::UnsafeStore {
            store: self.url.clone(),
            detail,
        };
        let create = PutOptions::from(PutMode::Create);
        self.object_store
            .put_opts(&path, PutPayload::from_static(b"first"), create.clone())
            .await
            .map_err(|e| match e {
                object_store::Error::NotImplemented { .. } => {
                    unsafe_store(format!("it does not support conditional writes: {e}"))
                }
                e => LogError::store(&path, e),
            })?;
        let second = self
            .object_store
            .put_opts(&path, PutPayload::from_static(b"second"), create)
            .await;
        let content = self.object_store.get(&path).await;
        let _ = self.object_store.delete(&path).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Ok(_) => {
                return Err(unsafe_store(
                    "a second create-only write to the same key succeeded (If-None-Match is \
                     ignored); two writers could both commit the same segment number"
                        .into(),
                ));
            }
            Err(e) => return Err(LogError::store(&path, e)),
        }
        let content = content
            .map_err(|e| LogError::store(&path, e))?
            .bytes()
            .await
            .map_err(|e| LogError::store(&path, e))?;
        if content != Bytes::from_static(b"first") {
            return Err(unsafe_store(
                "a refused create-only write still replaced the object".into(),
            ));
        }
        Ok(())
    }
}

/// Whether an object store error is worth retrying.
pub(crate) fn is_transient(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}

/// Run `op` until it succeeds, fails with a non-transient error, or attempts run out.
pub(crate) async fn retry<T, F, Fut>(
    settings: &LogSettings,
    path: &Path,
    mut op: F,
) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, object_store::Error>>,
{
    let mut backoff = settings.retry_backoff;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if is_transient(&e) && attempt < settings.retry_attempts => {
                tracing::debug!(%path, attempt, error = %e, "transient store error, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(settings.retry_max_backoff);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Get an object's bytes, retrying transient errors.
pub(crate) async fn get_bytes(
    store: &dyn ObjectStore,
    settings: &LogSettings,
    path: &Path,
) -> Result<Bytes, object_store::Error> {
    retry(settings, path, || async {
        store.get(path).await?.bytes().await
    })
    .await
}

/// What a create-only write found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// Our bytes are at the key (written now, or by an earlier attempt whose response was lost).
    Ours,
    /// Someone else's object is at the key.
    Theirs(Bytes),
}

/// Create-only write with retries and the ambiguity check: after `AlreadyExists` the object is
/// read back, and if it holds exactly our bytes the write was ours (a retried request whose
/// first attempt landed). A 409 whose object cannot be read yet is retried.
pub(crate) async fn create(
    store: &dyn ObjectStore,
    settings: &LogSettings,
    path: &Path,
    bytes: Bytes,
) -> Result<Created> {
    create_as(store, settings, path, bytes, false).await
}

/// [`create`], for a segment that should be a file of its own on the local filesystem
/// (`own_file`: a compaction, which lives long and which others read; see
/// `wharf_log_fs::OwnFile`). Other stores ignore the hint.
pub(crate) async fn create_as(
    store: &dyn ObjectStore,
    settings: &LogSettings,
    path: &Path,
    bytes: Bytes,
    own_file: bool,
) -> Result<Created> {
    let mut conflicts_without_object = 0;
    loop {
        let put = retry(settings, path, || {
            let mut opts = PutOptions::from(PutMode::Create);
            if own_file {
                opts.extensions.insert(wharf_log_fs::OwnFile);
            }
            store.put_opts(path, PutPayload::from_bytes(bytes.clone()), opts)
        })
        .await;
        match put {
            Ok(_) => return Ok(Created::Ours),
            Err(object_store::Error::AlreadyExists { .. }) => {
                match get_bytes(store, settings, path).await {
                    Ok(existing) if existing == bytes => return Ok(Created::Ours),
                    Ok(existing) => return Ok(Created::Theirs(existing)),
                    // S3 answers 409 to racing conditional writes; the winner may not be
                    // visible yet, or the race may have had no winner. Try again.
                    Err(object_store::Error::NotFound { .. })
                        if conflicts_without_object < settings.retry_attempts =>
                    {
                        conflicts_without_object += 1;
                        tokio::time::sleep(Duration::from_millis(
                            5 * conflicts_without_object as u64,
                        ))
                        .await;
                    }
                    Err(e) => return Err(LogError::store(path, e)),
                }
            }
            Err(e) => return Err(LogError::store(path, e)),
        }
    }
}
