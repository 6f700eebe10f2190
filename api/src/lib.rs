//! # wharf-api
//!
//! Wharf's management API over HTTP (axum), served by `wharf up` and by every `wharf adapter`
//! on `--http` (default `127.0.0.1:8080`):
//!
//! | path | what |
//! | --- | --- |
//! | `GET /` | the web console (plain HTML and JavaScript over this API, no build step) |
//! | `GET /healthz` | the process is alive |
//! | `GET /readyz` | the store answers and the listeners are up (503 with why, otherwise) |
//! | `GET /metrics` | Prometheus metrics (text format) |
//! | `GET /openapi.json` | the OpenAPI 3.1 document, schemas generated from `wharf-resources` |
//! | `/api/v1/plans`, `/api/v1/tenants`, `/api/v1/users` `[/NAME]` | installation-wide resources |
//! | `/api/v1/tenants/TENANT/addresses[/NAME]` | a tenant's addresses |
//!
//! On a collection: `GET` lists, `POST` creates (409 if it exists). On one resource: `GET`,
//! `PUT` (create or replace; `If-Match: GENERATION` to replace only that generation), `DELETE`.
//! Resources go in and out as JSON, each with `metadata.generation` and its `status` on the
//! way out; errors are `application/problem+json` naming the field. A User may be given a
//! plain `spec.password`: it is hashed (argon2) and only the hash is stored.
//!
//! Who may call: [`access`].

pub mod access;
mod console;
pub mod openapi;
pub mod problem;
pub mod stats;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use wharf_log_format::catalog::{DEFAULT_TENANT, valid_tenant};
use wharf_resources::{Any, Catalogs, Invalid, in_tenant, kind_named};

use crate::{access::Access, problem::Problem};

pub use access::Caller;

/// What the API serves from.
#[derive(Clone)]
pub struct Api {
    pub catalogs: Catalogs,
    pub access: Access,
    /// Rendered at `/metrics`.
    pub metrics: Arc<prometheus_client::registry::Registry>,
    /// Set once the process's listeners are up (`/readyz`).
    pub listening: Arc<AtomicBool>,
    /// Tenants that exist without a Tenant resource (the users file's), besides the default.
    pub implicit_tenants: Arc<Vec<String>>,
    /// The address the API listens on: anonymous callers are let in by the rule for it
    /// (set by [`serve`]).
    pub local: SocketAddr,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("catalogs", &self.catalogs)
            .field("local", &self.local)
            .finish()
    }
}

/// The API's routes.
pub fn router(api: Api) -> Router {
    let mut router = Router::new()
        .route("/", get(console::index))
        .route("/console.js", get(console::script))
        .route("/console.css", get(console::style))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .route(
            "/api/v1/tenants/{tenant}/addresses",
            get(list_addresses).post(create_address),
        )
        .route(
            "/api/v1/tenants/{tenant}/addresses/{name}",
            get(get_address).put(put_address).delete(delete_address),
        )
        .route(
            "/api/v1/tenants/{tenant}/addresses/{name}/stats",
            get(address_stats),
        );
    for plural in ["plans", "tenants", "users"] {
        let p = || plural.to_string();
        let t = || DEFAULT_TENANT.to_string();
        router = router
            .route(
                &format!("/api/v1/{plural}"),
                get(move |s: State<Api>, h: HeaderMap| list(s, h, p(), t()))
                    .post(move |s: State<Api>, h: HeaderMap, b: Bytes| create(s, h, p(), t(), b)),
            )
            .route(
                &format!("/api/v1/{plural}/{{name}}"),
                get(move |s: State<Api>, h: HeaderMap, Path(n): Path<String>| {
                    get_one(s, h, p(), t(), n)
                })
                .put(
                    move |s: State<Api>, h: HeaderMap, Path(n): Path<String>, b: Bytes| {
                        put(s, h, p(), t(), n, b)
                    },
                )
                .delete(
                    move |s: State<Api>, h: HeaderMap, Path(n): Path<String>| {
                        delete(s, h, p(), t(), n)
                    },
                ),
            );
    }
    router.with_state(api)
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mut api: Api,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    api.local = listener.local_addr()?;
    axum::serve(listener, router(api))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(api): State<Api>) -> Response {
    if !api.listening.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "listeners are not up yet\n",
        )
            .into_response();
    }
    match api.catalogs.root().catalog().list("Tenant").await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store does not answer: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &api.metrics) {
        return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The kind a plural names.
fn kind_of(plural: &str) -> Result<&'static str, Problem> {
    kind_named(plural).ok_or_else(|| Problem::not_found(format!("no kind {plural:?}")))
}

/// A tenant named in a path: one that exists.
async fn known_tenant(api: &Api, tenant: &str) -> Result<(), Problem> {
    if !valid_tenant(tenant) {
        return Err(Problem::not_found(format!(
            "{tenant:?} is not a tenant name"
        )));
    }
    if tenant == DEFAULT_TENANT || api.implicit_tenants.iter().any(|t| t == tenant) {
        return Ok(());
    }
    if api
        .catalogs
        .get("Tenant", DEFAULT_TENANT, tenant)
        .await?
        .is_some()
    {
        return Ok(());
    }
    Err(Problem::not_found(format!(
        "tenant {tenant:?} does not exist (create it with a Tenant resource)"
    )))
}

