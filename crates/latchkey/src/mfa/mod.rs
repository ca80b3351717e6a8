//! Second factors: TOTP (RFC 6238) with recovery codes, a sign-in in two
//! steps, and codes for re-authentication.
//!
//! Factors live behind [`FactorStore`]; [`SqliteFactors`] and
//! [`PostgresFactors`] keep them in the app's database (tables
//! `latchkey_totp` and `latchkey_recovery_codes`). TOTP secrets are sealed
//! (ChaCha20-Poly1305, a key derived from the server secret, bound to the
//! user), so a copy of the database hands out no factors; recovery codes are
//! kept as keyed hashes. Give the store to
//! [`Builder::factors`](crate::Builder::factors): from then on a user with
//! a confirmed factor signs in in two steps ([`LoginError::SecondFactorRequired`](crate::LoginError::SecondFactorRequired)).

mod codes;
pub(crate) mod flows;
mod pending;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
mod totp;

use async_trait::async_trait;

use crate::user::BackendError;

pub use flows::{MfaError, TotpSetup};
pub use pending::{PendingSignIn, PENDING_TTL};
#[cfg(feature = "postgres")]
pub use sql::PostgresFactors;
#[cfg(feature = "sqlite")]
pub use sql::SqliteFactors;
pub use totp::code_at;

/// Per-process summaries for display, each at most [`SUMMARY_TTL`] old:
/// a profile page costs no factor-store read per request. Changes made in
/// this process drop the entry at once; another instance's show within the
/// TTL. Sign-in never reads it (it must see a factor the moment it exists).
pub(crate) struct SummaryCache(
    quick_cache::sync::Cache<String, (std::time::Instant, FactorSummary)>,
);

/// How old a displayed summary may be.
const SUMMARY_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl Default for SummaryCache {
    fn default() -> Self {
        Self(quick_cache::sync::Cache::new(10_000))
    }
}

impl SummaryCache {
    pub(crate) fn get(&self, user_id: &str) -> Option<FactorSummary> {
        self.0
            .get(user_id)
            .filter(|(at, _)| at.elapsed() < SUMMARY_TTL)
            .map(|(_, s)| s)
    }
    pub(crate) fn put(&self, user_id: &str, at: std::time::Instant, summary: FactorSummary) {
        self.0.insert(user_id.to_owned(), (at, summary));
    }
    pub(crate) fn forget(&self, user_id: &str) {
        self.0.remove(user_id);
    }
}

/// How many recovery codes a user gets at a time.
pub const RECOVERY_CODES: usize = 10;

/// A user's TOTP factor as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TotpRecord {
    /// The confirmed secret, sealed; `None` while only an enrolment is pending.
    pub secret: Option<String>,
    /// A secret offered by a setup and not yet confirmed by a code, sealed.
    pub pending_secret: Option<String>,
    /// The last time step whose code was accepted (never accepted twice).
    pub last_step: Option<i64>,
}

/// What `GET /profile` shows of a user's factors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FactorSummary {
    /// A confirmed TOTP factor.
    pub totp: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u64,
    /// Registered passkeys.
    pub passkeys: u64,
}

impl FactorSummary {
    /// Whether sign-in needs a second step.
    pub fn any(&self) -> bool {
        self.totp || self.passkeys > 0
    }
}

/// A registered passkey as stored: the credential as the WebAuthn library
/// serialised it (public key, sign counter, backup flags), under its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// The credential id, base64url.
    pub id: String,
    /// Whose it is.
    pub user_id: String,
    /// The user's name for it ("Laptop").
    pub name: String,
    /// The credential (JSON); its counter moves with every use.
    pub data: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch, if it was ever used.
    pub last_used_at: Option<i64>,
}

/// Where second factors live. Every method that decides whether a code is
/// accepted is one atomic step in the store, so two requests racing with
/// one code cannot both pass.
#[async_trait]
pub trait FactorStore: Send + Sync + 'static {
    /// The user's TOTP record, if any.
    async fn totp(&self, user_id: &str) -> Result<Option<TotpRecord>, BackendError>;
    /// Offers a new (sealed) secret, replacing any earlier offer; a
    /// confirmed secret stays in force until the new one is confirmed.
    async fn offer_totp(&self, user_id: &str, sealed: &str) -> Result<(), BackendError>;
    /// Makes the offered secret the user's, with `step` used up; `false`
    /// when nothing was offered (or another request confirmed it first).
    async fn confirm_totp(
        &self,
        user_id: &str,
        sealed: &str,
        step: i64,
    ) -> Result<bool, BackendError>;
    /// Uses up `step` if it is later than every step used before; `false`
    /// when it is not (a replayed or older code).
    async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool, BackendError>;
    /// Replaces every recovery code of the user with these hashes.
    async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[String],
    ) -> Result<(), BackendError>;
    /// Uses up the code with this hash; `false` when there is none.
    async fn use_recovery_code(&self, user_id: &str, hash: &str) -> Result<bool, BackendError>;
    /// Removes the user's TOTP factor and recovery codes.
    async fn remove_totp(&self, user_id: &str) -> Result<(), BackendError>;
    /// Removes every factor of the user (TOTP, recovery codes, passkeys).
    async fn remove_factors(&self, user_id: &str) -> Result<(), BackendError>;
    /// Files a new passkey; `false` when its credential id is taken.
    async fn add_passkey(&self, passkey: &PasskeyRecord) -> Result<bool, BackendError>;
    /// The user's passkeys, oldest first.
    async fn passkeys(&self, user_id: &str) -> Result<Vec<PasskeyRecord>, BackendError>;
    /// The passkey with this credential id, whoever's it is.
    async fn passkey(&self, id: &str) -> Result<Option<PasskeyRecord>, BackendError>;
    /// Stores a used passkey's new state (counter) and when it was used.
    async fn update_passkey(&self, id: &str, data: &str, used_at: i64) -> Result<(), BackendError>;
    /// Renames one of the user's passkeys; `false` when it is not theirs.
    async fn rename_passkey(
        &self,
        user_id: &str,
        id: &str,
        name: &str,
    ) -> Result<bool, BackendError>;
    /// Deletes one of the user's passkeys; `false` when it is not theirs.
    async fn delete_passkey(&self, user_id: &str, id: &str) -> Result<bool, BackendError>;
    /// The user's factors at a glance.
    async fn summary(&self, user_id: &str) -> Result<FactorSummary, BackendError>;
}
