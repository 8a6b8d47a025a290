#!/usr/bin/env bash
# Install (if missing) and start a local PostgreSQL cluster for the dockmesh tests, create the
# role and database `dockmesh_test`, and print on the LAST line:
#
#   export DOCKMESH_TEST_POSTGRES_URL=postgres://dockmesh_test:dockmesh_test@127.0.0.1:<port>/dockmesh_test
#
# so that a caller can `eval "$(scripts/start-postgres.sh | tail -n 1)"`. Idempotent: running it
# again on a started cluster changes nothing and prints the same line. Needs root (apt-get and
# `su postgres`). Progress goes to stderr; only the export line goes to stdout.
set -euo pipefail

log() { echo "start-postgres: $*" >&2; }

as_postgres() {
    if command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    log "PostgreSQL is not installed: installing it with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

# The newest installed major version.
ver="$(ls /usr/lib/postgresql | sort -n | tail -n 1)"
if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
    log "creating cluster $ver/main"
    pg_createcluster "$ver" main >&2
fi

status="$(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" { print $4 }')"
if [ "$status" != "online" ]; then
    log "starting cluster $ver/main"
    pg_ctlcluster "$ver" main start >&2
fi
port="$(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" { print $3 }')"

# Wait until it accepts connections (at most 30 s).
for _ in $(seq 1 60); do
    if as_postgres psql -p "$port" -qtAc 'select 1' >/dev/null 2>&1; then
        break
    fi
    sleep 0.5
done

psql_admin() { as_postgres psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }

if [ "$(psql_admin -c "select 1 from pg_roles where rolname = 'dockmesh_test'")" != "1" ]; then
    log "creating role dockmesh_test"
    # CREATEDB: the tests create and drop a database (or schema) of their own each.
    psql_admin -c "create role dockmesh_test login password 'dockmesh_test' createdb"
fi
if [ "$(psql_admin -c "select 1 from pg_database where datname = 'dockmesh_test'")" != "1" ]; then
    log "creating database dockmesh_test"
    psql_admin -c "create database dockmesh_test owner dockmesh_test"
fi

echo "export DOCKMESH_TEST_POSTGRES_URL=postgres://dockmesh_test:dockmesh_test@127.0.0.1:${port}/dockmesh_test"
