-- Refresh tokens keyed by (session_id, token_hash). A token now carries its session id (the
-- first 16 bytes of its random part), so a rotation finds the presented token by session and
-- writes the new one beside it: one B-tree page instead of two at random places, and no
-- separate index on session_id (the key's prefix serves the cascade from sessions and the
-- per-session lookups).
--
-- Tokens issued before this migration do not carry their session id. They are marked
-- `legacy = 1` and stay findable by hash alone through a partial index; a legacy token's
-- successors inherit the mark (their text carries the same stale prefix). New sessions'
-- tokens are never in that index, so it costs nothing on their rotations, and it empties
-- itself as the legacy sessions end and are cleaned up.

CREATE TABLE refresh_tokens_v4 (
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    rotated_at  INTEGER,
    legacy      INTEGER,
    PRIMARY KEY (session_id, token_hash)
) WITHOUT ROWID;

INSERT INTO refresh_tokens_v4 (session_id, token_hash, created_at, expires_at, rotated_at, legacy)
    SELECT session_id, token_hash, created_at, expires_at, rotated_at, 1 FROM refresh_tokens;

DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_v4 RENAME TO refresh_tokens;

CREATE INDEX refresh_tokens_rotated ON refresh_tokens (rotated_at) WHERE rotated_at IS NOT NULL;
CREATE UNIQUE INDEX refresh_tokens_legacy ON refresh_tokens (token_hash) WHERE legacy = 1;
