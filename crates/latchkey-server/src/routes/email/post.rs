//! `POST /email`: mails a confirmation link to the new address and a
//! notice to the old one; the address changes only when the link is used.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::Recent;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::wants_html;
use crate::flash::{self, Flash};
use crate::routes::see_other;

#[derive(Deserialize)]
pub struct EmailBody {
    email: String,
}

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    Recent(user): Recent,
    Input(body): Input<EmailBody>,
) -> Response {
    match app
        .auth
        .request_email_change(user.session(), &body.email)
        .await
    {
        Ok(()) if wants_html(&headers) => {
            flash::set(&app, see_other("/profile"), Flash::EmailLinkSent)
        }
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "message": "A confirmation link is on its way to the new address."
            })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
