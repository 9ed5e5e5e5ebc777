//! Crypto layer: bcrypt hashing and verification, on the blocking pool behind a semaphore
//! sized to the cores so that a login flood cannot take every thread. Verifying a hash whose
//! cost is above the configured one (an imported hash, or one from an older authd) takes the
//! one permit of a separate pool instead, so such hashes queue among themselves and never
//! delay anyone else's login.

use std::sync::Arc;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::{OnceCell, Semaphore};

use super::bcrypt;
use crate::blocking::blocking;
use crate::domain::validate::PASSWORD_MAX_BYTES;
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;

/// The highest cost `import-users` accepts, whatever `password.bcrypt_cost` is: one
/// verification at cost 14 is about 0.6 s of one core (cost 16, 2.4 s), and every step
/// doubles it. A higher `password.bcrypt_cost` raises the bound to itself.
pub const IMPORT_COST_FLOOR: u32 = 14;

/// The highest bcrypt cost `import-users` accepts when hashes are made at `configured`:
/// `max(configured, IMPORT_COST_FLOOR)`.
pub fn import_max_cost(configured: u32) -> u32 {
    configured.max(IMPORT_COST_FLOOR)
}

/// A semaphore with its gauges and counter (`authd_bcrypt_*{pool}`).
struct Pool {
    permits: Arc<Semaphore>,
    in_use: IntGauge,
    waiting: IntGauge,
    operations: IntCounter,
}

impl Pool {
    fn new(permits: usize, name: &str, metrics: &Metrics) -> Self {
        Pool {
            permits: Arc::new(Semaphore::new(permits)),
            in_use: metrics.bcrypt_in_use.with_label_values(&[name]),
            waiting: metrics.bcrypt_waiting.with_label_values(&[name]),
            operations: metrics.bcrypt_operations.with_label_values(&[name]),
        }
    }

    /// Runs `f` on the blocking pool under one permit. The permit and the in-use gauge go
    /// with the work onto its thread: released the moment `f` returns there, and held until
    /// then even when the caller goes away (a client hanging up mid-login drops this task),
    /// so that at most `permits` hashes ever run at once; a caller that goes away while
    /// still waiting for a permit never runs `f`. The gauges are kept by guards, so a caller that
    /// goes away while waiting leaves them right.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
        let waiting = GaugeGuard::inc(&self.waiting);
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| AppError::Internal("password hasher closed".into()))?;
        drop(waiting);
        let in_use = GaugeGuard::inc(&self.in_use);
        self.operations.inc();
        blocking(move || {
            let _held = (permit, in_use);
            f()
        })
        .await
    }
}

