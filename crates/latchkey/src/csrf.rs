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
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, Response, StatusCode};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tower_http::csrf::{CsrfLayer, ProtectionError};

use crate::session::SessionRecord;
use crate::Config;

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

/// Whether the header check leaves `req` alone: the forward-auth endpoint
/// (what a proxy asks about is another request, on another host, which the
/// endpoint judges itself), and, with a cookie domain, an unsafe request a
/// browser sends from that domain or a subdomain of it. Those are
/// `same-site` to a browser, which tower-http's check refuses; they share
/// the session cookie anyway, so they are as trusted as latchkey's own
/// origin. Safe methods pass the check anyway: nothing to decide.
pub(crate) fn exempt(config: &Config, req: &Request) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    if config.forward_auth_path.as_deref() == Some(req.uri().path()) {
        return true;
    }
    match &config.cookie_domain {
        Some(domain) => from_cookie_domain(domain, config.secure, req.headers()),
        None => false,
    }
}

/// A browser request whose `Origin` is `domain` or a subdomain of it, over
/// `https` (or `http` when not secure), and not marked `cross-site`.
fn from_cookie_domain(domain: &str, secure: bool, headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if !matches!(
        site,
        None | Some(b"same-site" | b"same-origin" | b"none" | b"")
    ) {
        return false;
    }
    let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(|o| url::Url::parse(o).ok())
    else {
        return false;
    };
    let scheme = origin.scheme() == "https" || (!secure && origin.scheme() == "http");
    scheme
        && origin.username().is_empty()
        && origin
            .host_str()
            .is_some_and(|h| crate::redirect::within(h, domain))
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
        Some(s) => s.csrf_secret.matches(submitted),
        None => pre_session_cookie
            .filter(|c| !c.is_empty())
            .is_some_and(|c| secrets_equal(submitted, &pre_session_token(key, c))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_domain_config(secure: bool) -> Config {
        let mut c = Config::new(vec![0u8; 32]).secure(secure);
        c.cookie_domain = Some("example.com".into());
        c.forward_auth_path = Some("/auth/verify".into());
        c
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut r = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(Body::empty()).unwrap()
    }

    #[test]
    fn the_cookie_domains_subdomains_are_same_site() {
        let c = cookie_domain_config(true);
        let same_site = |origin: &str, site: Option<&str>| {
            let mut h = vec![("origin", origin)];
            h.extend(site.map(|s| ("sec-fetch-site", s)));
            exempt(&c, &req("POST", "/logout", &h))
        };
        assert!(same_site("https://app.example.com", Some("same-site")));
        assert!(same_site("https://a.b.example.com", Some("same-site")));
        assert!(same_site("https://example.com", None));
        assert!(!same_site("https://app.example.com", Some("cross-site")));
        assert!(!same_site("http://app.example.com", Some("same-site")));
        assert!(!same_site("https://badexample.com", Some("same-site")));
        assert!(!same_site(
            "https://app.example.com.evil.example",
            Some("same-site")
        ));
        assert!(!same_site("null", Some("same-site")));
        // Plain HTTP counts only in development.
        let dev = cookie_domain_config(false);
        assert!(exempt(
            &dev,
            &req("POST", "/logout", &[("origin", "http://app.example.com")])
        ));
        // Without a cookie domain nothing is exempt but the endpoint.
        let mut none = cookie_domain_config(true);
        none.cookie_domain = None;
        assert!(!exempt(
            &none,
            &req("POST", "/logout", &[("origin", "https://app.example.com")])
        ));
        assert!(exempt(&none, &req("POST", "/auth/verify", &[])));
        assert!(!exempt(&none, &req("POST", "/auth/verify/x", &[])));
    }

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
