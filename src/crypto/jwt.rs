//! Crypto layer: access tokens. Signs and verifies JWTs with the one configured algorithm,
//! pins `alg`, checks `iss`, `aud`, `exp`, `nbf` and `iat` with the configured leeway, and
//! publishes the public key as a JWKS.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use parking_lot::RwLock;

use super::keys::{AccessKey, AccessKeyMaterial};

/// How many verified tokens are remembered (see `AccessTokens::verify`).
const VERIFIED_CACHE: usize = 16_384;

/// The `typ` header of authd's access tokens (RFC 9068).
pub const ACCESS_TYP: &str = "at+jwt";

/// Exactly the claims the contract names; no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: Audience,
    pub sub: String,
    pub sid: String,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// `aud`: authd issues a string; an array is also valid JWT and is accepted on verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    Invalid,
    Expired,
}

/// One loaded access key.
struct LoadedKey {
    kid: String,
    /// `None` for a key that only verifies (a retiring Ed25519 key has no private part).
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// Its public JWK (Ed25519 only).
    jwk: Option<serde_json::Value>,
    /// Unix seconds after which it verifies nothing and leaves the JWKS.
    verify_until: Option<i64>,
}

/// The access keys in use: the first signs, all verify (each until its `verify_until`).
/// Replaced whole when the key set changes; `epoch` tells cached verdicts of an older ring.
struct Ring {
    epoch: u64,
    keys: Vec<LoadedKey>,
}

impl Ring {
    fn key(&self, kid: &str) -> Option<&LoadedKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

/// A verified token remembered with the ring that verified it.
#[derive(Clone)]
struct Cached {
    claims: Arc<AccessClaims>,
    epoch: u64,
    verify_until: Option<i64>,
}

/// Access tokens: signs with the active key, verifies with whichever of authd's own keys the
/// token's `kid` names. The key set can be swapped at run time (`replace_keys`), atomically.
pub struct AccessTokens {
    algorithm: Algorithm,
    ring: RwLock<Arc<Ring>>,
    validation: Validation,
    leeway_secs: i64,
    /// Tokens whose signature and claims were verified, by their exact text. Only `exp` and
    /// the key set can change its verdict later: both are checked again on every hit (a
    /// verdict from an older key set is not used). Revocation of sessions is never cached
    /// (the caller reads the session from the store).
    verified: quick_cache::sync::Cache<String, Cached>,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
}

fn load_key(key: &AccessKey) -> LoadedKey {
    let (encoding, decoding, jwk) = match &key.material {
        AccessKeyMaterial::Ed25519(signing) => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let der = signing
                .to_pkcs8_der()
                .expect("Ed25519 key encodes as PKCS#8");
            let public = signing.verifying_key();
            (
                Some(EncodingKey::from_ed_der(der.as_bytes())),
                DecodingKey::from_ed_der(public.as_bytes()),
                Some(ed25519_jwk(&public, &key.kid)),
            )
        }
        AccessKeyMaterial::Ed25519Public(public) => (
            None,
            DecodingKey::from_ed_der(public.as_bytes()),
            Some(ed25519_jwk(public, &key.kid)),
        ),
        AccessKeyMaterial::Hmac(secret) => (
            Some(EncodingKey::from_secret(secret)),
            DecodingKey::from_secret(secret),
            None,
        ),
    };
    LoadedKey {
        kid: key.kid.clone(),
        encoding,
        decoding,
        jwk,
        verify_until: key.verify_until,
    }
}

fn ed25519_jwk(public: &ed25519_dalek::VerifyingKey, kid: &str) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "x": B64.encode(public.as_bytes()),
        "alg": "EdDSA", "use": "sig", "kid": kid,
    })
}

fn algorithm_of(material: &AccessKeyMaterial) -> Algorithm {
    match material {
        AccessKeyMaterial::Ed25519(_) | AccessKeyMaterial::Ed25519Public(_) => Algorithm::EdDSA,
        AccessKeyMaterial::Hmac(_) => Algorithm::HS256,
    }
}

impl AccessTokens {
    /// The access tokens `jwt` configures (issuer, audience, lifetime, leeway), with the one
    /// key `key`.
    pub fn configured(key: &AccessKeyMaterial, jwt: &crate::config::JwtSettings) -> Self {
        Self::new(key, &jwt.issuer, &jwt.audience, jwt.access_ttl, jwt.leeway)
    }

    /// Access tokens with the one key `key` (no rotation; tests and benchmarks).
    pub fn new(
        key: &AccessKeyMaterial,
        issuer: &str,
        audience: &str,
        ttl: Duration,
        leeway: Duration,
    ) -> Self {
        let algorithm = algorithm_of(key);
        let material = match key {
            AccessKeyMaterial::Ed25519(k) => AccessKeyMaterial::Ed25519(k.clone()),
            AccessKeyMaterial::Ed25519Public(k) => AccessKeyMaterial::Ed25519Public(*k),
            AccessKeyMaterial::Hmac(s) => AccessKeyMaterial::Hmac(s.clone()),
        };
        let one = AccessKey {
            kid: key.kid(),
            material,
            verify_until: None,
        };
        Self::with_keys(algorithm, &[one], issuer, audience, ttl, leeway)
    }

