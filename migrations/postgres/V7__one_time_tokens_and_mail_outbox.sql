-- PostgreSQL twin of migrations/sqlite/V7: one-time tokens and the mail outbox (sections 10
-- and 11 of the contract).
--
-- one_time_tokens: password reset, email verification and email change tokens, mfaTokens and
-- WebAuthn ceremonies are one mechanism (domain::one_time): a random secret of 256 bits, kept
-- only as its hex SHA-256 (`token_hash`), with a purpose, an owner, an expiry, used once.
--   purpose     domain::one_time::Purpose (`password_reset`, `verify_email`, ...)
--   user_id     the owner; NULL only for a ceremony that names no account yet (a discoverable
--               passkey login). Deleting the user deletes its tokens.
--   address     the email address a mailed token was sent to: it proves that address only
--   payload     what the purpose needs to carry (JSON: a pending email, a ceremony's state);
--               never a secret that works on its own
--   attempts    wrong answers so far (an mfaToken dies after mfa.max_attempts)
-- Using a token deletes its row (one statement: of two concurrent uses, one finds it), so a
-- used token and an unknown one look the same.
CREATE TABLE one_time_tokens (
    token_hash  TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL,
    user_id     UUID REFERENCES users (id) ON DELETE CASCADE,
    address     TEXT,
    payload     TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX one_time_tokens_user ON one_time_tokens (user_id, purpose);
CREATE INDEX one_time_tokens_expiry ON one_time_tokens (expires_at);

-- mail_outbox: every mail authd sends, written in the transaction of the request that decided
-- to send it, delivered by the worker of any `serve` (domain::mail, service::mail). A row holds
-- no usable secret: a mail's link token is made when the worker hands the mail over.
--   kind             domain::mail::MailKind (`password_reset`, `verify_email`, ...)
--   user_id          the account it is about (no foreign key: a mail about a deleted account
--                    is dropped by the worker, not by a cascade)
--   to_address       the address stored on the account when the mail was queued
--   payload          what the mail's text needs (JSON), never a secret
--   status           queued -> sending (leased until lease_until) -> sent | failed; a lease
--                    that ran out is taken back as queued
--   attempts         attempts so far, the first included
--   next_attempt_at  not before this time (retries back off)
CREATE TABLE mail_outbox (
    id               UUID PRIMARY KEY,
    kind             TEXT NOT NULL,
    user_id          UUID,
    to_address       TEXT NOT NULL,
    payload          TEXT,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_until      BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX mail_outbox_due ON mail_outbox (status, next_attempt_at);
CREATE INDEX mail_outbox_created ON mail_outbox (created_at);
-- The per-address throttle counts the mails queued to an address in the last day.
CREATE INDEX mail_outbox_address ON mail_outbox (to_address, created_at);
