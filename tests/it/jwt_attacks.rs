//! Forged and doctored access tokens: every one must be refused on /api/auth/profile with
//! 401 TOKEN_INVALID (or TOKEN_EXPIRED when only its lifetime is wrong). Claims tricks use an
//! HS256 server whose secret the test knows, so each forgery is otherwise validly signed; a
//! control token signed the same way is accepted, proving the signing is right.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, Verifier};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::*;
use crate::tokens::{jwt_part, text};

/// The HS256 access secret of `hs256_server`: long, many distinct bytes, no placeholder words.
const HS_SECRET: &str = "q7Vt9#mZr2$Lw8!pKx4&Nd6*Hj3@Fs5^Bc1%Ye0+Ug";

fn hs256_server() -> TestServer {
    TestServer::with(&[
        ("AUTHD_JWT__ALGORITHM", "HS256"),
        ("AUTHD_JWT__ACCESS_SECRET", HS_SECRET),
    ])
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn enc(v: &Value) -> String {
    B64.encode(v.to_string())
}

/// `header.claims.signature` from JSON parts and a ready-made signature segment.
fn forge(header: &Value, claims: &Value, sig: &str) -> String {
    format!("{}.{}.{sig}", enc(header), enc(claims))
}

fn signature_of(token: &str) -> String {
    token.rsplit('.').next().unwrap().to_string()
}

fn hmac_sig(alg: &str, key: &[u8], signing_input: &str) -> String {
    let bytes = match alg {
        "HS256" => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            m.update(signing_input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        "HS384" => {
            let mut m = Hmac::<sha2::Sha384>::new_from_slice(key).unwrap();
            m.update(signing_input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        "HS512" => {
            let mut m = Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
            m.update(signing_input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        other => panic!("no HMAC for {other}"),
    };
    B64.encode(bytes)
}

/// A token whose header and claims are as given, HMAC-signed with `key` under `header.alg`.
fn hmac_token(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!("{}.{}", enc(header), enc(claims));
    let sig = hmac_sig(header["alg"].as_str().unwrap(), key, &input);
    format!("{input}.{sig}")
}

/// A token Ed25519-signed with `key`; the signature is checked locally so that a refusal
/// can only be the server's doing.
fn ed_token(header: &Value, claims: &Value, key: &SigningKey) -> String {
    let input = format!("{}.{}", enc(header), enc(claims));
    let sig = key.sign(input.as_bytes());
    assert!(key.verifying_key().verify(input.as_bytes(), &sig).is_ok());
    format!("{input}.{}", B64.encode(sig.to_bytes()))
}

fn attacker_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

fn attacker_jwk(key: &SigningKey) -> Value {
    json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": B64.encode(key.verifying_key().as_bytes()),
        "alg": "EdDSA",
        "use": "sig",
        "kid": "attacker",
    })
}

/// Signs `claims` with the test server's HS256 secret through the `jsonwebtoken` crate.
fn hs_sign(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

/// The claims of a real login's access token, with a fresh `jti`, `iat` and `exp`.
fn fresh_claims(access: &str) -> Value {
    let mut claims = jwt_part(access, 1);
    let t = now();
    claims["iat"] = json!(t);
    claims["exp"] = json!(t + 600);
    claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
    claims
}

fn assert_accepted(s: &TestServer, token: &str) {
    let r = s.get_auth("/api/auth/profile", token);
    assert_eq!(r.status, 200, "control token refused: {}", r.text);
}

fn assert_invalid(s: &TestServer, token: &str, what: &str) {
    let r = s.get_auth("/api/auth/profile", token);
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (401, Some("TOKEN_INVALID")),
        "{what}: {}",
        r.text
    );
    r.assert_error(401, "TOKEN_INVALID");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains(r#"error="invalid_token""#),
        "{what}: challenge {challenge:?}"
    );
}

/// An EdDSA server with one signed-in user; returns the server and the login's `data`.
fn ed_server_with_login() -> (TestServer, Value) {
    let s = TestServer::start();
    let data = s.register(&unique_email("attack"));
    assert_accepted(&s, &text(&data, "accessToken"));
    (s, data)
}

#[test]
fn alg_none_is_refused_in_every_spelling() {
    let (s, data) = ed_server_with_login();
    let access = text(&data, "accessToken");
    let claims = jwt_part(&access, 1);
    let original_header = jwt_part(&access, 0);
    let sig = signature_of(&access);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let minimal = json!({ "alg": alg, "typ": "JWT" });
        let mut kept = original_header.clone();
        kept["alg"] = json!(alg);
        for header in [&minimal, &kept] {
            assert_invalid(&s, &forge(header, &claims, ""), "alg none, no signature");
            assert_invalid(
                &s,
                &forge(header, &claims, &sig),
                "alg none, original signature",
            );
            let two_parts = format!("{}.{}", enc(header), enc(&claims));
            assert_invalid(&s, &two_parts, "alg none, two segments");
        }
    }

    // The same on a server that uses HS256.
    let hs = hs256_server();
    let access = text(&hs.register(&unique_email("none")), "accessToken");
    assert_accepted(&hs, &access);
    let claims = jwt_part(&access, 1);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({ "alg": alg, "typ": "JWT" });
        assert_invalid(&hs, &forge(&header, &claims, ""), "HS256 server, alg none");
        assert_invalid(
            &hs,
            &forge(&header, &claims, &signature_of(&access)),
            "HS256 server, alg none with signature",
        );
    }
}

#[test]
fn empty_truncated_or_borrowed_signatures_are_refused() {
    let (s, data) = ed_server_with_login();
    let access = text(&data, "accessToken");
    let (signed, sig) = access.rsplit_once('.').unwrap();
    assert_invalid(&s, &format!("{signed}."), "empty signature");
    assert_invalid(&s, signed, "no signature segment");
    assert_invalid(
        &s,
        &format!("{signed}.{}", &sig[..sig.len() - 4]),
        "truncated signature",
    );
    assert_invalid(&s, &format!("{signed}.{sig}.{sig}"), "four segments");
    let other = text(&s.login(&text(&data["user"], "email")), "accessToken");
    assert_invalid(
        &s,
        &format!("{signed}.{}", signature_of(&other)),
        "another token's signature",
    );
    let mut zeros = B64.decode(sig).unwrap();
    zeros.iter_mut().for_each(|b| *b = 0);
    assert_invalid(
        &s,
        &format!("{signed}.{}", B64.encode(zeros)),
        "zero signature",
    );
    assert_accepted(&s, &access);
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let (s, data) = ed_server_with_login();
    let access = text(&data, "accessToken");
    let jwks = send(s.get("/.well-known/jwks.json"));
    let key = &jwks.body["keys"][0];
    let x = text(key, "x");
    let raw = B64.decode(&x).unwrap();
    assert_eq!(raw.len(), 32);
    let claims = jwt_part(&access, 1);
    let mut original_header = jwt_part(&access, 0);
    original_header["alg"] = json!("HS256");
    for header in [json!({ "alg": "HS256", "typ": "JWT" }), original_header] {
        for secret in [raw.as_slice(), x.as_bytes(), key.to_string().as_bytes()] {
            assert_invalid(
                &s,
                &hmac_token(&header, &claims, secret),
                "HS256 keyed with the public key",
            );
        }
    }
    let mut admin = claims.clone();
    admin["role"] = json!("admin");
    assert_invalid(
        &s,
        &hmac_token(&json!({ "alg": "HS256", "typ": "JWT" }), &admin, &raw),
        "HS256 keyed with the public key, role admin",
    );
}

#[test]
fn a_tampered_payload_is_refused() {
    let (s, data) = ed_server_with_login();
    let access = text(&data, "accessToken");
    let other = s.register(&unique_email("victim"));
    let header = jwt_part(&access, 0);
    let claims = jwt_part(&access, 1);
    let sig = signature_of(&access);
    let victim = jwt_part(&text(&other, "accessToken"), 1);
    let tweaks: [(&str, Value); 5] = [
        ("role", json!("admin")),
        ("exp", json!(claims["exp"].as_i64().unwrap() + 86_400)),
        ("sub", victim["sub"].clone()),
        ("sid", victim["sid"].clone()),
        ("jti", json!(uuid::Uuid::new_v4().to_string())),
    ];
    for (field, value) in tweaks {
        let mut changed = claims.clone();
        changed[field] = value;
        assert_invalid(&s, &forge(&header, &changed, &sig), field);
    }
    // Same claims re-encoded with different whitespace are different bytes too.
    let pretty = format!(
        "{}.{}.{sig}",
        access.split('.').next().unwrap(),
        B64.encode(serde_json::to_string_pretty(&claims).unwrap())
    );
    assert_invalid(&s, &pretty, "re-encoded payload");
    assert_accepted(&s, &access);
}

#[test]
fn a_different_alg_header_is_refused() {
    let (s, data) = ed_server_with_login();
    let access = text(&data, "accessToken");
    let claims = jwt_part(&access, 1);
    let sig = signature_of(&access);
    for alg in [
        "RS256", "HS256", "HS512", "ES256", "PS256", "Ed25519", "eddsa", "",
    ] {
        let mut header = jwt_part(&access, 0);
        header["alg"] = json!(alg);
        assert_invalid(&s, &forge(&header, &claims, &sig), alg);
    }
    let mut no_alg = jwt_part(&access, 0);
    no_alg.as_object_mut().unwrap().remove("alg");
    assert_invalid(&s, &forge(&no_alg, &claims, &sig), "no alg");

    // On an HS256 server, other HMAC algorithms correctly keyed with its own secret.
    let hs = hs256_server();
    let access = text(&hs.register(&unique_email("hsalg")), "accessToken");
    let claims = fresh_claims(&access);
    let control = hmac_token(
        &json!({ "alg": "HS256", "typ": "JWT" }),
        &claims,
        HS_SECRET.as_bytes(),
    );
    assert_accepted(&hs, &control);
    for alg in ["HS384", "HS512"] {
        let header = json!({ "alg": alg, "typ": "JWT" });
        assert_invalid(
            &hs,
            &hmac_token(&header, &claims, HS_SECRET.as_bytes()),
            alg,
        );
    }
    let header = json!({ "alg": "EdDSA", "typ": "JWT" });
    assert_invalid(
        &hs,
        &ed_token(&header, &claims, &attacker_key()),
        "EdDSA on HS256 server",
    );
}

#[test]
fn an_attackers_key_in_jwk_jku_or_kid_headers_is_refused() {
    let (s, data) = ed_server_with_login();
    let access = text(&data, "accessToken");
    let server_kid = jwt_part(&access, 0)["kid"].clone();
    let claims = jwt_part(&access, 1);
    let mut admin = claims.clone();
    admin["role"] = json!("admin");
    let evil = attacker_key();
    let jwk = attacker_jwk(&evil);
    let jku = format!("http://{}/.well-known/jwks.json", s.addr);
    let headers = [
        json!({ "alg": "EdDSA", "typ": "at+jwt", "jwk": jwk }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "jwk": jwk, "kid": "attacker" }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "jwk": jwk, "kid": server_kid }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "jku": jku, "kid": "attacker" }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "jku": "https://evil.invalid/jwks.json" }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "x5u": "https://evil.invalid/cert.pem" }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": server_kid }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "../../etc/passwd" }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "/dev/null" }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "' OR '1'='1" }),
    ];
    for header in &headers {
        for body in [&claims, &admin] {
            assert_invalid(&s, &ed_token(header, body, &evil), &header.to_string());
        }
    }
    // kid pointing at an empty or well-known file, HMAC-signed with that file's content.
    for (kid, key) in [
        ("../../../../../../dev/null", &b""[..]),
        ("/dev/null", &b""[..]),
        (
            "../../etc/passwd",
            &b"root:x:0:0:root:/root:/bin/bash\n"[..],
        ),
    ] {
        let header = json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
        assert_invalid(&s, &hmac_token(&header, &claims, key), kid);
    }
    assert_accepted(&s, &access);
}

