//! [`Input`]: a request body as JSON or an HTML form, with the answers the
//! contract fixes for bad input, and the form-token check for browsers.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::detail;
use crate::extract::MaybeUser;
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

enum Kind {
    Json,
    Form,
    Empty,
}

fn kind(headers: &HeaderMap, body: &[u8]) -> Result<Kind, Response> {
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
        _ => Err(detail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported content type: send application/json or application/x-www-form-urlencoded.",
        )),
    }
}

/// Decodes form pairs, refusing bad percent-encoding into non-UTF-8.
fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, Response> {
    let bad = || {
        detail(
            StatusCode::BAD_REQUEST,
            "Malformed form body: it must be UTF-8 form-urlencoded.",
        )
    };
    let decode = |s: &[u8]| -> Result<String, Response> {
        let plus: Vec<u8> = s
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
        String::from_utf8(bytes).map_err(|_| bad())
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

fn missing_field(e: impl std::fmt::Display) -> Response {
    detail(
        StatusCode::UNPROCESSABLE_ENTITY,
        &format!("Invalid body: {e}"),
    )
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Input<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let too_big = || {
            detail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large: the limit is 64 KiB.",
            )
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(too_big());
        }
        let bytes: Bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
            let limited = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if limited || e.to_string().contains("length limit") {
                too_big()
            } else {
                detail(StatusCode::BAD_REQUEST, "Could not read the request body.")
            }
        })?;
        match kind(&parts.headers, &bytes)? {
            Kind::Json => match serde_json::from_slice(&bytes) {
                Ok(v) => Ok(Input(v)),
                Err(e) if e.is_data() => Err(missing_field(e)),
                Err(e) => Err(detail(
                    StatusCode::BAD_REQUEST,
                    &format!("Malformed JSON: {e}"),
                )),
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
) -> Result<(), Response> {
    let refused = || {
        detail(
            StatusCode::FORBIDDEN,
            "Missing or invalid CSRF token: reload the form and try again.",
        )
    };
    let submitted = pairs
        .iter()
        .find(|(k, _)| k == crate::csrf::FORM_FIELD)
        .map(|(_, v)| v.as_str())
        .ok_or_else(refused)?;
    let Some(auth) = parts.extensions.get::<Latchkey>().cloned() else {
        return Err(refused());
    };
    let user = <MaybeUser as axum::extract::FromRequestParts<S>>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let ok = crate::csrf::form_token_valid(
        &auth.config().key,
        submitted,
        user.0.as_ref().map(|u| u.session()),
        auth.cookies().pre_session_value(&parts.headers).as_deref(),
    );
    if ok {
        Ok(())
    } else {
        Err(refused())
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
