//! # wharf-resources
//!
//! Wharf's configuration resources as types: the one place a resource is parsed and
//! validated (the CLI and the management API before they write one to the catalog, the
//! adapters and housekeeping when they read one back), with JSON Schema generated from the
//! same types (`schemars`) for the API's OpenAPI document and, next, the Kubernetes CRDs.
//! Errors name the field: `spec.max_delivery: must be at least 1`.
//!
//! Kinds: [`Address`] (in a tenant), [`Plan`], [`Tenant`] and [`User`] (of the whole
//! installation, kept in the default tenant's catalog). Every kind is a [`Resource`] with
//! `apiVersion`, `kind`, `metadata` and a `spec` of its own type ([`Spec`]); [`Any`] parses
//! a resource of any kind. A resource's **generation** is its catalog revision; its
//! [`Status`] is kept apart (catalog kind `<Kind>.status`), so writing status does not make
//! every adapter reload its claims.
//!
//! A resource is stored in the catalog as the JSON it was applied with (fields this crate does
//! not know are kept, not refused: the catalog format does not change); parsing gives a
//! typed, checked view of it.

pub mod address;
pub mod catalog;
pub mod permission;
pub mod plan;
pub mod status;
pub mod tenant;
pub mod topic;
pub mod user;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use wharf_log_format::catalog::{TENANT_RULE, valid_name, valid_tenant};

pub use address::{Address, AddressSpec, AddressType};
pub use catalog::{Catalogs, Stored, WriteError};
pub use permission::{Action, Permission};
pub use plan::{AddressDefaults, Limits, Plan, PlanSpec};
pub use status::{Phase, Status};
pub use tenant::{Tenant, TenantSpec};
pub use user::{User, UserSpec};

/// The `apiVersion` of every Wharf resource.
pub const API_VERSION: &str = "wharf/v1";

/// A resource that does not parse or validate: `field` is its path (`spec.max_delivery`),
/// `problem` what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same problem, one level down: `spec` + `max_delivery` → `spec.max_delivery`.
    fn under(self, parent: &str) -> Self {
        Self {
            field: if self.field == "(resource)" {
                parent.to_string()
            } else if self.field.starts_with('[') {
                format!("{parent}{}", self.field)
            } else {
                format!("{parent}.{}", self.field)
            },
            problem: self.problem,
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for Invalid {}

/// Deserialize `value` as `T`, naming the field that does not fit.
fn typed<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let problem = e.into_inner().to_string();
        // serde names a missing field in its message, at its parent's path: name it in full.
        let missing = problem
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_string());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name,
            (".", None) => "(resource)".to_string(),
            (_, Some(name)) => format!("{path}.{name}"),
            (_, None) => path,
        };
        // serde says "invalid type: string \"5\", expected u32": keep what it found and wanted.
        Invalid::new(field, problem)
    })
}

/// What one kind of resource declares, and what is checked beyond its types.
pub trait Spec:
    Serialize + DeserializeOwned + JsonSchema + Default + Clone + PartialEq + std::fmt::Debug
{
    /// The `kind` of its resources: `Address`.
    const KIND: &'static str;
    /// Its name in URLs and on the command line: `addresses`.
    const PLURAL: &'static str;
    /// Whether its resources live in a tenant (`metadata.tenant`) or belong to the whole
    /// installation.
    const IN_TENANT: bool;

    /// The checks types cannot express; fields are named from the resource (`spec.x`).
    fn validate(&self) -> Result<(), Invalid>;

    /// Checks of the name beyond the catalog's rule (a Tenant's name is a tenant name).
    fn validate_name(_name: &str) -> Result<(), Invalid> {
        Ok(())
    }
}

/// A resource of one kind: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S: Default> {
    /// Always `wharf/v1`.
    pub api_version: String,
    /// The kind: `Address`, `Plan`, `Tenant` or `User`.
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: S,
}

