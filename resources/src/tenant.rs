//! `Tenant` (EnMasse's address space): a log of its own under `tenants/<name>/` in the store,
//! with its own addresses, sessions and users; a plan and limits.
//!
//! ```json
//! {"apiVersion": "wharf/v1", "kind": "Tenant", "metadata": {"name": "acme"},
//!  "spec": {"plan": "small", "limits": {"max_connections": 20}}}
//! ```
//!
//! Tenant names are DNS labels (1-63 of `a-z 0-9 -`), as Kubernetes namespaces, so they fit
//! in object keys, URLs and resource names alike. The default tenant (`default`, the store
//! root's log) exists without a resource.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wharf_log_format::catalog::{TENANT_RULE, valid_tenant};

use crate::{Invalid, Resource, Spec, check_reference, plan::Limits};

/// See the module docs.
pub type Tenant = Resource<TenantSpec>;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TenantSpec {
    /// The Plan whose limits apply where `limits` says nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Limits of this tenant, over its plan's.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
}

impl Spec for TenantSpec {
    const KIND: &'static str = "Tenant";
    const PLURAL: &'static str = "tenants";
    const IN_TENANT: bool = false;

    fn validate(&self) -> Result<(), Invalid> {
        check_reference("spec.plan", &self.plan)?;
        self.limits.validate("spec.limits")
    }

    fn validate_name(name: &str) -> Result<(), Invalid> {
        if valid_tenant(name) {
            Ok(())
        } else {
            Err(Invalid::new(
                "metadata.name",
                format!("{name:?} is not a tenant name ({TENANT_RULE})"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tenant_names_are_dns_labels() {
        let t = |name: &str| {
            Tenant::from_json(&json!({"apiVersion": "wharf/v1", "kind": "Tenant",
                                      "metadata": {"name": name}, "spec": {"plan": "small"}}))
        };
        assert_eq!(
            t("acme").expect("valid").spec.plan.as_deref(),
            Some("small")
        );
        assert_eq!(t("Acme").expect_err("upper case").field, "metadata.name");
        assert_eq!(t("a.b").expect_err("dot").field, "metadata.name");
    }
}
