#!/usr/bin/env bash
# Build everything, start the C example (worker threads 20 calls deep, parked in read,
# nanosleep and pthread_cond_wait) with libstackdump.so preloaded, ask it for a dump with
# `kill -s USR1`, and print the dump. Usage: ./demo.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")"
threads=${1:-3}

cargo build --release --workspace --quiet
mkdir -p target/release/c-targets
cc -O2 -g -pthread -o target/release/c-targets/parked tests/targets/c/parked.c

dir=$(mktemp -d)
out=$(mktemp)
cleanup() {
  if [ -n "${pid:-}" ]; then { kill -9 "$pid" && wait "$pid"; } 2>/dev/null || true; fi
  rm -rf "$dir" "$out"
}
trap cleanup EXIT

STACKDUMP_DIR="$dir" LD_PRELOAD="$PWD/target/release/libstackdump.so" \
  target/release/c-targets/parked "$threads" >"$out" &
pid=$!

# Handshake: the example prints READY once every thread is parked.
for _ in $(seq 500); do grep -q READY "$out" && break; kill -0 "$pid" || exit 1; sleep 0.01; done
grep -q READY "$out" || { echo "example did not become ready" >&2; exit 1; }

echo "\$ kill -s USR1 $pid"
kill -s USR1 "$pid"
# Wait for the dump (the .json is renamed into place last, after the .txt).
for _ in $(seq 500); do ls "$dir"/stackdump-"$pid"-*.json >/dev/null 2>&1 && break; sleep 0.01; done
f=$(ls "$dir"/stackdump-"$pid"-*.txt)
echo "\$ cat $f"
cat "$f"
