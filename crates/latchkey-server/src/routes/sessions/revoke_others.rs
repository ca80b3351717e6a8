//! `POST /sessions/revoke-others`: ends every session but this one.

use crate::error::wants_html;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::Recent;

use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::{self, Flash};
use crate::routes::{see_other, Empty};

pub async fn revoke_others(
    State(app): State<AppState>,
    headers: HeaderMap,
    Recent(user): Recent,
    _: Input<Empty>,
) -> Result<Response, ApiError> {
    let n = app
        .auth
        .sessions()
        .end_all(user.user_id(), Some(&user.token_hash()))
        .await?;
    app.metrics.sessions_revoked.inc_by(n);
    if wants_html(&headers) {
        return Ok(flash::set(
            &app,
            see_other("/sessions"),
            Flash::OthersRevoked,
        ));
    }
    Ok(
        Json(serde_json::json!({ "message": format!("Ended {n} other sessions.") }))
            .into_response(),
    )
}
