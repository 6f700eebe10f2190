//! The OpenAPI 3.1 document of the management API; the resource schemas are
//! `wharf-resources`' (`schemars`), so the document cannot drift from what the API accepts.

use serde_json::{Value, json};

/// The document, built from the resource schemas.
pub fn document() -> Value {
    let mut schemas = serde_json::Map::new();
    for (kind, schema) in wharf_resources::schemas() {
        let mut schema = schema;
        // Each kind's schema carries its own definitions: hoist them into components.
        if let Some(Value::Object(defs)) = schema.as_object_mut().and_then(|o| o.remove("$defs")) {
            for (name, def) in defs {
                schemas.insert(name, def);
            }
        }
        if let Some(o) = schema.as_object_mut() {
            o.remove("$schema");
        }
        schemas.insert(kind.to_string(), schema);
    }
    schemas.insert(
        "Status".into(),
        serde_json::to_value(schemars::schema_for!(wharf_resources::Status)).unwrap_or_default(),
    );
    schemas.insert(
        "Problem".into(),
        json!({"type": "object", "required": ["status", "title", "detail"], "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "field": {"type": "string", "description": "the field of the resource that is wrong"}}}),
    );
    let mut paths = serde_json::Map::new();
    for (kind, plural) in [("Plan", "plans"), ("Tenant", "tenants"), ("User", "users")] {
        paths.insert(format!("/api/v1/{plural}"), collection(kind, &[]));
        paths.insert(format!("/api/v1/{plural}/{{name}}"), item(kind, &["name"]));
    }
    paths.insert(
        "/api/v1/tenants/{tenant}/addresses".into(),
        collection("Address", &["tenant"]),
    );
    paths.insert(
        "/api/v1/tenants/{tenant}/addresses/{name}".into(),
        item("Address", &["tenant", "name"]),
    );
    for (path, summary, content) in [
        ("/healthz", "The process is alive", "text/plain"),
        (
            "/readyz",
            "The store answers and the listeners are up",
            "text/plain",
        ),
        (
            "/metrics",
            "Prometheus metrics",
            "application/openmetrics-text",
        ),
    ] {
        paths.insert(
            path.into(),
            json!({"get": {"summary": summary, "security": [], "responses": {
                "200": {"description": "OK", "content": {content: {"schema": {"type": "string"}}}},
                "503": {"description": "Not ready"}}}}),
        );
    }
    let text = json!({
        "openapi": "3.1.0",
        "info": {"title": "Wharf management API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Resources (addresses, plans, tenants, users) with status, health and metrics."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer"},
                "user": {"type": "http", "scheme": "basic"}
            }
        },
        "security": [{"admin": []}, {"user": []}]
    })
    .to_string()
    .replace("#/$defs/", "#/components/schemas/");
    serde_json::from_str(&text).unwrap_or_default()
}

fn parameters(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect(),
    )
}

fn schema_ref(kind: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{kind}")})
}

fn problems() -> Value {
    let p =
        json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}});
    json!({
        "400": {"description": "The resource does not validate (`field` names what is wrong)", "content": p},
        "401": {"description": "Credentials needed", "content": p},
        "403": {"description": "Not allowed", "content": p},
        "404": {"description": "No such resource or tenant", "content": p},
        "409": {"description": "Exists already, or not at the generation of If-Match", "content": p},
        "503": {"description": "The store did not answer", "content": p}
    })
}

fn with_problems(mut responses: Value) -> Value {
    if let (Some(r), Value::Object(p)) = (responses.as_object_mut(), problems()) {
        r.extend(p);
    }
    responses
}

fn collection(kind: &str, params: &[&str]) -> Value {
    let body =
        json!({"required": true, "content": {"application/json": {"schema": schema_ref(kind)}}});
    json!({
        "parameters": parameters(params),
        "get": {"summary": format!("List {kind} resources with status"), "responses": with_problems(json!({
            "200": {"description": "The resources", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"kind": {"type": "string"},
                "items": {"type": "array", "items": schema_ref(kind)}}}}}}}))},
        "post": {"summary": format!("Create a {kind}"), "requestBody": body, "responses": with_problems(json!({
            "201": {"description": "Created", "content": {"application/json": {"schema": schema_ref(kind)}}}}))}
    })
}

fn item(kind: &str, params: &[&str]) -> Value {
    let body =
        json!({"required": true, "content": {"application/json": {"schema": schema_ref(kind)}}});
    let one = json!({"application/json": {"schema": schema_ref(kind)}});
    json!({
        "parameters": parameters(params),
        "get": {"summary": format!("A {kind} with status"), "responses": with_problems(json!({
            "200": {"description": "The resource", "content": one}}))},
        "put": {"summary": format!("Create or replace a {kind}"),
                "parameters": [{"name": "If-Match", "in": "header", "required": false,
                                "description": "replace only this generation", "schema": {"type": "integer"}}],
                "requestBody": body, "responses": with_problems(json!({
            "200": {"description": "Replaced", "content": one},
            "201": {"description": "Created", "content": one}}))},
        "delete": {"summary": format!("Delete a {kind}"), "responses": with_problems(json!({
            "204": {"description": "Deleted"}}))}
    })
}