#[test]
fn tokens_signed_by_another_servers_key_are_refused() {
    let (a, _) = ed_server_with_login();
    let b = TestServer::start();
    let foreign = text(&b.register(&unique_email("foreign")), "accessToken");
    assert_accepted(&b, &foreign);
    assert_invalid(&a, &foreign, "EdDSA token of another server");

    let hs = hs256_server();
    let data = hs.register(&unique_email("hskey"));
    let claims = fresh_claims(&text(&data, "accessToken"));
    let header = json!({ "alg": "HS256", "typ": "JWT" });
    assert_accepted(&hs, &hmac_token(&header, &claims, HS_SECRET.as_bytes()));
    let wrong = "Wk3#pR8$tY1!vN6&cM0*qL5@hG2^jD9%sF4+xB7";
    assert_invalid(
        &hs,
        &hmac_token(&header, &claims, wrong.as_bytes()),
        "wrong secret",
    );
    assert_invalid(&hs, &hmac_token(&header, &claims, b""), "empty secret");
}

#[test]
fn a_correctly_self_signed_token_is_accepted() {
    let s = hs256_server();
    let data = s.register(&unique_email("control"));
    let access = text(&data, "accessToken");
    assert_eq!(jwt_part(&access, 0)["alg"], "HS256");
    let claims = fresh_claims(&access);
    assert_accepted(&s, &hs_sign(&claims));
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    let with_typ = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap();
    assert_accepted(&s, &with_typ);
    // The manual signer agrees with the crate.
    assert_accepted(
        &s,
        &hmac_token(
            &json!({ "alg": "HS256", "typ": "JWT" }),
            &claims,
            HS_SECRET.as_bytes(),
        ),
    );
    let profile = s.get_auth("/api/auth/profile", &hs_sign(&claims));
    assert_eq!(profile.body["data"]["user"]["id"], data["user"]["id"]);
}

