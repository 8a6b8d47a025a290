#!/usr/bin/env bash
# Agent upgrade latency: from the server sending the upgrade order to the agent's hello with the
# new version, on loopback, with release builds of two versions of the binary (the same code,
# another version baked in with DOCKMESH_BUILD_VERSION).
#
# dockmesh: `dockmesh server --no-local-host` (new version) serving the new binary signed, one
#   `dockmesh agent` running the old binary from its own copy; `dockmesh agent upgrade HOST`.
#   Measured from the server's log: "upgrade order sent" to "agent hello" with the new version
#   (download, size + SHA-256 + signature check, `--version` check, swap, re-exec, TLS
#   connection, hello). Before each round the agent is put back on the old binary.
# baseline, same rounds: what any upgrade of this binary costs at least on this machine:
#   `curl` of the same binary from the same server + `sha256sum` + `NEW --version`.
#
# Needs the main Docker engine, curl, python3. Builds what it needs into target/release
# (leaving target/release/dockmesh as the plain build), unless OLD and NEW name release builds
# already made (NEW built with DOCKMESH_BUILD_VERSION=0.1.1-bench).
# Usage: bash bench/agent-upgrade.sh [ROUNDS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
NEWV=0.1.1-bench
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

if [ -n "${OLD:-}" ] && [ -n "${NEW:-}" ]; then
  cp "$OLD" "$work/old"; cp "$NEW" "$work/new"
else
  cargo build --release -q --bin dockmesh
  cp target/release/dockmesh "$work/old"
  DOCKMESH_BUILD_VERSION=$NEWV cargo build --release -q --bin dockmesh
  cp target/release/dockmesh "$work/new"
  cargo build --release -q --bin dockmesh
fi
[ "$("$work/new" --version)" = "dockmesh $NEWV" ] || { echo "NEW is not dockmesh $NEWV" >&2; exit 2; }
oldv=$("$work/old" --version | cut -d' ' -f2)
size=$(stat -c %s "$work/new")

port=18$((RANDOM % 900 + 100))
aport=19$((RANDOM % 900 + 100))
mkdir -p "$work/data/agent-binaries"
"$work/old" release keygen --private "$work/release.key" --public "$work/data/release.pub" >/dev/null
bin=dockmesh-linux-$(uname -m)
cp "$work/new" "$work/data/agent-binaries/$bin"
"$work/old" release sign --key "$work/release.key" "$work/data/agent-binaries/$bin" >/dev/null
"$work/old" token create --data-dir "$work/data" > "$work/token" 2>/dev/null
"$work/new" server --data-dir "$work/data" --listen "127.0.0.1:$port" --agent-listen "127.0.0.1:$aport" \
  --no-local-host > "$work/server.log" 2>&1 &
pids+=($!)
export DOCKMESH_SERVER=http://127.0.0.1:$port DOCKMESH_TOKEN=$(cat "$work/token")
for _ in $(seq 1 100); do curl -sf "$DOCKMESH_SERVER/healthz/ready" >/dev/null && break; sleep 0.1; done
mkdir -p "$work/agent/bin"
tok=$("$work/old" agent token create --data-dir "$work/data" 2>/dev/null)

version() { "$work/old" agent ls --json | python3 -c 'import json,sys; a=json.load(sys.stdin); print(a[0]["version"] if a and a[0]["connected"] else "")'; }
start_agent() {
  cp "$work/old" "$work/agent/bin/dockmesh"
  "$work/agent/bin/dockmesh" agent --server "$DOCKMESH_SERVER" --token "$tok" --name bench \
    --state-dir "$work/agent/state" >> "$work/agent.log" 2>&1 &
  agent_pid=$!
  until [ "$(version)" = "$oldv" ]; do sleep 0.1; done
}
ts() { python3 -c 'import sys,datetime; print(datetime.datetime.fromisoformat(sys.argv[1].replace("Z","+00:00")).timestamp())' "$1"; }

ours=(); base=()
for r in $(seq 1 "$rounds"); do
  start_agent
  sent_before=$(grep -c "upgrade order sent" "$work/server.log" || true)
  "$work/old" agent upgrade bench >/dev/null
  until [ "$(version)" = "$NEWV" ]; do sleep 0.05; done
  sent=$(grep "upgrade order sent" "$work/server.log" | sed -n "$((sent_before + 1))p" | awk '{print $1}')
  hello=$(grep "agent hello" "$work/server.log" | grep "version=$NEWV" | tail -1 | awk '{print $1}')
  t=$(python3 -c "print(round($(ts "$hello") - $(ts "$sent"), 3))")
  ours+=("$t")
  # Baseline: fetch, hash, start the new binary once.
  b0=$(date +%s.%N)
  curl -sf -o "$work/fetched" "$DOCKMESH_SERVER/api/v1/agent-binaries/$bin"
  sha256sum "$work/fetched" >/dev/null
  chmod +x "$work/fetched"; "$work/fetched" --version >/dev/null
  b1=$(date +%s.%N)
  base+=("$(python3 -c "print(round($b1 - $b0, 3))")")
  echo "round $r: order -> hello ${t} s; baseline ${base[-1]} s" >&2
  # Back to the old binary for the next round: stop the agent (its group, with any watchdog).
  pkill -f "$work/agent/bin/dockmesh" || true
  sleep 0.5
  rm -f "$work/agent/state/upgrade.json"
done
python3 - "$size" "${ours[*]}" "${base[*]}" <<'PY'
import statistics, sys
size = int(sys.argv[1]); ours = [float(x) for x in sys.argv[2].split()]; base = [float(x) for x in sys.argv[3].split()]
mo, mb = statistics.median(ours), statistics.median(base)
print(f"binary: {size/1e6:.1f} MB (release build)")
print(f"order -> hello with the new version: median {mo:.3f} s (rounds: {ours})")
print(f"baseline curl + sha256sum + --version: median {mb:.3f} s (rounds: {base})")
print(f"ratio ours / baseline: {mo/mb:.1f}x")
PY
