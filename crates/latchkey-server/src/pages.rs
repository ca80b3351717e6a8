//! Server-rendered pages (askama, auto-escaped), working without JavaScript.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use latchkey::CurrentUser;

/// Bumped with the stylesheet so browsers may cache it for a year.
pub const ASSET_VERSION: &str = "3";
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
            csrf: user.csrf_token(),
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
    /// The URL a reverse proxy sent the browser from, to return to.
    pub rd: Option<String>,
    /// Show the "Create an account" link (`--allow-signup`).
    pub signup: bool,
    /// Show "Forgot your password?" (mail is on).
    pub forgot: bool,
    /// Show "Sign in with a passkey".
    pub passkeys: bool,
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
    pub email: Option<String>,
    pub email_verified: bool,
    /// Mail is on: show the change-address form.
    pub mail: bool,
    /// Two-factor authentication is on.
    pub mfa: bool,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "forgot.html")]
pub struct ForgotPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub email: String,
    pub error: Option<String>,
    pub sent: bool,
    pub ttl: String,
}

#[derive(Template)]
#[template(path = "reset.html")]
pub struct ResetPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub token: String,
    pub valid: bool,
    pub error: Option<String>,
    pub min_len: usize,
}

#[derive(Template)]
#[template(path = "verify_email.html")]
pub struct VerifyEmailPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub token: String,
    pub valid: bool,
}

#[derive(Template)]
#[template(path = "login_mfa.html")]
pub struct LoginMfaPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub next: String,
    pub error: Option<String>,
    pub passkeys: bool,
}

/// A passkey on the two-factor page.
pub struct PasskeyRow {
    pub id: String,
    pub name: String,
    pub created: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "mfa.html")]
pub struct MfaPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub totp: bool,
    pub recovery_codes_left: u64,
    /// A setup in progress: the secret, and the QR code as inline SVG.
    pub setup: Option<(String, String)>,
    /// Codes to show once (after confirming or renewing).
    pub codes: Vec<String>,
    pub error: Option<String>,
    pub passkeys_on: bool,
    pub passkeys: Vec<PasskeyRow>,
}

#[derive(Template)]
#[template(path = "reauth.html")]
pub struct ReauthPage {
    pub nav: Option<Nav>,
    pub csrf: String,
    pub username: String,
    pub next: String,
    pub window: String,
    pub error: Option<String>,
}

pub struct SessionRow {
    pub id: String,
    /// "Firefox on Windows", for people; the full `User-Agent` beside it.
    pub device: String,
    pub user_agent: String,
    pub ip: String,
    pub started: String,
    /// "5 min ago"; `last_seen` is the exact time.
    pub last_seen_ago: String,
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
    /// The user has an address a reset link can go to.
    pub has_email: bool,
    /// The user has a second factor.
    pub mfa: bool,
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
    /// Mail is on: offer "Send reset link".
    pub mail: bool,
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
pub const PASSKEYS_JS: &str = include_str!("../static/passkeys.js");

/// The passkey script, versioned with the stylesheet.
pub async fn passkeys_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        PASSKEYS_JS,
    )
        .into_response()
}

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

/// "Chrome on Linux" from a `User-Agent`; "Unknown device" when it says
/// nothing we know.
pub fn device(user_agent: &str) -> String {
    let ua = user_agent;
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("FxiOS/", "Firefox"),
        ("HeadlessChrome/", "Headless Chrome"),
        ("CriOS/", "Chrome"),
        ("Chrome/", "Chrome"),
        ("Chromium/", "Chromium"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    let os = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("CrOS", "ChromeOS"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(o)) => format!("A browser on {o}"),
        (None, None) => "Unknown device".to_owned(),
    }
}

/// How long ago `ms` was, roughly: "just now", "5 min ago", "3 h ago".
pub fn ago(ms: i64, now_ms: i64) -> String {
    let secs = (now_ms - ms).max(0) / 1000;
    match secs {
        0..=59 => "just now".to_owned(),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// Same, for people: "2026-11-27 09:41".
pub fn when(ms: i64) -> String {
    let s = rfc3339(ms);
    s.get(..16).map(|d| d.replace('T', " ")).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::{ago, device};

    #[test]
    fn devices_are_named_for_people() {
        let firefox =
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(device(firefox), "Firefox on Windows");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        assert_eq!(device(iphone), "Safari on iOS");
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
        assert_eq!(device(chrome), "Chrome on Linux");
        assert_eq!(device("curl/8.5.0"), "curl");
        assert_eq!(device(""), "Unknown device");
    }

    #[test]
    fn ages_are_rough() {
        let now = 10_000_000_000;
        assert_eq!(ago(now - 5_000, now), "just now");
        assert_eq!(ago(now - 5 * 60_000, now), "5 min ago");
        assert_eq!(ago(now - 3 * 3_600_000, now), "3 h ago");
        assert_eq!(ago(now - 2 * 86_400_000, now), "2 days ago");
        assert_eq!(ago(now + 1_000, now), "just now");
    }
}
