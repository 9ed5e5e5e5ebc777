//! The load generator: C keep-alive HTTP/1 connections (hyper 1 client over tokio TCP) to a
//! server on 127.0.0.1, one request in flight per connection, for a warm-up and then a
//! measured window. Every expected answer completed inside the window is counted and its
//! latency (request built to body fully read) recorded; every answer, warm-up and the
//! stragglers after the window included, is checked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

/// Upper bound on the requests one connection sends in one run.
const MAX_REQUESTS_PER_CONNECTION: u64 = 50_000_000;
/// How long to wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer still pending at the end of the window is awaited (and checked, but
/// not counted) before it is abandoned.
const DRAIN: Duration = Duration::from_secs(10);
/// Whether an unexpected answer was already shown (they are counted, shown once).
static REPORTED: AtomicBool = AtomicBool::new(false);

/// What one connection sends, and what it makes of each answer.
pub trait Plan: Send + 'static {
    fn request(&mut self, host: &str) -> Request<Full<Bytes>>;
    /// True if the answer is the expected one.
    fn response(&mut self, status: StatusCode, body: &[u8]) -> bool;
    /// Whether the connection must stop after an unexpected answer (its state is lost).
    fn stop_on_error(&self) -> bool {
        false
    }
    /// After an expected answer: whether it ended the exchange being measured. A plan whose
    /// exchange takes several requests (a login with its second factor) answers false until
    /// the last one; the exchange is then counted once, its latency from its first request to
    /// its last answer.
    fn complete(&self) -> bool {
        true
    }
}

/// `GET path`, optionally with a Bearer token; expects 200.
pub struct Get {
    pub path: &'static str,
    pub bearer: Option<String>,
}

impl Plan for Get {
    fn request(&mut self, host: &str) -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(self.path)
            .header(HOST, host);
        if let Some(token) = &self.bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        req.body(Full::default()).expect("a valid request")
    }

    fn response(&mut self, status: StatusCode, _body: &[u8]) -> bool {
        status == StatusCode::OK
    }
}

/// `POST /api/auth/login` with one user's credentials; expects 200.
pub struct Login {
    body: Bytes,
}

impl Login {
    pub fn new(email: &str, password: &str) -> Self {
        let body = serde_json::json!({ "email": email, "password": password });
        Login {
            body: Bytes::from(body.to_string()),
        }
    }
}

impl Plan for Login {
    fn request(&mut self, host: &str) -> Request<Full<Bytes>> {
        post_json("/api/auth/login", host, self.body.clone())
    }

    fn response(&mut self, status: StatusCode, _body: &[u8]) -> bool {
        status == StatusCode::OK
    }
}

/// `POST /api/auth/refresh` along one session's chain: each answer's refresh token is the
/// next request's. Expects 200; any other answer ends the chain (and the connection).
pub struct Refresh {
    token: String,
    /// The access token of the last rotation's answer, until taken (`take_access_token`).
    access_token: Option<String>,
}

impl Refresh {
    pub fn new(token: String) -> Self {
        Refresh {
            token,
            access_token: None,
        }
    }

    /// The access token the last rotation answered with, once.
    pub fn take_access_token(&mut self) -> Option<String> {
        self.access_token.take()
    }
}

impl Plan for Refresh {
    fn request(&mut self, host: &str) -> Request<Full<Bytes>> {
        let body = serde_json::json!({ "refreshToken": self.token });
        post_json("/api/auth/refresh", host, Bytes::from(body.to_string()))
    }

    fn response(&mut self, status: StatusCode, body: &[u8]) -> bool {
        if status != StatusCode::OK {
            return false;
        }
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        let data = &answer["data"];
        match data["refreshToken"].as_str() {
            Some(token) => {
                self.token = token.to_string();
                self.access_token = data["accessToken"].as_str().map(String::from);
                true
            }
            None => false,
        }
    }

    fn stop_on_error(&self) -> bool {
        true
    }
}

/// An account with TOTP on, as the `mfa` scenario seeded it.
pub struct TotpAccount {
    pub email: String,
    /// The shared secret (raw bytes).
    pub secret: Vec<u8>,
    /// The last 30-second step whose code this plan spent (a code is good once).
    last_step: u64,
}

impl TotpAccount {
    pub fn new(email: String, secret: Vec<u8>) -> Self {
        TotpAccount {
            email,
            secret,
            last_step: 0,
        }
    }
}

