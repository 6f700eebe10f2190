//! `wharf get | apply | describe | delete`: resources the way kubectl handles them, through
//! the management API (`--server URL`, with `--token` or `--user NAME:PASSWORD`) or, without
//! `--server`, on the store directly (`--store`).
//!
//! ```text
//! wharf get addresses                   # a table: name, type, generation, status
//! wharf get address orders -o yaml      # one resource, with its status
//! wharf apply -f resources.yaml         # JSON or YAML; one resource, a list, or YAML documents
//! wharf describe address orders         # status, stream, cursors and backlog
//! wharf delete address orders
//! ```
//! Addresses are in the tenant `--tenant` names (the default one otherwise), unless a
//! resource's `metadata.tenant` says.

use std::{io::Read, path::Path};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use wharf_log::Log;
use wharf_resources::{Any, Catalogs, in_tenant, kind_named};

/// How `get` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Where resources are read and written.
pub enum Target {
    Api {
        base: String,
        client: reqwest::Client,
        authorization: Option<String>,
        tenant: String,
    },
    Store {
        catalogs: Catalogs,
        tenant: String,
    },
}

impl Target {
    /// The API at `server` with a token or `NAME:PASSWORD`.
    pub fn api(
        server: &str,
        token: Option<&str>,
        user: Option<&str>,
        tenant: &str,
    ) -> Result<Self> {
        use base64::Engine;
        let authorization = match (token, user) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, Some(u)) => {
                if !u.contains(':') {
                    bail!("--credentials: {u:?} is not NAME:PASSWORD");
                }
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(u)
                ))
            }
            (None, None) => None,
        };
        Ok(Self::Api {
            base: server.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            authorization,
            tenant: tenant.to_string(),
        })
    }

    pub fn store(root: Log, tenant: &str) -> Self {
        Self::Store {
            catalogs: Catalogs::new(root),
            tenant: tenant.to_string(),
        }
    }

    fn tenant(&self) -> &str {
        match self {
            Self::Api { tenant, .. } | Self::Store { tenant, .. } => tenant,
        }
    }

    /// The API path of `kind`'s collection in `tenant`.
    fn collection(kind: &str, tenant: &str) -> String {
        let plural = plural(kind);
        if in_tenant(kind) {
            format!("/api/v1/tenants/{tenant}/{plural}")
        } else {
            format!("/api/v1/{plural}")
        }
    }

    /// An API request; the JSON answer, or the problem's detail as the error.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let Self::Api {
            base,
            client,
            authorization,
            ..
        } = self
        else {
            bail!("not an API target");
        };
        let mut req = client.request(method.clone(), format!("{base}{path}"));
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let response = req
            .send()
            .await
            .with_context(|| format!("{method} {base}{path}"))?;
        let code = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if code >= 400 && code != 404 {
            let detail = value["detail"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            bail!("{detail} (HTTP {code})");
        }
        Ok((code, value))
    }

    pub async fn list(&self, kind: &str) -> Result<Vec<Value>> {
        match self {
            Self::Store { catalogs, tenant } => Ok(catalogs
                .list(kind, tenant)
                .await?
                .iter()
                .map(|s| s.to_json())
                .collect()),
            Self::Api { .. } => {
                let (code, v) = self
                    .request(
                        reqwest::Method::GET,
                        &Self::collection(kind, self.tenant()),
                        None,
                    )
                    .await?;
                if code == 404 {
                    bail!("{}", v["detail"].as_str().unwrap_or("not found"));
                }
                Ok(v["items"].as_array().cloned().unwrap_or_default())
            }
        }
    }

    pub async fn get(&self, kind: &str, name: &str) -> Result<Option<Value>> {
        match self {
            Self::Store { catalogs, tenant } => {
                Ok(catalogs.get(kind, tenant, name).await?.map(|s| s.to_json()))
            }
            Self::Api { .. } => {
                let path = format!("{}/{name}", Self::collection(kind, self.tenant()));
                let (code, v) = self.request(reqwest::Method::GET, &path, None).await?;
                Ok((code != 404).then_some(v))
            }
        }
    }

    /// Create or replace; the stored resource, and whether it was created.
    pub async fn apply(&self, mut resource: Value) -> Result<(Value, bool)> {
        let kind = resource["kind"].as_str().unwrap_or_default().to_string();
        let tenant = resource["metadata"]["tenant"]
            .as_str()
            .unwrap_or(self.tenant())
            .to_string();
        match self {
            Self::Store { catalogs, .. } => {
                if kind == "User" {
                    resource = tokio::task::spawn_blocking(move || {
                        wharf_auth::with_password_hashed(&mut resource).map(|()| resource)
                    })
                    .await??;
                }
                let any = Any::from_json(&resource)?;
                let existed = catalogs
                    .get(any.kind(), &tenant, any.name())
                    .await?
                    .is_some();
                catalogs.apply(&any, &tenant, None).await?;
                let stored = catalogs
                    .get(any.kind(), &tenant, any.name())
                    .await?
                    .context("deleted while it was written")?;
                Ok((stored.to_json(), !existed))
            }
            Self::Api { .. } => {
                let kind = kind_arg(&kind)?;
                let name = resource["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let path = format!("{}/{name}", Self::collection(kind, &tenant));
                let (code, v) = self
                    .request(reqwest::Method::PUT, &path, Some(&resource))
                    .await?;
                if code == 404 {
                    bail!("{}", v["detail"].as_str().unwrap_or("not found"));
                }
                Ok((v, code == 201))
            }
        }
    }

    pub async fn delete(&self, kind: &str, name: &str) -> Result<bool> {
        match self {
            Self::Store { catalogs, tenant } => Ok(catalogs.delete(kind, tenant, name).await?),
            Self::Api { .. } => {
                let path = format!("{}/{name}", Self::collection(kind, self.tenant()));
                let (code, _) = self.request(reqwest::Method::DELETE, &path, None).await?;
                Ok(code != 404)
            }
        }
    }

    /// An address's stream and cursors (`wharf_api::stats`).
    pub async fn stats(&self, name: &str, queue: bool) -> Result<Value> {
        match self {
            Self::Store { catalogs, tenant } => {
                let log = catalogs.log(tenant).await?;
                Ok(wharf_api::stats::address(&log, name, queue).await?)
            }
            Self::Api { .. } => {
                let path = format!(
                    "{}/{name}/stats",
                    Self::collection("Address", self.tenant())
                );
                Ok(self.request(reqwest::Method::GET, &path, None).await?.1)
            }
        }
    }
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "Address" => "addresses",
        "Plan" => "plans",
        "Tenant" => "tenants",
        _ => "users",
    }
}

