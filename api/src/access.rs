//! Who is calling the API and what they may do.
//!
//! - `Authorization: Bearer <token>` with the admin token (`--admin-token`,
//!   `WHARF_ADMIN_TOKEN`): an **admin**, who may do everything.
//! - `Authorization: Basic <user:password>` of a User resource or a users-file user: that
//!   user, who may manage the addresses of its own tenant whose names its `manage`
//!   permissions match (users-file users have none: they only message).
//! - No credentials: an admin where anonymous clients are let in on this listener (by the
//!   same rule as MQTT and AMQP: by default, only on a loopback address) and no admin token
//!   is set — so `wharf up` on a laptop just works; refused (401) otherwise.
//!
//! Plans, tenants and users are an admin's to change.

use std::{net::SocketAddr, sync::Arc};

use axum::http::{HeaderMap, header};
use base64::Engine;
use wharf_auth::{Anonymous, Auth, Verdict};
use wharf_resources::{Action, Catalogs, User, UserSpec, permission::Permission};

use crate::problem::Problem;

/// How callers are told apart.
#[derive(Clone, Debug)]
pub struct Access {
    pub admin_token: Option<String>,
    /// Users of the users file (User resources are read from the catalog).
    pub auth: Arc<Auth>,
}

/// The caller of a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Caller {
    Admin,
    User {
        name: String,
        tenant: String,
        permissions: Option<Vec<Permission>>,
    },
}

impl Caller {
    /// Whether the caller may manage the resource `name` of tenant `tenant` (an address).
    pub fn may_manage(&self, tenant: &str, name: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::User {
                tenant: own,
                permissions,
                ..
            } => {
                own == tenant
                    && wharf_resources::permission::allowed(
                        permissions.as_deref(),
                        Action::Manage,
                        name,
                    )
            }
        }
    }

    /// Whether the caller may manage some resource of `tenant` (to list them).
    pub fn manages_in(&self, tenant: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::User {
                tenant: own,
                permissions,
                ..
            } => {
                own == tenant
                    && permissions
                        .iter()
                        .flatten()
                        .any(|p| p.actions.contains(&Action::Manage))
            }
        }
    }

    pub fn require_admin(&self, what: &str) -> Result<(), Problem> {
        match self {
            Caller::Admin => Ok(()),
            Caller::User { name, .. } => Err(Problem::forbidden(format!(
                "user {name:?} may not {what}: only an admin may"
            ))),
        }
    }
}

impl Access {
    /// Who sent `headers` to the listener bound to `local`.
    pub async fn caller(
        &self,
        catalogs: &Catalogs,
        local: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<Caller, Problem> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            let anonymous_here = match self.auth.anonymous {
                Anonymous::Allow => true,
                Anonymous::Deny => false,
                Anonymous::LoopbackOnly => local.ip().is_loopback(),
            };
            return if anonymous_here && self.admin_token.is_none() {
                Ok(Caller::Admin)
            } else {
                Err(Problem::unauthorized(
                    "credentials needed: Authorization: Bearer <admin token> or Basic <user:password>",
                ))
            };
        };
        let value = value
            .to_str()
            .map_err(|_| Problem::unauthorized("the Authorization header is not text"))?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            return match &self.admin_token {
                Some(admin) if same(admin.as_bytes(), token.trim().as_bytes()) => Ok(Caller::Admin),
                _ => Err(Problem::unauthorized("wrong admin token")),
            };
        }
        let Some(basic) = value.strip_prefix("Basic ") else {
            return Err(Problem::unauthorized(
                "unknown Authorization scheme (Bearer or Basic)",
            ));
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Problem::unauthorized("Basic credentials are not base64 of user:password")
            })?;
        let (name, password) = decoded
            .split_once(':')
            .ok_or_else(|| Problem::unauthorized("Basic credentials are not user:password"))?;
        // A User resource first, then the users file.
        if let Some(stored) = catalogs
            .get(<UserSpec as wharf_resources::Spec>::KIND, "default", name)
            .await?
            && let Ok(user) = User::from_json(&stored.resource)
        {
            let hash = user.spec.password_hash.clone();
            let password = password.as_bytes().to_vec();
            let ok =
                tokio::task::spawn_blocking(move || wharf_auth::verify_password(&hash, &password))
                    .await
                    .unwrap_or(false);
            if !ok {
                return Err(Problem::unauthorized("wrong user name or password"));
            }
            return Ok(Caller::User {
                name: name.to_string(),
                tenant: user.spec.tenant().to_string(),
                permissions: user.spec.permissions.clone(),
            });
        }
        match self
            .auth
            .verify(
                local,
                Some(name.to_string()),
                Some(password.as_bytes().to_vec()),
            )
            .await
        {
            Verdict::Allowed(Some(user)) => Ok(Caller::User {
                tenant: self.auth.tenant_of(Some(&user)).to_string(),
                name: user,
                permissions: None,
            }),
            _ => Err(Problem::unauthorized("wrong user name or password")),
        }
    }
}

/// Compare without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
