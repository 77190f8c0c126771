#!/usr/bin/env bash
# stackdump benchmark: stackdump vs eu-stack vs gdb on the same targets, in the same run.
#
#   bench/run.sh            full run: N = 20, 200, 1000, 2000 threads (depth 20), 5 runs per
#                           cell, plus depth 200, 4000/8000 threads, frame pointers, python3 +
#                           libpython, perf profile (~10 minutes)
#   bench/run.sh --quick    N = 20, 200, 3 runs per cell (~2 minutes)
#   bench/run.sh --wait-quiet [--quick]  first wait (up to 10 minutes) until the CPUs are idle
#   bench/run.sh --threads "1000 2000" --tag NAME   only these cells, into bench/results/NAME.{json,md}
#   bench/run.sh --compare REV [--quick] [--threads "..."]
#                           also build git revision REV (temporary worktree, own target dir)
#                           and run every cell for both builds, interleaved, on the same targets:
#                           bench/results/compare-REV.{json,md} (new ÷ old); the cells, start-up
#                           and RSS only (no depth/deadline/python/profile), latest.* untouched
#   bench/run.sh --profile N  only the perf profile of the dump thread for N threads (cold + warm)
#   bench/run.sh --fp       only the frame-pointer comparison (target built with and without
#                           -fno-omit-frame-pointer; 100 and 1000 threads), printed
#   bench/run.sh --node     only the real-program section: node's first dumps (nothing cached,
#                           then cached by an earlier process) and later ones, beside eu-stack
#   bench/run.sh --floor    only the per-thread floor of /proc task files on this machine
#                           (bench/procfloor.c: open+read+close vs pread of a kept fd), printed
#   bench/run.sh --watch    only the watchdog's cost (STACKDUMP_WATCH, 1000 idle threads) and
#                           its hang-to-dump time (bench/watch_cost.py), printed
#   bench/run.sh --report   re-render bench/results/latest.md, bench/plot.svg and the generated
#                           section of BENCHMARKS.md from bench/results/latest.json (with
#                           --tag NAME: bench/results/NAME.md from NAME.json, e.g. compare-HEAD_3)
#
# Each cell (one thread count): `kill -s USR1` → .json and `stackdump dump PID --format json`
# (its JSON read through a pipe), cold (first dump of a fresh process) and warm; the text
# `stackdump dump PID` warm; `stackdump inspect PID` cold (empty cache) and warm; eu-stack and
# gdb on the same target. The report starts with the goals of issue 18 (CLI ÷ eu-stack, cold ÷
# warm, inspect ÷ eu-stack, kernel view µs/thread, start-up of a preloaded /bin/true, VmRSS of
# a preloaded `sleep`) and, when a finished run was in latest.json, that run's headline numbers
# beside the new ones (it is kept as bench/results/previous.json).
#
# Needs: Linux, cargo, cc, python3 (standard library only), gdb; installs elfutils (eu-stack)
# with apt-get when missing. Builds the workspace in release and bench/target.c with
# `cc -O2 -g -pthread`. Copies libstackdump.so and the stackdump CLI into a private work
# directory first, so a concurrent rebuild of target/release cannot change them mid-run.
# Every target and tool is killed on exit (trap); gdb and eu-stack time out after 120 s.
#
# Outputs: bench/results/latest.json (raw), bench/results/latest.md (tables),
# bench/plot.svg (wall time and longest stop against thread count), and the section of
# BENCHMARKS.md between the bench:results markers.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
mode=full
extra=()
profile_n=
wait_quiet=
fp_only=
node_only=
compare_rev=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) mode=quick ;;
        --wait-quiet) wait_quiet=1 ;;
        --threads) extra+=(--threads ${2:?--threads "N..."} --cells-only); shift ;;
        --tag) extra+=(--tag "${2:?--tag NAME}"); shift ;;
        --report) mode=report ;;
        --profile) mode=profile; profile_n=${2:?--profile N}; shift ;;
        --fp) fp_only=1 ;;
        --node) node_only=1 ;;
        --watch) mode=watch ;;
        --floor) mode=floor ;;
        --compare) compare_rev=${2:?--compare REV}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "usage: bench/run.sh [--quick] [--threads \"N...\"] [--tag NAME] [--compare REV] [--wait-quiet]" >&2
           echo "       bench/run.sh --profile N | --fp | --node | --watch | --report [--tag NAME]" >&2; exit 2 ;;
    esac
    shift
