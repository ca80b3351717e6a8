//! Cross-site request forgery defence, in two layers:
//!
//! 1. [`cross_origin_layer`]: tower-http's header check (Go's
//!    `CrossOriginProtection` rules) refuses unsafe methods a browser sends
//!    cross-site, by `Sec-Fetch-Site` or `Origin`; header-less clients pass.
//! 2. Form tokens: every HTML form carries a token the server checks when a
//!    browser posts a form, for browsers that send neither header. Signed-in
//!    forms use the session's secret (rotated at login); sign-in forms use an
//!    HMAC of a pre-session cookie.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tower_http::csrf::{CsrfLayer, ProtectionError};

use crate::session::SessionRecord;

/// The form field that carries the token.
pub(crate) const FORM_FIELD: &str = "csrf_token";

/// The rejection tower-http's layer answers with.
pub(crate) type RejectFn = fn(ProtectionError) -> Response<Body>;

fn reject(_: ProtectionError) -> Response<Body> {
    crate::error::detail(StatusCode::FORBIDDEN, "Cross-site request refused.").into_response()
}

/// The header-based check, with `trusted` origins (`https://host[:port]`)
/// allowed besides the request's own.
pub(crate) fn cross_origin_layer(trusted: &[String]) -> Result<CsrfLayer<RejectFn>, String> {
    let mut layer = CsrfLayer::new();
    for origin in trusted {
        layer = layer
            .add_trusted_origin(origin)
            .map_err(|e| format!("trusted origin {origin:?}: {e}"))?;
    }
    Ok(layer.with_rejection_response(reject as RejectFn))
}

/// Form token for a signed-in session.
pub(crate) fn session_token(record: &SessionRecord) -> &str {
    &record.csrf_secret
}

/// Form token bound to a pre-session cookie value by the server key.
pub(crate) fn pre_session_token(key: &[u8], cookie_value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"latchkey pre-session csrf\0");
    mac.update(cookie_value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time string equality for secrets.
pub(crate) fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether `submitted` is the right token for this request: the session's
/// when signed in, else the one derived from the pre-session cookie. Signed
/// in, the pre-session token no longer counts: the token rotates at login,
/// so one known before sign-in (e.g. from a planted cookie) forges nothing.
pub(crate) fn form_token_valid(
    key: &[u8],
    submitted: &str,
    session: Option<&SessionRecord>,
    pre_session_cookie: Option<&str>,
) -> bool {
    match session {
        Some(s) => secrets_equal(submitted, session_token(s)),
        None => pre_session_cookie
            .filter(|c| !c.is_empty())
            .is_some_and(|c| secrets_equal(submitted, &pre_session_token(key, c))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_session_tokens_bind_cookie_and_key() {
        let t = pre_session_token(b"k1", "cookie");
        assert!(form_token_valid(b"k1", &t, None, Some("cookie")));
        assert!(!form_token_valid(b"k2", &t, None, Some("cookie")));
        assert!(!form_token_valid(b"k1", &t, None, Some("other")));
        assert!(!form_token_valid(b"k1", "", None, Some("")));
        assert!(!form_token_valid(b"k1", &t, None, None));
    }
}
