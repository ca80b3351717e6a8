//! TOTP: set up (recent authentication), confirm with a code (then it is
//! required at sign-in, and recovery codes are shown once), remove (recent).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::mfa::MfaError;
use latchkey::{CurrentUser, Recent};
use serde::Deserialize;

use super::page;
use crate::app::AppState;
use crate::error::{wants_html, ApiError};
use crate::routes::{see_other, CodeField, Empty};

#[derive(Deserialize)]
pub struct CodeBody {
    code: CodeField,
}

pub async fn setup(
    State(app): State<AppState>,
    headers: HeaderMap,
    Recent(user): Recent,
    _: Input<Empty>,
) -> Result<Response, ApiError> {
    let setup = match app.auth.totp_setup(user.session()).await {
        Ok(s) => s,
        Err(e) => return Ok(e.into_response()),
    };
    if wants_html(&headers) {
        return page(&app, &user, StatusCode::OK, Vec::new(), None).await;
    }
    Ok(Json(setup).into_response())
}

pub async fn confirm(
    State(app): State<AppState>,
    headers: HeaderMap,
    user: CurrentUser,
    Input(body): Input<CodeBody>,
) -> Result<Response, ApiError> {
    let html = wants_html(&headers);
    match app
        .auth
        .totp_confirm(user.session(), &body.code.text())
        .await
    {
        Ok(codes) if html => page(&app, &user, StatusCode::OK, codes, None).await,
        Ok(codes) => Ok(Json(serde_json::json!({ "recovery_codes": codes })).into_response()),
        Err(e @ MfaError::WrongCode) if html => {
            page(
                &app,
                &user,
                StatusCode::FORBIDDEN,
                Vec::new(),
                Some(e.to_string()),
            )
            .await
        }
        Err(e) => Ok(e.into_response()),
    }
}

pub async fn remove(State(app): State<AppState>, Recent(user): Recent) -> Response {
    match app.auth.remove_totp(user.user_id(), user.username()).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The page's button (forms can only POST).
pub async fn remove_form(
    State(app): State<AppState>,
    Recent(user): Recent,
    _: Input<Empty>,
) -> Response {
    match app.auth.remove_totp(user.user_id(), user.username()).await {
        Ok(()) => see_other("/mfa"),
        Err(e) => e.into_response(),
    }
}
