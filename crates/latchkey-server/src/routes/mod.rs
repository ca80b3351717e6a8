//! One folder per resource, mirroring the URLs: its `mod.rs` holds the
//! resource's `router()` (merged in `app.rs`) and what its handlers share,
//! and one file per method (or per action below it) holds each handler.

pub mod admin;
pub mod auth;
pub mod email;
pub mod health;
pub mod home;
pub mod login;
pub mod logout;
pub mod mfa;
pub mod password;
pub mod profile;
pub mod reauth;
pub mod sessions;
pub mod setup;
pub mod signup;
pub mod static_files;
pub mod webauthn;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::app::App;

/// A form or JSON body with no fields; a form still carries its CSRF token.
#[derive(Deserialize)]
pub struct Empty {}

/// A one-time code as a client sent it: text, or a JSON number, or
/// anything else (which matches no code). A wrong *type* is then a wrong
/// code (401, counted), never a 422 that would tell which step failed.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum CodeField {
    Text(String),
    Number(serde_json::Number),
    Other(serde::de::IgnoredAny),
}

impl CodeField {
    pub fn text(&self) -> String {
        match self {
            CodeField::Text(s) => s.clone(),
            CodeField::Number(n) => n.to_string(),
            CodeField::Other(_) => String::new(),
        }
    }
}

/// Adds `Set-Cookie` when there is one to set.
pub fn with_cookie(mut res: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// `next` when it is a path on this site, else `/profile` (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    next.and_then(local_path).unwrap_or("/profile").to_owned()
}

/// `value` when it is a path on this site (not `//host`, no backslash or
/// control character, which browsers read as another host or drop).
fn local_path(value: &str) -> Option<&str> {
    let ok = value.starts_with('/')
        && !value.starts_with("//")
        && !value.starts_with("/\\")
        && !value.chars().any(|c| c.is_control() || c == '\\')
        && value.len() <= 2048;
    ok.then_some(value)
}

/// Where a browser may be sent after signing in: a path on this site, or
/// an absolute URL on an allowed redirect host (`--allowed-redirect-hosts`,
/// the public URL's host, the cookie domain), as the URL parser writes it.
pub fn redirect_target(app: &App, value: &str) -> Option<String> {
    match local_path(value) {
        Some(path) => Some(path.to_owned()),
        None => app.auth.redirect_url(value).map(String::from),
    }
}

/// After a sign-in: `rd` (forward authentication), else `next`, each only
/// when [`redirect_target`] allows it, else `/profile`.
pub fn after_sign_in(app: &App, rd: Option<&str>, next: Option<&str>) -> String {
    [rd, next]
        .into_iter()
        .flatten()
        .find_map(|v| redirect_target(app, v))
        .unwrap_or_else(|| "/profile".to_owned())
}

/// 303 See Other to `to`.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_only_stays_on_site() {
        assert_eq!(safe_next(Some("/admin?x=1")), "/admin?x=1");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "javascript:alert(1)",
            "",
            "/a\r\nb",
        ] {
            assert_eq!(safe_next(Some(bad)), "/profile", "{bad}");
        }
        assert_eq!(safe_next(None), "/profile");
    }
}