done

if [ "$mode" = report ]; then
    exec python3 "$here/bench.py" --report-only --update-benchmarks "${extra[@]}" \
        --work /tmp --lib x --target x
fi

work=$(mktemp -d /tmp/stackdump-bench.XXXXXX)
bench_pid=
old_src=
cleanup() {
    if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
        kill -TERM "$bench_pid" 2>/dev/null || true   # bench.py kills its targets and tools
        wait "$bench_pid" 2>/dev/null || true
    fi
    if [ -n "$old_src" ]; then
        git -C "$root" worktree remove --force "$old_src" 2>/dev/null || true
        git -C "$root" worktree prune 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

need_apt=()
command -v eu-stack >/dev/null || need_apt+=(elfutils)
command -v perf >/dev/null || echo "bench: perf not found: the profile is skipped (apt-get install linux-perf)" >&2
command -v gdb >/dev/null || need_apt+=(gdb)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "bench: installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "${need_apt[@]}" >/dev/null 2>&1 || {
        apt-get update >/dev/null 2>&1 && apt-get install -y "${need_apt[@]}" >/dev/null
    }
fi

echo "bench: cargo build --release --workspace" >&2
build_note=
if ! (cd "$root" && cargo build --release --workspace --quiet); then
    # Others may be editing the tree right now: measure the last good build, and say so.
    if [ -f "$root/target/release/libstackdump.so" ]; then
        build_note="cargo build failed; measured the existing target/release artifacts"
        echo "bench: WARNING: $build_note" >&2
    else
        echo "bench: cargo build failed and there is no libstackdump.so to measure" >&2
        exit 1
    fi
fi
export BENCH_BUILD_NOTE="$build_note"
cp "$root/target/release/libstackdump.so" "$work/libstackdump.so"
cli_args=()
if [ -x "$root/target/release/stackdump" ]; then
    cp "$root/target/release/stackdump" "$work/stackdump"
    cli_args=(--cli "$work/stackdump")
fi
echo "bench: cc -O2 -g -pthread bench/target.c" >&2
cc -O2 -g -pthread -o "$work/target" "$here/target.c"
cc -O2 -g -pthread -fno-omit-frame-pointer -o "$work/target-fp" "$here/target.c"
cc -O2 -o "$work/runner" "$here/runner.c"

# --compare REV: build REV in a temporary worktree with its own target directory (seeded with
# a copy of this tree's compiled dependencies, so only the workspace's crates are rebuilt), and
# keep its libstackdump.so and stackdump beside ours; the worktree goes as soon as it is built.
compare_args=()
if [ -n "$compare_rev" ]; then
    old_sha=$(git -C "$root" rev-parse --verify --quiet "$compare_rev^{commit}") || {
        echo "bench: --compare: no such revision: $compare_rev" >&2; exit 2; }
    old_src="$work/old-src"
    echo "bench: --compare $compare_rev ($old_sha): git worktree add --detach $old_src" >&2
    git -C "$root" worktree add --quiet --detach "$old_src" "$old_sha"
    mkdir -p "$work/old-target/release" "$work/old"
    for d in deps build .fingerprint; do
        if [ -d "$root/target/release/$d" ]; then cp -a "$root/target/release/$d" "$work/old-target/release/"; fi
    done
    echo "bench: cargo build --release --workspace of $compare_rev (CARGO_TARGET_DIR=$work/old-target)" >&2
    (cd "$old_src" && CARGO_TARGET_DIR="$work/old-target" cargo build --release --workspace --quiet) || {
        echo "bench: cargo build of $compare_rev failed" >&2; exit 1; }
    cp "$work/old-target/release/libstackdump.so" "$work/old/libstackdump.so"
    compare_args=(--compare-rev "$compare_rev" --compare-git "$old_sha" --compare-lib "$work/old/libstackdump.so")
    if [ -x "$work/old-target/release/stackdump" ]; then
        cp "$work/old-target/release/stackdump" "$work/old/stackdump"
        compare_args+=(--compare-cli "$work/old/stackdump")
    fi
    git -C "$root" worktree remove --force "$old_src" && old_src=
    rm -rf "$work/old-target"