/// A resource's name and where it belongs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Metadata {
    /// `A-Z a-z 0-9 . _ -`, not starting with `.`, at most 200 characters (the catalog's and
    /// the stream's name); a Tenant's name is a DNS label (1-63 of `a-z 0-9 -`).
    pub name: String,
    /// The tenant whose log holds it (Addresses only; absent: the tenant the CLI or API
    /// request works in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Which revision of the resource this is (set by the catalog; ignored when applying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl<S: Spec> Resource<S> {
    /// A resource named `name` with `spec`.
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Self {
            api_version: API_VERSION.to_string(),
            kind: S::KIND.to_string(),
            metadata: Metadata {
                name: name.into(),
                ..Metadata::default()
            },
            spec,
        }
    }

    /// Parse and check a resource as the catalog or a request holds it. `Err` names the
    /// first field that is wrong.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, Invalid> {
        let r: Self = typed(value)?;
        r.validate()?;
        Ok(r)
    }

    /// The `spec` of a resource as the catalog holds it, parsed and checked: what the
    /// adapters and housekeeping read (the catalog entry's name is the resource's name).
    pub fn spec_of(value: &serde_json::Value) -> Result<S, Invalid> {
        let spec = match value.get("spec") {
            None | Some(serde_json::Value::Null) => S::default(),
            Some(v) => typed::<S>(v).map_err(|e| e.under("spec"))?,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The JSON Schema of this kind of resource.
    pub fn json_schema() -> serde_json::Value {
        let mut schema = serde_json::to_value(schemars::schema_for!(Resource<S>))
            .unwrap_or_else(|_| serde_json::json!({}));
        schema["title"] = serde_json::Value::String(S::KIND.to_string());
        schema
    }

    /// The checks types cannot express.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.api_version != API_VERSION {
            return Err(Invalid::new(
                "apiVersion",
                format!("must be {API_VERSION:?}, not {:?}", self.api_version),
            ));
        }
        if self.kind != S::KIND {
            return Err(Invalid::new(
                "kind",
                format!("must be {:?}, not {:?}", S::KIND, self.kind),
            ));
        }
        let name = &self.metadata.name;
        if !valid_name(name) {
            return Err(Invalid::new(
                "metadata.name",
                format!("{name:?} may only contain A-Z a-z 0-9 . _ - and must not start with '.'"),
            ));
        }
        S::validate_name(name)?;
        match &self.metadata.tenant {
            Some(t) if !S::IN_TENANT => {
                return Err(Invalid::new(
                    "metadata.tenant",
                    format!(
                        "{t:?}: a {} belongs to the whole installation, not to a tenant",
                        S::KIND
                    ),
                ));
            }
            Some(t) if !valid_tenant(t) => {
                return Err(Invalid::new(
                    "metadata.tenant",
                    format!("{t:?} is not a tenant name ({TENANT_RULE})"),
                ));
            }
            _ => {}
        }
        self.spec.validate()
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The resource as JSON (what the catalog stores and the API returns).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// A resource of any kind, told apart by its `kind`.
#[derive(Clone, Debug, PartialEq)]
pub enum Any {
    Address(Address),
    Plan(Plan),
    Tenant(Tenant),
    User(User),
}

/// The kinds, in the order a file applying several should write them (plans before the
/// tenants and addresses that use them, tenants before their users).
pub const KINDS: [&str; 4] = [
    PlanSpec::KIND,
    TenantSpec::KIND,
    UserSpec::KIND,
    AddressSpec::KIND,
];

impl Any {
    /// Parse a resource of any kind; `Err` names the field.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, Invalid> {
        let kind = match value.get("kind") {
            Some(serde_json::Value::String(k)) => k.as_str(),
            Some(_) => return Err(Invalid::new("kind", "must be a string")),
            None if value.is_object() => return Err(Invalid::new("kind", "missing")),
            None => return Err(Invalid::new("(resource)", "must be a JSON object")),
        };
        Ok(match kind {
            AddressSpec::KIND => Self::Address(Address::from_json(value)?),
            PlanSpec::KIND => Self::Plan(Plan::from_json(value)?),
            TenantSpec::KIND => Self::Tenant(Tenant::from_json(value)?),
            UserSpec::KIND => Self::User(User::from_json(value)?),
            other => {
                return Err(Invalid::new(
                    "kind",
                    format!("{other:?} is not a kind (one of {})", KINDS.join(", ")),
                ));
            }
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Address(_) => AddressSpec::KIND,
            Self::Plan(_) => PlanSpec::KIND,
            Self::Tenant(_) => TenantSpec::KIND,
            Self::User(_) => UserSpec::KIND,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Self::Address(r) => &r.metadata,
            Self::Plan(r) => &r.metadata,
            Self::Tenant(r) => &r.metadata,
            Self::User(r) => &r.metadata,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Address(r) => r.to_json(),
            Self::Plan(r) => r.to_json(),
            Self::Tenant(r) => r.to_json(),
            Self::User(r) => r.to_json(),
        }
    }
}

/// A kind named by its `kind` or its plural, any case: `Address`, `addresses`, `address`.
pub fn kind_named(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    [
        (AddressSpec::KIND, AddressSpec::PLURAL),
        (PlanSpec::KIND, PlanSpec::PLURAL),
        (TenantSpec::KIND, TenantSpec::PLURAL),
        (UserSpec::KIND, UserSpec::PLURAL),
    ]
    .into_iter()
    .find(|(kind, plural)| lower == kind.to_ascii_lowercase() || lower == *plural)
    .map(|(kind, _)| kind)
}

/// Whether resources of `kind` live in a tenant's catalog (else in the default tenant's).
pub fn in_tenant(kind: &str) -> bool {
    kind == AddressSpec::KIND
}

/// The JSON Schema of every kind, by kind.
pub fn schemas() -> BTreeMap<&'static str, serde_json::Value> {
    BTreeMap::from([
        (AddressSpec::KIND, Address::json_schema()),
        (PlanSpec::KIND, Plan::json_schema()),
        (TenantSpec::KIND, Tenant::json_schema()),
        (UserSpec::KIND, User::json_schema()),
    ])
}

