//! `DELETE /sessions/{id}`: ends one of the caller's sessions (this one
//! too: then it is a sign-out).

use crate::error::detail;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use latchkey::CurrentUser;

use super::{end, signed_out};
use crate::app::AppState;
use crate::error::ApiError;

pub async fn delete(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match end(&app, &user, &id, crate::error::wants_html(&headers)).await? {
        None => Ok(detail(StatusCode::NOT_FOUND, "Session not found")),
        Some(true) => Ok(signed_out(&app, StatusCode::NO_CONTENT.into_response())),
        Some(false) => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
