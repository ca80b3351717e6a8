//! `GET /profile`: the signed-in user.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::mfa::FactorSummary;
use latchkey::CurrentUser;
use serde::Serialize;

use crate::app::AppState;
use crate::error::{ApiError, WantsHtml};
use crate::pages::{render, when, Nav, ProfilePage};

/// The JSON answer. A struct, not `json!`: the hot path builds no map.
#[derive(Serialize)]
struct Profile<'a> {
    message: String,
    username: &'a str,
    role: &'a str,
    email: Option<&'a str>,
    email_verified: bool,
    mfa: FactorSummary,
}

pub async fn get(
    State(app): State<AppState>,
    WantsHtml(html): WantsHtml,
    user: CurrentUser,
) -> Result<Response, ApiError> {
    // From the per-user cache the session check just filled: no extra read.
    let (email, email_verified) = app.auth.email_of(user.user_id()).await?;
    let mfa = app.auth.factor_summary_for_display(user.user_id()).await?;
    if html {
        let s = user.session();
        let t = app.auth.config().session_timeouts();
        let page = ProfilePage {
            nav: Nav::of(&user),
            username: user.username().to_owned(),
            role: user.role().to_owned(),
            started: when(s.created_at),
            idle: humantime::format_duration(t.idle()).to_string(),
            ends: when(s.created_at + t.absolute().as_millis() as i64),
            email: email.as_deref().map(str::to_owned),
            email_verified,
            mail: app.auth.mail_enabled(),
            mfa: mfa.totp,
            csrf: user.csrf_token(),
        };
        return Ok(render(StatusCode::OK, page));
    }
    Ok(Json(Profile {
        message: format!("Welcome to your profile, {}!", user.username()),
        username: user.username(),
        role: user.role(),
        email: email.as_deref(),
        email_verified,
        mfa,
    })
    .into_response())
}
