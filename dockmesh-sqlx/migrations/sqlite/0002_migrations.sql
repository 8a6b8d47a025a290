-- dockmesh: reversible
-- Stack migrations with their full event log, and drains.
-- At most one active migration per stack, enforced by a partial unique index.

CREATE TABLE migrations (
    id           BLOB PRIMARY KEY NOT NULL,
    stack        TEXT NOT NULL,
    source       TEXT NOT NULL,
    target       TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    retention    TEXT NOT NULL,
    active       BOOLEAN NOT NULL,
    event_count  INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX migrations_one_active_per_stack ON migrations (stack) WHERE active;
CREATE INDEX migrations_by_request ON migrations (requested_at, id);

CREATE TABLE migration_events (
    migration_id BLOB NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    at           TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (migration_id, seq)
);

CREATE TABLE drains (
    id         BLOB PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL,
    plan       TEXT NOT NULL,
    migrations TEXT NOT NULL
);
CREATE INDEX drains_by_creation ON drains (created_at, id);
