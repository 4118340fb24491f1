//! bcrypt hashing on a bounded pool of blocking threads.
//!
//! A bcrypt hash at cost 12 takes a quarter of a second of CPU. Run on a proxy worker thread
//! it would stall every connection that thread serves, so each hash runs on tokio's blocking
//! pool, and a semaphore sized to the CPU count keeps at most that many running at once:
//! a burst of logins queues (as cheap futures) instead of spawning hundreds of threads that
//! fight the proxy for the CPU.
//!
//! The hasher holds no runtime handle: every call spawns onto the runtime it is awaited on,
//! so one hasher serves the API runtime and Pingora's runtimes alike.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::domain::password::{MAX_PASSWORD_BYTES, normalize};
use crate::reply::Reply;

/// The lowest and highest costs bcrypt accepts.
pub const BCRYPT_COST_RANGE: std::ops::RangeInclusive<u32> = 4..=31;

/// Hashed by [`PasswordHasher::new`] to give unknown-user logins a hash to verify against.
const DUMMY_PASSWORD: &str = "portcullis-dummy-password-for-timing";

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The configured cost is outside [`BCRYPT_COST_RANGE`].
    #[error("bcrypt cost {0} is outside the supported range 4..=31")]
    InvalidCost(u32),
    /// bcrypt would silently ignore everything after the 72nd byte, so such a password is refused.
    #[error("password is longer than 72 bytes, which bcrypt cannot hash without truncating")]
    TooLong,
    /// The bcrypt library failed (never includes the password or the hash).
    #[error("bcrypt failed: {0}")]
    Bcrypt(String),
    /// The worker thread panicked or the runtime is shutting down.
    #[error("the password hashing worker stopped before finishing")]
    WorkerStopped,
}

/// How a password compared with a stored hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Neither the normalised form nor the form as typed matches.
    Mismatch,
    /// The normalised form (RFC 8265 OpaqueString, see [`normalize`]) matches.
    Match,
    /// Only the exact form as typed matches: the hash was made before passwords were
    /// normalised. The password is right; replace the hash with one of the normalised form.
    MatchAsTyped,
}

impl Verified {
    /// Whether the password is right, in either form.
    pub fn matches(self) -> bool {
        self != Self::Mismatch
    }
}

