//! `/password`: the form, and changing one's own password; and
//! `/password/forgot`, `/password/reset`: recovery by mailed link.

mod forgot;
mod get;
mod post;
mod reset;

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing;
use axum::Router;
use latchkey::CurrentUser;

use crate::app::AppState;
use crate::pages::{render, Nav, PasswordPage};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/password", routing::get(get::get).post(post::post))
        .route(
            "/password/forgot",
            routing::get(forgot::get).post(forgot::post),
        )
        .route(
            "/password/reset",
            routing::get(reset::get).post(reset::post),
        )
}

/// The form, with `error` above it when a change was refused.
fn page(app: &AppState, user: &CurrentUser, status: StatusCode, error: Option<String>) -> Response {
    render(
        status,
        PasswordPage {
            nav: Nav::of(user),
            csrf: user.csrf_token(),
            username: user.username().to_owned(),
            error,
            min_len: app.auth.policy().min_chars,
        },
    )
}
