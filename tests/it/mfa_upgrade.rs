//! The upgrade from schema V7 (before second factors and email verification): a database
//! that an authd at V7 filled (an admin and a user, their live sessions and refresh tokens,
//! its signing keys, a verification token and a sent mail), started by today's server, which
//! migrates it through V8 (`second_factors`) and V13 (`email_verified`). Nobody has a factor,
//! so logins and refreshes go on as before; sessions from before V8 show `["pwd"]`; accounts
//! from before V13 are verified; and a user can then turn TOTP on.

use std::time::Duration;

use authd::crypto::jwt::AccessTokens;
use authd::crypto::keys::{refresh_kid, AccessKeyMaterial};
use authd::crypto::one_time;
use authd::crypto::refresh::RefreshTokens;
use authd::domain::time::now_ms;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::mfa::{code, login, mfa_token, turn_totp_on, verify, SKEW};
use crate::services::{servers_on_postgres, PgDatabase};
use crate::support::*;
use crate::tokens::text;

mod sqlite_v7 {
    refinery::embed_migrations!("migrations/sqlite");
}

mod postgres_v7 {
    refinery::embed_migrations!("migrations/postgres");
}

/// A connection to the database being prepared at V7, on either backend; values are written
/// as SQL literals (the columns' types differ between the backends, the literals do not).
enum Old {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl Old {
    fn run(&mut self, sql: &str) {
        match self {
            Old::Sqlite(c) => c.execute_batch(sql).unwrap(),
            Old::Postgres(c) => c.batch_execute(sql).unwrap(),
        }
    }

    /// A BLOB / BYTEA literal.
    fn bytes(&self, b: &[u8]) -> String {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        match self {
            Old::Sqlite(_) => format!("X'{hex}'"),
            Old::Postgres(_) => format!("'\\x{hex}'::bytea"),
        }
    }
}

/// The rows of one account as an authd at V7 wrote them, with one live session.
struct OldAccount {
    id: Uuid,
    email: String,
    session: Uuid,
    refresh: String,
    access: String,
}

fn old_account(
    db: &mut Old,
    role: &str,
    tag: &str,
    refresh: &RefreshTokens,
    access: &AccessTokens,
) -> OldAccount {
    let (id, session, now) = (Uuid::new_v4(), Uuid::new_v4(), now_ms());
    let email = unique_email(tag);
    let hash = bcrypt::hash(PASSWORD, 10).unwrap();
    let (refresh_token, token_hash) = refresh.issue(session);
    let expires = now + 7 * 86_400_000;
    db.run(&format!(
        "INSERT INTO users (id, email, role, password_hash, created_at, last_login_at)
         VALUES ('{id}', '{email}', '{role}', '{hash}', {now}, {now});
         INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, ip)
         VALUES ('{session}', '{id}', {now}, {now}, {expires}, '127.0.0.1');
         INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at)
         VALUES ('{session}', '{token_hash}', {now}, {expires});"
    ));
    let (access_token, _) = access.sign(&id.to_string(), &session.to_string(), role, now / 1000);
    OldAccount {
        id,
        email,
        session,
        refresh: refresh_token,
        access: access_token,
    }
}

/// `authMethods` of the session `sid` in `GET /api/auth/sessions` as `access` sees it.
fn auth_methods_of(s: &TestServer, access: &str, sid: Uuid) -> Value {
    let r = s.get_auth("/api/auth/sessions", access);
    assert_eq!(r.status, 200, "{}", r.text);
    let sessions = r.body["data"]["sessions"].as_array().unwrap();
    let found = sessions
        .iter()
        .find(|x| x["id"] == sid.to_string().as_str())
        .unwrap_or_else(|| panic!("session {sid} in {}", r.text));
    found["authMethods"].clone()
}

