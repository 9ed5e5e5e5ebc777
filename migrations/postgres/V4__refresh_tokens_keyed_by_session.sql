-- PostgreSQL twin of migrations/sqlite/V4: refresh tokens keyed by (session_id, token_hash).
-- A token carries its session id (the first 16 bytes of its random part), so a rotation finds
-- the presented token by session; the key's prefix serves the cascade from sessions and the
-- per-session lookups, so there is no separate index on session_id.
--
-- Tokens issued before this migration do not carry their session id. They are marked
-- `legacy = TRUE` and stay findable by hash alone through a partial unique index; a legacy
-- token's successors inherit the mark.

CREATE TABLE refresh_tokens_v4 (
    session_id  UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    rotated_at  BIGINT,
    legacy      BOOLEAN,
    PRIMARY KEY (session_id, token_hash)
);

INSERT INTO refresh_tokens_v4 (session_id, token_hash, created_at, expires_at, rotated_at, legacy)
    SELECT session_id, token_hash, created_at, expires_at, rotated_at, TRUE FROM refresh_tokens;

DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_v4 RENAME TO refresh_tokens;
ALTER TABLE refresh_tokens RENAME CONSTRAINT refresh_tokens_v4_pkey TO refresh_tokens_pkey;
ALTER TABLE refresh_tokens RENAME CONSTRAINT refresh_tokens_v4_session_id_fkey TO refresh_tokens_session_id_fkey;

CREATE INDEX refresh_tokens_rotated ON refresh_tokens (rotated_at) WHERE rotated_at IS NOT NULL;
CREATE UNIQUE INDEX refresh_tokens_legacy ON refresh_tokens (token_hash) WHERE legacy;
