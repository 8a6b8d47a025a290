-- dockmesh: reversible
-- Releases of stacks: every release deployed or tried (its compose file, .env and the image id
-- of each service), how it ended, so that any earlier revision can be deployed again.

CREATE TABLE releases (
    stack    TEXT NOT NULL,
    rev      INTEGER NOT NULL,
    at       TEXT NOT NULL,
    host     TEXT NOT NULL,
    compose  TEXT NOT NULL,
    env      TEXT,
    images   TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    detail   TEXT,
    from_rev INTEGER,
    actor    TEXT NOT NULL,
    PRIMARY KEY (stack, rev)
);
