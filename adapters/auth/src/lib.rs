//! # wharf-auth
//!
//! Who may connect to an adapter and what they may do there: users from a users file (argon2
//! password hashes, PHC strings as `wharf user hash` prints them) and from `User` resources in
//! the catalog (live: [`Auth::set_resource_users`] replaces them while clients are connected;
//! a resource overrides a file user of the same name), each with its tenant and permissions
//! ([`Grants`]); and a rule for clients that present no credentials — by default they are let in only on listeners bound
//! to a loopback address, so `wharf up` on a laptop just works while an adapter listening on
//! a public address refuses them.
//!
//! Listeners, TLS and routing connections to their tenant's service are the adapters'
//! runtime (`wharf_adapter_core::runtime`); this crate only decides who may connect and in
//! which tenant.
//!
//! Users file (TOML):
//! ```toml
//! [[user]]
//! name = "sensor-1"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$...$..."
//! tenant = "acme"          # optional; "default" if absent
//! # optional; absent: send and receive everywhere in the tenant
//! permissions = [{ addresses = ["sensors/*"], actions = ["send"] }]
//! ```
//!
//! A user belongs to one tenant: everything its connections do (topics, sessions, retained
//! messages, addresses) happens in that tenant's log. Anonymous clients are in the default
//! tenant.

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use serde::{Deserialize, Serialize};
use wharf_log_format::catalog::{DEFAULT_TENANT, TENANT_RULE, valid_tenant};
use wharf_resources::UserSpec;
pub use wharf_resources::{Action, Permission};

/// Who may connect without credentials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anonymous {
    /// Only on listeners bound to a loopback address (the default).
    #[default]
    LoopbackOnly,
    /// On every listener.
    Allow,
    /// Never.
    Deny,
}

/// The outcome of a connection attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let in, as this user (`None`: anonymous).
    Allowed(Option<String>),
    /// Unknown user or wrong password (MQTT 0x86 / 4, AMQP SASL auth).
    BadCredentials,
    /// No credentials where they are required (MQTT 0x87 / 5).
    NotAuthorized,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    tenant: Option<String>,
    permissions: Option<Vec<Permission>>,
}

/// A user's password hash, tenant and permissions.
#[derive(Clone, Debug, PartialEq)]
struct User {
    password_hash: String,
    tenant: String,
    grants: Grants,
}

/// What a user may do (see `wharf_resources::permission`); anonymous clients may send and
/// receive everywhere in the default tenant. Cheap to clone: a connection keeps its user's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grants(Option<Arc<[Permission]>>);

impl Grants {
    /// Send and receive everywhere (anonymous clients; users with no permissions listed).
    pub fn all() -> Self {
        Self(None)
    }

    pub fn of(permissions: Option<Vec<Permission>>) -> Self {
        Self(permissions.map(Arc::from))
    }

    /// Whether `action` on the address or topic `name` is allowed.
    pub fn may(&self, action: Action, name: &str) -> bool {
        wharf_resources::permission::allowed(self.0.as_deref(), action, name)
    }
}

