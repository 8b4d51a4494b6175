#!/usr/bin/env python3
"""Prints each top-level module's imports of sibling modules (`crate::x` paths, test code and
comments left out) for the crates given, and any import cycle; exits 1 when there is one.

    scripts/module-graph.py crates/raft crates/node crates/operator

A module's files are its `x.rs` and everything under `x/`. Binaries (`bin/`, `main.rs`) are
not modules of the library and are left out.
"""
import glob
import os
import re
import sys


def graph(crate: str) -> dict:
    src_dir = os.path.join(crate, "src")
    mods: dict = {}
    for path in glob.glob(os.path.join(src_dir, "**", "*.rs"), recursive=True):
        rel = os.path.relpath(path, src_dir)
        if rel.startswith("bin/") or rel in ("main.rs", "lib.rs") or rel.endswith("tests.rs") \
                or "/tests/" in rel:
            continue
        top = rel.split("/")[0].removesuffix(".rs")
        text = open(path).read()
        text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)
        text = "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))
        deps = set(re.findall(r"crate::([a-z_]+)", text)) - {top}
        mods.setdefault(top, set()).update(deps)
    return {m: {d for d in deps if d in mods} for m, deps in mods.items()}


def cycles(mods: dict) -> list:
    found, state = [], {}

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for d in sorted(mods[m]):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m, [])
    return found


def main() -> int:
    bad = False
    for crate in sys.argv[1:] or ["crates/raft", "crates/node", "crates/operator"]:
        mods = graph(crate)
        print(f"== {crate}")
        for m in sorted(mods):
            print(f"  {m} -> {', '.join(sorted(mods[m])) or '(nothing)'}")
        found = cycles(mods)
        for c in found:
            print("  CYCLE: " + " -> ".join(c))
        bad |= bool(found)
        print(f"  {'cycles: ' + str(len(found)) if found else 'no cycles'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
