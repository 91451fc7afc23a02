#!/usr/bin/env python3
"""Fails when the top-level modules of src/ import each other in a circle.

A module is a file src/<name>.rs or a directory src/<name>/. An edge a -> b is any
`crate::b` path in a's files (use lines and inline paths, comments excluded). Prints the
graph, and every cycle found (exit 1), so a circle cannot come back unnoticed.
Usage: .ci/module-cycles.py [SRC_DIR]   (default: src)
"""
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "src"
ROOTS = {"main", "lib"}  # the crate roots declare every module; they are not part of the graph


def module_of(path):
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


edges = {}
for dirpath, _, files in os.walk(src):
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(dirpath, name)
        module = module_of(path)
        if module in ROOTS:
            continue
        text = strip_comments(open(path, encoding="utf-8").read())
        targets = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        # `use crate::{a, b::c}` groups
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            targets.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
        edges.setdefault(module, set()).update(t for t in targets if t != module)

modules = sorted(set(edges) | {t for ts in edges.values() for t in ts})
for m in modules:
    print(f"{m:12} -> {', '.join(sorted(edges.get(m, ()))) or '-'}")

# Strongly connected components (Tarjan): any with more than one module is a circle.
index, low, stack, on_stack, sccs = {}, {}, [], set(), []
counter = [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges.get(v, ())):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            scc.append(w)
            if w == v:
                break
        sccs.append(sorted(scc))


sys.setrecursionlimit(10000)
for m in modules:
    if m not in index:
        visit(m)
circles = [s for s in sccs if len(s) > 1]
if circles:
    for c in circles:
        print("circle: " + " <-> ".join(c), file=sys.stderr)
    sys.exit(1)
print(f"{len(modules)} modules, no circles")
