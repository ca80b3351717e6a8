//! `POST /logout`: ends the session on the server and clears the cookie.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::extract::wants_html;
use serde::Deserialize;

use super::see_other;
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::{self, Flash};

/// Logout takes no fields; a form still carries its CSRF token.
#[derive(Deserialize)]
pub struct Empty {}

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    _: Input<Empty>,
) -> Result<Response, ApiError> {
    app.auth.logout(&headers).await?;
    app.metrics.logouts.inc();
    if wants_html(&headers) {
        let res = signed_out(&app, see_other("/login"));
        return Ok(flash::set(&app, res, Flash::SignedOut));
    }
    let res = Json(serde_json::json!({ "message": "Logged out successfully." })).into_response();
    Ok(signed_out(&app, res))
}

/// Expires the session cookie and asks the browser to drop site cookies.
pub fn signed_out(app: &AppState, mut res: Response) -> Response {
    let h = res.headers_mut();
    h.append(header::SET_COOKIE, app.auth.cookies().removal());
    h.insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
    res
}
