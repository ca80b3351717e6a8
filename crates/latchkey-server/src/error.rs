//! The one place server errors become HTTP answers, and the net that gives
//! every error response a `{"detail": ...}` body (applied by
//! [`Frame`](crate::frame::Frame) to every response).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

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
    /// An extractor-style refusal decided inside a handler (re-authentication).
    #[error("refused")]
    Rejected(latchkey::extract::AuthRejection),
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
            ApiError::Rejected(r) => r.into_response(),
        }
    }
}

/// A JSON `{"detail": ...}` answer with `status`.
pub fn detail(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({ "detail": detail }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Whether the client asked for a page rather than JSON (`Accept` names
/// `text/html`).
pub fn wants_html(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// [`wants_html`] as an extractor, for handlers on the hot path: taking a
/// `HeaderMap` instead would copy every header of the request.
pub struct WantsHtml(pub bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for WantsHtml {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(wants_html(&parts.headers)))
    }
}

/// Gives error responses that carry no JSON or page (404 from the router,
/// 405, 408 timeouts, 413 limits...) a `{"detail": ...}` body, keeping
/// their status and headers.
pub fn json_detail(res: Response) -> Response {
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
    if crate::error::wants_html(&headers) {
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

/// Browsers get pages, not JSON, for two errors a person meets while
/// clicking: 401 (signed out, e.g. a form posted after the session ended:
/// a page linking to sign in that returns them where they were) and 404.
/// Status and headers are kept; other errors keep their JSON body.
pub fn browser_page(res: Response, back_to: Option<String>) -> Response {
    let status = res.status();
    if !(status == StatusCode::UNAUTHORIZED || status == StatusCode::NOT_FOUND) {
        return res;
    }
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return res;
    }
    let page = if status == StatusCode::UNAUTHORIZED {
        let login = match back_to {
            Some(path) => format!(
                "/login?next={}",
                percent_encoding::utf8_percent_encode(&path, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => "/login".to_owned(),
        };
        crate::pages::message(
            status,
            "Signed out",
            "Your session has ended, so that was not done. Sign in and try again.",
            Some((&login, "Sign in")),
        )
    } else {
        crate::pages::message(
            status,
            "Not found",
            "There is nothing here: it may have been removed already.",
            Some(("/profile", "Go to your profile")),
        )
    };
    let (mut parts, _) = res.into_parts();
    let (new_parts, body) = page.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        new_parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("text/html; charset=utf-8")),
    );
    Response::from_parts(parts, body)
}

/// Where a signed-out browser was going: this page for a GET, else the
/// same-site page the form was on (from `Referer`). Only a local path.
pub fn return_path(req: &Request) -> Option<String> {
    let path = if req.method() == axum::http::Method::GET {
        req.uri().path_and_query()?.as_str().to_owned()
    } else {
        let referer = req.headers().get(header::REFERER)?.to_str().ok()?;
        let url = url::Url::parse(referer).ok()?;
        let host = req.headers().get(header::HOST)?.to_str().ok()?;
        let referer_host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str()?),
            None => url.host_str()?.to_owned(),
        };
        if !referer_host.eq_ignore_ascii_case(host) {
            return None;
        }
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    };
    let safe = crate::routes::safe_next(Some(&path));
    (safe == path).then_some(path)
}
