//! Server-rendered pages (askama, auto-escaped), working without JavaScript.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use latchkey::CurrentUser;

/// Bumped with the stylesheet so browsers may cache it for a year.
pub const ASSET_VERSION: &str = "2";
pub const STYLESHEET: &str = include_str!("../static/style.css");

/// What the header shows for a signed-in user.
pub struct Nav {
    pub username: String,
    pub csrf: String,
    pub is_admin: bool,
}

impl Nav {
    pub fn of(user: &CurrentUser) -> Option<Nav> {
        Some(Nav {
            username: user.username().to_owned(),
            csrf: user.csrf_token().to_owned(),
            is_admin: user.role() == "admin",
        })
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub error: Option<String>,
    pub username: String,
    pub next: String,
    /// Show the "Create an account" link (`--allow-signup`).
    pub signup: bool,
}

#[derive(Template)]
#[template(path = "profile.html")]
pub struct ProfilePage {
    pub nav: Option<Nav>,
    pub username: String,
    pub role: String,
    pub started: String,
    pub idle: String,
    pub ends: String,
}

pub struct SessionRow {
    pub id: String,
    pub user_agent: String,
    pub ip: String,
    pub last_seen: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "sessions.html")]
pub struct SessionsPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub sessions: Vec<SessionRow>,
}

#[derive(Template)]
#[template(path = "password.html")]
pub struct PasswordPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub username: String,
    pub error: Option<String>,
    pub min_len: usize,
}

#[derive(Template)]
#[template(path = "setup.html")]
pub struct SetupPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub code: String,
    pub username: String,
    pub error: Option<String>,
    pub min_len: usize,
}

pub struct UserRow {
    pub username: String,
    pub role: String,
    pub last_login: String,
    /// The admin looking at the page (no "remove" or "reset" for oneself).
    pub is_self: bool,
}

#[derive(Template)]
#[template(path = "admin.html")]
pub struct AdminPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub username: String,
    pub users: Vec<UserRow>,
    pub error: Option<String>,
    pub min_len: usize,
}

#[derive(Template)]
#[template(path = "signup.html")]
pub struct SignupPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub username: String,
    pub error: Option<String>,
    pub min_len: usize,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub nav: Option<Nav>,
    pub title: String,
    pub message: String,
    pub link: Option<(String, String)>,
}

/// Renders `page` with `status`. A template error is a bug; it is logged and
/// answered with a plain 500 rather than a panic.
pub fn render(status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A titled message page (404, 403, 401...).
pub fn message(
    status: StatusCode,
    title: &str,
    message: &str,
    link: Option<(&str, &str)>,
) -> Response {
    message_for(None, status, title, message, link)
}

/// Same, with the signed-in header when there is a user.
pub fn message_for(
    nav: Option<Nav>,
    status: StatusCode,
    title: &str,
    message: &str,
    link: Option<(&str, &str)>,
) -> Response {
    render(
        status,
        MessagePage {
            nav,
            title: title.to_owned(),
            message: message.to_owned(),
            link: link.map(|(a, b)| (a.to_owned(), b.to_owned())),
        },
    )
}

/// The browser's 403 page: signed in, but not allowed here.
pub fn forbidden(nav: Option<Nav>) -> Response {
    message_for(
        nav,
        StatusCode::FORBIDDEN,
        "Forbidden",
        "Your account may not open this page. Ask an admin if you need access.",
        Some(("/profile", "Back to your profile")),
    )
}

/// `GET /static/style-N.css`: immutable, cached for a year.
pub async fn stylesheet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// RFC 3339 UTC, to the second, from ms since the epoch.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Same, for people: "2026-11-27 09:41".
pub fn when(ms: i64) -> String {
    let s = rfc3339(ms);
    s.get(..16).map(|d| d.replace('T', " ")).unwrap_or(s)
}
