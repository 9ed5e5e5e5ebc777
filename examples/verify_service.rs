//! A small service that trusts authd's access tokens, verified offline with `jsonwebtoken`
//! and a cached JWKS fetch (run: `cargo run --example verify_service`).
//!
//! The key set comes from authd's JWKS endpoint and is cached for `JWKS_CACHE_SECONDS`; a
//! token naming a key id that is not in the cache triggers one refetch (at most once per
//! `JWKS_COOLDOWN_SECONDS`), which is how a key rotation is picked up. Each token is checked
//! for its signature, the algorithm (EdDSA only, whatever the token says), `typ` (`at+jwt`,
//! RFC 9068), `iss`, `aud` and `exp`. Beside the JWKS cache, a background task polls authd's
//! revoked-session feed every `pollAfter` seconds and refuses the tokens of sessions that were
//! revoked (logout, logout-all, an admin's revocation, ...) before they expire.
//!
//! `GET /whoami` with `Authorization: Bearer <access token>`: 200 `{"sub", "sid", "role",
//! "kid"}` or 401 `{"error": "invalid_token", "message"}`.
//!
//! Environment: `AUTHD_JWKS_URL` (default `http://127.0.0.1:8080/.well-known/jwks.json`),
//! `AUTHD_ISSUER` / `AUTHD_AUDIENCE` (default `authd`), `JWKS_CACHE_SECONDS` (default 300),
//! `JWKS_COOLDOWN_SECONDS` (default 30), `AUTHD_REVOCATION_FEED_URL` (default: the JWKS URL
//! with `/.well-known/revoked-sessions` in place of `/.well-known/jwks.json`), `PORT` (default
//! 9003, on 127.0.0.1).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// One answer of authd's revoked-session feed.
#[derive(Debug, Deserialize)]
struct FeedAnswer {
    revoked: Vec<FeedEntry>,
    cursor: String,
    #[serde(rename = "pollAfter")]
    poll_after: u64,
}

#[derive(Debug, Deserialize)]
struct FeedEntry {
    sid: String,
    exp: i64,
}

/// An entry is kept this long past its `exp`: longer than any verifier's clock leeway.
const KEEP_PAST_EXP: i64 = 60;

/// authd's revoked-session feed (`GET /.well-known/revoked-sessions`), polled in the
/// background: the ids of revoked sessions whose tokens have not expired yet, with their `exp`.
struct RevokedSessions {
    url: String,
    client: reqwest::Client,
    revoked: RwLock<HashMap<String, i64>>,
}

impl RevokedSessions {
    fn is_revoked(&self, sid: &str) -> bool {
        self.revoked
            .read()
            .map(|r| r.contains_key(sid))
            .unwrap_or(true)
    }

    /// Reads what was revoked since `cursor`; returns the next cursor and the seconds to wait.
    /// A 400 (a cursor too old, or from another database) starts again without one.
    async fn poll_once(&self, cursor: Option<String>) -> Result<(Option<String>, u64), String> {
        let mut req = self.client.get(&self.url).timeout(Duration::from_secs(5));
        if let Some(c) = &cursor {
            req = req.query(&[("since", c)]);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if resp.status() == reqwest::StatusCode::BAD_REQUEST {
            return Ok((None, 0));
        }
        let answer: FeedAnswer = resp
            .error_for_status()
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if let Ok(mut revoked) = self.revoked.write() {
            for e in answer.revoked {
                revoked.insert(e.sid, e.exp);
            }
            revoked.retain(|_, exp| *exp + KEEP_PAST_EXP >= now);
        }
        Ok((Some(answer.cursor), answer.poll_after.max(1)))
    }

    async fn poll_forever(self: Arc<Self>) {
        let mut cursor = None;
        loop {
            let wait = match self.poll_once(cursor.clone()).await {
                Ok((next, wait)) => {
                    cursor = next;
                    wait
                }
                Err(e) => {
                    // authd unreachable: keep what we know, try again.
                    eprintln!("revoked-session feed: {e}");
                    5
                }
            };
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }
}

/// Checks `token` against authd's keys and the expected issuer and audience.
async fn verify(
    jwks: &Jwks,
    revoked: &RevokedSessions,
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
    if revoked.is_revoked(&c.sid) {
        return Err("session revoked".into());
    }
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
    let jwks_url = env(
        "AUTHD_JWKS_URL",
        "http://127.0.0.1:8080/.well-known/jwks.json",
    );
    let revoked = Arc::new(RevokedSessions {
        url: env(
            "AUTHD_REVOCATION_FEED_URL",
            &jwks_url.replace("/.well-known/jwks.json", "/.well-known/revoked-sessions"),
        ),
        client: reqwest::Client::new(),
        revoked: RwLock::new(HashMap::new()),
    });
    tokio::spawn(revoked.clone().poll_forever());
    let jwks = Arc::new(Jwks {
        url: jwks_url,
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
            let (jwks, validation, revoked) = (jwks.clone(), validation.clone(), revoked.clone());
            async move {
                let result = match auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
                    None => Err("no bearer token".to_string()),
                    Some(token) => verify(&jwks, &revoked, &validation, token).await,
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
