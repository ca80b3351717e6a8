//! `GET /setup?code=...`: the form for a browser, a hint for scripts
//! (404 unless the code is live and no user exists).

use crate::error::wants_html;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{code_valid, form, not_found};
use crate::app::AppState;
use crate::error::ApiError;

#[derive(Deserialize)]
pub struct CodeQuery {
    code: Option<String>,
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CodeQuery>,
) -> Result<Response, ApiError> {
    let code = query.code;
    if !code_valid(&app, code.as_deref()).await? {
        return Ok(not_found(&headers));
    }
    if !wants_html(&headers) {
        return Ok(Json(serde_json::json!({ "message": "POST code, username and password to create the first admin." })).into_response());
    }
    Ok(form(
        &app,
        &headers,
        StatusCode::OK,
        code.unwrap_or_default(),
        String::new(),
        None,
    ))
}
