//! The JOSE header of an access token (RFC 7515 §4), over HTTP on both algorithms. Every
//! token here is signed with the server's own key (an Ed25519 key file placed in its key
//! directory before the first start, or its configured HS256 secret), so only the header can
//! make it fail: `crit` in any form, a key or certificate named or embedded by the header, a
//! `kid` that is not the server's. Tokens signed with an attacker's key carried in the header
//! are refused too, and a `jku` URL is never fetched. A control token signed the same way is
//! accepted, before and after the forgeries, so the verified-token cache cannot hide them.

use std::net::TcpListener;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::support::*;
use crate::tokens::{jwt_part, text};

/// The configured HS256 access secret (as `openssl rand -base64 48` prints).
const HS_SECRET: &str = "dN2y8QkV3u0XbJ5wTq7LmE1rZc9HsAf4PgK6oYi2WnRxUe8BtMj0CvDl3aSzGh5F";

enum Key {
    Ed25519(SigningKey),
    Hmac(Vec<u8>),
}

impl Key {
    /// `<header>.<claims>.<signature>`: `header` is the exact JSON text (so that duplicate or
    /// escaped member names survive), signed with this key.
    fn sign(&self, header: &str, claims: &Value) -> String {
        let input = format!("{}.{}", B64.encode(header), B64.encode(claims.to_string()));
        let sig = match self {
            Key::Ed25519(k) => k.sign(input.as_bytes()).to_bytes().to_vec(),
            Key::Hmac(secret) => {
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
                mac.update(input.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
        };
        format!("{input}.{}", B64.encode(sig))
    }

    /// The key as a JWK (what an attacker embeds in `jwk` or serves at a `jku`).
    fn jwk(&self) -> Value {
        match self {
            Key::Ed25519(k) => json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                "x": B64.encode(k.verifying_key().as_bytes()),
            }),
            Key::Hmac(secret) => json!({ "kty": "oct", "alg": "HS256", "k": B64.encode(secret) }),
        }
    }
}

/// A running server, its own signing key, the `alg` and `kid` of the tokens it issues, and the
/// claims of a signed-in user's access token.
struct Forger {
    server: TestServer,
    key: Key,
    alg: &'static str,
    kid: String,
    claims: Value,
}

impl Forger {
    /// An EdDSA server whose Ed25519 key the test wrote into its key directory.
    fn eddsa() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let pem = key.to_pkcs8_pem(Default::default()).unwrap();
        let file = keys.join("access_ed25519.pem");
        std::fs::write(&file, pem.as_bytes()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let server = TestServer::in_dir(dir, &[]);
        Self::signed_in(server, Key::Ed25519(key), "EdDSA")
    }

    /// An HS256 server with a configured secret.
    fn hs256() -> Self {
        let server = TestServer::with(&[
            ("AUTHD_JWT__ALGORITHM", "HS256"),
            ("AUTHD_JWT__ACCESS_SECRET", HS_SECRET),
        ]);
        Self::signed_in(server, Key::Hmac(HS_SECRET.as_bytes().to_vec()), "HS256")
    }

    fn signed_in(server: TestServer, key: Key, alg: &'static str) -> Self {
        let access = text(&server.register(&unique_email("jws")), "accessToken");
        let header = jwt_part(&access, 0);
        assert_eq!(header["alg"], alg);
        let kid = text(&header, "kid");
        let mut claims = jwt_part(&access, 1);
        claims["role"] = json!("admin");
        let forger = Forger {
            server,
            key,
            alg,
            kid,
            claims,
        };
        // The test really holds the server's key: its own header, re-signed, is accepted.
        forger.assert_accepted(&forger.header(""), "control");
        forger
    }

    /// `{"alg": <ours>, "typ": "at+jwt", "kid": <ours>` + `extra` + `}`.
    fn header(&self, extra: &str) -> String {
        format!(
            r#"{{"alg":"{}","typ":"at+jwt","kid":"{}"{extra}}}"#,
            self.alg, self.kid
        )
    }

    /// The user's claims with a fresh `jti` (each token's text differs, so none is cached).
    fn claims(&self) -> Value {
        let mut claims = self.claims.clone();
        claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
        claims
    }

    fn assert_accepted(&self, header: &str, what: &str) {
        let token = self.key.sign(header, &self.claims());
        let r = self.server.get_auth("/api/auth/profile", &token);
        assert_eq!(r.status, 200, "{} {what}: {header}: {}", self.alg, r.text);
    }

    /// `token` is refused with 401 TOKEN_INVALID and an RFC 6750 challenge, twice in a row
    /// (the second time the verified-token cache would answer if it had kept it).
    fn assert_invalid_token(&self, token: &str, what: &str) {
        for attempt in ["first", "again"] {
            let r = self.server.get_auth("/api/auth/profile", token);
            assert_eq!(
                (r.status, r.body["error"].as_str()),
                (401, Some("TOKEN_INVALID")),
                "{} {what} ({attempt}): {}",
                self.alg,
                r.text
            );
            r.assert_error(401, "TOKEN_INVALID");
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.contains(r#"error="invalid_token""#),
                "{what}: {challenge:?}"
            );
        }
    }

