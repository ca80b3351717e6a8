//! Enrolling, confirming and removing factors, and checking a code.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

use super::{codes, totp, FactorStore, FactorSummary, RECOVERY_CODES};
use crate::auth::clip;
use crate::error::{backend, detail, Error, PasswordChangeError};
use crate::session::SessionRecord;
use crate::{Latchkey, RequestMeta};

/// Why a factor change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// The code was wrong, used before, or there was no enrolment to confirm.
    #[error("Invalid code")]
    WrongCode,
    /// The action needs a confirmed factor the user does not have.
    #[error("Two-factor authentication is not set up")]
    NotEnrolled,
    /// No [`FactorStore`] was given to the builder.
    #[error("Not Found")]
    Off,
    /// A store failed.
    #[error(transparent)]
    Unavailable(#[from] Error),
}

impl IntoResponse for MfaError {
    fn into_response(self) -> Response {
        if let MfaError::Unavailable(e) = self {
            return e.into_response();
        }
        let status = match &self {
            MfaError::WrongCode => StatusCode::FORBIDDEN,
            MfaError::NotEnrolled => StatusCode::CONFLICT,
            MfaError::Off => StatusCode::NOT_FOUND,
            MfaError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        detail(status, &self.to_string())
    }
}

/// What a setup hands the user: the secret (for typing in) and the
/// `otpauth://` URL (for a QR code).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TotpSetup {
    /// The secret in base32.
    pub secret: String,
    /// `otpauth://totp/ISSUER:NAME?secret=...&issuer=ISSUER`.
    pub otpauth_url: String,
}

/// Which second factor a code is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CodeKind {
    Totp,
    Recovery,
}

impl Latchkey {
    pub(crate) fn factors(&self) -> Result<&Arc<dyn FactorStore>, MfaError> {
        self.0.factors.as_ref().ok_or(MfaError::Off)
    }

    pub(crate) fn server_key(&self) -> &[u8] {
        self.0.config.key.expose_secret()
    }

    /// Whether second factors are on (a [`FactorStore`] was given).
    pub fn mfa_enabled(&self) -> bool {
        self.0.factors.is_some()
    }

    /// The user's factors at a glance (all off without a factor store).
    ///
    /// # Errors
    /// [`Error`] when the factor store cannot be reached.
    pub async fn factor_summary(&self, user_id: &str) -> Result<FactorSummary, Error> {
        match &self.0.factors {
            Some(f) => f.summary(user_id).await.map_err(backend),
            None => Ok(FactorSummary::default()),
        }
    }

    /// [`factor_summary`](Self::factor_summary) for display (profile
    /// pages): from a per-process cache at most a second old, so showing
    /// the factors costs no store read per request. Never used to decide
    /// anything.
    ///
    /// # Errors
    /// [`Error`] when the factor store cannot be reached.
    pub async fn factor_summary_for_display(&self, user_id: &str) -> Result<FactorSummary, Error> {
        if let Some(s) = self.0.factor_cache.get(user_id) {
            return Ok(s);
        }
        let asked = std::time::Instant::now();
        let summary = self.factor_summary(user_id).await?;
        self.0.factor_cache.put(user_id, asked, summary);
        Ok(summary)
    }

    /// Drops a user's displayed summary after a change made here.
    pub(crate) fn factors_changed(&self, user_id: &str) {
        self.0.factor_cache.forget(user_id);
    }

    /// Offers a new TOTP secret to the signed-in user; nothing changes at
    /// sign-in until [`totp_confirm`](Self::totp_confirm). Call it from a
    /// handler that takes [`Recent`](crate::Recent).
    ///
    /// # Errors
    /// [`MfaError::Off`] or [`MfaError::Unavailable`].
    pub async fn totp_setup(&self, session: &SessionRecord) -> Result<TotpSetup, MfaError> {
        let factors = self.factors()?;
        let secret: [u8; totp::SECRET_BYTES] = crate::session::random_bytes();
        let sealed = totp::seal(self.server_key(), &session.user_id, &secret);
        factors
            .offer_totp(&session.user_id, &sealed)
            .await
            .map_err(backend)?;
        let (secret, otpauth_url) =
            totp::enrolment(&secret, &session.username, &self.0.config.issuer);
        tracing::info!(target: "latchkey::audit", event = "totp_offered", username = clip(&session.username));
        Ok(TotpSetup {
            secret,
            otpauth_url,
        })
    }

