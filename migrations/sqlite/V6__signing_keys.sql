-- Signing keys live in the database, so every instance sharing it finds the same key set with
-- no per-instance setup (keys that an older authd wrote into jwt.key_dir are imported on the
-- first start after this migration, with the same key ids).
--
-- key_use      'access' (JWT signing key) or 'refresh' (HMAC key of refresh tokens)
-- algorithm    'EdDSA' (Ed25519) or 'HS256' (HMAC-SHA256); refresh keys are always 'HS256'
-- state        'active' (signs; one per use), 'retiring' (verifies until retires_at),
--              'revoked' (verifies nothing since revoked_at)
-- public_key   Ed25519: the 32-byte public key (what the JWKS publishes); NULL for HMAC keys
-- private_key  Ed25519: the 32-byte seed; HMAC: the secret. Sealed (ChaCha20-Poly1305) when
--              sealed = 1 (jwt.key_encryption_secret). Set to NULL once no longer needed: a
--              retiring Ed25519 key verifies with its public part alone; a revoked key keeps
--              nothing.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    key_use      TEXT NOT NULL CHECK (key_use IN ('access', 'refresh')),
    algorithm    TEXT NOT NULL CHECK (algorithm IN ('EdDSA', 'HS256')),
    state        TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'revoked')),
    created_at   INTEGER NOT NULL,
    retires_at   INTEGER,
    revoked_at   INTEGER,
    public_key   BLOB,
    private_key  BLOB,
    sealed       INTEGER NOT NULL DEFAULT 0 CHECK (sealed IN (0, 1))
);

-- At most one active key per use, whatever the writers race to do.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (key_use) WHERE state = 'active';

-- The key set's generation: bumped by every change to signing_keys, polled by running
-- servers (one row, one integer: a cheap read every few seconds).
CREATE TABLE signing_key_generation (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  INTEGER NOT NULL
);
INSERT INTO signing_key_generation (id, generation) VALUES (1, 0);