#[test]
fn a_wrong_or_missing_issuer_or_audience_is_refused() {
    let s = hs256_server();
    let access = text(&s.register(&unique_email("issaud")), "accessToken");
    let claims = fresh_claims(&access);
    assert_accepted(&s, &hs_sign(&claims));
    let cases: [(&str, Option<Value>); 7] = [
        ("iss", None),
        ("iss", Some(json!("evil"))),
        ("iss", Some(json!(""))),
        ("iss", Some(json!("AUTHD"))),
        ("aud", None),
        ("aud", Some(json!("evil"))),
        ("aud", Some(json!(["evil", "other"]))),
    ];
    for (field, value) in cases {
        let mut c = claims.clone();
        match &value {
            Some(v) => c[field] = v.clone(),
            None => {
                c.as_object_mut().unwrap().remove(field);
            }
        }
        assert_invalid(&s, &hs_sign(&c), &format!("{field} = {value:?}"));
    }
}

#[test]
fn nbf_or_iat_in_the_future_is_refused() {
    let s = hs256_server();
    let access = text(&s.register(&unique_email("future")), "accessToken");
    let claims = fresh_claims(&access);
    let t = now();

    let mut past_nbf = claims.clone();
    past_nbf["nbf"] = json!(t - 5);
    assert_accepted(&s, &hs_sign(&past_nbf));
    let mut future_nbf = claims.clone();
    future_nbf["nbf"] = json!(t + 600);
    assert_invalid(&s, &hs_sign(&future_nbf), "nbf in the future");

    let mut future_iat = claims.clone();
    future_iat["iat"] = json!(t + 600);
    future_iat["exp"] = json!(t + 1200);
    assert_invalid(&s, &hs_sign(&future_iat), "iat in the future");
    // Within the default 30s leeway, a slightly fast clock is tolerated.
    let mut slight = claims.clone();
    slight["iat"] = json!(t + 5);
    assert_accepted(&s, &hs_sign(&slight));
}

