//! `authd import-users`: JSON Lines checked line by line before anything is written, imported
//! in one transaction; imported users log in with their old passwords, whatever the bcrypt
//! variant, and their hashes are upgraded to the configured cost at login.

use std::path::Path;
use std::time::{Duration, Instant};

use bcrypt::Version;
use serde_json::json;

use crate::cli::{authd_on, count, create_user, numbers, run, Run};
use crate::support::*;

/// A bcrypt hash of `password` at `cost`, with the `$2a$` / `$2b$` / `$2y$` prefix of `version`.
fn hash(password: &str, cost: u32, version: Version) -> String {
    bcrypt::hash_with_result(password, cost)
        .unwrap()
        .format_for_version(version)
}

fn line(email: &str, password_hash: &str) -> String {
    json!({"email": email, "passwordHash": password_hash}).to_string()
}

/// Writes `lines` (newline-terminated) to `<dir>/users.jsonl` and runs import-users on it.
fn import(dir: &Path, lines: &[String], flags: &[&str]) -> Run {
    let file = dir.join("users.jsonl");
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&file, text).unwrap();
    let mut cmd = authd_on(dir);
    cmd.arg("import-users").arg(&file).args(flags);
    run(&mut cmd, None)
}

fn users(dir: &Path) -> i64 {
    count(&dir.join("authd.db"), "SELECT COUNT(*) FROM users")
}

/// The bcrypt cost of the hash stored for `email`.
fn stored_cost(db: &Path, email: &str) -> u32 {
    let conn = rusqlite::Connection::open(db).unwrap();
    let hash: String = conn
        .query_row(
            "SELECT password_hash FROM users WHERE email = ?1",
            [email],
            |r| r.get(0),
        )
        .unwrap();
    hash[4..6].parse().unwrap()
}

fn login_with(s: &TestServer, email: &str, password: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
}

#[test]
fn imported_users_log_in_with_their_old_passwords_whatever_the_bcrypt_variant() {
    let dir = tempfile::tempdir().unwrap();
    let variants = [
        ("2a", Version::TwoA),
        ("2b", Version::TwoB),
        ("2y", Version::TwoY),
    ];
    let mut lines = Vec::new();
    let mut emails = Vec::new();
    for (tag, version) in variants {
        let email = unique_email(&format!("import-{tag}"));
        let h = hash(&format!("Old-pass-{tag}-1"), 4, version);
        assert!(h.starts_with(&format!("${tag}$04$")), "{h}");
        lines.push(line(&email, &h));
        emails.push((tag, email));
    }
    let admin = unique_email("import-admin");
    lines.push(
        json!({"email": admin.to_uppercase(), "passwordHash": hash("Admin-pass-1", 5, Version::TwoB),
               "name": " Ann Admin ", "role": "admin"})
        .to_string(),
    );
    let out = import(dir.path(), &lines, &[]);
    assert_eq!(numbers(out.ok()), [4, 0], "{out:#?}");

    let s = TestServer::in_dir(dir, &[]);
    for (tag, email) in &emails {
        let r = login_with(&s, email, &format!("Old-pass-{tag}-1"));
        assert_eq!(r.status, 200, "${tag}$: {}", r.text);
        login_with(&s, email, "Wrong-pass-1!").assert_error(401, "INVALID_CREDENTIALS");
    }
    let r = login_with(&s, &admin, "Admin-pass-1");
    assert_eq!(r.status, 200, "{}", r.text);
    let user = &r.body["data"]["user"];
    assert_eq!(user["email"], admin.as_str());
    assert_eq!(user["name"], "Ann Admin");
    assert_eq!(user["role"], "admin");
}

