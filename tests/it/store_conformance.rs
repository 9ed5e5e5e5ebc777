//! The store's conformance suite: every test is written once against `&dyn Store` and runs on
//! each backend (`sqlite::` on a temp file, `postgres::` on a fresh PostgreSQL database that is
//! dropped afterwards; see `services.rs`). A backend is done when this suite passes.
//! Concurrency is real: many threads on one store, started together at a barrier.

use std::sync::Barrier;
use std::time::Duration;

use authd::domain::admins::ChangeOutcome;
use authd::domain::admins::LastAdmin::{Allow, Keep};
use authd::domain::keys::{KeyRevokeOutcome, KeyUse, StoredKey, StoredKeyState};
use authd::domain::limits::{Admission, CounterLimit, SlotGrant, SlotRequest};
use authd::domain::one_time::{Consumed, NewOneTimeToken, Purpose};
use authd::domain::time::Millis;
use authd::domain::{
    AuditEvent, AuditQuery, NewRefreshToken, NewUser, Refusal, Role, RotateOutcome, Rotation,
    Session, SessionOpening, User, UserFilter,
};
use authd::store::{
    self, AuditOf, DynStore, ImportOutcome, NewSession, OpeningAuditOf, Store, StoreError,
    StoreOptions,
};
use uuid::Uuid;

use crate::services::PgDatabase;

/// A store on a fresh database, and what keeps that database alive (dropped after the store).
pub struct Backend {
    pub store: DynStore,
    _sqlite: Option<tempfile::TempDir>,
    _postgres: Option<PgDatabase>,
}

fn options() -> StoreOptions {
    StoreOptions {
        pool_size: 8,
        busy_timeout: Duration::from_secs(10),
        health: authd::store::health::DbHealth::uncounted(),
    }
}

impl Backend {
    /// A migrated store on `backend` ("sqlite" or "postgres"), or `None` when PostgreSQL is not
    /// reachable outside CI (after a loud SKIPPED line).
    pub fn open(backend: &str) -> Option<Backend> {
        let b = Self::unmigrated(backend)?;
        b.store.migrate().expect("migrations apply");
        Some(b)
    }

    pub fn unmigrated(backend: &str) -> Option<Backend> {
        match backend {
            "sqlite" => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("authd.db").display());
                Some(Backend {
                    store: store::open(&url, &options()).unwrap(),
                    _sqlite: Some(dir),
                    _postgres: None,
                })
            }
            "postgres" => {
                let db = PgDatabase::create()?;
                Some(Backend {
                    store: store::open(&db.url, &options()).unwrap(),
                    _sqlite: None,
                    _postgres: Some(db),
                })
            }
            other => panic!("unknown backend {other}"),
        }
    }
}

/// Instantiates each named test once per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let b = super::Backend::open("sqlite").unwrap();
                    super::$name(&*b.store);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let Some(b) = super::Backend::open("postgres") else { return };
                    super::$name(&*b.store);
                }
            )*
        }
    };
}

conformance!(
    migrations_are_recorded_and_not_applied_twice,
    users_are_unique_by_email_and_found_by_email_and_id,
    sessions_are_found_by_id_by_token_and_with_their_user,
    sessions_open_only_on_the_checked_credential_of_an_enabled_account,
    a_user_and_its_first_session_are_stored_together_or_not_at_all,
    rotation_rotates_once_and_detects_reuse,
    rotation_refuses_unknown_expired_and_revoked_tokens,
    rotation_within_the_reuse_grace_issues_another_token,
    revocation_counts_each_live_session_once,
    purge_deletes_what_the_dry_run_counts,
    audit_events_filter_and_come_newest_first,
    text_with_nul_bytes_is_recorded_not_refused,
    concurrent_rotations_of_one_token_give_exactly_one_success,
    concurrent_revocations_of_one_session_give_exactly_one_true,
    concurrent_purges_delete_each_row_once,
    signing_keys_insert_rotate_revoke_and_bump_the_generation,
    concurrent_key_set_writes_leave_one_active_key,
    concurrent_login_reservations_admit_exactly_the_limit,
    accounts_list_disable_role_and_delete,
    concurrent_changes_to_the_last_two_admins_leave_one,
    password_hashes_change_upgrade_and_import,
    concurrent_hash_upgrades_land_once,
    one_time_tokens_are_used_once_superseded_and_killed,
    concurrent_uses_of_one_one_time_token_give_exactly_one_use,
    concurrent_revocations_reach_the_feed_once_each_in_cursor_order,
);

const HOUR: Millis = 3_600_000;
/// The failed-login window the purge tests pass (`rate_limit.window`).
const WINDOW: Millis = 1_000;
const FAR: Millis = 9_999_999_999_999;

/// Every test user's password hash.
const HASH: &str = "$2b$10$hash";

fn new_user(store: &dyn Store, email: &str) -> Uuid {
    let id = Uuid::new_v4();
    store
        .insert_user(
            &NewUser {
                id,
                email: email.into(),
                name: Some("Ada".into()),
                role: Role::User,
                password_hash: HASH.into(),
                created_at: 1_000,
                email_verified: true,
            },
            &created(id),
            None,
            None,
        )
        .unwrap();
    id
}

/// The audit event of a user's creation (at 0 and naming nobody, out of the audit tests' way;
/// `a_user_and_its_first_session_are_stored_together_or_not_at_all` tells them apart).
fn created(user: Uuid) -> AuditEvent {
    AuditEvent {
        at: 0,
        event: "user_create".into(),
        user_id: None,
        reason: Some(user.to_string()),
        email: None,
        ip: None,
        user_agent: None,
        outcome: "success".into(),
        actor: None,
    }
}

/// The audit row of a login, from what opening its session did.
fn login_audit() -> OpeningAuditOf {
    Box::new(|o: &SessionOpening| {
        Some(AuditEvent {
            at: 1,
            event: "login".into(),
            user_id: None,
            email: None,
            ip: None,
            user_agent: None,
            outcome: match o {
                SessionOpening::Opened(_) => "success".into(),
                SessionOpening::Refused { why, .. } => why.as_str().into(),
            },
            reason: None,
            actor: None,
        })
    })
}

/// Opens `new` on the test users' hash; panics unless it opened.
fn open_session(store: &dyn Store, new: &NewSession) {
    let outcome = store.open_session(new, HASH, login_audit()).unwrap();
    assert!(matches!(outcome, SessionOpening::Opened(_)), "{outcome:?}");
}

/// A session of `user` created at `at`, expiring at `expires_at`, with its first token.
fn new_session(store: &dyn Store, user: Uuid, at: Millis, expires_at: Millis) -> (Uuid, String) {
    let id = Uuid::new_v4();
    let hash = format!("h-{}", Uuid::new_v4().simple());
    open_session(
        store,
        &NewSession {
            session: Session {
                id,
                user_id: user,
                created_at: at,
                last_used_at: at,
                expires_at,
                revoked_at: None,
                user_agent: Some("ua".into()),
                ip: Some("192.0.2.1".into()),
                device_info: None,
                auth_methods: vec![authd::domain::AuthMethod::Pwd],
            },
            token: NewRefreshToken {
                hash: hash.clone(),
                session_id: id,
                created_at: at,
                expires_at,
            },
        },
    );
    (id, hash)
}

fn rotation(session: Uuid, presented: &str, now: Millis, grace: Millis) -> (Rotation, String) {
    let next = format!("h-{}", Uuid::new_v4().simple());
    (
        Rotation {
            presented_session: session,
            presented_hash: presented.into(),
            replacement_hash: next.clone(),
            now,
            expires_at: now + HOUR,
            reuse_grace: grace,
        },
        next,
    )
}

