//! Hostile text on every input path, on both backends: a NUL (PostgreSQL's text cannot hold
//! one), bytes that are not UTF-8, and values of kilobytes (no btree index holds an entry over
//! about 2.7 KB). Each input is refused clearly (400 `VALIDATION_ERROR`, 404, CLI exit 1 with
//! one line) or stored in a bounded, harmless form; never a 500, never a lost audit event.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use serde_json::{json, Value};

use crate::admin_cli::{admin_token, audit, users, users_with_input};
use crate::cli::{assert_one_line, authd_on, run, Run};
use crate::support::*;

const WRONG: &str = "Wrong-horse-1!";
const ON: (&str, &str) = ("AUTHD_RATE_LIMIT__ENABLED", "true");
const MANY_REQUESTS: (&str, &str) = ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "100000");
/// Room for a 100 KB field inside a JSON body.
const BIG_BODY: (&str, &str) = ("AUTHD_SERVER__BODY_LIMIT", "262144");
/// Just over the 254-character limit, over a btree entry, and far over it.
const SIZES: [usize; 3] = [255, 3 * 1024, 100 * 1024];

/// `n` characters of random hex: text that no compression shrinks (PostgreSQL compresses a
/// large index entry first, so a repetitive one would hide the limit).
fn noise(n: usize) -> String {
    let mut s = String::with_capacity(n + 32);
    while s.len() < n {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}

/// An email-shaped string of exactly `n` characters (over 254: no account can have it).
fn long_email(n: usize) -> String {
    format!("{}@example.com", noise(n - "@example.com".len()))
}

fn login(s: &TestServer, email: &str, password: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
}

/// An email as the audit trail may hold it: bounded, and (for `raw` over the limit) not `raw`.
fn assert_bounded_email(event: &Value, raw: &str) {
    let stored = event["email"]
        .as_str()
        .unwrap_or_else(|| panic!("audit event without an email: {event}"));
    assert!(
        !stored.is_empty() && stored.chars().count() <= 254,
        "{} characters stored",
        stored.chars().count()
    );
    assert!(!stored.chars().any(char::is_control), "{stored:?}");
    if raw.chars().count() > 254 {
        assert_ne!(stored, raw);
    }
}

fn reasons(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("-").to_string())
        .collect()
}

/// No text column the server wrote holds a NUL (on PostgreSQL none can: a NUL there is a 500).
fn assert_no_nul_stored(s: &TestServer) {
    if s.on_postgres() {
        return;
    }
    for (table, columns) in [
        (
            "audit_events",
            &[
                "event",
                "email",
                "ip",
                "user_agent",
                "outcome",
                "reason",
                "actor",
            ][..],
        ),
        ("sessions", &["user_agent", "ip", "device_info"][..]),
        ("login_failures", &["key"][..]),
        ("users", &["email", "name"][..]),
    ] {
        for column in columns {
            let n = s.query_column(
                &format!("SELECT COUNT(*) FROM {table} WHERE instr({column}, char(0)) > 0"),
                &[],
            );
            assert_eq!(n, ["0"], "{table}.{column} holds a NUL");
        }
    }
}

/// One request and the answer it must get.
struct Case<'a> {
    method: &'static str,
    path: String,
    bearer: Option<&'a str>,
    body: Option<Value>,
    status: u16,
    code: &'static str,
    /// The field a validation error names in `details`.
    field: Option<&'static str>,
}

fn case<'a>(method: &'static str, path: impl Into<String>, bearer: Option<&'a str>) -> Case<'a> {
    Case {
        method,
        path: path.into(),
        bearer,
        body: None,
        status: 200,
        code: "",
        field: None,
    }
}

fn get<'a>(path: impl Into<String>, bearer: &'a str) -> Case<'a> {
    case("GET", path, Some(bearer))
}

fn delete<'a>(path: impl Into<String>, bearer: &'a str) -> Case<'a> {
    case("DELETE", path, Some(bearer))
}

fn post<'a>(path: impl Into<String>, bearer: Option<&'a str>, body: Value) -> Case<'a> {
    Case {
        body: Some(body),
        ..case("POST", path, bearer)
    }
}

