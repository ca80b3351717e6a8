//! `/mfa`: the signed-in user's second factors (TOTP and recovery codes):
//! JSON for scripts, the "Two-factor authentication" page for browsers.

mod get;
mod recovery_codes;
mod totp;

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing;
use axum::Router;
use latchkey::mfa::{MfaError, TotpSetup};
use latchkey::CurrentUser;

use crate::app::AppState;
use crate::error::ApiError;
use crate::pages::{render, when, MfaPage, Nav, PasskeyRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/mfa", routing::get(get::get))
        .route("/mfa/totp/setup", routing::post(totp::setup))
        .route("/mfa/totp/confirm", routing::post(totp::confirm))
        .route("/mfa/totp", routing::delete(totp::remove))
        .route("/mfa/totp/remove", routing::post(totp::remove_form))
        .route("/mfa/recovery-codes", routing::post(recovery_codes::renew))
}

/// The setup as an inline SVG QR code (no JavaScript, no image service).
fn qr_svg(setup: &TotpSetup) -> String {
    match qrcode::QrCode::new(setup.otpauth_url.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build(),
        Err(_) => String::new(),
    }
}

/// The page as it stands for `user`, with what this request adds.
async fn page(
    app: &AppState,
    user: &CurrentUser,
    status: StatusCode,
    codes: Vec<String>,
    error: Option<String>,
) -> Result<Response, ApiError> {
    let summary = app.auth.factor_summary_for_display(user.user_id()).await?;
    let setup = if summary.totp {
        None
    } else {
        match app.auth.pending_totp_setup(user.session()).await {
            Ok(s) => s,
            Err(MfaError::Unavailable(e)) => return Err(e.into()),
            Err(_) => None,
        }
    };
    let passkeys_on = app.auth.passkeys_enabled();
    let passkeys = if passkeys_on {
        match app.auth.passkeys_of(user.user_id()).await {
            Ok(list) => list
                .into_iter()
                .map(|p| PasskeyRow {
                    id: p.id,
                    name: p.name,
                    created: when(p.created_at),
                    last_used: p.last_used_at.map(when).unwrap_or_else(|| "never".into()),
                })
                .collect(),
            Err(latchkey::passkeys::PasskeyError::Unavailable(e)) => return Err(e.into()),
            Err(_) => Vec::new(),
        }
    } else {
        Vec::new()
    };
    Ok(render(
        status,
        MfaPage {
            passkeys_on,
            passkeys,
            nav: Nav::of(user),
            csrf: user.csrf_token(),
            totp: summary.totp,
            recovery_codes_left: summary.recovery_codes_left,
            setup: setup.map(|s| {
                let qr = qr_svg(&s);
                (s.secret, qr)
            }),
            codes,
            error,
        },
    ))
}
