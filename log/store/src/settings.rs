use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{LogError, Result};

/// Which kind of store a URL selected (picks defaults such as the linger).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StoreKind {
    File,
    S3,
    Memory,
}

/// Settings of one log handle. Durations are human strings in files and the environment
/// (`"2ms"`, `"250ms"`, `"1s"`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// How long the first record of a batch waits for others before the batch is flushed.
    /// `None` picks the store's default: 2ms on the local filesystem, 0 on S3 and in memory.
    #[serde(with = "humantime_serde")]
    pub linger: Option<Duration>,
    /// Least time between the starts of two flushes: a record arriving after a quiet spell
    /// is flushed at once, records arriving sooner wait for the interval to pass and share a
    /// flush. Bounds PUTs per second per writer (1 / interval) without delaying lone records.
    /// `None` picks the store's default: 275ms on S3 (at most 3.7 segment PUTs/s, so under 4
    /// PUTs/s with checkpoints), 0 elsewhere.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Option<Duration>,
    /// A batch is flushed as soon as it holds this many bytes.
    pub max_segment_bytes: usize,
    /// Append requests queued while a flush is in progress before appenders wait.
    pub max_pending_appends: usize,
    /// Bytes of records submitted and not yet durable (queued, or in the flush being
    /// written) before appenders wait: with the cache, what bounds a log's memory under load.
    pub max_pending_bytes: usize,
    /// How often a reader looks for segments written by other processes.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often a background reader (an adapter's wills and takeover followers) looks while
    /// no client of this log is connected to the process: what an idle tenant costs.
    #[serde(with = "humantime_serde")]
    pub idle_poll_interval: Duration,
    /// A checkpoint is written every this many segments.
    pub checkpoint_every: u64,
    /// Checkpoints kept (older ones are deleted).
    pub keep_checkpoints: usize,
    /// Decoded segments kept in memory for readers, in bytes (roughly: encoded size plus the
    /// structures around each record).
    pub cache_bytes: usize,
    /// At most this many decoded segments are kept (the newest): tails read at the head, and
    /// the one-record segments of low-rate streams would otherwise fill memory in small pieces
    /// (one per MQTT connect, say).
    pub cache_segments: usize,
    /// Attempts for an object store call that failed with a transient error.
    pub retry_attempts: u32,
    /// First back-off after a transient error; doubles up to `retry_max_backoff`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Name of this writer in segment headers; empty means `<host>-<pid>`.
    pub writer_id: String,
    /// Garbage collection deletes a segment only once a checkpoint at least this old no
    /// longer needs it; a process whose view of the log is older than half of this reloads
    /// from the newest checkpoint before it trusts "no such segment" as the end of the log.
    #[serde(with = "humantime_serde")]
    pub gc_grace: Duration,
    /// Compaction rewrites runs of small index entries into segments of up to this many bytes.
    pub compaction_target_bytes: u64,
    /// Compaction leaves alone the segments among the newest this many (the hot tail).
    pub compaction_min_age: u64,
    /// Flushes a writer that is not the log's sequencer keeps in flight at once (batch object
    /// PUTs, acknowledged in order).
    pub max_flushes_in_flight: usize,
    /// A writer that is not the sequencer commits its own durable batches into the numbered
    /// series once they have waited this long for the sequencer (it died, or has not found
    /// this writer yet).
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// Time-to-live of the sequencer lease (`leases/log-sequencer`); renewed every third of it.
    #[serde(with = "humantime_serde")]
    pub sequencer_ttl: Duration,
    /// The sequencer gives its role up after this long without appends of its own.
    #[serde(with = "humantime_serde")]
    pub sequencer_idle: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            linger: None,
            flush_interval: None,
            max_segment_bytes: 8 << 20,
            max_pending_appends: 65_536,
            max_pending_bytes: 32 << 20,
            poll_interval: Duration::from_millis(100),
            idle_poll_interval: Duration::from_secs(10),
            checkpoint_every: 64,
            keep_checkpoints: 3,
            cache_bytes: 64 << 20,
            cache_segments: 4096,
            retry_attempts: 8,
            retry_backoff: Duration::from_millis(20),
            retry_max_backoff: Duration::from_secs(2),
            writer_id: String::new(),
            gc_grace: Duration::from_secs(3600),
            compaction_target_bytes: 64 << 20,
            compaction_min_age: 256,
            max_flushes_in_flight: 4,
            commit_timeout: Duration::from_secs(1),
            sequencer_ttl: Duration::from_secs(10),
            sequencer_idle: Duration::from_secs(60),
        }
    }
}