/// Checks shared by specs: a duration such as `"7d"`.
fn check_duration(field: &str, value: &Option<String>) -> Result<(), Invalid> {
    if let Some(v) = value
        && humantime::parse_duration(v).is_err()
    {
        return Err(Invalid::new(
            field,
            format!("{v:?} is not a duration such as \"7d\" or \"30s\""),
        ));
    }
    Ok(())
}

/// A name another resource refers to (`spec.plan`).
fn check_reference(field: &str, value: &Option<String>) -> Result<(), Invalid> {
    if let Some(v) = value
        && !valid_name(v)
    {
        return Err(Invalid::new(field, format!("{v:?} is not a resource name")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn any_kind_is_told_apart_and_unknown_kinds_are_named() {
        let plan = json!({"apiVersion": "wharf/v1", "kind": "Plan", "metadata": {"name": "small"},
                          "spec": {"limits": {"max_connections": 10}}});
        assert_eq!(Any::from_json(&plan).expect("plan").kind(), "Plan");
        let e = Any::from_json(
            &json!({"apiVersion": "wharf/v1", "kind": "Queue", "metadata": {"name": "q"}}),
        )
        .expect_err("bad kind");
        assert_eq!(e.field, "kind");
        assert!(e.problem.contains("Address"), "{e}");
        assert_eq!(
            Any::from_json(&json!([])).expect_err("array").field,
            "(resource)"
        );
        assert_eq!(
            Any::from_json(&json!({})).expect_err("no kind").field,
            "kind"
        );
    }

    #[test]
    fn installation_wide_kinds_have_no_tenant() {
        let plan = json!({"apiVersion": "wharf/v1", "kind": "Plan",
                          "metadata": {"name": "small", "tenant": "acme"}});
        assert_eq!(
            Any::from_json(&plan).expect_err("tenant").field,
            "metadata.tenant"
        );
    }

    #[test]
    fn kinds_are_named_as_users_type_them() {
        assert_eq!(kind_named("addresses"), Some("Address"));
        assert_eq!(kind_named("Address"), Some("Address"));
        assert_eq!(kind_named("address"), Some("Address"));
        assert_eq!(kind_named("PLANS"), Some("Plan"));
        assert_eq!(kind_named("queues"), None);
    }
}
