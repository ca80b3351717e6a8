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
use crate::routes::{redirect_target, with_cookie};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", routing::get(get::get).post(post::post))
        .route("/login/mfa", routing::get(mfa::get).post(mfa::post))
}

/// Where the form sends the browser after signing in, carried through it
/// in hidden inputs: `next` (a page) and `rd` (the URL a reverse proxy
/// sent the browser from), each only as [`redirect_target`] allows it.
pub struct ReturnTo {
    next: String,
    rd: Option<String>,
}

impl ReturnTo {
    fn new(app: &AppState, next: Option<&str>, rd: Option<&str>) -> Self {
        Self {
            next: next
                .and_then(|n| redirect_target(app, n))
                .unwrap_or_else(|| "/profile".to_owned()),
            rd: rd.and_then(|r| redirect_target(app, r)),
        }
    }
}

fn login_page(
    app: &AppState,
    headers: &HeaderMap,
    user: Option<&latchkey::CurrentUser>,
    status: StatusCode,
    error: Option<String>,
    username: String,
    return_to: ReturnTo,
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
        next: return_to.next,
        rd: return_to.rd,
    };
    with_cookie(render(status, page), cookie)
}