/// A password+TOTP login (CONTRACT 11.1) measured as one exchange of two requests:
/// `POST /api/auth/login` (expects 401 `MFA_REQUIRED` with an `mfaToken`), then
/// `POST /api/auth/mfa/verify` with a code computed here with `totp-rs` (expects 200). The
/// plan cycles through its own accounts: an account's code is spent once per 30-second step,
/// so each login takes an account with no login in the current step (or, when all have one,
/// the next step's code, which the server's default skew of 1 accepts).
pub struct MfaLogin {
    accounts: Vec<TotpAccount>,
    next: usize,
    password: String,
    /// The login under way: its account, the step of its code, and its mfaToken once the
    /// password was answered.
    current: Option<(usize, u64)>,
    mfa_token: Option<String>,
}

impl MfaLogin {
    pub fn new(accounts: Vec<TotpAccount>, password: &str) -> Self {
        assert!(!accounts.is_empty(), "an MFA login plan needs accounts");
        MfaLogin {
            accounts,
            next: 0,
            password: password.to_string(),
            current: None,
            mfa_token: None,
        }
    }

    /// The next account whose code of step `now` (else `now + 1`) is still unspent, and that
    /// step; the next account in turn with `now + 1` when every code up to it is spent (the
    /// server then refuses it: a counted error, never a silent success).
    fn pick(&mut self, now: u64) -> (usize, u64) {
        let n = self.accounts.len();
        let order: Vec<usize> = (0..n).map(|k| (self.next + k) % n).collect();
        let chosen = [now, now + 1].into_iter().find_map(|step| {
            order
                .iter()
                .find(|&&i| self.accounts[i].last_step < step)
                .map(|&i| (i, step))
        });
        let (i, step) = chosen.unwrap_or((self.next % n, now + 1));
        self.next = (i + 1) % n;
        (i, step)
    }
}

/// The TOTP code (RFC 6238: SHA-1, 6 digits, 30-second steps) of `secret` for `step`.
pub fn totp_code(secret: &[u8], step: u64) -> String {
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 0, 30, secret.to_vec())
        .generate(step * 30)
}

fn now_step() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 30)
}

impl Plan for MfaLogin {
    fn request(&mut self, host: &str) -> Request<Full<Bytes>> {
        match (&self.mfa_token, self.current) {
            (Some(token), Some((i, step))) => {
                let code = totp_code(&self.accounts[i].secret, step);
                let body = serde_json::json!({ "mfaToken": token, "code": code });
                post_json("/api/auth/mfa/verify", host, Bytes::from(body.to_string()))
            }
            _ => {
                let (i, step) = self.pick(now_step());
                self.current = Some((i, step));
                login_request(host, &self.accounts[i].email, &self.password)
            }
        }
    }

    fn response(&mut self, status: StatusCode, body: &[u8]) -> bool {
        let Some((i, step)) = self.current else {
            return false;
        };
        if self.mfa_token.is_none() {
            let token = (status == StatusCode::UNAUTHORIZED)
                .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
                .flatten()
                .filter(|v| v["error"] == "MFA_REQUIRED")
                .and_then(|v| v["mfaToken"].as_str().map(String::from));
            if token.is_none() {
                self.current = None;
            }
            self.mfa_token = token;
            return self.mfa_token.is_some();
        }
        // The code is spent (or refused) either way: never sent again.
        self.accounts[i].last_step = self.accounts[i].last_step.max(step);
        self.current = None;
        self.mfa_token = None;
        status == StatusCode::OK
    }

    fn complete(&self) -> bool {
        self.mfa_token.is_none()
    }
}

/// The soak's mix, one request in twenty each: 15 profile (`P`), 4 refresh (`R`), 1 login
/// (`L`): 75 / 20 / 5 %.
const MIX: &[u8; 20] = b"PPPRPPPPRPPPLPPRPPRP";

/// Answers of each kind in a mixed load: `[profile, refresh, login]`.
pub type MixCounts = std::sync::Arc<[std::sync::atomic::AtomicU64; 3]>;

/// One session's mixed load (`MIX`, from a starting point of its own): its profile with its
/// access token, a rotation of its refresh chain, a login of its user. Any unexpected answer
/// of the chain ends the connection (the chain is lost). Each rotation's new access token
/// replaces the profile's, as a client does: a soak runs past the access-token lifetime.
pub struct Mixed {
    profile: Get,
    refresh: Refresh,
    login: Login,
    step: usize,
    /// The kind of the last answered request.
    last: u8,
    counts: MixCounts,
}

impl Mixed {
    pub fn new(
        start: usize,
        access_token: String,
        refresh_token: String,
        email: &str,
        password: &str,
        counts: MixCounts,
    ) -> Self {
        Mixed {
            profile: Get {
                path: "/api/auth/profile",
                bearer: Some(access_token),
            },
            refresh: Refresh::new(refresh_token),
            login: Login::new(email, password),
            step: start,
            last: b'P',
            counts,
        }
    }

    fn kind(&self) -> u8 {
        MIX[self.step % MIX.len()]
    }
}

