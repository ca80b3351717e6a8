//! `/login`: the sign-in form (or a hint for scripts), and signing in.

mod get;
mod mfa;
mod post;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing;
use axum::Router;

use crate::app::AppState;
use crate::pages::{render, LoginPage, Nav};
use crate::routes::with_cookie;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", routing::get(get::get).post(post::post))
        .route("/login/mfa", routing::get(mfa::get).post(mfa::post))
}

fn login_page(
    app: &AppState,
    headers: &HeaderMap,
    user: Option<&latchkey::CurrentUser>,
    status: StatusCode,
    error: Option<String>,
    username: String,
    next: String,
) -> Response {
    let (csrf, cookie) = app.auth.form_token(headers, user);
    let page = LoginPage {
        nav: user.and_then(Nav::of),
        signup: app.allow_signup,
        forgot: app.auth.mail_enabled(),
        passkeys: app.auth.passkeys_enabled(),
        csrf,
        error,
        username,
        next,
    };
    with_cookie(render(status, page), cookie)
}