#[test]
fn a_v7_database_upgrades_with_its_accounts_sessions_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let pg = servers_on_postgres().then(|| PgDatabase::create().expect("PostgreSQL answers"));
    let mut db = match &pg {
        Some(pg) => {
            let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
            let mut runner = postgres_v7::migrations::runner();
            runner.set_migration_table_name("authd_schema_migrations");
            runner
                .set_target(refinery::Target::Version(7))
                .run(&mut c)
                .unwrap();
            Old::Postgres(c)
        }
        None => {
            let mut c = rusqlite::Connection::open(dir.path().join("authd.db")).unwrap();
            let mut runner = sqlite_v7::migrations::runner();
            runner.set_migration_table_name("authd_schema_migrations");
            runner
                .set_target(refinery::Target::Version(7))
                .run(&mut c)
                .unwrap();
            Old::Sqlite(c)
        }
    };

    // Its signing keys (in the database since V6), and the tokens it issued with them.
    let now = now_ms();
    let access_key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let material = AccessKeyMaterial::Ed25519(access_key.clone());
    let refresh_secret: [u8; 32] = rand::random();
    let (access_kid, refresh_kid) = (material.kid(), refresh_kid(&refresh_secret));
    let (public, private, secret) = (
        db.bytes(access_key.verifying_key().as_bytes()),
        db.bytes(&access_key.to_bytes()),
        db.bytes(&refresh_secret),
    );
    db.run(&format!(
        "INSERT INTO signing_keys (kid, key_use, algorithm, state, created_at, public_key, private_key)
         VALUES ('{access_kid}', 'access', 'EdDSA', 'active', {now}, {public}, {private});
         INSERT INTO signing_keys (kid, key_use, algorithm, state, created_at, private_key)
         VALUES ('{refresh_kid}', 'refresh', 'HS256', 'active', {now}, {secret});"
    ));
    let refresh = RefreshTokens::new(refresh_secret.to_vec());
    let access = AccessTokens::new(
        &material,
        "authd",
        "authd",
        Duration::from_secs(900),
        Duration::from_secs(30),
    );
    let admin = old_account(&mut db, "admin", "v7-admin", &refresh, &access);
    let user = old_account(&mut db, "user", "v7-user", &refresh, &access);
    // A verification link mailed to the user (its token and the sent mail).
    let (link_token, link_hash) = one_time::new_token();
    let (mail_id, user_id, user_email) = (Uuid::new_v4(), user.id, user.email.clone());
    let link_expires = now + 86_400_000;
    db.run(&format!(
        "INSERT INTO one_time_tokens (token_hash, purpose, user_id, address, created_at, expires_at)
         VALUES ('{link_hash}', 'verify_email', '{user_id}', '{user_email}', {now}, {link_expires});
         INSERT INTO mail_outbox (id, kind, user_id, to_address, status, attempts, next_attempt_at, created_at, finished_at)
         VALUES ('{mail_id}', 'verify_email', '{user_id}', '{user_email}', 'sent', 1, {now}, {now}, {now});"
    ));
    drop(db);

    // Today's server migrates it on start.
    let s = TestServer::on_prepared(dir, pg, &[SKEW]);
    let version = s.query_column(
        "SELECT CAST(MAX(version) AS TEXT) FROM authd_schema_migrations",
        &[],
    );
    assert!(version[0].parse::<u32>().unwrap() >= 13, "{version:?}");

    // The tokens issued before the upgrade still work; the sessions show ["pwd"] (V8's NULL)
    // and the accounts are verified (V13's default).
    for old in [&admin, &user] {
        let r = s.get_auth("/api/auth/profile", &old.access);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["data"]["user"]["email"], old.email.as_str());
        assert_eq!(r.body["data"]["user"]["emailVerified"], true, "{}", r.text);
        assert_eq!(
            auth_methods_of(&s, &old.access, old.session),
            json!(["pwd"])
        );
        let r = s.get_auth("/api/auth/mfa", &old.access);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.body["data"],
            json!({"totp": false, "recoveryCodesRemaining": 0, "passkeys": 0}),
            "{}",
            r.text
        );
    }
    // The admin API answers the admin's old session (mfa.required_for_admins is off), and the
    // account objects say nobody has a factor.
    let r = s.get_auth(&format!("/api/admin/users/{}", user.id), &admin.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["emailVerified"], true, "{}", r.text);
    assert_eq!(
        r.body["data"]["user"]["mfa"],
        json!({"totp": false, "passkeys": 0}),
        "{}",
        r.text
    );

    // The old refresh token rotates; the rotated session is the same one, still ["pwd"].
    let r = s.refresh(&user.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    let rotated = text(&r.body["data"], "accessToken");
    assert_eq!(auth_methods_of(&s, &rotated, user.session), json!(["pwd"]));

    // Password logins answer tokens at once (no MFA_REQUIRED: nobody has a factor), verified.
    for old in [&admin, &user] {
        let data = s.login(&old.email);
        assert_eq!(data["user"]["emailVerified"], true, "{data}");
    }
    // The link mailed before the upgrade still verifies; its mail is still in the outbox.
    let r = s.post_json("/api/auth/verify-email", json!({"token": link_token}));
    assert_eq!(r.status, 200, "{}", r.text);
    let mails = s.query_column("SELECT COUNT(*) FROM mail_outbox", &[]);
    assert_eq!(mails, ["1"]);

    // The user turns TOTP on from the session opened before the upgrade: the other session
    // (the login above) is revoked, this one gains `otp`, and the next login asks for a code.
    let (secret, step, confirmed) = turn_totp_on(&s, &rotated);
    assert_eq!(confirmed["revokedSessions"], 1, "{confirmed}");
    assert_eq!(
        auth_methods_of(&s, &rotated, user.session),
        json!(["pwd", "otp"])
    );
    let token = mfa_token(&s, &user.email);
    let r = verify(
        &s,
        json!({"mfaToken": token, "code": code(&secret, step + 1)}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // The admin, without a factor, still logs in with its password alone.
    assert_eq!(login(&s, &admin.email).status, 200);
}
