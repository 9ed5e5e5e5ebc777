//! Configuration as an operator writes it: refusals that name the key (one line, exit 1),
//! the layers and their order (config/default.toml, config/<AUTHD_ENV>.toml, --config,
//! .env, AUTHD_* variables), and configured secrets in place of generated keys.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::cli::{authd, run};
use crate::process::ServeChild;
use crate::support::*;

/// A configuration that must be refused: `env` and an optional `--config` file body.
struct Refusal {
    what: &'static str,
    env: Vec<(&'static str, &'static str)>,
    file: Option<&'static str>,
    /// Every key (or name) the one-line message must mention.
    names: Vec<&'static str>,
    /// A value the message must not echo.
    hidden: Option<&'static str>,
}

fn refusal(
    what: &'static str,
    env: &[(&'static str, &'static str)],
    names: &[&'static str],
) -> Refusal {
    Refusal {
        what,
        env: env.to_vec(),
        file: None,
        names: names.to_vec(),
        hidden: None,
    }
}

fn file_refusal(what: &'static str, file: &'static str, names: &[&'static str]) -> Refusal {
    Refusal {
        what,
        env: Vec::new(),
        file: Some(file),
        names: names.to_vec(),
        hidden: None,
    }
}

/// Runs `serve`, `migrate` and `create-user` under `r`: each must exit 1 with one line
/// naming every key, before touching the database.
fn assert_refused(r: &Refusal) {
    for command in [
        &["serve"][..],
        &["migrate"],
        &[
            "create-user",
            "--email",
            "a@example.com",
            "--password-stdin",
        ],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = authd(dir.path());
        cmd.env("AUTHD_SERVER__BIND", "127.0.0.1:0");
        cmd.envs(r.env.iter().copied());
        if let Some(body) = r.file {
            if body.contains("bcrypt_cost") {
                // Let the file's value through: the environment would win over it.
                cmd.env_remove("AUTHD_PASSWORD__BCRYPT_COST");
            }
            std::fs::write(dir.path().join("custom.toml"), body).unwrap();
            cmd.args(["--config", "custom.toml"]);
        }
        cmd.args(command);
        let out = run(&mut cmd, Some(format!("{PASSWORD}\n").as_bytes()));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} ({command:?}): {out:#?}",
            r.what
        );
        let line = out.error_line();
        for name in &r.names {
            assert!(
                line.contains(name),
                "{} ({command:?}): message names {name}: {line}",
                r.what
            );
        }
        if let Some(secret) = r.hidden {
            assert!(
                !line.contains(secret) && !out.stdout.contains(secret),
                "{}: the secret is not echoed: {line}",
                r.what
            );
        }
        assert!(
            !dir.path().join("data").exists(),
            "{} ({command:?}): refused before creating the database",
            r.what
        );
    }
}

#[test]
fn weak_or_placeholder_secrets_are_refused() {
    let cases = [
        Refusal {
            hidden: Some("Sh0rt-S3cr3t"),
            ..refusal(
                "short access secret",
                &[("AUTHD_JWT__ACCESS_SECRET", "Sh0rt-S3cr3t")],
                &["jwt.access_secret"],
            )
        },
        refusal(
            "the word short",
            &[("AUTHD_JWT__ACCESS_SECRET", "short")],
            &["jwt.access_secret"],
        ),
        Refusal {
            hidden: Some("abcabcabcabcabcabcabcabcabcabcabcabcabca"),
            ..refusal(
                "40 bytes, 3 distinct",
                &[(
                    "AUTHD_JWT__ACCESS_SECRET",
                    "abcabcabcabcabcabcabcabcabcabcabcabcabca",
                )],
                &["jwt.access_secret"],
            )
        },
        refusal(
            "40 bytes, 7 distinct",
            &[(
                "AUTHD_JWT__ACCESS_SECRET",
                "abcdefgabcdefgabcdefgabcdefgabcdefgabcde",
            )],
            &["jwt.access_secret"],
        ),
        Refusal {
            hidden: Some("change-me-change-me-change-me-change-me-1234"),
            ..refusal(
                "placeholder access secret",
                &[(
                    "AUTHD_JWT__ACCESS_SECRET",
                    "change-me-change-me-change-me-change-me-1234",
                )],
                &["jwt.access_secret"],
            )
        },
        refusal(
            "placeholder refresh secret",
            &[(
                "AUTHD_JWT__REFRESH_SECRET",
                "change-me-change-me-change-me-change-me-1234",
            )],
            &["jwt.refresh_secret"],
        ),
        refusal(
            "short refresh secret under HS256",
            &[
                ("AUTHD_JWT__ALGORITHM", "HS256"),
                ("AUTHD_JWT__REFRESH_SECRET", "tooShort-1"),
            ],
            &["jwt.refresh_secret"],
        ),
        file_refusal(
            "short secret in a file",
            "[jwt]\naccess_secret = \"short\"\n",
            &["jwt.access_secret"],
        ),
    ];
    for case in &cases {
        assert_refused(case);
    }
}

#[test]
fn unparsable_or_out_of_range_values_are_refused() {
    let cases = [
        refusal(
            "bcrypt cost 9",
            &[("AUTHD_PASSWORD__BCRYPT_COST", "9")],
            &["password.bcrypt_cost"],
        ),
        refusal(
            "bind",
            &[("AUTHD_SERVER__BIND", "notanaddress")],
            &["server.bind"],
        ),
        refusal(
            "duration",
            &[("AUTHD_JWT__ACCESS_TTL", "soon")],
            &["jwt.access_ttl"],
        ),
        refusal(
            "boolean",
            &[("AUTHD_RATE_LIMIT__ENABLED", "perhaps")],
            &["rate_limit.enabled"],
        ),
        file_refusal(
            "duration in a file",
            "[jwt]\nrefresh_ttl = \"a week\"\n",
            &["jwt.refresh_ttl"],
        ),
        file_refusal(
            "number in a file",
            "[password]\nbcrypt_cost = \"high\"\n",
            &["password.bcrypt_cost"],
        ),
        file_refusal(
            "bcrypt cost 9 in a file",
            "[password]\nbcrypt_cost = 9\n",
            &["password.bcrypt_cost"],
        ),
    ];
    for case in &cases {
        assert_refused(case);
    }
}

#[test]
fn unknown_keys_sections_and_bad_files_are_refused() {
    let cases = [
        file_refusal("unknown key", "[server]\nbnd = \"x\"\n", &["server.bnd"]),
        file_refusal(
            "unknown section",
            "[sever]\nbind = \"127.0.0.1:0\"\n",
            &["sever"],
        ),
        file_refusal(
            "unknown key beside known ones",
            "[jwt]\nissuer = \"me\"\naccess_tll = \"5m\"\n",
            &["jwt.access_tll"],
        ),
    ];
    for case in &cases {
        assert_refused(case);
    }
}

/// `authd --config custom.toml check-config` in a fresh directory with `body` and `env`.
fn check_config_with(body: &str, env: &[(&str, &str)]) -> crate::cli::Run {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("custom.toml"), body).unwrap();
    let out = run(
        authd(dir.path()).envs(env.iter().copied()).args([
            "--config",
            "custom.toml",
            "check-config",
        ]),
        None,
    );
    assert!(!dir.path().join("data").exists(), "{out:#?}");
    out
}