impl Plan for Mixed {
    fn request(&mut self, host: &str) -> Request<Full<Bytes>> {
        match self.kind() {
            b'P' => self.profile.request(host),
            b'R' => self.refresh.request(host),
            _ => self.login.request(host),
        }
    }

    fn response(&mut self, status: StatusCode, body: &[u8]) -> bool {
        self.last = self.kind();
        self.step += 1;
        let (ok, i) = match self.last {
            b'P' => (self.profile.response(status, body), 0),
            b'R' => {
                let ok = self.refresh.response(status, body);
                if let Some(access_token) = self.refresh.take_access_token() {
                    self.profile.bearer = Some(access_token);
                }
                (ok, 1)
            }
            _ => (self.login.response(status, body), 2),
        };
        if ok {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    fn stop_on_error(&self) -> bool {
        self.last == b'R'
    }
}

fn post_json(path: &'static str, host: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, host)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("a valid request")
}

/// When measuring starts and ends (shared by runs that go on at the same time).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    /// A warm-up starting now, then `duration` measured.
    pub fn after_warmup(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + duration,
        }
    }

    fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub connections: usize,
    pub duration_s: f64,
    /// Expected answers completed inside the window (for a multi-step plan, whole exchanges).
    pub requests: u64,
    /// Expected answers (exchanges) in all, warm-up and the end's stragglers included.
    pub answered: u64,
    /// Unexpected answers and transport errors, warm-up included.
    pub errors: u64,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    /// When each of `latencies_ns` completed, in ns after the window's start.
    done_ns: Vec<u64>,
    answered: u64,
    errors: u64,
}

/// Runs one connection per plan against `addr` until the window ends.
pub async fn run(addr: SocketAddr, plans: Vec<Box<dyn Plan>>, window: Window) -> Stats {
    run_paced(addr, plans, window, None, 1).await.0
}

/// Like `run`, and with `pace`, each connection sends at most one request per `pace` (an
/// open-loop rate while the server keeps up; each connection starts at a random point of its
/// first period). Also returns the statistics of `buckets` equal slices of the window, by
/// completion time (`errors` and `answered` are the whole run's, in the first slice).
pub async fn run_paced(
    addr: SocketAddr,
    plans: Vec<Box<dyn Plan>>,
    window: Window,
    pace: Option<Duration>,
    buckets: usize,
) -> (Stats, Vec<Stats>) {
    assert!(
        addr.ip().is_loopback(),
        "the load generator only targets loopback"
    );
    let connections = plans.len();
    let tasks: Vec<_> = plans
        .into_iter()
        .map(|plan| tokio::spawn(connection(addr, plan, window, pace)))
        .collect();
    let buckets = buckets.max(1);
    let slice_ns = ((window.end - window.start).as_nanos() as u64 / buckets as u64).max(1);
    let mut latencies = Vec::new();
    let mut sliced = vec![Vec::new(); buckets];
    let mut errors = 0;
    let mut answered = 0;
    for task in tasks {
        match task.await {
            Ok(tally) => {
                for (&lat, &done) in tally.latencies_ns.iter().zip(&tally.done_ns) {
                    sliced[((done / slice_ns) as usize).min(buckets - 1)].push(lat);
                }
                latencies.extend(tally.latencies_ns);
                answered += tally.answered;
                errors += tally.errors;
            }
            Err(e) => {
                eprintln!("authd-bench: a load connection failed: {e}");
                errors += 1;
            }
        }
    }
    let slice_s = slice_ns as f64 / 1e9;
    let slices = sliced
        .into_iter()
        .map(|l| stats(connections, slice_s, l, 0, 0))
        .collect();
    (
        stats(connections, window.seconds(), latencies, answered, errors),
        slices,
    )
}

fn stats(
    connections: usize,
    seconds: f64,
    mut latencies: Vec<u64>,
    answered: u64,
    errors: u64,
) -> Stats {
    latencies.sort_unstable();
    let ms = |q: f64| percentile(&latencies, q) as f64 / 1e6;
    let requests = latencies.len() as u64;
    Stats {
        connections,
        duration_s: seconds,
        requests,
        answered,
        errors,
        throughput_rps: requests as f64 / seconds,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: ms(1.0),
    }
}

/// The `q` quantile (nearest rank) of sorted values; 0 when there are none.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn connection(
    addr: SocketAddr,
    mut plan: Box<dyn Plan>,
    window: Window,
    pace: Option<Duration>,
) -> Tally {
    let mut tally = Tally::default();
    if let Err(e) = drive(addr, &mut *plan, window, pace, &mut tally).await {
        eprintln!("authd-bench: connection error: {e:#}");
        tally.errors += 1;
    }
    tally
}

