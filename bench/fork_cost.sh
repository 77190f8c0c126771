#!/bin/sh
# The cost of the fork handler (dumper/src/fork.rs) on fork-heavy hosts: a shell running
# /bin/true 2,000 times (bash: fork + exec), and a C program forking 2,000 children without exec.
# Each is timed RUNS times without the preload, with LIB_BEFORE (a library without the fork
# handler, optional) and with LIB (this tree's); prints the median wall time of each and the
# ratios. Usage: bench/fork_cost.sh [LIB] [LIB_BEFORE]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
LIB=${1:-$here/../target/release/libstackdump.so}
BEFORE=${2:-}
RUNS=${RUNS:-7}
N=${N:-2000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/forkloop" "$here/forkloop.c"
export STACKDUMP_DIR="$tmp"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
run() { # label preload cmd...
    label=$1; pre=$2; shift 2
    for i in $(seq "$RUNS"); do
        s=$(date +%s%N)
        if [ -n "$pre" ]; then LD_PRELOAD="$pre" "$@"; else "$@"; fi
        e=$(date +%s%N)
        echo $(( (e - s) / 1000 ))
    done | median > "$tmp/$label"
    printf '%-28s %10.1f ms  (%.1f us per fork)\n' "$label" "$(echo "$(cat "$tmp/$label") / 1000" | bc -l)" "$(echo "$(cat "$tmp/$label") / $N" | bc -l)"
}
for host in shell forkloop; do
    if [ $host = shell ]; then set -- bash -c "i=0; while [ \$i -lt $N ]; do /bin/true; i=\$((i+1)); done"; else set -- "$tmp/forkloop" "$N"; fi
    run "$host-none" "" "$@"
    [ -n "$BEFORE" ] && run "$host-before" "$BEFORE" "$@"
    run "$host-preload" "$LIB" "$@"
    none=$(cat "$tmp/$host-none"); with=$(cat "$tmp/$host-preload")
    printf '%-28s x%.2f vs none' "$host ratio" "$(echo "$with / $none" | bc -l)"
    [ -n "$BEFORE" ] && printf ', x%.2f vs before' "$(echo "$with / $(cat "$tmp/$host-before")" | bc -l)"
    echo
done
