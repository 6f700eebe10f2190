//! `Address`: a named place messages are sent to and received from, and what it is.
//!
//! ```json
//! {"apiVersion": "wharf/v1", "kind": "Address",
//!  "metadata": {"name": "orders", "tenant": "acme"},
//!  "spec": {"type": "queue", "max_delivery": 5, "dead_letter": "orders.dlq",
//!           "retention": "7d", "retention_bytes": 1000000000, "mqtt_topics": ["orders/#"]}}
//! ```

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wharf_log_format::catalog::valid_name;

use crate::{Invalid, Resource, Spec, check_duration, check_reference, topic};

/// See the module docs.
pub type Address = Resource<AddressSpec>;

/// What an address is and how long its messages are kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AddressSpec {
    /// `queue` if absent.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AddressType>,
    /// The Plan whose address defaults (retention, ttl, max_delivery) apply where this spec
    /// says nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Deliveries of one message to a queue's consumers before it is dead-lettered (≥ 1;
    /// absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_delivery: Option<u32>,
    /// The address a message goes to after `max_delivery` deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Messages older than this are trimmed from the log (`"7d"`, `"12h"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// The log of this address is trimmed to this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// A message's time to live where its sender gives none (`"1h"`): older messages are not
    /// delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// MQTT topic filters whose topics this address claims: publishes to them are stored in
    /// its stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_topics: Option<Vec<String>>,
}

/// The kinds of address of EnMasse's standard address space.
///
/// | type | stored (store-and-forward) | delivered to |
/// | --- | --- | --- |
/// | `queue` | yes | one of the competing consumers |
/// | `topic` | yes | every subscriber |
/// | `subscription` | yes | one of the consumers of a durable subscription on a topic |
/// | `anycast` | no (direct) | one receiver attached now |
/// | `multicast` | no (direct) | every receiver attached now |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddressType {
    Queue,
    Topic,
    Anycast,
    Multicast,
    Subscription,
}

impl AddressType {
    /// Messages are kept in the log (and may be replayed); `anycast` and `multicast` are
    /// direct: delivered to receivers attached now, never kept.
    pub fn store_and_forward(self) -> bool {
        matches!(self, Self::Queue | Self::Topic | Self::Subscription)
    }

    /// Every receiver gets each message (rather than one of them).
    pub fn multicast(self) -> bool {
        matches!(self, Self::Topic | Self::Multicast)
    }
}

impl Address {
    /// `spec.type`, `queue` if absent.
    pub fn kind(&self) -> AddressType {
        self.spec.kind()
    }

    /// `spec.retention` as a duration.
    pub fn retention(&self) -> Option<Duration> {
        self.spec.retention()
    }
}

impl Spec for AddressSpec {
    const KIND: &'static str = "Address";
    const PLURAL: &'static str = "addresses";
    const IN_TENANT: bool = true;

    fn validate(&self) -> Result<(), Invalid> {
        let spec = self;
        check_reference("spec.plan", &spec.plan)?;
        if spec.max_delivery == Some(0) {
            return Err(Invalid::new(
                "spec.max_delivery",
                "must be at least 1 (a whole number of deliveries)",
            ));
        }
        if let Some(d) = &spec.dead_letter
            && !valid_address_name(d)
        {
            return Err(Invalid::new(
                "spec.dead_letter",
                format!("{d:?} is not an address name"),
            ));
        }
        check_duration("spec.retention", &spec.retention)?;
        check_duration("spec.ttl", &spec.ttl)?;
        for (i, f) in spec.mqtt_topics.iter().flatten().enumerate() {
            if !topic::valid_filter(f) || f.starts_with("$share/") {
                return Err(Invalid::new(
                    format!("spec.mqtt_topics[{i}]"),
                    format!("{f:?} is not an MQTT topic filter"),
                ));
            }
        }
        Ok(())
    }

    fn validate_name(name: &str) -> Result<(), Invalid> {
        if valid_address_name(name) {
            Ok(())
        } else {
            Err(Invalid::new(
                "metadata.name",
                format!("{name:?} is not an address name"),
            ))
        }
    }
}

impl AddressSpec {
    /// The `spec` of a resource as the catalog holds it, parsed and checked: what the adapters
    /// and housekeeping read (the catalog entry's name is the address's name). `Err` names
    /// the field.
    pub fn of(resource: &serde_json::Value) -> Result<Self, Invalid> {
        Address::spec_of(resource)
    }

    /// `type`, `queue` if absent.
    pub fn kind(&self) -> AddressType {
        self.kind.unwrap_or(AddressType::Queue)
    }

    /// `retention` as a duration (checked by [`Spec::validate`]).
    pub fn retention(&self) -> Option<Duration> {
        self.retention
            .as_deref()
            .and_then(|r| humantime::parse_duration(r).ok())
    }

    /// `ttl` as a duration.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
            .as_deref()
            .and_then(|r| humantime::parse_duration(r).ok())
    }
}

/// The stream an address's messages are stored in: its name with `/` as `~` (so a name with
/// `~` has none: `a~b` would be the stream of `a/b`).
pub fn stream_of(name: &str) -> Option<wharf_log_format::StreamId> {
    if name.contains('~') {
        return None;
    }
    wharf_log_format::StreamId::new(name.replace('/', "~")).ok()
}