/// Hashes and verifies passwords with bcrypt without blocking async code.
///
/// Every password is compared and hashed in its RFC 8265 OpaqueString form
/// ([`normalize`]: non-ASCII spaces to U+0020, then NFC), so the same password typed
/// in another Unicode form is the same password.
///
/// Cheap to clone: clones share the same pool limit and dummy hash.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    cost: u32,
    workers: usize,
    permits: Arc<Semaphore>,
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.inner.cost)
            .field("workers", &self.inner.workers)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher at `cost` that runs at most one bcrypt per CPU core at a time.
    ///
    /// Computes one hash synchronously (the dummy for unknown users), so call it at start-up,
    /// not on a request path.
    pub fn new(cost: u32) -> Result<Self, PasswordError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_workers(cost, cores)
    }

    /// As [`PasswordHasher::new`] with an explicit limit on concurrent hashes (at least one).
    pub fn with_workers(cost: u32, workers: usize) -> Result<Self, PasswordError> {
        if !BCRYPT_COST_RANGE.contains(&cost) {
            return Err(PasswordError::InvalidCost(cost));
        }
        let dummy_hash =
            bcrypt::hash(DUMMY_PASSWORD, cost).map_err(|e| PasswordError::Bcrypt(e.to_string()))?;
        let workers = workers.max(1);
        Ok(Self {
            inner: Arc::new(Inner {
                cost,
                workers,
                permits: Arc::new(Semaphore::new(workers)),
                dummy_hash,
            }),
        })
    }

    /// The configured bcrypt cost.
    pub fn cost(&self) -> u32 {
        self.inner.cost
    }

    /// How many hashes may run at the same time.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// A new bcrypt hash of `password`'s normalised form at the configured cost, with a
    /// random salt.
    ///
    /// Refuses passwords over 72 bytes (normalised) rather than hashing a truncated copy.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = normalize(password).into_owned();
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let cost = self.inner.cost;
        self.run(move || bcrypt::hash(password, cost))
            .await?
            .map_err(|e| PasswordError::Bcrypt(e.to_string()))
    }

    /// A bcrypt hash of a random 256-bit secret that is thrown away at once: the hash of an
    /// account that has no usable password yet (created by an operator without one). No
    /// typed password matches it, and a guess costs what a guess at any account costs;
    /// the user sets a password through the reset mail.
    pub async fn hash_of_unknown_secret(&self) -> Result<String, PasswordError> {
        self.hash(&super::secrets::random_token()).await
    }

    /// Whether `password` matches the stored `hash`, in its normalised form first and, when
    /// that differs from the form as typed, as typed (a hash made before normalisation):
    /// see [`Verified`]. A wrong password in a non-normalised form costs two verifications.
    pub async fn check(&self, password: &str, hash: &str) -> Result<Verified, PasswordError> {
        let normalized = normalize(password);
        if self.verify_exact(&normalized, hash).await? {
            return Ok(Verified::Match);
        }
        if normalized != password && self.verify_exact(password, hash).await? {
            return Ok(Verified::MatchAsTyped);
        }
        Ok(Verified::Mismatch)
    }

    /// Whether `password` matches the stored `hash` in either form ([`Self::check`]).
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, PasswordError> {
        self.check(password, hash).await.map(Verified::matches)
    }

    /// Whether exactly these bytes match the stored `hash`.
    ///
    /// A malformed stored hash is a data problem, not the client's: it logs a warning (without
    /// the hash) and answers `false`. A password over 72 bytes answers `false` after the same
    /// work as a real check, so that a 73-byte password can never match through its 72-byte
    /// prefix and the answer time does not reveal whether the account exists.
    async fn verify_exact(&self, password: &str, hash: &str) -> Result<bool, PasswordError> {
        if password.len() > MAX_PASSWORD_BYTES {
            self.verify_dummy(password).await;
            return Ok(false);
        }
        let password = password.to_owned();
        let hash = hash.to_owned();
        match self.run(move || bcrypt::verify(password, &hash)).await? {
            Ok(matches) => Ok(matches),
            Err(e) => {
                tracing::warn!(error = %e, "stored password hash is malformed; treating as a mismatch");
                Ok(false)
            }
        }
    }

    /// Spends the time of a real [`Self::check`] of a wrong password and discards the
    /// result: one verification, two when the password is not in its normalised form.
    ///
    /// Login calls this when the email is unknown, so that unknown accounts and wrong
    /// passwords take about the same time.
    pub async fn verify_dummy(&self, password: &str) {
        if normalize(password) != password {
            self.verify_dummy_once(password).await;
        }
        self.verify_dummy_once(password).await;
    }

    async fn verify_dummy_once(&self, password: &str) {
        // bcrypt's time does not depend on the password's content; only its length is
        // bounded here so the call cannot fail.
        let password = if password.len() > MAX_PASSWORD_BYTES {
            DUMMY_PASSWORD.to_owned()
        } else {
            password.to_owned()
        };
        let hash = self.inner.dummy_hash.clone();
        if let Err(e) = self.run(move || bcrypt::verify(password, &hash)).await {
            tracing::warn!(error = %e, "dummy password verification did not run");
        }
    }

    /// Whether `hash` was made at a different cost (or is unreadable) and should be replaced
    /// after the next successful login.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        match hash.parse::<bcrypt::HashParts>() {
            Ok(parts) => parts.get_cost() != self.inner.cost,
            Err(_) => true,
        }
    }

    /// Runs `job` on the blocking pool once a permit is free.
    ///
    /// If the caller gives up while waiting, no work starts; once started, the job finishes
    /// and releases its permit even if nobody awaits the result.
    async fn run<T, F>(&self, job: F) -> Result<T, PasswordError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::WorkerStopped)?;
        // The caller's blocking pool, not the backend runtime: no socket is touched here.
        tokio::task::spawn_blocking(move || {
            let result = job();
            drop(permit);
            result
        })
        .await
        .map_err(|_| PasswordError::WorkerStopped)
    }
}

