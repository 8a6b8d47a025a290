-- dockmesh: reversible
-- Lease fencing tokens: the token of a lease grows with every new holder and is kept when the
-- lease is released, so the next holder's is greater. The store refuses a migration event whose
-- writer presents another token than the lease's current one.

CREATE TABLE lease_fences (
    name  TEXT COLLATE "C" PRIMARY KEY,
    token BIGINT NOT NULL
);
