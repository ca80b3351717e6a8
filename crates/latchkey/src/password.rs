//! Argon2id hashing on a bounded blocking pool, and the NIST SP 800-63B
//! password policy.

use std::sync::Arc;

use std::cell::RefCell;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokio::sync::OnceCell;

use crate::error::Error;
pub use crate::hash_pool::HashSlot;

/// How many requests may wait for a hash by default; past that, new ones
/// are refused at once (503) instead of queueing without bound.
pub const DEFAULT_MAX_PENDING: usize = 256;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl HashParams {
    /// OWASP's minimum for Argon2id: 19 MiB, t=2, p=1.
    pub const OWASP: HashParams = HashParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    fn argon2(&self) -> Argon2<'static> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .expect("valid Argon2 parameters");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }
}

impl Default for HashParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Hashes and verifies passwords without ever blocking the async executor:
/// each hash runs on a dedicated pool of `concurrency` threads (one per core
/// by default) at the lowest scheduling priority, so a login storm queues
/// instead of thrashing memory, and signed-in requests keep their CPU.
/// At most [`DEFAULT_MAX_PENDING`] (or [`PasswordHasher::with_max_pending`])
/// requests wait at once; more get [`Error::Overloaded`].
#[derive(Clone)]
pub struct PasswordHasher {
    params: HashParams,
    pool: Arc<crate::hash_pool::HashPool>,
    dummy: Arc<OnceCell<String>>,
}

impl PasswordHasher {
    /// A hasher with `params`, running at most `concurrency` hashes at once.
    pub fn new(params: HashParams, concurrency: usize) -> Self {
        Self::with_max_pending(params, concurrency, DEFAULT_MAX_PENDING)
    }

    /// Like [`PasswordHasher::new`], with at most `max_pending` requests
    /// waiting for (or running) a hash.
    pub fn with_max_pending(params: HashParams, concurrency: usize, max_pending: usize) -> Self {
        Self {
            params,
            pool: Arc::new(crate::hash_pool::HashPool::new(concurrency, max_pending)),
            dummy: Default::default(),
        }
    }

    /// A place in the hashing queue, taken before anything else is done for
    /// a login, so a full queue answers at once and counts no attempt.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the queue is full.
    pub fn slot(&self) -> Result<HashSlot, Error> {
        self.pool.slot().ok_or(Error::Overloaded)
    }

