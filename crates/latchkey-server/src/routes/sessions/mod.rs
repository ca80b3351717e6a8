//! `/sessions`: the signed-in user's sessions, and ending them (one by
//! `DELETE /sessions/{id}` or the page's buttons, or all but this one).

mod delete;
mod get;
mod revoke;
mod revoke_others;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing;
use axum::Router;
use latchkey::CurrentUser;

use crate::app::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions", routing::get(get::list))
        .route("/sessions/{id}", routing::delete(delete::delete))
        .route("/sessions/{id}/revoke", routing::post(revoke::revoke))
        .route(
            "/sessions/revoke-others",
            routing::post(revoke_others::revoke_others),
        )
}

/// Ends one of the caller's sessions; `None` when it is not theirs. Ending
/// another session needs recent authentication (a thief with a stolen
/// cookie must not sign the owner out); ending this one is a sign-out.
async fn end(
    app: &AppState,
    user: &CurrentUser,
    id: &str,
    html: bool,
) -> Result<Option<bool>, ApiError> {
    let this_one = latchkey::SessionId::parse(id) == Some(user.session_id());
    if !this_one && !app.auth.is_recent(user.session()).await? {
        return Err(ApiError::Rejected(
            latchkey::extract::AuthRejection::ReauthRequired {
                redirect: html.then(|| "/reauth?next=%2Fsessions".to_owned()),
            },
        ));
    }
    if !app.auth.sessions().end(user.user_id(), id).await? {
        return Ok(None);
    }
    app.metrics.sessions_revoked.inc();
    Ok(Some(this_one))
}

/// Expires the session cookie and asks the browser to drop site cookies.
fn signed_out(app: &AppState, mut res: Response) -> Response {
    let h = res.headers_mut();
    h.append(header::SET_COOKIE, app.auth.cookies().removal());
    h.insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
    res
}