fi
if [ "$mode" = floor ]; then
    cc -O2 -pthread -o "$work/procfloor" "$here/procfloor.c"
    for n in 20 200 1000; do "$work/procfloor" "$n"; echo; done
    exit 0
fi
if [ "$mode" = watch ]; then
    cc -O2 -g -pthread -o "$work/watched" "$root/tests/targets/c/watched.c"
    exec python3 "$here/watch_cost.py" "$work/libstackdump.so" "$work/watched" --threads 1000 \
        --seconds 20 --out "$here/results/watch.json"
fi

# The large-binary case: a python3 that links libpython3.*.so dynamically (pyenv builds do).
py_args=()
for py in python3 /usr/bin/python3; do
    exe=$(command -v "$py" 2>/dev/null) || continue
    real=$(python3 -c 'import sys,subprocess; print(subprocess.run([sys.argv[1], "-c", "import sys; print(sys.executable)"], capture_output=True, text=True).stdout.strip())' "$exe" 2>/dev/null) || continue
    lp=$(ldd "$real" 2>/dev/null | awk '/libpython/ {print $3; exit}')
    if [ -n "$lp" ]; then
        py_args=(--python "$real" --libpython "$(readlink -f "$lp")")
        break
    fi
done

# Percent of CPU time busy over the next 3 seconds, all CPUs (from /proc/stat).
cpu_busy() {
    local a b
    read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ < /proc/stat
    sleep 3
    read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ < /proc/stat
    local total=$(( (b1+b2+b3+b4+b5+b6+b7+b8) - (a1+a2+a3+a4+a5+a6+a7+a8) ))
    local idle=$(( (b4+b5) - (a4+a5) ))
    echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
if [ -n "$wait_quiet" ]; then
    for i in $(seq 1 200); do
        busy=$(cpu_busy)
        [ "$busy" -lt 10 ] && break
        [ $((i % 10)) -eq 1 ] && echo "bench: CPUs ${busy}% busy; waiting for quiet (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    done
    echo "bench: CPUs ${busy}% busy when starting" >&2
    export BENCH_CPU_BUSY="$busy"
fi

quick=()
[ "$mode" = quick ] && quick=(--quick)
[ -n "$wait_quiet" ] && quick+=(--wait-quiet)
quick+=("${extra[@]}")
[ "$mode" = profile ] && quick=(--profile-only "$profile_n" --keep-perf)
[ -n "$fp_only" ] && quick=(--fp-only "${quick[@]}")
[ -n "$node_only" ] && quick=(--node-only "${quick[@]}")
echo "bench: load average $(cut -d' ' -f1-3 /proc/loadavg) before the run" >&2
python3 "$here/bench.py" "${quick[@]}" --work "$work" --lib "$work/libstackdump.so" \
    --target "$work/target" --target-fp "$work/target-fp" --runner "$work/runner" "${cli_args[@]}" "${py_args[@]}" \
    "${compare_args[@]}" --update-benchmarks &
bench_pid=$!
wait "$bench_pid"
rc=$?
bench_pid=
echo "bench: done (results in bench/results/, plot in bench/plot.svg)" >&2
exit $rc
