//! The login limits under concurrency (contract section 9): bursts of logins released at
//! the same moment from many threads, each on its own connection. However many arrive at
//! once, no more than `lockout_threshold` password checks fail for one email and no more than
//! `max_failed_logins` for one IP; the rest are refused (423 / 429 with `Retry-After`)
//! without a password check and without being counted.

use std::sync::{Arc, Barrier};
use std::thread;

use serde_json::json;

use crate::support::*;

const WRONG: &str = "Wrong-horse-1!";
const ON: (&str, &str) = ("AUTHD_RATE_LIMIT__ENABLED", "true");
const MANY_REQUESTS: (&str, &str) = ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "100000");
const PROXY: (&str, &str) = ("AUTHD_SERVER__TRUSTED_PROXIES", "127.0.0.1");

/// One login of a burst: the client address (sent as `X-Forwarded-For`, believed when the
/// server trusts 127.0.0.1), the email and the password.
#[derive(Clone)]
struct Login {
    from: Option<String>,
    email: String,
    password: &'static str,
}

impl Login {
    fn new(email: &str, password: &'static str) -> Self {
        Login {
            from: None,
            email: email.to_string(),
            password,
        }
    }

    fn from(mut self, ip: &str) -> Self {
        self.from = Some(ip.to_string());
        self
    }
}

/// Sends every login at once: one thread and one connection each, all released together by
/// a barrier. Answers in the order of `logins`.
fn burst(s: &TestServer, logins: Vec<Login>) -> Vec<Resp> {
    let barrier = Arc::new(Barrier::new(logins.len()));
    let url = s.url("/api/auth/login");
    let threads: Vec<_> = logins
        .into_iter()
        .map(|login| {
            let (barrier, url) = (barrier.clone(), url.clone());
            thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut req = client
                    .post(&url)
                    .json(&json!({"email": login.email, "password": login.password}));
                if let Some(ip) = &login.from {
                    req = req.header("x-forwarded-for", ip.as_str());
                }
                barrier.wait();
                send(req)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn statuses(rs: &[Resp]) -> Vec<u16> {
    rs.iter().map(|r| r.status).collect()
}

fn count(rs: &[Resp], status: u16) -> usize {
    rs.iter().filter(|r| r.status == status).count()
}

/// A refusal: the status and code, and a whole number of seconds in `Retry-After`.
fn assert_refused(r: &Resp, status: u16, code: &str, max_secs: u64) {
    r.assert_error(status, code);
    let secs: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric Retry-After on {}: {:?}", r.text, r.headers));
    assert!(secs >= 1 && secs <= max_secs, "Retry-After {secs}");
}

/// Login audit rows with this reason (every refusal and every check is audited).
fn audited(s: &TestServer, reason: &str) -> usize {
    s.query_column(
        "SELECT COUNT(*) FROM audit_events WHERE event = 'login' AND reason = ?1",
        &[reason],
    )[0]
    .parse()
    .unwrap()
}

#[test]
fn a_burst_for_one_email_gets_at_most_lockout_threshold_password_checks() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
    ]);
    let email = unique_email("race-email");
    s.register(&email);
    // 20 wrong passwords and the right one, all at the same moment.
    let mut logins = vec![Login::new(&email, WRONG); 20];
    logins.push(Login::new(&email, PASSWORD));
    let rs = burst(&s, logins);
    let all = statuses(&rs);

    let (failed, ok, locked) = (count(&rs, 401), count(&rs, 200), count(&rs, 423));
    assert!(failed <= 3, "at most 3 wrong passwords checked: {all:?}");
    assert!(ok <= 1, "{all:?}");
    assert_eq!(failed + ok + locked, 21, "nothing else: {all:?}");
    assert!(locked >= 17, "the rest refused: {all:?}");
    for r in rs.iter().filter(|r| r.status == 423) {
        assert_refused(r, 423, "ACCOUNT_LOCKED", 15 * 60);
    }
    // The right password was checked (and succeeded) only if it got a slot: either way it
    // was never told 401.
    assert_ne!(rs[20].status, 401, "{all:?}");
    // The server agrees: as many checks failed as it said, the refusals were audited.
    assert_eq!(audited(&s, "wrong_password"), failed);
    assert_eq!(audited(&s, "locked"), locked);
}