/// Who is calling, and may they do this: the kind the plural names, the caller (401 / 403
/// otherwise), and for an address a tenant that exists (404).
async fn admit(
    api: &Api,
    headers: &HeaderMap,
    plural: &str,
    tenant: &str,
    name: Option<&str>,
    write: bool,
) -> Result<(&'static str, Caller), Problem> {
    let kind = kind_of(plural)?;
    let caller = api.access.caller(&api.catalogs, api.local, headers).await?;
    authorize(&caller, kind, tenant, name, write)?;
    if in_tenant(kind) {
        known_tenant(api, tenant).await?;
    }
    Ok((kind, caller))
}

/// Check what the caller may do with resources of `kind` in `tenant` (named `name`, or any).
fn authorize(
    caller: &Caller,
    kind: &str,
    tenant: &str,
    name: Option<&str>,
    write: bool,
) -> Result<(), Problem> {
    if !in_tenant(kind) {
        return caller.require_admin(if write {
            "change plans, tenants or users"
        } else {
            "read plans, tenants or users"
        });
    }
    let allowed = match name {
        Some(n) => caller.may_manage(tenant, n),
        None => caller.manages_in(tenant),
    };
    if allowed {
        Ok(())
    } else {
        Err(Problem::forbidden(format!(
            "no manage permission on {} in tenant {tenant:?}",
            name.map_or_else(|| "addresses".to_string(), |n| format!("address {n:?}"))
        )))
    }
}

async fn list(
    State(api): State<Api>,
    headers: HeaderMap,
    plural: String,
    tenant: String,
) -> Result<Json<Value>, Problem> {
    let (kind, caller) = admit(&api, &headers, &plural, &tenant, None, false).await?;
    let items: Vec<Value> = api
        .catalogs
        .list(kind, &tenant)
        .await?
        .into_iter()
        .filter(|s| caller.may_manage(&tenant, &s.name) || !in_tenant(kind))
        .map(|s| s.to_json())
        .collect();
    Ok(Json(json!({"kind": format!("{kind}List"), "items": items})))
}

async fn get_one(
    State(api): State<Api>,
    headers: HeaderMap,
    plural: String,
    tenant: String,
    name: String,
) -> Result<Json<Value>, Problem> {
    let (kind, _caller) = admit(&api, &headers, &plural, &tenant, Some(&name), false).await?;
    if !wharf_log_format::catalog::valid_name(&name) {
        return Err(Problem::not_found(format!(
            "{kind} {name:?} does not exist"
        )));
    }
    match api.catalogs.get(kind, &tenant, &name).await? {
        Some(s) => Ok(Json(s.to_json())),
        None => Err(Problem::not_found(format!(
            "{kind} {name:?} does not exist"
        ))),
    }
}

/// The resource of a request body, checked against the path; a User's `spec.password`
/// hashed.
async fn resource_of(
    body: &[u8],
    kind: &str,
    tenant: &str,
    name: Option<&str>,
) -> Result<Any, Problem> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Problem::bad_request(
            "the body must be a JSON object (a resource)",
        ));
    }
    // Defaults a client may leave out.
    if value.get("apiVersion").is_none() {
        value["apiVersion"] = json!(wharf_resources::API_VERSION);
    }
    match value.get("kind") {
        None => value["kind"] = json!(kind),
        Some(Value::String(k)) if k == kind => {}
        Some(other) => {
            return Err(Invalid::new(
                "kind",
                format!("{other} does not belong here: this path takes {kind:?} resources"),
            )
            .into());
        }
    }
    if let Some(n) = name {
        match value.pointer("/metadata/name") {
            None => {
                if !value.get("metadata").is_some_and(Value::is_object) {
                    value["metadata"] = json!({});
                }
                value["metadata"]["name"] = json!(n);
            }
            Some(Value::String(given)) if given == n => {}
            Some(given) => {
                return Err(Invalid::new(
                    "metadata.name",
                    format!("{given} is not the name in the path ({n:?})"),
                )
                .into());
            }
        }
    }
    if in_tenant(kind) {
        match value.pointer("/metadata/tenant") {
            None | Some(Value::Null) => {
                if let Some(m) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert("tenant".into(), json!(tenant));
                }
            }
            Some(Value::String(t)) if t == tenant => {}
            Some(t) => {
                return Err(Invalid::new(
                    "metadata.tenant",
                    format!("{t} is not the tenant in the path ({tenant:?})"),
                )
                .into());
            }
        }
    }
    if kind == "User" {
        value = tokio::task::spawn_blocking(move || {
            wharf_auth::with_password_hashed(&mut value).map(|()| value)
        })
        .await
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    }
    Ok(Any::from_json(&value)?)
}

