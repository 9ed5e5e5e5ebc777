-- PostgreSQL twin of migrations/sqlite/V5: accounts over their whole life.
--
--  * audit_events.actor: who acted, for admin events: the acting admin's user id, or 'cli'
--    for a command run on the server; NULL for everything else. audit_events.user_id has no
--    foreign key, so the events of a deleted user stay, with its id. Sessions cascade from
--    users and refresh tokens from sessions: deleting a user deletes them with it.
--  * users_created: the admin listing pages through users in creation order, keyed by
--    (created_at, id).

ALTER TABLE audit_events ADD COLUMN actor TEXT;
CREATE INDEX users_created ON users (created_at, id);