/// Increments a gauge now and decrements it when dropped.
struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn inc(gauge: &IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct Passwords {
    cost: u32,
    /// Hashing, and verifying hashes at or below `cost`: one permit per core.
    shared: Arc<Pool>,
    /// Verifying hashes above `cost`: one permit, so at most one core is spent on them and a
    /// client guessing against such an account only delays others guessing against such
    /// accounts.
    costly: Arc<Pool>,
    /// A hash of a random password, verified against when the email is unknown so that an
    /// unknown email costs the same bcrypt work as a wrong password.
    dummy: OnceCell<String>,
}

impl Passwords {
    /// Hashes at `cost`; the pools report to `metrics`.
    pub fn new(cost: u32, metrics: &Metrics) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Passwords {
            cost,
            shared: Arc::new(Pool::new(cores, "shared", metrics)),
            costly: Arc::new(Pool::new(1, "costly", metrics)),
            dummy: OnceCell::new(),
        }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
        self.shared.run(f).await
    }

    /// The pool that verifies `hash`: `costly` when its cost is above the configured one.
    fn pool_for(&self, hash: &str) -> &Pool {
        if bcrypt_cost(hash).is_some_and(|c| c > self.cost) {
            &self.costly
        } else {
            &self.shared
        }
    }

    /// Hashes a normalised password (`$2b$` at the configured cost, `crypto::bcrypt`). Over
    /// 72 bytes or holding NUL is refused here, so nothing is ever truncated.
    pub async fn hash(&self, password: String) -> AppResult<String> {
        if !distinct_bcrypt_input(&password) {
            return Err(AppError::Internal(
                "a password over 72 bytes or holding NUL reached the hasher".into(),
            ));
        }
        let cost = self.cost;
        self.run(move || bcrypt::hash(password.as_bytes(), cost))
            .await?
            .map_err(|e| AppError::Internal(format!("bcrypt: {e}")))
    }

    /// True when `password` matches `hash`. A password over 72 bytes or holding NUL never
    /// matches (bcrypt would see it as a shorter one), but still costs one verification
    /// against `hash` itself, so its cost cannot tell it apart. A hash whose cost is above
    /// the configured one is verified under the one `costly` permit, never a shared one.
    pub async fn verify(&self, password: String, hash: String) -> AppResult<bool> {
        let distinct = distinct_bcrypt_input(&password);
        let matched = self
            .pool_for(&hash)
            .run(move || bcrypt::verify(password.as_bytes(), &hash))
            .await?;
        Ok(matched && distinct)
    }

    /// Spends one verification's worth of work, for an unknown email.
    pub async fn verify_dummy(&self) -> AppResult<()> {
        let hash = self.dummy_hash().await?.to_string();
        self.run(move || {
            let _ = bcrypt::verify(b"not-the-password", &hash);
        })
        .await
    }

    /// The dummy hash, computed once (in the background at start-up, see `warm_up`).
    async fn dummy_hash(&self) -> AppResult<&str> {
        let cost = self.cost;
        self.dummy
            .get_or_try_init(|| async move {
                let random: [u8; 16] = rand::random();
                blocking(move || bcrypt::hash(&random, cost))
                    .await?
                    .map_err(|e| AppError::Internal(format!("bcrypt: {e}")))
            })
            .await
            .map(String::as_str)
    }

    /// Computes the dummy hash ahead of the first login.
    pub async fn warm_up(&self) {
        let _ = self.dummy_hash().await;
    }

    /// True when `hash` is not a bcrypt hash at the configured cost (so a successful login
    /// should replace it: a raised `password.bcrypt_cost`, or an imported hash).
    pub fn needs_rehash(&self, hash: &str) -> bool {
        bcrypt_cost(hash) != Some(self.cost)
    }
}

/// The cost of a well-formed bcrypt hash, or `None` for anything else.
///
/// Well-formed: `$2a$`, `$2b$` or `$2y$` (the variants `crypto::bcrypt` verifies alike on a
/// UTF-8 password; `$2x$` marks hashes made by a buggy implementation and is refused), a
/// two-digit cost from 4 to 31, `$`, then 53 characters of bcrypt's base64: a 22-character
/// salt that decodes to exactly 16 bytes and a 31-character checksum that decodes to exactly
/// 23 bytes, both canonical (unused trailing bits zero; libxcrypt would re-encode a
/// non-canonical salt, so such a hash could never match). 60 characters in all.
pub fn bcrypt_cost(hash: &str) -> Option<u32> {
    use base64::Engine;
    let rest = hash
        .strip_prefix("$2a$")
        .or_else(|| hash.strip_prefix("$2b$"))
        .or_else(|| hash.strip_prefix("$2y$"))?;
    let (cost, rest) = (rest.get(..2)?, rest.get(2..)?);
    if !cost.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let cost: u32 = cost.parse().ok()?;
    let body = rest.strip_prefix('$')?;
    if !(4..=31).contains(&cost) || body.len() != 53 || !body.is_ascii() {
        return None;
    }
    let (salt, checksum) = body.split_at(22);
    let salt_ok = bcrypt::BASE_64.decode(salt).is_ok_and(|b| b.len() == 16);
    let checksum_ok = bcrypt::BASE_64
        .decode(checksum)
        .is_ok_and(|b| b.len() == 23);
    (salt_ok && checksum_ok).then_some(cost)
}

