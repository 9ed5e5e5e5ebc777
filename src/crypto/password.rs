//! Crypto layer: bcrypt hashing and verification, on the blocking pool behind a semaphore
//! sized to the cores so that a login flood cannot take every thread.

use std::sync::Arc;

use tokio::sync::{OnceCell, Semaphore};

use crate::blocking::blocking;
use crate::domain::validate::PASSWORD_MAX_BYTES;
use crate::error::{AppError, AppResult};

pub struct Passwords {
    cost: u32,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the email is unknown so that an
    /// unknown email costs the same bcrypt work as a wrong password.
    dummy: OnceCell<String>,
}

impl Passwords {
    pub fn new(cost: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Passwords {
            cost,
            permits: Arc::new(Semaphore::new(cores)),
            dummy: OnceCell::new(),
        }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AppError::Internal("password hasher closed".into()))?;
        blocking(f).await
    }

    /// Hashes a normalised password. Over 72 bytes is refused here, so nothing is ever
    /// truncated. (`bcrypt::non_truncating_hash` is not used: it counts the C terminator and
    /// so refuses exactly 72 bytes.)
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
    /// against `hash` itself, so its cost cannot tell it apart.
    pub async fn verify(&self, password: String, hash: String) -> AppResult<bool> {
        let distinct = distinct_bcrypt_input(&password);
        let matched = self
            .run(move || bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false))
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
                blocking(move || bcrypt::hash(random, cost))
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
/// Well-formed: `$2a$`, `$2b$` or `$2y$` (the variants the bcrypt crate verifies alike; `$2x$`
/// marks hashes made by a buggy implementation and is refused), a two-digit cost from 4 to 31,
/// `$`, then 53 characters of bcrypt's base64: a 22-character salt that decodes to exactly 16
/// bytes and a 31-character checksum that decodes to exactly 23 bytes, both canonical (unused
/// trailing bits zero, as the bcrypt crate requires when it verifies). 60 characters in all.
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
        let p = Passwords::new(4);
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

    #[test]
    fn bcrypt_costs_of_well_formed_hashes_only() {
        let body = "EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            assert_eq!(bcrypt_cost(&format!("{prefix}04${body}")), Some(4));
            assert_eq!(bcrypt_cost(&format!("{prefix}31${body}")), Some(31));
        }
        let hash = bcrypt::hash("Secret-123", 5).unwrap();
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
        let p = Passwords::new(12);
        assert!(p.needs_rehash(&hash));
        assert!(!p.needs_rehash(&bcrypt::hash("x", 12).unwrap()));
    }
}