impl LogSettings {
    /// Check every field; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, detail: String| {
            Err(LogError::Invalid {
                what: field,
                detail,
            })
        };
        if let Some(l) = self.linger
            && l > Duration::from_secs(10)
        {
            return bad("log.linger", format!("{l:?} is longer than 10s"));
        }
        if let Some(l) = self.flush_interval
            && l > Duration::from_secs(10)
        {
            return bad("log.flush_interval", format!("{l:?} is longer than 10s"));
        }
        if !(4096..=(256 << 20)).contains(&self.max_segment_bytes) {
            return bad(
                "log.max_segment_bytes",
                format!("{} is outside 4096..=268435456", self.max_segment_bytes),
            );
        }
        if self.max_pending_appends == 0 {
            return bad("log.max_pending_appends", "must be at least 1".into());
        }
        if self.max_pending_bytes < self.max_segment_bytes {
            return bad(
                "log.max_pending_bytes",
                format!(
                    "must be at least log.max_segment_bytes ({})",
                    self.max_segment_bytes
                ),
            );
        }
        if self.poll_interval < Duration::from_millis(1) {
            return bad("log.poll_interval", "must be at least 1ms".into());
        }
        if self.idle_poll_interval < self.poll_interval
            || self.idle_poll_interval > Duration::from_secs(300)
        {
            return bad(
                "log.idle_poll_interval",
                format!(
                    "{:?} must be between poll_interval ({:?}) and 5m",
                    self.idle_poll_interval, self.poll_interval
                ),
            );
        }
        if self.checkpoint_every == 0 {
            return bad("log.checkpoint_every", "must be at least 1".into());
        }
        if self.keep_checkpoints == 0 {
            return bad("log.keep_checkpoints", "must be at least 1".into());
        }
        if self.compaction_target_bytes < 4096 {
            return bad(
                "log.compaction_target_bytes",
                "must be at least 4096".into(),
            );
        }
        if self.retry_attempts == 0 {
            return bad("log.retry_attempts", "must be at least 1".into());
        }
        if !(1..=64).contains(&self.max_flushes_in_flight) {
            return bad(
                "log.max_flushes_in_flight",
                format!("{} is outside 1..=64", self.max_flushes_in_flight),
            );
        }
        if self.commit_timeout < Duration::from_millis(10) {
            return bad("log.commit_timeout", "must be at least 10ms".into());
        }
        if self.sequencer_ttl < Duration::from_secs(1) {
            return bad("log.sequencer_ttl", "must be at least 1s".into());
        }
        if self.sequencer_idle < self.sequencer_ttl {
            return bad(
                "log.sequencer_idle",
                "must be at least log.sequencer_ttl".into(),
            );
        }
        Ok(())
    }

    /// The linger in force for a store of this kind.
    pub fn linger_for(&self, _kind: StoreKind) -> Duration {
        // No linger anywhere by default: records that arrive while a flush is in flight form
        // the next batch anyway, so a linger only adds latency. On the local filesystem it
        // cost MQTT QoS 1 publishers (100 in flight) 60% of their throughput, and one log
        // producer (1000 in flight) 37% (`adapters/README.md`).
        self.linger.unwrap_or(Duration::ZERO)
    }

    /// The flush interval in force for a store of this kind.
    pub fn flush_interval_for(&self, kind: StoreKind) -> Duration {
        self.flush_interval.unwrap_or(match kind {
            StoreKind::S3 => Duration::from_millis(275),
            StoreKind::File | StoreKind::Memory => Duration::ZERO,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_human_and_errors_name_the_field() {
        let s: LogSettings =
            serde_json::from_str(r#"{"linger":"250ms","poll_interval":"1s"}"#).expect("parse");
        assert_eq!(s.linger, Some(Duration::from_millis(250)));
        assert_eq!(s.poll_interval, Duration::from_secs(1));
        let err = serde_json::from_str::<LogSettings>(r#"{"lingr":"1ms"}"#).expect_err("unknown");
        assert!(err.to_string().contains("lingr"), "{err}");
        let s = LogSettings {
            max_segment_bytes: 1,
            ..Default::default()
        };
        let err = s.validate().expect_err("invalid");
        assert!(err.to_string().contains("log.max_segment_bytes"), "{err}");
    }
}
