//! Unit tests of the configuration as a whole.

use std::time::Duration;

use super::*;

fn with_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    load(&Sources {
        base_dir: PathBuf::from("/nonexistent"),
        env_vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
}

#[test]
fn defaults_match_the_contract() {
    let s = with_env(&[]).unwrap();
    assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(s.server.body_limit, 16384);
    assert_eq!(s.server.shutdown_grace, Duration::from_secs(30));
    assert!(s.server.cors_origins.is_empty() && s.server.trusted_proxies.is_empty());
    assert!(!s.server.hsts);
    assert_eq!(s.database.url, "sqlite://data/authd.db");
    assert_eq!(s.database.pool_size, 8);
    assert!(s.database.auto_migrate);
    assert_eq!(
        (s.jwt.issuer.as_str(), s.jwt.audience.as_str()),
        ("authd", "authd")
    );
    assert_eq!(s.jwt.algorithm, JwtAlgorithm::EdDsa);
    assert_eq!(s.jwt.access_ttl, Duration::from_secs(900));
    assert_eq!(s.jwt.refresh_ttl, Duration::from_secs(7 * 86400));
    assert_eq!(s.jwt.refresh_reuse_grace, Duration::ZERO);
    assert_eq!(s.jwt.leeway, Duration::from_secs(30));
    assert!(s.jwt.access_secret.is_none() && s.jwt.refresh_secret.is_none());
    assert_eq!(s.jwt.key_dir, PathBuf::from("data/keys"));
    assert_eq!((s.password.bcrypt_cost, s.password.min_length), (12, 8));
    assert_eq!(s.cookie.name, "authd_refresh");
    assert!(s.cookie.secure);
    let rl = &s.rate_limit;
    assert!(rl.enabled);
    assert_eq!(rl.window, Duration::from_secs(900));
    assert_eq!(
        (rl.max_requests, rl.max_failed_logins, rl.lockout_threshold),
        (300, 5, 10)
    );
    assert_eq!(rl.lockout_duration, Duration::from_secs(900));
    assert_eq!(s.cleanup.interval, Duration::from_secs(3600));
    assert_eq!(s.cleanup.retention, Duration::from_secs(7 * 86400));
    assert_eq!(s.log.format, LogFormat::Pretty);
    assert_eq!(s.log.level, "info");
}

#[test]
fn env_overrides_and_lists() {
    let s = with_env(&[
        ("AUTHD_SERVER__BIND", "127.0.0.1:9000"),
        ("AUTHD_RATE_LIMIT__ENABLED", "false"),
        (
            "AUTHD_SERVER__CORS_ORIGINS",
            "https://a.example.org, https://b.example.org",
        ),
        ("AUTHD_SERVER__TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1"),
        ("AUTHD_JWT__ACCESS_TTL", "2m"),
    ])
    .unwrap();
    assert_eq!(s.server.bind.port(), 9000);
    assert!(!s.rate_limit.enabled);
    assert_eq!(s.server.cors_origins.len(), 2);
    assert_eq!(s.server.trusted_proxies.len(), 2);
    assert_eq!(s.jwt.access_ttl, Duration::from_secs(120));
}

#[test]
fn every_bad_key_is_named() {
    let err = with_env(&[
        ("AUTHD_SERVER__BIND", "nope"),
        ("AUTHD_PASSWORD__BCRYPT_COST", "9"),
        ("AUTHD_JWT__LEEWAY", "soon"),
        ("AUTHD_JWT__ACCESS_SECRET", "short"),
        (
            "AUTHD_JWT__REFRESH_SECRET",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
    ])
    .unwrap_err();
    let text = err.to_string();
    for key in [
        "server.bind",
        "password.bcrypt_cost",
        "jwt.leeway",
        "jwt.access_secret",
        "jwt.refresh_secret",
    ] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
}

#[test]
fn secrets() {
    assert!(check_secret_strength(
        "grYplcLiO/Sd6Fo4gDN1gHcN/e7LyOQYQU1f1a3WcrcamumlvZFFwUJhZYhJSTJk"
    )
    .is_ok());
    let refused = |s: &str| check_secret_strength(s).unwrap_err();
    assert!(refused("0123456789abcdef").contains("too short"));
    assert!(refused("abababababababababababababababababab").contains("distinct"));
    assert!(refused("change-me-change-me-change-me-0123456789").contains("placeholder"));
    let supabase = "your-super-secret-jwt-token-with-at-least-32-characters-long";
    assert!(refused(supabase).contains("published"));
    assert!(!refused(supabase).contains(supabase));
    assert!(refused("0123456789abcdef0123456789abcdef").contains("zxcvbn"));
    assert_eq!(format!("{:?}", Secret("x".into())), "***");
}

#[test]
fn redacted_rendering_reparses_and_hides_secrets() {
    let s = with_env(&[
        (
            "AUTHD_JWT__ACCESS_SECRET",
            "cGYZTGv65xfW+ddjR+p6gKdFgjrxY8DNuNd/z95VMgEmYQLqB0hDDtw8seFMRKh+",
        ),
        ("AUTHD_SERVER__CORS_ORIGINS", "https://a.example.org"),
    ])
    .unwrap();
    let text = s.to_redacted_toml();
    assert!(!text.contains("cGYZTGv65xfW"), "{text}");
    assert!(text.contains("access_secret = \"***\""));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effective.toml");
    std::fs::write(&file, text.replace("\"***\"", "\"\"")).unwrap();
    let again = load(&Sources {
        base_dir: dir.path().to_path_buf(),
        config_file: Some(file),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(again.server.cors_origins, s.server.cors_origins);
    assert_eq!(again.jwt.refresh_ttl, s.jwt.refresh_ttl);
    assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
}

#[test]
fn redact_url_hides_the_whole_password_whatever_it_holds() {
    for (url, shown) in [
        ("postgres://u:p@ss@h:5432/db", "postgres://u:***@h:5432/db"),
        (
            "postgres://u:p/w@h/db?sslmode=disable",
            "postgres://u:***@h/db?sslmode=disable",
        ),
        ("redis://:s3cret@r:6379/0", "redis://:***@r:6379/0"),
        (
            "postgres://u@h/db?application_name=a@b",
            "postgres://u@h/db?application_name=a@b",
        ),
        (
            "sqlite:///var/lib/authd/authd.db",
            "sqlite:///var/lib/authd/authd.db",
        ),
        ("postgres://u:p?ss@h/db", "postgres://u:***@h/db"),
        (
            "postgres://u@h/db?password=s3cret&sslmode=disable",
            "postgres://u@h/db?password=***&sslmode=disable",
        ),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

#[test]
fn redis_url_is_validated_and_redacted() {
    assert_eq!(with_env(&[]).unwrap().rate_limit.redis_url, None);
    let s = with_env(&[(
        "AUTHD_RATE_LIMIT__REDIS_URL",
        "redis://:Hunter2-pw@cache.internal:6380/2",
    )])
    .unwrap();
    assert_eq!(
        s.rate_limit.redis_url.as_deref(),
        Some("redis://:Hunter2-pw@cache.internal:6380/2")
    );
    let text = s.to_redacted_toml();
    assert!(!text.contains("Hunter2"), "{text}");
    assert!(text.contains("redis_url = \"redis://:***@cache.internal:6380/2\""));
    for bad in [
        "cache.internal:6379",
        "http://cache.internal",
        "redis://:Hunter2-pw@cache.internal/notanumber",
        "rediss://cache.internal",
    ] {
        let err = with_env(&[("AUTHD_RATE_LIMIT__REDIS_URL", bad)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate_limit.redis_url"), "{bad}: {err}");
        assert!(!err.contains("Hunter2"), "{bad}: {err}");
    }
}

#[test]
fn unknown_env_vars_warn() {
    let s = with_env(&[("AUTHD_SERVER__BND", "x")]).unwrap();
    assert!(s.warnings.iter().any(|w| w.contains("AUTHD_SERVER__BND")));
}

/// Random output of 128 bits or more, in the encodings people generate secrets with, drawn
/// from a fixed seed: every one is accepted (issue 16, item 11).
#[test]
fn random_secrets_of_128_bits_or_more_are_accepted() {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    use rand::{Rng, RngCore, SeedableRng};

    let mut rng = rand::rngs::StdRng::seed_from_u64(16_11);
    let mut bytes = |n: usize| {
        let mut b = vec![0u8; n];
        rng.fill_bytes(&mut b);
        b
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut shapes: Vec<(&str, String)> = Vec::new();
    for _ in 0..60 {
        shapes.push(("openssl rand -hex 16", hex(&bytes(16))));
        shapes.push((
            "openssl rand -hex 16 | tr a-f A-F",
            hex(&bytes(16)).to_uppercase(),
        ));
        shapes.push(("openssl rand -hex 32", hex(&bytes(32))));
        shapes.push((
            "secrets.token_urlsafe(24)",
            URL_SAFE_NO_PAD.encode(bytes(24)),
        ));
        shapes.push((
            "secrets.token_urlsafe(32)",
            URL_SAFE_NO_PAD.encode(bytes(32)),
        ));
        shapes.push(("openssl rand -base64 32", STANDARD.encode(bytes(32))));
        shapes.push(("openssl rand -base64 48", STANDARD.encode(bytes(48))));
        shapes.push((
            "uuidgen; uuidgen",
            format!(
                "{}{}",
                uuid::Builder::from_random_bytes(bytes(16).try_into().unwrap()).into_uuid(),
                uuid::Builder::from_random_bytes(bytes(16).try_into().unwrap()).into_uuid()
            ),
        ));
    }
    let alnum: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(16_12);
    for _ in 0..60 {
        let pwgen: String = (0..32)
            .map(|_| alnum[rng.gen_range(0..alnum.len())])
            .collect();
        shapes.push(("pwgen -s 32", pwgen));
    }
    for (shape, secret) in &shapes {
        if let Err(why) = check_secret_strength(secret) {
            panic!("{shape}: {secret} refused: {why}");
        }
    }
}

/// Guessable secrets of every kind, 32 bytes or more with 8 distinct bytes and no placeholder
/// word (but one): every one is refused.
#[test]
fn guessable_secrets_are_refused_whatever_their_alphabet() {
    let mut accepted = Vec::new();
    for secret in [
        // Dictionary phrases.
        "thisisaverylongsecretkeyforjwttokensigning",
        "correcthorsebatterystaplecorrecthorse",
        "correct-horse-battery-staple-correct-horse",
        "mysupersecretkeythatisverylongandsecure123",
        "ThisIsMySecretKeyForJwtTokenThatIsLongEnough",
        "iloveyoumorethanwordscansayiloveyou",
        "monkeydragonfootballbaseballshadowmaster",
        "the quick brown fox jumps over the lazy dog",
        "authd-jwt-access-secret-for-production-2024",
        "MyCompanyName-Production-JWT-Key-2024",
        // Repeated words and passwords.
        "password123password123password123",
        "P@ssw0rd!P@ssw0rd!P@ssw0rd!P@ssw0rd!",
        "letmein2024letmein2024letmein2024",
        "Summer2024!Summer2024!Winter2025?",
        // Keyboard walks and sequences.
        "qwertyuiopasdfghjklzxcvbnm1234567890",
        "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "zyxwvutsrqponmlkjihgfedcba9876543210",
        "0123456789abcdef0123456789abcdef",
        "12345678901234567890123456789012",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab1234567",
        // Hex that spells words, dates, names with dates.
        "deadbeefdeadbeefcafebabecafebabe",
        "20240101202401022024010320240104",
        "johnsmith19850412johnsmith19850412",
        "michaeljordan23chicagobulls1991champions",
        "jennifer.lopez.1969.07.24.newyork.usa",
        // A short random string repeated to length, with or without separators.
        "Xk9#mP2$vL8@nQ4!Xk9#mP2$vL8@nQ4!Xk9#mP2$vL8@nQ4!",
        "Tr0ub4dor&3Tr0ub4dor&3Tr0ub4dor&3xx",
        "Xk9#mP2-Xk9#mP2!Xk9#mP2?Xk9#mP2.",
        "8f3c2a9b7e41d05c8f3c2a9b7e41d05c",
    ] {
        if check_secret_strength(secret).is_ok() {
            accepted.push(secret);
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
}

#[test]
fn edit_distance_counts_a_swap_as_one_edit() {
    assert_eq!(super::edit_distance("bnid", "bind"), 1);
    assert_eq!(super::edit_distance("access_tl", "access_ttl"), 1);
    assert_eq!(super::edit_distance("", "abc"), 3);
    assert_eq!(super::edit_distance("kitten", "sitting"), 3);
}
