-- The revoked-session feed (GET /.well-known/revoked-sessions): one row for every session
-- that ends while it is live, written by triggers on `sessions` in the transaction that ends
-- it, so every way a session ends (logout, logout-all, session delete, reuse detection, admin
-- revocation, disable, delete of the user through the cascade, role and password changes, and
-- any path added later) is in the feed without its code knowing about it.
--
-- seq          the feed's cursor: increases in commit order (SQLite has one writer) and is
--              never reused (AUTOINCREMENT: a cleanup that deleted the newest rows does not
--              hand their numbers out again)
-- sid          the session's id; nothing else about the session or its user is kept here
-- revoked_at   when it ended (Unix ms)
-- issued_at    when its newest access token was issued (Unix ms): the newest `created_at` of
--              its refresh tokens (every access token is issued with a refresh token of the
--              same instant) or its `last_used_at`, whichever is later. The feed's `exp` is
--              issued_at (in seconds) + jwt.access_ttl, as the token's own `exp` is.
CREATE TABLE revoked_sessions (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    sid         TEXT NOT NULL,
    revoked_at  INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL
);
-- The feed without a cursor reads by issued_at (whose tokens can still be valid); with one,
-- by seq (the primary key).
CREATE INDEX revoked_sessions_issued ON revoked_sessions (issued_at);

-- A live session revoked (revoked_at set where it was NULL).
CREATE TRIGGER sessions_feed_revoked AFTER UPDATE OF revoked_at ON sessions
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO revoked_sessions (sid, revoked_at, issued_at)
    VALUES (NEW.id, NEW.revoked_at,
            MAX(NEW.last_used_at,
                COALESCE((SELECT MAX(created_at) FROM refresh_tokens WHERE session_id = NEW.id), 0)));
END;

-- A session deleted while unrevoked and unexpired (its user deleted: the cascade). BEFORE,
-- so its refresh tokens (which cascade from it) are still there to read. Dead sessions that
-- cleanup deletes are not live and write nothing.
CREATE TRIGGER sessions_feed_deleted BEFORE DELETE ON sessions
WHEN OLD.revoked_at IS NULL
     AND OLD.expires_at > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
BEGIN
    INSERT INTO revoked_sessions (sid, revoked_at, issued_at)
    VALUES (OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
            MAX(OLD.last_used_at,
                COALESCE((SELECT MAX(created_at) FROM refresh_tokens WHERE session_id = OLD.id), 0)));
END;
