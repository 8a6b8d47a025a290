#!/usr/bin/env bash
# Host-to-host transfer of a 1 GiB named volume (half random, half text) through the server and
# two agents, against `tar c | zstd -1 | socat | zstd -d | tar x` between the same two volumes'
# directories on disk, in the same run, rounds interleaved.
#
# dockmesh: `dockmesh server --no-local-host` with two `dockmesh agent` processes, one on the
#   main engine (host a) and one on the second engine (host b); `dockmesh stack migrate` from a
#   to b. Measured from the migration record: `volume_transfer_started` to `volume_verified`
#   (export on a, relay through the server, import on b, read-back and manifest comparison),
#   and the whole downtime (`source_stopped` to `target_healthy`).
# baseline: the volume's directory on a, `tar -c | zstd -1 | socat` to a `socat | zstd -d |
#   tar -x` into the volume's directory on b (root on one machine holding both engines), no
#   verification.
#
# Needs the main engine and the second one (scripts/start-second-engine.sh, which prints
# DOCKMESH_TEST_DOCKER_HOST_B), zstd and socat (apt-get install zstd socat), and a release build
# (cargo build --release).
# Usage: bash bench/agent-transfer.sh [ROUNDS]   (default 3)
#   AGENT_ARGS="--import-spool off" bash bench/agent-transfer.sh  passes options to both agents.
#   BENCH_LOGS=DIR keeps the server's and the agents' logs in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
A=${DOCKER_HOST:-unix:///var/run/docker.sock}
B=${DOCKMESH_TEST_DOCKER_HOST_B:?run scripts/start-second-engine.sh first}
IMAGE=dockmesh-test/busybox:1
bin=$PWD/target/release/dockmesh
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
for t in zstd socat bc python3; do
  command -v $t >/dev/null || { echo "needs $t (apt-get install -y $t)" >&2; exit 2; }
done
work=$(mktemp -d)
port=18$((RANDOM % 900 + 100))
aport=19$((RANDOM % 900 + 100))
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; [ -n "${BENCH_LOGS:-}" ] && mkdir -p "$BENCH_LOGS" && cp "$work"/*.log "$BENCH_LOGS"/; rm -rf "$work"' EXIT

da() { DOCKER_HOST=$A docker "$@"; }
db() { DOCKER_HOST=$B docker "$@"; }
now() { date +%s.%N; }

"$bin" token create --data-dir "$work/data" > "$work/token" 2>/dev/null
"$bin" server --data-dir "$work/data" --listen "127.0.0.1:$port" --agent-listen "127.0.0.1:$aport" \
  --no-local-host > "$work/server.log" 2>&1 &
pids+=($!)
export DOCKMESH_SERVER=http://127.0.0.1:$port DOCKMESH_TOKEN=$(cat "$work/token")
for _ in $(seq 1 100); do curl -sf "$DOCKMESH_SERVER/healthz/ready" >/dev/null && break; sleep 0.1; done
for h in a b; do
  tok=$("$bin" agent token create --data-dir "$work/data" 2>/dev/null)
  engine=$A; [ $h = b ] && engine=$B
  "$bin" agent --server "$DOCKMESH_SERVER" --token "$tok" --name "$h" --state-dir "$work/agent-$h" \
    --docker-host "$engine" ${AGENT_ARGS:-} > "$work/agent-$h.log" 2>&1 &
  pids+=($!)
done
until [ "$("$bin" agent ls --json | python3 -c 'import json,sys; print(sum(a["connected"] for a in json.load(sys.stdin)))')" = 2 ]; do sleep 0.2; done

# 1 GiB: half random, half text.
fill() { # engine volume
  DOCKER_HOST=$1 docker run --rm --network none -v "$2:/v" $IMAGE sh -c \
    'dd if=/dev/urandom of=/v/random bs=1M count=512 2>/dev/null; i=0; while [ $i -lt 64 ]; do seq 1 1200000 > /v/text$i; i=$((i+1)); done' >&2
}

baseline() { # round
  local name=base$1$RANDOM p=17$((RANDOM % 900 + 100))
  da volume create "${name}" >/dev/null; db volume create "${name}" >/dev/null
  fill "$A" "$name"
  local src dst; src=$(da volume inspect --format '{{.Mountpoint}}' "$name"); dst=$(db volume inspect --format '{{.Mountpoint}}' "$name")
  sync
  local t0; t0=$(now)
  socat -u "TCP-LISTEN:$p,reuseaddr" - | zstd -d -q | tar -C "$dst" -x &
  local rx=$!
  sleep 0.2
  tar -C "$src" -c . | zstd -1 -q | socat -u - "TCP:127.0.0.1:$p"
  wait $rx
  local t1; t1=$(now)
  [ "$(du -sb "$dst" | cut -f1)" = "$(du -sb "$src" | cut -f1)" ] || echo "baseline copy differs in size" >&2
  echo "$t1 - $t0" | bc
  da volume rm "$name" >/dev/null; db volume rm "$name" >/dev/null
}

with_dockmesh() { # round
  local name=ag$1$RANDOM
  cat > "$work/compose.yaml" <<EOF
services:
  web:
    image: $IMAGE
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumes:
      - data:/data
volumes:
  data:
EOF
  "$bin" stack deploy "$name" --file "$work/compose.yaml" --host a >/dev/null
  da stop "${name}-web-1" >/dev/null
  fill "$A" "${name}_data"
  da start "${name}-web-1" >/dev/null
  sync
  "$bin" stack migrate "$name" --to b --yes >/dev/null 2>&1
  local id; id=$("$bin" migration ls --stack "$name" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  "$bin" migration show "$id" --json | python3 -c '
import json, sys
from datetime import datetime
m = json.load(sys.stdin)
assert m["state"] == "committed", m["state"]
at = {e["kind"]: e["at"] for e in m["events"]}
p = lambda s: datetime.fromisoformat(s[:26].rstrip("Z") if "." in s else s.rstrip("Z"))
print((p(at["volume_verified"]) - p(at["volume_transfer_started"])).total_seconds(),
      (p(at["target_healthy"]) - p(at["source_stopped"])).total_seconds())'
  "$bin" migration purge-source "$id" --yes >/dev/null
  "$bin" stack rm "$name" --volumes >/dev/null
}

declare -a base dmt dmd ratio
for r in $(seq 1 "$rounds"); do
  b=$(baseline "$r"); base+=("$b"); echo "round $r tar|zstd -1|socat|zstd -d|tar: $b s" >&2
  with_dockmesh "$r" > "$work/round"
  read -r t d < "$work/round"; dmt+=("$t"); dmd+=("$d")
  ratio+=("$(echo "scale=3; $b / $t" | bc)")
  echo "round $r dockmesh through two agents: transfer+verify $t s, downtime $d s; ${ratio[-1]}x the baseline of this round" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mb=$(median "${base[@]}"); mt=$(median "${dmt[@]}"); md=$(median "${dmd[@]}"); mr=$(median "${ratio[@]}")
echo "1 GiB host to host, median of $rounds rounds: dockmesh transfer+verify ${mt} s (downtime ${md} s); tar|zstd|socat ${mb} s; dockmesh throughput $(echo "scale=2; $mb / $mt" | bc)x the baseline's (ratio of medians), ${mr}x (median of the rounds' ratios)"
