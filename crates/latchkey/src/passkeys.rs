//! Passkeys (WebAuthn, with kanidm's `webauthn-rs`): registration, a
//! passkey as the second step of a pending sign-in, and passwordless
//! sign-in with discoverable credentials.
//!
//! Ceremony state (the challenge and what the server expects back) is
//! kept server-side as a single-use [ticket](crate::store::TicketStore) in
//! the session store, keyed by the session (registration) or by a random
//! ceremony id in a short-lived cookie (authentication), and never sent to
//! the client: that is why `webauthn-rs`'s state serialisation feature is
//! safe here, and why a ceremony begun on one instance finishes on another.
//! Credentials live in the [`FactorStore`](crate::mfa::FactorStore) beside
//! TOTP; their sign counters are kept, and a counter that goes backwards (a
//! cloned authenticator) is refused.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn,
    WebauthnBuilder,
};

use crate::auth::{clip, SignedIn};
use crate::error::backend;
use crate::error::{detail, Error, LoginError};
use crate::mfa::PasskeyRecord;
use crate::session::{now_ms, SessionRecord, SessionToken};
use crate::{Latchkey, RequestMeta};

/// How long a ceremony may take.
const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);
/// Longest passkey name kept.
const MAX_NAME: usize = 64;

/// Why a passkey step was refused.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The credential or its ceremony did not check out (malformed, wrong
    /// origin, another key's signature, a used or expired challenge).
    #[error("{0}")]
    Refused(&'static str),
    /// No such passkey of this user.
    #[error("Passkey not found")]
    NotFound,
    /// Passkeys are not configured ([`Builder::passkeys`](crate::Builder::passkeys)).
    #[error("Not Found")]
    Off,
    /// A store failed.
    #[error(transparent)]
    Unavailable(#[from] Error),
}

impl IntoResponse for PasskeyError {
    fn into_response(self) -> Response {
        if let PasskeyError::Unavailable(e) = self {
            return e.into_response();
        }
        let status = match &self {
            PasskeyError::Refused(_) => StatusCode::BAD_REQUEST,
            PasskeyError::NotFound | PasskeyError::Off => StatusCode::NOT_FOUND,
            PasskeyError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        detail(status, &self.to_string())
    }
}

impl From<crate::store::StoreError> for PasskeyError {
    fn from(e: crate::store::StoreError) -> Self {
        PasskeyError::Unavailable(e.into())
    }
}

/// A passkey as its owner sees it.
#[derive(Clone, Debug, Serialize)]
pub struct PasskeyInfo {
    /// The credential id (base64url): the handle for rename and delete.
    pub id: String,
    /// The owner's name for it.
    pub name: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch, if ever used.
    pub last_used_at: Option<i64>,
}

/// The relying party, as [`Builder::passkeys`](crate::Builder::passkeys) set it up.
pub(crate) fn relying_party(rp_id: &str, origin: &str) -> Result<Webauthn, String> {
    let url = Url::parse(origin).map_err(|e| format!("passkeys: bad origin {origin:?}: {e}"))?;
    // On localhost (development) any port is the same site; elsewhere the
    // origin must match exactly.
    let local = url.host_str() == Some("localhost");
    WebauthnBuilder::new(rp_id, &url)
        .and_then(|b| b.rp_name(rp_id).allow_any_port(local).build())
        .map_err(|e| {
            format!("passkeys: rp id {rp_id:?} does not fit origin {origin:?} ({e}); the rp id must be the origin's host or a parent domain of it")
        })
}

#[derive(Serialize, Deserialize)]
struct Ceremony {
    /// The pending sign-in this completes (its ticket key), or none: a
    /// passwordless sign-in.
    pending: Option<String>,
    /// For a pending sign-in: the user; the state then is a
    /// `PasskeyAuthentication`, else a `DiscoverableAuthentication`.
    user: Option<String>,
    state: serde_json::Value,
}

fn ceremony_key(token: &SessionToken) -> String {
    format!(
        "webauthn:auth:{}",
        hex::encode(Sha256::digest(token.as_str().as_bytes()))
    )
}

fn refused(what: &'static str) -> impl Fn(serde_json::Error) -> PasskeyError {
    move |_| PasskeyError::Refused(what)
}

impl Latchkey {
    fn webauthn(&self) -> Result<&Webauthn, PasskeyError> {
        self.0.webauthn.as_deref().ok_or(PasskeyError::Off)
    }

    /// Whether passkeys are on.
    pub fn passkeys_enabled(&self) -> bool {
        self.0.webauthn.is_some() && self.0.factors.is_some()
    }

    fn factor_store(&self) -> Result<&std::sync::Arc<dyn crate::mfa::FactorStore>, PasskeyError> {
        self.0.factors.as_ref().ok_or(PasskeyError::Off)
    }

    /// The WebAuthn user handle of a user: stable, opaque (an HMAC of the
    /// user id under the server key), so it reveals nothing about the id.
    fn user_handle(&self, user_id: &str) -> Uuid {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.server_key())
            .expect("HMAC takes any key length");
        mac.update(b"latchkey webauthn user handle v1\0");
        mac.update(user_id.as_bytes());
        let bytes: [u8; 16] = mac.finalize().into_bytes()[..16]
            .try_into()
            .expect("16 bytes");
        Uuid::from_bytes(bytes)
    }

    /// Starts registering a passkey for the signed-in user (call it from a
    /// handler that takes [`Recent`](crate::Recent)): the creation options
    /// (`{"publicKey": {...}}`) for `navigator.credentials.create`.
    ///
    /// # Errors
    /// [`PasskeyError::Off`] or [`PasskeyError::Unavailable`].
    pub async fn passkey_register_start(
        &self,
        session: &SessionRecord,
    ) -> Result<serde_json::Value, PasskeyError> {
        let webauthn = self.webauthn()?;
        let existing = self
            .factor_store()?
            .passkeys(&session.user_id)
            .await
            .map_err(backend)?;
        let exclude = existing
            .iter()
            .filter_map(|p| serde_json::from_str::<Passkey>(&p.data).ok())
            .map(|p| p.cred_id().clone())
            .collect::<Vec<_>>();
        let (options, state) = webauthn
            .start_passkey_registration(
                self.user_handle(&session.user_id),
                &session.username,
                &session.username,
                Some(exclude),
            )
            .map_err(|_| PasskeyError::Refused("Passkey registration could not start"))?;
        let state = serde_json::to_string(&state).expect("registration state serialises");
        self.store()
            .put_ticket(
                &format!("webauthn:reg:{}", session.id),
                &state,
                CEREMONY_TTL,
            )
            .await?;
        let mut options = serde_json::to_value(&options).expect("options serialise");
        // A discoverable credential where the authenticator can make one,
        // so the passkey also signs in without a username.
        if let Some(sel) = options["publicKey"].get_mut("authenticatorSelection") {
            sel["residentKey"] = "preferred".into();
            sel["requireResidentKey"] = false.into();
        }
        Ok(options)
    }

    /// Finishes a registration with the credential the browser made (its
    /// `toJSON()`); `name` is the user's label for it. The challenge is
    /// used up whatever the outcome, so a failed ceremony leaves nothing.
    ///
    /// # Errors
    /// [`PasskeyError::Refused`] (a bad, foreign or replayed credential),
    /// [`PasskeyError::Off`], [`PasskeyError::Unavailable`].
    pub async fn passkey_register_finish(
        &self,
        session: &SessionRecord,
        credential: serde_json::Value,
        name: Option<&str>,
    ) -> Result<PasskeyInfo, PasskeyError> {
        let webauthn = self.webauthn()?;
        let state = self
            .store()
            .take_ticket(&format!("webauthn:reg:{}", session.id))
            .await?
            .ok_or(PasskeyError::Refused("No passkey registration in progress"))?;
        let state: PasskeyRegistration =
            serde_json::from_str(&state).map_err(refused("No passkey registration in progress"))?;
        let credential: RegisterPublicKeyCredential =
            serde_json::from_value(credential).map_err(refused("Malformed credential"))?;
        let passkey = webauthn
            .finish_passkey_registration(&credential, &state)
            .map_err(|e| {
                tracing::warn!(target: "latchkey::audit", event = "passkey_register_failed", username = clip(&session.username), reason = %e);
                PasskeyError::Refused("Passkey registration failed")
            })?;
        let name: String = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or("Passkey")
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME)
            .collect();
        let id = crate::session::b64url(passkey.cred_id().as_ref());
        let record = PasskeyRecord {
            id: id.clone(),
            user_id: session.user_id.to_string(),
            name,
            data: serde_json::to_string(&passkey).expect("a passkey serialises"),
            created_at: now_ms(),
            last_used_at: None,
        };
        if !self
            .factor_store()?
            .add_passkey(&record)
            .await
            .map_err(backend)?
        {
            return Err(PasskeyError::Refused("This passkey is already registered"));
        }
        self.factors_changed(&session.user_id);
        tracing::info!(target: "latchkey::audit", event = "passkey_registered", username = clip(&session.username), passkey = %id);
        Ok(info(&record))
    }

    /// The user's passkeys.
    ///
    /// # Errors
    /// [`PasskeyError::Off`] or [`PasskeyError::Unavailable`].
    pub async fn passkeys_of(&self, user_id: &str) -> Result<Vec<PasskeyInfo>, PasskeyError> {
        let list = self
            .factor_store()?
            .passkeys(user_id)
            .await
            .map_err(backend)?;
        Ok(list.iter().map(info).collect())
    }

    /// Renames one of the user's passkeys.
    ///
    /// # Errors
    /// [`PasskeyError::NotFound`], [`PasskeyError::Off`], [`PasskeyError::Unavailable`].
    pub async fn passkey_rename(
        &self,
        user_id: &str,
        id: &str,
        name: &str,
    ) -> Result<(), PasskeyError> {
        let name: String = name
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME)
            .collect();
        if name.is_empty() {
            return Err(PasskeyError::Refused("A passkey needs a name"));
        }
        match self
            .factor_store()?
            .rename_passkey(user_id, id, &name)
            .await
            .map_err(backend)?
        {
            true => Ok(()),
            false => Err(PasskeyError::NotFound),
        }
    }

    /// Deletes one of the user's passkeys (call it from a handler that takes
    /// [`Recent`](crate::Recent)).
    ///
    /// # Errors
    /// [`PasskeyError::NotFound`], [`PasskeyError::Off`], [`PasskeyError::Unavailable`].
    pub async fn passkey_delete(
        &self,
        session: &SessionRecord,
        id: &str,
    ) -> Result<(), PasskeyError> {
        match self
            .factor_store()?
            .delete_passkey(&session.user_id, id)
            .await
            .map_err(backend)?
        {
            true => {
                self.factors_changed(&session.user_id);
                tracing::info!(target: "latchkey::audit", event = "passkey_deleted", username = clip(&session.username), passkey = %id);
                Ok(())
            }
            false => Err(PasskeyError::NotFound),
        }
    }

    /// Starts a passkey sign-in: the second step of the request's pending
    /// sign-in if it has one (its user's passkeys), else a passwordless one
    /// (any discoverable credential). Returns the request options
    /// (`{"publicKey": {...}}`) and the ceremony cookie to set.
    ///
    /// # Errors
    /// [`PasskeyError::Off`] or [`PasskeyError::Unavailable`].
    pub async fn passkey_login_start(
        &self,
        headers: &HeaderMap,
    ) -> Result<(serde_json::Value, HeaderValue), PasskeyError> {
        let webauthn = self.webauthn()?;
        let pending = match self.pending_user(headers).await {
            Ok(p) => Some(p),
            Err(LoginError::Unavailable(e)) => return Err(e.into()),
            Err(_) => None,
        };
        let (options, ceremony) = match pending {
            Some((user_id, pending_key)) => {
                let keys: Vec<Passkey> = self
                    .factor_store()?
                    .passkeys(&user_id)
                    .await
                    .map_err(backend)?
                    .iter()
                    .filter_map(|p| serde_json::from_str(&p.data).ok())
                    .collect();
                if keys.is_empty() {
                    return Err(PasskeyError::Refused("This account has no passkey"));
                }
                let (options, state) = webauthn
                    .start_passkey_authentication(&keys)
                    .map_err(|_| PasskeyError::Refused("Passkey sign-in could not start"))?;
                let state = serde_json::to_value(&state).expect("state serialises");
                (
                    serde_json::to_value(&options).expect("options serialise"),
                    Ceremony {
                        pending: Some(pending_key),
                        user: Some(user_id),
                        state,
                    },
                )
            }
            None => {
                let (options, state) = webauthn
                    .start_discoverable_authentication()
                    .map_err(|_| PasskeyError::Refused("Passkey sign-in could not start"))?;
                let state = serde_json::to_value(&state).expect("state serialises");
                let mut options = serde_json::to_value(&options).expect("options serialise");
                // The page decides between the button (modal) and autofill.
                if let Some(o) = options.as_object_mut() {
                    o.remove("mediation");
                }
                (
                    options,
                    Ceremony {
                        pending: None,
                        user: None,
                        state,
                    },
                )
            }
        };
        let token = SessionToken::generate();
        let value = serde_json::to_string(&ceremony).expect("ceremony serialises");
        self.store()
            .put_ticket(&ceremony_key(&token), &value, CEREMONY_TTL)
            .await?;
        Ok((options, self.cookies().ceremony(&token, CEREMONY_TTL)))
    }

    /// Finishes a passkey sign-in with the browser's assertion (its
    /// `toJSON()`): a new session, as after a password (a passkey sign-in
    /// needs no second factor). Failures are counted per client address
    /// like failed sign-ins and audited.
    ///
    /// # Errors
    /// [`LoginError::InvalidCredentials`] for anything that does not check
    /// out, [`LoginError::Throttled`], [`LoginError::Unavailable`].
    pub async fn passkey_login_finish(
        &self,
        headers: &HeaderMap,
        credential: serde_json::Value,
        meta: &RequestMeta,
    ) -> Result<SignedIn, LoginError> {
        let webauthn = self
            .webauthn()
            .map_err(|_| LoginError::InvalidCredentials)?;
        if let Some(retry_after) = self
            .throttle()
            .passkey_gate(&meta.ip)
            .await
            .map_err(Error::from)?
        {
            return Err(LoginError::Throttled { retry_after });
        }
        let token = self
            .cookies()
            .ceremony_token(headers)
            .ok_or(LoginError::InvalidCredentials)?;
        // Single use: a replayed assertion finds no ceremony.
        let ceremony = self
            .store()
            .take_ticket(&ceremony_key(&token))
            .await
            .map_err(Error::from)?
            .and_then(|v| serde_json::from_str::<Ceremony>(&v).ok())
            .ok_or(LoginError::InvalidCredentials)?;
        let outcome = self.verify_assertion(webauthn, &ceremony, credential).await;
        let (record, passkey) = match outcome {
            Ok(found) => found,
            Err(why) => {
                tracing::warn!(target: "latchkey::audit", event = "passkey_login_failed", ip = %meta.ip, reason = why);
                self.throttle()
                    .passkey_failed(&meta.ip)
                    .await
                    .map_err(Error::from)?;
                return Err(LoginError::InvalidCredentials);
            }
        };
        let factors = self
            .factor_store()
            .map_err(|_| LoginError::InvalidCredentials)?;
        factors
            .update_passkey(
                &record.id,
                &serde_json::to_string(&passkey).expect("a passkey serialises"),
                now_ms(),
            )
            .await
            .map_err(backend)?;
        let users = self
            .directory()
            .ok_or_else(|| Error::Backend("passkeys need Builder::users".into()))?;
        let account = users
            .by_id(&record.user_id)
            .await
            .map_err(backend)?
            .ok_or(LoginError::InvalidCredentials)?;
        if let Some(pending_key) = &ceremony.pending {
            // The second step: the pending sign-in is used up here, and
            // only if the account did not change since the password.
            if !self.take_pending(pending_key, &account).await? {
                return Err(LoginError::InvalidCredentials);
            }
        }
        self.throttle()
            .clear_account(&crate::auth::throttle_name(&account.username), &meta.ip)
            .await
            .map_err(Error::from)?;
        let done = self.replace_session(headers, &account, meta).await?;
        tracing::info!(target: "latchkey::audit", event = "login", method = "passkey", username = clip(&account.username), ip = %meta.ip, session = %done.record.id, passkey = %record.id);
        Ok(done)
    }

    /// The passkey an assertion proves, with its updated state; or why not.
    async fn verify_assertion(
        &self,
        webauthn: &Webauthn,
        ceremony: &Ceremony,
        credential: serde_json::Value,
    ) -> Result<(PasskeyRecord, Passkey), &'static str> {
        let credential: PublicKeyCredential =
            serde_json::from_value(credential).map_err(|_| "malformed credential")?;
        let id = crate::session::b64url(credential.raw_id.as_ref());
        let factors = self.factor_store().map_err(|_| "passkeys off")?;
        let record = factors
            .passkey(&id)
            .await
            .map_err(|_| "store unavailable")?
            .ok_or("unknown credential")?;
        let mut passkey: Passkey =
            serde_json::from_str(&record.data).map_err(|_| "stored passkey unreadable")?;
        let result = match &ceremony.user {
            Some(user) => {
                if *user != record.user_id {
                    return Err("another user's passkey");
                }
                let state: PasskeyAuthentication =
                    serde_json::from_value(ceremony.state.clone()).map_err(|_| "bad state")?;
                webauthn.finish_passkey_authentication(&credential, &state)
            }
            None => {
                let (handle, _) = webauthn
                    .identify_discoverable_authentication(&credential)
                    .map_err(|_| "no user handle")?;
                if handle != self.user_handle(&record.user_id) {
                    return Err("user handle does not match the credential");
                }
                let state: DiscoverableAuthentication =
                    serde_json::from_value(ceremony.state.clone()).map_err(|_| "bad state")?;
                webauthn.finish_discoverable_authentication(
                    &credential,
                    state,
                    &[DiscoverableKey::from(&passkey)],
                )
            }
        }
        .map_err(|e| match e {
            webauthn_rs::prelude::WebauthnError::CredentialPossibleCompromise => {
                "sign counter went backwards (cloned authenticator?)"
            }
            _ => "assertion did not verify",
        })?;
        passkey.update_credential(&result);
        Ok((record, passkey))
    }
}

fn info(p: &PasskeyRecord) -> PasskeyInfo {
    PasskeyInfo {
        id: p.id.clone(),
        name: p.name.clone(),
        created_at: p.created_at,
        last_used_at: p.last_used_at,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rp_id_must_fit_the_origin() {
        assert!(super::relying_party("example.com", "https://login.example.com").is_ok());
        assert!(super::relying_party("localhost", "http://localhost:8000").is_ok());
        assert!(super::relying_party("evil.com", "https://login.example.com").is_err());
        assert!(super::relying_party("example.com", "not a url").is_err());
    }
}