#[test]
fn a_toml_syntax_error_shows_the_file_line_column_and_a_caret() {
    let out = check_config_with("[server]\nbind = \"127.0.0.1:0\"\nfoo = \n", &[]);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines[0].starts_with("error: invalid configuration: custom.toml")
            && lines[0].contains("line 3, column 7"),
        "{out:#?}"
    );
    assert!(
        lines.iter().any(|l| l.trim_end().ends_with("3 | foo =")),
        "the offending line: {out:#?}"
    );
    let caret = lines.iter().position(|l| l.trim_end().ends_with('^'));
    let offending = lines.iter().position(|l| l.contains("3 | foo ="));
    assert_eq!(caret, offending.map(|i| i + 1), "caret under it: {out:#?}");
    assert!(!out.stderr.contains("panicked"), "{out:#?}");
}

#[test]
fn unknown_keys_get_a_did_you_mean_and_a_stable_order() {
    let body = "[server]\nbnid = \"x\"\nzzzz = 1\n[jwt]\naccess_tl = \"5m\"\n[sever]\n";
    let first = check_config_with(body, &[]);
    let line = first.error_line();
    assert!(
        line.contains("server.bnid (did you mean `server.bind`?)"),
        "{line}"
    );
    assert!(
        line.contains("jwt.access_tl (did you mean `jwt.access_ttl`?)"),
        "{line}"
    );
    assert!(
        line.contains("[sever] (did you mean `[server]`?)"),
        "{line}"
    );
    assert!(
        line.contains("server.zzzz") && !line.contains("server.zzzz (did"),
        "no suggestion when nothing is close: {line}"
    );
    for _ in 0..5 {
        assert_eq!(
            check_config_with(body, &[]).error_line(),
            line,
            "same order"
        );
    }

    let env = [
        ("AUTHD_SERVER__BNID", "x"),
        ("AUTHD_JWT__ACCES_TTL", "5m"),
        ("AUTHD_SERVER__BIND", "127.0.0.1:0"),
    ];
    let out = check_config_with("", &env);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("AUTHD_SERVER__BNID") && text.contains("did you mean `AUTHD_SERVER__BIND`?"),
        "{out:#?}"
    );
    assert!(
        text.contains("did you mean `AUTHD_JWT__ACCESS_TTL`?"),
        "{out:#?}"
    );
    let jwt = text.find("AUTHD_JWT__ACCES_TTL").unwrap();
    let server = text.find("AUTHD_SERVER__BNID").unwrap();
    assert!(jwt < server, "warnings sorted by name: {out:#?}");
}

