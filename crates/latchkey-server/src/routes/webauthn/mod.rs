//! `/webauthn/...`: passkeys. Registration and management for the
//! signed-in user; sign-in as the second step of a pending sign-in or
//! without a password. JSON only (the pages' script calls these).

mod credentials;
mod login;
mod register;

use axum::routing;
use axum::Router;
use latchkey::passkeys::PasskeyInfo;

use crate::app::AppState;
use crate::pages::rfc3339;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webauthn/register/start", routing::post(register::start))
        .route("/webauthn/register/finish", routing::post(register::finish))
        .route("/webauthn/credentials", routing::get(credentials::list))
        .route(
            "/webauthn/credentials/{id}",
            routing::delete(credentials::delete).patch(credentials::rename),
        )
        .route(
            "/webauthn/credentials/{id}/rename",
            routing::post(credentials::rename_form),
        )
        .route(
            "/webauthn/credentials/{id}/delete",
            routing::post(credentials::delete_form),
        )
        .route("/webauthn/login/start", routing::post(login::start))
        .route("/webauthn/login/finish", routing::post(login::finish))
}

/// A passkey as the API shows it (times in RFC 3339, UTC).
pub fn json(p: &PasskeyInfo) -> serde_json::Value {
    serde_json::json!({
        "id": p.id,
        "name": p.name,
        "created_at": rfc3339(p.created_at),
        "last_used_at": p.last_used_at.map(rfc3339),
    })
}
