//! `/password/reset?token=T`: a reset link. `GET` (and `HEAD`) only show
//! the form, so mail scanners that fetch links do not use them up; `POST`
//! sets the password, ends every session and signs nobody in.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::recovery::RecoveryError;
use latchkey::RequestMeta;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::{wants_html, ApiError};
use crate::flash::{self, Flash};
use crate::pages::{render, ResetPage};
use crate::routes::{see_other, with_cookie};

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
pub struct ResetBody {
    token: String,
    new_password: secrecy::SecretString,
}

fn page(
    app: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    token: String,
    valid: bool,
    error: Option<String>,
) -> Response {
    let (csrf, cookie) = app.auth.form_token(headers, None);
    let page = ResetPage {
        nav: None,
        csrf,
        token,
        valid,
        error,
        min_len: app.auth.policy().min_chars,
    };
    with_cookie(render(status, page), cookie)
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    let valid = app.auth.reset_link_valid(&q.token).await?;
    if wants_html(&headers) {
        let status = if valid {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        return Ok(page(&app, &headers, status, q.token, valid, None));
    }
    if !valid {
        return Ok(RecoveryError::InvalidLink.into_response());
    }
    Ok(Json(serde_json::json!({ "valid": true })).into_response())
}

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    meta: RequestMeta,
    Input(body): Input<ResetBody>,
) -> Response {
    let html = wants_html(&headers);
    let result = app
        .auth
        .reset_password(&body.token, body.new_password.expose_secret(), &meta)
        .await;
    match result {
        Ok(()) => {
            app.metrics.password_changes.inc();
            if html {
                return flash::set(&app, see_other("/login"), Flash::PasswordSet);
            }
            Json(serde_json::json!({ "message": "Password changed." })).into_response()
        }
        Err(RecoveryError::Rejected(why)) if html => page(
            &app,
            &headers,
            StatusCode::UNPROCESSABLE_ENTITY,
            body.token,
            true,
            Some(why),
        ),
        Err(RecoveryError::InvalidLink) if html => page(
            &app,
            &headers,
            StatusCode::BAD_REQUEST,
            String::new(),
            false,
            None,
        ),
        Err(e) => e.into_response(),
    }
}
