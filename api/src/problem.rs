//! Errors as `application/problem+json` (RFC 9457): a status, a title, what is wrong
//! (`detail`) and, for a resource that does not validate, the `field`.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use wharf_resources::{Invalid, WriteError};

#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub detail: String,
    pub field: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            field: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }
}

impl From<Invalid> for Problem {
    fn from(e: Invalid) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            detail: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<wharf_log::LogError> for Problem {
    fn from(e: wharf_log::LogError) -> Self {
        tracing::warn!(error = %e, "management API: store error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store did not answer: {e}"),
        )
    }
}

impl From<WriteError> for Problem {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Invalid(i) => i.into(),
            WriteError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            WriteError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"wharf\", Bearer realm=\"wharf\""),
            );
        }
        response
    }
}
