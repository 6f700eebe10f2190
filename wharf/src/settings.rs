//! Process settings: one serde struct, defaults, a TOML file, environment overrides, validated
//! at start-up so that bad configuration fails fast with the field's name.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use wharf_log::LogSettings;

/// Everything a `wharf` process can be configured with.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Store URL: `file://DIR`, `s3://bucket/prefix`, `memory://`.
    pub store: Option<String>,
    pub log: LogSettings,
    /// Retention of streams whose address sets none.
    pub retention: RetentionSettings,
    /// The MQTT adapter.
    pub mqtt: MqttSection,
    /// The AMQP 1.0 adapter.
    pub amqp: AmqpSection,
    /// Who may connect to the adapters.
    pub auth: AuthSection,
}

/// `[mqtt]`: limits announced to clients and enforced per session.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// Connections served at once per listener.
    pub max_connections: usize,
    /// Connections that have not sent an accepted CONNECT yet, at most: when full, the one
    /// that waited longest is closed to make room (a flood of idle connections cannot keep
    /// real clients out).
    pub max_handshakes: usize,
    /// Deliveries awaiting acknowledgement per session (also capped by the client's
    /// receive maximum).
    pub max_inflight: u16,
    /// QoS 1/2 publishes a client may have unacknowledged (announced to MQTT 5 clients).
    pub receive_maximum: u16,
    /// Topic aliases a client may use (MQTT 5).
    pub topic_alias_maximum: u16,
    /// Largest packet accepted, in bytes.
    pub max_packet_size: u32,
    /// Keep-alive imposed on MQTT 5 clients, in seconds (unset: the client's).
    pub server_keep_alive: Option<u16>,
    /// A connection that sends no CONNECT within this is closed.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: std::time::Duration,
    /// Topic filters nobody may subscribe to (e.g. `["$SYS/#"]`): SUBACK says not authorized.
    pub refused_filters: Vec<String>,
    /// How long after an adapter stops renewing its lease the others publish the wills of its
    /// clients.
    #[serde(with = "humantime_serde")]
    pub adapter_lease: std::time::Duration,
    /// Offsets per block of a shared subscription's stream: adapters with members take
    /// blocks by lease to share the group's messages.
    pub share_block: u64,
    /// How often an adapter checks whether the retained-message and will streams are due for
    /// compaction.
    #[serde(with = "humantime_serde")]
    pub compact_every: std::time::Duration,
    /// How often one adapter deletes the stored sessions that expired.
    #[serde(with = "humantime_serde")]
    pub session_sweep_every: std::time::Duration,
}

impl Default for MqttSection {
    fn default() -> Self {
        let d = wharf_mqtt::MqttSettings::default();
        Self {
            max_connections: d.max_connections,
            max_handshakes: d.max_handshakes,
            max_inflight: d.session.max_inflight,
            receive_maximum: d.session.receive_maximum,
            topic_alias_maximum: d.session.topic_alias_maximum,
            max_packet_size: d.session.max_packet_size,
            server_keep_alive: d.session.server_keep_alive,
            connect_timeout: d.session.connect_timeout,
            refused_filters: d.session.refused_filters,
            adapter_lease: d.adapter_lease,
            share_block: d.share_block,
            compact_every: d.compact_every,
            session_sweep_every: d.session_sweep_every,
        }
    }
}

