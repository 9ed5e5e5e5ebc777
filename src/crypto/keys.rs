//! Crypto layer: signing-key material. Access keys (Ed25519 or HMAC) and refresh keys (HMAC),
//! their key ids, new keys, keys derived from configured secrets, the key files an older
//! authd wrote into `jwt.key_dir` (read for the one-time import, never written), and the
//! sealing of private parts at rest (`jwt.key_encryption_secret`, ChaCha20-Poly1305).

use std::fs;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Key material for access tokens.
pub enum AccessKeyMaterial {
    /// Ed25519 signing key (signs and verifies).
    Ed25519(SigningKey),
    /// Ed25519 public key alone (a retiring key: verifies, never signs).
    Ed25519Public(VerifyingKey),
    /// HMAC-SHA256 secret.
    Hmac(Vec<u8>),
}

impl AccessKeyMaterial {
    /// The key id tokens carry in their `kid` header: the RFC 7638 JWK thumbprint of an
    /// Ed25519 public key, or a truncated SHA-256 of an HMAC secret (96 bits, base64url).
    pub fn kid(&self) -> String {
        match self {
            AccessKeyMaterial::Ed25519(k) => ed25519_kid(&k.verifying_key()),
            AccessKeyMaterial::Ed25519Public(k) => ed25519_kid(k),
            AccessKeyMaterial::Hmac(secret) => hmac_kid(b"authd kid\0", secret),
        }
    }
}

/// One access key of a key set, with when it stops verifying.
pub struct AccessKey {
    pub kid: String,
    pub material: AccessKeyMaterial,
    /// Unix seconds after which it verifies nothing (and leaves the JWKS); `None`: no limit.
    pub verify_until: Option<i64>,
}

/// One refresh key of a key set, with when it stops verifying.
pub struct RefreshKey {
    pub kid: String,
    pub secret: Vec<u8>,
    /// Unix seconds after which it verifies nothing; `None`: no limit.
    pub verify_until: Option<i64>,
}

