#!/usr/bin/env python3
"""Print each crate's module graph (who refers to whom through `crate::`) and fail on a circle.

Usage: python3 tools/module-circles.py [CRATE_DIR ...]   (default: every crate under adapters/)

A module "refers to" another when its code outside `#[cfg(test)]` names `crate::<module>`,
directly or inside a `use crate::{...}` group; comments and doc links do not count. Flat
crates only (`src/*.rs`), which is what the adapters are. Run by `.ci/run`.
"""
import os
import re
import sys


def graph(crate):
    src = os.path.join(crate, "src")
    mods = [f[:-3] for f in os.listdir(src) if f.endswith(".rs") and f not in ("lib.rs", "main.rs")]
    edges = {}
    for m in mods:
        with open(os.path.join(src, f"{m}.rs")) as f:
            code = f.read().split("#[cfg(test)]")[0]
        code = "\n".join(l for l in code.split("\n") if not l.strip().startswith("//"))
        deps = set(re.findall(r"crate::(\w+)", code))
        for group in re.findall(r"use crate::\{([^;]*)\};", code, re.S):
            flat = " " + group.replace("\n", " ")
            deps |= set(re.findall(r"[,{\s](\w+)::", flat))
            deps |= set(re.findall(r"(?:^|,)\s*(\w+)\s*(?=,|$)", flat))
        edges[m] = sorted(d for d in deps if d in mods and d != m)
    return edges


def circles(edges):
    def reaches(a, b, seen):
        for n in edges.get(a, []):
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                if reaches(n, b, seen):
                    return True
        return False

    return sorted(m for m in edges if reaches(m, m, set()))


def main():
    crates = sys.argv[1:] or sorted(
        os.path.join("adapters", d) for d in os.listdir("adapters")
        if os.path.isdir(os.path.join("adapters", d, "src")))
    bad = False
    for crate in crates:
        edges = graph(crate)
        print(crate)
        for m in sorted(edges):
            print(f"  {m} -> {', '.join(edges[m]) or '-'}")
        c = circles(edges)
        if c:
            bad = True
            print(f"  CIRCLE through: {', '.join(c)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