impl Case<'_> {
    fn wants(self, status: u16, code: &'static str) -> Self {
        Case {
            status,
            code,
            ..self
        }
    }

    /// A 400 `VALIDATION_ERROR` naming `field`.
    fn refused(self, field: &'static str) -> Self {
        Case {
            field: Some(field),
            ..self.wants(400, "VALIDATION_ERROR")
        }
    }

    fn check(&self, s: &TestServer) {
        let mut req = s
            .client
            .request(self.method.parse().unwrap(), s.url(&self.path));
        if let Some(t) = self.bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = &self.body {
            req = req.json(b);
        }
        let r = send(req);
        let what = format!("{} {:.80}", self.method, self.path);
        assert_eq!(r.status, self.status, "{what}: {}", r.text);
        r.assert_error(self.status, self.code);
        if let Some(field) = self.field {
            assert_eq!(detail_fields(&r), [field], "{what}: {}", r.text);
        }
    }
}

/// Every HTTP input that can carry a NUL (query strings, path parameters, JSON fields) or
/// bytes that are not UTF-8 (percent-encoded, header values): a 400 naming the field, a 404,
/// or a harmless success; never a 500. Limits are on, so login's counters are written too.
#[test]
fn nul_in_any_http_input_is_a_clear_error_or_harmless() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "1000"),
    ]);
    let (_, admin) = admin_token(&s);
    let email = unique_email("nul");
    let data = s.register(&email);
    let (id, access) = (
        data["user"]["id"].as_str().unwrap().to_string(),
        data["accessToken"].as_str().unwrap().to_string(),
    );

    let u = format!("/api/admin/users/{id}");
    let (admin, access) = (admin.as_str(), access.as_str());
    let nul_login = |e: &str| json!({"email": e, "password": PASSWORD});
    let cases = [
        // The admin listing's filters.
        get("/api/admin/users?email=%00", admin).refused("email"),
        get("/api/admin/users?email=a%00b@x.io", admin).refused("email"),
        get(
            format!("/api/admin/users?email={}%00", email.replace('@', "%40")),
            admin,
        )
        .refused("email"),
        get("/api/admin/users?email=a%0Ab@x.io", admin).refused("email"),
        get("/api/admin/users?cursor=%00", admin).refused("cursor"),
        get("/api/admin/users?limit=1%00", admin).refused("limit"),
        // Path parameters name nothing.
        get("/api/admin/users/%00", admin).wants(404, "NOT_FOUND"),
        get(format!("{u}%00"), admin).wants(404, "NOT_FOUND"),
        get("/api/admin/users/%00/sessions", admin).wants(404, "NOT_FOUND"),
        delete("/api/admin/users/%00/sessions", admin).wants(404, "NOT_FOUND"),
        post("/api/admin/users/%00/unlock", Some(admin), json!({})).wants(404, "NOT_FOUND"),
        delete("/api/auth/sessions/%00", access).wants(404, "NOT_FOUND"),
        delete("/api/auth/sessions/%FF", access).wants(404, "NOT_FOUND"),
        // JSON fields.
        post(format!("{u}/role"), Some(admin), json!({"role": "admin\0"})).refused("role"),
        post("/api/auth/register", None, nul_login("x\0@y.io")).refused("email"),
        post(
            "/api/auth/register",
            None,
            json!({"email": unique_email("n"), "password": PASSWORD, "name": "\0"}),
        )
        .refused("name"),
        post("/api/auth/login", None, nul_login("x\0@y.io")).wants(401, "INVALID_CREDENTIALS"),
        post("/api/auth/login", None, nul_login(&format!("{email}\0")))
            .wants(401, "INVALID_CREDENTIALS"),
        post("/api/auth/refresh", None, json!({"refreshToken": "\0"})).wants(401, "TOKEN_INVALID"),
        post("/api/auth/logout", None, json!({"refreshToken": "a\0b"})).wants(401, "TOKEN_INVALID"),
        post(
            "/api/auth/password",
            Some(access),
            json!({"currentPassword": PASSWORD, "newPassword": "Other-horse-9\0"}),
        )
        .refused("newPassword"),
        post(
            "/api/auth/password",
            Some(access),
            json!({"currentPassword": "\0", "newPassword": "Other-horse-9"}),
        )
        .wants(401, "INVALID_CREDENTIALS"),
    ];
    for case in &cases {
        case.check(&s);
    }

    // Harmless: a filter that is not UTF-8 (decoded with U+FFFD) matches nobody.
    let r = send(
        s.get("/api/admin/users?email=%FF%FE@x.io")
            .bearer_auth(admin),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["users"], json!([]));
    // The plain filter still finds the user.
    let r = send(
        s.get(&format!(
            "/api/admin/users?email={}",
            email.to_uppercase().replace('@', "%40")
        ))
        .bearer_auth(admin),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["users"][0]["id"], id.as_str());

    // Harmless: a deviceInfo with a NUL (string or object) and a User-Agent that is not
    // UTF-8 are kept without control characters, readable.
    for device in [json!("phone\0x"), json!({"model": "a\0b"})] {
        let r = send(
            s.post("/api/auth/login")
                .header("user-agent", &b"probe/\xff\x80 1.0"[..])
                .json(&json!({"email": email, "password": PASSWORD, "deviceInfo": device})),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let sessions = send(s.get(&format!("{u}/sessions")).bearer_auth(admin));
    assert_eq!(sessions.status, 200, "{}", sessions.text);
    let agents: Vec<&str> = sessions.body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["userAgent"].as_str())
        .collect();
    assert!(
        agents.iter().filter(|a| a.starts_with("probe/")).count() == 2,
        "the User-Agent is kept (lossily): {agents:?}"
    );

    // The logins with a NUL in the email were audited, in one readable form on both backends.
    let logins = audit(&s, &["--event", "login"]);
    let nul_emails: Vec<&str> = logins
        .iter()
        .filter_map(|e| e["email"].as_str())
        .filter(|e| e.starts_with("x") && e.ends_with("@y.io"))
        .collect();
    assert_eq!(nul_emails, ["x\u{FFFD}@y.io"], "{logins:?}");
    assert_no_nul_stored(&s);
}

