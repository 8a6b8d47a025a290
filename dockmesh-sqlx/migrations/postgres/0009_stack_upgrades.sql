-- dockmesh: reversible
-- Stack upgrades that are running: each stored before the host changes and at each stage, so a
-- restarted server finishes it. At most one per stack; a settled one is deleted in the
-- transaction that stores its release.

CREATE TABLE stack_upgrades (
    stack TEXT PRIMARY KEY,
    rev   BIGINT NOT NULL,
    run   JSONB NOT NULL
);