/// Users and the anonymous rule. Share it in an `Arc`.
#[derive(Default)]
pub struct Auth {
    /// The users file's.
    file_users: HashMap<String, User>,
    /// Every user: the file's, with the User resources' over them.
    users: RwLock<Arc<HashMap<String, User>>>,
    /// Bumped whenever a user changes: connections compare it to notice new grants.
    generation: AtomicU64,
    /// A users file was loaded: credentials are checked against it. Without one (and
    /// without User resources), a client's user name is only a name (as with Mosquitto's
    /// `allow_anonymous true` and no password file).
    users_configured: bool,
    pub anonymous: Anonymous,
    /// A hash that unknown user names are checked against, so that they take as long to
    /// refuse as a wrong password (made when users are loaded, with their argon2
    /// parameters).
    dummy: String,
    /// Password checks running at once (each holds argon2's memory, 19 MiB by default).
    verifying: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.user_count())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl Auth {
    /// No users; anonymous clients by `anonymous`.
    pub fn new(anonymous: Anonymous) -> Self {
        Self {
            anonymous,
            ..Self::default()
        }
    }

    /// Load a users file; errors name the file, the entry and the field.
    pub fn load_users(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read users file {}: {e}", path.display()))?;
        self.add_users(&text)
            .map_err(|e| format!("users file {}: {e}", path.display()))
    }

    /// Add the users of a users file's text.
    pub fn add_users(&mut self, text: &str) -> Result<(), String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
        self.users_configured = true;
        for (i, u) in file.user.into_iter().enumerate() {
            if u.name.is_empty() {
                return Err(format!("user[{i}].name is empty"));
            }
            PasswordHash::new(&u.password_hash).map_err(|e| {
                format!(
                    "user[{i}].password_hash of {:?} is not an argon2 PHC string ({e}); make one with `wharf user hash`",
                    u.name
                )
            })?;
            let tenant = u.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_string());
            if !valid_tenant(&tenant) {
                return Err(format!(
                    "user[{i}].tenant {tenant:?} of {:?} is not {TENANT_RULE}",
                    u.name
                ));
            }
            for (j, p) in u.permissions.iter().flatten().enumerate() {
                if p.addresses.is_empty() || p.actions.is_empty() {
                    return Err(format!(
                        "user[{i}].permissions[{j}] of {:?} needs addresses and actions",
                        u.name
                    ));
                }
            }
            let user = User {
                password_hash: u.password_hash,
                tenant,
                grants: Grants::of(u.permissions),
            };
            if self.file_users.insert(u.name.clone(), user).is_some() {
                return Err(format!("user[{i}].name {:?} appears twice", u.name));
            }
        }
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(self.file_users.clone());
        // Made now, not on the first unknown name (which would then take longer than the
        // rest and tell itself apart).
        self.dummy = self.dummy_hash();
        Ok(())
    }

    /// Every user now (file and resources).
    fn users(&self) -> Arc<HashMap<String, User>> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn user_count(&self) -> usize {
        self.users().len()
    }

    /// Replace the users that come from User resources (name, spec); a resource overrides a
    /// file user of the same name. Returns whether anything changed; connections notice by
    /// [`Auth::generation`].
    pub fn set_resource_users(&self, resources: Vec<(String, UserSpec)>) -> bool {
        let mut all = self.file_users.clone();
        for (name, spec) in resources {
            let user = User {
                tenant: spec.tenant().to_string(),
                password_hash: spec.password_hash,
                grants: Grants::of(spec.permissions),
            };
            all.insert(name, user);
        }
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        if **users == all {
            return false;
        }
        *users = Arc::new(all);
        self.generation.fetch_add(1, Ordering::Release);
        true
    }

    /// Changes whenever a user does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether names are checked: a users file was loaded or User resources exist.
    fn users_configured(&self) -> bool {
        self.users_configured || !self.users().is_empty()
    }

    /// What a client let in as `user` may do now (`None`: anonymous, everything).
    pub fn grants(&self, user: Option<&str>) -> Grants {
        match user {
            None => Grants::all(),
            Some(u) => self
                .users()
                .get(u)
                .map_or_else(|| Grants::of(Some(Vec::new())), |u| u.grants.clone()),
        }
    }

    /// Decide about a client on the listener bound to `local`. Verifying a password costs
    /// tens of milliseconds of CPU (that is the point of argon2): call this off the async
    /// threads (`spawn_blocking`).
    pub fn check(&self, local: SocketAddr, user: Option<&str>, password: Option<&[u8]>) -> Verdict {
        match user {
            None => {
                let allowed = match self.anonymous {
                    Anonymous::Allow => true,
                    Anonymous::Deny => false,
                    Anonymous::LoopbackOnly => local.ip().is_loopback(),
                };
                if allowed {
                    Verdict::Allowed(None)
                } else {
                    Verdict::NotAuthorized
                }
            }
            Some(name) if !self.users_configured() => {
                // No users to check against: the client is anonymous, whatever it calls
                // itself, where anonymous clients are allowed.
                match self.check(local, None, None) {
                    Verdict::Allowed(None) => {
                        tracing::info!(
                            user = name,
                            "credentials given where no users are configured: let in as anonymous"
                        );
                        Verdict::Allowed(None)
                    }
                    _ => Verdict::BadCredentials,
                }
            }
            Some(name) => {
                let password = password.unwrap_or_default();
                // An unknown name is checked against a dummy hash: refused in the same time as
                // a wrong password, so refusals do not tell which names exist.
                let users = self.users();
                let dummy;
                let (hash, known) = match users.get(name) {
                    Some(user) => (user.password_hash.as_str(), true),
                    None if !self.dummy.is_empty() => (self.dummy.as_str(), false),
                    None => {
                        dummy = self.dummy_hash();
                        (dummy.as_str(), false)
                    }
                };
                let ok = verify_password(hash, password);
                if ok && known {
                    Verdict::Allowed(Some(name.to_string()))
                } else {
                    Verdict::BadCredentials
                }
            }
        }
    }

    /// The hash unknown user names are checked against: a random password's, with the
    /// argon2 parameters of the first user's hash (so that checking it costs the same).
    fn dummy_hash(&self) -> String {
        let params = self
            .users()
            .values()
            .next()
            .and_then(|u| PasswordHash::new(&u.password_hash).ok())
            .and_then(|h| argon2::Params::try_from(&h).ok())
            .unwrap_or_default();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let secret = SaltString::generate(&mut OsRng);
        argon
            .hash_password(secret.as_str().as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    }

    /// [`Auth::check`] off the async threads, at most as many at once as there are cores
    /// (argon2 takes tens of milliseconds and 19 MiB each by design: a flood of logins must
    /// neither stall the runtime nor take the machine's memory). Without a user name it is
    /// decided at once.
    pub async fn verify(
        self: &std::sync::Arc<Self>,
        local: SocketAddr,
        user: Option<String>,
        password: Option<Vec<u8>>,
    ) -> Verdict {
        let user = match user {
            // Decided without argon2: anonymous, or a name where no users are configured.
            Some(user) if self.users_configured() => user,
            user => return self.check(local, user.as_deref(), password.as_deref()),
        };
        let slots = self
            .verifying
            .get_or_init(|| {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                std::sync::Arc::new(tokio::sync::Semaphore::new(cores))
            })
            .clone();
        let Ok(_slot) = slots.acquire_owned().await else {
            return Verdict::NotAuthorized;
        };
        let auth = self.clone();
        tokio::task::spawn_blocking(move || auth.check(local, Some(&user), password.as_deref()))
            .await
            .unwrap_or(Verdict::NotAuthorized)
    }
}