#[test]
fn a_cheap_imported_hash_is_upgraded_to_the_configured_cost_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email("import-upgrade");
    let out = import(
        dir.path(),
        &[line(&email, &hash("Old-pass-1!", 4, Version::TwoY))],
        &[],
    );
    assert_eq!(numbers(out.ok()), [1, 0]);
    let s = TestServer::in_dir(dir, &[]);
    assert_eq!(stored_cost(&s.db_path(), &email), 4);
    assert_eq!(login_with(&s, &email, "Old-pass-1!").status, 200);
    // The re-hash runs after the login answered: wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_cost(&s.db_path(), &email) != 10 {
        assert!(Instant::now() < deadline, "the hash was never upgraded");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The new hash holds the same password.
    assert_eq!(login_with(&s, &email, "Old-pass-1!").status, 200);
    login_with(&s, &email, "Wrong-pass-1!").assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(stored_cost(&s.db_path(), &email), 10);
}

#[test]
fn every_bad_line_is_named_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let good = |tag: &str| line(&unique_email(tag), &hash("Old-pass-1!", 4, Version::TwoB));
    let h = hash("Old-pass-1!", 4, Version::TwoB);
    let lines = [
        good("import-bad-1"),                                                      // 1
        "[\"not\", \"an object\"]".to_string(),                                    // 2
        json!({"email": unique_email("import-bad")}).to_string(),                  // 3
        good("import-bad-4"),                                                      // 4
        json!({"email": "a@b.io", "passwordHash": h, "admin": true}).to_string(),  // 5
        json!({"email": "not an email", "passwordHash": h}).to_string(),           // 6
        json!({"email": "c@d.io", "passwordHash": h, "role": "root"}).to_string(), // 7
        json!({"email": "e@f.io", "passwordHash": "secret"}).to_string(),          // 8
        json!({"email": "g@h.io", "passwordHash": h.replacen("$04$", "$03$", 1)}).to_string(), // 9
        json!({"email": "i@j.io", "passwordHash": h.replacen("$2b$", "$2x$", 1)}).to_string(), // 10
        json!({"email": "k@l.io", "passwordHash": h, "name": "   "}).to_string(),  // 11
        json!({"passwordHash": h}).to_string(),                                    // 12
        good("import-bad-13"),                                                     // 13
    ];
    let out = import(dir.path(), &lines, &[]);
    let message = out.error_line();
    let named: Vec<u64> = message
        .split("line ")
        .skip(1)
        .map(|rest| numbers(rest)[0])
        .collect();
    assert_eq!(named, [2, 3, 5, 6, 7, 8, 9, 10, 11, 12], "{message}");
    assert!(message.contains("10 bad lines"), "{message}");
    assert!(!message.contains(&h), "a hash is never echoed: {message}");
    assert_eq!(users(dir.path()), 0, "nothing imported");
}

#[test]
fn an_email_repeated_in_the_file_is_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email("import-twice");
    let h = hash("Old-pass-1!", 4, Version::TwoB);
    let lines = [
        line(&email, &h),
        line(&unique_email("import-once"), &h),
        line(&format!("  {}", email.to_uppercase()), &h),
    ];
    let out = import(dir.path(), &lines, &[]);
    let message = out.error_line();
    assert!(
        message.contains("1 bad line") && message.contains("line 3: email repeats line 1"),
        "{message}"
    );
    assert_eq!(users(dir.path()), 0);
}

