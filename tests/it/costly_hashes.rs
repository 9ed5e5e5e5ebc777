//! Stored hashes costlier than `password.bcrypt_cost` (imported, or left by an older authd):
//! wrong guesses against such an account run under their own single bcrypt permit, so they
//! never hold a shared one and a bystander's login does not queue behind them. Shown by the
//! permit accounting at `/metrics` (`authd_bcrypt_*{pool}`), not by a clock.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// Concurrent wrong guesses against the costly account.
const GUESSES: usize = 8;

/// The value of `name{pool="<pool>"}` in the `/metrics` text.
fn pool_metric(s: &TestServer, name: &str, pool: &str) -> i64 {
    s.metric(&format!("{name}{{pool=\"{pool}\"}}")) as i64
}

fn stored_hash(s: &TestServer, email: &str) -> String {
    s.query_column("SELECT password_hash FROM users WHERE email = ?1", &[email])
        .remove(0)
}

#[test]
fn verifications_above_the_configured_cost_never_hold_a_shared_permit() {
    // bcrypt_cost 10; limits off, so every guess is verified.
    let s = TestServer::start();
    let victim = unique_email("costly");
    let bystander = unique_email("bystander");
    s.register(&victim);
    s.register(&bystander);
    // As an older authd's import would have left it: above the configured cost.
    let costly = bcrypt::hash(PASSWORD, 11).unwrap();
    assert_eq!(
        s.execute_sql(
            "UPDATE users SET password_hash = ?1 WHERE email = ?2",
            &[&costly, &victim],
        ),
        1
    );
    let ops = |pool| pool_metric(&s, "authd_bcrypt_operations_total", pool);
    let (shared_before, costly_before) = (ops("shared"), ops("costly"));

    let guesses: Vec<_> = (0..GUESSES)
        .map(|i| {
            let (client, url) = (s.client.clone(), s.url("/api/auth/login"));
            let body = json!({"email": victim, "password": format!("Wrong-guess-{i}!")});
            std::thread::spawn(move || send(client.post(url).json(&body)))
        })
        .collect();
    // Until most guesses queue for the costly permit: at most one of them ever runs, and
    // none holds a shared permit.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let in_use = pool_metric(&s, "authd_bcrypt_in_use", "costly");
        assert!(in_use <= 1, "{in_use} costly verifications at once");
        assert_eq!(pool_metric(&s, "authd_bcrypt_in_use", "shared"), 0);
        if pool_metric(&s, "authd_bcrypt_waiting", "costly") >= GUESSES as i64 - 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the guesses never queued");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A bystander logs in meanwhile, on a shared permit, and is answered while the costly
    // queue is still there: it did not wait behind it.
    assert_eq!(s.login(&bystander)["user"]["email"], bystander.as_str());
    let queued = pool_metric(&s, "authd_bcrypt_waiting", "costly")
        + pool_metric(&s, "authd_bcrypt_in_use", "costly");
    assert!(
        queued >= 1,
        "the bystander was answered after the costly queue drained"
    );
    for g in guesses {
        g.join().unwrap().assert_error(401, "INVALID_CREDENTIALS");
    }
    assert_eq!(ops("costly") - costly_before, GUESSES as i64);
    assert_eq!(
        ops("shared") - shared_before,
        1,
        "the bystander's verification only"
    );
    for gauge in ["authd_bcrypt_in_use", "authd_bcrypt_waiting"] {
        for pool in ["shared", "costly"] {
            assert_eq!(pool_metric(&s, gauge, pool), 0, "{gauge}{{{pool}}} at rest");
        }
    }

    // The right password still works (verified on the costly permit), and the hash is then
    // replaced by one at the configured cost, made on a shared permit.
    s.login(&victim);
    assert_eq!(ops("costly") - costly_before, GUESSES as i64 + 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stored_hash(&s, &victim).starts_with("$2b$10$") {
        assert!(Instant::now() < deadline, "the hash was never upgraded");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.login(&victim);
    assert_eq!(ops("costly") - costly_before, GUESSES as i64 + 1);
}

/// Clients that send a login and hang up while it waits or runs: a hash that started keeps
/// its permit until it is done, and a login still waiting for a permit when its client goes
/// away never hashes. Before, a hang-up gave the permit back while the hash went on, so
/// staggered hang-ups ran a hash each, all at once (14 threads running for 12 hang-ups on a
/// 2-core machine), past the one-per-core bound.
#[test]
fn logins_whose_clients_hang_up_never_run_more_hashes_than_permits() {
    use std::io::Write;
    // Cost 12: a hash takes about 200 ms, far longer than a client stays.
    let s = TestServer::with(&[
        ("AUTHD_PASSWORD__BCRYPT_COST", "12"),
        ("AUTHD_RATE_LIMIT__ENABLED", "false"),
    ]);
    let email = unique_email("hangup");
    s.register(&email);
    let before = pool_metric(&s, "authd_bcrypt_operations_total", "shared");
    let body = json!({"email": email, "password": "Wrong-guess-1"}).to_string();
    let request = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    const HANG_UPS: i64 = 12;
    for _ in 0..HANG_UPS {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(600));
    let hashed = pool_metric(&s, "authd_bcrypt_operations_total", "shared") - before;
    // 12 hang-ups 30 ms apart over about 360 ms, two permits, a hash of about 200 ms: the
    // two first run, most later ones leave while waiting (the old code ran all 12).
    assert!(
        hashed <= 8,
        "{hashed} of {HANG_UPS} abandoned logins hashed: hang-ups gave permits back"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool_metric(&s, "authd_bcrypt_in_use", "shared") != 0 {
        assert!(Instant::now() < deadline, "a permit was never given back");
        std::thread::sleep(Duration::from_millis(20));
    }
}
