//! `POST /logout`: ends the session on the server and clears the cookie.

use crate::error::wants_html;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::Auth;

use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::{self, Flash};
use crate::routes::{see_other, Empty};

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    auth: Auth,
    _: Input<Empty>,
) -> Result<Response, ApiError> {
    // The library's SignedOut expires the cookie and sends Clear-Site-Data.
    let out = auth.logout().await?;
    app.metrics.logouts.inc();
    if wants_html(&headers) {
        let res = (out, see_other("/login")).into_response();
        return Ok(flash::set(&app, res, Flash::SignedOut));
    }
    let body = Json(serde_json::json!({ "message": "Logged out successfully." }));
    Ok((out, body).into_response())
}
