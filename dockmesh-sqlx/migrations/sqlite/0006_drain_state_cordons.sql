-- dockmesh: reversible
-- Drain execution state (running, paused, aborted, completed, and the failures an operator
-- resumed past), one row per drain that has been executed; and cordoned hosts, which take no
-- migrated stacks until uncordoned.

CREATE TABLE drain_states (
    id    BLOB PRIMARY KEY NOT NULL,
    state TEXT NOT NULL
);

CREATE TABLE cordons (
    host        TEXT PRIMARY KEY NOT NULL,
    cordoned_at TEXT NOT NULL,
    cordoned_by TEXT NOT NULL
);
