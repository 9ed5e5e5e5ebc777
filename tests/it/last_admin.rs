//! The last enabled admin: over HTTP no demotion, disable or delete may leave the database
//! without one (400 `VALIDATION_ERROR`), not even two admins taking each other away at the
//! same moment; the CLI may, after one warning line on stderr.

use std::sync::Barrier;

use serde_json::{json, Value};

use crate::admin_cli::{admin_token, audit, users};
use crate::support::*;

fn user_id(data: &Value) -> String {
    data["user"]["id"].as_str().unwrap().to_string()
}

fn access(data: &Value) -> String {
    data["accessToken"].as_str().unwrap().to_string()
}

/// The ids of every enabled admin, read from the database.
fn enabled_admins(s: &TestServer) -> Vec<String> {
    s.query_column(
        "SELECT CAST(id AS TEXT) FROM users WHERE role = 'admin' AND NOT disabled",
        &[],
    )
}

fn set_role(s: &TestServer, token: &str, id: &str, role: &str) -> Resp {
    send(
        s.post(&format!("/api/admin/users/{id}/role"))
            .bearer_auth(token)
            .json(&json!({ "role": role })),
    )
}

/// A new user made an admin by `admin`; returns (id, email, access token of a fresh login).
fn new_admin(s: &TestServer, admin: &str, tag: &str) -> (String, String, String) {
    let email = unique_email(tag);
    let id = user_id(&s.register(&email));
    let r = set_role(s, admin, &id, "admin");
    assert_eq!(r.status, 200, "{}", r.text);
    let token = access(&s.login(&email));
    (id, email, token)
}

