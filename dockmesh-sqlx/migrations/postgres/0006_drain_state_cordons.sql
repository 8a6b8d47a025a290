-- dockmesh: reversible
-- Drain execution state (running, paused, aborted, completed, and the failures an operator
-- resumed past), one row per drain that has been executed; and cordoned hosts, which take no
-- migrated stacks until uncordoned.

CREATE TABLE drain_states (
    id    UUID PRIMARY KEY,
    state JSONB NOT NULL
);

CREATE TABLE cordons (
    host        TEXT PRIMARY KEY,
    cordoned_at TIMESTAMPTZ NOT NULL,
    cordoned_by TEXT NOT NULL
);