impl Auth {
    /// The tenant of a client let in as `user` (`None`: anonymous, the default tenant).
    pub fn tenant_of(&self, user: Option<&str>) -> String {
        user.and_then(|u| self.users().get(u).map(|u| u.tenant.clone()))
            .unwrap_or_else(|| DEFAULT_TENANT.to_string())
    }

    /// The tenants the users file's users are in (they exist without a Tenant resource).
    pub fn file_tenants(&self) -> Vec<String> {
        let mut t: Vec<String> = self.file_users.values().map(|u| u.tenant.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// The tenants users are in (the default one included), sorted.
    pub fn tenants(&self) -> Vec<String> {
        let mut t: Vec<String> = self.users().values().map(|u| u.tenant.clone()).collect();
        t.push(DEFAULT_TENANT.to_string());
        t.sort();
        t.dedup();
        t
    }
}

/// Whether `password` matches the argon2 PHC string `hash` (tens of milliseconds of CPU: call
/// it off the async threads).
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok())
}

/// A User resource given a plain `spec.password` (the API and `wharf apply` take one): the
/// password replaced by its argon2 hash, so that only the hash is ever stored. Tens of
/// milliseconds of CPU: call it off the async threads.
pub fn with_password_hashed(
    resource: &mut serde_json::Value,
) -> Result<(), wharf_resources::Invalid> {
    use wharf_resources::Invalid;
    let Some(spec) = resource
        .get_mut("spec")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return Ok(());
    };
    let Some(password) = spec.remove("password") else {
        return Ok(());
    };
    let serde_json::Value::String(password) = password else {
        return Err(Invalid::new("spec.password", "must be a string"));
    };
    if password.is_empty() {
        return Err(Invalid::new("spec.password", "must not be empty"));
    }
    if spec.contains_key("password_hash") {
        return Err(Invalid::new(
            "spec.password",
            "give password or password_hash, not both",
        ));
    }
    let hash = hash_password(password.as_bytes()).map_err(|e| Invalid::new("spec.password", e))?;
    spec.insert("password_hash".into(), serde_json::Value::String(hash));
    Ok(())
}

