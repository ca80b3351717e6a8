//! Queued mail sealed at rest: its bodies carry one-time links, so a copy
//! of the database (a backup, a replica) must not hand out live ones.
//! ChaCha20-Poly1305 under a key derived from the server secret, a random
//! nonce per row, and the row's id and recipient as associated data (a
//! sealed body moved to another row or address no longer opens).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const NONCE_LEN: usize = 12;

/// The queue's cipher, keyed from the server secret.
pub struct Seal(ChaCha20Poly1305);

impl Seal {
    /// Key = HMAC-SHA256(secret, "latchkey mail queue v1"): a key of its
    /// own, so no other use of the secret can open the queue.
    pub fn from_secret(secret: &[u8]) -> Seal {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(b"latchkey mail queue v1");
        let key = mac.finalize().into_bytes();
        Seal(ChaCha20Poly1305::new(&key))
    }

    /// `nonce || ciphertext+tag`. `None` only past the cipher's size limit
    /// (256 GiB), far beyond any mail.
    pub fn seal(&self, id: &str, recipient: &str, plain: &[u8]) -> Option<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = associated(id, recipient);
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// The plain body, or `None` if it was sealed under another secret,
    /// for another row, or altered.
    pub fn open(&self, id: &str, recipient: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let aad = associated(id, recipient);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .ok()
    }
}

/// Id and recipient, length-prefixed so no two pairs run together alike.
fn associated(id: &str, recipient: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + id.len() + recipient.len());
    for part in [id, recipient] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_what_it_sealed_for_that_row() {
        let seal = Seal::from_secret(&[7; 32]);
        let sealed = seal.seal("row1", "a@example.com", b"the link").unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"the link"));
        assert_eq!(
            seal.open("row1", "a@example.com", &sealed).unwrap(),
            b"the link"
        );
        assert!(seal.open("row2", "a@example.com", &sealed).is_none());
        assert!(seal.open("row1", "b@example.com", &sealed).is_none());
        assert!(Seal::from_secret(&[8; 32])
            .open("row1", "a@example.com", &sealed)
            .is_none());
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(seal.open("row1", "a@example.com", &altered).is_none());
        assert!(seal.open("row1", "a@example.com", &sealed[..5]).is_none());
        // A fresh nonce each time: the same body never seals alike.
        assert_ne!(
            sealed,
            seal.seal("row1", "a@example.com", b"the link").unwrap()
        );
    }
}
