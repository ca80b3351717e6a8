//! `POST /mfa/recovery-codes`: ten new codes, shown once; the old ones die.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::Recent;

use super::page;
use crate::app::AppState;
use crate::error::{wants_html, ApiError};
use crate::routes::Empty;

pub async fn renew(
    State(app): State<AppState>,
    headers: HeaderMap,
    Recent(user): Recent,
    _: Input<Empty>,
) -> Result<Response, ApiError> {
    match app.auth.new_recovery_codes(user.session()).await {
        Ok(codes) if wants_html(&headers) => page(&app, &user, StatusCode::OK, codes, None).await,
        Ok(codes) => Ok(Json(serde_json::json!({ "recovery_codes": codes })).into_response()),
        Err(e) => Ok(e.into_response()),
    }
}
