//! `/auth/verify` (any method): a reverse proxy (nginx `auth_request`,
//! Caddy `forward_auth`, Traefik `ForwardAuth`) asks whether the request
//! it holds may go on to the app behind it.
//!
//! - signed in: 200, no body, `X-Latchkey-User`, `X-Latchkey-Role` and
//!   `Remote-User`; with `?role=R`, 403 for any other role;
//! - signed out: 401 (whatever the `Accept`), carrying the sign-in URL in
//!   `Location` for nginx's `error_page 401`; with `?redirect=1`, a 302
//!   there: `PUBLIC_URL/login?rd=URL`, URL rebuilt from a trusted proxy's
//!   `X-Forwarded-*` headers and only when its host is an allowed one;
//! - an unsafe method a browser sent cross-site: 403, so the guarded app
//!   gets latchkey's CSRF check.
//!
//! The session lookup is `GET /profile`'s (`MaybeUser`): it counts as
//! activity and writes nothing more to the store.

use axum::extract::{Query, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey::forward::Forwarded;
use latchkey::{CurrentUser, MaybeUser};
use serde::Deserialize;

use crate::app::AppState;
use crate::error::detail;

#[derive(Deserialize)]
pub struct VerifyQuery {
    /// The role the request needs.
    role: Option<String>,
    /// `1` (or `true`): send a signed-out browser to sign in (302) rather
    /// than answer 401, for proxies that pass the answer on (Caddy, Traefik).
    redirect: Option<String>,
}

const USER: HeaderName = HeaderName::from_static("x-latchkey-user");
const ROLE: HeaderName = HeaderName::from_static("x-latchkey-role");
const REMOTE_USER: HeaderName = HeaderName::from_static("remote-user");

pub async fn verify(
    State(app): State<AppState>,
    MaybeUser(user): MaybeUser,
    forwarded: Forwarded,
    Query(query): Query<VerifyQuery>,
) -> Response {
    if forwarded.is_cross_site() {
        return detail(StatusCode::FORBIDDEN, "Cross-site request refused.");
    }
    let Some(user) = user else {
        let redirect = matches!(query.redirect.as_deref(), Some("1" | "true"));
        return signed_out(&app, &forwarded, redirect);
    };
    if query.role.as_deref().is_some_and(|r| r != user.role()) {
        return detail(StatusCode::FORBIDDEN, "Forbidden");
    }
    signed_in(&user)
}

/// 200 with the user in headers. Names are NFKC text without control
/// characters (username rules), sent as their UTF-8 bytes.
fn signed_in(user: &CurrentUser) -> Response {
    let (Ok(name), Ok(role)) = (
        HeaderValue::from_bytes(user.username().as_bytes()),
        HeaderValue::from_str(user.role()),
    ) else {
        // Only a name from before the username rules could get here.
        tracing::warn!("a username or role cannot be sent in a header; refusing forward auth");
        return detail(StatusCode::FORBIDDEN, "Forbidden");
    };
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    h.insert(USER, name.clone());
    h.insert(ROLE, role);
    h.insert(REMOTE_USER, name);
    res
}

/// 302 to sign in with `?redirect=1`, else 401; both name the sign-in URL,
/// with `rd` only for a URL a trusted proxy gave on an allowed host.
fn signed_out(app: &AppState, forwarded: &Forwarded, redirect: bool) -> Response {
    let rd = forwarded
        .url()
        .and_then(|u| app.auth.redirect_url(u.as_str()));
    let login = app
        .auth
        .sign_in_url(rd.as_ref())
        .and_then(|u| HeaderValue::try_from(u).ok());
    match (redirect, login) {
        (true, Some(to)) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        (_, login) => {
            let mut res = detail(StatusCode::UNAUTHORIZED, "Not authenticated");
            if let Some(to) = login {
                res.headers_mut().insert(header::LOCATION, to);
            }
            res
        }
    }
}
