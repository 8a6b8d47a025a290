-- dockmesh: reversible
-- Audit chain integrity: TRUNCATE of the audit log is refused like UPDATE and DELETE (a
-- row-level trigger does not fire on TRUNCATE), and audit_anchor keeps a keyed MAC over the
-- newest entry (HMAC-SHA256 over its sequence number and hash, with a key kept in a file in the
-- data directory, outside the database), moved in the same transaction as each append, so that
-- a chain shortened at its tail with its head moved back is found. Going back drops the trigger
-- and the anchor; the log itself is unchanged.

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE audit_anchor (
    id  BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    mac TEXT NOT NULL
);
