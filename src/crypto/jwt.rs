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
use sha2::{Digest, Sha256};

use super::keys::AccessKeyMaterial;

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

pub struct AccessTokens {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    jwk: Option<serde_json::Value>,
    validation: Validation,
    leeway_secs: i64,
    /// Tokens whose signature and claims were verified, by their exact text. Only `exp` can
    /// change its verdict later, and it is checked again on every hit; revocation is never
    /// cached (the caller reads the session from the store).
    verified: quick_cache::sync::Cache<String, Arc<AccessClaims>>,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
}

impl AccessTokens {
    /// The access tokens `jwt` configures (issuer, audience, lifetime, leeway), with `key`.
    pub fn configured(key: &AccessKeyMaterial, jwt: &crate::config::JwtSettings) -> Self {
        Self::new(key, &jwt.issuer, &jwt.audience, jwt.access_ttl, jwt.leeway)
    }

    pub fn new(
        key: &AccessKeyMaterial,
        issuer: &str,
        audience: &str,
        ttl: Duration,
        leeway: Duration,
    ) -> Self {
        let (algorithm, encoding, decoding, kid, jwk) = match key {
            AccessKeyMaterial::Ed25519(signing) => {
                use ed25519_dalek::pkcs8::EncodePrivateKey;
                let public = signing.verifying_key();
                let x = B64.encode(public.as_bytes());
                // RFC 7638 thumbprint as the key id.
                let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                let kid = B64.encode(Sha256::digest(canonical.as_bytes()));
                let der = signing
                    .to_pkcs8_der()
                    .expect("Ed25519 key encodes as PKCS#8");
                let jwk = serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "use": "sig", "kid": kid,
                });
                (
                    Algorithm::EdDSA,
                    EncodingKey::from_ed_der(der.as_bytes()),
                    DecodingKey::from_ed_der(public.as_bytes()),
                    kid,
                    Some(jwk),
                )
            }
            AccessKeyMaterial::Hmac(secret) => {
                let digest = Sha256::new()
                    .chain_update(b"authd kid\0")
                    .chain_update(secret)
                    .finalize();
                (
                    Algorithm::HS256,
                    EncodingKey::from_secret(secret),
                    DecodingKey::from_secret(secret),
                    B64.encode(&digest[..12]),
                    None,
                )
            }
        };
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
        AccessTokens {
            algorithm,
            encoding,
            decoding,
            kid,
            jwk,
            validation,
            leeway_secs: leeway.as_secs() as i64,
            verified: quick_cache::sync::Cache::new(VERIFIED_CACHE),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            ttl,
        }
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
        let mut header = Header::new(self.algorithm);
        header.typ = Some(ACCESS_TYP.to_string());
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("signing with a loaded key cannot fail");
        (token, claims)
    }

    /// Verifies signature, algorithm, type and claims. A token verified before is not
    /// verified again (Ed25519 verification dominates an authenticated request), but its
    /// expiry is.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Arc<AccessClaims>, VerifyError> {
        if token.len() > 8192 {
            return Err(VerifyError::Invalid);
        }
        if let Some(claims) = self.verified.get(token) {
            if claims.exp < now_secs - self.leeway_secs {
                return Err(VerifyError::Expired);
            }
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_uncached(token, now_secs)?);
        self.verified.insert(token.to_string(), claims.clone());
        Ok(claims)
    }

    fn verify_uncached(&self, token: &str, now_secs: i64) -> Result<AccessClaims, VerifyError> {
        super::jws_header::check(
            token.split('.').next().unwrap_or_default(),
            self.algorithm,
            |kid| kid == self.kid,
        )
        .map_err(|_| VerifyError::Invalid)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                _ => VerifyError::Invalid,
            })?;
        let typ_ok = match data.header.typ.as_deref() {
            None => true,
            Some(t) => t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case(ACCESS_TYP),
        };
        let claims = data.claims;
        if !typ_ok || claims.iat > now_secs + self.leeway_secs {
            return Err(VerifyError::Invalid);
        }
        Ok(claims)
    }

    /// The JWKS document: the public key for EdDSA, nothing for HS256.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.jwk.iter().collect::<Vec<_>>() })
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
        let jwks = t.jwks();
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
