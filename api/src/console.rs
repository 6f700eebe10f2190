//! The web console: three static files (`api/console/`) compiled into the binary, talking to
//! the API from the browser. They hold no data, so they are served without credentials; the
//! console's API calls carry the admin token the user types in (none needed on loopback).

use axum::{http::header, response::IntoResponse};

pub async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../console/index.html"),
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../console/console.js"),
    )
}

pub async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../console/console.css"),
    )
}