/// `authd` with raw (possibly non-UTF-8) arguments on the server's database.
fn authd_raw(s: &TestServer, args: &[&[u8]]) -> Run {
    let mut cmd = authd_on(s.dir.path());
    cmd.args(args.iter().map(|a| OsStr::from_bytes(a)));
    run(&mut cmd, None)
}

fn assert_exit_1(r: &Run, what: &str) {
    assert_eq!(r.status.code(), Some(1), "{what}: {r:#?}");
    assert_one_line(&r.stderr);
}

/// Every CLI input: arguments (no NUL can be passed, but bytes that are not UTF-8 can),
/// standard input, import files and configuration files. Each is one line, exit 1, and
/// nothing is written.
#[test]
fn hostile_text_in_cli_input_is_one_line_exit_1() {
    let s = TestServer::start();
    let email = unique_email("cli");
    s.register(&email);
    let bad: &[u8] = b"al\xffce@x.io";
    for args in [
        vec![&b"users"[..], b"show", bad],
        vec![b"users", b"disable", bad],
        vec![b"users", b"unlock", bad],
        vec![b"audit", b"--email", bad],
        vec![b"revoke-sessions", b"--email", bad, b"--yes"],
        vec![b"create-user", b"--email", bad, b"--password-stdin"],
        vec![b"keys", b"revoke", bad, b"--yes"],
    ] {
        let r = authd_raw(&s, &args);
        assert_exit_1(&r, &format!("{args:?}"));
    }
    // Text that is UTF-8 but names nobody, with control characters or kilobytes long.
    let long = long_email(3 * 1024);
    for user in ["a\u{1}b@x.io", "a\nb@x.io", long.as_str()] {
        for cmd in [&["users", "show", user][..], &["users", "disable", user]] {
            let r = users(&s, cmd);
            assert_exit_1(&r, &format!("{cmd:?}"));
            assert!(r.stderr.contains("no such user"), "{r:#?}");
        }
        let r = users(&s, &["revoke-sessions", "--email", user, "--yes"]);
        assert_exit_1(&r, "revoke-sessions");
        let r = users_with_input(
            &s,
            &["create-user", "--email", user, "--password-stdin"],
            PASSWORD,
        );
        assert_exit_1(&r, "create-user --email");
    }
    let r = users_with_input(
        &s,
        &[
            "create-user",
            "--email",
            &unique_email("n"),
            "--name",
            "a\u{1}b",
            "--password-stdin",
        ],
        PASSWORD,
    );
    assert_exit_1(&r, "create-user --name");
    let r = users_with_input(
        &s,
        &[
            "create-user",
            "--email",
            &unique_email("p"),
            "--password-stdin",
        ],
        "Correct-horse-9\0",
    );
    assert_exit_1(&r, "create-user with a NUL in the password");
    let r = users(&s, &["keys", "revoke", &noise(3 * 1024), "--yes"]);
    assert_exit_1(&r, "keys revoke <3 KB>");

    // import-users: a NUL in any field, raw bytes that are not UTF-8, a raw NUL byte.
    let hash = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";
    let mut file = Vec::new();
    for line in [
        json!({"email": "a\0@x.io", "passwordHash": hash}).to_string(),
        json!({"email": unique_email("i"), "passwordHash": format!("{hash}\0")}).to_string(),
        json!({"email": unique_email("i"), "passwordHash": hash, "name": "a\0b"}).to_string(),
        json!({"email": unique_email("i"), "passwordHash": hash, "role": "admin\0"}).to_string(),
        json!({"email": unique_email("i"), "passwordHash": hash, "x\0": 1}).to_string(),
        json!({"email": long_email(3 * 1024), "passwordHash": hash}).to_string(),
        json!({"email": unique_email("i"), "passwordHash": hash, "name": noise(3 * 1024)})
            .to_string(),
    ] {
        file.extend_from_slice(line.as_bytes());
        file.push(b'\n');
    }
    file.extend_from_slice(b"{\"email\": \"b\xff@x.io\", \"passwordHash\": \"x\"}\n");
    file.extend_from_slice(b"{\"email\": \"c@x.io\",\0 \"passwordHash\": \"x\"}\n");
    let path = s.dir.path().join("hostile.jsonl");
    std::fs::write(&path, &file).unwrap();
    let r = users(&s, &["import-users", path.to_str().unwrap()]);
    assert_exit_1(&r, "import-users");
    for line in 1..=9 {
        assert!(r.stderr.contains(&format!("line {line}:")), "{r:#?}");
    }
    assert_eq!(
        s.query_column("SELECT COUNT(*) FROM users", &[]),
        ["1"],
        "nothing imported"
    );

    // A configuration value with a NUL (TOML's \u0000): one line, exit 1.
    let config = s.dir.path().join("nul.toml");
    let url = s.database_url();
    std::fs::write(&config, format!("[database]\nurl = \"{}\\u0000x\"\n", url)).unwrap();
    let r = run(
        crate::cli::authd(s.dir.path()).args([
            "--config",
            config.to_str().unwrap(),
            "users",
            "list",
        ]),
        None,
    );
    assert_exit_1(&r, "a NUL in database.url");
    assert_no_nul_stored(&s);
}

