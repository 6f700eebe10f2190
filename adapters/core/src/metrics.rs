//! The adapters' Prometheus metrics, served at `/metrics` by the management API.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `wharf_connections` | protocol, tenant | client connections open now on this adapter |
//! | `wharf_messages_received_total` / `_bytes_total` | protocol, tenant | messages clients sent (stored, or refused) |
//! | `wharf_messages_delivered_total` / `_bytes_total` | protocol, tenant | messages sent to clients |
//! | `wharf_durable_seconds` | protocol | from handing a read's messages to the log to their being durable (what a QoS 1 / AMQP sender waits for) |
//! | `wharf_stream_records_total` | tenant, stream | records ever appended to a stream (an address's, by every adapter): its end offset |
//! | `wharf_stream_retained_records`, `wharf_stream_bytes` | tenant, stream | what the log still holds of it |
//!
//! Per-address rates are the stream metrics (an address's stream is named after it; MQTT
//! topics no address claims share `mqtt-default`): they count what every adapter appended,
//! from the log itself, at no cost on the message path. The connection counters are looked
//! up once per connection ([`Flow`]) and cost an atomic add per message.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType, counter::ConstCounter, counter::Counter, family::Family, gauge::ConstGauge,
        gauge::Gauge, histogram::Histogram,
    },
    registry::Registry,
};
use wharf_log::Log;

use crate::record::Protocol;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByTenant {
    protocol: &'static str,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByProtocol {
    protocol: &'static str,
}

struct Metrics {
    connections: Family<ByTenant, Gauge>,
    received: Family<ByTenant, Counter>,
    received_bytes: Family<ByTenant, Counter>,
    delivered: Family<ByTenant, Counter>,
    delivered_bytes: Family<ByTenant, Counter>,
    durable: Family<ByProtocol, Histogram>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    connections: Family::default(),
    received: Family::default(),
    received_bytes: Family::default(),
    delivered: Family::default(),
    delivered_bytes: Family::default(),
    durable: Family::new_with_constructor(|| {
        Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0001, 2.0, 17,
        ))
    }),
});

fn name(p: Protocol) -> &'static str {
    match p {
        Protocol::Mqtt => "mqtt",
        Protocol::Amqp => "amqp",
    }
}

/// Add the adapters' metrics to `registry`; the stream metrics of the logs `logs` gives
/// (tenant name, log) at each scrape.
pub fn register(
    registry: &mut Registry,
    logs: impl Fn() -> Vec<(String, Log)> + Send + Sync + 'static,
) {
    let m = &*METRICS;
    registry.register(
        "wharf_connections",
        "Client connections open on this adapter",
        m.connections.clone(),
    );
    registry.register(
        "wharf_messages_received",
        "Messages clients sent to this adapter",
        m.received.clone(),
    );
    registry.register(
        "wharf_messages_received_bytes",
        "Payload bytes of the messages clients sent to this adapter",
        m.received_bytes.clone(),
    );
    registry.register(
        "wharf_messages_delivered",
        "Messages this adapter sent to clients",
        m.delivered.clone(),
    );
    registry.register(
        "wharf_messages_delivered_bytes",
        "Payload bytes of the messages this adapter sent to clients",
        m.delivered_bytes.clone(),
    );
    registry.register(
        "wharf_durable_seconds",
        "From handing received messages to the log to their being durable",
        m.durable.clone(),
    );
    registry.register_collector(Box::new(Streams(Arc::new(logs))));
}

/// A connection's counters, looked up once it knows its tenant.
#[derive(Debug)]
pub struct Flow {
    connections: Gauge,
    received: Counter,
    received_bytes: Counter,
    delivered: Counter,
    delivered_bytes: Counter,
    durable: Histogram,
}

impl Flow {
    /// The counters of a connection of `protocol` in `tenant`, counted as open until dropped.
    pub fn new(protocol: Protocol, tenant: &str) -> Self {
        let m = &*METRICS;
        let label = ByTenant {
            protocol: name(protocol),
            tenant: tenant.to_string(),
        };
        let flow = Self {
            connections: m.connections.get_or_create(&label).clone(),
            received: m.received.get_or_create(&label).clone(),
            received_bytes: m.received_bytes.get_or_create(&label).clone(),
            delivered: m.delivered.get_or_create(&label).clone(),
            delivered_bytes: m.delivered_bytes.get_or_create(&label).clone(),
            durable: m
                .durable
                .get_or_create(&ByProtocol {
                    protocol: name(protocol),
                })
                .clone(),
        };
        flow.connections.inc();
        flow
    }

    pub fn received(&self, bytes: usize) {
        self.received.inc();
        self.received_bytes.inc_by(bytes as u64);
    }

    pub fn delivered(&self, bytes: usize) {
        self.delivered.inc();
        self.delivered_bytes.inc_by(bytes as u64);
    }

    /// Where to record how long received messages took to become durable (for a future
    /// that outlives a borrow of the connection).
    pub fn durable(&self) -> Durable {
        Durable(self.durable.clone())
    }
}

/// See [`Flow::durable`].
#[derive(Clone, Debug)]
pub struct Durable(Histogram);

impl Durable {
    pub fn took(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.connections.dec();
    }
}

type LogsFn = dyn Fn() -> Vec<(String, Log)> + Send + Sync;

/// The stream metrics, read from the logs' indexes at each scrape.
struct Streams(Arc<LogsFn>);

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streams")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    tenant: String,
    stream: String,
}

impl prometheus_client::collector::Collector for Streams {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut rows = Vec::new();
        for (tenant, log) in (self.0)() {
            for (stream, index) in log.streams() {
                let label = StreamLabel {
                    tenant: tenant.clone(),
                    stream: stream.as_str().to_string(),
                };
                rows.push((
                    label,
                    index.next_offset,
                    index.next_offset - index.start_offset.min(index.next_offset),
                    index.bytes(),
                ));
            }
        }
        let mut family = encoder.encode_descriptor(
            "wharf_stream_records",
            "Records ever appended to a stream (its end offset)",
            None,
            MetricType::Counter,
        )?;
        for (label, end, _, _) in &rows {
            ConstCounter::new(*end).encode(family.encode_family(label)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "wharf_stream_retained_records",
            "Records of a stream the log still holds",
            None,
            MetricType::Gauge,
        )?;
        for (label, _, held, _) in &rows {
            ConstGauge::new(*held as i64).encode(family.encode_family(label)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "wharf_stream_bytes",
            "Bytes of a stream the log still holds (whole segments)",
            None,
            MetricType::Gauge,
        )?;
        for (label, _, _, bytes) in &rows {
            ConstGauge::new(*bytes as i64).encode(family.encode_family(label)?)?;
        }
        Ok(())
    }
}