    /// The setup offered and not yet confirmed, if any (to show it again).
    ///
    /// # Errors
    /// [`MfaError::Off`] or [`MfaError::Unavailable`].
    pub async fn pending_totp_setup(
        &self,
        session: &SessionRecord,
    ) -> Result<Option<TotpSetup>, MfaError> {
        let record = self
            .factors()?
            .totp(&session.user_id)
            .await
            .map_err(backend)?;
        let secret = record
            .and_then(|r| r.pending_secret)
            .and_then(|s| totp::open(self.server_key(), &session.user_id, &s));
        Ok(secret.map(|secret| {
            let (secret, otpauth_url) =
                totp::enrolment(&secret, &session.username, &self.0.config.issuer);
            TotpSetup {
                secret,
                otpauth_url,
            }
        }))
    }

    /// Confirms the offered secret with a code from it (the code's step is
    /// used up): TOTP is required at sign-in from now on. Returns fresh
    /// recovery codes (the old ones die), to be shown once.
    ///
    /// # Errors
    /// [`MfaError::WrongCode`], [`MfaError::Off`] or [`MfaError::Unavailable`].
    pub async fn totp_confirm(
        &self,
        session: &SessionRecord,
        code: &str,
    ) -> Result<Vec<String>, MfaError> {
        let factors = self.factors()?;
        let record = factors.totp(&session.user_id).await.map_err(backend)?;
        let Some(sealed) = record.and_then(|r| r.pending_secret) else {
            return Err(MfaError::WrongCode);
        };
        let secret =
            totp::open(self.server_key(), &session.user_id, &sealed).ok_or(MfaError::WrongCode)?;
        let step = totp::matching_step(&secret, code, totp::now_secs()).ok_or_else(|| {
            tracing::warn!(target: "latchkey::audit", event = "totp_confirm_failed", username = clip(&session.username));
            MfaError::WrongCode
        })?;
        if !factors
            .confirm_totp(&session.user_id, &sealed, step)
            .await
            .map_err(backend)?
        {
            return Err(MfaError::WrongCode);
        }
        let codes = self.fresh_codes(factors.as_ref(), &session.user_id).await?;
        self.factors_changed(&session.user_id);
        tracing::info!(target: "latchkey::audit", event = "totp_enabled", username = clip(&session.username));
        Ok(codes)
    }

    async fn fresh_codes(
        &self,
        factors: &dyn FactorStore,
        user_id: &str,
    ) -> Result<Vec<String>, MfaError> {
        let codes = codes::generate(RECOVERY_CODES);
        let hashes: Vec<String> = codes
            .iter()
            .filter_map(|c| codes::hash(self.server_key(), c))
            .collect();
        factors
            .replace_recovery_codes(user_id, &hashes)
            .await
            .map_err(backend)?;
        Ok(codes)
    }

    /// New recovery codes for a user with TOTP; the old ones die.
    ///
    /// # Errors
    /// [`MfaError::NotEnrolled`], [`MfaError::Off`] or [`MfaError::Unavailable`].
    pub async fn new_recovery_codes(
        &self,
        session: &SessionRecord,
    ) -> Result<Vec<String>, MfaError> {
        let factors = self.factors()?;
        if !factors
            .summary(&session.user_id)
            .await
            .map_err(backend)?
            .totp
        {
            return Err(MfaError::NotEnrolled);
        }
        let codes = self.fresh_codes(factors.as_ref(), &session.user_id).await?;
        self.factors_changed(&session.user_id);
        tracing::info!(target: "latchkey::audit", event = "recovery_codes_renewed", username = clip(&session.username));
        Ok(codes)
    }

