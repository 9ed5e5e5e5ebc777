//! Configured secrets through the built binary: a secret published as an example
//! (documentation defaults, tutorial values) or rated below 128 bits by zxcvbn is refused by
//! `check-config` and `serve` alike (exit 1, one line naming the key, never echoing the
//! secret), from the environment or a file, for the access and the refresh secret; the output
//! of `openssl rand -base64 48` and `openssl rand -hex 32` is accepted and works.

use std::time::Duration;

use base64::Engine;
use serde_json::json;

use crate::cli::{authd, run};
use crate::process::ServeChild;
use crate::support::*;

/// Published example secrets, as documented and as people copy them.
const PUBLISHED: [&str; 9] = [
    // Supabase's self-hosting .env.example: the value of issue 10.
    "your-super-secret-jwt-token-with-at-least-32-characters-long",
    // The Supabase CLI's local default, and a copy with other case and separators.
    "super-secret-jwt-token-with-at-least-32-characters-long",
    "Super_Secret_JWT_Token_With_At_Least_32_Characters_Long_2024",
    // jwt.io's debugger.
    "a-string-secret-at-least-256-bits-long",
    // FastAPI's tutorial, Spring Security tutorials, Hasura's docs: random-looking, published.
    "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
    "404E635266556A586E3272357538782F413F4428472B4B6250645367566B5970",
    "5367566B59703373367639792F423F4528482B4D6251655468576D5A71347437",
    "3EK6FD+o0+c7tzBNVfjpMkNDi2yARAAKzQlk8O2IKoxQu4nF7EdAh8s3TwpHwrdWT6R",
    // PostgREST's tutorial: 32 bytes, 8 distinct.
    "reallyreallyreallyreallyverysafe",
];

/// At least 32 bytes with 8 distinct, no placeholder word, published nowhere we know of, and
/// still guessable: zxcvbn finds words, sequences, keyboard walks or repeats in each.
const GUESSABLE: [&str; 6] = [
    "authd-jwt-access-secret-for-production-2024",
    "0123456789abcdef0123456789abcdef",
    "qwertyuiopasdfghjklzxcvbnm1234567890",
    "correct-horse-battery-staple-correct-horse",
    "Xk9#mP2$vL8@nQ4!Xk9#mP2$vL8@nQ4!Xk9#mP2$vL8@nQ4!",
    // 16 random hex characters repeated to 32.
    "8f3c2a9b7e41d05c8f3c2a9b7e41d05c",
];

/// What `openssl rand -base64 48` prints: 48 random bytes, standard base64 (64 characters).
fn openssl_rand_base64_48() -> String {
    let bytes = [
        rand::random::<[u8; 32]>().as_slice(),
        &rand::random::<[u8; 16]>(),
    ]
    .concat();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What `openssl rand -hex 32` prints: 32 random bytes, lower-case hex (64 characters).
fn openssl_rand_hex_32() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What `openssl rand -hex 16` prints: 16 random bytes, lower-case hex (32 characters, 128 bits).
fn openssl_rand_hex_16() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What Python's `secrets.token_urlsafe(24)` prints: 24 random bytes, base64url without
/// padding (32 characters, 192 bits).
fn token_urlsafe_24() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

/// Runs `check-config` and `serve` with `env` (and `file` as `--config`): each must exit 1 with
/// one line naming `key` and saying `why`, without the secret, before creating anything.
fn assert_refused(env: &[(&str, &str)], file: Option<&str>, key: &str, why: &str, secret: &str) {
    for command in ["check-config", "serve"] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = authd(dir.path());
        cmd.env("AUTHD_SERVER__BIND", "127.0.0.1:0");
        cmd.envs(env.iter().copied());
        if let Some(body) = file {
            std::fs::write(dir.path().join("custom.toml"), body).unwrap();
            cmd.args(["--config", "custom.toml"]);
        }
        cmd.arg(command);
        let out = run(&mut cmd, None);
        let line = out.error_line();
        assert!(line.contains(key), "{command} names {key}: {line}");
        assert!(line.contains(why), "{command} says {why:?}: {line}");
        assert!(
            !line.contains(secret) && !out.stdout.contains(secret),
            "{command} never echoes the secret: {out:?}"
        );
        assert!(!dir.path().join("data").exists(), "{command}: {line}");
    }
}

