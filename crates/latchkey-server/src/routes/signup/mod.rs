//! `GET/POST /signup`: self sign-up, only with `--allow-signup` (else 404).
//! New accounts get role `user` and follow the same password rules as
//! every new password; the new user is signed in straight away.

mod get;
mod post;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing;
use axum::Router;

use crate::app::AppState;
use crate::pages::{render, Nav, SignupPage};
use crate::routes::with_cookie;

pub fn router() -> Router<AppState> {
    Router::new().route("/signup", routing::get(get::get).post(post::post))
}

fn form(
    app: &AppState,
    headers: &HeaderMap,
    user: Option<&latchkey::CurrentUser>,
    status: StatusCode,
    username: String,
    error: Option<String>,
) -> Response {
    let (csrf, cookie) = app.auth.form_token(headers, user);
    let page = SignupPage {
        nav: user.and_then(Nav::of),
        csrf,
        username,
        error,
        min_len: app.auth.policy().min_chars,
    };
    with_cookie(render(status, page), cookie)
}