    /// OWASP parameters, one hash per core.
    pub fn with_defaults() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(HashParams::OWASP, cores)
    }

    /// The parameters new hashes get.
    pub fn params(&self) -> HashParams {
        self.params
    }

    async fn blocking<T: Send + 'static>(
        &self,
        slot: HashSlot,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.pool
            .run(slot, job)
            .await
            .ok_or_else(|| Error::Hash("hashing thread unavailable".into()))
    }

    /// A PHC-format Argon2id hash of `password` with a fresh salt.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the queue is full; [`Error::Hash`] if
    /// hashing fails.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        self.hash_in(self.slot()?, password).await
    }

    /// [`PasswordHasher::hash`] in a slot taken earlier.
    ///
    /// # Errors
    /// [`Error::Hash`] if hashing fails.
    pub async fn hash_in(&self, slot: HashSlot, password: &str) -> Result<String, Error> {
        let password = SecretString::from(password);
        let params = self.params;
        self.blocking(slot, move || {
            let password = password.expose_secret();
            let fail = |e: &dyn std::fmt::Display| Error::Hash(e.to_string());
            let salt_bytes = crate::session::random_bytes::<16>();
            let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| fail(&e))?;
            let argon = params.argon2();
            let mut out = [0u8; 32];
            argon2_into(&argon, password.as_bytes(), &salt_bytes, &mut out)
                .map_err(|e| fail(&e))?;
            let phc = PasswordHash {
                algorithm: argon2::ARGON2ID_IDENT,
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(argon.params()).map_err(|e| fail(&e))?,
                salt: Some(salt.as_salt()),
                hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
            };
            Ok(phc.to_string())
        })
        .await?
    }

    /// Whether `password` matches `hash`. With `None` (unknown user) it
    /// verifies against a fixed dummy hash, so both cases cost the same.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the queue is full; [`Error::Hash`] if the
    /// hashing threads are gone.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, Error> {
        self.verify_in(self.slot()?, password, hash).await
    }

    /// [`PasswordHasher::verify`] in a slot taken earlier.
    ///
    /// # Errors
    /// [`Error::Hash`] if the hashing threads are gone.
    pub async fn verify_in(
        &self,
        slot: HashSlot,
        password: &str,
        hash: Option<&str>,
    ) -> Result<bool, Error> {
        let (hash, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (self.dummy_hash().await?, false),
        };
        let password = SecretString::from(password);
        let ok = self
            .blocking(slot, move || {
                verify_phc(password.expose_secret().as_bytes(), &hash).unwrap_or(false)
            })
            .await?;
        Ok(ok && real)
    }

    async fn dummy_hash(&self) -> Result<String, Error> {
        self.dummy
            .get_or_try_init(|| async {
                let random = hex::encode(crate::session::random_bytes::<16>());
                // Made once, outside the bounded queue: it is no client's job.
                let slot = HashSlot::unbounded();
                self.hash_in(slot, &random).await
            })
            .await
            .cloned()
    }

    /// Whether `hash` was made with weaker parameters than ours (or another
    /// algorithm), so it should be replaced at the next successful login.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return true;
        };
        let Ok(p) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm.as_str() != "argon2id"
            || p.m_cost() < self.params.memory_kib
            || p.t_cost() < self.params.iterations
            || p.p_cost() < self.params.parallelism
    }
}

thread_local! {
    /// Each hashing thread's Argon2 memory, kept between hashes: a fresh
    /// 19 MiB allocation per hash spent a quarter of the CPU on page faults
    /// (perf, login storm). It holds derived blocks, never the password.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Argon2 of `password` into `out`, in this thread's reused memory.
fn argon2_into(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    BLOCKS.with(|cell| {
        let mut blocks = cell.borrow_mut();
        let need = argon.params().block_count();
        if blocks.len() < need {
            blocks.resize(need, Block::default());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut blocks[..need])
    })
}

/// Checks `password` against a PHC string, with the algorithm, version and
/// parameters the hash was made with; `None` when the string is malformed.
fn verify_phc(password: &[u8], phc: &str) -> Option<bool> {
    let parsed = PasswordHash::new(phc).ok()?;
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = parsed
        .version
        .map_or(Some(Version::V0x13), |v| Version::try_from(v).ok())?;
    let params = Params::try_from(&parsed).ok()?;
    let expected = parsed.hash?;
    let mut salt = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
    let mut out = vec![0u8; expected.len()];
    argon2_into(
        &Argon2::new(algorithm, version, params),
        password,
        salt,
        &mut out,
    )
    .ok()?;
    Some(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
}

/// NIST SP 800-63B rules for new passwords: a minimum length, a generous
/// maximum, no composition rules, and no guessable passwords.
///
/// The guessability check (zxcvbn, score 3 of 4 or better, with the username
/// and [`context`](Self::context) as words to avoid) needs the `zxcvbn` Cargo
/// feature, on by default. Without it the policy checks the length rules
/// only and `context` is unused.
#[derive(Clone, Debug)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values) accepted; default 15.
    pub min_chars: usize,
    /// Most characters accepted; default 1024. Longer is refused, never truncated.
    pub max_chars: usize,
    /// Words a password must not lean on besides the username.
    pub context: Vec<String>,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: 15,
            max_chars: 1024,
            context: vec!["latchkey".into()],
        }
    }
}

