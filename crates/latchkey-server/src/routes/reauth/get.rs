//! `GET /reauth`: the password form for a browser, a hint for scripts.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::CurrentUser;
use serde::Deserialize;

use super::page;
use crate::app::AppState;
use crate::error::wants_html;
use crate::routes::safe_next;

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    user: CurrentUser,
    Query(q): Query<NextQuery>,
) -> Response {
    if !wants_html(&headers) {
        return Json(serde_json::json!({ "message": "POST password to confirm it's you." }))
            .into_response();
    }
    let next = safe_next(q.next.as_deref());
    page(&app, &headers, &user, StatusCode::OK, next, None)
}
