-- Fewer B-trees on the hot write path (refresh rotation): every index a commit touches is
-- another page written to the WAL.
--  * refresh_tokens_expiry and sessions_expiry only served the hourly cleanup, which can scan;
--  * sessions_user no longer carries expires_at, so a rotation does not rewrite its entry;
--  * audit_events drops AUTOINCREMENT (its sqlite_sequence row was one more write per event)
--    and the index on `at` (rows are appended in time order: newest first is id DESC).

DROP INDEX refresh_tokens_expiry;
DROP INDEX sessions_expiry;
DROP INDEX sessions_user;
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE audit_events_v3 (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    event       TEXT NOT NULL,
    user_id     TEXT,
    email       TEXT,
    ip          TEXT,
    user_agent  TEXT,
    outcome     TEXT NOT NULL,
    reason      TEXT
);
INSERT INTO audit_events_v3 (id, at, event, user_id, email, ip, user_agent, outcome, reason)
    SELECT id, at, event, user_id, email, ip, user_agent, outcome, reason FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_v3 RENAME TO audit_events;
CREATE INDEX audit_events_email ON audit_events (email);
CREATE INDEX audit_events_user ON audit_events (user_id);
