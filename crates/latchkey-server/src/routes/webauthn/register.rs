//! `POST /webauthn/register/start` (recent authentication) and `finish`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::{CurrentUser, Recent};

use crate::app::AppState;
use crate::routes::Empty;

pub async fn start(State(app): State<AppState>, Recent(user): Recent, _: Input<Empty>) -> Response {
    match app.auth.passkey_register_start(user.session()).await {
        Ok(options) => Json(options).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The credential's `toJSON()`, with the user's `name` for it beside.
pub async fn finish(
    State(app): State<AppState>,
    user: CurrentUser,
    Input(mut body): Input<serde_json::Value>,
) -> Response {
    let name = body
        .as_object_mut()
        .and_then(|o| o.remove("name"))
        .and_then(|n| n.as_str().map(str::to_owned));
    match app
        .auth
        .passkey_register_finish(user.session(), body, name.as_deref())
        .await
    {
        Ok(info) => (StatusCode::CREATED, Json(super::json(&info))).into_response(),
        Err(e) => e.into_response(),
    }
}
