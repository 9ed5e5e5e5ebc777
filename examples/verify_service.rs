//! A small service that trusts authd's access tokens, verified offline with `jsonwebtoken`
//! and a cached JWKS fetch (run: `cargo run --example verify_service`).
//!
//! The key set comes from authd's JWKS endpoint and is cached for `JWKS_CACHE_SECONDS`; a
//! token naming a key id that is not in the cache triggers one refetch (at most once per
//! `JWKS_COOLDOWN_SECONDS`), which is how a key rotation is picked up. Each token is checked
//! for its signature, the algorithm (EdDSA only, whatever the token says), `typ` (`at+jwt`,
//! RFC 9068), `iss`, `aud` and `exp`.
//!
//! `GET /whoami` with `Authorization: Bearer <access token>`: 200 `{"sub", "sid", "role",
//! "kid"}` or 401 `{"error": "invalid_token", "message"}`.
//!
//! Environment: `AUTHD_JWKS_URL` (default `http://127.0.0.1:8080/.well-known/jwks.json`),
//! `AUTHD_ISSUER` / `AUTHD_AUDIENCE` (default `authd`), `JWKS_CACHE_SECONDS` (default 300),
//! `JWKS_COOLDOWN_SECONDS` (default 30), `PORT` (default 9003, on 127.0.0.1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;
use warp::http::StatusCode;
use warp::Filter;

/// The claims this service reads (authd's access tokens carry no personal data).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    role: String,
}

/// authd's key set, fetched on demand and kept for `max_age`.
struct Jwks {
    url: String,
    client: reqwest::Client,
    max_age: Duration,
    cooldown: Duration,
    cached: Mutex<Option<(Instant, JwkSet)>>,
}

impl Jwks {
    /// The decoding key for `kid`: from the cache while it is fresh and holds the kid,
    /// else from a new fetch (no more than one per `cooldown` for unknown kids).
    async fn key(&self, kid: &str) -> Result<DecodingKey, String> {
        let mut cached = self.cached.lock().await;
        let fresh = |at: &Instant, limit: Duration| at.elapsed() < limit;
        let refetch = match &*cached {
            None => true,
            Some((at, _)) if !fresh(at, self.max_age) => true,
            Some((at, set)) => set.find(kid).is_none() && !fresh(at, self.cooldown),
        };
        if refetch {
            let set: JwkSet = self
                .client
                .get(&self.url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("cannot fetch the JWKS: {e}"))?
                .json()
                .await
                .map_err(|e| format!("bad JWKS: {e}"))?;
            *cached = Some((Instant::now(), set));
        }
        let (_, set) = cached.as_ref().expect("filled above");
        let jwk = set
            .find(kid)
            .ok_or_else(|| format!("unknown key id {kid}"))?;
        DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key {kid}: {e}"))
    }
}

/// Checks `token` against authd's keys and the expected issuer and audience.
async fn verify(
    jwks: &Jwks,
    validation: &Validation,
    token: &str,
) -> Result<serde_json::Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err("not an access token (typ)".into());
    }
    let kid = header.kid.ok_or("token names no key id")?;
    let key = jwks.key(&kid).await?;
    let data =
        jsonwebtoken::decode::<Claims>(token, &key, validation).map_err(|e| e.to_string())?;
    let c = data.claims;
    Ok(serde_json::json!({ "sub": c.sub, "sid": c.sid, "role": c.role, "kid": kid }))
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

#[tokio::main]
async fn main() {
    let jwks = Arc::new(Jwks {
        url: env(
            "AUTHD_JWKS_URL",
            "http://127.0.0.1:8080/.well-known/jwks.json",
        ),
        client: reqwest::Client::new(),
        max_age: secs("JWKS_CACHE_SECONDS", 300),
        cooldown: secs("JWKS_COOLDOWN_SECONDS", 30),
        cached: Mutex::new(None),
    });
    // Pinned algorithm; `exp` (with jsonwebtoken's default 60 s leeway), `iss` and `aud` required.
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[env("AUTHD_ISSUER", "authd")]);
    validation.set_audience(&[env("AUTHD_AUDIENCE", "authd")]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let validation = Arc::new(validation);

    let whoami = warp::path!("whoami")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .then(move |auth: Option<String>| {
            let (jwks, validation) = (jwks.clone(), validation.clone());
            async move {
                let result = match auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
                    None => Err("no bearer token".to_string()),
                    Some(token) => verify(&jwks, &validation, token).await,
                };
                match result {
                    Ok(who) => warp::reply::with_status(warp::reply::json(&who), StatusCode::OK),
                    Err(why) => warp::reply::with_status(
                        warp::reply::json(
                            &serde_json::json!({"error": "invalid_token", "message": why}),
                        ),
                        StatusCode::UNAUTHORIZED,
                    ),
                }
            }
        });
    let port: u16 = env("PORT", "9003").parse().expect("PORT is a port number");
    println!("rust verifier listening on http://127.0.0.1:{port}");
    warp::serve(whoami).run(([127, 0, 0, 1], port)).await;
}
