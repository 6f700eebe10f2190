//! `Plan` (the talk's *Flavor*): limits a tenant inherits, defaults an address inherits, and
//! the credit the autoscaler counts.
//!
//! ```json
//! {"apiVersion": "wharf/v1", "kind": "Plan", "metadata": {"name": "small"},
//!  "spec": {"limits": {"max_connections": 100, "max_message_bytes": 262144,
//!                      "max_messages_per_second": 1000, "max_storage_bytes": 10000000000,
//!                      "max_addresses": 50},
//!           "address_defaults": {"retention": "7d", "ttl": "1d", "max_delivery": 10},
//!           "credit": 0.1}}
//! ```
//!
//! A tenant names its plan (`Tenant.spec.plan`); its own `limits` override the plan's field by
//! field. An address names a plan too (`Address.spec.plan`) and takes its `address_defaults`
//! where its own spec says nothing. EnMasse sized its routers from the sum of the credits of
//! the plans in use; Wharf's autoscaler (issue #16) reads `credit` the same way: the share of
//! one adapter a tenant on this plan is expected to need.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Invalid, Resource, Spec, check_duration};

/// See the module docs.
pub type Plan = Resource<PlanSpec>;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanSpec {
    /// What a tenant on this plan may use.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// What an address on this plan gets where its spec says nothing.
    #[serde(default, skip_serializing_if = "AddressDefaults::is_empty")]
    pub address_defaults: AddressDefaults,
    /// The share of one adapter a tenant on this plan needs (EnMasse's plan credit; the
    /// autoscaler's floor is the sum over the tenants). 0 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub credit: Option<f64>,
}

/// Limits of a tenant, from its plan or its own spec (absent: no limit).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    /// Client connections at once, over every protocol and adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// The largest message payload, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_message_bytes: Option<u64>,
    /// Messages a connection may publish per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_messages_per_second: Option<u32>,
    /// Bytes the tenant's log may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_storage_bytes: Option<u64>,
    /// Addresses the tenant may declare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_addresses: Option<u32>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// These limits where they are set, else `base`'s.
    pub fn over(&self, base: &Limits) -> Limits {
        Limits {
            max_connections: self.max_connections.or(base.max_connections),
            max_message_bytes: self.max_message_bytes.or(base.max_message_bytes),
            max_messages_per_second: self
                .max_messages_per_second
                .or(base.max_messages_per_second),
            max_storage_bytes: self.max_storage_bytes.or(base.max_storage_bytes),
            max_addresses: self.max_addresses.or(base.max_addresses),
        }
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), Invalid> {
        let zero = |name: &str| {
            Err(Invalid::new(
                format!("{field}.{name}"),
                "must be at least 1 (leave it out for no limit)",
            ))
        };
        if self.max_message_bytes == Some(0) {
            return zero("max_message_bytes");
        }
        if self.max_messages_per_second == Some(0) {
            return zero("max_messages_per_second");
        }
        if self.max_storage_bytes == Some(0) {
            return zero("max_storage_bytes");
        }
        Ok(())
    }
}

/// Address settings a plan gives where the address says nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AddressDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_delivery: Option<u32>,
}

impl AddressDefaults {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Spec for PlanSpec {
    const KIND: &'static str = "Plan";
    const PLURAL: &'static str = "plans";
    const IN_TENANT: bool = false;

    fn validate(&self) -> Result<(), Invalid> {
        self.limits.validate("spec.limits")?;
        let d = &self.address_defaults;
        check_duration("spec.address_defaults.retention", &d.retention)?;
        check_duration("spec.address_defaults.ttl", &d.ttl)?;
        if d.max_delivery == Some(0) {
            return Err(Invalid::new(
                "spec.address_defaults.max_delivery",
                "must be at least 1 (a whole number of deliveries)",
            ));
        }
        if let Some(c) = self.credit
            && !(c.is_finite() && c >= 0.0)
        {
            return Err(Invalid::new(
                "spec.credit",
                format!("{c} must be a number of adapters, 0 or more"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "wharf/v1", "kind": "Plan", "metadata": {"name": "small"}, "spec": spec})
    }

    #[test]
    fn a_plan_round_trips_and_limits_layer() {
        let r = plan(
            json!({"limits": {"max_connections": 100, "max_message_bytes": 1024},
                            "address_defaults": {"retention": "7d", "max_delivery": 3},
                            "credit": 0.25}),
        );
        let p = Plan::from_json(&r).expect("valid");
        assert_eq!(p.to_json(), r);
        let own = Limits {
            max_connections: Some(5),
            ..Limits::default()
        };
        let merged = own.over(&p.spec.limits);
        assert_eq!(merged.max_connections, Some(5));
        assert_eq!(merged.max_message_bytes, Some(1024));
    }

    #[test]
    fn errors_name_the_field() {
        for (spec, field) in [
            (
                json!({"limits": {"max_message_bytes": 0}}),
                "spec.limits.max_message_bytes",
            ),
            (
                json!({"limits": {"max_connections": "many"}}),
                "spec.limits.max_connections",
            ),
            (
                json!({"address_defaults": {"ttl": "soon"}}),
                "spec.address_defaults.ttl",
            ),
            (
                json!({"address_defaults": {"max_delivery": 0}}),
                "spec.address_defaults.max_delivery",
            ),
            (json!({"credit": -1.0}), "spec.credit"),
        ] {
            let e = Plan::from_json(&plan(spec.clone())).expect_err("invalid");
            assert_eq!(e.field, field, "{spec}: {e}");
        }
    }
}