/// The audit row a rotation stores: event "refresh", the outcome's name.
fn audit() -> AuditOf {
    Box::new(|o: &RotateOutcome| AuditEvent {
        at: 1,
        event: "refresh".into(),
        user_id: None,
        email: None,
        ip: None,
        user_agent: None,
        outcome: match o {
            RotateOutcome::Rotated { .. } => "success",
            RotateOutcome::Unknown => "unknown",
            RotateOutcome::Expired { .. } => "expired",
            RotateOutcome::Revoked { .. } => "revoked",
            RotateOutcome::Reused { .. } => "reused",
        }
        .into(),
        reason: None,
        actor: None,
    })
}

fn rotate(store: &dyn Store, r: Rotation) -> RotateOutcome {
    store.rotate_refresh_token(r, audit()).unwrap()
}

fn migrations_are_recorded_and_not_applied_twice(store: &dyn Store) {
    let status = store.migration_status().unwrap();
    assert!(status.len() >= 4, "{status:?}");
    assert!(
        status
            .iter()
            .all(|m| m.applied_on.is_some() && m.problem.is_none()),
        "{status:?}"
    );
    let versions: Vec<i64> = status.iter().map(|m| m.version).collect();
    assert_eq!(versions.first(), Some(&1));
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(store.migrate().unwrap(), Vec::new());
    store.check_schema().unwrap();
    store.ping().unwrap();
}

fn users_are_unique_by_email_and_found_by_email_and_id(store: &dyn Store) {
    let id = new_user(store, "ada@example.com");
    let again_id = Uuid::new_v4();
    let again = store.insert_user(
        &NewUser {
            id: again_id,
            email: "ada@example.com".into(),
            name: None,
            role: Role::Admin,
            password_hash: "x".into(),
            created_at: 2_000,
            email_verified: true,
        },
        &created(again_id),
        None,
        None,
    );
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    let creds = store.user_by_email("ada@example.com").unwrap().unwrap();
    assert_eq!(creds.user.id, id);
    assert_eq!(creds.password_hash, "$2b$10$hash");
    assert_eq!(creds.user.role, Role::User);
    assert!(!creds.user.disabled);
    assert_eq!(creds.user.name.as_deref(), Some("Ada"));
    assert!(store.user_by_email("nobody@example.com").unwrap().is_none());

    let user = store.user_by_id(id).unwrap().unwrap();
    assert_eq!(user, creds.user);
    assert_eq!(user.last_login_at, None);
    assert!(store.user_by_id(Uuid::new_v4()).unwrap().is_none());

    new_session(store, id, 5_000, FAR);
    assert_eq!(
        store.user_by_id(id).unwrap().unwrap().last_login_at,
        Some(5_000)
    );
}

/// A session of `user` at `at`, not yet stored.
fn draft_session(user: Uuid, at: Millis) -> NewSession {
    let id = Uuid::new_v4();
    NewSession {
        session: Session {
            id,
            user_id: user,
            created_at: at,
            last_used_at: at,
            expires_at: FAR,
            revoked_at: None,
            user_agent: None,
            ip: None,
            device_info: None,
            auth_methods: vec![authd::domain::AuthMethod::Pwd],
        },
        token: NewRefreshToken {
            hash: format!("h-{}", Uuid::new_v4().simple()),
            session_id: id,
            created_at: at,
            expires_at: FAR,
        },
    }
}

