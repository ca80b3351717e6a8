//! `GET /login`: the form for a browser, a hint for scripts.

use crate::error::wants_html;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::extract::MaybeUser;
use serde::Deserialize;

use super::{login_page, ReturnTo};
use crate::app::AppState;

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
    /// Where a reverse proxy sent the browser from (forward authentication).
    rd: Option<String>,
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    MaybeUser(user): MaybeUser,
    Query(query): Query<NextQuery>,
) -> Response {
    if !wants_html(&headers) {
        return Json(
            serde_json::json!({ "message": "Login page. POST to /login to authenticate." }),
        )
        .into_response();
    }
    let return_to = ReturnTo::new(&app, query.next.as_deref(), query.rd.as_deref());
    login_page(
        &app,
        &headers,
        user.as_ref(),
        StatusCode::OK,
        None,
        String::new(),
        return_to,
    )
}
