#!/usr/bin/env python3
"""check_layers.py - the data path runs one way: every #include in src/ points to the same layer or
a lower one, and no chain of includes comes back to where it started.

    check_layers.py [SRC_DIR]      (default: the src/ beside this script)
    check_layers.py --self-test    shows it catches an upward include and a cycle in a small tree

The layers, lowest first (see ../shared/DESIGN.md and the README's layout section):

    base        context, errors, logging, options, pool, strings, files, clock
    ir | comm   the graph IR and its op registry | communication (side by side: neither includes the other)
    kernels     CPU and CUDA kernels (may use comm: the operator-sharding collectives)
    partition   Graph + Plan -> one Program per rank
    planner     clusters, cost model, search, simulator (costs sharding by asking the partition layer)
    runtime     sessions: executes Programs

Generated and public headers (whale.h, wh_config.h, whale.pb-c.h) belong to no layer. Prints each
violation and each cycle with the include lines that make it; exit status 1 if there is any."""
import os
import re
import sys

RANK = {"base": 0, "ir": 1, "comm": 1, "kernels": 2, "partition": 3, "planner": 4, "runtime": 5}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
EXTS = (".c", ".h", ".cu", ".cuh", ".def")


def layer_of(src, path):
    rel = os.path.relpath(path, src)
    top = rel.split(os.sep)[0]
    return top if top in RANK else None


def self_test():
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        def put(rel, text):
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            open(os.path.join(d, rel), "w").write(text)
        put("base/a.h", '#include "whale.h"\n')
        put("ir/b.h", '#include "../base/a.h"\n')
        put("runtime/c.c", '#include "../ir/b.h"\n#include "../base/a.h"\n')
        run = lambda: subprocess.run([sys.executable, __file__, d], capture_output=True, text=True)
        clean = run()
        put("ir/b.c", '#include "../runtime/d.h"\n')             # upward
        put("runtime/d.h", '#include "e.h"\n')
        put("runtime/e.h", '#include "d.h"\n')                   # a cycle
        dirty = run()
    ok = (clean.returncode == 0 and dirty.returncode == 1 and "ir/ includes runtime/d.h" in dirty.stdout
          and "include cycle" in dirty.stdout)
    print(clean.stdout + dirty.stdout)
    print("self-test:", "ok" if ok else "FAILED")
    return 0 if ok else 1


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "src"))
    files = []
    for d, _, names in os.walk(src):
        files += [os.path.join(d, n) for n in sorted(names) if n.endswith(EXTS)]
    unknown = [f for f in files if layer_of(src, f) is None]
    edges = {}
    bad = []
    for f in files:
        text = open(f, errors="replace").read()
        mine = layer_of(src, f)
        edges[f] = []
        for m in INCLUDE.finditer(text):
            target = os.path.normpath(os.path.join(os.path.dirname(f), m.group(1)))
            if not os.path.exists(target):
                continue  # whale.h, wh_config.h, generated protobuf headers
            edges[f].append(target)
            theirs = layer_of(src, target)
            line = text.count("\n", 0, m.start()) + 1
            where = f"{os.path.relpath(f, src)}:{line}"
            if theirs is None or mine is None:
                continue
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                bad.append(f"{where}: {mine}/ includes {os.path.relpath(target, src)} ({theirs}/ is "
                           f"{'beside' if RANK[theirs] == RANK[mine] else 'above'} it)")
    # cycles among files (a header including itself through others)
    cycles, state, stack = [], {}, []

    def visit(f):
        state[f] = 1
        stack.append(f)
        for t in edges.get(f, []):
            if state.get(t) == 1:
                cyc = stack[stack.index(t):] + [t]
                cycles.append(" -> ".join(os.path.relpath(x, src) for x in cyc))
            elif t in edges and not state.get(t):
                visit(t)
        stack.pop()
        state[f] = 2

    for f in files:
        if not state.get(f):
            visit(f)
    for u in unknown:
        bad.append(f"{os.path.relpath(u, src)}: in no layer (folders: {', '.join(RANK)})")
    n_inc = sum(len(v) for v in edges.values())
    for b in bad:
        print("layer violation:", b)
    for c in cycles:
        print("include cycle:", c)
    print(f"layers: {len(files)} files, {n_inc} includes inside src/, {len(bad)} violations, {len(cycles)} cycles")
    return 1 if bad or cycles else 0


if __name__ == "__main__":
    sys.exit(main())
