//! `POST /admin/users/{name}/reset-link`: mails the user a one-time
//! password-reset link (their password and sessions stay until it is used).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey::body::Input;

use super::{done, refused};
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::Flash;
use crate::routes::admin::RecentAdmin;
use crate::routes::Empty;

pub async fn send_reset_link(
    State(app): State<AppState>,
    headers: HeaderMap,
    RecentAdmin(admin): RecentAdmin,
    Path(name): Path<String>,
    _: Input<Empty>,
) -> Result<Response, ApiError> {
    let user = app.users.get(&name).await?;
    match app.auth.send_reset_link(&user.id).await {
        Ok(true) => {}
        Ok(false) => {
            let why = format!("{name} has no email address; use `latchkey user reset-link {name}` to print a link.");
            return refused(&app, &headers, &admin, StatusCode::CONFLICT, why).await;
        }
        Err(e) => return Ok(e.into_response()),
    }
    tracing::info!(target: "latchkey::audit", event = "reset_link_sent", by = admin.username(), username = %name);
    Ok(done(
        &app,
        &headers,
        format!("Reset link sent to {name}'s address."),
        Flash::ResetLinkSent,
    ))
}
