//! `User`: who may connect, in which tenant, and what it may do there.
//!
//! ```json
//! {"apiVersion": "wharf/v1", "kind": "User", "metadata": {"name": "sensor-1"},
//!  "spec": {"tenant": "acme", "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$...",
//!           "permissions": [{"addresses": ["sensors/*"], "actions": ["send"]},
//!                           {"addresses": ["commands/sensor-1"], "actions": ["receive"]}]}}
//! ```
//!
//! The password is kept only as an argon2 PHC string (`wharf user hash` makes one; the
//! management API also takes `password` and hashes it before storing). Permissions: see
//! [`crate::permission`].

use password_hash::PasswordHash;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wharf_log_format::catalog::{DEFAULT_TENANT, TENANT_RULE, valid_tenant};

use crate::{
    Invalid, Resource, Spec,
    permission::{self, Action, Permission},
};

/// See the module docs.
pub type User = Resource<UserSpec>;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserSpec {
    /// The tenant the user's connections work in (`default` if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// An argon2 PHC string: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`.
    pub password_hash: String,
    /// What the user may do (absent: send and receive everywhere in its tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<Permission>>,
}

impl UserSpec {
    /// `tenant`, `default` if absent.
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    /// Whether the user may do `action` on `name` (see [`crate::permission`]).
    pub fn may(&self, action: Action, name: &str) -> bool {
        permission::allowed(self.permissions.as_deref(), action, name)
    }
}

impl Spec for UserSpec {
    const KIND: &'static str = "User";
    const PLURAL: &'static str = "users";
    const IN_TENANT: bool = false;

    fn validate(&self) -> Result<(), Invalid> {
        if let Some(t) = &self.tenant
            && !valid_tenant(t)
        {
            return Err(Invalid::new(
                "spec.tenant",
                format!("{t:?} is not a tenant name ({TENANT_RULE})"),
            ));
        }
        if let Err(e) = PasswordHash::new(&self.password_hash) {
            return Err(Invalid::new(
                "spec.password_hash",
                format!(
                    "is not an argon2 PHC string ({e}); make one with `wharf user hash`, or give `password` to the API"
                ),
            ));
        }
        if !self.password_hash.starts_with("$argon2") {
            return Err(Invalid::new(
                "spec.password_hash",
                "must be an argon2 hash ($argon2id$...)",
            ));
        }
        for (i, p) in self.permissions.iter().flatten().enumerate() {
            p.validate(&format!("spec.permissions[{i}]"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    fn user(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "wharf/v1", "kind": "User", "metadata": {"name": "sensor-1"}, "spec": spec})
    }

    #[test]
    fn a_user_round_trips_and_says_what_it_may_do() {
        let r = user(json!({"tenant": "acme", "password_hash": HASH,
                            "permissions": [{"addresses": ["sensors/*"], "actions": ["send"]}]}));
        let u = User::from_json(&r).expect("valid");
        assert_eq!(u.to_json(), r);
        assert_eq!(u.spec.tenant(), "acme");
        assert!(u.spec.may(Action::Send, "sensors/1"));
        assert!(!u.spec.may(Action::Receive, "sensors/1"));
        let open = User::from_json(&user(json!({"password_hash": HASH}))).expect("valid");
        assert_eq!(open.spec.tenant(), "default");
        assert!(open.spec.may(Action::Receive, "anything"));
        assert!(!open.spec.may(Action::Manage, "anything"));
    }

    #[test]
    fn errors_name_the_field() {
        for (spec, field) in [
            (json!({}), "spec.password_hash"),
            (json!({"password_hash": "secret"}), "spec.password_hash"),
            (
                json!({"password_hash": "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA"}),
                "spec.password_hash",
            ),
            (
                json!({"password_hash": HASH, "tenant": "ACME"}),
                "spec.tenant",
            ),
            (
                json!({"password_hash": HASH, "permissions": [{"addresses": [], "actions": ["send"]}]}),
                "spec.permissions[0].addresses",
            ),
            (
                json!({"password_hash": HASH, "permissions": [{"addresses": ["*"], "actions": []}]}),
                "spec.permissions[0].actions",
            ),
            (
                json!({"password_hash": HASH, "permissions": [{"addresses": ["*"], "actions": ["publish"]}]}),
                "spec.permissions[0].actions[0]",
            ),
        ] {
            let e = User::from_json(&user(spec.clone())).expect_err("invalid");
            assert_eq!(e.field, field, "{spec}: {e}");
        }
    }
}