#[test]
fn published_example_secrets_are_refused_by_check_config_and_serve() {
    for secret in PUBLISHED {
        assert_refused(
            &[("AUTHD_JWT__ACCESS_SECRET", secret)],
            None,
            "jwt.access_secret",
            "published",
            secret,
        );
    }
    // The case: HS256 with Supabase's example secret, which would let anyone sign an
    // admin token offline. From a file, and as the refresh secret, too.
    let supabase = PUBLISHED[0];
    assert_refused(
        &[
            ("AUTHD_JWT__ALGORITHM", "HS256"),
            ("AUTHD_JWT__ACCESS_SECRET", supabase),
        ],
        None,
        "jwt.access_secret",
        "published",
        supabase,
    );
    let file = format!("[jwt]\nalgorithm = \"HS256\"\naccess_secret = \"{supabase}\"\n");
    assert_refused(&[], Some(&file), "jwt.access_secret", "published", supabase);
    let strong = openssl_rand_base64_48();
    assert_refused(
        &[
            ("AUTHD_JWT__ACCESS_SECRET", strong.as_str()),
            ("AUTHD_JWT__REFRESH_SECRET", supabase),
        ],
        None,
        "jwt.refresh_secret",
        "published",
        supabase,
    );
}

#[test]
fn secrets_zxcvbn_rates_below_128_bits_are_refused() {
    for secret in GUESSABLE {
        assert_refused(
            &[("AUTHD_JWT__ACCESS_SECRET", secret)],
            None,
            "jwt.access_secret",
            "zxcvbn",
            secret,
        );
    }
    let strong = openssl_rand_hex_32();
    assert_refused(
        &[
            ("AUTHD_JWT__ALGORITHM", "HS256"),
            ("AUTHD_JWT__ACCESS_SECRET", strong.as_str()),
            ("AUTHD_JWT__REFRESH_SECRET", GUESSABLE[0]),
        ],
        None,
        "jwt.refresh_secret",
        "zxcvbn",
        GUESSABLE[0],
    );
}

/// Secrets from `one` and `other` (fresh values each call) pass `check-config` in both roles,
/// eight times over, without being printed; then `serve` signs in, verifies an access token
/// and rotates a refresh token with a pair of them.
fn secrets_are_accepted_and_work(one: fn() -> String, other: fn() -> String, label: &str) {
    for _ in 0..8 {
        for (access, refresh) in [(one(), other()), (other(), one())] {
            let dir = tempfile::tempdir().unwrap();
            let out = run(
                authd(dir.path())
                    .env("AUTHD_JWT__ALGORITHM", "HS256")
                    .env("AUTHD_JWT__ACCESS_SECRET", &access)
                    .env("AUTHD_JWT__REFRESH_SECRET", &refresh)
                    .arg("check-config"),
                None,
            );
            let printed = out.ok();
            assert!(
                !printed.contains(&access) && !printed.contains(&refresh),
                "{printed}"
            );
        }
    }
    // And serve runs with them: sign-in, an access token, a refresh.
    let dir = tempfile::tempdir().unwrap();
    let (access, refresh) = (one(), other());
    let mut server = ServeChild::start(
        dir.path(),
        &[
            ("AUTHD_JWT__ALGORITHM", "HS256"),
            ("AUTHD_JWT__ACCESS_SECRET", access.as_str()),
            ("AUTHD_JWT__REFRESH_SECRET", refresh.as_str()),
        ],
    );
    let data = server.register(&unique_email(label));
    let token = data["accessToken"].as_str().unwrap();
    assert_eq!(server.get_auth("/api/auth/profile", token).status, 200);
    let refreshed = server.post_json(
        "/api/auth/refresh",
        json!({ "refreshToken": data["refreshToken"] }),
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

#[test]
fn openssl_rand_secrets_are_accepted_and_work() {
    secrets_are_accepted_and_work(openssl_rand_base64_48, openssl_rand_hex_32, "openssl");
}

/// Random secrets of 128 bits and more at the 32-byte minimum (`openssl rand -hex 16`,
/// `secrets.token_urlsafe(24)`), which zxcvbn alone rates near 106 bits, are accepted by
/// `check-config`, and `serve` signs and verifies with them (issue 16, item 11).
#[test]
fn random_secrets_of_32_characters_are_accepted_and_work() {
    secrets_are_accepted_and_work(token_urlsafe_24, openssl_rand_hex_16, "random32");
}
