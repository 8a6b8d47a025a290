#!/usr/bin/env bash
# Install the API contract test's tools (tests/api_contract.rs) into a virtual environment:
# openapi-spec-validator (is the document valid OpenAPI?), schemathesis (does the server keep
# what the document says?) and openapi-python-client (does a client generated from it work?).
# Versions are pinned so that a run is reproducible. Idempotent. The last line printed is the
# `export` to eval (the test finds the default place without it).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DOCKMESH_CONTRACT_VENV:-$PWD/target/contract-venv}"
want="schemathesis==4.32.5 openapi-spec-validator==0.9.0 openapi-python-client==0.29.1"
stamp="$venv/.dockmesh-tools"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want
  echo "$want" > "$stamp"
fi
"$venv/bin/schemathesis" --version
echo "export DOCKMESH_CONTRACT_VENV=$venv"
