//! The one place server errors become HTTP answers, and the net that gives
//! every error response a `{"detail": ...}` body.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use latchkey::error::detail;

use crate::users::UsersError;

/// Errors a route can end with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error(transparent)]
    Auth(#[from] latchkey::Error),
    #[error("{1}")]
    Detail(StatusCode, String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Users(UsersError::NotFound(_)) => {
                detail(StatusCode::NOT_FOUND, "User not found")
            }
            ApiError::Users(UsersError::Exists(_)) => {
                detail(StatusCode::CONFLICT, "User already exists")
            }
            ApiError::Users(e @ UsersError::Db { .. }) => {
                tracing::error!(error = %e, "failing closed");
                detail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable: the users database did not answer. Try again shortly.",
                )
            }
            ApiError::Auth(e) => e.into_response(),
            ApiError::Detail(status, msg) => detail(status, &msg),
        }
    }
}

/// Gives error responses that carry no JSON or page (404 from the router,
/// 405, 408 timeouts, 413 limits...) a `{"detail": ...}` body, keeping
/// their status and headers.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let typed = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if typed {
        return res;
    }
    let (mut parts, _) = res.into_parts();
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = serde_json::json!({ "detail": reason }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Unknown routes: 404 (a page for browsers).
pub async fn not_found(headers: axum::http::HeaderMap) -> Response {
    if latchkey::extract::wants_html(&headers) {
        return crate::pages::message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no page at this address.",
            Some(("/profile", "Go to your profile")),
        );
    }
    detail(StatusCode::NOT_FOUND, "Not Found")
}

/// Known routes, wrong method: 405.
pub async fn method_not_allowed() -> Response {
    detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}
