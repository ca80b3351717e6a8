//! `GET /password`: the form for a browser, a hint for scripts.

use crate::error::wants_html;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::CurrentUser;

use super::page;
use crate::app::AppState;

pub async fn get(State(app): State<AppState>, headers: HeaderMap, user: CurrentUser) -> Response {
    if !wants_html(&headers) {
        return Json(serde_json::json!({ "message": "POST current_password and new_password to change your password." })).into_response();
    }
    page(&app, &user, StatusCode::OK, None)
}
