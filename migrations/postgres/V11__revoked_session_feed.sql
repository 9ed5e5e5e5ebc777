-- PostgreSQL twin of migrations/sqlite/V11: the revoked-session feed
-- (GET /.well-known/revoked-sessions), one row for every session that ends while it is live,
-- written by triggers on `sessions` in the transaction that ends it, so every way a session
-- ends (present and future code paths, any instance) is in the feed.
--
-- seq          the feed's cursor. An identity value is taken when the row is inserted, not
--              when its transaction commits, so two revoking transactions could commit out of
--              seq order and a reader could pass over the smaller one for good. The trigger
--              therefore takes a transaction-level advisory lock (FEED_LOCK below) before it
--              inserts: revoking transactions write their feed rows one after the other, each
--              commits (and releases the lock) before the next takes a seq, so seq order is
--              commit order and a reader that sees seq N has seen every seq below it.
-- sid          the session's id; nothing else about the session or its user is kept here
-- revoked_at   when it ended (Unix ms)
-- issued_at    when its newest access token was issued (Unix ms): the newest `created_at` of
--              its refresh tokens or its `last_used_at`, whichever is later. The feed's `exp`
--              is issued_at (in seconds) + jwt.access_ttl, as the token's own `exp` is.
CREATE TABLE revoked_sessions (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sid         UUID NOT NULL,
    revoked_at  BIGINT NOT NULL,
    issued_at   BIGINT NOT NULL
);
CREATE INDEX revoked_sessions_issued ON revoked_sessions (issued_at);

CREATE FUNCTION authd_feed_session_end() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s          sessions;
    now_ms     BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
    ended_at   BIGINT;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        s := NEW;
        ended_at := NEW.revoked_at;
    ELSE
        s := OLD;
        ended_at := now_ms;
        -- A dead session (cleanup) ends nothing.
        IF OLD.expires_at <= now_ms THEN
            RETURN OLD;
        END IF;
    END IF;
    -- FEED_LOCK ("authd_f1"): feed rows are written in commit order (see seq above).
    PERFORM pg_advisory_xact_lock(7022647185663551025);
    INSERT INTO revoked_sessions (sid, revoked_at, issued_at)
    VALUES (s.id, ended_at,
            GREATEST(s.last_used_at,
                     COALESCE((SELECT MAX(created_at) FROM refresh_tokens WHERE session_id = s.id), 0)));
    IF TG_OP = 'UPDATE' THEN
        RETURN NULL;
    END IF;
    RETURN OLD;
END;
$$;

-- A live session revoked (revoked_at set where it was NULL).
CREATE TRIGGER sessions_feed_revoked AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION authd_feed_session_end();

-- A session deleted while unrevoked (its user deleted: the cascade fires it too). BEFORE, so
-- its refresh tokens (which cascade from it) are still there to read.
CREATE TRIGGER sessions_feed_deleted BEFORE DELETE ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL)
    EXECUTE FUNCTION authd_feed_session_end();
