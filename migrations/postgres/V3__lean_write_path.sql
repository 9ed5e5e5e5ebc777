-- PostgreSQL twin of migrations/sqlite/V3: fewer indexes on the hot write path (refresh
-- rotation).
--  * refresh_tokens_expiry and sessions_expiry only served the hourly cleanup, which can scan;
--  * sessions_user no longer carries expires_at, so a rotation does not rewrite its entry;
--  * audit_events drops the index on `at` (rows are appended in time order: newest first is
--    id DESC), and its email and user indexes lose `at`. (SQLite also dropped AUTOINCREMENT
--    here; an identity column has no such extra write, so the table itself stays.)

DROP INDEX refresh_tokens_expiry;
DROP INDEX sessions_expiry;
DROP INDEX sessions_user;
CREATE INDEX sessions_user ON sessions (user_id);

DROP INDEX audit_events_at;
DROP INDEX audit_events_email;
DROP INDEX audit_events_user;
CREATE INDEX audit_events_email ON audit_events (email);
CREATE INDEX audit_events_user ON audit_events (user_id);
