#!/usr/bin/env bash
# Start a second, private Docker engine on this machine so that migrations between two real
# engines can be tested. Its socket is /tmp/dockmesh-engine-b/docker.sock; its data lives under
# /tmp/dockmesh-engine-b. It gets its own bridge interface (dmb0) and no iptables rules, so it
# touches nothing of the main engine (an engine started with `--bridge=none` removes the main
# engine's docker0). Loads the test image into it. Idempotent. The last line printed is the
# `export` to eval.
set -euo pipefail
root=/tmp/dockmesh-engine-b
sock="$root/docker.sock"
bridge=dmb0
export_line="export DOCKMESH_TEST_DOCKER_HOST_B=unix://$sock"
mkdir -p "$root"
if ! DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1; then
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add 10.213.7.1/24 dev "$bridge"
    ip link set "$bridge" up
  fi
  # Pid files left by an engine that is gone (killed with the namespace or session that
  # started it) stop dockerd and its containerd from starting: remove them when no process of
  # this engine runs.
  if ! pgrep -f -- "--data-root $root/data" >/dev/null; then
    rm -f "$root/dockerd.pid" "$root/exec/containerd/containerd.pid"
  fi
  echo '{}' > "$root/daemon.json"
  nohup dockerd --config-file "$root/daemon.json" --data-root "$root/data" --exec-root "$root/exec" \
    --pidfile "$root/dockerd.pid" -H "unix://$sock" --bridge="$bridge" --iptables=false --ip6tables=false \
    > "$root/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1; then
    echo "the second engine did not start; its log:" >&2
    tail -n 20 "$root/dockerd.log" >&2
    exit 1
  fi
fi
image="${DOCKMESH_TEST_IMAGE:-dockmesh-test/busybox:1}"
if ! DOCKER_HOST="unix://$sock" docker image inspect "$image" >/dev/null 2>&1; then
  docker save "$image" | DOCKER_HOST="unix://$sock" docker load >/dev/null
fi
echo "second engine ready at $sock with $image"
echo "$export_line"