/// A hashing failure is a bug: 500, logged.
impl From<PasswordError> for Reply {
    fn from(e: PasswordError) -> Self {
        Reply::internal("password hashing", &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::with_workers(4, 2).unwrap()
    }

    #[tokio::test]
    async fn verifies_the_right_password_only() {
        let h = hasher();
        let hash = h.hash("SecurePass123!").await.unwrap();
        assert!(hash.starts_with("$2b$04$"), "{hash}");
        assert!(h.verify("SecurePass123!", &hash).await.unwrap());
        assert!(!h.verify("SecurePass123?", &hash).await.unwrap());
        assert!(!h.verify("", &hash).await.unwrap());
    }

    #[tokio::test]
    async fn a_password_in_another_unicode_form_is_the_same_password() {
        let h = hasher();
        let (nfc, nfd) = ("Caf\u{e9}-Secure1!", "Cafe\u{301}-Secure1!");
        for (set, typed) in [(nfc, nfd), (nfd, nfc), (nfc, nfc), (nfd, nfd)] {
            let hash = h.hash(set).await.unwrap();
            assert_eq!(h.check(typed, &hash).await.unwrap(), Verified::Match);
        }
        // A hash of the raw NFD bytes, made before normalisation: right only as typed.
        let legacy = bcrypt::hash(nfd, 4).unwrap();
        assert_eq!(h.check(nfd, &legacy).await.unwrap(), Verified::MatchAsTyped);
        assert_eq!(h.check(nfc, &legacy).await.unwrap(), Verified::Mismatch);
        assert_eq!(
            h.check("Cafe\u{301}-Secure2!", &legacy).await.unwrap(),
            Verified::Mismatch
        );
    }

    #[tokio::test]
    async fn same_password_hashes_differently_each_time() {
        let h = hasher();
        let a = h.hash("SecurePass123!").await.unwrap();
        let b = h.hash("SecurePass123!").await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn malformed_stored_hash_is_a_mismatch_not_an_error() {
        let h = hasher();
        assert!(!h.verify("SecurePass123!", "not a hash").await.unwrap());
        assert!(!h.verify("SecurePass123!", "").await.unwrap());
        assert!(
            !h.verify("SecurePass123!", "$2b$04$ЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖ")
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn passwords_over_72_bytes_are_never_hashed_nor_accepted() {
        let h = hasher();
        let long = "a".repeat(73);
        assert!(matches!(h.hash(&long).await, Err(PasswordError::TooLong)));
        // A hash made by plain bcrypt of the 72-byte prefix: plain bcrypt would accept `long`.
        let prefix_hash = bcrypt::hash("a".repeat(72), 4).unwrap();
        assert!(bcrypt::verify(&long, &prefix_hash).unwrap());
        assert!(!h.verify(&long, &prefix_hash).await.unwrap());
        assert!(h.verify(&"a".repeat(72), &prefix_hash).await.unwrap());
    }

    #[tokio::test]
    async fn needs_rehash_when_the_cost_changed() {
        let h4 = hasher();
        let h5 = PasswordHasher::with_workers(5, 1).unwrap();
        let hash4 = h4.hash("SecurePass123!").await.unwrap();
        assert!(!h4.needs_rehash(&hash4));
        assert!(h5.needs_rehash(&hash4));
        assert!(h4.needs_rehash("garbage"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_jobs_run_at_once_than_there_are_workers() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        let h = PasswordHasher::with_workers(4, 2).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut jobs = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (h, running, peak) = (h.clone(), Arc::clone(&running), Arc::clone(&peak));
            jobs.spawn(async move {
                h.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .unwrap();
            });
        }
        while let Some(done) = jobs.join_next().await {
            done.unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&peak),
            "{peak} jobs ran at once with 2 workers"
        );
    }

    #[tokio::test]
    async fn dummy_verification_completes() {
        let h = hasher();
        h.verify_dummy("whatever").await;
        h.verify_dummy(&"x".repeat(500)).await;
    }

    #[test]
    fn refuses_costs_bcrypt_does_not_support() {
        assert!(matches!(
            PasswordHasher::new(3),
            Err(PasswordError::InvalidCost(3))
        ));
        assert!(matches!(
            PasswordHasher::new(32),
            Err(PasswordError::InvalidCost(32))
        ));
        assert_eq!(PasswordHasher::with_workers(4, 0).unwrap().workers(), 1);
    }

    #[test]
    fn works_from_runtimes_other_than_the_one_it_was_built_near() {
        let h = hasher();
        let rt_a = tokio::runtime::Runtime::new().unwrap();
        let hash = rt_a.block_on(h.hash("SecurePass123!")).unwrap();
        drop(rt_a);
        let rt_b = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt_b.block_on(h.verify("SecurePass123!", &hash)).unwrap());
    }

    #[test]
    fn debug_shows_no_hash() {
        let h = hasher();
        let text = format!("{h:?}");
        assert!(!text.contains("$2"), "{text}");
        assert!(text.contains("cost: 4"));
    }
}