#[test]
fn a_correctly_signed_expired_token_is_token_expired() {
    let s = hs256_server();
    let access = text(&s.register(&unique_email("expired")), "accessToken");
    let mut claims = fresh_claims(&access);
    let t = now();
    claims["iat"] = json!(t - 1500);
    claims["exp"] = json!(t - 600);
    let r = s.get_auth("/api/auth/profile", &hs_sign(&claims));
    r.assert_error(401, "TOKEN_EXPIRED");
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .contains(r#"error="invalid_token""#));
    // Inside the leeway it still passes.
    claims["exp"] = json!(t - 5);
    assert_accepted(&s, &hs_sign(&claims));
}

#[test]
fn a_correctly_signed_token_for_a_missing_or_foreign_session_is_refused() {
    let s = hs256_server();
    let mine = text(&s.register(&unique_email("sid")), "accessToken");
    let theirs = text(&s.register(&unique_email("sid-other")), "accessToken");
    let claims = fresh_claims(&mine);
    let other = jwt_part(&theirs, 1);
    assert_accepted(&s, &hs_sign(&claims));

    let mut cases = Vec::new();
    let mut c = claims.clone();
    c["sid"] = json!(uuid::Uuid::new_v4().to_string());
    cases.push(("unknown sid", c));
    let mut c = claims.clone();
    c["sid"] = other["sid"].clone();
    cases.push(("another user's sid", c));
    let mut c = claims.clone();
    c["sub"] = other["sub"].clone();
    cases.push(("another user's sub", c));
    let mut c = claims.clone();
    c["sub"] = json!(uuid::Uuid::new_v4().to_string());
    cases.push(("unknown sub", c));
    let mut c = claims.clone();
    c["sid"] = json!("not-a-uuid");
    cases.push(("non-UUID sid", c));
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove("sid");
    cases.push(("no sid", c));
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove("exp");
    cases.push(("no exp", c));
    for (what, c) in cases {
        assert_invalid(&s, &hs_sign(&c), what);
    }
    assert_accepted(&s, &hs_sign(&claims));
}
