//! `POST /login`: signs in (JSON or a form), or says why not.

use crate::error::wants_html;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::extract::MaybeUser;
use latchkey::{Auth, Credentials, LoginError};
use serde::Deserialize;

use super::{login_page, ReturnTo};
use crate::app::AppState;
use crate::flash::{self, Flash};
use crate::routes::{after_sign_in, see_other};

#[derive(Deserialize)]
pub struct LoginBody {
    username: String,
    password: secrecy::SecretString,
    #[serde(default)]
    next: Option<String>,
    /// Where a reverse proxy sent the browser from (forward authentication).
    #[serde(default)]
    rd: Option<String>,
}

pub async fn post(
    State(app): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    MaybeUser(user): MaybeUser,
    Input(body): Input<LoginBody>,
) -> Response {
    let html = wants_html(&headers);
    let creds = Credentials {
        username: body.username,
        password: body.password,
    };
    // Auth brings the client's address and the request's old session.
    let result = auth.login_with(&app.users, &creds).await;
    match result {
        Ok(done) => {
            app.metrics.login("success");
            if let Err(e) = app.users.touch_login(&done.record.user_id).await {
                tracing::warn!(error = %e, "could not record last sign-in");
            }
            if html {
                let to = see_other(&after_sign_in(
                    &app,
                    body.rd.as_deref(),
                    body.next.as_deref(),
                ));
                flash::set(&app, (done, to).into_response(), Flash::SignedIn)
            } else {
                (
                    done,
                    Json(serde_json::json!({ "message": "Login successful!" })),
                )
                    .into_response()
            }
        }
        Err(LoginError::SecondFactorRequired(pending)) => {
            app.metrics.login("second_factor");
            if !html {
                return pending.into_response();
            }
            // rd or next, checked now, is where the second step ends.
            let next = after_sign_in(&app, body.rd.as_deref(), body.next.as_deref());
            let to: String =
                percent_encoding::utf8_percent_encode(&next, percent_encoding::NON_ALPHANUMERIC)
                    .collect();
            let mut res = see_other(&format!("/login/mfa?next={to}"));
            res.headers_mut()
                .append(header::SET_COOKIE, pending.set_cookie);
            res
        }
        Err(e) => {
            let (outcome, status) = match &e {
                LoginError::InvalidCredentials => ("failure", StatusCode::UNAUTHORIZED),
                LoginError::Throttled { .. } => ("throttled", StatusCode::TOO_MANY_REQUESTS),
                LoginError::Unavailable(_) | LoginError::SecondFactorRequired(_) => {
                    ("error", StatusCode::SERVICE_UNAVAILABLE)
                }
            };
            app.metrics.login(outcome);
            if !html || status == StatusCode::SERVICE_UNAVAILABLE {
                return e.into_response();
            }
            let retry = match &e {
                LoginError::Throttled { retry_after } => Some(retry_after.as_secs().max(1)),
                _ => None,
            };
            let error = match retry {
                Some(secs) => format!(
                    "Too many failed attempts. Try again in {}.",
                    humantime::format_duration(std::time::Duration::from_secs(secs))
                ),
                None => e.to_string(),
            };
            // A failed attempt leaves a signed-in browser signed in: its
            // form must carry the session's token, the only one it accepts.
            let mut res = login_page(
                &app,
                &headers,
                user.as_ref(),
                status,
                Some(error),
                creds.username,
                ReturnTo::new(&app, body.next.as_deref(), body.rd.as_deref()),
            );
            if let Some(secs) = retry {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            res
        }
    }
}