    /// Turns the user's TOTP off (its recovery codes die with it; passkeys stay).
    ///
    /// # Errors
    /// [`MfaError::Off`] or [`MfaError::Unavailable`].
    pub async fn remove_totp(&self, user_id: &str, username: &str) -> Result<(), MfaError> {
        self.factors()?
            .remove_totp(user_id)
            .await
            .map_err(backend)?;
        self.factors_changed(user_id);
        tracing::info!(target: "latchkey::audit", event = "totp_removed", username = clip(username));
        Ok(())
    }

    /// Turns every second factor of the user off (TOTP, recovery codes, passkeys).
    ///
    /// # Errors
    /// [`MfaError::Off`] or [`MfaError::Unavailable`].
    pub async fn remove_factors(&self, user_id: &str, username: &str) -> Result<(), MfaError> {
        self.factors()?
            .remove_factors(user_id)
            .await
            .map_err(backend)?;
        self.factors_changed(user_id);
        tracing::info!(target: "latchkey::audit", event = "factors_removed", username = clip(username));
        Ok(())
    }

    /// Checks a TOTP code or a recovery code of the user, using it up when
    /// right; `None` when neither is right.
    pub(crate) async fn check_code(
        &self,
        user_id: &str,
        code: Option<&str>,
        recovery_code: Option<&str>,
    ) -> Result<Option<CodeKind>, Error> {
        let Some(factors) = &self.0.factors else {
            return Ok(None);
        };
        if let Some(code) = code.filter(|c| !c.trim().is_empty()) {
            let record = factors.totp(user_id).await.map_err(backend)?;
            let secret = record
                .and_then(|r| r.secret)
                .and_then(|s| totp::open(self.server_key(), user_id, &s));
            if let Some(step) = secret.and_then(|s| totp::matching_step(&s, code, totp::now_secs()))
            {
                if factors
                    .use_totp_step(user_id, step)
                    .await
                    .map_err(backend)?
                {
                    return Ok(Some(CodeKind::Totp));
                }
            }
            // A code field holding a recovery code works too.
            if recovery_code.is_none() && code.trim().len() > 6 {
                return self.check_recovery(factors.as_ref(), user_id, code).await;
            }
            return Ok(None);
        }
        match recovery_code {
            Some(rc) => self.check_recovery(factors.as_ref(), user_id, rc).await,
            None => Ok(None),
        }
    }

    async fn check_recovery(
        &self,
        factors: &dyn FactorStore,
        user_id: &str,
        typed: &str,
    ) -> Result<Option<CodeKind>, Error> {
        let Some(hash) = codes::hash(self.server_key(), typed) else {
            return Ok(None);
        };
        let used = factors
            .use_recovery_code(user_id, &hash)
            .await
            .map_err(backend)?;
        if used {
            self.factors_changed(user_id);
        }
        Ok(used.then_some(CodeKind::Recovery))
    }

    /// Re-authenticates the signed-in user with a second-factor code
    /// (`POST /reauth` with `code`), counted like a sign-in.
    ///
    /// # Errors
    /// As [`reauthenticate`](Self::reauthenticate).
    pub async fn reauthenticate_code(
        &self,
        session: &SessionRecord,
        code: &str,
        meta: &RequestMeta,
    ) -> Result<(), PasswordChangeError> {
        let throttle = self.throttle();
        let name = crate::auth::throttle_name(&session.username);
        let attempt = match throttle
            .reserve(&name, &meta.ip)
            .await
            .map_err(Error::from)?
        {
            Ok(a) => a,
            Err(retry_after) => return Err(PasswordChangeError::Throttled { retry_after }),
        };
        match self.check_code(&session.user_id, Some(code), None).await? {
            Some(_) => {
                throttle.succeeded(attempt).await.map_err(Error::from)?;
                self.mark_recent(session).await?;
                tracing::info!(target: "latchkey::audit", event = "reauth", method = "code", username = clip(&session.username), ip = %meta.ip);
                Ok(())
            }
            None => {
                tracing::warn!(target: "latchkey::audit", event = "reauth_failed", method = "code", username = clip(&session.username), ip = %meta.ip);
                Err(PasswordChangeError::WrongPassword)
            }
        }
    }
}
