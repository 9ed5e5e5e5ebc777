-- PostgreSQL twin of migrations/sqlite/V8. Second factors (section 11 of the contract): TOTP with recovery codes, passkeys, and how
-- each session was opened.
--
--  * sessions.auth_methods: how the session was opened, as a JSON array of the contract's
--    names (["pwd"], ["pwd","otp"], ["pwd","recovery_code"], ["pwd","webauthn"],
--    ["webauthn"]); NULL for sessions opened before this migration, read as ["pwd"].
--  * mfa_totp: one row per account with TOTP on. `secret` is the shared secret (160 bits),
--    sealed under mfa.secret_key when set (`sealed`); `last_step` is the last 30-second step
--    accepted, so one code opens one session (CONTRACT 11.1): the step is recorded in the
--    transaction that opens the session, with a conditional update.
--  * mfa_recovery_codes: the account's recovery codes, as hashes only; using one deletes its
--    row (one statement: of two concurrent uses exactly one finds it).
--  * passkeys: WebAuthn credentials (CONTRACT 11.3). `credential_id` is the credential's id
--    (base64url), unique across all accounts; `credential` the library's serialized passkey
--    (public key, algorithm, counter); `sign_count` the last signature counter seen.
ALTER TABLE sessions ADD COLUMN auth_methods TEXT;

CREATE TABLE mfa_totp (
    user_id     UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret      BYTEA NOT NULL,
    sealed      BOOLEAN NOT NULL DEFAULT FALSE,
    last_step   BIGINT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE mfa_recovery_codes (
    code_hash   TEXT PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX mfa_recovery_codes_user ON mfa_recovery_codes (user_id);

CREATE TABLE passkeys (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id  TEXT NOT NULL UNIQUE,
    name           TEXT,
    credential     TEXT NOT NULL,
    sign_count     BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT
);
CREATE INDEX passkeys_user ON passkeys (user_id);