    /// Access tokens of `algorithm` with a key set: `keys[0]` signs (it must hold a private
    /// part), every key verifies until its `verify_until`. Keys of another algorithm are
    /// ignored.
    pub fn with_keys(
        algorithm: Algorithm,
        keys: &[AccessKey],
        issuer: &str,
        audience: &str,
        ttl: Duration,
        leeway: Duration,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.required_spec_claims = ["exp", "iss", "aud", "sub"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>();
        let tokens = AccessTokens {
            algorithm,
            ring: RwLock::new(Arc::new(Ring {
                epoch: 0,
                keys: Vec::new(),
            })),
            validation,
            leeway_secs: leeway.as_secs() as i64,
            verified: quick_cache::sync::Cache::new(VERIFIED_CACHE),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            ttl,
        };
        tokens.replace_keys(keys);
        tokens
    }

    /// Swaps in a new key set atomically (see `with_keys`): tokens signed after this use
    /// `keys[0]`, and no verdict reached with the old set is used again.
    pub fn replace_keys(&self, keys: &[AccessKey]) {
        let loaded: Vec<LoadedKey> = keys
            .iter()
            .filter(|k| algorithm_of(&k.material) == self.algorithm)
            .map(load_key)
            .collect();
        {
            // One writer at a time computes the next epoch from the current one, so two
            // concurrent swaps cannot publish the same epoch for different rings.
            let mut ring = self.ring.write();
            let epoch = ring.epoch + 1;
            *ring = Arc::new(Ring {
                epoch,
                keys: loaded,
            });
        }
        self.verified.clear();
    }

    fn ring(&self) -> Arc<Ring> {
        self.ring.read().clone()
    }

    /// The key id new tokens carry.
    pub fn signing_kid(&self) -> Option<String> {
        self.ring().keys.first().map(|k| k.kid.clone())
    }

    /// Signs an access token for a user's session; returns it with its claims.
    pub fn sign(&self, sub: &str, sid: &str, role: &str, now_secs: i64) -> (String, AccessClaims) {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
            sub: sub.to_string(),
            sid: sid.to_string(),
            role: role.to_string(),
            iat: now_secs,
            exp: now_secs + self.ttl.as_secs() as i64,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let ring = self.ring();
        let key = ring.keys.first().expect("the key set has a signing key");
        let encoding = key
            .encoding
            .as_ref()
            .expect("the signing key has its private part");
        let mut header = Header::new(self.algorithm);
        header.typ = Some(ACCESS_TYP.to_string());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, encoding)
            .expect("signing with a loaded key cannot fail");
        (token, claims)
    }

    /// Verifies signature, algorithm, type and claims. A token verified before is not
    /// verified again (Ed25519 verification dominates an authenticated request), but its
    /// expiry is, and so is its key (a verdict reached with an older key set is not used).
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Arc<AccessClaims>, VerifyError> {
        if token.len() > 8192 {
            return Err(VerifyError::Invalid);
        }
        let epoch = self.ring.read().epoch;
        if let Some(hit) = self.verified.get(token) {
            if hit.epoch == epoch {
                if hit.verify_until.is_some_and(|until| now_secs > until) {
                    return Err(VerifyError::Invalid);
                }
                if hit.claims.exp < now_secs - self.leeway_secs {
                    return Err(VerifyError::Expired);
                }
                return Ok(hit.claims);
            }
        }
        let (claims, verify_until) = self.verify_with_ring(token, now_secs)?;
        let claims = Arc::new(claims);
        // Remembered with the epoch read before verifying: if the ring changed meanwhile,
        // the entry is stale at once and the next presentation verifies again.
        self.verified.insert(
            token.to_string(),
            Cached {
                claims: claims.clone(),
                epoch,
                verify_until,
            },
        );
        Ok(claims)
    }

    /// Verifies `token` with the current ring; returns its claims and when its key stops
    /// verifying.
    fn verify_with_ring(
        &self,
        token: &str,
        now_secs: i64,
    ) -> Result<(AccessClaims, Option<i64>), VerifyError> {
        let ring = self.ring();
        self.verify_uncached(&ring, token, now_secs)
    }