/// An argon2id PHC string for `password`, with a random salt.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn users_and_the_anonymous_rule() {
        let hash = hash_password(b"s3cret").expect("hash");
        let mut auth = Auth::default();
        auth.add_users(&format!(
            "[[user]]\nname = \"dev\"\npassword_hash = \"{hash}\"\n"
        ))
        .expect("load");
        let lo = addr("127.0.0.1:1883");
        let public = addr("0.0.0.0:1883");
        assert_eq!(
            auth.check(public, Some("dev"), Some(b"s3cret")),
            Verdict::Allowed(Some("dev".into()))
        );
        assert_eq!(
            auth.check(public, Some("dev"), Some(b"wrong")),
            Verdict::BadCredentials
        );
        assert_eq!(
            auth.check(public, Some("nobody"), Some(b"s3cret")),
            Verdict::BadCredentials
        );
        assert_eq!(auth.check(lo, None, None), Verdict::Allowed(None));
        assert_eq!(auth.check(public, None, None), Verdict::NotAuthorized);
        assert_eq!(
            auth.check(addr("[::1]:1"), None, None),
            Verdict::Allowed(None)
        );
        auth.anonymous = Anonymous::Deny;
        assert_eq!(auth.check(lo, None, None), Verdict::NotAuthorized);
        auth.anonymous = Anonymous::Allow;
        assert_eq!(auth.check(public, None, None), Verdict::Allowed(None));
    }

    #[test]
    fn names_where_no_users_are_configured_are_anonymous() {
        let auth = Auth::default();
        let lo = addr("127.0.0.1:1883");
        assert_eq!(
            auth.check(lo, Some("bob"), Some(b"x")),
            Verdict::Allowed(None),
            "anonymous where anonymous clients are allowed"
        );
        assert_eq!(
            auth.check(addr("0.0.0.0:1883"), Some("bob"), Some(b"x")),
            Verdict::BadCredentials,
            "refused where they are not"
        );
        // An empty users file still configures users: names are checked.
        let mut auth = Auth::default();
        auth.add_users("").expect("empty file");
        assert_eq!(
            auth.check(lo, Some("bob"), Some(b"x")),
            Verdict::BadCredentials
        );
    }

    #[test]
    fn bad_users_files_name_the_field() {
        let mut auth = Auth::default();
        let e = auth
            .add_users("[[user]]\nname = \"a\"\npassword_hash = \"plain\"\n")
            .expect_err("not a hash");
        assert!(e.contains("user[0].password_hash"), "{e}");
        let e = auth
            .add_users("[[user]]\nname = \"a\"\npasswd = \"x\"\n")
            .expect_err("unknown field");
        assert!(e.contains("passwd"), "{e}");
        let hash = hash_password(b"x").expect("hash");
        let e = auth
            .add_users(&format!(
                "[[user]]\nname = \"a\"\npassword_hash = \"{hash}\"\ntenant = \"Acme Corp\"\n"
            ))
            .expect_err("bad tenant");
        assert!(e.contains("user[0].tenant"), "{e}");
    }

    #[test]
    fn users_belong_to_their_tenant() {
        let hash = hash_password(b"x").expect("hash");
        let mut auth = Auth::default();
        auth.add_users(&format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ntenant = \"acme\"\n\
             [[user]]\nname = \"dev\"\npassword_hash = \"{hash}\"\n"
        ))
        .expect("load");
        assert_eq!(auth.tenant_of(Some("alice")), "acme");
        assert_eq!(auth.tenant_of(Some("dev")), "default");
        assert_eq!(auth.tenant_of(None), "default");
        assert_eq!(auth.tenants(), ["acme", "default"]);
    }

    #[test]
    fn resource_users_are_live_and_carry_their_grants() {
        let hash = hash_password(b"pw").expect("hash");
        let mut auth = Auth::default();
        auth.add_users(&format!(
            "[[user]]\nname = \"dev\"\npassword_hash = \"{hash}\"\n\
             permissions = [{{ addresses = [\"a/*\"], actions = [\"send\"] }}]\n"
        ))
        .expect("load");
        let lo = addr("127.0.0.1:1883");
        assert!(auth.grants(Some("dev")).may(Action::Send, "a/b"));
        assert!(!auth.grants(Some("dev")).may(Action::Receive, "a/b"));
        assert!(auth.grants(None).may(Action::Receive, "a/b"), "anonymous");
        let before = auth.generation();
        let spec = |tenant: &str, permissions: Option<Vec<Permission>>| UserSpec {
            tenant: Some(tenant.into()),
            password_hash: hash.clone(),
            permissions,
        };
        assert!(auth.set_resource_users(vec![("alice".into(), spec("acme", None))]));
        assert!(auth.generation() > before);
        assert_eq!(
            auth.check(lo, Some("alice"), Some(b"pw")),
            Verdict::Allowed(Some("alice".into()))
        );
        assert_eq!(auth.tenant_of(Some("alice")), "acme");
        assert_eq!(auth.tenants(), ["acme", "default"]);
        assert!(
            !auth.set_resource_users(vec![("alice".into(), spec("acme", None))]),
            "no change"
        );
        // A permission taken away shows in the grants at once; a resource removed is gone.
        let only_receive = Permission {
            addresses: vec!["*".into()],
            actions: vec![Action::Receive],
        };
        auth.set_resource_users(vec![(
            "alice".into(),
            spec("acme", Some(vec![only_receive])),
        )]);
        assert!(!auth.grants(Some("alice")).may(Action::Send, "x"));
        auth.set_resource_users(Vec::new());
        assert_eq!(
            auth.check(lo, Some("alice"), Some(b"pw")),
            Verdict::BadCredentials
        );
        assert!(
            !auth.grants(Some("alice")).may(Action::Send, "x"),
            "unknown: nothing"
        );
        assert_eq!(
            auth.check(lo, Some("dev"), Some(b"pw")),
            Verdict::Allowed(Some("dev".into()))
        );
    }

    #[test]
    fn resource_users_alone_make_names_checked() {
        let auth = Auth::default();
        let lo = addr("127.0.0.1:1883");
        assert_eq!(
            auth.check(lo, Some("bob"), Some(b"x")),
            Verdict::Allowed(None)
        );
        let spec = UserSpec {
            tenant: None,
            password_hash: hash_password(b"pw").expect("hash"),
            permissions: None,
        };
        auth.set_resource_users(vec![("alice".into(), spec)]);
        assert_eq!(
            auth.check(lo, Some("bob"), Some(b"x")),
            Verdict::BadCredentials
        );
        assert_eq!(
            auth.check(lo, None, None),
            Verdict::Allowed(None),
            "anonymous as before"
        );
    }
}