#[test]
fn a_missing_config_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["serve", "migrate"] {
        let out = run(
            authd(dir.path())
                .env("AUTHD_SERVER__BIND", "127.0.0.1:0")
                .args(["--config", "nowhere/authd.toml", command]),
            None,
        );
        let line = out.error_line();
        assert!(line.contains("nowhere/authd.toml"), "{line}");
    }
    assert!(!dir.path().join("data").exists());
}

#[test]
fn unknown_keys_in_the_working_directory_layers_are_refused() {
    // config/default.toml in the working directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/default.toml"),
        "[server]\nbnd = \"x\"\n",
    )
    .unwrap();
    let out = run(authd(dir.path()).arg("migrate"), None);
    assert!(out.error_line().contains("server.bnd"), "{out:#?}");

    // config/<AUTHD_ENV>.toml.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/staging.toml"),
        "[password]\ncost = 12\n",
    )
    .unwrap();
    let out = run(
        authd(dir.path()).env("AUTHD_ENV", "staging").arg("migrate"),
        None,
    );
    assert!(out.error_line().contains("password.cost"), "{out:#?}");
    let ignored = run(authd(dir.path()).arg("migrate"), None);
    ignored.ok();
}

#[test]
fn several_bad_keys_are_all_named_on_one_line() {
    assert_refused(&Refusal {
        what: "bad keys from the environment and a file",
        env: vec![
            ("AUTHD_SERVER__BIND", "nope"),
            ("AUTHD_PASSWORD__BCRYPT_COST", "9"),
            ("AUTHD_JWT__ACCESS_TTL", "soon"),
            ("AUTHD_JWT__REFRESH_SECRET", "short"),
        ],
        file: Some("[cleanup]\nretention = \"forever\"\n"),
        names: vec![
            "server.bind",
            "password.bcrypt_cost",
            "jwt.access_ttl",
            "jwt.refresh_secret",
            "cleanup.retention",
        ],
        hidden: None,
    });
}

#[test]
fn an_unknown_key_and_bad_values_are_all_named_together() {
    assert_refused(&Refusal {
        what: "an unknown key in a file beside bad values",
        env: vec![
            ("AUTHD_SERVER__BIND", "nope"),
            ("AUTHD_JWT__ACCESS_TTL", "soon"),
        ],
        file: Some("[server]\nbnd = \"x\"\n"),
        names: vec!["server.bnd", "server.bind", "jwt.access_ttl"],
        hidden: None,
    });
}

// --- layers -----------------------------------------------------------------------------

/// The SQLite files `migrate` created in `dir`: `*.db` at the top and `data/authd.db`.
fn databases(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".db"))
        .collect();
    if dir.join("data/authd.db").exists() {
        found.push("data/authd.db".into());
    }
    found.sort();
    found
}

