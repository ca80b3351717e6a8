//! `/login/mfa`: the second step of a sign-in. Only a pending sign-in
//! (the right password of a user with a second factor) reaches it.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::{Auth, LoginError};
use serde::Deserialize;

use crate::app::AppState;
use crate::error::{wants_html, ApiError};
use crate::flash::{self, Flash};
use crate::pages::{render, LoginMfaPage};
use crate::routes::{after_sign_in, see_other, with_cookie, CodeField};

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct MfaBody {
    #[serde(default)]
    code: Option<CodeField>,
    #[serde(default)]
    recovery_code: Option<CodeField>,
    #[serde(default)]
    next: Option<String>,
}

fn page(
    app: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    next: String,
    error: Option<String>,
) -> Response {
    let (csrf, cookie) = app.auth.form_token(headers, None);
    let page = LoginMfaPage {
        nav: None,
        csrf,
        next,
        error,
        passkeys: app.auth.passkeys_enabled(),
    };
    with_cookie(render(status, page), cookie)
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Result<Response, ApiError> {
    if !wants_html(&headers) {
        return Ok(Json(serde_json::json!({
            "message": "POST code (or recovery_code) to complete the sign-in."
        }))
        .into_response());
    }
    if !app.auth.has_pending_sign_in(&headers).await? {
        return Ok(see_other("/login"));
    }
    Ok(page(
        &app,
        &headers,
        StatusCode::OK,
        after_sign_in(&app, None, q.next.as_deref()),
        None,
    ))
}

pub async fn post(
    State(app): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Input(body): Input<MfaBody>,
) -> Response {
    let html = wants_html(&headers);
    let next = after_sign_in(&app, None, body.next.as_deref());
    let result = app
        .auth
        .complete_sign_in(
            &headers,
            body.code.as_ref().map(CodeField::text).as_deref(),
            body.recovery_code.as_ref().map(CodeField::text).as_deref(),
            auth.meta(),
        )
        .await;
    match result {
        Ok(done) => {
            app.metrics.login("success");
            if let Err(e) = app.users.touch_login(&done.record.user_id).await {
                tracing::warn!(error = %e, "could not record last sign-in");
            }
            let gone = app.auth.cookies().pending_removal();
            let mut res = if html {
                flash::set(
                    &app,
                    (done, see_other(&next)).into_response(),
                    Flash::SignedIn,
                )
            } else {
                (
                    done,
                    Json(serde_json::json!({ "message": "Login successful!" })),
                )
                    .into_response()
            };
            res.headers_mut().append(header::SET_COOKIE, gone);
            res
        }
        Err(e @ (LoginError::InvalidCredentials | LoginError::Throttled { .. })) if html => {
            let (status, retry) = match &e {
                LoginError::Throttled { retry_after } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(retry_after.as_secs().max(1)),
                ),
                _ => (StatusCode::UNAUTHORIZED, None),
            };
            app.metrics.login("failure");
            let mut res = page(&app, &headers, status, next, Some(e.to_string()));
            if let Some(secs) = retry {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            res
        }
        Err(e) => {
            app.metrics.login("failure");
            e.into_response()
        }
    }
}
