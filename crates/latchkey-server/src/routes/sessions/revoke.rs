//! `POST /sessions/{id}/revoke`: the page's button for one session.

use crate::error::detail;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use latchkey::body::Input;
use latchkey::CurrentUser;

use super::{end, signed_out};
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::{self, Flash};
use crate::routes::{see_other, Empty};

pub async fn revoke(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    user: CurrentUser,
    Path(id): Path<String>,
    _: Input<Empty>,
) -> Result<Response, ApiError> {
    match end(&app, &user, &id, crate::error::wants_html(&headers)).await? {
        None => Ok(detail(StatusCode::NOT_FOUND, "Session not found")),
        Some(true) => Ok(flash::set(
            &app,
            signed_out(&app, see_other("/login")),
            Flash::SignedOut,
        )),
        Some(false) => Ok(flash::set(
            &app,
            see_other("/sessions"),
            Flash::SessionRevoked,
        )),
    }
}