/// A working directory with a `database.url` in every file layer.
fn layered_dir(with_default: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir(p.join("config")).unwrap();
    if with_default {
        std::fs::write(
            p.join("config/default.toml"),
            "[database]\nurl = \"sqlite://from-default.db\"\n",
        )
        .unwrap();
    }
    std::fs::write(
        p.join("config/staging.toml"),
        "[database]\nurl = \"sqlite://from-staging.db\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("custom.toml"),
        "[database]\nurl = \"sqlite://from-config-flag.db\"\n",
    )
    .unwrap();
    dir
}

#[test]
fn layers_apply_in_order_later_wins() {
    // (AUTHD_ENV, --config, AUTHD_DATABASE__URL, config/default.toml present, expected file)
    let cases = [
        (true, true, true, true, "from-env-var.db"),
        (true, true, false, true, "from-config-flag.db"),
        (true, false, false, true, "from-staging.db"),
        (false, false, false, true, "from-default.db"),
        (false, false, false, false, "data/authd.db"),
        (false, true, false, true, "from-config-flag.db"),
        (true, false, true, true, "from-env-var.db"),
    ];
    for (env_name, flag, env_var, with_default, expected) in cases {
        let dir = layered_dir(with_default);
        let mut cmd = authd(dir.path());
        if env_name {
            cmd.env("AUTHD_ENV", "staging");
        }
        if env_var {
            cmd.env("AUTHD_DATABASE__URL", "sqlite://from-env-var.db");
        }
        if flag {
            cmd.args(["--config", "custom.toml"]);
        }
        run(cmd.arg("migrate"), None).ok();
        assert_eq!(
            databases(dir.path()),
            vec![expected.to_string()],
            "AUTHD_ENV={env_name} --config={flag} env var={env_var} default.toml={with_default}"
        );
    }
}

#[test]
fn layers_merge_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir(p.join("config")).unwrap();
    // A lower layer's key survives a higher layer that sets other keys.
    std::fs::write(
        p.join("config/default.toml"),
        "[password]\nmin_length = 20\n\n[database]\nurl = \"sqlite://lower.db\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("custom.toml"),
        "[database]\nurl = \"sqlite://upper.db\"\n",
    )
    .unwrap();
    let email = unique_email("cfg-merge");
    let short = run(
        authd(p).args([
            "--config",
            "custom.toml",
            "create-user",
            "--email",
            &email,
            "--password-stdin",
        ]),
        Some(format!("{PASSWORD}\n").as_bytes()),
    );
    assert!(short.error_line().contains("password"), "{short:#?}");
    let long = "Correct-horse-battery-9";
    assert!(long.len() >= 20);
    let ok = run(
        authd(p).args([
            "--config",
            "custom.toml",
            "create-user",
            "--email",
            &email,
            "--password-stdin",
        ]),
        Some(format!("{long}\n").as_bytes()),
    );
    ok.ok();
    assert_eq!(databases(p), vec!["upper.db".to_string()]);
}

#[test]
fn only_the_working_directorys_dot_env_is_read() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(
        parent.path().join(".env"),
        "AUTHD_DATABASE__URL=sqlite://from-parent.db\n",
    )
    .unwrap();
    let p = parent.path().join("work");
    std::fs::create_dir(&p).unwrap();
    run(authd(&p).arg("migrate"), None).ok();
    assert!(!parent.path().join("work/from-parent.db").exists());
    assert!(p.join("data/authd.db").exists(), "the default database");
}

#[test]
fn dot_env_is_read_and_real_environment_wins_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join(".env"),
        "# local settings\nAUTHD_DATABASE__URL=sqlite://from-dotenv.db\n",
    )
    .unwrap();
    run(authd(p).arg("migrate"), None).ok();
    assert_eq!(databases(p), vec!["from-dotenv.db".to_string()]);

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join(".env"),
        "AUTHD_DATABASE__URL=sqlite://from-dotenv.db\n",
    )
    .unwrap();
    run(
        authd(p)
            .env("AUTHD_DATABASE__URL", "sqlite://from-env-var.db")
            .arg("migrate"),
        None,
    )
    .ok();
    assert_eq!(databases(p), vec!["from-env-var.db".to_string()]);

    // .env sits above every file layer, and can choose AUTHD_ENV.
    let dir = layered_dir(true);
    let p = dir.path();
    std::fs::write(p.join(".env"), "AUTHD_ENV=staging\n").unwrap();
    run(authd(p).arg("migrate"), None).ok();
    assert_eq!(databases(p), vec!["from-staging.db".to_string()]);
    let dir = layered_dir(true);
    let p = dir.path();
    std::fs::write(
        p.join(".env"),
        "AUTHD_DATABASE__URL=sqlite://from-dotenv.db\n",
    )
    .unwrap();
    run(authd(p).args(["--config", "custom.toml", "migrate"]), None).ok();
    assert_eq!(databases(p), vec!["from-dotenv.db".to_string()]);

    // A bad value in .env is refused like any other.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "AUTHD_JWT__ACCESS_TTL=soon\n").unwrap();
    let out = run(authd(dir.path()).arg("migrate"), None);
    assert!(out.error_line().contains("jwt.access_ttl"), "{out:#?}");
}

