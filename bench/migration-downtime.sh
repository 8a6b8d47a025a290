#!/usr/bin/env bash
# Downtime of moving a stack with a 1 GiB named volume between two Docker engines: dockmesh
# (`dockmesh server` + `dockmesh stack migrate`) against the same move done by hand with the
# docker CLI and a tar pipe, in the same run, rounds interleaved.
#
# Downtime is measured from "the source is stopped" to "the target is healthy":
#   dockmesh: the `source_stopped` and `target_healthy` events of the migration record;
#   by hand:  after `docker stop` returns, until `docker inspect` reports the new container healthy,
#             the data moved by `docker run … tar c | docker run -i … tar x` (what an operator
#             with only the docker CLI does: the engines' attach streams carry the data);
#   by hand, file system: the same, but `tar c | tar x` between the two volumes' directories on
#             disk (root on one machine holding both engines: a lower bound no remote move beats).
# Both use the same image, command and healthcheck (interval 1 s).
#
# Needs the main engine and the second one (scripts/start-second-engine.sh, which prints
# DOCKMESH_TEST_DOCKER_HOST_B) and a release build (cargo build --release).
# Usage: bash bench/migration-downtime.sh [ROUNDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
A=${DOCKER_HOST:-unix:///var/run/docker.sock}
B=${DOCKMESH_TEST_DOCKER_HOST_B:?run scripts/start-second-engine.sh first}
IMAGE=dockmesh-test/busybox:1
bin=target/release/dockmesh
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d)
port=18$((RANDOM % 900 + 100))
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

da() { DOCKER_HOST=$A docker "$@"; }
db() { DOCKER_HOST=$B docker "$@"; }
now() { date +%s.%N; }

"$bin" token create --data-dir "$work/data" > "$work/token" 2>/dev/null
"$bin" server --data-dir "$work/data" --listen "127.0.0.1:$port" --host "b=$B" > "$work/server.log" 2>&1 &
server=$!
export DOCKMESH_SERVER=http://127.0.0.1:$port DOCKMESH_TOKEN=$(cat "$work/token")
for _ in $(seq 1 100); do curl -sf "$DOCKMESH_SERVER/healthz/ready" >/dev/null && break; sleep 0.1; done

cmd='trap "exit 0" TERM; mkdir -p /www; echo ok > /www/index.html; httpd -p 8080 -h /www; while true; do sleep 1; done'
health='wget -q -O /dev/null http://127.0.0.1:8080/'

# 1 GiB: half random, half text.
fill() { # engine volume
  DOCKER_HOST=$1 docker run --rm --network none -v "$2:/v" $IMAGE sh -c \
    'dd if=/dev/urandom of=/v/random bs=1M count=512 2>/dev/null; i=0; while [ $i -lt 64 ]; do seq 1 1200000 > /v/text$i; i=$((i+1)); done; du -sh /v' >&2
}

wait_healthy() { # engine container
  until [ "$(DOCKER_HOST=$1 docker inspect --format '{{.State.Health.Status}}' "$2" 2>/dev/null)" = healthy ]; do sleep 0.1; done
}

by_hand() { # round [fs]
  local name=man$1$RANDOM fs=${2:-}
  da volume create "${name}_data" >/dev/null
  fill "$A" "${name}_data"
  da run -d --name "$name" -v "${name}_data:/data" --health-cmd "$health" --health-interval 1s $IMAGE sh -c "$cmd" >/dev/null
  wait_healthy "$A" "$name"
  da stop "$name" >/dev/null
  local t0; t0=$(now)
  db volume create "${name}_data" >/dev/null
  if [ -n "$fs" ]; then
    tar -C "$(da volume inspect --format '{{.Mountpoint}}' "${name}_data")" -c . \
      | tar -C "$(db volume inspect --format '{{.Mountpoint}}' "${name}_data")" -x
  else
    da run --rm --network none -v "${name}_data:/v:ro" $IMAGE tar -C /v -c . \
      | db run --rm -i --network none -v "${name}_data:/v" $IMAGE tar -C /v -x
  fi
  db run -d --name "$name" -v "${name}_data:/data" --health-cmd "$health" --health-interval 1s $IMAGE sh -c "$cmd" >/dev/null
  wait_healthy "$B" "$name"
  local t1; t1=$(now)
  echo "$t1 - $t0" | bc
  da rm -f "$name" >/dev/null; db rm -f "$name" >/dev/null
  da volume rm "${name}_data" >/dev/null; db volume rm "${name}_data" >/dev/null
}

with_dockmesh() {
  local name=dm$1$RANDOM
  cat > "$work/compose.yaml" <<EOF
services:
  web:
    image: $IMAGE
    command: ["sh", "-c", "$(echo "$cmd" | sed 's/"/\\"/g')"]
    volumes:
      - data:/data
    healthcheck:
      test: ["CMD-SHELL", "$health"]
      interval: 1s
volumes:
  data:
EOF
  "$bin" stack deploy "$name" --file "$work/compose.yaml" --host local >/dev/null
  da stop "${name}-web-1" >/dev/null
  fill "$A" "${name}_data"
  da start "${name}-web-1" >/dev/null
  wait_healthy "$A" "${name}-web-1"
  "$bin" stack migrate "$name" --to b --yes >/dev/null 2>&1
  local id; id=$("$bin" migration ls --stack "$name" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  "$bin" migration show "$id" --json | python3 -c '
import json, sys
from datetime import datetime
m = json.load(sys.stdin)
assert m["state"] == "committed", m["state"]
at = {e["kind"]: e["at"] for e in m["events"]}
p = lambda s: datetime.fromisoformat(s[:26].rstrip("Z") if "." in s else s.rstrip("Z"))
print((p(at["target_healthy"]) - p(at["source_stopped"])).total_seconds())'
  "$bin" migration purge-source "$id" --yes >/dev/null
  "$bin" stack rm "$name" --volumes >/dev/null
}

declare -a man fsm dm
for r in $(seq 1 "$rounds"); do
  m=$(by_hand "$r"); man+=("$m"); echo "round $r by hand (docker CLI):   $m s" >&2
  f=$(by_hand "$r" fs); fsm+=("$f"); echo "round $r by hand (file system): $f s" >&2
  d=$(with_dockmesh "$r"); dm+=("$d"); echo "round $r dockmesh:              $d s" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mm=$(median "${man[@]}"); mf=$(median "${fsm[@]}"); md=$(median "${dm[@]}")
echo "downtime, median of $rounds rounds: dockmesh ${md} s; by hand with the docker CLI ${mm} s (dockmesh $(echo "$md - $mm" | bc) s, $(echo "scale=2; $md / $mm" | bc)x); by hand on the file system ${mf} s (dockmesh $(echo "$md - $mf" | bc) s, $(echo "scale=2; $md / $mf" | bc)x)"
