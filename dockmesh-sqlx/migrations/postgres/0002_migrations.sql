-- dockmesh: reversible
-- Stack migrations with their full event log, and drains.
-- At most one active migration per stack, enforced by a partial unique index.

CREATE TABLE migrations (
    id           UUID PRIMARY KEY,
    stack        TEXT NOT NULL,
    source       TEXT NOT NULL,
    target       TEXT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    requested_by TEXT NOT NULL,
    retention    TEXT NOT NULL,
    active       BOOLEAN NOT NULL,
    event_count  BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX migrations_one_active_per_stack ON migrations (stack) WHERE active;
CREATE INDEX migrations_by_request ON migrations (requested_at, id);

CREATE TABLE migration_events (
    migration_id UUID NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    body         JSONB NOT NULL,
    PRIMARY KEY (migration_id, seq)
);

CREATE TABLE drains (
    id         UUID PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    plan       JSONB NOT NULL,
    migrations JSONB NOT NULL
);
CREATE INDEX drains_by_creation ON drains (created_at, id);