#[test]
fn config_file_sets_the_bind_address_and_env_overrides_it() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("custom.toml"),
        format!("[server]\nbind = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let mut cmd = authd(dir.path());
    cmd.args(["--config", "custom.toml", "serve"]);
    let mut server = ServeChild::spawn(cmd);
    assert_eq!(server.addr.port(), port, "bound where the file says");
    assert_eq!(server.get("/healthz").status, 200);
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(30)).code(), Some(0));

    // A file address that cannot be bound (TEST-NET-1) is overridden by the environment.
    std::fs::write(
        dir.path().join("custom.toml"),
        "[server]\nbind = \"192.0.2.1:9\"\n",
    )
    .unwrap();
    let mut cmd = authd(dir.path());
    cmd.env("AUTHD_SERVER__BIND", "127.0.0.1:0")
        .args(["--config", "custom.toml", "serve"]);
    let server = ServeChild::spawn(cmd);
    assert!(server.addr.ip().is_loopback());
    assert_eq!(server.get("/healthz").status, 200);
}

fn strong_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn jwt_header(token: &str) -> Value {
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(&B64.decode(head).unwrap()).unwrap()
}

#[test]
fn configured_strong_secrets_need_no_key_dir() {
    for (algorithm, jwks_keys) in [("HS256", 0), ("EdDSA", 1)] {
        let dir = tempfile::tempdir().unwrap();
        // key_dir under a regular file: it can be neither created nor read.
        std::fs::write(dir.path().join("blocker"), "not a directory").unwrap();
        let key_dir = dir.path().join("blocker/keys");
        let key_dir = key_dir.to_str().unwrap();
        let (access, refresh) = (strong_secret(), strong_secret());
        let env = [
            ("AUTHD_JWT__ALGORITHM", algorithm),
            ("AUTHD_JWT__KEY_DIR", key_dir),
            ("AUTHD_JWT__ACCESS_SECRET", access.as_str()),
            ("AUTHD_JWT__REFRESH_SECRET", refresh.as_str()),
        ];

        // Control: without secrets the unusable key_dir stops serve.
        let out = run(
            authd(dir.path())
                .env("AUTHD_SERVER__BIND", "127.0.0.1:0")
                .env("AUTHD_JWT__ALGORITHM", algorithm)
                .env("AUTHD_JWT__KEY_DIR", key_dir)
                .arg("serve"),
            None,
        );
        out.error_line();

        let mut server = ServeChild::start(dir.path(), &env);
        let email = unique_email("cfg-secret");
        let data = server.register(&email);
        let token = data["accessToken"].as_str().unwrap().to_string();
        assert_eq!(jwt_header(&token)["alg"], algorithm);
        let profile = server.get_auth("/api/auth/profile", &token);
        assert_eq!(profile.status, 200, "{algorithm}: {}", profile.text);
        let refreshed = server.post_json(
            "/api/auth/refresh",
            json!({"refreshToken": data["refreshToken"]}),
        );
        assert_eq!(refreshed.status, 200, "{algorithm}: {}", refreshed.text);
        let jwks = server.get("/.well-known/jwks.json");
        assert_eq!(
            jwks.body["keys"].as_array().map(Vec::len),
            Some(jwks_keys),
            "{algorithm}: {}",
            jwks.text
        );
        let text = format!("{:?}{}", server.stdout_lines(), server.stderr_text());
        assert!(
            !text.contains(&access) && !text.contains(&refresh),
            "secrets are never logged"
        );
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(30)).code(), Some(0));
        drop(server);

        // The same secrets after a restart: tokens issued before still verify.
        let server = ServeChild::start(dir.path(), &env);
        let profile = server.get_auth("/api/auth/profile", &token);
        assert_eq!(profile.status, 200, "{algorithm}: {}", profile.text);
    }
}

