//! `GET /signup`: the form for a browser, a hint for scripts (404 unless
//! `--allow-signup`).

use crate::error::wants_html;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::extract::MaybeUser;

use super::form;
use crate::app::AppState;
use crate::error::not_found;

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    MaybeUser(user): MaybeUser,
) -> Response {
    if !app.allow_signup {
        return not_found(headers).await;
    }
    if !wants_html(&headers) {
        return Json(
            serde_json::json!({ "message": "POST username and password to create an account." }),
        )
        .into_response();
    }
    form(
        &app,
        &headers,
        user.as_ref(),
        StatusCode::OK,
        String::new(),
        None,
    )
}
