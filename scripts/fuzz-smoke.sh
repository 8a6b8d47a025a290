#!/usr/bin/env bash
# Run every fuzz target briefly on its committed corpus; fail on the first crash.
#
#   bash scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 20)
#
# Needs the nightly toolchain (installed when missing) and cargo-fuzz (installed when missing).
# The committed corpus under fuzz/corpus/ is only read: new inputs go to a temporary directory,
# and so does a crashing input (printed as base64, to be saved and replayed with
# `cargo +nightly fuzz run -s none -a TARGET FILE`).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

start=$(date +%s)
cargo +nightly fuzz build -s none -a
echo "fuzz build: $(( $(date +%s) - start )) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$work/$target/new" "$work/$target/artifacts"
  corpus=()
  [ -d "fuzz/corpus/$target" ] && corpus=("fuzz/corpus/$target")
  echo "== fuzz $target (${seconds} s)"
  if ! cargo +nightly fuzz run -s none -a "$target" "$work/$target/new" "${corpus[@]}" -- \
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
    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|#[0-9]+ *DONE)' \
      "$work/$target/log" | tr '\n' ' '
    echo
  fi
done
echo "fuzz smoke: $(( $(date +%s) - start )) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets that crashed: ${failed[*]}"
  exit 1
fi
