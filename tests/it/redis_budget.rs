//! The per-IP request budget shared through Redis (`rate_limit.redis_url`): two instances
//! spend one budget, clients stay apart, and a Redis that dies mid-run costs no request
//! (each instance counts by itself, the backend-errors counter moves, a circuit breaker keeps
//! the dead Redis out of the request path) and is used again once it is back.

use std::time::{Duration, Instant};

use authd::http::budget::KEY_PREFIX;

use crate::services::{redis_url_or_skip, PrivateRedis, RedisKeys};
use crate::support::*;

/// A server that shares its request budget through `redis_url`, `max` requests per 15m,
/// believing `X-Forwarded-For` from loopback (so one test process plays many clients).
fn server(redis_url: &str, max: u32) -> TestServer {
    let max = max.to_string();
    TestServer::with(&[
        ("AUTHD_RATE_LIMIT__ENABLED", "true"),
        ("AUTHD_RATE_LIMIT__MAX_REQUESTS", &max),
        ("AUTHD_RATE_LIMIT__REDIS_URL", redis_url),
        ("AUTHD_SERVER__TRUSTED_PROXIES", "127.0.0.1"),
    ])
}

/// A client address no other test uses (so tests sharing one Redis never meet).
fn unique_ip() -> String {
    let b = *uuid::Uuid::new_v4().as_bytes();
    format!("10.{}.{}.{}", b[0], b[1], b[2].max(1))
}

/// One request to `/api/auth/*` from `ip` (no token: 401 while the budget lasts).
fn spend(s: &TestServer, ip: &str) -> Resp {
    send(s.get("/api/auth/profile").header("x-forwarded-for", ip))
}

fn assert_within_budget(r: &Resp, what: &str) {
    r.assert_error(401, "TOKEN_MISSING");
    assert!(r.header("retry-after").is_none(), "{what}: {:?}", r.headers);
}

/// 429 with a `Retry-After` of at most one refill interval (15m / `max`), plus a second.
fn assert_rate_limited(r: &Resp, max: u64) {
    r.assert_error(429, "RATE_LIMITED");
    let secs: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers))
        .parse()
        .expect("Retry-After in seconds");
    assert!(secs >= 1 && secs <= 15 * 60 / max + 1, "Retry-After {secs}");
}

/// `authd_rate_limit_backend_errors_total` as `/metrics` shows it.
fn backend_errors(s: &TestServer) -> u64 {
    let text = s.get("/metrics").send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("authd_rate_limit_backend_errors_total "))
        .unwrap_or_else(|| panic!("no authd_rate_limit_backend_errors_total in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn two_instances_spend_one_budget() {
    let Some(url) = redis_url_or_skip() else {
        return;
    };
    let (a, b) = (server(&url, 5), server(&url, 5));
    let mut keys = RedisKeys::new(&url);
    let ip = unique_ip();
    let key = keys.track(format!("{KEY_PREFIX}{ip}"));

    for i in 0..5 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert_within_budget(&spend(s, &ip), &format!("request {i}"));
    }
    // The sixth request overall is refused, whichever instance it reaches.
    assert_rate_limited(&spend(&b, &ip), 5);
    assert_rate_limited(&spend(&a, &ip), 5);

    // The state lives in Redis under the prefixed key, and expires by itself (within the
    // time the budget takes to refill).
    let ttl = keys.pttl(&key);
    assert!(ttl > 0 && ttl <= 15 * 60 * 1000, "PTTL {ttl}");
    assert_eq!(backend_errors(&a), 0);
    assert_eq!(backend_errors(&b), 0);
}

#[test]
fn clients_have_budgets_of_their_own() {
    let Some(url) = redis_url_or_skip() else {
        return;
    };
    let (a, b) = (server(&url, 3), server(&url, 3));
    let mut keys = RedisKeys::new(&url);
    let (spender, other) = (unique_ip(), unique_ip());
    keys.track(format!("{KEY_PREFIX}{spender}"));
    keys.track(format!("{KEY_PREFIX}{other}"));

    for i in 0..3 {
        assert_within_budget(&spend(&a, &spender), &format!("spender {i}"));
    }
    assert_rate_limited(&spend(&b, &spender), 3);
    // Another client, on either instance, still has its whole budget.
    for i in 0..3 {
        let s = if i % 2 == 0 { &b } else { &a };
        assert_within_budget(&spend(s, &other), &format!("other {i}"));
    }
    assert_rate_limited(&spend(&a, &other), 3);
    // The same client seen directly (no X-Forwarded-For) is the proxy: a third budget.
    let direct = send(a.get("/api/auth/profile"));
    assert_within_budget(&direct, "the proxy itself");
    keys.track(format!("{KEY_PREFIX}127.0.0.1"));
}

#[test]
fn a_dead_redis_costs_no_request_and_is_used_again_when_back() {
    let Some(mut redis) = PrivateRedis::start_or_skip() else {
        return;
    };
    let url = redis.url();
    let s = server(&url, 4);
    let keys = RedisKeys::new(&url);

    // Redis in use: the budget is kept there.
    let first = unique_ip();
    for i in 0..2 {
        assert_within_budget(&spend(&s, &first), &format!("before the outage {i}"));
    }
    assert!(keys.pttl(&format!("{KEY_PREFIX}{first}")) > 0);
    assert_eq!(backend_errors(&s), 0);

    redis.stop();
    // No request fails, and the instance still enforces the budget by itself.
    let during = unique_ip();
    for i in 0..4 {
        assert_within_budget(&spend(&s, &during), &format!("during the outage {i}"));
    }
    assert_rate_limited(&spend(&s, &during), 4);
    let errors = backend_errors(&s);
    assert!(errors >= 1, "the failed Redis calls are counted");
    // Five requests, but the breaker kept all but the first (and perhaps one probe) away
    // from the dead Redis: they did not each wait for its timeout.
    assert!(
        errors <= 2,
        "{errors} backend errors for 5 requests: no circuit breaker"
    );
    for i in 0..3 {
        let r = send(s.get("/healthz"));
        assert_eq!(r.status, 200, "healthz {i}");
    }

    // Redis back (empty, as after a restart): a later request finds it and the budget is
    // shared again (the key appears there).
    redis.spawn().expect("redis-server restarts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ip = unique_ip();
        let r = spend(&s, &ip);
        assert_within_budget(&r, "after the restart");
        if keys.pttl(&format!("{KEY_PREFIX}{ip}")) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis was not used again within 60s of its restart"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let after = backend_errors(&s);
    let again = unique_ip();
    for i in 0..4 {
        assert_within_budget(&spend(&s, &again), &format!("after recovery {i}"));
    }
    assert_rate_limited(&spend(&s, &again), 4);
    assert_eq!(backend_errors(&s), after, "no errors once Redis is back");
}
