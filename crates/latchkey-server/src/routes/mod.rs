//! One folder per resource, mirroring the URLs: its `mod.rs` holds the
//! resource's `router()` (merged in `app.rs`) and what its handlers share,
//! and one file per method (or per action below it) holds each handler.

pub mod admin;
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

/// A form or JSON body with no fields; a form still carries its CSRF token.
#[derive(Deserialize)]
pub struct Empty {}

/// Adds `Set-Cookie` when there is one to set.
pub fn with_cookie(mut res: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// `next` when it is a path on this site, else `/profile` (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control() || c == '\\')
                && n.len() <= 2048 =>
        {
            n.to_owned()
        }
        _ => "/profile".to_owned(),
    }
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