/// Write `resource`; 201 with it if it is new, 200 if replaced.
async fn write(
    api: &Api,
    resource: Any,
    tenant: &str,
    expected: Option<u64>,
) -> Result<Response, Problem> {
    let kind = resource.kind();
    let existed = api
        .catalogs
        .get(kind, tenant, resource.name())
        .await?
        .is_some();
    if !existed && kind == "Address" {
        within_max_addresses(api, tenant).await?;
    }
    api.catalogs.apply(&resource, tenant, expected).await?;
    let stored = api
        .catalogs
        .get(kind, tenant, resource.name())
        .await?
        .ok_or_else(|| Problem::new(StatusCode::CONFLICT, "deleted while it was written"))?;
    let code = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, Json(stored.to_json())).into_response())
}

/// A new address must fit the tenant's `max_addresses` (its Tenant resource's limits over
/// its plan's): 403 with the limit otherwise.
async fn within_max_addresses(api: &Api, tenant: &str) -> Result<(), Problem> {
    let Some(t) = api.catalogs.get("Tenant", DEFAULT_TENANT, tenant).await? else {
        return Ok(());
    };
    let Ok(t) = wharf_resources::Tenant::from_json(&t.resource) else {
        return Ok(());
    };
    let plan = match &t.spec.plan {
        Some(p) => api
            .catalogs
            .get("Plan", DEFAULT_TENANT, p)
            .await?
            .and_then(|p| wharf_resources::Plan::from_json(&p.resource).ok())
            .map(|p| p.spec.limits)
            .unwrap_or_default(),
        None => Default::default(),
    };
    let Some(max) = t.spec.limits.over(&plan).max_addresses else {
        return Ok(());
    };
    let count = api.catalogs.list("Address", tenant).await?.len();
    if count as u64 >= u64::from(max) {
        return Err(Problem::forbidden(format!(
            "tenant {tenant:?} has {count} addresses: its limit (max_addresses) is {max}"
        )));
    }
    Ok(())
}

async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    plural: String,
    tenant: String,
    body: Bytes,
) -> Result<Response, Problem> {
    let kind = kind_of(&plural)?;
    let caller = api
        .access
        .caller(&api.catalogs, api.local, &headers)
        .await?;
    if in_tenant(kind) {
        known_tenant(&api, &tenant).await?;
    }
    let resource = resource_of(&body, kind, &tenant, None).await?;
    authorize(&caller, kind, &tenant, Some(resource.name()), true)?;
    write(&api, resource, &tenant, Some(0)).await
}

async fn put(
    State(api): State<Api>,
    headers: HeaderMap,
    plural: String,
    tenant: String,
    name: String,
    body: Bytes,
) -> Result<Response, Problem> {
    let (kind, _caller) = admit(&api, &headers, &plural, &tenant, Some(&name), true).await?;
    let expected = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(|s| s.trim().trim_matches('"'))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Problem::bad_request("If-Match must be a generation (a number)"))?,
        ),
    };
    let resource = resource_of(&body, kind, &tenant, Some(&name)).await?;
    write(&api, resource, &tenant, expected).await
}

async fn delete(
    State(api): State<Api>,
    headers: HeaderMap,
    plural: String,
    tenant: String,
    name: String,
) -> Result<Response, Problem> {
    let (kind, _caller) = admit(&api, &headers, &plural, &tenant, Some(&name), true).await?;
    if !wharf_log_format::catalog::valid_name(&name)
        || !api.catalogs.delete(kind, &tenant, &name).await?
    {
        return Err(Problem::not_found(format!(
            "{kind} {name:?} does not exist"
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_addresses(
    s: State<Api>,
    h: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, Problem> {
    list(s, h, "addresses".into(), tenant).await
}

async fn create_address(
    s: State<Api>,
    h: HeaderMap,
    Path(tenant): Path<String>,
    b: Bytes,
) -> Result<Response, Problem> {
    create(s, h, "addresses".into(), tenant, b).await
}

async fn get_address(
    s: State<Api>,
    h: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    get_one(s, h, "addresses".into(), tenant, name).await
}

async fn put_address(
    s: State<Api>,
    h: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
    b: Bytes,
) -> Result<Response, Problem> {
    put(s, h, "addresses".into(), tenant, name, b).await
}

async fn delete_address(
    s: State<Api>,
    h: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, Problem> {
    delete(s, h, "addresses".into(), tenant, name).await
}

/// `GET .../addresses/{name}/stats`: the address's stream and cursors ([`stats`]).
async fn address_stats(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    let caller = api
        .access
        .caller(&api.catalogs, api.local, &headers)
        .await?;
    authorize(&caller, "Address", &tenant, Some(&name), false)?;
    known_tenant(&api, &tenant).await?;
    let Some(stored) = api.catalogs.get("Address", &tenant, &name).await? else {
        return Err(Problem::not_found(format!(
            "Address {name:?} does not exist"
        )));
    };
    let queue = wharf_resources::AddressSpec::of(&stored.resource)
        .map(|s| !s.kind().multicast())
        .unwrap_or(true);
    let log = api.catalogs.log(&tenant).await?;
    Ok(Json(stats::address(&log, &name, queue).await?))
}
