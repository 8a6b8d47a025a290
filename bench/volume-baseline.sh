#!/usr/bin/env bash
# The plain baseline the volume benchmark compares dockmesh against: copy volume SRC into
# volume DST with busybox tar through two `docker run`s and a pipe. No verification at all.
#
#   bench/volume-baseline.sh SRC DST [IMAGE]
#
# `--network none` only because containers on this machine's engine cannot join the default
# bridge; it does not change what is measured.
set -euo pipefail
src="$1"
dst="$2"
img="${3:-dockmesh-test/busybox:1}"
docker run --rm --network none -v "$src":/s "$img" tar c -C /s . \
  | docker run --rm -i --network none -v "$dst":/d "$img" tar x -C /d
