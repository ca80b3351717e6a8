//! One-time messages shown on the page after a redirect ("Signed out.").
//!
//! They travel in a short-lived cookie, not the URL: `__Host-latchkey-flash`
//! (`latchkey-flash` with `--dev`), `HttpOnly`, `SameSite=Lax`, `Path=/`,
//! `Max-Age=60`, `Secure` unless `--dev`. The cookie holds only a fixed code
//! from [`Flash`], never user text, so nothing a user or attacker types can
//! reach a page this way; an unknown code is ignored. The next HTML page the
//! browser gets shows the message and expires the cookie.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

use crate::app::AppState;

/// How long a flash waits for its page.
const MAX_AGE_SECS: u32 = 60;

/// Every message a redirect can leave behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flash {
    SignedIn,
    SignedOut,
    PasswordChanged,
    SessionRevoked,
    OthersRevoked,
    AdminCreated,
    SignedUp,
    SignedUpSignIn,
    RoleChanged,
    UserSessionsEnded,
    PasswordReset,
    UserRemoved,
    PasswordSet,
    EmailVerified,
    EmailLinkSent,
    ResetLinkSent,
}

impl Flash {
    const ALL: [Flash; 16] = [
        Flash::SignedIn,
        Flash::SignedOut,
        Flash::PasswordChanged,
        Flash::SessionRevoked,
        Flash::OthersRevoked,
        Flash::AdminCreated,
        Flash::SignedUp,
        Flash::SignedUpSignIn,
        Flash::RoleChanged,
        Flash::UserSessionsEnded,
        Flash::PasswordReset,
        Flash::UserRemoved,
        Flash::PasswordSet,
        Flash::EmailVerified,
        Flash::EmailLinkSent,
        Flash::ResetLinkSent,
    ];

    /// The code the cookie carries.
    pub fn code(self) -> &'static str {
        match self {
            Flash::SignedIn => "signed-in",
            Flash::SignedOut => "signed-out",
            Flash::PasswordChanged => "password-changed",
            Flash::SessionRevoked => "session-revoked",
            Flash::OthersRevoked => "others-revoked",
            Flash::AdminCreated => "admin-created",
            Flash::SignedUp => "signed-up",
            Flash::SignedUpSignIn => "signed-up-sign-in",
            Flash::RoleChanged => "role-changed",
            Flash::UserSessionsEnded => "user-sessions-ended",
            Flash::PasswordReset => "password-reset",
            Flash::UserRemoved => "user-removed",
            Flash::PasswordSet => "password-set",
            Flash::EmailVerified => "email-verified",
            Flash::EmailLinkSent => "email-link-sent",
            Flash::ResetLinkSent => "reset-link-sent",
        }
    }

    /// What the page says.
    pub fn message(self) -> &'static str {
        match self {
            Flash::SignedIn => "You are signed in.",
            Flash::SignedOut => "You have signed out.",
            Flash::PasswordChanged => "Password changed. Your other sessions were signed out.",
            Flash::SessionRevoked => "That session has ended.",
            Flash::OthersRevoked => "You are signed out everywhere else.",
            Flash::AdminCreated => "Admin account created. Sign in with it now.",
            Flash::SignedUp => "Welcome! Your account is ready and you are signed in.",
            Flash::SignedUpSignIn => "Account created. Sign in with it now.",
            Flash::RoleChanged => "Role changed. It applies from the user's next request.",
            Flash::UserSessionsEnded => "That user's sessions have ended.",
            Flash::PasswordReset => "Password reset. That user's sessions have ended.",
            Flash::UserRemoved => "User removed and signed out.",
            Flash::PasswordSet => "Password changed. Sign in with your new password.",
            Flash::EmailVerified => "Email address confirmed.",
            Flash::EmailLinkSent => "We mailed a confirmation link to the new address.",
            Flash::ResetLinkSent => "Reset link sent to that user's address.",
        }
    }

    pub fn from_code(code: &str) -> Option<Flash> {
        Flash::ALL.into_iter().find(|f| f.code() == code)
    }
}

/// `__Host-latchkey-flash`, or `latchkey-flash` in development: the
/// session cookie's name and prefix, with `-flash`.
fn cookie_name(app: &AppState) -> String {
    format!("{}-flash", app.auth.cookies().name)
}

fn cookie(app: &AppState, value: &str, max_age: u32) -> HeaderValue {
    let secure = if app.auth.cookies().secure {
        "; Secure"
    } else {
        ""
    };
    let line = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        cookie_name(app)
    );
    // Fixed names and codes: always valid header text.
    HeaderValue::from_str(&line).unwrap_or(HeaderValue::from_static("latchkey-flash="))
}

/// Leaves `flash` for the page the browser is sent to next.
pub fn set(app: &AppState, mut res: Response, flash: Flash) -> Response {
    res.headers_mut()
        .append(header::SET_COOKIE, cookie(app, flash.code(), MAX_AGE_SECS));
    res
}

/// The flash cookie's raw value in the request, if any.
pub fn read(app: &AppState, headers: &HeaderMap) -> Option<String> {
    // Every request passes here: compare name parts in place, no allocation.
    let session = app.auth.cookies().name.as_str();
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim().strip_prefix(session) == Some("-flash"))
        .map(|(_, v)| v.trim().to_owned())
}

tokio::task_local! {
    static CURRENT: Option<Flash>;
}

/// The message for the page being rendered, if a redirect left one.
/// Templates call this (see `base.html`), so every page shows it.
pub fn current() -> Option<&'static str> {
    CURRENT.try_with(|f| f.map(Flash::message)).ok().flatten()
}

/// Runs `answer` (the request's handling) with the flash cookie's value
/// `raw` available to the page it renders, and expires the cookie once an
/// HTML page (not a redirect) has been sent. Only for requests that carry
/// the cookie ([`read`]); others need none of this.
pub async fn scoped(
    app: AppState,
    raw: String,
    answer: impl std::future::Future<Output = Result<Response, std::convert::Infallible>>,
) -> Result<Response, std::convert::Infallible> {
    let flash = Flash::from_code(&raw);
    let mut res = CURRENT.scope(flash, answer).await?;
    if res.status().is_redirection() {
        return Ok(res);
    }
    let page = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let name = format!("{}=", cookie_name(&app));
    let sets_new = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with(&name));
    if page && !sets_new {
        res.headers_mut()
            .append(header::SET_COOKIE, cookie(&app, "", 0));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::Flash;

    #[test]
    fn codes_round_trip_and_are_cookie_safe() {
        for f in Flash::ALL {
            assert_eq!(Flash::from_code(f.code()), Some(f));
            assert!(f.code().chars().all(|c| c.is_ascii_lowercase() || c == '-'));
        }
        assert_eq!(Flash::from_code("<script>"), None);
        assert_eq!(Flash::from_code(""), None);
    }
}