#[test]
fn an_existing_email_fails_the_import_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let existing = unique_email("import-existing");
    create_user(dir.path(), &existing, PASSWORD);
    let fresh = unique_email("import-fresh");
    let h = hash("Old-pass-1!", 4, Version::TwoB);
    let lines = [line(&fresh, &h), line(&existing.to_uppercase(), &h)];

    let out = import(dir.path(), &lines, &[]);
    let message = out.error_line();
    assert!(message.contains(&existing), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert_eq!(users(dir.path()), 1, "nothing imported");

    // A dry run says the same, and with --skip-existing counts without writing.
    let dry = import(dir.path(), &lines, &["--dry-run"]);
    assert!(dry.error_line().contains(&existing));
    let dry = import(dir.path(), &lines, &["--dry-run", "--skip-existing"]);
    assert_eq!(numbers(dry.ok()), [1, 1], "{dry:#?}");
    assert_eq!(users(dir.path()), 1, "a dry run writes nothing");
    assert_eq!(
        count(
            &dir.path().join("authd.db"),
            "SELECT COUNT(*) FROM audit_events WHERE event = 'user_import'"
        ),
        0
    );

    let out = import(dir.path(), &lines, &["--skip-existing"]);
    assert_eq!(numbers(out.ok()), [1, 1], "{out:#?}");
    assert_eq!(users(dir.path()), 2);
    assert_eq!(
        count(
            &dir.path().join("authd.db"),
            "SELECT COUNT(*) FROM audit_events WHERE event = 'user_import'"
        ),
        1,
        "one audit event per import run"
    );

    // The existing account kept its password; the new one has its imported hash.
    let s = TestServer::in_dir(dir, &[]);
    assert_eq!(login_with(&s, &existing, PASSWORD).status, 200);
    login_with(&s, &existing, "Old-pass-1!").assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(login_with(&s, &fresh, "Old-pass-1!").status, 200);
}

#[test]
fn blank_lines_are_ignored_and_an_empty_file_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = import(dir.path(), &[], &[]);
    assert_eq!(numbers(out.ok()), [0, 0]);
    let h = hash("Old-pass-1!", 4, Version::TwoB);
    let lines = [
        String::new(),
        line(&unique_email("import-blank"), &h),
        "   ".to_string(),
        line(&unique_email("import-blank"), &h),
        String::new(),
    ];
    let out = import(dir.path(), &lines, &[]);
    assert_eq!(numbers(out.ok()), [2, 0]);
    assert_eq!(users(dir.path()), 2);
}

#[test]
fn an_unreadable_file_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = authd_on(dir.path());
    cmd.args(["import-users", "no-such-file.jsonl"]);
    let out = run(&mut cmd, None);
    assert!(out.error_line().contains("no-such-file.jsonl"));
    let mut cmd = authd_on(dir.path());
    cmd.args(["import-users"]);
    run(&mut cmd, None).usage_error();
}

/// `hash` with its cost field replaced by `cost` (a well-formed hash of that cost as far as
/// import can tell, without spending the work).
fn at_cost(hash: &str, cost: u32) -> String {
    format!("{}{cost:02}{}", &hash[..4], &hash[6..])
}

#[test]
fn a_hash_above_the_import_maximum_is_a_bad_line_naming_its_cost() {
    let dir = tempfile::tempdir().unwrap();
    let h = hash("Old-pass-1!", 4, Version::TwoB);
    let good = |cost: u32| line(&unique_email("import-cost"), &at_cost(&h, cost));
    // The CLI runs with password.bcrypt_cost 10: at most max(10, 14) = 14.
    let lines = [good(10), good(15), good(14), good(31), good(16)];
    let message = import(dir.path(), &lines, &[]).error_line();
    assert!(message.contains("3 bad lines,"), "{message}");
    for (line, cost) in [(2, 15), (4, 31), (5, 16)] {
        assert!(
            message.contains(&format!(
                "line {line}: passwordHash has bcrypt cost {cost}, above the 14"
            )),
            "line {line} named with cost {cost}: {message}"
        );
    }
    assert_eq!(users(dir.path()), 0, "nothing imported");
    let out = import(dir.path(), &[good(14), good(4)], &[]);
    assert_eq!(numbers(out.ok()), [2, 0]);
    // A higher configured cost raises the bound to itself.
    let file = dir.path().join("users.jsonl");
    std::fs::write(&file, format!("{}\n{}\n", good(15), good(16))).unwrap();
    let mut cmd = authd_on(dir.path());
    cmd.env("AUTHD_PASSWORD__BCRYPT_COST", "15")
        .arg("import-users")
        .arg(&file);
    let message = run(&mut cmd, None).error_line();
    assert!(message.contains(" 1 bad line,"), "{message}");
    assert!(
        message.contains("line 2: passwordHash has bcrypt cost 16, above the 15"),
        "{message}"
    );
}
