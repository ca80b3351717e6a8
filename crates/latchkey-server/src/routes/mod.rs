//! One module per URL path.

pub mod admin;
pub mod health;
pub mod login;
pub mod logout;
pub mod password;
pub mod profile;
pub mod sessions;
pub mod setup;
pub mod signup;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::pages;

/// `GET /`: browsers go to their profile (or sign in); scripts get a hint.
pub async fn home(headers: HeaderMap) -> Response {
    if latchkey::extract::wants_html(&headers) {
        return Redirect::to("/profile").into_response();
    }
    axum::Json(serde_json::json!({ "message": "latchkey. POST to /login to authenticate." }))
        .into_response()
}

/// `GET /static/style-N.css`.
pub async fn static_file(Path(file): Path<String>) -> Response {
    if file == format!("style-{}.css", pages::ASSET_VERSION) {
        pages::stylesheet().await
    } else {
        latchkey::error::detail(StatusCode::NOT_FOUND, "Not Found")
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