async fn drive(
    addr: SocketAddr,
    plan: &mut dyn Plan,
    window: Window,
    pace: Option<Duration>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let (mut sender, driver) = connect(addr).await?;
    let host = addr.to_string();
    let mut next = Instant::now() + pace.map_or(Duration::ZERO, |p| p.mul_f64(rand::random()));
    // When the exchange under way (one request, or several for a multi-step plan) began.
    let mut begun: Option<Instant> = None;
    let result = async {
        for _ in 0..MAX_REQUESTS_PER_CONNECTION {
            if let Some(period) = pace {
                tokio::time::sleep_until(next).await;
                // A late request is sent at once; the schedule never runs a burst to catch up.
                next = (next + period).max(Instant::now());
            }
            if Instant::now() >= window.end {
                break;
            }
            let sent = *begun.get_or_insert_with(Instant::now);
            let exchange = async {
                sender.ready().await?;
                let resp = sender.send_request(plan.request(&host)).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                anyhow::Ok((status, body))
            };
            // An answer still pending when the window ends is awaited a while and checked.
            let Ok(answer) = tokio::time::timeout_at(window.end + DRAIN, exchange).await else {
                break;
            };
            let (status, body) = answer?;
            let done = Instant::now();
            let ok = plan.response(status, &body);
            if ok && !plan.complete() {
                continue;
            }
            begun = None;
            if !ok {
                let answer = format!("{status} {}", String::from_utf8_lossy(&body));
                if plan.stop_on_error() {
                    // Counted once, by `connection`.
                    anyhow::bail!("unexpected answer {answer}");
                }
                tally.errors += 1;
                if !REPORTED.swap(true, Ordering::Relaxed) {
                    eprintln!("authd-bench: unexpected answer (reported once): {answer}");
                }
            } else {
                tally.answered += 1;
                if done >= window.start && done <= window.end {
                    tally.latencies_ns.push((done - sent).as_nanos() as u64);
                    tally.done_ns.push((done - window.start).as_nanos() as u64);
                }
            }
        }
        Ok(())
    }
    .await;
    driver.abort();
    result
}

/// One keep-alive HTTP/1.1 connection to `addr` (`TCP_NODELAY`): its sender, and the task
/// driving it (abort it when done).
async fn connect(
    addr: SocketAddr,
) -> anyhow::Result<(
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
    Ok((sender, tokio::spawn(conn)))
}

/// Sends `requests` one after another on one keep-alive connection; returns each answer's
/// status, body and latency.
pub async fn sequential(
    addr: SocketAddr,
    requests: Vec<Request<Full<Bytes>>>,
) -> anyhow::Result<Vec<(StatusCode, Bytes, Duration)>> {
    assert!(
        addr.ip().is_loopback(),
        "the load generator only targets loopback"
    );
    let (mut sender, driver) = connect(addr).await?;
    let mut answers = Vec::with_capacity(requests.len());
    for req in requests {
        let sent = Instant::now();
        sender.ready().await?;
        let resp = tokio::time::timeout(DRAIN, sender.send_request(req))
            .await
            .context("no answer")??;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        answers.push((status, body, sent.elapsed()));
    }
    driver.abort();
    Ok(answers)
}

/// A login request for `email` and `password`.
pub fn login_request(host: &str, email: &str, password: &str) -> Request<Full<Bytes>> {
    let body = serde_json::json!({ "email": email, "password": password });
    post_json("/api/auth/login", host, Bytes::from(body.to_string()))
}

/// `POST /api/auth/password-reset/request` for `email`.
pub fn reset_request(host: &str, email: &str) -> Request<Full<Bytes>> {
    let body = serde_json::json!({ "email": email });
    post_json(
        "/api/auth/password-reset/request",
        host,
        Bytes::from(body.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::{percentile, Mixed, Plan, StatusCode, MIX};

    /// The profile requests after a rotation carry the rotation's access token (a soak
    /// outlives the first one's 15 minutes).
    #[test]
    fn a_mixed_load_profiles_with_the_access_token_of_its_last_rotation() {
        let rotation = MIX.iter().position(|&k| k == b'R').unwrap();
        let counts = Default::default();
        let mut plan = Mixed::new(rotation, "first".into(), "r1".into(), "a@b.c", "pw", counts);
        let bearer = |plan: &mut Mixed| {
            let req = plan.request("h");
            req.headers()["authorization"].to_str().unwrap().to_string()
        };
        assert_eq!(plan.request("h").uri().path(), "/api/auth/refresh");
        let answer = br#"{"data":{"accessToken":"second","refreshToken":"r2"}}"#;
        assert!(plan.response(StatusCode::OK, answer));
        assert_eq!(plan.request("h").uri().path(), "/api/auth/profile");
        assert_eq!(bearer(&mut plan), "Bearer second");
        assert!(plan.response(StatusCode::OK, b"{}"));
        assert_eq!(bearer(&mut plan), "Bearer second");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&v, 1.0), 1000);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
