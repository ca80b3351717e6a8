//! [`Input`]: a request body as JSON or an HTML form, with the answers the
//! contract fixes for bad input, and the form-token check for browsers.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use crate::extract::{AuthRejection, MaybeUser};
use crate::Latchkey;

/// Largest body accepted (64 KiB); larger gets 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A body of type `T`, decoded from JSON or `application/x-www-form-urlencoded`.
///
/// - another content type: 415; over [`BODY_LIMIT`]: 413;
/// - malformed JSON or encoding (non-UTF-8 included): 400; missing or
///   mistyped fields: 422;
/// - a form posted by a browser (it sent `Origin` or `Sec-Fetch-Site`)
///   without the right `csrf_token` field: 403.
#[derive(Debug)]
pub struct Input<T>(pub T);

/// Why a body was refused; [`IntoResponse`](axum::response::IntoResponse)
/// maps each to its status in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum BodyRejection {
    /// Over [`BODY_LIMIT`] (413).
    #[error("Request body too large: the limit is 64 KiB.")]
    TooLarge,
    /// The connection failed mid-body (400).
    #[error("Could not read the request body.")]
    Unreadable,
    /// Neither JSON nor a form (415).
    #[error(
        "Unsupported content type: send application/json or application/x-www-form-urlencoded."
    )]
    UnsupportedType,
    /// Not JSON (400).
    #[error("Malformed JSON: {0}")]
    MalformedJson(String),
    /// Bad form encoding or non-UTF-8 (400).
    #[error("Malformed form body: it must be UTF-8 form-urlencoded.")]
    MalformedForm,
    /// Well-formed, but fields are missing or of the wrong type (422).
    #[error("Invalid body: {0}")]
    Invalid(String),
    /// A browser's form without the right CSRF token (403).
    #[error("Missing or invalid CSRF token: reload the form and try again.")]
    Csrf,
    /// The session lookup for the token check failed (503).
    #[error("session lookup failed")]
    Auth(AuthRejection),
}

enum Kind {
    Json,
    Form,
    Empty,
}

fn kind(headers: &HeaderMap, body: &[u8]) -> Result<Kind, BodyRejection> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match ctype.as_deref() {
        Some("application/json") => Ok(Kind::Json),
        Some(c) if c.starts_with("application/") && c.ends_with("+json") => Ok(Kind::Json),
        Some("application/x-www-form-urlencoded") => Ok(Kind::Form),
        None if body.is_empty() => Ok(Kind::Empty),
        _ => Err(BodyRejection::UnsupportedType),
    }
}

/// Decodes form pairs, refusing bad percent-encoding into non-UTF-8.
fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, BodyRejection> {
    let decode = |s: &[u8]| -> Result<String, BodyRejection> {
        let plus: Vec<u8> = s
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
        String::from_utf8(bytes).map_err(|_| BodyRejection::MalformedForm)
    };
    body.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |&b| b == b'=');
            let k = decode(it.next().unwrap_or_default())?;
            let v = decode(it.next().unwrap_or_default())?;
            Ok((k, v))
        })
        .collect()
}

fn is_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site")
}

fn missing_field(e: impl std::fmt::Display) -> BodyRejection {
    BodyRejection::Invalid(e.to_string())
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Input<T> {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(BodyRejection::TooLarge);
        }
        let bytes: Bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
            let limited = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if limited || e.to_string().contains("length limit") {
                BodyRejection::TooLarge
            } else {
                BodyRejection::Unreadable
            }
        })?;
        match kind(&parts.headers, &bytes)? {
            Kind::Json => match serde_json::from_slice(&bytes) {
                Ok(v) => Ok(Input(v)),
                Err(e) if e.is_data() => Err(missing_field(e)),
                Err(e) => Err(BodyRejection::MalformedJson(e.to_string())),
            },
            Kind::Form => {
                let pairs = form_pairs(&bytes)?;
                if is_browser(&parts.headers) {
                    check_form_token(&mut parts, state, &pairs).await?;
                }
                let encoded = serde_urlencoded::to_string(&pairs).unwrap_or_default();
                serde_urlencoded::from_str(&encoded)
                    .map(Input)
                    .map_err(missing_field)
            }
            Kind::Empty => serde_urlencoded::from_str("")
                .map(Input)
                .map_err(missing_field),
        }
    }
}

async fn check_form_token<S: Send + Sync>(
    parts: &mut axum::http::request::Parts,
    state: &S,
    pairs: &[(String, String)],
) -> Result<(), BodyRejection> {
    let submitted = pairs
        .iter()
        .find(|(k, _)| k == crate::csrf::FORM_FIELD)
        .map(|(_, v)| v.as_str())
        .ok_or(BodyRejection::Csrf)?;
    let Some(auth) = parts.extensions.get::<Latchkey>().cloned() else {
        return Err(BodyRejection::Csrf);
    };
    let user = <MaybeUser as axum::extract::FromRequestParts<S>>::from_request_parts(parts, state)
        .await
        .map_err(BodyRejection::Auth)?;
    let ok = crate::csrf::form_token_valid(
        secrecy::ExposeSecret::expose_secret(&auth.config().key),
        submitted,
        user.0.as_ref().map(|u| u.session()),
        auth.cookies().pre_session_value(&parts.headers).as_deref(),
    );
    if ok {
        Ok(())
    } else {
        Err(BodyRejection::Csrf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_pairs_decode_and_refuse_non_utf8() {
        let p = form_pairs(b"username=al+ice&password=p%C3%A9").unwrap();
        assert_eq!(
            p,
            vec![
                ("username".into(), "al ice".into()),
                ("password".into(), "pé".into())
            ]
        );
        assert!(form_pairs(b"username=%FF%FE").is_err());
    }
}
