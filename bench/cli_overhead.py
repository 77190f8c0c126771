#!/usr/bin/env python3
"""What `stackdump dump PID` adds on top of the library's own dump time.

  bench/cli_overhead.py [--cli target/release/stackdump[,OTHER...]] [--lib target/release/libstackdump.so]
                        [--target /tmp/t] [--threads 20,200,1000] [--runs 15] [--dir /dev/shm]

For each thread count, starts bench/target.c (built with `cc -O2 -g -pthread -o T
bench/target.c`, depth 20) preloaded, then runs `stackdump dump PID --format json >/dev/null`
and `stackdump dump PID --format text >/dev/null` RUNS times each (alternating), and prints the
median wall time of each, the median of the library's `capture.duration_us` (read from the
JSON file of the same dump) and the median of their difference per run: the CLI's overhead
(inspecting the target, triggering, waiting past the end of the capture, the library writing
the files, reading, checking and printing them, and the CLI's exit).

Several CLIs (comma-separated, e.g. a copy of the previous build and this one) are run in turn
against the same targets, so they see the same machine load. The dump directory is created
under --dir: on tmpfs (the default, /dev/shm) the library's fsyncs cost nothing, so the
difference is the CLI's, not the disk's.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import tempfile
import time


def run_once(cli, pid, fmt, ddir):  # -> (wall ms, library ms)
    for f in glob.glob(os.path.join(ddir, "*")):
        os.unlink(f)
    t0 = time.perf_counter()
    r = subprocess.run(
        [cli, "dump", str(pid), "--format", fmt],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wall = (time.perf_counter() - t0) * 1000
    if r.returncode != 0:
        raise SystemExit(f"stackdump dump failed: {r.stderr.decode(errors='replace')}")
    # With --format text the CLI may be done before the library has written the JSON file.
    until = time.monotonic() + 5
    while not (files := glob.glob(os.path.join(ddir, "stackdump-*.json"))) and time.monotonic() < until:
        time.sleep(0.001)
    if len(files) != 1:
        raise SystemExit(f"expected one JSON dump in {ddir}, found {files}")
    with open(files[0], "rb") as f:
        lib = json.load(f)["capture"]["duration_us"] / 1000
    return wall, lib


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    release = os.path.join(here, "..", "target", "release")
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=os.path.join(release, "stackdump"))
    ap.add_argument("--lib", default=os.path.join(release, "libstackdump.so"))
    ap.add_argument("--target", default="/tmp/t")
    ap.add_argument("--threads", default="20,200,1000")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--dir", default="/dev/shm")
    a = ap.parse_args()
    clis = a.cli.split(",")
    print("| CLI | threads | format | wall ms | library ms | CLI overhead ms |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for n in [int(x) for x in a.threads.split(",")]:
        with tempfile.TemporaryDirectory(dir=a.dir) as ddir:
            env = dict(os.environ, LD_PRELOAD=os.path.abspath(a.lib), STACKDUMP_DIR=ddir)
            p = subprocess.Popen([a.target, str(n), "20"], stdout=subprocess.PIPE, env=env, text=True)
            try:
                line = p.stdout.readline()
                if not line.startswith("READY"):
                    raise SystemExit(f"target: {line!r}")
                pid = int(line.split()[1])
                # Warm up (the library's first dump loads symbols).
                for cli in clis:
                    for fmt in ("json", "text"):
                        run_once(cli, pid, fmt, ddir)
                res = {(cli, fmt): [] for cli in clis for fmt in ("json", "text")}
                for _ in range(a.runs):
                    for cli in clis:
                        for fmt in ("json", "text"):
                            res[(cli, fmt)].append(run_once(cli, pid, fmt, ddir))
                            time.sleep(0.02)
                for cli in clis:
                    for fmt in ("json", "text"):
                        r = res[(cli, fmt)]
                        walls = [w for w, _ in r]
                        libs = [l for _, l in r]
                        over = [w - l for w, l in r]
                        print(
                            f"| {cli} | {n} | {fmt} | {statistics.median(walls):.1f} | "
                            f"{statistics.median(libs):.1f} | {statistics.median(over):.1f} |",
                            flush=True,
                        )
            finally:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
