//! `/password/forgot`: asks for a reset link by mail. The answer is the
//! same whether or not the address has an account (the library does the
//! lookup after answering).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::recovery::RecoveryError;
use latchkey::RequestMeta;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::wants_html;
use crate::pages::{render, ForgotPage};
use crate::routes::with_cookie;

/// The one answer, whatever the address.
pub const SENT: &str = "If that address has an account, a reset link is on its way.";

#[derive(Deserialize)]
pub struct ForgotBody {
    email: String,
}

fn page(
    app: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    email: String,
    error: Option<String>,
    sent: bool,
) -> Response {
    let (csrf, cookie) = app.auth.form_token(headers, None);
    let ttl = app.auth.config().link_ttl();
    let page = ForgotPage {
        nav: None,
        csrf,
        email,
        error,
        sent,
        ttl: humantime::format_duration(ttl).to_string(),
    };
    with_cookie(render(status, page), cookie)
}

pub async fn get(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if !app.auth.mail_enabled() {
        return RecoveryError::MailOff.into_response();
    }
    if !wants_html(&headers) {
        return Json(
            serde_json::json!({ "message": "POST email to get a password-reset link by mail." }),
        )
        .into_response();
    }
    page(&app, &headers, StatusCode::OK, String::new(), None, false)
}

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    meta: RequestMeta,
    Input(body): Input<ForgotBody>,
) -> Response {
    let html = wants_html(&headers);
    match app.auth.forgot_password(&body.email, &meta).await {
        Ok(()) if html => page(
            &app,
            &headers,
            StatusCode::ACCEPTED,
            String::new(),
            None,
            true,
        ),
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "message": SENT })),
        )
            .into_response(),
        Err(e @ (RecoveryError::BadEmail | RecoveryError::Throttled { .. })) if html => {
            let status = match e {
                RecoveryError::BadEmail => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::TOO_MANY_REQUESTS,
            };
            let mut res = page(
                &app,
                &headers,
                status,
                body.email,
                Some(e.to_string()),
                false,
            );
            if let RecoveryError::Throttled { retry_after } = e {
                res.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    retry_after.as_secs().max(1).into(),
                );
            }
            res
        }
        Err(e) => e.into_response(),
    }
}
