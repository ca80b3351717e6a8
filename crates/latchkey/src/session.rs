//! Session tokens, the record a store keeps, and the idle/absolute timeout rules.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Milliseconds since the Unix epoch, the time unit every store keeps.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Fresh random bytes from the OS-seeded CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// The secret a cookie carries: 256 random bits, base64url without padding.
///
/// Its `Debug` form is redacted so it never reaches a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

/// Length of an encoded token: 32 bytes in unpadded base64url.
const TOKEN_LEN: usize = 43;

/// Bytes as unpadded base64url (passkey credential ids).
#[cfg(feature = "passkeys")]
pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SessionToken {
    /// A new random token.
    pub fn generate() -> Self {
        Self(URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
    }

    /// Accepts only strings shaped like a token we issue; anything else is
    /// ignored by the caller, so hostile cookies never reach a store.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::is_well_formed(raw).then(|| Self(raw.to_owned()))
    }

    /// Whether `raw` has the shape of a token we issue.
    pub fn is_well_formed(raw: &str) -> bool {
        raw.len() == TOKEN_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// The cookie value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What stores key sessions by: SHA-256 of the token. A copy of the store
    /// hands out no live sessions, and a plain hash suffices for 256-bit input.
    pub fn hash(&self) -> TokenHash {
        hash_token(&self.0)
    }
}

pub(crate) fn hash_token(raw: &str) -> TokenHash {
    TokenHash(Sha256::digest(raw.as_bytes()).into())
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// SHA-256 of a [`SessionToken`]: the key a store files a session under.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Lower-case hex, for stores keyed by strings.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses what [`TokenHash::to_hex`] wrote.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

/// A session's public handle: 128 random bits, written as 32 lower-case
/// hex digits. Safe to show (session lists, audit logs), useless as a
/// cookie. Kept as raw bytes: 16 bytes in a record, not a 32-byte string
/// on the heap.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// A new random handle.
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    /// Parses the 32 hex digits [`Display`](std::fmt::Display) writes;
    /// anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 32];
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| std::fmt::Error)?;
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("a session id is 32 hex digits"))
    }
}

/// The per-session secret behind the HTML forms' CSRF token: 256 random
/// bits, kept raw. The form token is its unpadded base64url text
/// ([`CsrfSecret::form_token`]), which is also how stores keep it.
///
/// Its `Debug` form is redacted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CsrfSecret(pub [u8; 32]);

impl CsrfSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    /// The token forms carry: 43 characters of unpadded base64url.
    pub fn form_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses what [`CsrfSecret::form_token`] wrote (canonical encodings
    /// only); anything else is `None`.
    pub fn from_form_token(token: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        // A 43-character token is exactly 32 bytes; `decode_slice` refuses
        // longer input by the buffer's size.
        (token.len() == TOKEN_LEN).then_some(())?;
        let n = URL_SAFE_NO_PAD.decode_slice(token, &mut out).ok()?;
        (n == 32).then_some(Self(out))
    }

    /// Whether `token` is this secret's form token, in constant time.
    pub fn matches(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        Self::from_form_token(token).is_some_and(|t| bool::from(t.0.ct_eq(&self.0)))
    }
}

impl std::fmt::Debug for CsrfSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfSecret(<redacted>)")
    }
}

impl Serialize for CsrfSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.form_token())
    }
}

impl<'de> Deserialize<'de> for CsrfSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_form_token(&s)
            .ok_or_else(|| serde::de::Error::custom("a CSRF secret is 43 base64url characters"))
    }
}

/// One signed-in session as a store keeps it.
///
/// Compact by design (a memory store keeps one per live session): ids and
/// secrets are raw bytes, the address is parsed, and the strings are shared
/// [`Arc<str>`]s, so sessions of one user, and the few distinct roles and
/// user agents, can share one copy (the memory store does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Public handle: safe to show, useless as a cookie.
    pub id: SessionId,
    /// Store key; never the token itself.
    #[serde(skip)]
    pub token_hash: Option<TokenHash>,
    /// The user's id in the [`UserBackend`](crate::UserBackend).
    pub user_id: Arc<str>,
    /// The user's name at sign-in.
    pub username: Arc<str>,
    /// The user's role; stores update it in place on a role change.
    pub role: Arc<str>,
    /// Sign-in time, ms since the epoch.
    pub created_at: i64,
    /// Last recorded activity, ms since the epoch (refreshed at most every
    /// [`Timeouts::touch_interval`]).
    pub last_seen_at: i64,
    /// When the session ends unless refreshed, ms since the epoch.
    pub expires_at: i64,
    /// `User-Agent` at sign-in (truncated).
    pub user_agent: Arc<str>,
    /// Client address at sign-in; `None` when the server did not see one.
    pub ip: Option<IpAddr>,
    /// Per-session secret behind the HTML forms' CSRF token.
    pub csrf_secret: CsrfSecret,
    /// The user's [`session_version`](crate::AuthUser::session_version)
    /// when this session was issued; a different current one ends it.
    #[serde(default)]
    pub user_version: u64,
    /// The app's own data for this session, as JSON (see
    /// [`Auth::set_data`](crate::Auth::set_data) and
    /// [`CurrentUser::data`](crate::CurrentUser::data)); `None` until set.
    #[serde(default)]
    pub data: Option<Arc<str>>,
}

