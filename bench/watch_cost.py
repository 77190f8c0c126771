#!/usr/bin/env python3
"""The watchdog's cost and speed (STACKDUMP_WATCH), measured on tests/targets/c/watched.c.

  bench/watch_cost.py LIB WATCHED [--threads 1000] [--seconds 30] [--out FILE.json]

For THREADS idle threads (every kind of idle wait), preloaded with STACKDUMP_WATCH=4s
(a sampling period of 1 s) and, as the baseline, without the watchdog:
  - the dump thread's CPU time (its schedstat run time) over SECONDS once the first
    classification is done, per sample, and what that costs at the default period of a
    60 s watch (15 s) and at the longest period (15 s for any STACKDUMP_WATCH >= 60s), in % of
    one CPU;
  - the dump thread's resident memory cost (VmRSS with the watchdog minus without);
  - the time from a hang (a thread starts writing into a pipe nobody reads: the target's
    STUCK-WRITE line, printed once it is asleep) to the watchdog's dump file, 5 times.
Prints a Markdown table; writes the raw numbers as JSON with --out.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def tids(pid):
    return os.listdir(f"/proc/{pid}/task")


def dump_thread(pid):
    for t in tids(pid):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                if f.read().strip() == "stackdump":
                    return t
        except OSError:
            pass
    raise SystemExit(f"pid {pid} has no stackdump thread: is the library loaded?")


def run_ns(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def spawn(lib, watched, threads, env_extra, dump_dir):
    env = dict(os.environ, LD_PRELOAD=lib, STACKDUMP_DIR=dump_dir, **env_extra)
    p = subprocess.Popen([watched, str(threads)], stdout=subprocess.PIPE, env=env, text=True)
    line = p.stdout.readline()
    if not line.startswith("READY"):
        p.kill()
        raise SystemExit(f"watched did not start: {line!r}")
    return p


def cost(lib, watched, threads, seconds, watch):
    with tempfile.TemporaryDirectory() as d:
        env = {"STACKDUMP_WATCH": watch} if watch else {}
        p = spawn(lib, watched, threads, env, d)
        try:
            tid = dump_thread(p.pid)
            # Past the first classification (4 s watch + 1 s period) and the start-up checks.
            time.sleep(6)
            a, t0 = run_ns(p.pid, tid), time.monotonic()
            time.sleep(seconds)
            b, t1 = run_ns(p.pid, tid), time.monotonic()
            return {"cpu_ns": b - a, "wall_s": t1 - t0, "rss_kib": rss_kib(p.pid),
                    "dumps": len([f for f in os.listdir(d) if f.endswith(".json")])}
        finally:
            p.kill()
            p.wait()


def hang_to_dump(lib, watched, threads):
    with tempfile.TemporaryDirectory() as d:
        p = spawn(lib, watched, threads, {"STACKDUMP_WATCH": "4s"}, d)
        try:
            os.kill(p.pid, signal.SIGUSR2)
            line = p.stdout.readline()
            hung = time.time()
            if not line.startswith("STUCK-WRITE"):
                raise SystemExit(f"no STUCK-WRITE line: {line!r}")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                files = [f for f in os.listdir(d) if f.endswith(".json")]
                if files:
                    return os.stat(os.path.join(d, files[0])).st_mtime - hung
                time.sleep(0.005)
            raise SystemExit("no watchdog dump within 60 s")
        finally:
            p.kill()
            p.wait()


def machine():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("watched")
    ap.add_argument("--threads", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--out")
    a = ap.parse_args()

    off = cost(a.lib, a.watched, a.threads, a.seconds, None)
    on = cost(a.lib, a.watched, a.threads, a.seconds, "4s")
    period = 1.0  # STACKDUMP_WATCH=4s
    samples = on["wall_s"] / period
    per_sample_us = max(0, on["cpu_ns"] - off["cpu_ns"] * on["wall_s"] / off["wall_s"]) / samples / 1e3
    at_15s = per_sample_us / 15e6 * 100
    hangs = [hang_to_dump(a.lib, a.watched, a.threads) for _ in range(5)]
    raw = {"threads": a.threads, "off": off, "on": on, "per_sample_us": per_sample_us,
           "cpu_percent_at_15s_period": at_15s, "hang_to_dump_s": hangs,
           "machine": machine()}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(raw, f, indent=1)
    print(f"| watchdog, {a.threads} idle threads ({raw['machine']}) | |")
    print("|---|---|")
    print(f"| dump thread CPU per sample (1 pread per thread) | {per_sample_us:.0f} µs |")
    print(f"| at the default period (15 s, any STACKDUMP_WATCH >= 60s) | {at_15s:.4f} % of one CPU |")
    print(f"| at a 1 s period (STACKDUMP_WATCH=4s) | {per_sample_us / 1e6 * 100:.3f} % of one CPU |")
    print(f"| RSS with / without the watchdog | {on['rss_kib']} / {off['rss_kib']} KiB |")
    print(f"| dumps written while idle ({a.seconds:.0f} s) | {on['dumps']} |")
    print(f"| hang → dump, STACKDUMP_WATCH=4s (median of 5; min, max) | "
          f"{statistics.median(hangs):.2f} s ({min(hangs):.2f}, {max(hangs):.2f}) |")


if __name__ == "__main__":
    sys.exit(main())
