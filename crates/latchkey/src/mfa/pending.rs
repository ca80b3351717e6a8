//! A sign-in in two steps: the right password for a user with a second
//! factor opens a *pending* sign-in (its own random token, in its own
//! cookie, a ticket in the session store for five minutes) that opens
//! nothing but `/login/mfa`; a right code there issues a brand-new session.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::{clip, throttle_name, SignedIn};
use crate::error::{Error, LoginError};
use crate::session::SessionToken;
use crate::user_check::Account;
use crate::{Latchkey, RequestMeta};

/// How long a pending sign-in lives.
pub const PENDING_TTL: Duration = Duration::from_secs(5 * 60);
/// Wrong codes one pending sign-in may take.
const PENDING_TRIES: u64 = 5;

/// The password was right; a second factor must follow. As a response:
/// 202 `{"message": "Second factor required.", "methods": [...]}` with the
/// pending sign-in's cookie.
#[derive(Debug)]
pub struct PendingSignIn {
    /// `Set-Cookie` value carrying the pending sign-in's token.
    pub set_cookie: HeaderValue,
    /// What may complete it: `"totp"`, `"recovery_code"`, `"webauthn"`.
    pub methods: Vec<&'static str>,
}

impl IntoResponse for PendingSignIn {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "message": "Second factor required.",
            "methods": self.methods,
        });
        let mut res = (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        res.headers_mut()
            .append(header::SET_COOKIE, self.set_cookie);
        res
    }
}

#[derive(Serialize, Deserialize)]
struct Pending {
    user: String,
    version: u64,
}

fn key(token: &SessionToken) -> String {
    format!(
        "pending:{}",
        hex::encode(Sha256::digest(token.as_str().as_bytes()))
    )
}

impl Latchkey {
    /// The second step a user's factors call for, if any.
    pub(crate) async fn second_factor_methods(
        &self,
        user_id: &str,
    ) -> Result<Vec<&'static str>, Error> {
        let summary = self.factor_summary(user_id).await?;
        let mut methods = Vec::new();
        if summary.totp {
            methods.extend(["totp", "recovery_code"]);
        }
        if summary.passkeys > 0 {
            methods.push("webauthn");
        }
        Ok(methods)
    }

    /// Opens a pending sign-in for `user`.
    pub(crate) async fn open_pending(
        &self,
        user: &Account,
        methods: Vec<&'static str>,
        meta: &RequestMeta,
    ) -> Result<PendingSignIn, Error> {
        let token = SessionToken::generate();
        let value = serde_json::to_string(&Pending {
            user: user.id.clone(),
            version: user.version,
        })
        .expect("a pending sign-in serialises");
        self.store()
            .put_ticket(&key(&token), &value, PENDING_TTL)
            .await?;
        tracing::info!(target: "latchkey::audit", event = "login_pending", username = clip(&user.username), ip = %meta.ip);
        Ok(PendingSignIn {
            set_cookie: self.cookies().pending(&token, PENDING_TTL),
            methods,
        })
    }

    /// Completes the request's pending sign-in with a TOTP code or a
    /// recovery code: a new session (and the pending cookie's removal, in
    /// [`SignedIn::set_cookie`]'s companion
    /// [`CookieConfig::pending_removal`](crate::cookie::CookieConfig::pending_removal)).
    /// Wrong codes are counted per pending sign-in (5) and like failed
    /// passwords (per username and address, and per account).
    ///
    /// # Errors
    /// [`LoginError::InvalidCredentials`] (no pending sign-in, or a wrong
    /// code), [`LoginError::Throttled`], [`LoginError::Unavailable`].
    pub async fn complete_sign_in(
        &self,
        headers: &HeaderMap,
        code: Option<&str>,
        recovery_code: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<SignedIn, LoginError> {
        let (user_id, pending_key) = self.pending_user(headers).await?;
        let users = self
            .directory()
            .ok_or_else(|| Error::Backend("second factors need Builder::users".into()))?;
        let account = users
            .by_id(&user_id)
            .await
            .map_err(crate::error::backend)?
            .ok_or(LoginError::InvalidCredentials)?;
        let (tries, left) = self
            .store()
            .hit(&format!("mfa:{pending_key}"), PENDING_TTL, false)
            .await
            .map_err(Error::from)?;
        if tries > PENDING_TRIES {
            return Err(LoginError::Throttled {
                retry_after: Duration::from_millis(left.max(0) as u64),
            });
        }
        let throttle = self.throttle();
        let attempt = match throttle
            .reserve(&throttle_name(&account.username), &meta.ip)
            .await
            .map_err(Error::from)?
        {
            Ok(a) => a,
            Err(retry_after) => return Err(LoginError::Throttled { retry_after }),
        };
        let Some(kind) = self.check_code(&user_id, code, recovery_code).await? else {
            tracing::warn!(target: "latchkey::audit", event = "mfa_failed", username = clip(&account.username), ip = %meta.ip);
            return Err(LoginError::InvalidCredentials);
        };
        // Used once: of two requests racing with right codes, one signs in.
        if !self.take_pending(&pending_key, &account).await? {
            throttle.abandon(attempt).await.map_err(Error::from)?;
            return Err(LoginError::InvalidCredentials);
        }
        throttle.succeeded(attempt).await.map_err(Error::from)?;
        let done = self.replace_session(headers, &account, meta).await?;
        tracing::info!(target: "latchkey::audit", event = "login", method = ?kind, username = clip(&account.username), ip = %meta.ip, session = %done.record.id);
        Ok(done)
    }

    /// Uses up a pending sign-in; `false` when another request used it
    /// first, or the account changed since (a new password, "sign out
    /// everywhere"): then no session may come of it.
    pub(crate) async fn take_pending(
        &self,
        pending_key: &str,
        account: &crate::user_check::Account,
    ) -> Result<bool, Error> {
        let taken = self.store().take_ticket(pending_key).await?;
        let pending: Option<Pending> = taken.and_then(|v| serde_json::from_str(&v).ok());
        Ok(pending.is_some_and(|p| p.user == account.id && p.version == account.version))
    }

    /// The user of the request's live pending sign-in, and its ticket key.
    pub(crate) async fn pending_user(
        &self,
        headers: &HeaderMap,
    ) -> Result<(String, String), LoginError> {
        let token = self
            .cookies()
            .pending_token(headers)
            .ok_or(LoginError::InvalidCredentials)?;
        let k = key(&token);
        let value = self
            .store()
            .get_ticket(&k)
            .await
            .map_err(Error::from)?
            .ok_or(LoginError::InvalidCredentials)?;
        let p: Pending =
            serde_json::from_str(&value).map_err(|_| LoginError::InvalidCredentials)?;
        Ok((p.user, k))
    }

    /// Whether the request carries a live pending sign-in (for pages).
    ///
    /// # Errors
    /// [`Error`] when the store cannot be reached.
    pub async fn has_pending_sign_in(&self, headers: &HeaderMap) -> Result<bool, Error> {
        match self.pending_user(headers).await {
            Ok(_) => Ok(true),
            Err(LoginError::Unavailable(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }
}
