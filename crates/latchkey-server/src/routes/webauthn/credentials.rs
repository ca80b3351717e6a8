//! The signed-in user's passkeys: list, rename, delete (recent).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::{CurrentUser, Recent};
use serde::Deserialize;

use crate::app::AppState;
use crate::routes::{see_other, Empty};

#[derive(Deserialize)]
pub struct NameBody {
    name: String,
}

pub async fn list(State(app): State<AppState>, user: CurrentUser) -> Response {
    match app.auth.passkeys_of(user.user_id()).await {
        Ok(list) => Json(list.iter().map(super::json).collect::<Vec<_>>()).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn rename(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Input(body): Input<NameBody>,
) -> Response {
    match app
        .auth
        .passkey_rename(user.user_id(), &id, &body.name)
        .await
    {
        Ok(()) => Json(serde_json::json!({ "message": "Passkey renamed." })).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn delete(
    State(app): State<AppState>,
    Recent(user): Recent,
    Path(id): Path<String>,
) -> Response {
    match app.auth.passkey_delete(user.session(), &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The two-factor page's forms (forms can only POST).
pub async fn rename_form(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Input(body): Input<NameBody>,
) -> Response {
    match app
        .auth
        .passkey_rename(user.user_id(), &id, &body.name)
        .await
    {
        Ok(()) => see_other("/mfa"),
        Err(e) => e.into_response(),
    }
}

pub async fn delete_form(
    State(app): State<AppState>,
    Recent(user): Recent,
    Path(id): Path<String>,
    _: Input<Empty>,
) -> Response {
    match app.auth.passkey_delete(user.session(), &id).await {
        Ok(()) => see_other("/mfa"),
        Err(e) => e.into_response(),
    }
}