    fn verify_uncached(
        &self,
        ring: &Ring,
        token: &str,
        now_secs: i64,
    ) -> Result<(AccessClaims, Option<i64>), VerifyError> {
        // RFC 7515 header rules first (crit, key-naming parameters, a foreign kid): nothing a
        // token's header names or embeds ever selects or supplies a key.
        super::jws_header::check(
            token.split('.').next().unwrap_or_default(),
            self.algorithm,
            |kid| ring.key(kid).is_some(),
        )
        .map_err(|_| VerifyError::Invalid)?;
        // The key is chosen by the token's `kid` among authd's own keys only: a kid that is
        // not ours (or no longer verifies) is invalid. A token without a kid is tried with
        // each of our live keys (a handful at most).
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Invalid)?;
        let live = |k: &&LoadedKey| k.verify_until.is_none_or(|until| now_secs <= until);
        let candidates: Vec<&LoadedKey> = match header.kid.as_deref() {
            Some(kid) => ring.key(kid).into_iter().filter(live).collect(),
            None => ring.keys.iter().filter(live).collect(),
        };
        let mut verdict = Err(VerifyError::Invalid);
        for key in candidates {
            match jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation) {
                Ok(data) => {
                    verdict = Ok((data, key.verify_until));
                    break;
                }
                // The signature verified; only the expiry failed.
                Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                    return Err(VerifyError::Expired)
                }
                Err(_) => {}
            }
        }
        let (data, verify_until) = verdict?;
        let typ_ok = match data.header.typ.as_deref() {
            None => true,
            Some(t) => t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case(ACCESS_TYP),
        };
        let claims = data.claims;
        if !typ_ok || claims.iat > now_secs + self.leeway_secs {
            return Err(VerifyError::Invalid);
        }
        Ok((claims, verify_until))
    }

    /// The JWKS document at `now_secs`: the public keys that verify access tokens (the
    /// active and the retiring Ed25519 keys); nothing for HS256.
    pub fn jwks(&self, now_secs: i64) -> serde_json::Value {
        let ring = self.ring();
        let keys: Vec<&serde_json::Value> = ring
            .keys
            .iter()
            .filter(|k| k.verify_until.is_none_or(|until| now_secs <= until))
            .filter_map(|k| k.jwk.as_ref())
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn ed() -> AccessTokens {
        AccessTokens::new(
            &AccessKeyMaterial::Ed25519(SigningKey::from_bytes(&[1; 32])),
            "authd",
            "authd",
            Duration::from_secs(900),
            Duration::ZERO,
        )
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn forge(header: &str, claims: &serde_json::Value, sig: &str) -> String {
        format!(
            "{}.{}.{}",
            B64.encode(header),
            B64.encode(claims.to_string()),
            sig
        )
    }

    #[test]
    fn round_trip_and_claims() {
        let t = ed();
        let (token, claims) = t.sign("u1", "s1", "user", now());
        assert_eq!(*t.verify(&token, now()).unwrap(), claims);
        // A cached token is still checked for expiry.
        assert_eq!(t.verify(&token, now() + 10_000), Err(VerifyError::Expired));
        assert_eq!(claims.exp - claims.iat, 900);
        let jwks = t.jwks(now());
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["kid"].as_str().unwrap().len(), 43);
    }

    #[test]
    fn refuses_forgeries() {
        let t = ed();
        let (token, claims) = t.sign("u1", "s1", "user", now());
        let claims = serde_json::to_value(&claims).unwrap();
        let sig = token.rsplit('.').next().unwrap();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let h = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            assert_eq!(
                t.verify(&forge(&h, &claims, ""), now()),
                Err(VerifyError::Invalid)
            );
            assert_eq!(
                t.verify(&forge(&h, &claims, sig), now()),
                Err(VerifyError::Invalid)
            );
        }
        let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
        assert_eq!(
            t.verify(&forge(hs, &claims, sig), now()),
            Err(VerifyError::Invalid)
        );
        let mut tampered = claims.clone();
        tampered["role"] = "admin".into();
        let ed_header = token.split('.').next().unwrap();
        let forged = format!("{ed_header}.{}.{sig}", B64.encode(tampered.to_string()));
        assert_eq!(t.verify(&forged, now()), Err(VerifyError::Invalid));
        let other = AccessTokens::new(
            &AccessKeyMaterial::Ed25519(SigningKey::from_bytes(&[2; 32])),
            "authd",
            "authd",
            Duration::from_secs(900),
            Duration::ZERO,
        );
        assert_eq!(other.verify(&token, now()), Err(VerifyError::Invalid));
    }

    #[test]
    fn expiry_issuer_audience_and_future_iat() {
        let t = ed();
        let (old, _) = t.sign("u1", "s1", "user", now() - 1000);
        assert_eq!(t.verify(&old, now()), Err(VerifyError::Expired));
        let (future, _) = t.sign("u1", "s1", "user", now() + 100);
        assert_eq!(t.verify(&future, now()), Err(VerifyError::Invalid));
        let wrong_iss = AccessTokens::new(
            &AccessKeyMaterial::Ed25519(SigningKey::from_bytes(&[1; 32])),
            "someone-else",
            "authd",
            Duration::from_secs(900),
            Duration::ZERO,
        );
        let (token, _) = wrong_iss.sign("u1", "s1", "user", now());
        assert_eq!(t.verify(&token, now()), Err(VerifyError::Invalid));
    }
}
