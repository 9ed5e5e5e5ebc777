//! Crypto layer: the access-token key (Ed25519 or HMAC) and the separate refresh-token key,
//! taken from configured secrets or generated once into `jwt.key_dir` (0700, files 0600).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use crate::config::{JwtAlgorithm, JwtSettings};

/// Key material for access tokens.
pub enum AccessKeyMaterial {
    /// Ed25519 signing key.
    Ed25519(SigningKey),
    /// HMAC-SHA256 secret.
    Hmac(Vec<u8>),
}

/// Everything token code needs to sign and verify.
pub struct KeySet {
    pub access: AccessKeyMaterial,
    pub refresh: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

const ED25519_FILE: &str = "access_ed25519.pem";
const HS256_FILE: &str = "access_hs256.key";
const REFRESH_FILE: &str = "refresh_hmac.key";

/// Loads the keys from configured secrets, or from `key_dir`, generating what is missing.
pub fn load_or_generate(jwt: &JwtSettings) -> Result<KeySet, KeyError> {
    let needs_dir = jwt.access_secret.is_none() || jwt.refresh_secret.is_none();
    if needs_dir {
        ensure_private_dir(&jwt.key_dir)?;
    }
    let access = match (jwt.algorithm, &jwt.access_secret) {
        (JwtAlgorithm::EdDsa, Some(secret)) => {
            // Derived, so that every instance configured with the secret has the same key.
            let seed: [u8; 32] = Sha256::new()
                .chain_update(b"authd ed25519 access key v1\0")
                .chain_update(secret.expose().as_bytes())
                .finalize()
                .into();
            AccessKeyMaterial::Ed25519(SigningKey::from_bytes(&seed))
        }
        (JwtAlgorithm::EdDsa, None) => {
            let path = jwt.key_dir.join(ED25519_FILE);
            let pem = read_or_create(&path, || {
                let key = SigningKey::generate(&mut rand::rngs::OsRng);
                key.to_pkcs8_pem(Default::default())
                    .map(|p| p.as_bytes().to_vec())
                    .map_err(|e| KeyError(format!("cannot encode Ed25519 key: {e}")))
            })?;
            let text = String::from_utf8(pem)
                .map_err(|_| KeyError(format!("{} is not a PEM file", path.display())))?;
            let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| {
                KeyError(format!(
                    "{} is not an Ed25519 PKCS#8 key: {e}",
                    path.display()
                ))
            })?;
            AccessKeyMaterial::Ed25519(key)
        }
        (JwtAlgorithm::Hs256, Some(secret)) => {
            AccessKeyMaterial::Hmac(secret.expose().as_bytes().to_vec())
        }
        (JwtAlgorithm::Hs256, None) => {
            AccessKeyMaterial::Hmac(random_key_file(&jwt.key_dir.join(HS256_FILE))?)
        }
    };
    let refresh = match &jwt.refresh_secret {
        Some(secret) => secret.expose().as_bytes().to_vec(),
        None => random_key_file(&jwt.key_dir.join(REFRESH_FILE))?,
    };
    Ok(KeySet { access, refresh })
}

/// A file holding 32 random bytes, base64url-encoded.
fn random_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let text = read_or_create(path, || {
        Ok(B64.encode(rand::random::<[u8; 32]>()).into_bytes())
    })?;
    let key = B64
        .decode(String::from_utf8_lossy(&text).trim())
        .map_err(|_| KeyError(format!("{} is not a base64url key", path.display())))?;
    if key.len() < 32 {
        return Err(KeyError(format!(
            "{} holds fewer than 32 bytes",
            path.display()
        )));
    }
    Ok(key)
}

fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    if dir.is_dir() {
        return Ok(());
    }
    #[cfg(unix)]
    let created = {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    };
    #[cfg(not(unix))]
    let created = fs::create_dir_all(dir);
    created.map_err(|e| {
        KeyError(format!(
            "cannot create key directory {}: {e}",
            dir.display()
        ))
    })
}

/// Reads `path`, or creates it (mode 0600) with `make()`. Two processes racing to create it
/// end up with the same content: the file appears atomically, and the loser reads the winner's.
fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<Vec<u8>, KeyError>,
) -> Result<Vec<u8>, KeyError> {
    match fs::read(path) {
        Ok(bytes) => {
            warn_if_readable_by_others(path);
            return Ok(bytes);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(KeyError(format!("cannot read {}: {e}", path.display()))),
    }
    let content = make()?;
    let tmp = PathBuf::from(format!(
        "{}.tmp-{}-{}",
        path.display(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let write = || -> std::io::Result<()> {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(&content)?;
        f.sync_all()
    };
    let result = write().and_then(|_| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a new key");
            Ok(content)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::read(path).map_err(|e| KeyError(format!("cannot read {}: {e}", path.display())))
        }
        Err(e) => Err(KeyError(format!("cannot write {}: {e}", path.display()))),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "key file is readable by other users; chmod 600 it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, Sources};

    fn settings(dir: &Path) -> JwtSettings {
        let mut s = load(&Sources {
            base_dir: dir.to_path_buf(),
            ..Default::default()
        })
        .unwrap()
        .jwt;
        s.key_dir = dir.join("keys");
        s
    }

    #[test]
    fn generated_once_then_reused_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let jwt = settings(dir.path());
        let a = load_or_generate(&jwt).unwrap();
        let b = load_or_generate(&jwt).unwrap();
        assert_eq!(a.refresh, b.refresh);
        match (a.access, b.access) {
            (AccessKeyMaterial::Ed25519(x), AccessKeyMaterial::Ed25519(y)) => {
                assert_eq!(x.to_bytes(), y.to_bytes())
            }
            _ => panic!("expected Ed25519"),
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&jwt.key_dir), 0o700);
            assert_eq!(mode(&jwt.key_dir.join(ED25519_FILE)), 0o600);
            assert_eq!(mode(&jwt.key_dir.join(REFRESH_FILE)), 0o600);
        }
    }
}
