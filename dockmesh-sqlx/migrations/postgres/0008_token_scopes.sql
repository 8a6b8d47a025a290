-- dockmesh: reversible
-- Token scopes: what each API token may do (`read`, `operate` or `admin`), one row per token.
-- Tokens made before scopes existed keep the power they had: every API token becomes `admin`
-- (an enrollment token's scope is `read` and unused).

CREATE TABLE token_scopes (
    hash  TEXT PRIMARY KEY,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'operate', 'admin'))
);

INSERT INTO token_scopes (hash, scope)
SELECT hash, CASE WHEN kind = 'api' THEN 'admin' ELSE 'read' END FROM tokens;