fn logins_audited(store: &dyn Store, user: Uuid) -> Vec<String> {
    store
        .audit_events(&AuditQuery {
            user_id: Some(user),
            event: Some("login".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|e| e.outcome)
        .collect()
}

/// A session opens only if, in its own transaction, the account exists, is enabled and still
/// has the hash that was verified; a refusal stores no session, and every outcome its audit row.
fn sessions_open_only_on_the_checked_credential_of_an_enabled_account(store: &dyn Store) {
    let user = new_user(store, "open@example.com");
    let refused = |why| SessionOpening::Refused { user_id: user, why };
    let draft = draft_session(user, 2_000);
    let outcome = store
        .open_session(&draft, "$2b$10$another", login_audit())
        .unwrap();
    assert_eq!(outcome, refused(Refusal::CredentialChanged));
    assert!(store.session(draft.session.id).unwrap().is_none());
    done(store.set_disabled(user, true, 2_000, Allow).unwrap());
    let draft = draft_session(user, 3_000);
    let outcome = store.open_session(&draft, HASH, login_audit()).unwrap();
    assert_eq!(outcome, refused(Refusal::Disabled));
    assert!(store.session(draft.session.id).unwrap().is_none());
    assert_eq!(store.user_by_id(user).unwrap().unwrap().last_login_at, None);
    done(store.set_disabled(user, false, 4_000, Allow).unwrap());
    let draft = draft_session(user, 5_000);
    let SessionOpening::Opened(opened) = store.open_session(&draft, HASH, login_audit()).unwrap()
    else {
        panic!("an enabled user with the verified hash gets a session")
    };
    assert_eq!((opened.id, opened.last_login_at), (user, Some(5_000)));
    assert!(store.session(draft.session.id).unwrap().is_some());
    assert_eq!(
        logins_audited(store, user),
        ["success", "disabled", "credential_changed"]
    );
    done(store.delete_user(user, 6_000, Allow).unwrap());
    let draft = draft_session(user, 7_000);
    let outcome = store.open_session(&draft, HASH, login_audit()).unwrap();
    assert_eq!(outcome, refused(Refusal::Gone));
    assert!(store.session(draft.session.id).unwrap().is_none());
}

/// Registration: the user, its audit event and its first session in one transaction; a taken
/// email stores none of them.
fn a_user_and_its_first_session_are_stored_together_or_not_at_all(store: &dyn Store) {
    let new = |id| NewUser {
        id,
        email: "reg@example.com".into(),
        name: None,
        role: Role::User,
        password_hash: HASH.into(),
        created_at: 1_000,
        email_verified: true,
    };
    let first = Uuid::new_v4();
    let session = draft_session(first, 1_000);
    store
        .insert_user(&new(first), &created(first), Some(&session), None)
        .unwrap();
    assert!(store.session(session.session.id).unwrap().is_some());
    let second = Uuid::new_v4();
    let session = draft_session(second, 2_000);
    let again = store.insert_user(&new(second), &created(second), Some(&session), None);
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(store.session(session.session.id).unwrap().is_none());
    let audited = |user: Uuid| {
        store
            .audit_events(&AuditQuery {
                event: Some("user_create".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .filter(|e| e.reason == Some(user.to_string()))
            .count()
    };
    assert_eq!((audited(first), audited(second)), (1, 0));
}

fn sessions_are_found_by_id_by_token_and_with_their_user(store: &dyn Store) {
    let user = new_user(store, "s@example.com");
    let (first, first_hash) = new_session(store, user, 1_000, FAR);
    let (second, _) = new_session(store, user, 2_000, FAR);
    let (_expired, _) = new_session(store, user, 3_000, 4_000);

    let s = store.session(first).unwrap().unwrap();
    assert_eq!((s.id, s.user_id, s.created_at), (first, user, 1_000));
    assert_eq!(s.ip.as_deref(), Some("192.0.2.1"));
    assert!(store.session(Uuid::new_v4()).unwrap().is_none());

    let (s, u) = store.session_with_user(second).unwrap().unwrap();
    assert_eq!((s.id, u.id), (second, user));
    assert_eq!(u.email, "s@example.com");

    let by_token = store.session_by_token(first, &first_hash).unwrap();
    assert_eq!(by_token.map(|s| s.id), Some(first));
    // A hint naming another session finds nothing, whatever the hash.
    assert!(store
        .session_by_token(second, &first_hash)
        .unwrap()
        .is_none());

    let live: Vec<Uuid> = store
        .live_sessions(user, 5_000)
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        live,
        vec![second, first],
        "newest first, the expired one left out"
    );
    assert_eq!(store.count_live_sessions(5_000).unwrap(), 2);
}

fn rotation_rotates_once_and_detects_reuse(store: &dyn Store) {
    let user = new_user(store, "r@example.com");
    let (session, first) = new_session(store, user, 1_000, 1_000 + HOUR);

    let (r, second) = rotation(session, &first, 2_000, 0);
    let outcome = rotate(store, r);
    assert_eq!(
        outcome,
        RotateOutcome::Rotated {
            user_id: user,
            session_id: session,
            role: Role::User,
            disabled: false
        }
    );
    let s = store.session(session).unwrap().unwrap();
    assert_eq!(s.last_used_at, 2_000);
    assert_eq!(
        s.expires_at,
        2_000 + HOUR,
        "the session lives as long as its newest token"
    );
    assert_eq!(
        store
            .session_by_token(session, &second)
            .unwrap()
            .map(|s| s.id),
        Some(session)
    );

    // The first token again: reuse, and the whole session is revoked.
    let (r, _) = rotation(session, &first, 3_000, 0);
    assert_eq!(
        rotate(store, r),
        RotateOutcome::Reused {
            user_id: user,
            session_id: session
        }
    );
    assert_eq!(
        store.session(session).unwrap().unwrap().revoked_at,
        Some(3_000)
    );
    // Its successor is dead with it.
    let (r, _) = rotation(session, &second, 4_000, 0);
    assert_eq!(
        rotate(store, r),
        RotateOutcome::Revoked {
            user_id: user,
            session_id: session
        }
    );
    // Every rotation stored its audit row, in its transaction.
    let events = store
        .audit_events(&AuditQuery {
            event: Some("refresh".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["revoked", "reused", "success"]);
}

fn rotation_refuses_unknown_expired_and_revoked_tokens(store: &dyn Store) {
    let user = new_user(store, "x@example.com");
    let (session, token) = new_session(store, user, 1_000, 10_000);
    let (r, _) = rotation(session, "h-never-issued", 2_000, 0);
    assert_eq!(rotate(store, r), RotateOutcome::Unknown);
    let (r, _) = rotation(Uuid::new_v4(), &token, 2_000, 0);
    assert_eq!(
        rotate(store, r),
        RotateOutcome::Unknown,
        "wrong session hint"
    );
    let (r, _) = rotation(session, &token, 10_000, 0);
    assert_eq!(
        rotate(store, r),
        RotateOutcome::Expired {
            user_id: user,
            session_id: session
        }
    );

    let (live, live_token) = new_session(store, user, 1_000, FAR);
    assert!(store.revoke_session(user, live, 2_000, "logout").unwrap());
    let (r, _) = rotation(live, &live_token, 3_000, 0);
    assert_eq!(
        rotate(store, r),
        RotateOutcome::Revoked {
            user_id: user,
            session_id: live
        }
    );
    assert_eq!(store.count_live_sessions(10_000).unwrap(), 0);
}

fn rotation_within_the_reuse_grace_issues_another_token(store: &dyn Store) {
    let user = new_user(store, "g@example.com");
    let (session, first) = new_session(store, user, 1_000, FAR);
    let (r, _) = rotation(session, &first, 2_000, 5_000);
    assert!(matches!(rotate(store, r), RotateOutcome::Rotated { .. }));
    // Within the grace (counted from the first rotation): another token.
    let (r, third) = rotation(session, &first, 6_000, 5_000);
    assert!(matches!(rotate(store, r), RotateOutcome::Rotated { .. }));
    assert!(store.session_by_token(session, &third).unwrap().is_some());
    // Past it: reuse.
    let (r, _) = rotation(session, &first, 7_001, 5_000);
    assert!(matches!(rotate(store, r), RotateOutcome::Reused { .. }));
}

fn revocation_counts_each_live_session_once(store: &dyn Store) {
    let (a, b) = (
        new_user(store, "a@example.com"),
        new_user(store, "b@example.com"),
    );
    let (a1, _) = new_session(store, a, 1_000, FAR);
    let (_a2, _) = new_session(store, a, 1_000, FAR);
    let (_a3, _) = new_session(store, a, 1_000, 1_500);
    let (_b1, _) = new_session(store, b, 1_000, FAR);
    let (_b2, _) = new_session(store, b, 1_000, FAR);

    assert!(
        !store.revoke_session(b, a1, 2_000, "logout").unwrap(),
        "not b's"
    );
    assert!(store.revoke_session(a, a1, 2_000, "logout").unwrap());
    assert!(
        !store.revoke_session(a, a1, 2_001, "logout").unwrap(),
        "already revoked"
    );
    assert_eq!(store.session(a1).unwrap().unwrap().revoked_at, Some(2_000));

    assert_eq!(store.revoke_user_sessions(a, 3_000, "admin").unwrap(), 1);
    assert_eq!(store.revoke_user_sessions(a, 3_000, "admin").unwrap(), 0);
    assert_eq!(store.count_live_sessions(3_000).unwrap(), 2);
    assert_eq!(store.revoke_all_sessions(4_000, "all").unwrap(), 2);
    assert_eq!(store.revoke_all_sessions(4_000, "all").unwrap(), 0);
    assert_eq!(store.count_live_sessions(4_000).unwrap(), 0);
}

/// Expired, revoked and rotated-away rows before `cutoff`, live ones, and their counts.
fn dead_and_live_rows(store: &dyn Store, sessions: usize) {
    let user = new_user(store, &format!("p-{}@example.com", Uuid::new_v4().simple()));
    for i in 0..sessions {
        let (expired, _) = new_session(store, user, 1_000, 2_000);
        let (revoked, _) = new_session(store, user, 1_000, FAR);
        store
            .revoke_session(user, revoked, 1_500, "logout")
            .unwrap();
        let (live, token) = new_session(store, user, 1_000, FAR);
        let (r, _) = rotation(live, &token, 1_500 + i as Millis, 0);
        assert!(matches!(rotate(store, r), RotateOutcome::Rotated { .. }));
        let _ = expired;
        count_failure(store, &format!("ip:192.0.2.{i}"), None, 1_000);
    }
}

fn purge_deletes_what_the_dry_run_counts(store: &dyn Store) {
    dead_and_live_rows(store, 3);
    let (cutoff, now) = (5_000, 5_000);
    let dry = store.purge(cutoff, now, WINDOW, true).unwrap();
    // Per round: 2 dead sessions with their 2 tokens, 1 stale counter; the rotated-away
    // token of the live session stays (reuse detection needs it).
    assert_eq!(
        (dry.refresh_tokens, dry.sessions, dry.login_failures),
        (6, 6, 3)
    );
    assert_eq!(
        store.purge(cutoff, now, WINDOW, true).unwrap(),
        dry,
        "a dry run deletes nothing"
    );
    assert_eq!(store.purge(cutoff, now, WINDOW, false).unwrap(), dry);
    let after = store.purge(cutoff, now, WINDOW, true).unwrap();
    assert_eq!(
        (after.refresh_tokens, after.sessions, after.login_failures),
        (0, 0, 0)
    );
    assert_eq!(store.count_live_sessions(now).unwrap(), 3);
}

fn audit_events_filter_and_come_newest_first(store: &dyn Store) {
    let user = new_user(store, "au@example.com");
    let event = |at: Millis, event: &str, user_id: Option<Uuid>, email: Option<&str>| AuditEvent {
        at,
        event: event.into(),
        user_id,
        email: email.map(String::from),
        ip: Some("192.0.2.9".into()),
        user_agent: Some("ua".into()),
        outcome: "success".into(),
        reason: None,
        actor: (event == "logout").then(|| "cli".to_string()),
    };
    store
        .record_audit(&event(1_000, "login", Some(user), Some("au@example.com")))
        .unwrap();
    store
        .record_audit(&event(2_000, "refresh", Some(user), None))
        .unwrap();
    store
        .record_audit(&event(3_000, "login", None, Some("other@example.com")))
        .unwrap();
    store
        .record_audit(&event(4_000, "logout", Some(user), None))
        .unwrap();

    let all: Vec<AuditEvent> = store
        .audit_events(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter(|e| e.event != "user_create")
        .collect();
    let ats: Vec<Millis> = all.iter().map(|e| e.at).collect();
    assert_eq!(ats, [4_000, 3_000, 2_000, 1_000]);
    assert_eq!(
        all[0].actor.as_deref(),
        Some("cli"),
        "the actor of an admin event"
    );
    assert_eq!(
        all[3],
        event(1_000, "login", Some(user), Some("au@example.com"))
    );

    let mine = store
        .audit_events(&AuditQuery {
            email: Some("au@example.com".into()),
            user_id: Some(user),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        mine.iter().map(|e| e.at).collect::<Vec<_>>(),
        [4_000, 2_000, 1_000]
    );

    let logins = store
        .audit_events(&AuditQuery {
            event: Some("login".into()),
            since: Some(2_000),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(logins.iter().map(|e| e.at).collect::<Vec<_>>(), [3_000]);

    let limited = store
        .audit_events(&AuditQuery {
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(limited.len(), 2);
}

/// Hostile input carries NUL bytes; recording it (audit, client info, failed-login keys) never
/// fails, and a lookup never truncates it into another value.
fn text_with_nul_bytes_is_recorded_not_refused(store: &dyn Store) {
    let user = new_user(store, "nul@example.com");
    assert!(store.user_by_email("nul@example.com\0").unwrap().is_none());
    assert!(store
        .user_by_email("nul@example.com\0junk")
        .unwrap()
        .is_none());
    let key = "email:nul@example.com\0";
    count_failure(store, key, None, 1_000);
    count_failure(store, key, None, 1_000);
    assert_eq!(
        store.failure_counter(key).unwrap().map(|c| c.count),
        Some(2)
    );
    assert!(store
        .failure_counter("email:nul@example.com")
        .unwrap()
        .is_none());
    store.clear_failures(key).unwrap();
    assert!(store.failure_counter(key).unwrap().is_none());
    store
        .record_audit(&AuditEvent {
            at: 1_000,
            event: "login".into(),
            user_id: None,
            email: Some("nul@example.com\0".into()),
            ip: Some("192.0.2.1".into()),
            user_agent: Some("ua\0x".into()),
            outcome: "failure".into(),
            reason: Some("invalid_credentials".into()),
            actor: None,
        })
        .unwrap();
    let found = store
        .audit_events(&AuditQuery {
            email: Some("nul@example.com\0".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(found.len(), 1);
    let id = Uuid::new_v4();
    open_session(
        store,
        &NewSession {
            session: Session {
                id,
                user_id: user,
                created_at: 1_000,
                last_used_at: 1_000,
                expires_at: FAR,
                revoked_at: None,
                user_agent: Some("\0".into()),
                ip: None,
                device_info: Some("a\0b".into()),
                auth_methods: vec![authd::domain::AuthMethod::Pwd],
            },
            token: NewRefreshToken {
                hash: "h-nul".into(),
                session_id: id,
                created_at: 1_000,
                expires_at: FAR,
            },
        },
    );
    assert!(store.session(id).unwrap().is_some());
}

const THREADS: usize = 12;

fn concurrent_rotations_of_one_token_give_exactly_one_success(store: &dyn Store) {
    let user = new_user(store, "c@example.com");
    for round in 0..3 {
        let (session, token) = new_session(store, user, 1_000, FAR);
        let barrier = Barrier::new(THREADS);
        let outcomes: Vec<RotateOutcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        let (r, _) = rotation(session, &token, 2_000 + round, 0);
                        barrier.wait();
                        rotate(store, r)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let rotated = outcomes
            .iter()
            .filter(|o| matches!(o, RotateOutcome::Rotated { .. }))
            .count();
        assert_eq!(rotated, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes.iter().all(|o| matches!(
                o,
                RotateOutcome::Rotated { .. }
                    | RotateOutcome::Reused { .. }
                    | RotateOutcome::Revoked { .. }
            )),
            "{outcomes:?}"
        );
        // The losers were reuse: the session is revoked.
        assert!(store
            .session(session)
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some());
    }
}

fn concurrent_revocations_of_one_session_give_exactly_one_true(store: &dyn Store) {
    let user = new_user(store, "rv@example.com");
    let (session, _) = new_session(store, user, 1_000, FAR);
    let barrier = Barrier::new(THREADS);
    let revoked: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    if i % 2 == 0 {
                        usize::from(
                            store
                                .revoke_session(user, session, 2_000, "logout")
                                .unwrap(),
                        )
                    } else {
                        store.revoke_user_sessions(user, 2_000, "admin").unwrap()
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(revoked, 1);
}

fn concurrent_purges_delete_each_row_once(store: &dyn Store) {
    dead_and_live_rows(store, 4);
    let dry = store.purge(5_000, 5_000, WINDOW, true).unwrap();
    let barrier = Barrier::new(4);
    let total = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    store.purge(5_000, 5_000, WINDOW, false).unwrap()
                })
            })
            .collect();
        let mut total = (0, 0, 0);
        for h in handles {
            let c = h.join().unwrap();
            total.0 += c.refresh_tokens;
            total.1 += c.sessions;
            total.2 += c.login_failures;
        }
        total
    });
    // One instance at a time: no row counted twice; whatever a skipped run left is still
    // there for the next one.
    let left = store.purge(5_000, 5_000, WINDOW, true).unwrap();
    assert_eq!(total.0 + left.refresh_tokens, dry.refresh_tokens);
    assert_eq!(total.1 + left.sessions, dry.sessions);
    assert_eq!(total.2 + left.login_failures, dry.login_failures);
    assert_eq!(store.purge(5_000, 5_000, WINDOW, false).unwrap(), left);
    assert_eq!(store.count_live_sessions(5_000).unwrap(), 4);
}

// ---- backend-specific: opening, migrations' twins, refusals ----

/// Both migration folders list the same versions with the same names: each PostgreSQL file is
/// the twin of its SQLite file.
#[test]
fn both_backends_have_the_same_migrations() {
    let list = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        names.sort_by_key(|n| {
            n.trim_start_matches('V')
                .split("__")
                .next()
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(u32::MAX)
        });
        names
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let sqlite = list(&format!("{root}/migrations/sqlite"));
    let postgres = list(&format!("{root}/migrations/postgres"));
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres);
}

#[test]
fn an_unknown_scheme_or_sslmode_require_is_refused_at_open() {
    let err = store::open("mysql://localhost/authd", &options())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("unsupported database scheme 'mysql'"),
        "{err}"
    );
    let err = store::open(
        "postgres://u:secret@localhost/authd?sslmode=require",
        &options(),
    )
    .err()
    .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("sslmode=require") && text.contains("TLS"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
    let err = store::open("postgresql://localhost/authd?sslmode=bogus", &options())
        .err()
        .unwrap();
    assert!(err.to_string().contains("sslmode"), "{err}");
    // sslmode=disable and prefer are accepted (plain TCP).
    for mode in ["disable", "prefer"] {
        store::open(
            &format!("postgresql://localhost/authd?sslmode={mode}&connect_timeout=2"),
            &options(),
        )
        .unwrap();
    }
}

/// A PostgreSQL that does not answer is `Unavailable` (503), never another error.
#[test]
fn an_unreachable_postgres_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = store::open(
        &format!("postgres://postgres@127.0.0.1:{port}/authd"),
        &StoreOptions {
            pool_size: 2,
            busy_timeout: Duration::from_secs(1),
            health: authd::store::health::DbHealth::uncounted(),
        },
    )
    .unwrap();
    assert!(
        matches!(s.ping(), Err(StoreError::Unavailable(_))),
        "{:?}",
        s.ping()
    );
    assert!(matches!(s.migrate(), Err(StoreError::Unavailable(_))));
    assert!(matches!(
        s.user_by_id(Uuid::new_v4()),
        Err(StoreError::Unavailable(_))
    ));
}

#[test]
fn postgres_refuses_pending_edited_and_newer_schemas() {
    let Some(b) = Backend::unmigrated("postgres") else {
        return;
    };
    let store = &*b.store;
    let pending = store.migration_status().unwrap();
    assert!(
        pending.iter().all(|m| m.applied_on.is_none()),
        "{pending:?}"
    );
    let err = store.check_schema().unwrap_err();
    assert!(err.to_string().contains("pending migration"), "{err}");
    store.migrate().unwrap();
    store.check_schema().unwrap();

    let db = b._postgres.as_ref().unwrap();
    let mut c = ::postgres::Client::connect(&db.url, ::postgres::NoTls).unwrap();
    // An applied migration edited since: its recorded checksum no longer matches.
    c.execute(
        "UPDATE authd_schema_migrations SET checksum = '1' WHERE version = 2",
        &[],
    )
    .unwrap();
    let err = store.check_schema().unwrap_err();
    assert!(
        err.to_string().contains("edited after it was applied"),
        "{err}"
    );
    let err = store.migrate().unwrap_err();
    assert!(
        err.to_string().contains("edited after it was applied"),
        "{err}"
    );
    let row = store
        .migration_status()
        .unwrap()
        .into_iter()
        .find(|m| m.version == 2)
        .unwrap();
    assert!(row.problem.unwrap().contains("checksum mismatch"));
    c.execute(
        "UPDATE authd_schema_migrations SET checksum = (SELECT checksum FROM authd_schema_migrations WHERE version = 1) WHERE version = 2",
        &[],
    )
    .unwrap();

    // A migration this binary does not know: the database is newer.
    let mut c2 = ::postgres::Client::connect(&db.url, ::postgres::NoTls).unwrap();
    c2.execute("DELETE FROM authd_schema_migrations WHERE version = 2", &[])
        .unwrap();
    c2.execute(
        "INSERT INTO authd_schema_migrations (version, name, applied_on, checksum)
         SELECT 999, 'from_the_future', applied_on, checksum FROM authd_schema_migrations WHERE version = 1",
        &[],
    )
    .unwrap();
    let err = store.check_schema().unwrap_err();
    assert!(err.to_string().contains("newer than this binary"), "{err}");
    let status = store.migration_status().unwrap();
    let future = status.iter().find(|m| m.version == 999).unwrap();
    assert!(future.problem.as_deref().unwrap().contains("newer"));
}

/// Instances starting together each run `migrate`: the advisory lock lets one apply and the
/// others find nothing left to do, with no error.
#[test]
fn postgres_instances_migrating_together_apply_each_migration_once() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let barrier = Barrier::new(4);
    let applied: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let store = store::open(&db.url, &options()).unwrap();
                    barrier.wait();
                    store.migrate().unwrap().len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let known = store::open(&db.url, &options())
        .unwrap()
        .migration_status()
        .unwrap()
        .len();
    assert_eq!(applied.iter().sum::<usize>(), known, "{applied:?}");
    assert_eq!(applied.iter().filter(|&&n| n > 0).count(), 1, "{applied:?}");
}

fn signing_key(kid: &str, key_use: KeyUse, public: bool) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        key_use,
        algorithm: if public { "EdDSA" } else { "HS256" }.into(),
        state: StoredKeyState::Active,
        created_at: 1,
        retires_at: None,
        revoked_at: None,
        public_key: public.then(|| vec![1; 32]),
        private_key: Some(vec![2; 32]),
        sealed: false,
    }
}

fn signing_keys_insert_rotate_revoke_and_bump_the_generation(store: &dyn Store) {
    let g0 = store.key_set_version().unwrap();
    assert!(store
        .insert_signing_key_if_none_active(&signing_key("a1", KeyUse::Access, true))
        .unwrap());
    assert!(!store
        .insert_signing_key_if_none_active(&signing_key("a2", KeyUse::Access, true))
        .unwrap());
    assert!(store
        .insert_signing_key_if_none_active(&signing_key("r1", KeyUse::Refresh, false))
        .unwrap());
    assert_eq!(store.key_set_version().unwrap(), g0 + 2);
    let previous = store
        .rotate_signing_key(&signing_key("a2", KeyUse::Access, true), 500)
        .unwrap();
    assert_eq!(previous.as_deref(), Some("a1"));
    let all = store.signing_keys().unwrap();
    let a1 = all.iter().find(|k| k.kid == "a1").unwrap();
    assert_eq!(
        (a1.state, a1.retires_at),
        (StoredKeyState::Retiring, Some(500))
    );
    assert_eq!(a1.private_key, None);
    assert_eq!(a1.public_key, Some(vec![1; 32]));
    let outcome = store
        .revoke_signing_key("a2", 700, Some(&signing_key("a3", KeyUse::Access, true)))
        .unwrap();
    assert_eq!(
        outcome,
        KeyRevokeOutcome::Revoked {
            replaced_by: Some("a3".into())
        }
    );
    assert_eq!(
        store.revoke_signing_key("a2", 800, None).unwrap(),
        KeyRevokeOutcome::AlreadyRevoked
    );
    assert_eq!(
        store.revoke_signing_key("zz", 800, None).unwrap(),
        KeyRevokeOutcome::Unknown
    );
    let all = store.signing_keys().unwrap();
    let mut active: Vec<&str> = all
        .iter()
        .filter(|k| k.state == StoredKeyState::Active)
        .map(|k| k.kid.as_str())
        .collect();
    active.sort();
    assert_eq!(active, ["a3", "r1"]);
    assert_eq!(store.key_set_version().unwrap(), g0 + 4);
}

/// Processes starting together on an empty key set: exactly one inserts the active key; and
/// concurrent rotations each retire exactly the key that was active when they ran.
fn concurrent_key_set_writes_leave_one_active_key(store: &dyn Store) {
    let barrier = Barrier::new(THREADS);
    let inserted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let k = signing_key(&format!("start-{i}"), KeyUse::Access, true);
                    barrier.wait();
                    usize::from(store.insert_signing_key_if_none_active(&k).unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(inserted, 1);
    let barrier = Barrier::new(THREADS);
    let retired: Vec<Option<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let k = signing_key(&format!("rot-{i}"), KeyUse::Access, true);
                    barrier.wait();
                    store.rotate_signing_key(&k, 9_000).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut retired: Vec<String> = retired.into_iter().map(Option::unwrap).collect();
    retired.sort();
    retired.dedup();
    assert_eq!(
        retired.len(),
        THREADS,
        "each rotation retired a different key"
    );
    let active = store
        .signing_keys()
        .unwrap()
        .into_iter()
        .filter(|k| k.state == StoredKeyState::Active)
        .count();
    assert_eq!(active, 1);
}

fn slot_request(key: &str, max: u32, now: Millis) -> SlotRequest {
    SlotRequest {
        now,
        window: 60_000,
        counters: vec![CounterLimit {
            key: key.into(),
            max,
            lock_for: Some(600_000),
        }],
    }
}

/// One failed login on `key` at `now`, as the service counts it (a slot reserved, then
/// settled as failed); `lock` is the limit and how long reaching it locks.
fn count_failure(store: &dyn Store, key: &str, lock: Option<(u32, Millis)>, now: Millis) {
    let request = SlotRequest {
        now,
        window: 60_000,
        counters: vec![CounterLimit {
            key: key.into(),
            max: lock.map_or(u32::MAX, |(max, _)| max),
            lock_for: lock.map(|(_, lock_for)| lock_for),
        }],
    };
    let Admission::Granted(grant) = store.reserve_login_slots(&request).unwrap() else {
        panic!("{key} has room")
    };
    store.settle_login_slots(&grant, true, now).unwrap();
}

/// However many attempts on a fresh key arrive at once, no more than the limit are admitted
/// (held slots count until settled); settling failures locks the key.
fn concurrent_login_reservations_admit_exactly_the_limit(store: &dyn Store) {
    let barrier = Barrier::new(THREADS);
    let grants: Vec<SlotGrant> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    store
                        .reserve_login_slots(&slot_request("email:slots@example.com", 3, 1_000))
                        .unwrap()
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join().unwrap() {
                Admission::Granted(g) => Some(g),
                Admission::Refused { .. } => None,
            })
            .collect()
    });
    assert_eq!(grants.len(), 3);
    for g in &grants {
        store.settle_login_slots(g, true, 1_500).unwrap();
    }
    let c = store
        .failure_counter("email:slots@example.com")
        .unwrap()
        .unwrap();
    assert_eq!(c.locked_until, Some(1_500 + 600_000), "{c:?}");
    assert!(matches!(
        store
            .reserve_login_slots(&slot_request("email:slots@example.com", 3, 2_000))
            .unwrap(),
        Admission::Refused { .. }
    ));
    // A successful attempt gives its slot back and counts nothing.
    let Admission::Granted(g) = store
        .reserve_login_slots(&slot_request("ip:192.0.2.77", 2, 1_000))
        .unwrap()
    else {
        panic!("a fresh key has room")
    };
    store.settle_login_slots(&g, false, 1_100).unwrap();
    for _ in 0..2 {
        assert!(matches!(
            store
                .reserve_login_slots(&slot_request("ip:192.0.2.77", 2, 1_200))
                .unwrap(),
            Admission::Granted(_)
        ));
    }
}

fn accounts_list_disable_role_and_delete(store: &dyn Store) {
    let a = new_user(store, "acc-a@example.com");
    let b = new_user(store, "acc-b@example.com");
    let (a1, _) = new_session(store, a, 1_000, FAR);
    let (_a2, _) = new_session(store, a, 1_000, FAR);
    let (_b1, _) = new_session(store, b, 1_000, FAR);
    count_failure(store, "email:acc-b@example.com", Some((1, 48_000)), 2_000);

    let all = store.list_users(&UserFilter::default(), 3_000).unwrap();
    let ids: Vec<Uuid> = all.iter().map(|x| x.user.id).collect();
    assert!(ids.contains(&a) && ids.contains(&b));
    let locked = store
        .list_users(
            &UserFilter {
                locked: true,
                ..Default::default()
            },
            3_000,
        )
        .unwrap();
    assert_eq!(locked.len(), 1);
    assert_eq!(
        (locked[0].user.id, locked[0].locked_until),
        (b, Some(50_000))
    );
    let page = store
        .list_users(
            &UserFilter {
                limit: Some(1),
                ..Default::default()
            },
            3_000,
        )
        .unwrap();
    assert_eq!(page.len(), 1);
    let next = store
        .list_users(
            &UserFilter {
                after: Some((page[0].user.created_at, page[0].user.id)),
                ..Default::default()
            },
            3_000,
        )
        .unwrap();
    assert_eq!(next.len(), all.len() - 1);
    assert!(next.iter().all(|x| x.user.id != page[0].user.id));
    let by_email = store
        .list_users(
            &UserFilter {
                email: Some("acc-a@example.com".into()),
                ..Default::default()
            },
            3_000,
        )
        .unwrap();
    assert_eq!(by_email.iter().map(|x| x.user.id).collect::<Vec<_>>(), [a]);

    let (user, revoked) = done(store.set_disabled(a, true, 4_000, Keep).unwrap());
    assert!(user.disabled);
    assert_eq!(revoked, 2);
    assert_eq!(store.session(a1).unwrap().unwrap().revoked_at, Some(4_000));
    let disabled = store
        .list_users(
            &UserFilter {
                disabled: true,
                ..Default::default()
            },
            4_000,
        )
        .unwrap();
    assert_eq!(disabled.iter().map(|x| x.user.id).collect::<Vec<_>>(), [a]);
    let (user, revoked) = done(store.set_disabled(a, false, 4_500, Keep).unwrap());
    assert!(!user.disabled);
    assert_eq!(revoked, 0);
    assert_eq!(
        store
            .set_disabled(Uuid::new_v4(), true, 4_500, Keep)
            .unwrap(),
        ChangeOutcome::NotFound
    );

    let (user, revoked) = done(store.set_role(b, Role::Admin, 5_000, Keep).unwrap());
    assert_eq!((user.role, revoked), (Role::Admin, 1));
    assert_eq!(
        store
            .list_users(
                &UserFilter {
                    role: Some(Role::Admin),
                    ..Default::default()
                },
                5_000
            )
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .set_role(Uuid::new_v4(), Role::User, 5_000, Keep)
            .unwrap(),
        ChangeOutcome::NotFound
    );

    // b is the only enabled admin: under `Keep` nothing takes it away, and nothing is written.
    let (_b2, _) = new_session(store, b, 6_000, FAR);
    assert_eq!(
        store.set_role(b, Role::User, 6_100, Keep).unwrap(),
        ChangeOutcome::LastAdmin
    );
    assert_eq!(
        store.set_disabled(b, true, 6_100, Keep).unwrap(),
        ChangeOutcome::LastAdmin
    );
    assert_eq!(
        store.delete_user(b, 6_100, Keep).unwrap(),
        ChangeOutcome::LastAdmin
    );
    let still = store.user_by_id(b).unwrap().unwrap();
    assert_eq!((still.role, still.disabled), (Role::Admin, false));
    assert_eq!(store.live_sessions(b, 6_100).unwrap().len(), 1);
    // `Allow` does it, and says so.
    let (user, live) = match store.delete_user(b, 6_500, Allow).unwrap() {
        ChangeOutcome::Done {
            user,
            sessions,
            leaves_no_admin: true,
        } => (user, sessions),
        other => panic!("{other:?}"),
    };
    assert_eq!((user.id, live), (b, 1));
    assert!(store.user_by_id(b).unwrap().is_none());
    assert!(store.live_sessions(b, 6_500).unwrap().is_empty());
    assert_eq!(
        store.delete_user(b, 7_000, Keep).unwrap(),
        ChangeOutcome::NotFound
    );
}

/// The user and session count of a change that was written and left an enabled admin.
fn done(outcome: ChangeOutcome) -> (User, usize) {
    match outcome {
        ChangeOutcome::Done {
            user,
            sessions,
            leaves_no_admin: false,
        } => (user, sessions),
        other => panic!("{other:?}"),
    }
}

/// Two admins, each taking the other away (demoting, disabling or deleting) from its own
/// thread at the same moment, round after round: under `Keep` at most one change is written
/// and an enabled admin always remains.
fn concurrent_changes_to_the_last_two_admins_leave_one(store: &dyn Store) {
    type Change = fn(&dyn Store, Uuid) -> ChangeOutcome;
    let changes: [(&str, Change); 3] = [
        ("demote", |s, id| {
            s.set_role(id, Role::User, 2_000, Keep).unwrap()
        }),
        ("disable", |s, id| {
            s.set_disabled(id, true, 2_000, Keep).unwrap()
        }),
        ("delete", |s, id| s.delete_user(id, 2_000, Keep).unwrap()),
    ];
    for round in 0..30 {
        let admins: Vec<Uuid> = (0..2)
            .map(|i| {
                let id = new_user(store, &format!("last-{round}-{i}@example.com"));
                done(store.set_role(id, Role::Admin, 1_000, Keep).unwrap());
                id
            })
            .collect();
        let (first, second) = (changes[round % 3], changes[(round / 3) % 3]);
        let barrier = Barrier::new(2);
        let outcomes: Vec<ChangeOutcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = [(first, admins[1]), (second, admins[0])]
                .into_iter()
                .map(|((_, change), target)| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        change(store, target)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let written = outcomes
            .iter()
            .filter(|o| matches!(o, ChangeOutcome::Done { .. }))
            .count();
        assert_eq!(
            written, 1,
            "round {round} {} / {}: {outcomes:?}",
            first.0, second.0
        );
        let enabled_admins = admins
            .iter()
            .filter_map(|id| store.user_by_id(*id).unwrap())
            .filter(|u| u.role == Role::Admin && !u.disabled)
            .count();
        assert_eq!(enabled_admins, 1, "round {round}: {outcomes:?}");
        // Next round: these two are no longer the only enabled admins.
        for id in admins {
            let _ = store.set_role(id, Role::User, 3_000, Allow).unwrap();
        }
    }
}

fn password_hashes_change_upgrade_and_import(store: &dyn Store) {
    let a = new_user(store, "pw-a@example.com");
    let (keep, _) = new_session(store, a, 1_000, FAR);
    let (other, _) = new_session(store, a, 1_000, FAR);
    assert_eq!(
        store.set_password_hash(a, "h2", Some(keep), 2_000).unwrap(),
        1
    );
    assert!(store.session(keep).unwrap().unwrap().revoked_at.is_none());
    assert_eq!(
        store.session(other).unwrap().unwrap().revoked_at,
        Some(2_000)
    );
    assert_eq!(
        store
            .user_by_email("pw-a@example.com")
            .unwrap()
            .unwrap()
            .password_hash,
        "h2"
    );
    assert_eq!(store.set_password_hash(a, "h3", None, 3_000).unwrap(), 1);
    assert_eq!(
        store
            .set_password_hash(Uuid::new_v4(), "h", None, 3_000)
            .unwrap(),
        0
    );

    assert!(
        !store.upgrade_password_hash(a, "h2", "h4").unwrap(),
        "changed meanwhile"
    );
    assert!(store.upgrade_password_hash(a, "h3", "h4").unwrap());
    assert_eq!(
        store
            .user_by_email("pw-a@example.com")
            .unwrap()
            .unwrap()
            .password_hash,
        "h4"
    );

    let import = |emails: &[&str]| -> Vec<NewUser> {
        emails
            .iter()
            .map(|e| NewUser {
                id: Uuid::new_v4(),
                email: (*e).into(),
                name: None,
                role: Role::User,
                password_hash: "$2b$10$imported".into(),
                created_at: 9_000,
                email_verified: true,
            })
            .collect()
    };
    let batch = import(&["imp-1@example.com", "pw-a@example.com", "imp-2@example.com"]);
    assert_eq!(
        store.import_users(batch.clone(), false, false).unwrap(),
        ImportOutcome::Existing(vec!["pw-a@example.com".into()])
    );
    assert!(
        store.user_by_email("imp-1@example.com").unwrap().is_none(),
        "all or nothing"
    );
    assert_eq!(
        store.import_users(batch.clone(), true, true).unwrap(),
        ImportOutcome::Imported {
            imported: 2,
            skipped: 1
        }
    );
    assert!(
        store.user_by_email("imp-1@example.com").unwrap().is_none(),
        "a dry run"
    );
    assert_eq!(
        store.import_users(batch, true, false).unwrap(),
        ImportOutcome::Imported {
            imported: 2,
            skipped: 1
        }
    );
    let imported = store.user_by_email("imp-2@example.com").unwrap().unwrap();
    assert_eq!(imported.password_hash, "$2b$10$imported");
    assert_eq!(
        store
            .user_by_email("pw-a@example.com")
            .unwrap()
            .unwrap()
            .password_hash,
        "h4"
    );
}

/// Two logins re-hashing the same verified hash at once: one upgrade lands, the other sees
/// the hash changed and leaves it.
fn concurrent_hash_upgrades_land_once(store: &dyn Store) {
    let a = new_user(store, "up@example.com");
    let old = store
        .user_by_email("up@example.com")
        .unwrap()
        .unwrap()
        .password_hash;
    let barrier = Barrier::new(THREADS);
    let landed: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (barrier, old) = (&barrier, &old);
                scope.spawn(move || {
                    barrier.wait();
                    usize::from(
                        store
                            .upgrade_password_hash(a, old, &format!("new-{i}"))
                            .unwrap(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(landed, 1);
}

/// A row lock held longer than `database.busy_timeout` (a stuck transaction elsewhere) is
/// `Unavailable` (503) for the write that waits on it, and the store works again once it ends.
#[test]
fn postgres_lock_timeouts_are_unavailable() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let store = store::open(
        &db.url,
        &StoreOptions {
            pool_size: 2,
            busy_timeout: Duration::from_millis(300),
            health: authd::store::health::DbHealth::uncounted(),
        },
    )
    .unwrap();
    store.migrate().unwrap();
    let user = new_user(&*store, "stuck@example.com");
    let (session, _) = new_session(&*store, user, 1_000, FAR);
    let mut holder = ::postgres::Client::connect(&db.url, ::postgres::NoTls).unwrap();
    let mut tx = holder.transaction().unwrap();
    tx.execute(
        "SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE",
        &[&session],
    )
    .unwrap();
    let err = store
        .revoke_session(user, session, 2_000, "logout")
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    tx.rollback().unwrap();
    assert!(store
        .revoke_session(user, session, 2_000, "logout")
        .unwrap());
}

fn one_time(user: Uuid, purpose: Purpose, expires_at: Millis) -> (String, NewOneTimeToken) {
    let (token, hash) = authd::crypto::one_time::new_token();
    let t = NewOneTimeToken {
        token_hash: hash,
        purpose,
        user_id: Some(user),
        address: Some("ot@example.com".into()),
        payload: Some(r#"{"k":1}"#.into()),
        created_at: 1_000,
        expires_at,
    };
    (token, t)
}

fn one_time_tokens_are_used_once_superseded_and_killed(store: &dyn Store) {
    let user = new_user(store, "ot@example.com");
    let (_, first) = one_time(user, Purpose::PasswordReset, FAR);
    store.issue_one_time_token(&first, true).unwrap();
    // Found without being used; another purpose does not find it.
    let found = store
        .one_time_token(Purpose::PasswordReset, &first.token_hash)
        .unwrap()
        .unwrap();
    assert_eq!(found.user_id, Some(user));
    assert_eq!(found.payload.as_deref(), Some(r#"{"k":1}"#));
    assert!(store
        .one_time_token(Purpose::VerifyEmail, &first.token_hash)
        .unwrap()
        .is_none());
    // A newer token of the purpose supersedes it; one of another purpose does not.
    let (_, other) = one_time(user, Purpose::VerifyEmail, FAR);
    store.issue_one_time_token(&other, true).unwrap();
    let (_, second) = one_time(user, Purpose::PasswordReset, FAR);
    store.issue_one_time_token(&second, true).unwrap();
    assert_eq!(
        store
            .consume_one_time_token(Purpose::PasswordReset, &first.token_hash, 2_000)
            .unwrap(),
        Consumed::Unknown
    );
    match store
        .consume_one_time_token(Purpose::PasswordReset, &second.token_hash, 2_000)
        .unwrap()
    {
        Consumed::Used(t) => assert_eq!(t.address.as_deref(), Some("ot@example.com")),
        other => panic!("{other:?}"),
    }
    // Used once only.
    assert_eq!(
        store
            .consume_one_time_token(Purpose::PasswordReset, &second.token_hash, 2_000)
            .unwrap(),
        Consumed::Unknown
    );
    // Expired: answered as such, and gone.
    let (_, old) = one_time(user, Purpose::EmailChangeNew, 1_500);
    store.issue_one_time_token(&old, true).unwrap();
    assert_eq!(
        store
            .consume_one_time_token(Purpose::EmailChangeNew, &old.token_hash, 1_500)
            .unwrap(),
        Consumed::Expired
    );
    // Killing by user (all purposes) takes what is left.
    let (_, a) = one_time(user, Purpose::Mfa, FAR);
    store.issue_one_time_token(&a, false).unwrap();
    let (_, b) = one_time(user, Purpose::Mfa, FAR);
    store.issue_one_time_token(&b, false).unwrap();
    assert_eq!(
        store.kill_one_time_tokens(user, &[Purpose::Mfa]).unwrap(),
        2
    );
    assert_eq!(store.kill_one_time_tokens(user, &[]).unwrap(), 1);
    assert!(store
        .one_time_token(Purpose::VerifyEmail, &other.token_hash)
        .unwrap()
        .is_none());
}

fn concurrent_uses_of_one_one_time_token_give_exactly_one_use(store: &dyn Store) {
    let user = new_user(store, "otc@example.com");
    for round in 0..3 {
        let (_, t) = one_time(user, Purpose::PasswordReset, FAR);
        store.issue_one_time_token(&t, true).unwrap();
        let barrier = Barrier::new(THREADS);
        let used = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        store
                            .consume_one_time_token(Purpose::PasswordReset, &t.token_hash, 2_000)
                            .unwrap()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|c| matches!(c, Consumed::Used(_)))
                .count()
        });
        assert_eq!(used, 1, "round {round}");
    }
}

/// Sessions revoked from many threads at once all reach the revoked-session feed (written by
/// the V11 triggers), and a reader following the cursor while they commit sees each exactly
/// once: rows become visible in cursor order. Cleanup keeps the newest row (the head).
fn concurrent_revocations_reach_the_feed_once_each_in_cursor_order(store: &dyn Store) {
    const N: usize = 48;
    let sessions: Vec<(Uuid, Uuid)> = (0..N)
        .map(|i| {
            let user = new_user(store, &format!("feed{i}@example.com"));
            (user, new_session(store, user, 1_000 + i as Millis, FAR).0)
        })
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let barrier = Barrier::new(THREADS + 1);
    let seen: Vec<Uuid> = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            barrier.wait();
            let (mut cursor, mut seen) = (0, Vec::new());
            loop {
                let last_round = done.load(std::sync::atomic::Ordering::SeqCst);
                let read = store.revoked_sessions_since(cursor, 0).unwrap();
                assert!(read
                    .entries
                    .iter()
                    .all(|e| e.seq > cursor && e.seq <= read.head));
                seen.extend(read.entries.iter().map(|e| e.sid));
                cursor = read.head;
                if last_round {
                    return seen;
                }
            }
        });
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (barrier, sessions) = (&barrier, &sessions);
                scope.spawn(move || {
                    barrier.wait();
                    for (user, _) in sessions.iter().skip(t).step_by(THREADS) {
                        assert_eq!(
                            store.revoke_user_sessions(*user, 5_000, "logout").unwrap(),
                            1
                        );
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        reader.join().unwrap()
    });
    let distinct: std::collections::BTreeSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), seen.len(), "a session seen twice");
    let revoked: std::collections::BTreeSet<Uuid> = sessions.iter().map(|s| s.1).collect();
    assert_eq!(distinct, revoked, "every revocation, none missed");

    // The whole feed: each session once, its newest token's issue time, seq increasing.
    let all = store.revoked_sessions_since(0, 0).unwrap();
    assert_eq!(all.entries.len(), N);
    assert!(all.entries.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all.head, all.entries.last().unwrap().seq);
    for (i, (_, sid)) in sessions.iter().enumerate() {
        let e = all.entries.iter().find(|e| e.sid == *sid).unwrap();
        assert_eq!(e.issued_at, 1_000 + i as Millis);
    }
    // `issued_after` filters; a cursor at the head finds nothing.
    assert_eq!(
        store
            .revoked_sessions_since(0, 1_000 + 9)
            .unwrap()
            .entries
            .len(),
        N - 10
    );
    assert!(store
        .revoked_sessions_since(all.head, 0)
        .unwrap()
        .entries
        .is_empty());

    // A session deleted while live (its user deleted) is in it; revoked or dead ones are not
    // added again.
    let user = new_user(store, "feed-deleted@example.com");
    let (live, _) = new_session(store, user, 6_000, FAR);
    let (gone, _) = new_session(store, user, 6_000, 7_000);
    store.delete_user(user, 8_000, Allow).unwrap();
    store.delete_user(sessions[0].0, 8_000, Allow).unwrap();
    let after = store.revoked_sessions_since(all.head, 0).unwrap();
    let sids: Vec<Uuid> = after.entries.iter().map(|e| e.sid).collect();
    assert_eq!(sids, vec![live], "not {gone} (expired) nor the revoked one");

    // Cleanup: everything issued before the horizon except the newest row.
    assert_eq!(store.purge_revocation_feed(FAR, true).unwrap(), N as u64);
    assert_eq!(store.purge_revocation_feed(FAR, false).unwrap(), N as u64);
    let left = store.revoked_sessions_since(0, 0).unwrap();
    assert_eq!(left.head, after.head);
    assert_eq!(
        left.entries.iter().map(|e| e.sid).collect::<Vec<_>>(),
        vec![live]
    );
}

/// PostgreSQL's async session read (`Store::session_with_user_async`) answers what the pool's
/// read answers (a session with its user; nothing for an unknown id), and dropping the store
/// closes its connections, the async ones included (their tasks hold the store only weakly).
#[test]
fn postgres_async_reads_answer_as_the_pool_and_close_with_the_store() {
    let Some(b) = Backend::open("postgres") else {
        return;
    };
    let user = new_user(&*b.store, "async-read@example.com");
    let (session, _) = new_session(&*b.store, user, 1_000, FAR);
    let name = b._postgres.as_ref().unwrap().name.clone();
    let mut admin =
        ::postgres::Client::connect(&crate::services::postgres_admin_url(), ::postgres::NoTls)
            .unwrap();
    let mut connections = move || -> i64 {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'authd'",
                &[&name],
            )
            .unwrap()
            .get(0)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let Backend {
        store, _postgres, ..
    } = b;
    let (found, of) = runtime.block_on(read_async(&store, session)).unwrap();
    assert_eq!(
        Some((found.clone(), of.clone())),
        store.session_with_user(session).unwrap()
    );
    assert_eq!((found.id, of.id), (session, user));
    assert_eq!(runtime.block_on(read_async(&store, Uuid::new_v4())), None);
    assert!(connections() >= 1);
    // The runtime still runs the connections' tasks: only the store goes.
    drop(store);
    for _ in 0..200 {
        if connections() == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "{} connections left after the store was dropped",
        connections()
    );
}

/// `session_with_user_async` once its connection is open (the first calls only open it).
async fn read_async(store: &DynStore, id: Uuid) -> Option<(Session, User)> {
    for _ in 0..200 {
        if let Some(read) = store.session_with_user_async(id) {
            return read.await.expect("an answer, not the pool").unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the async read never opened");
}