/// The kind a user typed: `addresses`, `address`, `Address`.
pub fn kind_arg(typed: &str) -> Result<&'static str> {
    kind_named(typed)
        .with_context(|| format!("{typed:?} is not a kind: addresses, plans, tenants or users"))
}

/// The resources of a file (`-` for standard input): a JSON object or array, or YAML with one
/// resource (or a list) per document.
pub fn read_resources(file: &Path) -> Result<Vec<Value>> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let trimmed = text.trim_start();
    let mut out = Vec::new();
    let mut push = |v: Value| match v {
        Value::Array(items) => out.extend(items),
        Value::Null => {}
        one => out.push(one),
    };
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        push(
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?,
        );
    } else {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let v: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("{}: YAML document {i} does not parse", file.display()))?;
            push(v);
        }
    }
    Ok(out)
}

/// `wharf apply -f FILE`: every resource checked before any is written (plans first, then
/// tenants, users, addresses), then written.
pub async fn apply(target: &Target, file: &Path) -> Result<()> {
    let mut resources = read_resources(file)?;
    for (i, r) in resources.iter_mut().enumerate() {
        if !r.is_object() {
            bail!("{}: resource {i} is not an object", file.display());
        }
        // Check what can be checked here (a User's plain password is hashed on the way).
        let mut probe = r.clone();
        if let Some(spec) = probe.get_mut("spec").and_then(Value::as_object_mut)
            && spec.remove("password").is_some()
            && !spec.contains_key("password_hash")
        {
            spec.insert("password_hash".into(), json!("$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
        }
        Any::from_json(&probe).map_err(|e| {
            let name = r["metadata"]["name"].as_str().unwrap_or("?");
            anyhow::anyhow!("{}: resource {i} ({name}): {e}", file.display())
        })?;
    }
    let order = |r: &Value| {
        wharf_resources::KINDS
            .iter()
            .position(|k| r["kind"].as_str() == Some(k))
            .unwrap_or(usize::MAX)
    };
    resources.sort_by_key(order);
    for r in resources {
        let (stored, created) = target.apply(r).await?;
        let kind = stored["kind"].as_str().unwrap_or("?").to_ascii_lowercase();
        let name = stored["metadata"]["name"].as_str().unwrap_or("?");
        let generation = &stored["metadata"]["generation"];
        let verb = if created { "created" } else { "configured" };
        match stored["metadata"]["tenant"].as_str() {
            Some(t) => println!("{kind}/{name} {verb} in tenant {t} (generation {generation})"),
            None => println!("{kind}/{name} {verb} (generation {generation})"),
        }
    }
    Ok(())
}

/// `wharf get KIND [NAME]`.
pub async fn get(target: &Target, kind: &str, name: Option<&str>, output: Output) -> Result<()> {
    let items = match name {
        Some(n) => match target.get(kind, n).await? {
            Some(v) => vec![v],
            None => bail!("{} {n:?} does not exist", kind.to_ascii_lowercase()),
        },
        None => target.list(kind).await?,
    };
    match output {
        Output::Json => {
            let v = match (name, items.as_slice()) {
                (Some(_), [one]) => one.clone(),
                _ => json!({"kind": format!("{kind}List"), "items": items}),
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Yaml => {
            let v = match (name, items.as_slice()) {
                (Some(_), [one]) => one.clone(),
                _ => json!({"kind": format!("{kind}List"), "items": items}),
            };
            print!("{}", serde_yaml_ng::to_string(&v)?);
        }
        Output::Table => print!("{}", table(kind, &items)),
    }
    Ok(())
}

/// A kubectl-style table of resources of `kind`.
pub fn table(kind: &str, items: &[Value]) -> String {
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or(x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let (head, rows): (Vec<&str>, Vec<Vec<String>>) = match kind {
        "Address" => (
            vec![
                "NAME",
                "TENANT",
                "TYPE",
                "TOPICS",
                "GENERATION",
                "STATUS",
                "MESSAGE",
            ],
            items
                .iter()
                .map(|r| {
                    vec![
                        s(&r["metadata"]["name"]),
                        s(&r["metadata"]["tenant"]),
                        r["spec"]["type"].as_str().unwrap_or("queue").to_string(),
                        s(&r["spec"]["mqtt_topics"]),
                        s(&r["metadata"]["generation"]),
                        s(&r["status"]["phase"]),
                        s(&r["status"]["message"]),
                    ]
                })
                .collect(),
        ),
        "Plan" => (
            vec![
                "NAME",
                "MAX-CONNECTIONS",
                "MAX-MESSAGE-BYTES",
                "CREDIT",
                "GENERATION",
                "STATUS",
            ],
            items
                .iter()
                .map(|r| {
                    vec![
                        s(&r["metadata"]["name"]),
                        s(&r["spec"]["limits"]["max_connections"]),
                        s(&r["spec"]["limits"]["max_message_bytes"]),
                        s(&r["spec"]["credit"]),
                        s(&r["metadata"]["generation"]),
                        s(&r["status"]["phase"]),
                    ]
                })
                .collect(),
        ),
        "Tenant" => (
            vec!["NAME", "PLAN", "GENERATION", "STATUS", "MESSAGE"],
            items
                .iter()
                .map(|r| {
                    vec![
                        s(&r["metadata"]["name"]),
                        s(&r["spec"]["plan"]),
                        s(&r["metadata"]["generation"]),
                        s(&r["status"]["phase"]),
                        s(&r["status"]["message"]),
                    ]
                })
                .collect(),
        ),
        _ => (
            vec![
                "NAME",
                "TENANT",
                "PERMISSIONS",
                "GENERATION",
                "STATUS",
                "MESSAGE",
            ],
            items
                .iter()
                .map(|r| {
                    let perms = match r["spec"]["permissions"].as_array() {
                        None => "send,receive on *".to_string(),
                        Some(list) => list
                            .iter()
                            .map(|p| format!("{} on {}", s(&p["actions"]), s(&p["addresses"])))
                            .collect::<Vec<_>>()
                            .join("; "),
                    };
                    vec![
                        s(&r["metadata"]["name"]),
                        r["spec"]["tenant"]
                            .as_str()
                            .unwrap_or("default")
                            .to_string(),
                        perms,
                        s(&r["metadata"]["generation"]),
                        s(&r["status"]["phase"]),
                        s(&r["status"]["message"]),
                    ]
                })
                .collect(),
        ),
    };
    if rows.is_empty() {
        return format!("No {} found.\n", plural(kind));
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut l = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("   ");
        l.truncate(l.trim_end().len());
        l + "\n"
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r);
    }
    out
}

/// `wharf describe KIND NAME`: the resource and its status; for an address also its stream,
/// cursors and backlog.
pub async fn describe(target: &Target, kind: &str, name: &str) -> Result<()> {
    let Some(r) = target.get(kind, name).await? else {
        bail!("{} {name:?} does not exist", kind.to_ascii_lowercase());
    };
    let mut out = format!("Name:        {name}\nKind:        {kind}\n");
    if let Some(t) = r["metadata"]["tenant"].as_str() {
        out += &format!("Tenant:      {t}\n");
    }
    out += &format!("Generation:  {}\n", r["metadata"]["generation"]);
    let st = &r["status"];
    out += &format!(
        "Status:      {}{}\n",
        st["phase"].as_str().unwrap_or("-"),
        st["message"]
            .as_str()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    if let Some(u) = st["updated"].as_str() {
        out += &format!(
            "Updated:     {u} (generation {} looked at)\n",
            st["observed_generation"]
        );
    }
    out += "Spec:\n";
    for l in serde_yaml_ng::to_string(&r["spec"])?.lines() {
        out += &format!("  {l}\n");
    }
    if kind == "Address" {
        let queue = !matches!(r["spec"]["type"].as_str(), Some("topic" | "multicast"));
        let stats = target.stats(name, queue).await?;
        out += &format!(
            "Stream:      {} (offsets {}..{}, {} records, {} bytes held)\n",
            stats["stream"].as_str().unwrap_or("-"),
            stats["start_offset"],
            stats["end_offset"],
            stats["records"],
            stats["bytes"]
        );
        if queue {
            out += &format!("Backlog:     {}\n", stats["backlog"]);
        }
        let cursors = stats["cursors"].as_array().cloned().unwrap_or_default();
        if cursors.is_empty() {
            out += "Consumers:   none has read it yet\n";
        } else {
            out += "Consumers (cursors):\n";
            for c in cursors {
                out += &format!(
                    "  {:<40} committed {:<8} backlog {}\n",
                    c["name"].as_str().unwrap_or("?"),
                    c["committed"],
                    c["backlog"]
                );
            }
        }
    }
    print!("{out}");
    Ok(())
}
