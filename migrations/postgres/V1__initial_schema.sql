-- authd initial schema (PostgreSQL twin of migrations/sqlite/V1). Never edit once released:
-- add a new numbered file instead, in both folders. Times are Unix milliseconds (UTC).

CREATE TABLE users (
    id             UUID PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    name           TEXT,
    role           TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    password_hash  TEXT NOT NULL,
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL,
    last_login_at  BIGINT
);

CREATE TABLE sessions (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoke_reason TEXT,
    user_agent    TEXT,
    ip            TEXT,
    device_info   TEXT
);
CREATE INDEX sessions_user ON sessions (user_id, revoked_at, expires_at);
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    session_id  UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    rotated_at  BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

CREATE TABLE audit_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    event       TEXT NOT NULL,
    user_id     UUID,
    email       TEXT,
    ip          TEXT,
    user_agent  TEXT,
    outcome     TEXT NOT NULL,
    reason      TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_email ON audit_events (email, at);
CREATE INDEX audit_events_user ON audit_events (user_id, at);

-- Failed-login counters, keyed 'ip:<addr>' or 'email:<normalised email>'.
CREATE TABLE login_failures (
    key           TEXT PRIMARY KEY,
    count         INTEGER NOT NULL,
    window_start  BIGINT NOT NULL,
    locked_until  BIGINT
);