#[test]
fn the_last_enabled_admin_cannot_demote_itself_over_http() {
    let s = TestServer::start();
    let (admin_id, admin) = admin_token(&s);

    let r = set_role(&s, &admin, &admin_id, "user");
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(detail_fields(&r), ["role"], "{}", r.text);
    // Nothing changed: still the admin, its session still live.
    assert_eq!(enabled_admins(&s), [admin_id.as_str()]);
    let r = s.get_auth("/api/auth/profile", &admin);
    assert_eq!(r.body["data"]["user"]["role"], "admin", "{}", r.text);

    // A disabled admin is no admin: the last enabled one still cannot step down.
    let (other_id, other_email, _) = new_admin(&s, &admin, "second");
    let r = send(
        s.post(&format!("/api/admin/users/{other_id}/disable"))
            .bearer_auth(&admin),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    set_role(&s, &admin, &admin_id, "user").assert_error(400, "VALIDATION_ERROR");

    // With another enabled admin it may (and its own sessions are revoked).
    let r = send(
        s.post(&format!("/api/admin/users/{other_id}/enable"))
            .bearer_auth(&admin),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = set_role(&s, &admin, &admin_id, "user");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["role"], "user");
    assert_eq!(enabled_admins(&s), [other_id.as_str()]);

    // Now the other one is the last.
    let other = access(&s.login(&other_email));
    set_role(&s, &other, &other_id, "user").assert_error(400, "VALIDATION_ERROR");
    assert_eq!(enabled_admins(&s), [other_id]);
}

/// How one admin takes another away.
#[derive(Debug, Clone, Copy)]
enum TakeAway {
    Demote,
    Disable,
    Delete,
}

const TAKE_AWAY: [TakeAway; 3] = [TakeAway::Demote, TakeAway::Disable, TakeAway::Delete];

fn take_away(
    client: &reqwest::blocking::Client,
    base: &str,
    how: TakeAway,
    token: &str,
    target: &str,
) -> reqwest::blocking::RequestBuilder {
    let user = format!("{base}/api/admin/users/{target}");
    match how {
        TakeAway::Demote => client
            .post(format!("{user}/role"))
            .json(&json!({"role": "user"})),
        TakeAway::Disable => client.post(format!("{user}/disable")),
        TakeAway::Delete => client.delete(user),
    }
    .bearer_auth(token)
}

#[test]
fn two_admins_taking_each_other_away_at_once_leave_one() {
    let s = TestServer::start();
    let (mut keeper_id, mut keeper) = admin_token(&s);
    let base = s.url("");
    for round in 0..27 {
        // Exactly two enabled admins, each about to take the other away.
        let (rival_id, _, rival) = new_admin(&s, &keeper, &format!("rival{round}"));
        let mut before = enabled_admins(&s);
        before.sort();
        let mut expected = vec![keeper_id.clone(), rival_id.clone()];
        expected.sort();
        assert_eq!(before, expected, "round {round}");

        let (a, b) = (TAKE_AWAY[round % 3], TAKE_AWAY[(round / 3) % 3]);
        let barrier = Barrier::new(2);
        let moves = [
            (a, keeper.clone(), rival_id.clone()),
            (b, rival.clone(), keeper_id.clone()),
        ];
        let answers: Vec<Resp> = std::thread::scope(|scope| {
            let handles: Vec<_> = moves
                .iter()
                .map(|(how, token, target)| {
                    let (client, base, barrier) = (s.client.clone(), &base, &barrier);
                    scope.spawn(move || {
                        let request = take_away(&client, base, *how, token, target);
                        barrier.wait();
                        send(request)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let what = format!(
            "round {round} ({a:?} vs {b:?}): {:?}",
            answers.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
        let succeeded: Vec<usize> = (0..2).filter(|&i| answers[i].status == 200).collect();
        assert_eq!(succeeded.len(), 1, "{what}");
        // The loser was refused by the rule, or its own session was already gone.
        let loser = &answers[1 - succeeded[0]];
        match loser.status {
            400 => loser.assert_error(400, "VALIDATION_ERROR"),
            401 => assert!(
                ["TOKEN_REVOKED", "TOKEN_INVALID"].contains(&loser.body["error"].as_str().unwrap()),
                "{what}"
            ),
            _ => panic!("{what}"),
        }
        let left = enabled_admins(&s);
        assert_eq!(left.len(), 1, "{what}");
        // The one taken away is the winner's target; the winner goes on to the next round.
        if succeeded[0] == 1 {
            (keeper_id, keeper) = (rival_id, rival);
        }
        assert_eq!(left, [keeper_id.clone()], "{what}");
    }
}

#[test]
fn the_cli_may_take_the_last_admin_away_after_one_warning_line() {
    let s = TestServer::start();
    let (admin_id, _) = admin_token(&s);
    let (other_id, _) = admin_token(&s);

    // Another enabled admin stays: no warning.
    let out = users(&s, &["users", "set-role", &other_id, "user"]);
    out.ok();
    assert_eq!(out.stderr, "", "{out:#?}");

    let steps: [&[&str]; 3] = [
        &["users", "set-role", &admin_id, "user"],
        &["users", "disable", &admin_id],
        &["users", "delete", &admin_id, "--yes"],
    ];
    let undo: [&[&str]; 3] = [
        &["users", "set-role", &admin_id, "admin"],
        &["users", "enable", &admin_id],
        &[],
    ];
    for (step, undo) in steps.iter().zip(undo) {
        let out = users(&s, step);
        out.ok();
        assert_eq!(out.stdout.lines().count(), 1, "{out:#?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{out:#?}");
        assert!(
            lines[0].starts_with("warning: no enabled admin is left"),
            "{out:#?}"
        );
        assert!(enabled_admins(&s).is_empty(), "{step:?}");
        if !undo.is_empty() {
            let out = users(&s, undo);
            out.ok();
            assert_eq!(out.stderr, "", "{out:#?}");
        }
    }
    // The audit trail says so too.
    let events = audit(&s, &[]);
    let noted = events
        .iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.ends_with("; no enabled admin left"))
        })
        .count();
    assert_eq!(noted, 3, "{events:#?}");
}
