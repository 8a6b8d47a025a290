#!/usr/bin/env bash
# Run every fuzz target briefly on its committed corpus; fail if any input crashes one.
#
#   bash scripts/fuzz-smoke.sh [--no-build] [SECONDS_PER_TARGET]   (default 20)
#
# Builds the targets (nightly, installed when missing; cargo-fuzz, installed when missing)
# without a sanitizer, unoptimised with debug assertions (a cold build of the optimised
# targets takes several times longer than the runs), unless --no-build says they are built.
# The committed corpus under fuzz/corpus/ is only read: new inputs go to a temporary
# directory, and so does a crashing input, which is printed as base64 (save it and replay it
# with `cargo +nightly fuzz run -s none -a TARGET FILE`).
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
if [ "${1:-}" = "--no-build" ]; then
  build=0
  shift
fi
seconds=${1:-20}
profile=(--dev -s none --codegen-units 16)

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

start=$(date +%s)
if [ "$build" = 1 ]; then
  cargo +nightly fuzz build "${profile[@]}"
  echo "fuzz build: $(($(date +%s) - start)) s"
  if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet -- fuzz/Cargo.lock; then
    echo "fuzz/Cargo.lock was out of date (a dependency of the crates changed): the build updated it;"
    echo "commit the update"
    exit 1
  fi
fi
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir="fuzz/target/$host/debug"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$work/$target/new" "$work/$target/artifacts"
  corpus=()
  if [ -d "fuzz/corpus/$target" ]; then corpus=("fuzz/corpus/$target"); fi
  echo "== fuzz $target (${seconds} s)"
  if ! "$bin_dir/$target" "$work/$target/new" "${corpus[@]}" \
    -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$work/$target/artifacts/" >"$work/$target/log" 2>&1; then
    failed+=("$target")
    tail -n 40 "$work/$target/log"
    for a in "$work/$target/artifacts/"*; do
      [ -f "$a" ] || continue
      echo "crashing input $(basename "$a") (base64):"
      base64 -w 0 "$a"
      echo
    done
  else
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$work/$target/log" |
      tr -s ' \n' ' '
    echo
  fi
done
echo "fuzz smoke: $(($(date +%s) - start)) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets that crashed: ${failed[*]}"
  exit 1
fi