    fn assert_invalid(&self, header: &str, what: &str) {
        self.assert_invalid_token(&self.key.sign(header, &self.claims()), what);
    }
}

fn forgers() -> [Forger; 2] {
    [Forger::eddsa(), Forger::hs256()]
}

#[test]
fn a_crit_header_makes_a_correctly_signed_token_invalid() {
    for f in forgers() {
        // A parameter that is not critical is ignored (RFC 7515 §4): the control.
        f.assert_accepted(
            &f.header(r#","x-authd-policy":"require-mfa""#),
            "non-critical extension",
        );
        // One token, first verified (and cached) as it was issued, then with `crit` added.
        let claims = f.claims();
        let plain = f.key.sign(&f.header(""), &claims);
        assert_eq!(
            f.server.get_auth("/api/auth/profile", &plain).status,
            200,
            "{}",
            f.alg
        );
        let policy = f.key.sign(
            &f.header(r#","crit":["x-authd-policy"],"x-authd-policy":"require-mfa""#),
            &claims,
        );
        f.assert_invalid_token(
            &policy,
            "crit naming an extension authd does not understand",
        );
        for (extra, what) in [
            (r#","crit":[]"#, "empty crit"),
            (r#","crit":["x-absent"]"#, "crit naming an absent parameter"),
            (r#","crit":["exp"]"#, "crit naming a claim"),
            (r#","crit":["alg"]"#, "crit naming a registered parameter"),
            (
                r#","crit":"x-authd-policy","x-authd-policy":"require-mfa""#,
                "crit as a string",
            ),
            (r#","crit":null"#, "crit null"),
            (
                r#","b64":false,"crit":["b64"]"#,
                "RFC 7797 unencoded payload",
            ),
            (
                r#","\u0063rit":["x-authd-policy"],"x-authd-policy":"1""#,
                "escaped crit",
            ),
        ] {
            f.assert_invalid(&f.header(extra), what);
        }
        // The cache still holds the plain token, and only it.
        assert_eq!(f.server.get_auth("/api/auth/profile", &plain).status, 200);
    }
}

#[test]
fn keys_named_or_embedded_by_the_header_are_never_used() {
    // A `jku` target that would record any fetch.
    let jwks_host = TcpListener::bind("127.0.0.1:0").unwrap();
    jwks_host.set_nonblocking(true).unwrap();
    let jku = format!("http://{}/jwks.json", jwks_host.local_addr().unwrap());
    for f in forgers() {
        let attacker = match f.key {
            Key::Ed25519(_) => Key::Ed25519(SigningKey::from_bytes(&rand::random::<[u8; 32]>())),
            Key::Hmac(_) => Key::Hmac(rand::random::<[u8; 32]>().to_vec()),
        };
        let evil = attacker.jwk();
        let ours = f.key.jwk();
        let x5c = B64.encode([rand::random::<[u8; 32]>(), rand::random()].concat());
        let alg = f.alg;
        // Signed with the attacker's key, which the header supplies or points at.
        for (header, what) in [
            (format!(r#"{{"alg":"{alg}","jwk":{evil}}}"#), "jwk"),
            (f.header(&format!(r#","jwk":{evil}"#)), "jwk with our kid"),
            (
                format!(r#"{{"alg":"{alg}","jku":"{jku}","kid":"attacker"}}"#),
                "jku",
            ),
            (format!(r#"{{"alg":"{alg}","x5u":"{jku}"}}"#), "x5u"),
            (format!(r#"{{"alg":"{alg}","x5c":["{x5c}"]}}"#), "x5c"),
        ] {
            f.assert_invalid_token(&attacker.sign(&header, &f.claims()), what);
        }
        // Signed with the server's own key: a header naming any key is still refused.
        for (extra, what) in [
            (format!(r#","jwk":{ours}"#), "our own jwk"),
            (format!(r#","jwk":{evil}"#), "an attacker's jwk"),
            (format!(r#","jku":"{jku}""#), "jku"),
            (format!(r#","x5u":"{jku}""#), "x5u"),
            (format!(r#","x5c":["{x5c}"]"#), "x5c"),
            (r#","x5t":"bm90IGEga2V5""#.to_string(), "x5t"),
            (r#","x5t#S256":"bm90IGEga2V5""#.to_string(), "x5t#S256"),
        ] {
            f.assert_invalid(&f.header(&extra), what);
        }
        // A kid that is not one of ours, however it is spelled.
        for kid in [
            "attacker".to_string(),
            String::new(),
            format!("{} ", f.kid),
            f.kid.to_lowercase() + "x",
            "../../../../../../dev/null".into(),
            "/etc/passwd".into(),
            "' OR '1'='1".into(),
            jku.clone(),
        ] {
            let header = format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":{}}}"#, json!(kid));
            f.assert_invalid(&header, &format!("kid {kid:?}"));
        }
        let duplicate = format!(r#"{{"alg":"{alg}","kid":"attacker","kid":"{}"}}"#, f.kid);
        f.assert_invalid(&duplicate, "kid named twice");
        f.assert_accepted(&f.header(""), "control after the forgeries");
    }
    // A fetch would have been queued on the listener before the 401 was answered.
    match jwks_host.accept() {
        Ok((_, peer)) => panic!("the server fetched a URL named by a token header ({peer})"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}
