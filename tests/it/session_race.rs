//! A session born after its account changed (issue 16, items 1 and 10): logins whose bcrypt
//! check overlaps a password change, `disable`, `set-role` or `delete` (run through the admin
//! API, the same service the CLI uses), with real concurrent clients and bcrypt cost 12 so the
//! window is real. The change lands only once `/metrics` shows the server inside bcrypt for
//! the logins, so every round has logins that read the row before it and open their session
//! after it. Every login is checked: a session opens only on the account as it is in the
//! session's own transaction.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::admin_cli::admin_token;
use crate::support::*;

/// Rounds per scenario; clients logging in at once (more than the server's bcrypt permits,
/// one per core, so some logins always wait for a permit with the row already read).
const ROUNDS: usize = 2;
const LOGINS: usize = 6;
const CLIENTS: usize = 4;
const NEW_PASSWORD: &str = "Battery-staple-7";

fn server() -> TestServer {
    TestServer::with(&[("AUTHD_PASSWORD__BCRYPT_COST", "12")])
}

/// A login, waiting as long as a loaded machine needs for bcrypt at cost 12.
fn login(s: &TestServer, email: &str, password: &str) -> Resp {
    send(
        s.post("/api/auth/login")
            .timeout(Duration::from_secs(300))
            .json(&json!({"email": email, "password": password})),
    )
}

/// Claims of an access token (no verification: the server checked it when it issued it).
fn claims(access: &str) -> Value {
    let payload = access.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

/// `authd_bcrypt_in_use{pool="shared"}`: password checks running now.
fn bcrypt_in_use(s: &TestServer) -> i64 {
    let text = send(s.get("/metrics")).text;
    text.lines()
        .find_map(|l| l.strip_prefix("authd_bcrypt_in_use{pool=\"shared\"} "))
        .expect("authd_bcrypt_in_use in /metrics")
        .trim()
        .parse()
        .unwrap()
}

/// Logins of `email` with `password` from `CLIENTS` clients, each logging in again and again;
/// once the server is inside bcrypt for them (so they have read the row as it was before
/// `change`), `change` runs on this thread, then each client finishes the login it has in
/// flight and stops. Every login that was reading, waiting for a permit or hashing when the
/// change committed is in the window. Returns every login's response.
fn logins_during(s: &TestServer, email: &str, password: &str, change: impl FnOnce()) -> Vec<Resp> {
    let changed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let changed = &changed;
                scope.spawn(move || {
                    let mut got = Vec::new();
                    while !changed.load(SeqCst) {
                        got.push(login(s, email, password));
                    }
                    got
                })
            })
            .collect();
        while bcrypt_in_use(s) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        change();
        changed.store(true, SeqCst);
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

fn live_sessions(s: &TestServer, user_id: &str) -> Vec<String> {
    s.query_column(
        "SELECT CAST(id AS TEXT) FROM sessions\n         WHERE CAST(user_id AS TEXT) = ?1 AND revoked_at IS NULL",
        &[user_id],
    )
}

fn token(r: &Resp, field: &str) -> String {
    r.body["data"][field].as_str().unwrap().to_string()
}

/// (a) Logins with the old password racing `POST /api/auth/password`: afterwards only the
/// changer's session is live, and no refresh token a login got still works.
#[test]
fn logins_racing_a_password_change_leave_no_session_but_the_kept_one() {
    let s = server();
    for round in 0..ROUNDS {
        let email = unique_email(&format!("pw-race-{round}"));
        let data = s.register(&email);
        let user_id = data["user"]["id"].as_str().unwrap().to_string();
        let kept = data["accessToken"].as_str().unwrap().to_string();
        let responses = logins_during(&s, &email, PASSWORD, || {
            let r = send(
                s.post("/api/auth/password")
                    .bearer_auth(&kept)
                    .json(&json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})),
            );
            assert_eq!(r.status, 200, "{}", r.text);
        });
        for r in &responses {
            assert!(matches!(r.status, 200 | 401), "{}: {}", r.status, r.text);
        }
        let kept_sid = claims(&kept)["sid"].as_str().unwrap().to_string();
        assert_eq!(live_sessions(&s, &user_id), [kept_sid], "round {round}");
        for r in responses.iter().filter(|r| r.status == 200) {
            assert_ne!(s.refresh(&token(r, "refreshToken")).status, 200);
        }
    }
}

/// (b) Logins racing `users disable`: once enabled again, no session from before the disable
/// is live, and no refresh token a login got works.
#[test]
fn logins_racing_a_disable_leave_no_session_live_after_enable() {
    let s = server();
    let (_, admin) = admin_token(&s);
    for round in 0..ROUNDS {
        let email = unique_email(&format!("disable-race-{round}"));
        let user_id = s.register(&email)["user"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/api/admin/users/{user_id}");
        let responses = logins_during(&s, &email, PASSWORD, || {
            let r = send(s.post(&format!("{path}/disable")).bearer_auth(&admin));
            assert_eq!(r.status, 200, "{}", r.text);
        });
        for r in &responses {
            assert!(matches!(r.status, 200 | 403), "{}: {}", r.status, r.text);
        }
        let r = send(s.post(&format!("{path}/enable")).bearer_auth(&admin));
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            live_sessions(&s, &user_id),
            Vec::<String>::new(),
            "round {round}"
        );
        for r in responses.iter().filter(|r| r.status == 200) {
            assert_ne!(s.refresh(&token(r, "refreshToken")).status, 200);
        }
    }
}

