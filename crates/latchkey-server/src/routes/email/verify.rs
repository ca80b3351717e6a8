//! `/email/verify?token=T`: `GET` shows a button (mail scanners fetch
//! links), `POST` uses the link.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::extract::MaybeUser;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::{wants_html, ApiError};
use crate::flash::{self, Flash};
use crate::pages::{render, Nav, VerifyEmailPage};
use crate::routes::{see_other, with_cookie};

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
pub struct VerifyBody {
    token: String,
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    MaybeUser(user): MaybeUser,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    let valid = app.auth.verify_link_valid(&q.token).await?;
    if !wants_html(&headers) {
        if !valid {
            return Ok(latchkey::recovery::RecoveryError::InvalidLink.into_response());
        }
        return Ok(Json(serde_json::json!({ "valid": true })).into_response());
    }
    let (csrf, cookie) = app.auth.form_token(&headers, user.as_ref());
    let status = if valid {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = VerifyEmailPage {
        nav: user.as_ref().and_then(Nav::of),
        csrf,
        token: q.token,
        valid,
    };
    Ok(with_cookie(render(status, page), cookie))
}

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    MaybeUser(user): MaybeUser,
    Input(body): Input<VerifyBody>,
) -> Response {
    match app.auth.verify_email(&body.token).await {
        Ok(()) if wants_html(&headers) => {
            let to = if user.is_some() { "/profile" } else { "/login" };
            flash::set(&app, see_other(to), Flash::EmailVerified)
        }
        Ok(()) => Json(serde_json::json!({ "message": "Email verified." })).into_response(),
        Err(e) => e.into_response(),
    }
}