#[test]
fn a_database_that_cannot_be_opened_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocker"), "not a directory").unwrap();
    let url = format!("sqlite://{}/blocker/authd.db", dir.path().display());
    let commands: [&[&str]; 4] = [
        &["serve"],
        &["migrate"],
        &["cleanup-tokens"],
        &["revoke-sessions", "--all", "--yes"],
    ];
    for args in commands {
        let out = run(
            authd(dir.path())
                .env("AUTHD_SERVER__BIND", "127.0.0.1:0")
                .env("AUTHD_DATABASE__URL", &url)
                .args(args),
            None,
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:#?}");
        out.error_line();
    }
}

#[test]
fn a_prefixed_cookie_name_without_secure_is_refused() {
    for name in [
        "__Host-authd_refresh",
        "__Secure-authd_refresh",
        "__host-authd_refresh",
    ] {
        let env = vec![
            ("AUTHD_COOKIE__NAME", name),
            ("AUTHD_COOKIE__SECURE", "false"),
        ];
        assert_refused(&Refusal {
            what: "prefixed cookie name, not Secure",
            env,
            file: None,
            names: vec!["cookie.secure", name],
            hidden: None,
        });
    }
}

#[test]
fn plain_http_on_a_public_address_with_a_secure_cookie_is_warned_about() {
    let warned = |env: &[(&str, &str)]| {
        let out = check_config_with("", env);
        out.ok();
        format!("{}{}", out.stdout, out.stderr).contains("plain HTTP on a non-loopback address")
    };
    assert!(warned(&[("AUTHD_SERVER__BIND", "0.0.0.0:8080")]));
    assert!(!warned(&[("AUTHD_SERVER__BIND", "127.0.0.1:8080")]));
    assert!(!warned(&[
        ("AUTHD_SERVER__BIND", "0.0.0.0:8080"),
        ("AUTHD_SERVER__TRUSTED_PROXIES", "10.0.0.1"),
    ]));
    assert!(!warned(&[
        ("AUTHD_SERVER__BIND", "0.0.0.0:8080"),
        ("AUTHD_COOKIE__SECURE", "false"),
    ]));
}

/// Every file the configuration reads (the config file, a `*_FILE` secret, the relay's CA
/// file) is read up to 1 MiB: a longer one, or `/dev/zero`, is one line and exit 1, not a
/// process that reads until memory runs out.
#[test]
fn a_file_longer_than_a_mebibyte_is_one_line_not_an_endless_read() {
    let dir = tempfile::tempdir().unwrap();
    let line_of = |args: &[&str], env: &[(&str, &str)]| {
        let out = run(authd(dir.path()).envs(env.iter().copied()).args(args), None);
        assert_eq!(out.status.code(), Some(1), "{out:#?}");
        out.error_line()
    };
    // A config file must be a file: a 2 MiB one of comments.
    std::fs::write(dir.path().join("big.toml"), "# a comment\n".repeat(200_000)).unwrap();
    let line = line_of(&["--config", "big.toml", "check-config"], &[]);
    assert!(
        line.contains("big.toml") && line.contains("larger than 1048576 bytes"),
        "{line}"
    );
    let line = line_of(
        &["check-config"],
        &[("AUTHD_JWT__ACCESS_SECRET_FILE", "/dev/zero")],
    );
    assert!(
        line.contains("AUTHD_JWT__ACCESS_SECRET_FILE") && line.contains("larger than"),
        "{line}"
    );
    let line = line_of(
        &["check-config"],
        &[
            ("AUTHD_EMAIL__TRANSPORT", "smtp"),
            ("AUTHD_EMAIL__FROM", "noreply@example.com"),
            ("AUTHD_EMAIL__LINK_BASE", "https://app.example.com"),
            ("AUTHD_EMAIL__SMTP_HOST", "smtp.example.com"),
            ("AUTHD_EMAIL__SMTP_CA_FILE", "/dev/zero"),
        ],
    );
    assert!(
        line.contains("email.smtp_ca_file") && line.contains("larger than"),
        "{line}"
    );
    assert!(!dir.path().join("data").exists());
}
