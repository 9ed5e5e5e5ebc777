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

/// Runs `scenario` until one run saw no Redis call fall back (a call slower than authd's
/// timeout on a loaded machine counts that request locally, which a strict count cannot
/// tell from a bug), then `check`s what that run saw; at most three runs.
fn with_redis_answering<T>(
    servers: &[&TestServer],
    mut scenario: impl FnMut() -> T,
    check: impl FnOnce(T),
) {
    let errors = || servers.iter().map(|s| backend_errors(s)).sum::<u64>();
    for _ in 0..3 {
        let before = errors();
        let seen = scenario();
        if errors() == before {
            return check(seen);
        }
        eprintln!("a Redis call fell back during the scenario; running it again");
    }
    panic!("Redis calls fell back in three runs of the scenario");
}

#[test]
fn two_instances_spend_one_budget() {
    let Some(url) = redis_url_or_skip() else {
        return;
    };
    let (a, b) = (server(&url, 5), server(&url, 5));
    let mut keys = RedisKeys::new(&url);
    with_redis_answering(
        &[&a, &b],
        || {
            let ip = unique_ip();
            let key = keys.track(format!("{KEY_PREFIX}{ip}"));
            let answers: Vec<Resp> = (0..5)
                .map(|i| spend(if i % 2 == 0 { &a } else { &b }, &ip))
                .collect();
            let (sixth, seventh) = (spend(&b, &ip), spend(&a, &ip));
            (answers, sixth, seventh, keys.pttl(&key))
        },
        |(answers, sixth, seventh, ttl)| {
            for (i, r) in answers.iter().enumerate() {
                assert_within_budget(r, &format!("request {i}"));
            }
            // The sixth request overall is refused, whichever instance it reaches.
            assert_rate_limited(&sixth, 5);
            assert_rate_limited(&seventh, 5);
            // The state lives in Redis under the prefixed key, and expires by itself (within
            // the time the budget takes to refill).
            assert!(ttl > 0 && ttl <= 15 * 60 * 1000, "PTTL {ttl}");
        },
    );
}

#[test]
fn clients_have_budgets_of_their_own() {
    let Some(url) = redis_url_or_skip() else {
        return;
    };
    let (a, b) = (server(&url, 3), server(&url, 3));
    let mut keys = RedisKeys::new(&url);
    keys.track(format!("{KEY_PREFIX}127.0.0.1"));
    with_redis_answering(
        &[&a, &b],
        || {
            let (spender, other) = (unique_ip(), unique_ip());
            keys.track(format!("{KEY_PREFIX}{spender}"));
            keys.track(format!("{KEY_PREFIX}{other}"));
            let spent: Vec<Resp> = (0..3).map(|_| spend(&a, &spender)).collect();
            let refused = spend(&b, &spender);
            let others: Vec<Resp> = (0..3)
                .map(|i| spend(if i % 2 == 0 { &b } else { &a }, &other))
                .collect();
            (spent, refused, others, spend(&a, &other))
        },
        |(spent, refused, others, other_refused)| {
            for (i, r) in spent.iter().enumerate() {
                assert_within_budget(r, &format!("spender {i}"));
            }
            assert_rate_limited(&refused, 3);
            // Another client, on either instance, still has its whole budget.
            for (i, r) in others.iter().enumerate() {
                assert_within_budget(r, &format!("other {i}"));
            }
            assert_rate_limited(&other_refused, 3);
        },
    );
    // The proxy itself (no X-Forwarded-For) is one more client with a budget of its own.
    assert_within_budget(&send(a.get("/api/auth/profile")), "the proxy itself");
}

/// Sends requests from fresh clients until one of them is counted in the Redis behind
/// `keys` (Redis is in use), or panics after 60 s.
fn wait_until_redis_is_used(s: &TestServer, keys: &RedisKeys, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ip = unique_ip();
        assert_within_budget(&spend(s, &ip), when);
        if keys.pttl(&format!("{KEY_PREFIX}{ip}")) > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Redis not used within 60s ({when})"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_dead_redis_costs_no_request_and_is_used_again_when_back() {
    let Some(mut redis) = PrivateRedis::start_or_skip() else {
        return;
    };
    let url = redis.url();
    let s = server(&url, 4);
    let keys = RedisKeys::new(&url);
    wait_until_redis_is_used(&s, &keys, "before the outage");

    redis.stop();
    let before = backend_errors(&s);
    // No request fails, and the instance still enforces the budget by itself.
    let during = unique_ip();
    for i in 0..4 {
        assert_within_budget(&spend(&s, &during), &format!("during the outage {i}"));
    }
    for _ in 0..16 {
        assert_rate_limited(&spend(&s, &during), 4);
    }
    let errors = backend_errors(&s) - before;
    assert!(errors >= 1, "the failed Redis calls are counted");
    // Twenty requests, but the circuit breaker kept almost all of them away from the dead
    // Redis (one probe per 5 s): they did not each fail against it.
    assert!(
        errors < 10,
        "{errors} backend errors for 20 requests: no circuit breaker"
    );
    for i in 0..3 {
        assert_eq!(send(s.get("/healthz")).status, 200, "healthz {i}");
    }

    // Redis back (empty, as after a restart): a later request finds it again.
    redis.spawn().expect("redis-server restarts");
    wait_until_redis_is_used(&s, &keys, "after the restart");
}
