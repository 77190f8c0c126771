#!/usr/bin/env python3
"""The module dependency graph of the core (`src/`): who imports whom, and the loops.

    scripts/modgraph.py            one node per folder of src/ (a pipeline stage; a file at the
                                   top of src/ is its own node)
    scripts/modgraph.py --files    one node per module file

An edge `a -> b` means code of `a` names `crate::b...` (a `use` or a path), outside comments
and outside `#[cfg(test)]` modules; edges that only tests use are listed apart. Loops are the
strongly connected components of more than one node. A stage imports only the stages before
it (LAYERS; `limits` and `escape` are for everyone): an import of a later stage is listed as
"upward". Exit status 1 when there is a loop or an upward import.
"""
import os
import re
import sys

LAYERS = ["model", "kernel", "stack", "python", "analysis", "output", "outside"]
ANYONE = {"limits", "escape"}

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
FILES = "--files" in sys.argv


def module_of(rel):
    """`kernel/signals/arch.rs` -> ['kernel', 'signals', 'arch']; `python/mod.rs` -> ['python']."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


modules = {}
for dirpath, _, names in os.walk(SRC):
    for n in names:
        if n.endswith(".rs"):
            rel = os.path.relpath(os.path.join(dirpath, n), SRC)
            if rel != "lib.rs":
                modules[tuple(module_of(rel))] = rel


def node(parts):
    """The graph node of a module path: its folder (stage), or the file (--files)."""
    parts = list(parts)
    # Longest prefix that is a module.
    while parts and tuple(parts) not in modules:
        parts.pop()
    if not parts:
        return None
    if FILES:
        # A file inside a module's own folder (signals/arch.rs) belongs to that module.
        rel = modules[tuple(parts)]
        return rel[:-3].replace("/mod", "") if rel.endswith("/mod.rs") else rel[:-3]
    return parts[0]


PATH = re.compile(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)")
GROUP = re.compile(r"use crate::\{([^;]*)\}", re.S)

edges, test_edges = set(), set()
for parts, rel in modules.items():
    me = node(parts)
    text = open(os.path.join(SRC, rel)).read()
    lines = text.split("\n")
    in_test = False
    code, tests = [], []
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("#[cfg(test)]"):
            in_test = True
        if s.startswith("//"):
            continue
        (tests if in_test else code).append(line)
    for bucket, out in ((code, edges), (tests, test_edges)):
        joined = "\n".join(bucket)
        refs = [m.group(1).split("::") for m in PATH.finditer(joined)]
        for g in GROUP.finditer(joined):
            for item in re.split(r",(?![^{]*\})", g.group(1)):
                item = item.strip().split(" as ")[0]
                if item:
                    refs.append(re.split(r"::|\{", item)[0:1] + [
                        p for p in re.split(r"::", item)[1:] if p and "{" not in p
                    ])
        for r in refs:
            other = node(r)
            if other and other != me:
                out.add((me, other))
test_edges -= edges

nodes = sorted({node(p) for p in modules})
print("# module dependency graph of src/ (%s)" % ("files" if FILES else "stages"))
for a in nodes:
    deps = sorted(b for (x, b) in edges if x == a)
    tdeps = sorted(b for (x, b) in test_edges if x == a)
    line = "%-22s -> %s" % (a, ", ".join(deps) if deps else "(nothing)")
    if tdeps:
        line += "   [tests only: %s]" % ", ".join(tdeps)
    print(line)

# Strongly connected components (Tarjan).
index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for (x, w) in sorted(edges):
        if x != v:
            continue
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted(comp))


for v in nodes:
    if v not in index:
        visit(v)
for c in sccs:
    print("loop: " + " <-> ".join(c))


def stage(n):
    return n.split("/")[0]


upward = sorted(
    (a, b)
    for (a, b) in edges
    if stage(b) not in ANYONE
    and stage(a) in LAYERS
    and stage(b) in LAYERS
    and LAYERS.index(stage(b)) > LAYERS.index(stage(a))
)
for a, b in upward:
    print("upward: %s -> %s" % (a, b))
if sccs or upward:
    sys.exit(1)
print("no loops, no upward imports (%s)" % " <- ".join(LAYERS))