impl MqttSection {
    fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("mqtt.max_inflight", self.max_inflight),
            ("mqtt.receive_maximum", self.receive_maximum),
        ] {
            if v == 0 {
                anyhow::bail!("{name} must be at least 1");
            }
        }
        if self.max_packet_size < 128 {
            anyhow::bail!("mqtt.max_packet_size must be at least 128 bytes");
        }
        if self.adapter_lease < std::time::Duration::from_secs(1) {
            anyhow::bail!("mqtt.adapter_lease must be at least 1s");
        }
        if self.max_connections == 0 {
            anyhow::bail!("mqtt.max_connections must be at least 1");
        }
        if self.max_handshakes == 0 {
            anyhow::bail!("mqtt.max_handshakes must be at least 1");
        }
        if self.connect_timeout < std::time::Duration::from_millis(100) {
            anyhow::bail!(
                "mqtt.connect_timeout must be at least 100ms (got {:?})",
                self.connect_timeout
            );
        }
        if self.session_sweep_every < std::time::Duration::from_secs(1) {
            anyhow::bail!("mqtt.session_sweep_every must be at least 1s");
        }
        if self.compact_every < std::time::Duration::from_secs(1) {
            anyhow::bail!("mqtt.compact_every must be at least 1s");
        }
        if self.share_block == 0 {
            anyhow::bail!("mqtt.share_block must be at least 1");
        }
        for (i, f) in self.refused_filters.iter().enumerate() {
            if !wharf_adapter_core::topic::valid_filter(f) {
                anyhow::bail!("mqtt.refused_filters[{i}] = {f:?} is not a valid topic filter");
            }
        }
        Ok(())
    }

    /// The adapter's settings.
    pub fn to_mqtt(&self) -> wharf_mqtt::MqttSettings {
        let mut m = wharf_mqtt::MqttSettings {
            max_connections: self.max_connections,
            max_handshakes: self.max_handshakes,
            adapter_lease: self.adapter_lease,
            share_block: self.share_block,
            compact_every: self.compact_every,
            session_sweep_every: self.session_sweep_every,
            ..Default::default()
        };
        let s = &mut m.session;
        s.max_inflight = self.max_inflight;
        s.receive_maximum = self.receive_maximum;
        s.topic_alias_maximum = self.topic_alias_maximum;
        s.max_packet_size = self.max_packet_size;
        s.server_keep_alive = self.server_keep_alive;
        s.connect_timeout = self.connect_timeout;
        s.refused_filters = self.refused_filters.clone();
        m
    }
}

/// `[amqp]`: the AMQP adapter's limits and address rules.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSection {
    /// Connections served at once per listener.
    pub max_connections: usize,
    /// Connections that have not finished their handshake yet, at most: when full, the one
    /// that waited longest is closed to make room.
    pub max_handshakes: usize,
    /// A connection that has not sent its open (protocol headers, SASL, open) within this is
    /// closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: std::time::Duration,
    /// Create unknown addresses on first use (type from the terminus capabilities `queue` /
    /// `topic`, queue if none). Off: attaching to an unknown address fails with
    /// `amqp:not-found`.
    pub auto_create: bool,
    /// Largest frame accepted, in bytes (announced in open; at least 512).
    pub max_frame_size: u32,
    /// Largest message accepted, in bytes (announced in attach).
    pub max_message_size: u64,
    /// Credit given to each link a client sends on.
    pub link_credit: u32,
    /// A connection silent for this long is closed (announced in open; clients send
    /// heartbeats at half of it).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: std::time::Duration,
    /// After an adapter dies, its queues are served by another within this time.
    #[serde(with = "humantime_serde")]
    pub queue_lease: std::time::Duration,
    /// Offsets per block of a queue: adapters take blocks by lease to share a queue.
    pub queue_block: u64,
}

impl Default for AmqpSection {
    fn default() -> Self {
        let d = wharf_amqp::AmqpSettings::default();
        Self {
            max_connections: d.max_connections,
            max_handshakes: d.max_handshakes,
            handshake_timeout: d.handshake_timeout,
            auto_create: d.auto_create,
            max_frame_size: d.engine.max_frame_size,
            max_message_size: d.engine.max_message_size,
            link_credit: d.engine.link_credit,
            idle_timeout: std::time::Duration::from_millis(
                d.engine.idle_timeout_ms.unwrap_or(60_000).into(),
            ),
            queue_lease: d.queue_lease,
            queue_block: d.queue_block,
        }
    }
}

