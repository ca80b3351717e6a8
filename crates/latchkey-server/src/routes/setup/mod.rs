//! `GET/POST /setup?code=...`: creates the first admin while no user exists.
//! The code is printed in the log at start-up and works once.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::error::detail;
use latchkey::extract::wants_html;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{see_other, with_cookie};
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::{self, Flash};
use crate::pages::{message, render, SetupPage};

#[derive(Deserialize)]
pub struct CodeQuery {
    code: Option<String>,
}

#[derive(Deserialize)]
pub struct SetupBody {
    code: String,
    username: String,
    password: secrecy::SecretString,
}

/// Whether `code` is the live setup code and no user exists yet.
async fn code_valid(app: &AppState, code: Option<&str>) -> Result<bool, ApiError> {
    let live = app
        .setup_code
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let matches = match (live, code) {
        (Some(live), Some(code)) => latchkey::csrf::secrets_equal(&live, code),
        _ => false,
    };
    Ok(matches && app.users.count().await? == 0)
}

fn not_found(headers: &HeaderMap) -> Response {
    if wants_html(headers) {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no page at this address.",
            Some(("/login", "Sign in")),
        );
    }
    detail(StatusCode::NOT_FOUND, "Not Found")
}

fn form(
    app: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    code: String,
    username: String,
    error: Option<String>,
) -> Response {
    let (csrf, cookie) = app.auth.form_token(headers, None);
    let page = SetupPage {
        nav: None,
        csrf,
        code,
        username,
        error,
        min_len: app.auth.policy().min_chars,
    };
    with_cookie(render(status, page), cookie)
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CodeQuery>,
) -> Result<Response, ApiError> {
    let code = query.code;
    if !code_valid(&app, code.as_deref()).await? {
        return Ok(not_found(&headers));
    }
    if !wants_html(&headers) {
        return Ok(Json(serde_json::json!({ "message": "POST code, username and password to create the first admin." })).into_response());
    }
    Ok(form(
        &app,
        &headers,
        StatusCode::OK,
        code.unwrap_or_default(),
        String::new(),
        None,
    ))
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
