//! The upgrade to keys kept in the database: a database at schema V4 and the key files an
//! older authd generated into `jwt.key_dir`, holding a live session whose tokens that authd
//! issued; the new server imports the files on its first start (same key ids), and those
//! tokens keep working. Nothing is written to `key_dir`, and the files are not needed again.

use std::path::Path;
use std::time::Duration;

use authd::crypto::jwt::AccessTokens;
use authd::crypto::keys::AccessKeyMaterial;
use authd::crypto::refresh::RefreshTokens;
use authd::domain::time::now_ms;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::keys::{key_list, kid_of};
use crate::support::*;

mod v4 {
    refinery::embed_migrations!("migrations/sqlite");
}

/// Writes a key file as the older authd did (mode 0600 in a 0700 directory).
fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).unwrap().write_all(bytes).unwrap();
}

/// The RFC 7638 thumbprint of an Ed25519 public key, computed here independently.
fn thumbprint(key: &ed25519_dalek::SigningKey) -> String {
    let x = B64.encode(key.verifying_key().as_bytes());
    let jwk = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    B64.encode(Sha256::digest(jwk.as_bytes()))
}

#[test]
fn tokens_issued_with_key_files_keep_working_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("keys");
    std::fs::create_dir(&key_dir).unwrap();
    // The files the older authd generated.
    let access_key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let pem = access_key.to_pkcs8_pem(Default::default()).unwrap();
    write_private(&key_dir.join("access_ed25519.pem"), pem.as_bytes());
    let refresh_key: [u8; 32] = rand::random();
    write_private(
        &key_dir.join("refresh_hmac.key"),
        B64.encode(refresh_key).as_bytes(),
    );

    // Its database, at schema V4, with a user and a live session.
    let db = dir.path().join("authd.db");
    {
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        let mut runner = v4::migrations::runner();
        runner.set_migration_table_name("authd_schema_migrations");
        runner
            .set_target(refinery::Target::Version(4))
            .run(&mut conn)
            .unwrap();
    }
    let email = unique_email("upgrade");
    let (user_id, session_id, now) = (Uuid::new_v4(), Uuid::new_v4(), now_ms());
    let password_hash = bcrypt::hash(PASSWORD, 10).unwrap();
    // The tokens it issued: the same signing code, with the keys from its files.
    let refresh_tokens = RefreshTokens::new(refresh_key.to_vec());
    let (old_refresh, hash) = refresh_tokens.issue(session_id);
    let expires = now + 7 * 86_400_000;
    // Its rows, written as the older authd wrote them at V4 (today's store writes columns
    // and audit rows that V4 does not have).
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "INSERT INTO users (id, email, role, password_hash, created_at)
             VALUES (?1, ?2, 'user', ?3, ?4)",
            rusqlite::params![user_id.to_string(), email, password_hash, now],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at)
             VALUES (?1, ?2, ?3, ?3, ?4)",
            rusqlite::params![session_id.to_string(), user_id.to_string(), now, expires],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![session_id.to_string(), hash, now, expires],
        )
        .unwrap();
    }
    let access_tokens = AccessTokens::new(
        &AccessKeyMaterial::Ed25519(access_key.clone()),
        "authd",
        "authd",
        Duration::from_secs(900),
        Duration::from_secs(30),
    );
    let (old_access, _) = access_tokens.sign(
        &user_id.to_string(),
        &session_id.to_string(),
        "user",
        now / 1000,
    );
    let kid = thumbprint(&access_key);
    assert_eq!(kid_of(&old_access), kid);

    // The new server: migrates, imports the files, and honours the old tokens.
    let s = TestServer::in_dir(dir, &[]);
    let r = s.get_auth("/api/auth/profile", &old_access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["email"], email.as_str());
    let jwks = send(s.get("/.well-known/jwks.json"));
    assert_eq!(jwks.body["keys"][0]["kid"], kid.as_str());
    let r = s.refresh(&old_refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    let next_refresh = r.body["data"]["refreshToken"].as_str().unwrap().to_string();
    assert!(
        refresh_tokens.check(&next_refresh).is_some(),
        "same refresh key"
    );
    assert_eq!(
        kid_of(s.login(&email)["accessToken"].as_str().unwrap()),
        kid,
        "same access key"
    );
    let list = key_list(&s, &[]);
    assert!(list
        .iter()
        .any(|k| k["kid"] == kid.as_str() && k["use"] == "access" && k["state"] == "active"));
    // Nothing new in key_dir.
    let mut files: Vec<String> = std::fs::read_dir(s.dir.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["access_ed25519.pem", "refresh_hmac.key"]);

    // The import is once: without the files, the keys come from the database.
    let dir = s.stop();
    std::fs::remove_dir_all(dir.path().join("keys")).unwrap();
    let s = TestServer::in_dir(dir, &[]);
    assert_eq!(
        kid_of(s.login(&email)["accessToken"].as_str().unwrap()),
        kid
    );
    let r = s.refresh(&next_refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!s.dir.path().join("keys").exists());
}
