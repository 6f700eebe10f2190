use std::{
    fmt,
    ops::Range,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, path::Path,
};

/// What to inject, as probabilities per call (0.0 to 1.0).
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// Added to every call: a uniformly random delay in this range.
    pub latency: Option<Range<Duration>>,
    /// A call fails with a transient error ("503 SlowDown") before reaching the store.
    pub fail_before: f64,
    /// A call reaches the store, then fails with a transient error ("timeout", "connection
    /// reset"): for writes, the write happened but the caller is not told.
    pub fail_after: f64,
    /// Seed of the deterministic random source.
    pub seed: u64,
}

/// Counters of what was injected, and of GETs at once.
#[derive(Debug, Default)]
pub struct FaultStats {
    pub calls: AtomicU64,
    pub failed_before: AtomicU64,
    pub failed_after: AtomicU64,
    /// GETs in flight now (injected latency included).
    pub gets_in_flight: AtomicU64,
    /// The most GETs in flight at once so far (store 0 to start counting again).
    pub max_gets_in_flight: AtomicU64,
    /// Calls by operation and the folder of the log they went to ("get segments",
    /// "put batches", "list batches", ...), for request budgets.
    pub by_kind: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl FaultStats {
    /// A copy of [`FaultStats::by_kind`].
    pub fn kinds(&self) -> std::collections::BTreeMap<String, u64> {
        self.by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn count(&self, op: &str, path: Option<&Path>) {
        // The log's folder: the first part, or the third under tenants/<name>/.
        let parts: Vec<_> = path.map(|p| p.parts().collect()).unwrap_or_default();
        let folder = match parts.as_slice() {
            [t, _, f, ..] if t.as_ref() == "tenants" => f.as_ref().to_string(),
            [f, ..] => f.as_ref().to_string(),
            [] => String::new(),
        };
        *self
            .by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(format!("{op} {folder}"))
            .or_default() += 1;
    }
}

/// One GET in flight, counted until dropped.
struct InFlight<'a>(&'a FaultStats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a FaultStats) -> Self {
        let now = stats.gets_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_gets_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.gets_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An `ObjectStore` that injects faults into another one.
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    config: Mutex<FaultConfig>,
    /// While set, every call waits before it reaches the store: the process using this
    /// store looks dead (or paused) to everyone else; unset, it wakes up late.
    frozen: tokio::sync::watch::Sender<bool>,
    rng: Mutex<u64>,
    pub stats: Arc<FaultStats>,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>, config: FaultConfig) -> Self {
        let seed = config.seed | 1;
        Self {
            inner,
            config: Mutex::new(config),
            frozen: tokio::sync::watch::Sender::new(false),
            rng: Mutex::new(seed),
            stats: Arc::default(),
        }
    }

    /// Freeze (or thaw) every call from now on: calls in flight that have not reached the
    /// store yet wait too, like a process stopped with SIGSTOP or cut off the network.
    pub fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }

    /// Change what is injected from now on (e.g. stop injecting to let a test drain).
    pub fn set_config(&self, config: FaultConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn random(&self) -> f64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        // xorshift64*
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    async fn before(&self, op: &str, path: Option<&Path>) -> Result<()> {
        let mut frozen = self.frozen.subscribe();
        let _ = frozen.wait_for(|f| !*f).await;
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.count(op, path);
        let config = self
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(l) = &config.latency {
            let span = l.end.saturating_sub(l.start).as_micros() as f64;
            let d = l.start + Duration::from_micros((span * self.random()) as u64);
            tokio::time::sleep(d).await;
        }
        if self.random() < config.fail_before {
            self.stats.failed_before.fetch_add(1, Ordering::Relaxed);
            return Err(injected(
                op,
                path,
                "503 SlowDown (injected before the call)",
            ));
        }
        Ok(())
    }

    fn after<T>(&self, op: &str, path: Option<&Path>, result: Result<T>) -> Result<T> {
        let p = self
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fail_after;
        if result.is_ok() && self.random() < p {
            self.stats.failed_after.fetch_add(1, Ordering::Relaxed);
            return Err(injected(
                op,
                path,
                "timeout (injected after the call succeeded)",
            ));
        }
        result
    }
}

fn injected(op: &str, path: Option<&Path>, what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultStore",
        source: format!("{op} {}: {what}", path.map(Path::as_ref).unwrap_or("")).into(),
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({:?})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.before("put", Some(location)).await?;
        let r = self.inner.put_opts(location, payload, opts).await;
        self.after("put", Some(location), r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.before("put_multipart", Some(location)).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let _in_flight = InFlight::enter(&self.stats);
        self.before("get", Some(location)).await?;
        let r = self.inner.get_opts(location, options).await;
        self.after("get", Some(location), r)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.before("get_ranges", Some(location)).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        use futures::StreamExt;
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.count("list", prefix);
        let fail = self.random()
            < self
                .config
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fail_before;
        if fail {
            self.stats.failed_before.fetch_add(1, Ordering::Relaxed);
            let e = injected("list", prefix, "503 SlowDown (injected)");
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before("list", prefix).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before("copy", Some(from)).await?;
        self.inner.copy_opts(from, to, options).await
    }
}
