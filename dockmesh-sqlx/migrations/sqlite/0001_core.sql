-- dockmesh: irreversible: the first schema. There is no older schema to go back to: going below it means an empty database, so restore a backup instead.
-- Agents (one per host), tokens (hashes only), stacks and their deploy history, the rollout
-- policy and evaluator state, leases, and what each schema migration declared about itself.
-- Timestamps are TEXT in one fixed-width UTC form (YYYY-MM-DDTHH:MM:SS.ffffffZ) so that they sort.

CREATE TABLE agents (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    version          TEXT NOT NULL,
    commit_sha       TEXT,
    protocol_version INTEGER NOT NULL,
    arch             TEXT NOT NULL,
    docker_version   TEXT NOT NULL,
    last_seen        TEXT,
    connection       TEXT NOT NULL,
    upgrade          TEXT NOT NULL
);

CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    one_time   BOOLEAN NOT NULL,
    used_at    TEXT
);
CREATE INDEX tokens_by_creation ON tokens (created_at, hash);

CREATE TABLE stacks (
    name       TEXT PRIMARY KEY NOT NULL,
    compose    TEXT NOT NULL,
    env        TEXT,
    host       TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE deploys (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    stack  TEXT NOT NULL,
    at     TEXT NOT NULL,
    host   TEXT NOT NULL,
    action TEXT NOT NULL,
    actor  TEXT NOT NULL
);
CREATE INDEX deploys_by_stack ON deploys (stack, id);

CREATE TABLE rollout (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    policy TEXT NOT NULL,
    state  TEXT NOT NULL
);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    owner      TEXT NOT NULL,
    held_until TEXT NOT NULL
);

CREATE TABLE schema_notes (
    version     INTEGER PRIMARY KEY NOT NULL,
    description TEXT NOT NULL,
    reversible  BOOLEAN NOT NULL,
    note        TEXT NOT NULL
);
