-- PostgreSQL twin of migrations/sqlite/V6: signing keys live in the database, so every
-- instance sharing it finds the same key set.
--
-- key_use      'access' (JWT signing key) or 'refresh' (HMAC key of refresh tokens)
-- algorithm    'EdDSA' (Ed25519) or 'HS256' (HMAC-SHA256); refresh keys are always 'HS256'
-- state        'active' (signs; one per use), 'retiring' (verifies until retires_at),
--              'revoked' (verifies nothing since revoked_at)
-- public_key   Ed25519: the 32-byte public key (what the JWKS publishes); NULL for HMAC keys
-- private_key  Ed25519: the 32-byte seed; HMAC: the secret. Sealed (ChaCha20-Poly1305) when
--              sealed (jwt.key_encryption_secret). NULL once no longer needed.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    key_use      TEXT NOT NULL CHECK (key_use IN ('access', 'refresh')),
    algorithm    TEXT NOT NULL CHECK (algorithm IN ('EdDSA', 'HS256')),
    state        TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'revoked')),
    created_at   BIGINT NOT NULL,
    retires_at   BIGINT,
    revoked_at   BIGINT,
    public_key   BYTEA,
    private_key  BYTEA,
    sealed       BOOLEAN NOT NULL DEFAULT FALSE
);

-- At most one active key per use, whatever the writers race to do.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (key_use) WHERE state = 'active';

-- The key set's generation: bumped by every change to signing_keys, polled by running
-- servers. Its one row is also what every key-set write locks first (see store/postgres/keys.rs).
CREATE TABLE signing_key_generation (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  BIGINT NOT NULL
);
INSERT INTO signing_key_generation (id, generation) VALUES (1, 0);
