-- V12: the audit trail becomes a hash chain (CONTRACT 12.2, docs/SECURITY.md).
--  * audit_events.seq: the event's place in the chain, handed out by the sealer in insertion
--    order (1, 2, 3, ...; NULL until sealed). Unique: there is exactly one chain.
--  * audit_events.hash: SHA-256(previous hash || canonical form of the event), lowercase hex.
--  * audit_events_unsealed: the sealer finds what awaits sealing without a scan.
--  * audit_chain: the chain-head row (one row, id 1). The sealer locks it; it records the
--    head (the newest sealed seq and hash) and the base (the seq and hash of the last event
--    `audit.retention` deleted, 0 and the genesis hash while none was), so the chain stays
--    verifiable from the first remaining event and a truncated tail is noticed.
-- Existing events are sealed by the first `authd serve` after the upgrade.

ALTER TABLE audit_events ADD COLUMN seq INTEGER;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_events_seq ON audit_events (seq);
CREATE INDEX audit_events_unsealed ON audit_events (id) WHERE seq IS NULL;

CREATE TABLE audit_chain (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    base_seq   INTEGER NOT NULL,
    base_hash  TEXT NOT NULL,
    head_seq   INTEGER NOT NULL,
    head_hash  TEXT NOT NULL
);
INSERT INTO audit_chain (id, base_seq, base_hash, head_seq, head_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000',
        0, '0000000000000000000000000000000000000000000000000000000000000000');
