//! The management API through its router (no socket): resources, status, errors, access.

use std::sync::{Arc, atomic::AtomicBool};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use base64::Engine;
use serde_json::{Value, json};
use tower::ServiceExt;
use wharf_api::{Api, access::Access};
use wharf_auth::{Anonymous, Auth};
use wharf_log::{Log, Store};
use wharf_resources::Catalogs;

async fn api(local: &str, admin_token: Option<&str>) -> Api {
    let log = Log::open(Store::open("memory://").expect("store"))
        .await
        .expect("log");
    Api {
        catalogs: Catalogs::new(log),
        access: Access {
            admin_token: admin_token.map(str::to_string),
            auth: Arc::new(Auth::new(Anonymous::LoopbackOnly)),
        },
        metrics: Arc::new(prometheus_client::registry::Registry::default()),
        listening: Arc::new(AtomicBool::new(true)),
        implicit_tenants: Arc::new(Vec::new()),
        local: local.parse().expect("addr"),
    }
}

async fn call(
    api: &Api,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = req
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    let response = wharf_api::router(api.clone())
        .oneshot(req)
        .await
        .expect("response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    (status, value)
}

#[tokio::test]
async fn addresses_are_created_read_replaced_and_deleted_with_status() {
    let api = api("127.0.0.1:8080", None).await;
    let orders =
        json!({"metadata": {"name": "orders"}, "spec": {"type": "queue", "max_delivery": 3}});
    let (code, body) = call(
        &api,
        "POST",
        "/api/v1/tenants/default/addresses",
        None,
        Some(orders.clone()),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["metadata"]["generation"], 1);
    assert_eq!(body["metadata"]["tenant"], "default");
    assert_eq!(body["status"]["phase"], "Pending");
    assert_eq!(body["apiVersion"], "wharf/v1");
    let (code, _) = call(
        &api,
        "POST",
        "/api/v1/tenants/default/addresses",
        None,
        Some(orders.clone()),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    // The reconciler's pass turns it Ready.
    wharf_functions_like_pass(&api).await;
    let (code, body) = call(
        &api,
        "GET",
        "/api/v1/tenants/default/addresses/orders",
        None,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["status"]["phase"], "Ready", "{body}");
    let (code, body) = call(
        &api,
        "PUT",
        "/api/v1/tenants/default/addresses/orders",
        None,
        Some(json!({"spec": {"type": "queue", "max_delivery": 5}})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["metadata"]["generation"], 2);
    assert_eq!(
        body["status"]["phase"], "Pending",
        "a new generation is not looked at yet"
    );
    // If-Match names the generation a replace expects.
    let (code, _) = call_with(
        &api,
        "PUT",
        "/api/v1/tenants/default/addresses/orders",
        &[("if-match", "1")],
        json!({"spec": {"type": "queue"}}),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, body) = call(&api, "GET", "/api/v1/tenants/default/addresses", None, None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
    let (code, _) = call(
        &api,
        "DELETE",
        "/api/v1/tenants/default/addresses/orders",
        None,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let (code, body) = call(
        &api,
        "GET",
        "/api/v1/tenants/default/addresses/orders",
        None,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("orders")),
        "{body}"
    );
}

async fn call_with(
    api: &Api,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = wharf_api::router(api.clone())
        .oneshot(req.body(Body::from(body.to_string())).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// What the reconciler does, by hand (wharf-functions depends on this crate's neighbours,
/// not the other way round): mark every address of the default tenant Ready.
async fn wharf_functions_like_pass(api: &Api) {
    for s in api.catalogs.list("Address", "default").await.expect("list") {
        let status = wharf_resources::Status {
            phase: wharf_resources::Phase::Ready,
            message: None,
            observed_generation: s.generation,
            updated: Some("now".into()),
        };
        api.catalogs
            .set_status("Address", "default", &s.name, &status)
            .await
            .expect("status");
    }
}

#[tokio::test]
async fn bad_resources_are_refused_naming_the_field() {
    let api = api("127.0.0.1:8080", None).await;
    for (body, field) in [
        (
            json!({"metadata": {"name": "q"}, "spec": {"max_delivery": 0}}),
            "spec.max_delivery",
        ),
        (
            json!({"metadata": {"name": "q"}, "spec": {"type": "fifo"}}),
            "spec.type",
        ),
        (
            json!({"metadata": {"name": "q", "tenant": "other"}}),
            "metadata.tenant",
        ),
        (json!({"metadata": {}}), "metadata.name"),
        (json!({"kind": "Plan", "metadata": {"name": "p"}}), "kind"),
    ] {
        let (code, problem) = call(
            &api,
            "POST",
            "/api/v1/tenants/default/addresses",
            None,
            Some(body.clone()),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
        assert_eq!(problem["status"], 400);
    }
    let (code, problem) = call(
        &api,
        "PUT",
        "/api/v1/plans/small",
        None,
        Some(json!({"metadata": {"name": "big"}})),
    )
    .await;
    assert_eq!(
        (code, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("metadata.name"))
    );
    let (code, problem) =
        call_with(&api, "POST", "/api/v1/plans", &[], json!("not an object")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{problem}");
    let (code, _) = call(&api, "GET", "/api/v1/tenants/nowhere/addresses", None, None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "an undeclared tenant");
    let (code, _) = call(
        &api,
        "GET",
        "/api/v1/tenants/Not_A_Tenant/addresses",
        None,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_user_s_password_is_stored_hashed_and_tenants_make_their_addresses_reachable() {
    let api = api("127.0.0.1:8080", None).await;
    let (code, body) = call(
        &api,
        "PUT",
        "/api/v1/tenants/acme",
        None,
        Some(json!({"spec": {}})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, body) = call(&api, "PUT", "/api/v1/users/alice", None,
        Some(json!({"spec": {"tenant": "acme", "password": "s3cret",
                             "permissions": [{"addresses": ["orders*"], "actions": ["send", "manage"]}]}}))).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let hash = body["spec"]["password_hash"].as_str().expect("hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(body["spec"].get("password").is_none(), "{body}");
    let (code, _) = call(
        &api,
        "POST",
        "/api/v1/tenants/acme/addresses",
        None,
        Some(json!({"metadata": {"name": "orders"}})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn callers_need_credentials_off_loopback_and_users_manage_only_their_own() {
    let api = api("0.0.0.0:8080", Some("t0ken")).await;
    let (code, _) = call(&api, "GET", "/api/v1/plans", None, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = call(&api, "GET", "/api/v1/plans", Some("Bearer wrong"), None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let admin = Some("Bearer t0ken");
    let (code, _) = call(&api, "GET", "/api/v1/plans", admin, None).await;
    assert_eq!(code, StatusCode::OK);
    call(&api, "PUT", "/api/v1/tenants/acme", admin, Some(json!({}))).await;
    let (code, body) = call(
        &api,
        "PUT",
        "/api/v1/users/alice",
        admin,
        Some(json!({"spec": {"tenant": "acme", "password": "s3cret",
                             "permissions": [{"addresses": ["orders*"], "actions": ["manage"]}]}})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let alice = basic("alice", "s3cret");
    let (code, body) = call(
        &api,
        "PUT",
        "/api/v1/tenants/acme/addresses/orders.eu",
        Some(&alice),
        Some(json!({})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, _) = call(
        &api,
        "PUT",
        "/api/v1/tenants/acme/addresses/jobs",
        Some(&alice),
        Some(json!({})),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "no manage permission on jobs");
    let (code, _) = call(
        &api,
        "PUT",
        "/api/v1/tenants/default/addresses/orders",
        Some(&alice),
        Some(json!({})),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "another tenant");
    let (code, _) = call(
        &api,
        "PUT",
        "/api/v1/plans/big",
        Some(&alice),
        Some(json!({})),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "plans are an admin's");
    let (code, _) = call(
        &api,
        "GET",
        "/api/v1/tenants/acme/addresses",
        Some(&basic("alice", "wrong")),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, body) = call(
        &api,
        "GET",
        "/api/v1/tenants/acme/addresses",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
    // Health and metrics need no credentials.
    let (code, _) = call(&api, "GET", "/healthz", None, None).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = call(&api, "GET", "/readyz", None, None).await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_holds_every_kind_s_schema() {
    let api = api("127.0.0.1:8080", None).await;
    let (code, doc) = call(&api, "GET", "/openapi.json", None, None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for kind in [
        "Address",
        "Plan",
        "Tenant",
        "User",
        "Status",
        "AddressSpec",
        "Problem",
    ] {
        assert!(
            doc["components"]["schemas"].get(kind).is_some(),
            "{kind} missing"
        );
    }
    assert!(
        doc["paths"]
            .get("/api/v1/tenants/{tenant}/addresses/{name}")
            .is_some()
    );
    let text = doc.to_string();
    assert!(
        !text.contains("#/$defs/"),
        "every reference resolved into components"
    );
}

#[tokio::test]
async fn a_tenant_s_plan_limits_its_addresses() {
    let api = api("127.0.0.1:8080", None).await;
    call(
        &api,
        "PUT",
        "/api/v1/plans/tiny",
        None,
        Some(json!({"spec": {"limits": {"max_addresses": 3}}})),
    )
    .await;
    call(
        &api,
        "PUT",
        "/api/v1/tenants/acme",
        None,
        Some(json!({"spec": {"plan": "tiny", "limits": {"max_addresses": 1}}})),
    )
    .await;
    let (code, body) = call(
        &api,
        "PUT",
        "/api/v1/tenants/acme/addresses/a",
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, body) = call(
        &api,
        "PUT",
        "/api/v1/tenants/acme/addresses/a",
        None,
        Some(json!({"spec": {"max_delivery": 2}})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "replacing is not adding: {body}");
    let (code, body) = call(
        &api,
        "PUT",
        "/api/v1/tenants/acme/addresses/b",
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max_addresses")),
        "{body}"
    );
    // The tenant's own limit overrides its plan's; without it, the plan's applies.
    call(
        &api,
        "PUT",
        "/api/v1/tenants/acme",
        None,
        Some(json!({"spec": {"plan": "tiny"}})),
    )
    .await;
    let (code, _) = call(
        &api,
        "PUT",
        "/api/v1/tenants/acme/addresses/b",
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
}
