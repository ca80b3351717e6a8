//! Recovery codes: 60 random bits each, shown once as `xxxx-xxxx-xxxx`,
//! kept as HMAC-SHA256 under a key derived from the server secret (a
//! database copy alone cannot test guesses against them).

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

/// Letters and digits without the look-alikes (`0`/`o`, `1`/`l`): 32 symbols, 5 bits each.
const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
const CHARS: usize = 12;

/// `n` fresh codes, as shown to the user.
pub(crate) fn generate(n: usize) -> Vec<String> {
    let mut rng = rand::rngs::OsRng;
    (0..n)
        .map(|_| {
            let raw: String = (0..CHARS)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect();
            format!("{}-{}-{}", &raw[..4], &raw[4..8], &raw[8..])
        })
        .collect()
}

/// The stored form of a code as a user typed it (case, dashes and spaces
/// ignored); `None` for text that cannot be a code.
pub(crate) fn hash(server_key: &[u8], typed: &str) -> Option<String> {
    if typed.len() > 64 {
        return None;
    }
    let norm: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if norm.len() != CHARS || !norm.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    let key = super::totp::derive_key(server_key, "latchkey recovery codes v1");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(norm.as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_distinct_and_hash_however_typed() {
        let codes = super::generate(10);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        let c = &codes[0];
        let h = super::hash(b"k", c).unwrap();
        assert_eq!(
            super::hash(b"k", &c.to_uppercase().replace('-', " ")),
            Some(h.clone())
        );
        assert_ne!(super::hash(b"other", c), Some(h));
        assert_eq!(super::hash(b"k", "short"), None);
        assert_eq!(
            super::hash(b"k", "0000-0000-0000"),
            None,
            "not in the alphabet"
        );
    }
}