impl SessionRecord {
    /// The client address as text, `""` when unknown (how stores keep it).
    pub fn ip_text(&self) -> String {
        self.ip.map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// The store key. Panics only on a record built without one, which no
    /// store returns.
    pub fn key(&self) -> TokenHash {
        self.token_hash.expect("session record without token hash")
    }
}

/// The idle and absolute timeouts, and the refresh rule derived from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    idle: Duration,
    absolute: Duration,
}

impl Timeouts {
    /// When `idle` exceeds `absolute`, the absolute timeout rules.
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Self {
            idle: idle.min(absolute),
            absolute,
        }
    }

    /// The idle timeout.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// The absolute timeout.
    pub fn absolute(&self) -> Duration {
        self.absolute
    }

    /// How stale `last_seen_at` may get before a request writes it again:
    /// half of max(idle/10, 1 s), capped at a minute. A session therefore ends
    /// no earlier than `idle` after the last request and at most this much
    /// later — within the contract's tenth of the idle timeout.
    pub fn touch_interval(&self) -> Duration {
        (self.idle / 10)
            .max(Duration::from_secs(1))
            .min(Duration::from_secs(120))
            / 2
    }

    /// End of a session created at `created_at` and last seen at `last_seen_at`.
    pub fn expires_at(&self, created_at: i64, last_seen_at: i64) -> i64 {
        let idle_end = last_seen_at + ms(self.idle) + ms(self.touch_interval());
        idle_end.min(created_at + ms(self.absolute))
    }

    /// Whether a request at `now` should refresh `last_seen_at`.
    pub fn needs_touch(&self, record: &SessionRecord, now: i64) -> bool {
        now - record.last_seen_at >= ms(self.touch_interval())
            && record.expires_at < record.created_at + ms(self.absolute)
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_parse_back() {
        let a = SessionToken::generate();
        let b = SessionToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), TOKEN_LEN);
        assert_eq!(SessionToken::parse(a.as_str()), Some(a.clone()));
        assert_ne!(a.hash(), b.hash());
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn hostile_cookie_values_are_refused() {
        for bad in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}=", "a".repeat(42)),
            "é",
        ] {
            assert!(SessionToken::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn hash_hex_roundtrip() {
        let h = SessionToken::generate().hash();
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(TokenHash::from_hex("zz"), None);
    }

    #[test]
    fn session_ids_are_hex_both_ways() {
        let id = SessionId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(SessionId::parse(&text), Some(id));
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        for bad in ["", "zz", &text[..31], &format!("{text}0")] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn csrf_secrets_match_only_their_own_canonical_token() {
        let s = CsrfSecret::generate();
        let token = s.form_token();
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(s.matches(&token));
        assert!(!CsrfSecret::generate().matches(&token));
        // Same length, one character off; padded; truncated; non-canonical
        // trailing bits (the 43rd character carries 2 unused bits).
        let mut off = token.clone().into_bytes();
        off[0] = if off[0] == b'A' { b'B' } else { b'A' };
        let last = token.as_bytes()[42];
        let alt = if last == b'B' { 'C' } else { 'B' };
        for bad in [
            String::from_utf8(off).unwrap(),
            format!("{token}="),
            token[..42].to_owned(),
            format!("{}{alt}", &token[..42]),
        ] {
            if CsrfSecret::from_form_token(&bad) == Some(s) {
                panic!("{bad:?} decodes to the secret");
            }
            assert!(!s.matches(&bad), "{bad:?}");
        }
        assert!(!format!("{s:?}").contains(&token));
    }

    #[test]
    fn idle_longer_than_absolute_is_capped() {
        let t = Timeouts::new(Duration::from_secs(100), Duration::from_secs(10));
        assert_eq!(t.idle(), Duration::from_secs(10));
    }

    #[test]
    fn expiry_is_never_early_and_at_most_a_tenth_late() {
        let t = Timeouts::new(Duration::from_secs(30 * 60), Duration::from_secs(8 * 3600));
        let exp = t.expires_at(0, 1000);
        let idle = ms(t.idle());
        assert!(exp >= 1000 + idle);
        assert!(exp <= 1000 + idle + idle / 10);
        // absolute rules at the end of the session's life
        assert_eq!(t.expires_at(0, 8 * 3600 * 1000 - 5), 8 * 3600 * 1000);
        // short timeouts: at most 1 s late
        let t = Timeouts::new(Duration::from_secs(2), Duration::from_secs(60));
        assert!(t.expires_at(0, 0) <= 3000 && t.expires_at(0, 0) >= 2000);
    }
}
