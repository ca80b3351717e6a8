//! `/reauth`: "confirm it's you" before sensitive actions; a success makes
//! the session count as recently authenticated for `--reauth-window`.

mod get;
mod post;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing;
use axum::Router;
use latchkey::CurrentUser;

use crate::app::AppState;
use crate::pages::{render, Nav, ReauthPage};

pub fn router() -> Router<AppState> {
    Router::new().route("/reauth", routing::get(get::get).post(post::post))
}

fn page(
    app: &AppState,
    _headers: &HeaderMap,
    user: &CurrentUser,
    status: StatusCode,
    next: String,
    error: Option<String>,
) -> Response {
    let page = ReauthPage {
        nav: Nav::of(user),
        csrf: user.csrf_token(),
        username: user.username().to_owned(),
        next,
        window: humantime::format_duration(app.auth.config().reauth_window()).to_string(),
        error,
    };
    render(status, page)
}