impl AmqpSection {
    fn validate(&self) -> Result<()> {
        if self.max_frame_size < 512 {
            anyhow::bail!("amqp.max_frame_size must be at least 512 bytes");
        }
        if self.link_credit == 0 {
            anyhow::bail!("amqp.link_credit must be at least 1");
        }
        if self.max_message_size == 0 {
            anyhow::bail!("amqp.max_message_size must be at least 1 byte");
        }
        if self.idle_timeout < std::time::Duration::from_secs(1) {
            anyhow::bail!("amqp.idle_timeout must be at least 1s");
        }
        if self.queue_lease < std::time::Duration::from_secs(1) {
            anyhow::bail!("amqp.queue_lease must be at least 1s");
        }
        if self.max_connections == 0 {
            anyhow::bail!("amqp.max_connections must be at least 1");
        }
        if self.max_handshakes == 0 {
            anyhow::bail!("amqp.max_handshakes must be at least 1");
        }
        if self.handshake_timeout < std::time::Duration::from_millis(100) {
            anyhow::bail!(
                "amqp.handshake_timeout must be at least 100ms (got {:?})",
                self.handshake_timeout
            );
        }
        if self.queue_block == 0 {
            anyhow::bail!("amqp.queue_block must be at least 1");
        }
        Ok(())
    }

    /// The adapter's settings.
    pub fn to_amqp(&self) -> wharf_amqp::AmqpSettings {
        let mut a = wharf_amqp::AmqpSettings {
            max_connections: self.max_connections,
            max_handshakes: self.max_handshakes,
            handshake_timeout: self.handshake_timeout,
            auto_create: self.auto_create,
            queue_lease: self.queue_lease,
            queue_block: self.queue_block,
            ..Default::default()
        };
        a.engine.max_frame_size = self.max_frame_size;
        a.engine.max_message_size = self.max_message_size;
        a.engine.link_credit = self.link_credit;
        a.engine.idle_timeout_ms = Some(self.idle_timeout.as_millis().min(u32::MAX as u128) as u32);
        a
    }
}

/// `[auth]`: credentials until users become configuration resources.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Clients without credentials: `"loopback-only"` (default: only on listeners bound to a
    /// loopback address), `"allow"`, or `"deny"`.
    pub anonymous: wharf_auth::Anonymous,
    /// Users file (see `--users`).
    pub users_file: Option<std::path::PathBuf>,
}

/// Default retention (unlimited unless set). Addresses override it with `spec.retention`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Records older than this are trimmed (at segment granularity), e.g. `"7d"`.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<std::time::Duration>,
    /// A stream is trimmed (oldest segments first) to stay under this many bytes.
    pub max_bytes: Option<u64>,
}

impl Settings {
    /// Load `path` (TOML) if given, then validate.
    pub fn load(path: Option<&Path>) -> Result<Settings> {
        let settings = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read settings file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid settings file {}", p.display()))?
            }
            None => Settings::default(),
        };
        settings.log.validate()?;
        settings.mqtt.validate()?;
        settings.amqp.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fields_are_named() {
        let err = toml::from_str::<Settings>("[log]\nlinger = \"soon\"\n").expect_err("bad");
        assert!(err.to_string().contains("linger"), "{err}");
        let err = toml::from_str::<Settings>("stor = \"x\"\n").expect_err("unknown");
        assert!(err.to_string().contains("stor"), "{err}");
        let ok: Settings = toml::from_str(
            "store = \"memory://\"\n[log]\nlinger = \"5ms\"\n[retention]\nmax_age = \"7d\"\n",
        )
        .expect("ok");
        assert_eq!(ok.store.as_deref(), Some("memory://"));
        assert_eq!(
            ok.retention.max_age,
            Some(std::time::Duration::from_secs(7 * 86400))
        );
        let err = toml::from_str::<Settings>("[auth]\nanonymous = \"sometimes\"\n")
            .expect_err("bad enum");
        assert!(err.to_string().contains("anonymous"), "{err}");
        let s: Settings =
            toml::from_str("[mqtt]\nrefused_filters = [\"a/#/b\"]\n").expect("parses");
        let err = s.mqtt.validate().expect_err("invalid filter");
        assert!(err.to_string().contains("mqtt.refused_filters[0]"), "{err}");
    }
}
