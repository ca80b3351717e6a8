//! `POST /setup`: creates the first admin (404 unless the code is live and
//! no user exists).

use crate::error::detail;
use crate::error::wants_html;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{code_valid, form, not_found};
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::{self, Flash};
use crate::routes::see_other;

#[derive(Deserialize)]
pub struct SetupBody {
    code: String,
    username: String,
    password: secrecy::SecretString,
}

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    Input(body): Input<SetupBody>,
) -> Result<Response, ApiError> {
    if !code_valid(&app, Some(&body.code)).await? {
        return Ok(not_found(&headers));
    }
    let refused = latchkey::username::normalize(&body.username)
        .map_err(|e| e.to_string())
        .and_then(|name| {
            app.auth
                .policy()
                .check(&name, body.password.expose_secret())?;
            Ok(name)
        });
    let name = match refused {
        Ok(name) => name,
        Err(why) => {
            if wants_html(&headers) {
                return Ok(form(
                    &app,
                    &headers,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    body.code,
                    body.username,
                    Some(why),
                ));
            }
            return Ok(detail(StatusCode::UNPROCESSABLE_ENTITY, &why));
        }
    };
    let hash = app
        .auth
        .hasher()
        .hash(body.password.expose_secret())
        .await?;
    app.users.add(&name, &hash, "admin").await?;
    *app.setup_code.lock().unwrap_or_else(|e| e.into_inner()) = None;
    tracing::info!(target: "latchkey::audit", event = "first_admin_created", username = %name);
    if wants_html(&headers) {
        return Ok(flash::set(&app, see_other("/login"), Flash::AdminCreated));
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "message": format!("Admin {name} created. Sign in at /login.") })),
    )
        .into_response())
}