/// An email over 254 characters at login (255 characters, 3 KB, 100 KB) is a wrong password:
/// 401 after the same bcrypt work, counted against the email's lockout (under a bounded key,
/// so `users unlock` with the same text clears it) and the IP's budget, and audited with a
/// bounded form of the email that `authd audit --email` finds again.
#[test]
fn an_oversized_email_at_login_is_a_counted_and_audited_wrong_password() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        BIG_BODY,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "10"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
    ]);
    let emails: Vec<String> = SIZES.iter().map(|&n| long_email(n)).collect();
    for email in &emails {
        for password in [WRONG, PASSWORD, WRONG] {
            login(&s, email, password).assert_error(401, "INVALID_CREDENTIALS");
        }
        login(&s, email, WRONG).assert_error(423, "ACCOUNT_LOCKED");
        let events = audit(&s, &["--email", email, "--event", "login"]);
        assert_eq!(
            reasons(&events),
            ["locked", "unknown_email", "unknown_email", "unknown_email"],
            "{} characters",
            email.len()
        );
        for e in &events {
            assert_bounded_email(e, email);
            assert_eq!(e["email"], events[0]["email"]);
        }
    }
    // Nine failures so far on this IP. Unlocking the 3 KB email by the same text clears its
    // bounded counter: one more failure, the IP's tenth.
    let r = users(&s, &["users", "unlock", &emails[1]]);
    assert_eq!(r.status.code(), Some(0), "{r:#?}");
    assert!(r.stdout.starts_with("unlocked "), "{r:#?}");
    login(&s, &emails[1], WRONG).assert_error(401, "INVALID_CREDENTIALS");
    let r = login(&s, &long_email(3 * 1024), WRONG);
    r.assert_error(429, "RATE_LIMITED");
    let unlocks = audit(&s, &["--event", "admin_unlock"]);
    assert_eq!(unlocks.len(), 1, "{unlocks:?}");
    assert_bounded_email(&unlocks[0], &emails[1]);
    assert_eq!(
        unlocks[0]["email"],
        audit(&s, &["--email", &emails[1], "--event", "login"])[0]["email"]
    );

    // Limits off: nothing is counted, but every attempt is still a 401 and still audited.
    let off = TestServer::with(&[BIG_BODY]);
    for n in SIZES {
        let email = long_email(n);
        login(&off, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
        let events = audit(&off, &["--email", &email]);
        assert_eq!(reasons(&events), ["unknown_email"], "{n} characters");
        assert_bounded_email(&events[0], &email);
    }
    // The email at exactly the limit is kept as it is (it names nobody either).
    let at_limit = long_email(254);
    login(&off, &at_limit, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    let events = audit(&off, &["--email", &at_limit]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["email"], at_limit.as_str());
}

/// The same sizes in every other field that is stored or indexed: refused with a 400 naming
/// the field (register's email, name and password, deviceInfo, a new password, the admin
/// filters, a role), a 401 (tokens, a current password: counted), a 404 (ids), or kept
/// truncated (User-Agent: 256 characters); never a 500, every audit event written.
#[test]
fn oversized_values_in_every_other_field_are_refused_or_bounded() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        BIG_BODY,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "1000"),
    ]);
    let (_, admin) = admin_token(&s);
    let email = unique_email("big");
    let data = s.register(&email);
    let (id, access) = (
        data["user"]["id"].as_str().unwrap().to_string(),
        data["accessToken"].as_str().unwrap().to_string(),
    );
    let u = format!("/api/admin/users/{id}");
    for n in SIZES {
        let text = noise(n);
        let long = long_email(n);
        let (admin, access) = (admin.as_str(), access.as_str());
        let big_password = format!("Aa1!{text}");
        let cases = [
            post(
                "/api/auth/register",
                None,
                json!({"email": long, "password": PASSWORD}),
            )
            .refused("email"),
            post(
                "/api/auth/register",
                None,
                json!({"email": unique_email("r"), "password": PASSWORD, "name": text}),
            )
            .refused("name"),
            post(
                "/api/auth/register",
                None,
                json!({"email": unique_email("r"), "password": big_password}),
            )
            .refused("password"),
            post(
                "/api/auth/login",
                None,
                json!({"email": email, "password": big_password}),
            )
            .wants(401, "INVALID_CREDENTIALS"),
            post("/api/auth/refresh", None, json!({"refreshToken": text}))
                .wants(401, "TOKEN_INVALID"),
            post("/api/auth/logout", None, json!({"refreshToken": text}))
                .wants(401, "TOKEN_INVALID"),
            post(
                "/api/auth/password",
                Some(access),
                json!({"currentPassword": PASSWORD, "newPassword": big_password}),
            )
            .refused("newPassword"),
            post(
                "/api/auth/password",
                Some(access),
                json!({"currentPassword": text, "newPassword": "Other-horse-9"}),
            )
            .wants(401, "INVALID_CREDENTIALS"),
            post(format!("{u}/role"), Some(admin), json!({"role": text})).refused("role"),
        ];
        for case in &cases {
            case.check(&s);
        }
        // deviceInfo: at most 512 bytes (as a string, or an object's compact JSON).
        for device in [json!(noise(n.max(513))), json!({"k": noise(n.max(513))})] {
            let r = s.post_json(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD, "deviceInfo": device}),
            );
            r.assert_error(400, "VALIDATION_ERROR");
            assert_eq!(detail_fields(&r), ["deviceInfo"], "{}", r.text);
        }
        // URLs: the admin filters and path ids (a URL stays under 64 KB).
        if n < 64 * 1024 {
            for (path, status, field) in [
                (format!("/api/admin/users?email={long}"), 400, Some("email")),
                (
                    format!("/api/admin/users?cursor={text}"),
                    400,
                    Some("cursor"),
                ),
                (format!("/api/admin/users/{text}"), 404, None),
                (format!("/api/admin/users/{text}/sessions"), 404, None),
            ] {
                let r = send(s.get(&path).bearer_auth(admin));
                assert_eq!(r.status, status, "{path:.60} ({n}): {}", r.text);
                if let Some(field) = field {
                    assert!(detail_fields(&r).iter().any(|f| f == field), "{}", r.text);
                }
            }
            let r = send(
                s.delete(&format!("/api/auth/sessions/{text}"))
                    .bearer_auth(access),
            );
            r.assert_error(404, "NOT_FOUND");
        }
        // A User-Agent of any size is kept to its first 256 characters.
        let r = send(
            s.post("/api/auth/login")
                .header("user-agent", format!("ua-{n}-{text}"))
                .json(&json!({"email": email, "password": PASSWORD})),
        );
        assert_eq!(r.status, 200, "{n}: {}", r.text);
        let r = send(
            s.post("/api/auth/login")
                .header("user-agent", format!("ua-{n}-{text}"))
                .json(&json!({"email": email, "password": WRONG})),
        );
        r.assert_error(401, "INVALID_CREDENTIALS");
    }
    let sessions = send(s.get(&format!("{u}/sessions")).bearer_auth(&admin));
    assert_eq!(sessions.status, 200, "{}", sessions.text);
    let agents: Vec<&str> = sessions.body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["userAgent"].as_str())
        .filter(|a| a.starts_with("ua-"))
        .collect();
    assert_eq!(agents.len(), SIZES.len(), "{agents:?}");
    assert!(
        agents.iter().all(|a| a.chars().count() == 256),
        "{agents:?}"
    );
    let logins = audit(&s, &["--email", &email, "--event", "login"]);
    let with_ua: Vec<&Value> = logins
        .iter()
        .filter(|e| {
            e["userAgent"]
                .as_str()
                .is_some_and(|a| a.starts_with("ua-"))
        })
        .collect();
    assert_eq!(with_ua.len(), 2 * SIZES.len(), "{logins:?}");
    assert!(with_ua
        .iter()
        .all(|e| e["userAgent"].as_str().unwrap().chars().count() == 256));
    // Wrong current passwords of every size were counted and audited.
    let changes = audit(&s, &["--email", &email, "--event", "password_change"]);
    assert_eq!(
        reasons(&changes),
        ["wrong_password"; SIZES.len()],
        "{changes:?}"
    );
}

/// Prometheus counter value `name` in a `/metrics` text (0 when absent).
fn metric(s: &TestServer, name: &str) -> f64 {
    let text = send(s.get("/metrics")).text;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// An audit row the database refuses is never lost without a trace: the request is answered
/// as before, and the failure is counted (`authd_audit_write_failures_total`) and logged with
/// the whole event.
#[test]
fn an_audit_row_that_cannot_be_written_is_counted() {
    let s = TestServer::start();
    let email = unique_email("lost");
    s.register(&email);
    assert_eq!(metric(&s, "authd_audit_write_failures_total"), 0.0);
    if s.on_postgres() {
        s.execute_sql(
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
            &[],
        );
        s.execute_sql(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events
             FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
            &[],
        );
    } else {
        s.execute_sql(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events
             BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
            &[],
        );
    }
    login(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    login(&s, &long_email(3 * 1024), WRONG).assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(metric(&s, "authd_audit_write_failures_total"), 2.0);
}