/// Everything token code needs to sign and verify: for each use the signing key first, then
/// the keys that only verify.
pub struct KeySet {
    pub access: Vec<AccessKey>,
    pub refresh: Vec<RefreshKey>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// Key files an older authd wrote into `jwt.key_dir`.
pub const ED25519_FILE: &str = "access_ed25519.pem";
pub const HS256_FILE: &str = "access_hs256.key";
pub const REFRESH_FILE: &str = "refresh_hmac.key";

/// RFC 7638 thumbprint of an Ed25519 public key (base64url SHA-256 of the canonical JWK).
pub fn ed25519_kid(public: &VerifyingKey) -> String {
    let x = B64.encode(public.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

fn hmac_kid(domain: &[u8], secret: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(domain)
        .chain_update(secret)
        .finalize();
    B64.encode(&digest[..12])
}

/// The key id of a refresh key (refresh tokens do not carry it; `keys list` shows it).
pub fn refresh_kid(secret: &[u8]) -> String {
    hmac_kid(b"authd refresh kid\0", secret)
}

/// The Ed25519 access key derived from `jwt.access_secret` (so every instance configured
/// with the secret has the same key).
pub fn ed25519_from_secret(secret: &str) -> SigningKey {
    let seed: [u8; 32] = Sha256::new()
        .chain_update(b"authd ed25519 access key v1\0")
        .chain_update(secret.as_bytes())
        .finalize()
        .into();
    SigningKey::from_bytes(&seed)
}

/// A new Ed25519 key.
pub fn new_ed25519() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// A new 32-byte HMAC secret.
pub fn new_hmac_secret() -> Vec<u8> {
    rand::random::<[u8; 32]>().to_vec()
}

/// An Ed25519 key from its 32-byte seed.
pub fn ed25519_from_seed(seed: &[u8]) -> Result<SigningKey, KeyError> {
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| KeyError("stored Ed25519 key is not 32 bytes".into()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// An Ed25519 public key from its 32 bytes.
pub fn ed25519_public(bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyError("stored Ed25519 public key is not 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| KeyError("stored Ed25519 public key is invalid".into()))
}

/// The legacy Ed25519 access key file in `dir`, if present.
pub fn legacy_ed25519(dir: &Path) -> Result<Option<SigningKey>, KeyError> {
    let path = dir.join(ED25519_FILE);
    let Some(pem) = read_legacy(&path)? else {
        return Ok(None);
    };
    let text = String::from_utf8(pem)
        .map_err(|_| KeyError(format!("{} is not a PEM file", path.display())))?;
    SigningKey::from_pkcs8_pem(&text).map(Some).map_err(|e| {
        KeyError(format!(
            "{} is not an Ed25519 PKCS#8 key: {e}",
            path.display()
        ))
    })
}

/// A legacy HMAC key file in `dir` (32+ random bytes, base64url), if present.
pub fn legacy_hmac(dir: &Path, file: &str) -> Result<Option<Vec<u8>>, KeyError> {
    let path = dir.join(file);
    let Some(text) = read_legacy(&path)? else {
        return Ok(None);
    };
    let key = B64
        .decode(String::from_utf8_lossy(&text).trim())
        .map_err(|_| KeyError(format!("{} is not a base64url key", path.display())))?;
    if key.len() < 32 {
        return Err(KeyError(format!(
            "{} holds fewer than 32 bytes",
            path.display()
        )));
    }
    Ok(Some(key))
}

/// A file's bytes; `None` when it does not exist. Any other failure (unreadable, or the key
/// directory is not a directory) is an error: a key that exists but cannot be read must not
/// silently be replaced by a new one.
fn read_legacy(path: &Path) -> Result<Option<Vec<u8>>, KeyError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Seals and opens private key parts with `jwt.key_encryption_secret`: ChaCha20-Poly1305
/// (RFC 8439) under a key derived from the secret with HKDF-SHA256 (RFC 5869), a random
/// 96-bit nonce per seal, and the key's id and use as associated data (a sealed part moved
/// to another row does not open). Stored form: nonce (12 bytes) then ciphertext and tag.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

const NONCE_LEN: usize = 12;

impl Sealer {
    pub fn new(secret: &str) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"authd signing keys at rest"), secret.as_bytes());
        let mut key = [0u8; 32];
        hk.expand(b"chacha20poly1305 v1", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Sealer {
            cipher: ChaCha20Poly1305::new(&key.into()),
        }
    }

    fn aad(kid: &str, key_use: &str) -> Vec<u8> {
        format!("{kid}\0{key_use}").into_bytes()
    }

    /// Seals `plain` for the key `kid` of use `key_use`.
    pub fn seal(&self, kid: &str, key_use: &str, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = Self::aad(kid, key_use);
        let sealed = self
            .cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 seals any key-sized message");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what `seal` made for the same kid and use; an error for a wrong secret or a
    /// tampered value.
    pub fn open(&self, kid: &str, key_use: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let fail = || {
            KeyError(format!(
                "cannot decrypt signing key {kid}: wrong jwt.key_encryption_secret, or the stored key was altered"
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| fail())?;
        let aad = Self::aad(kid, key_use);
        self.cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_parts_open_only_with_the_same_secret_kid_and_use() {
        let s = Sealer::new("first-secret-0123456789-abcdefghij");
        let sealed = s.seal("kid1", "access", b"private");
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        assert_eq!(s.open("kid1", "access", &sealed).unwrap(), b"private");
        assert!(s.open("kid2", "access", &sealed).is_err());
        assert!(s.open("kid1", "refresh", &sealed).is_err());
        let other = Sealer::new("second-secret-0123456789-abcdefghij");
        assert!(other.open("kid1", "access", &sealed).is_err());
        assert_ne!(sealed, s.seal("kid1", "access", b"private"), "fresh nonce");
    }

    #[test]
    fn legacy_files_absent_or_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        assert!(legacy_ed25519(dir.path()).unwrap().is_none());
        assert!(legacy_hmac(dir.path(), REFRESH_FILE).unwrap().is_none());
        fs::write(dir.path().join(REFRESH_FILE), "short").unwrap();
        assert!(legacy_hmac(dir.path(), REFRESH_FILE).is_err());
        let blocker = dir.path().join("file");
        fs::write(&blocker, "x").unwrap();
        assert!(legacy_ed25519(&blocker.join("keys")).is_err());
    }
}
