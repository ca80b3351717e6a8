//! TOTP codes (totp-rs: SHA-1, 6 digits, 30 s steps) and the sealing of
//! their secrets at rest.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

const STEP_SECS: u64 = 30;
const DIGITS: usize = 6;
/// 160 bits, RFC 4226's recommendation.
pub(crate) const SECRET_BYTES: usize = 20;

/// A purpose-bound key derived from the server secret.
pub(crate) fn derive_key(server_key: &[u8], purpose: &str) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(server_key).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

fn cipher(server_key: &[u8]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(&derive_key(server_key, "latchkey totp v1")))
}

/// `secret` sealed for `user_id` (the user is the associated data: a sealed
/// secret copied to another user's row does not open).
pub(crate) fn seal(server_key: &[u8], user_id: &str, secret: &[u8]) -> String {
    let nonce: [u8; 12] = crate::session::random_bytes();
    let sealed = cipher(server_key)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: user_id.as_bytes(),
            },
        )
        .expect("sealing in memory cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
}

/// The secret `seal` made, if it opens with this key and user.
pub(crate) fn open(server_key: &[u8], user_id: &str, sealed: &str) -> Option<Vec<u8>> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sealed)
        .ok()?;
    if raw.len() < 12 {
        return None;
    }
    let (nonce, body) = raw.split_at(12);
    cipher(server_key)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: user_id.as_bytes(),
            },
        )
        .ok()
}

fn totp(secret: &[u8], account: &str, issuer: &str) -> TOTP {
    // new_unchecked: the secret is ours (160 random bits) and names are
    // checked by the caller; `new` refuses a ':' in the account name only.
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECS,
        secret.to_vec(),
        Some(issuer.to_owned()),
        account.to_owned(),
    )
}

/// The time step whose code `code` is, within one step either side of
/// `now_secs`; every candidate is compared, in constant time.
pub(crate) fn matching_step(secret: &[u8], code: &str, now_secs: u64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret, "x", "x");
    let step = now_secs / STEP_SECS;
    let mut found = None;
    for s in [step.saturating_sub(1), step, step + 1] {
        let expected = t.generate(s * STEP_SECS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(s as i64);
        }
    }
    found
}

/// The base32 secret and the `otpauth://` URL an authenticator app scans.
pub(crate) fn enrolment(secret: &[u8], account: &str, issuer: &str) -> (String, String) {
    let t = totp(secret, account, issuer);
    (t.get_secret_base32(), t.get_url())
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The current code for `secret` (tests and tools; never sent anywhere).
pub fn code_at(secret_base32: &str, unix_secs: u64) -> Option<String> {
    let secret = totp_rs::Secret::Encoded(secret_base32.to_owned())
        .to_bytes()
        .ok()?;
    Some(totp(&secret, "x", "x").generate(unix_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_vector_and_one_step_either_side() {
        // RFC 6238 appendix B, SHA-1 key "12345678901234567890", T = 59 s: 94287082 (8 digits).
        let secret = b"12345678901234567890";
        let eight =
            TOTP::new_unchecked(Algorithm::SHA1, 8, 1, 30, secret.to_vec(), None, "x".into());
        assert_eq!(eight.generate(59), "94287082");
        let now = 1_111_111_109;
        let code = totp(secret, "x", "x").generate(now);
        assert_eq!(matching_step(secret, &code, now), Some((now / 30) as i64));
        assert!(
            matching_step(secret, &code, now + 30).is_some(),
            "one step late"
        );
        assert!(
            matching_step(secret, &code, now - 30).is_some(),
            "one step early"
        );
        assert_eq!(
            matching_step(secret, &code, now + 90),
            None,
            "three steps late"
        );
        for bad in ["", "12345", "1234567", "abcdef", "12 456"] {
            assert_eq!(matching_step(secret, bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key() {
        let key = [7u8; 32];
        let sealed = seal(&key, "u1", b"secret bytes here!!!");
        assert_eq!(
            open(&key, "u1", &sealed).as_deref(),
            Some(&b"secret bytes here!!!"[..])
        );
        assert_eq!(open(&key, "u2", &sealed), None, "bound to its user");
        assert_eq!(open(&[8u8; 32], "u1", &sealed), None, "bound to the key");
        assert_ne!(
            seal(&key, "u1", b"x"),
            seal(&key, "u1", b"x"),
            "fresh nonce"
        );
    }

    #[test]
    fn enrolment_url_names_the_issuer_and_account() {
        let (b32, url) = enrolment(&[1u8; 20], "alice", "latchkey");
        assert!(url.starts_with("otpauth://totp/latchkey:alice?"), "{url}");
        assert!(url.contains(&format!("secret={b32}")), "{url}");
        assert_eq!(code_at(&b32, 59).unwrap().len(), 6);
    }
}