impl PasswordPolicy {
    /// `Ok` when `password` may be set for `username`; else the reason, in
    /// words a user can act on.
    pub fn check(&self, username: &str, password: &str) -> Result<(), String> {
        let chars = password.chars().count();
        if chars < self.min_chars {
            return Err(format!(
                "Password too short: use at least {} characters (a few unrelated words work well).",
                self.min_chars
            ));
        }
        if chars > self.max_chars {
            return Err(format!(
                "Password too long: use at most {} characters.",
                self.max_chars
            ));
        }
        #[cfg(feature = "zxcvbn")]
        self.check_guessable(username, password)?;
        #[cfg(not(feature = "zxcvbn"))]
        let _ = username;
        Ok(())
    }

    #[cfg(feature = "zxcvbn")]
    fn check_guessable(&self, username: &str, password: &str) -> Result<(), String> {
        let mut inputs: Vec<&str> = self.context.iter().map(String::as_str).collect();
        inputs.push(username);
        let estimate = zxcvbn::zxcvbn(password, &inputs);
        if u8::from(estimate.score()) < 3 {
            let why = estimate
                .feedback()
                .and_then(|f| f.warning())
                .map(|w| w.to_string())
                .unwrap_or_else(|| "This password is easy to guess.".into());
            return Err(format!(
                "Password too guessable: {why} Avoid names, common phrases and repeats; a few unrelated words work well."
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> PasswordHasher {
        PasswordHasher::new(
            HashParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            2,
        )
    }

    #[tokio::test]
    async fn hash_verifies_and_wrong_password_does_not() {
        let h = fast();
        let hash = h.hash("correct horse battery staple").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(h
            .verify("correct horse battery staple", Some(&hash))
            .await
            .unwrap());
        assert!(!h
            .verify("correct horse battery stapl", Some(&hash))
            .await
            .unwrap());
        assert!(!h.verify("anything", None).await.unwrap());
        assert!(!h.verify("x", Some("not a hash")).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_interoperate_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let h = fast();
        let ours = h.hash("interop password here").await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"interop password here", &parsed)
            .is_ok());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = Argon2::default()
            .hash_password(b"theirs", &salt)
            .unwrap()
            .to_string();
        assert!(h.verify("theirs", Some(&theirs)).await.unwrap());
        assert!(!h.verify("theirs!", Some(&theirs)).await.unwrap());
        // argon2i and argon2d hashes verify too (and need a rehash)
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        );
        let old = argon2i.hash_password(b"old", &salt).unwrap().to_string();
        assert!(h.verify("old", Some(&old)).await.unwrap());
        assert!(h.needs_rehash(&old));
    }

    #[tokio::test]
    async fn weaker_hashes_need_rehash() {
        let weak = fast().hash("pw").await.unwrap();
        let strong = PasswordHasher::new(HashParams::OWASP, 1);
        assert!(strong.needs_rehash(&weak));
        let good = strong.hash("pw").await.unwrap();
        assert!(!strong.needs_rehash(&good));
        assert!(strong.needs_rehash("$2b$12$bcrypt-like"));
    }

    #[test]
    #[cfg(feature = "zxcvbn")]
    fn policy_follows_nist() {
        let p = PasswordPolicy::default();
        assert!(p
            .check("alice", "short")
            .unwrap_err()
            .contains("at least 15"));
        assert!(p
            .check("alice", "passwordpassword")
            .unwrap_err()
            .contains("guessable"));
        assert!(
            p.check("alice", "alicealice123456").is_err(),
            "built on the username"
        );
        assert!(
            p.check("bob", "latchkeylatchkey1").is_err(),
            "built on the service name"
        );
        assert!(
            p.check("alice", "tangerine orbit kayak murmur").is_ok(),
            "spaces welcome"
        );
        assert!(
            p.check("alice", "ключ-замок-рыба-небо").is_ok(),
            "unicode welcome"
        );
        let long: String = "Zq9!vR3#mK7pL2@x".repeat(16);
        assert!(p.check("alice", &long).is_ok(), "256 characters accepted");
        assert!(p
            .check("alice", &"Zq9!vR3#mK7pL2@x".repeat(70))
            .unwrap_err()
            .contains("too long"));
    }
}