#[test]
fn a_burst_from_one_ip_gets_at_most_max_failed_logins_password_checks() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "1000"),
    ]);
    let email = unique_email("race-ip");
    s.register(&email);
    // 30 wrong passwords for several accounts (existing or not) from one client at once.
    let logins: Vec<Login> = (0..30)
        .map(|i| match i % 3 {
            0 => Login::new(&email, WRONG),
            _ => Login::new(&unique_email("race-ip-ghost"), WRONG),
        })
        .collect();
    let rs = burst(&s, logins);
    let all = statuses(&rs);
    assert_eq!(
        count(&rs, 401),
        3,
        "exactly the budget was checked: {all:?}"
    );
    assert_eq!(count(&rs, 429), 27, "{all:?}");
    for r in rs.iter().filter(|r| r.status == 429) {
        assert_refused(r, 429, "RATE_LIMITED", 15 * 60);
    }
    assert_eq!(
        audited(&s, "wrong_password") + audited(&s, "unknown_email"),
        3
    );
    assert_eq!(audited(&s, "rate_limited"), 27);
    // The budget is spent: the right password is refused too, without a check.
    let r = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    );
    assert_refused(&r, 429, "RATE_LIMITED", 15 * 60);
}

#[test]
fn a_correct_password_within_the_limits_succeeds_in_a_burst() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
    ]);
    let email = unique_email("race-ok");
    s.register(&email);
    // Two wrong and the right one at once: all three fit both limits.
    let rs = burst(
        &s,
        vec![
            Login::new(&email, WRONG),
            Login::new(&email, PASSWORD),
            Login::new(&email, WRONG),
        ],
    );
    assert_eq!(statuses(&rs), vec![401, 200, 401], "{:?}", statuses(&rs));
    // Successes hand their slots back: the right password keeps working.
    for i in 0..5 {
        let r = s.post_json(
            "/api/auth/login",
            json!({"email": email, "password": PASSWORD}),
        );
        assert_eq!(r.status, 200, "success {i}: {}", r.text);
    }
    // The third failure locks the email (and spends the IP's budget).
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": WRONG}),
    )
    .assert_error(401, "INVALID_CREDENTIALS");
    let r = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    );
    assert!(r.status == 429 || r.status == 423, "{}", r.text);
}

#[test]
fn a_refused_attempt_counts_nothing() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        PROXY,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "5"),
    ]);
    let email = unique_email("race-refused");
    s.register(&email);
    // One client fires 20 wrong passwords for the account at once: 3 are checked, the 17
    // refused by its spent budget must not count against the account.
    let rs = burst(&s, vec![Login::new(&email, WRONG).from("203.0.113.1"); 20]);
    assert_eq!(count(&rs, 401), 3, "{:?}", statuses(&rs));
    assert_eq!(count(&rs, 429), 17, "{:?}", statuses(&rs));
    // From another client the account has exactly 3 failures: a fourth is still checked, and
    // the right password (the fifth attempt) still gets in.
    let other = |password: &'static str| {
        send(
            s.post("/api/auth/login")
                .header("x-forwarded-for", "203.0.113.2")
                .json(&json!({"email": email, "password": password})),
        )
    };
    other(WRONG).assert_error(401, "INVALID_CREDENTIALS");
    let r = other(PASSWORD);
    assert_eq!(
        r.status, 200,
        "the account was not locked by refusals: {}",
        r.text
    );
    // And a refused attempt did not spend anything of another client's budget either.
    let r = send(
        s.post("/api/auth/login")
            .header("x-forwarded-for", "203.0.113.3")
            .json(&json!({"email": unique_email("race-third"), "password": WRONG})),
    );
    r.assert_error(401, "INVALID_CREDENTIALS");
}
