#!/usr/bin/env bash
# API load: `wrk -t2 -c64 -d10s` against a real `dockmesh server` on loopback whose one host is
# the local Docker engine, on /api/v1/hosts, /api/v1/stacks, /api/v1/audit and /metrics (with
# an API token). Prints, per route: requests/s, p50, p99, errors (socket errors + non-2xx) and
# the server's resident memory after the route's run.
#
# Needs the main Docker engine, wrk (`apt-get install -y wrk`), curl. Builds the release
# binary unless BIN names one already built.
# Usage: bash bench/api-load.sh [DURATION] [CONNECTIONS]   (default 10s 64)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
conns=${2:-64}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 2; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -q --bin dockmesh
  BIN=target/release/dockmesh
fi
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

port=17$((RANDOM % 900 + 100))
token=$("$BIN" token create --scope read --data-dir "$work/data" 2>/dev/null)
"$BIN" server --data-dir "$work/data" --listen "127.0.0.1:$port" > "$work/server.log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port
for _ in $(seq 1 200); do curl -sf "$url/healthz/ready" >/dev/null && break; sleep 0.1; done
curl -sf "$url/healthz/ready" >/dev/null || { cat "$work/server.log" >&2; exit 1; }

rss() { awk '/^VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$pid/status"; }
# wrk prints latencies as 1.23ms / 456.78us / 1.02s; normalise to ms.
ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f ms", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f ms", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.0f ms", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.0f ms", v * 1000 }
    else print v }'
}

echo "server: $("$BIN" --version), rss at start $(rss); wrk -t2 -c$conns -d$duration --latency"
printf '| route | requests/s | p50 | p99 | errors | server RSS after |\n|---|---:|---:|---:|---:|---:|\n'
for route in /api/v1/hosts /api/v1/stacks /api/v1/audit /metrics; do
  out=$(wrk -t2 -c"$conns" -d"$duration" --latency -H "Authorization: Bearer $token" "$url$route")
  rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  sock=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  timeouts=$(awk '/Socket errors/ {print $10}' <<<"$out")
  printf '| `%s` | %s | %s | %s | %s (timeouts %s) | %s |\n' "$route" "$rps" "$(ms "$p50")" "$(ms "$p99")" \
    "$(( ${sock:-0} + ${non2xx:-0} ))" "${timeouts:-0}" "$(rss)"
done
