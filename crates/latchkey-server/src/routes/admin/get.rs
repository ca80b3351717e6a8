//! `GET /admin`: the dashboard for a browser, a greeting for scripts.

use crate::error::wants_html;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{page, AdminUser};
use crate::app::AppState;
use crate::error::ApiError;

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    AdminUser(user): AdminUser,
) -> Result<Response, ApiError> {
    if !wants_html(&headers) {
        return Ok(Json(
            serde_json::json!({ "message": format!("Admin dashboard for {}.", user.username()) }),
        )
        .into_response());
    }
    page(&app, &user, StatusCode::OK, None).await
}
