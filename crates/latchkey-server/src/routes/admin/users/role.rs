//! `POST /admin/users/{name}/role`: makes a user `admin` or `user` (the
//! last admin stays).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use latchkey::body::Input;
use serde::Deserialize;

use super::{done, last_admin, refused};
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::Flash;
use crate::routes::admin::RecentAdmin;
use crate::users::Change;

#[derive(Deserialize)]
pub struct RoleBody {
    role: String,
}

pub async fn set_role(
    State(app): State<AppState>,
    headers: HeaderMap,
    RecentAdmin(admin): RecentAdmin,
    Path(name): Path<String>,
    Input(body): Input<RoleBody>,
) -> Result<Response, ApiError> {
    let role = body.role.trim();
    if let Err(why) = crate::cli::valid_role(role) {
        return refused(
            &app,
            &headers,
            &admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            why,
        )
        .await;
    }
    let user = match app.users.set_role(&name, role, false).await? {
        Change::Done(user) => user,
        Change::LastAdmin(user) => {
            return refused(
                &app,
                &headers,
                &admin,
                StatusCode::CONFLICT,
                last_admin(&user, "demoted"),
            )
            .await;
        }
    };
    // The users table has the new role, and sessions read it from there;
    // a store that cannot be told now is no reason to report a failure.
    if let Err(e) = app.auth.sessions().set_role(&user.id, role).await {
        tracing::warn!(error = %e, "role not updated in the session store; sessions read it from the users table anyway");
    }
    tracing::info!(target: "latchkey::audit", event = "role_changed", by = admin.username(), username = %name, role = %role);
    Ok(done(
        &app,
        &headers,
        format!("{name} is now {role}."),
        Flash::RoleChanged,
    ))
}
