//! `GET/POST /setup?code=...`: creates the first admin while no user exists.
//! The code is printed in the log at start-up and works once.

mod get;
mod post;

use crate::error::detail;
use crate::error::wants_html;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing;
use axum::Router;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;
use crate::pages::{message, render, SetupPage};
use crate::routes::with_cookie;

pub fn router() -> Router<AppState> {
    Router::new().route("/setup", routing::get(get::get).post(post::post))
}

/// Whether `code` is the live setup code and no user exists yet.
async fn code_valid(app: &AppState, code: Option<&str>) -> Result<bool, ApiError> {
    let live = app
        .setup_code
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let matches = match (live, code) {
        (Some(live), Some(code)) => bool::from(live.as_bytes().ct_eq(code.as_bytes())),
        _ => false,
    };
    Ok(matches && app.users.count().await? == 0)
}

fn not_found(headers: &HeaderMap) -> Response {
    if wants_html(headers) {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no page at this address.",
            Some(("/login", "Sign in")),
        );
    }
    detail(StatusCode::NOT_FOUND, "Not Found")
}

fn form(
    app: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    code: String,
    username: String,
    error: Option<String>,
) -> Response {
    let (csrf, cookie) = app.auth.form_token(headers, None);
    let page = SetupPage {
        nav: None,
        csrf,
        code,
        username,
        error,
        min_len: app.auth.policy().min_chars,
    };
    with_cookie(render(status, page), cookie)
}
