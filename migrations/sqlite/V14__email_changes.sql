-- Email change (section 10.5 of the contract): the one pending change of an account, until its
-- last required confirmation moves the address (in one transaction) or it is cancelled,
-- replaced by a newer request, or dropped.
--   change_id      names this request: the tokens of its mails carry it (payload `changeId`),
--                  so a link of an older, replaced or cancelled request confirms nothing
--   new_email      the address asked for (normalised)
--   old_email      the account's address when it was asked for
--   session_id     the session that asked (kept live when the change completes); no foreign
--                  key: a session purged by cleanup leaves the change alone
--   new_confirmed  the new address's link was used
--   old_confirmed  the current address's link was used (set at once with
--                  email.change_confirm_old = false)
-- Deleting the user deletes its pending change.
CREATE TABLE email_changes (
    user_id        TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    change_id      TEXT NOT NULL,
    new_email      TEXT NOT NULL,
    old_email      TEXT NOT NULL,
    session_id     TEXT,
    new_confirmed  INTEGER NOT NULL DEFAULT 0 CHECK (new_confirmed IN (0, 1)),
    old_confirmed  INTEGER NOT NULL DEFAULT 0 CHECK (old_confirmed IN (0, 1)),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);