/// (c) Logins of an admin racing `users set-role user`: no live session whose access token
/// says `role=admin`.
/// (The code before `Store::open_session` read the row again after bcrypt, taking the role
/// from it, so its window was only between that read and the session's insert, which this
/// does not reach; (d) likewise. Both hold the rule over the bcrypt window.)
#[test]
fn logins_racing_a_demotion_leave_no_live_admin_token() {
    let s = server();
    let (_, admin) = admin_token(&s);
    for round in 0..ROUNDS {
        let (target_id, _) = admin_token(&s);
        let email = s.query_column(
            "SELECT email FROM users WHERE CAST(id AS TEXT) = ?1",
            &[&target_id],
        )[0]
        .clone();
        let responses = logins_during(&s, &email, PASSWORD, || {
            let r = send(
                s.post(&format!("/api/admin/users/{target_id}/role"))
                    .bearer_auth(&admin)
                    .json(&json!({"role": "user"})),
            );
            assert_eq!(r.status, 200, "{}", r.text);
        });
        let live = live_sessions(&s, &target_id);
        for r in &responses {
            assert_eq!(r.status, 200, "{}", r.text);
            let c = claims(&token(r, "accessToken"));
            if c["role"] == "admin" {
                let sid = c["sid"].as_str().unwrap().to_string();
                assert!(
                    !live.contains(&sid),
                    "round {round}: live admin session {sid}"
                );
                assert_ne!(
                    s.get_auth("/api/auth/profile", &token(r, "accessToken"))
                        .status,
                    200
                );
            }
        }
    }
}

/// (d) Logins racing `users delete`: never a 500, only 200 or 401.
#[test]
fn logins_racing_a_delete_answer_200_or_401_never_500() {
    let s = server();
    let (_, admin) = admin_token(&s);
    for round in 0..ROUNDS {
        let email = unique_email(&format!("delete-race-{round}"));
        let user_id = s.register(&email)["user"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let responses = logins_during(&s, &email, PASSWORD, || {
            let r = send(
                s.delete(&format!("/api/admin/users/{user_id}"))
                    .bearer_auth(&admin),
            );
            assert_eq!(r.status, 200, "{}", r.text);
        });
        for r in &responses {
            assert!(matches!(r.status, 200 | 401), "{}: {}", r.status, r.text);
        }
        assert!(live_sessions(&s, &user_id).is_empty());
    }
}

/// (e) Registrations of one email at once: one account, with exactly one session and one
/// successful register audit row; every other attempt is 409 and leaves nothing.
#[test]
fn concurrent_registrations_of_one_email_store_one_account_with_its_session() {
    let s = server();
    let email = unique_email("reg-race");
    let responses: Vec<Resp> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..LOGINS)
            .map(|_| {
                let (s, email) = (&s, &email);
                scope.spawn(move || {
                    s.post_json(
                        "/api/auth/register",
                        json!({"email": email, "password": PASSWORD}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<&Resp> = responses.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 1, "{responses:?}");
    for r in responses.iter().filter(|r| r.status != 201) {
        r.assert_error(409, "EMAIL_TAKEN");
    }
    let user_id = created[0].body["data"]["user"]["id"].as_str().unwrap();
    assert_eq!(live_sessions(&s, user_id).len(), 1);
    let registered = s.query_column(
        "SELECT CAST(user_id AS TEXT) FROM audit_events
         WHERE event = 'register' AND outcome = 'success' AND email = ?1",
        &[&email],
    );
    assert_eq!(registered, [user_id]);
}

/// Refreshes racing `set-role` and `disable`: a refresh that succeeds carries the role of
/// the row it rotated against, and none leaves a live session to a demoted admin's old role
/// or to a disabled user.
#[test]
fn refreshes_racing_a_demotion_or_a_disable_leave_nothing_live() {
    let s = server();
    let (_, admin) = admin_token(&s);
    for change in ["role", "disable"] {
        let (target_id, _) = admin_token(&s);
        let email = s.query_column(
            "SELECT email FROM users WHERE CAST(id AS TEXT) = ?1",
            &[&target_id],
        )[0]
        .clone();
        // Several sessions, each refreshed in a loop while the change lands.
        let tokens: Vec<String> = (0..4)
            .map(|_| token(&login(&s, &email, PASSWORD), "refreshToken"))
            .collect();
        let stop = AtomicBool::new(false);
        let issued: Vec<Resp> = std::thread::scope(|scope| {
            let handles: Vec<_> = tokens
                .into_iter()
                .map(|mut rt| {
                    let (s, stop) = (&s, &stop);
                    scope.spawn(move || {
                        let mut got = Vec::new();
                        while !stop.load(SeqCst) {
                            let r = s.refresh(&rt);
                            if r.status != 200 {
                                got.push(r);
                                break;
                            }
                            rt = token(&r, "refreshToken");
                            got.push(r);
                        }
                        got
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(200));
            let path = format!("/api/admin/users/{target_id}");
            let r = match change {
                "role" => send(
                    s.post(&format!("{path}/role"))
                        .bearer_auth(&admin)
                        .json(&json!({"role": "user"})),
                ),
                _ => send(s.post(&format!("{path}/disable")).bearer_auth(&admin)),
            };
            assert_eq!(r.status, 200, "{}", r.text);
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, SeqCst);
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let live = live_sessions(&s, &target_id);
        for r in &issued {
            assert!(
                matches!(r.status, 200 | 401 | 403),
                "{}: {}",
                r.status,
                r.text
            );
            if r.status != 200 {
                continue;
            }
            let c = claims(&token(r, "accessToken"));
            let sid = c["sid"].as_str().unwrap().to_string();
            if change == "disable" || c["role"] == "admin" {
                assert!(!live.contains(&sid), "{change}: live session {sid}: {c}");
            }
        }
    }
}
