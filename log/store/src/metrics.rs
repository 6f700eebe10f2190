//! Store requests as Prometheus metrics: every request the log makes to its object store is
//! counted by operation, with its errors and its latency (`wharf_store_requests_total`,
//! `wharf_store_errors_total`, `wharf_store_request_seconds`). [`Store::open`] wraps every
//! store it opens in [`Instrumented`]; [`register`] adds the metrics to a registry.
//!
//! [`Store::open`]: crate::Store::open

use std::{
    fmt,
    ops::Range,
    sync::{Arc, LazyLock},
    time::Instant,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, path::Path,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// The operation of a store request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: &'static str,
}

struct StoreMetrics {
    requests: Family<Op, Counter>,
    errors: Family<Op, Counter>,
    seconds: Family<Op, Histogram>,
}

static METRICS: LazyLock<StoreMetrics> = LazyLock::new(|| StoreMetrics {
    requests: Family::default(),
    errors: Family::default(),
    // 0.1 ms .. ~6.5 s: a local fsync and a slow S3 request alike.
    seconds: Family::new_with_constructor(|| {
        Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0001, 2.0, 17,
        ))
    }),
});

/// Add the store metrics to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "wharf_store_requests",
        "Requests to the object store, by operation",
        METRICS.requests.clone(),
    );
    registry.register(
        "wharf_store_errors",
        "Requests to the object store that failed, by operation",
        METRICS.errors.clone(),
    );
    registry.register(
        "wharf_store_request_seconds",
        "Latency of object store requests, by operation",
        METRICS.seconds.clone(),
    );
}

/// One operation's metrics, looked up once.
#[derive(Clone)]
struct Meter {
    requests: Counter,
    errors: Counter,
    seconds: Histogram,
}

impl Meter {
    fn of(op: &'static str) -> Self {
        let label = Op { op };
        Self {
            requests: METRICS.requests.get_or_create(&label).clone(),
            errors: METRICS.errors.get_or_create(&label).clone(),
            seconds: METRICS.seconds.get_or_create(&label).clone(),
        }
    }

    fn record(&self, started: Instant, failed: bool) {
        self.requests.inc();
        self.seconds.observe(started.elapsed().as_secs_f64());
        if failed {
            self.errors.inc();
        }
    }
}

/// An object store whose requests are counted (see the module docs).
pub struct Instrumented {
    inner: Arc<dyn ObjectStore>,
    put: Meter,
    get: Meter,
    delete: Meter,
    list: Meter,
    copy: Meter,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            put: Meter::of("put"),
            get: Meter::of("get"),
            delete: Meter::of("delete"),
            list: Meter::of("list"),
            copy: Meter::of("copy"),
        }
    }
}

impl fmt::Debug for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({})", self.inner)
    }
}

impl fmt::Display for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl ObjectStore for Instrumented {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let started = Instant::now();
        let result = self.inner.put_opts(location, payload, opts).await;
        // A create-only write that lost its race is an answer, not an error.
        let failed = !matches!(
            &result,
            Ok(_)
                | Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. })
        );
        self.put.record(started, failed);
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let started = Instant::now();
        let result = self.inner.get_opts(location, options).await;
        let failed = !matches!(&result, Ok(_) | Err(object_store::Error::NotFound { .. }));
        self.get.record(started, failed);
        result
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let started = Instant::now();
        let result = self.inner.get_ranges(location, ranges).await;
        self.get.record(started, result.is_err());
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        use futures::StreamExt;
        let meter = self.delete.clone();
        self.inner
            .delete_stream(locations)
            .map(move |r| {
                meter.requests.inc();
                if r.is_err() {
                    meter.errors.inc();
                }
                r
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        use futures::StreamExt;
        self.list.requests.inc();
        let errors = self.list.errors.clone();
        self.inner
            .list(prefix)
            .map(move |r| {
                if r.is_err() {
                    errors.inc();
                }
                r
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let started = Instant::now();
        let result = self.inner.list_with_delimiter(prefix).await;
        self.list.record(started, result.is_err());
        result
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.copy_opts(from, to, options).await;
        self.copy.record(started, result.is_err());
        result
    }
}
