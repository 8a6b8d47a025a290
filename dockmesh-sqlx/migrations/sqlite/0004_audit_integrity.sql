-- dockmesh: reversible
-- Audit chain integrity: audit_anchor keeps a keyed MAC over the newest entry (HMAC-SHA256 over
-- its sequence number and hash, with a key kept in a file in the data directory, outside the
-- database), moved in the same transaction as each append, so that a chain shortened at its tail
-- with its head moved back is found. (SQLite has no TRUNCATE: a DELETE without WHERE fires the
-- existing DELETE trigger.) Going back drops the anchor; the log itself is unchanged.

CREATE TABLE audit_anchor (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    mac TEXT NOT NULL
);
