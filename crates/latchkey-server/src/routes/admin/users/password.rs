//! `POST /admin/users/{name}/password`: an admin resets another user's
//! password.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use latchkey::body::Input;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{done, end_all, refused};
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::Flash;
use crate::routes::admin::RecentAdmin;

#[derive(Deserialize)]
pub struct ResetBody {
    new_password: secrecy::SecretString,
}

/// An admin sets a new password for another user (same rules as any new
/// password); every session of that user ends.
pub async fn reset_password(
    State(app): State<AppState>,
    headers: HeaderMap,
    RecentAdmin(admin): RecentAdmin,
    Path(name): Path<String>,
    Input(body): Input<ResetBody>,
) -> Result<Response, ApiError> {
    let user = app.users.get(&name).await?;
    if user.id == admin.user_id() {
        let why = "Change your own password on the Password page; it asks for the current one."
            .to_owned();
        return refused(&app, &headers, &admin, StatusCode::CONFLICT, why).await;
    }
    if let Err(why) = app
        .auth
        .policy()
        .check(&user.username, body.new_password.expose_secret())
    {
        let why = format!("Password for {name} not changed: {why}");
        return refused(
            &app,
            &headers,
            &admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            why,
        )
        .await;
    }
    let hash = app
        .auth
        .hasher()
        .hash(body.new_password.expose_secret())
        .await?;
    app.users.set_hash(&name, &hash).await?;
    let n = end_all(&app, &user.id).await?;
    app.metrics.sessions_revoked.inc_by(n);
    tracing::info!(target: "latchkey::audit", event = "password_reset", by = admin.username(), username = %name, sessions_ended = n);
    app.auth.password_changed_notice(&user.id).await;
    Ok(done(
        &app,
        &headers,
        format!("Password of {name} reset; ended {n} sessions."),
        Flash::PasswordReset,
    ))
}
