#!/usr/bin/env python3
"""Consistency of a fast-waking Python thread: python3 bench/python-nap.py PYTHON N dump|inspect

Dumps stacks.py nap N times (preloaded for dump) with target/release (or $BIN) and counts, among the
dumps that found the napper asleep, those consistent, those that said it ran, and silently wrong ones.
See docs/PYSPY.md."""
import json, os, subprocess, sys, tempfile
py, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
bin = os.environ.get("BIN", root + "/target/release")
lines = open(f"{root}/tests/targets/python/stacks.py").read().splitlines()
nap_line = next(i + 1 for i, l in enumerate(lines) if "# @nap" in l and "@nap_after" not in l)
d = tempfile.mkdtemp()
env = dict(os.environ, STACKDUMP_DIR=d)
if mode == "dump":
    env["LD_PRELOAD"] = f"{bin}/libstackdump.so"
p = subprocess.Popen([py, f"{root}/tests/targets/python/stacks.py", "nap"], env=env, stdout=subprocess.PIPE, text=True)
p.stdout.readline()
asleep = said = bad = other = 0
try:
    for i in range(n):
        cmd = [f"{bin}/stackdump", mode, str(p.pid), "--format", "json"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        doc = json.loads(out.stdout)
        th = [t for t in doc["threads"] if (t.get("python") or {}).get("name") == "napper"]
        if not th:
            other += 1; continue
        t = th[0]
        sc = t.get("syscall") or {}
        name = sc.get("name") if isinstance(sc, dict) else None
        if name not in ("clock_nanosleep", "select", "pselect6", "nanosleep") or t.get("signalled"):
            other += 1; continue
        if any(e.startswith(f"thread {t['tid']} ran while its Python frames") for e in doc.get("errors", [])):
            said += 1; continue
        asleep += 1
        pyf = [f for f in t["frames"] if f.get("python")] or (t["python"].get("frames") or [])
        f0 = pyf[0] if pyf else {}
        if (f0.get("function"), f0.get("line")) != ("nap_loop", nap_line):
            bad += 1
finally:
    p.kill(); p.wait()
print(f"{os.environ.get('TAG','')} {py} {mode}: {n} dumps, asleep-consistent {asleep - bad}, said-ran {said}, inconsistent {bad}, running/other {other}")