/// bcrypt's key is a password's bytes, then one NUL, cut to 72 bytes: only a password of at
/// most 72 bytes without NUL is a key no other password shares.
fn distinct_bcrypt_input(password: &str) -> bool {
    password.len() <= PASSWORD_MAX_BYTES && !password.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let p = Passwords::new(4, &Metrics::new());
        let h = p.hash("Secret-123".into()).await.unwrap();
        assert!(h.starts_with("$2b$04$"));
        assert!(p.verify("Secret-123".into(), h.clone()).await.unwrap());
        assert!(!p.verify("Secret-124".into(), h.clone()).await.unwrap());
        let long = format!("Secret-123{}", "x".repeat(70));
        assert!(!p.verify(long, h).await.unwrap());
        let p72 = format!("Aa1!{}", "x".repeat(68));
        let h72 = p.hash(p72.clone()).await.unwrap();
        assert!(p.verify(p72.clone(), h72.clone()).await.unwrap());
        assert!(!p.verify(format!("{p72}y"), h72).await.unwrap());
        let p71 = format!("Aa1!{}", "x".repeat(67));
        let h71 = p.hash(p71.clone()).await.unwrap();
        assert!(p.verify(p71.clone(), h71.clone()).await.unwrap());
        assert!(!p.verify(format!("{p71}\0"), h71).await.unwrap());
        assert!(p.hash(format!("{p71}\0")).await.is_err());
        p.verify_dummy().await.unwrap();
    }

    #[tokio::test]
    async fn costlier_hashes_are_verified_on_their_own_single_permit() {
        let metrics = Metrics::new();
        let p = Arc::new(Passwords::new(4, &metrics));
        let costly = bcrypt::hash(b"Secret-123", 6).unwrap();
        let cheap = bcrypt::hash(b"Secret-123", 4).unwrap();
        let checks: Vec<_> = (0..4)
            .map(|i| {
                let (p, h) = (p.clone(), if i % 2 == 0 { &costly } else { &cheap }.clone());
                tokio::spawn(async move { p.verify("Secret-123".into(), h).await.unwrap() })
            })
            .collect();
        for c in checks {
            assert!(c.await.unwrap());
        }
        let ops = |pool| metrics.bcrypt_operations.with_label_values(&[pool]).get();
        assert_eq!((ops("costly"), ops("shared")), (2, 2));
        assert_eq!(p.costly.permits.available_permits(), 1);
        assert_eq!(import_max_cost(10), 14);
        assert_eq!(import_max_cost(16), 16);
    }

    /// A login whose client goes away while its hash runs keeps the permit until the hash
    /// is done: otherwise clients that hang up at once would run any number of hashes at
    /// once, past the one-per-core bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_goes_away_keeps_its_permit_until_its_hash_is_done() {
        let metrics = Metrics::new();
        let p = Arc::new(Passwords::new(12, &metrics));
        let hash = bcrypt::hash(b"Secret-123", 12).unwrap();
        let all = p.shared.permits.available_permits();
        let in_use = metrics.bcrypt_in_use.with_label_values(&["shared"]);
        let task = tokio::spawn({
            let p = p.clone();
            async move { p.verify("Secret-123".into(), hash).await }
        });
        while in_use.get() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(p.shared.permits.available_permits(), all - 1);
        assert_eq!(in_use.get(), 1, "the hash still runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while p.shared.permits.available_permits() < all {
            assert!(
                std::time::Instant::now() < deadline,
                "the permit never came back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(in_use.get(), 0);
    }

    #[test]
    fn bcrypt_costs_of_well_formed_hashes_only() {
        let body = "EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            assert_eq!(bcrypt_cost(&format!("{prefix}04${body}")), Some(4));
            assert_eq!(bcrypt_cost(&format!("{prefix}31${body}")), Some(31));
        }
        let hash = bcrypt::hash(b"Secret-123", 5).unwrap();
        assert_eq!(bcrypt_cost(&hash), Some(5));
        for bad in [
            String::new(),
            format!("$2x$04${body}"),
            format!("$2$04${body}"),
            format!("$2b$03${body}"),
            format!("$2b$32${body}"),
            format!("$2b$4${body}"),
            format!("$2b$+4${body}"),
            format!("$2b$04${body}x"),
            format!("$2b$04${}", &body[1..]),
            format!("$2b$04${}", body.replace('E', "!")),
            // Non-canonical: the salt's last character carries bits beyond its 16 bytes.
            format!("$2b$04${}", body.replacen("HQO", "HQP", 1)),
            // ... and the checksum's last character beyond its 23 bytes.
            format!("$2b$04${}", body.replace("cie", "cif")),
            format!("$2b$04${}é", &body[..51]),
            "plaintext".to_string(),
        ] {
            assert_eq!(bcrypt_cost(&bad), None, "{bad}");
        }
        let p = Passwords::new(12, &Metrics::new());
        assert!(p.needs_rehash(&hash));
        assert!(!p.needs_rehash(&bcrypt::hash(b"x", 12).unwrap()));
    }
}