/// An address name: a catalog name where `/` may stand between parts (it becomes `~` in the
/// stream's name, so `~` itself is refused).
pub fn valid_address_name(name: &str) -> bool {
    !name.contains('~') && valid_name(&name.replace('/', "~"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resource(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "orders"}, "spec": spec})
    }

    #[test]
    fn a_full_address_parses_and_round_trips() {
        let r = json!({"apiVersion": "wharf/v1", "kind": "Address",
            "metadata": {"name": "orders.eu", "tenant": "acme", "annotations": {"a": "b"}},
            "spec": {"type": "queue", "max_delivery": 5, "dead_letter": "orders.dlq",
                     "retention": "7d", "retention_bytes": 1000, "mqtt_topics": ["orders/#"]}});
        let a = Address::from_json(&r).expect("valid");
        assert_eq!(a.name(), "orders.eu");
        assert_eq!(a.kind(), AddressType::Queue);
        assert_eq!(a.spec.max_delivery, Some(5));
        assert_eq!(a.retention(), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(serde_json::to_value(&a).expect("json"), r);
        // Absent type: a queue; absent spec: an empty one.
        let bare = json!({"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "q"}});
        assert_eq!(
            Address::from_json(&bare).expect("valid").kind(),
            AddressType::Queue
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"max_delivery": 0}), "spec.max_delivery"),
            (json!({"max_delivery": "5"}), "spec.max_delivery"),
            (json!({"max_delivery": -1}), "spec.max_delivery"),
            (json!({"type": "fanout"}), "spec.type"),
            (json!({"retention": "soon"}), "spec.retention"),
            (json!({"retention": 7}), "spec.retention"),
            (json!({"retention_bytes": "1GB"}), "spec.retention_bytes"),
            (json!({"dead_letter": "a~b"}), "spec.dead_letter"),
            (json!({"ttl": "later"}), "spec.ttl"),
            (json!({"plan": "no such/plan"}), "spec.plan"),
            (json!({"mqtt_topics": "a/#"}), "spec.mqtt_topics"),
            (
                json!({"mqtt_topics": ["ok", "a/#/b"]}),
                "spec.mqtt_topics[1]",
            ),
            (
                json!({"mqtt_topics": ["$share/g/a"]}),
                "spec.mqtt_topics[0]",
            ),
        ];
        for (spec, field) in cases {
            let e = Address::from_json(&resource(spec.clone())).expect_err("invalid");
            assert_eq!(e.field, field, "{spec}: {e}");
            assert!(e.to_string().starts_with(&format!("{field}: ")), "{e}");
        }
        let mut r = resource(json!({}));
        r["metadata"]["name"] = json!(".hidden");
        assert_eq!(
            Address::from_json(&r).expect_err("bad").field,
            "metadata.name"
        );
        r["metadata"]["name"] = json!("ok");
        r["metadata"]["tenant"] = json!("Acme");
        assert_eq!(
            Address::from_json(&r).expect_err("bad").field,
            "metadata.tenant"
        );
        r["metadata"]["tenant"] = json!("acme");
        r["apiVersion"] = json!("v2");
        assert_eq!(Address::from_json(&r).expect_err("bad").field, "apiVersion");
        r["apiVersion"] = json!("wharf/v1");
        r["kind"] = json!("Queue");
        assert_eq!(Address::from_json(&r).expect_err("bad").field, "kind");
        let no_name = json!({"apiVersion": "wharf/v1", "kind": "Address", "metadata": {}});
        assert_eq!(
            Address::from_json(&no_name).expect_err("bad").field,
            "metadata.name"
        );
    }

    #[test]
    fn a_catalog_entry_s_spec_is_read_with_field_names() {
        let spec = AddressSpec::of(&json!({"spec": {"type": "topic", "mqtt_topics": ["s/#"]}}))
            .expect("valid");
        assert_eq!(spec.kind(), AddressType::Topic);
        assert_eq!(
            AddressSpec::of(&json!({})).expect("no spec"),
            AddressSpec::default()
        );
        let e = AddressSpec::of(&json!({"spec": {"max_delivery": "x"}})).expect_err("bad");
        assert_eq!(e.field, "spec.max_delivery");
        let e = AddressSpec::of(&json!({"spec": 3})).expect_err("bad");
        assert_eq!(e.field, "spec");
    }

    #[test]
    fn unknown_fields_are_kept_not_refused() {
        // The catalog holds what was applied; fields of later versions pass through.
        let r = resource(json!({"type": "topic", "delivery_mode": "fast"}));
        assert_eq!(
            Address::from_json(&r).expect("valid").kind(),
            AddressType::Topic
        );
    }

    #[test]
    fn the_schema_describes_the_spec() {
        let schema = Address::json_schema();
        let text = schema.to_string();
        for field in [
            "apiVersion",
            "metadata",
            "max_delivery",
            "mqtt_topics",
            "multicast",
            "ttl",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        let max_delivery = &schema["$defs"]["AddressSpec"]["properties"]["max_delivery"];
        assert_eq!(max_delivery["minimum"], 1, "{max_delivery}");
    }
}
