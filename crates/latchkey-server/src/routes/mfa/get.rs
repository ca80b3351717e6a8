//! `GET /mfa`: the two-factor page, or the factors at a glance as JSON.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::CurrentUser;

use super::page;
use crate::app::AppState;
use crate::error::{wants_html, ApiError};

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    user: CurrentUser,
) -> Result<Response, ApiError> {
    if wants_html(&headers) {
        return page(&app, &user, StatusCode::OK, Vec::new(), None).await;
    }
    let summary = app.auth.factor_summary_for_display(user.user_id()).await?;
    Ok(Json(summary).into_response())
}
