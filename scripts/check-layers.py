#!/usr/bin/env python3
"""check-layers.py: the source tree's layering rules, checked.

1. Includes: every `#include "..."` of a file may only name a header of its
   own layer or of a layer below it (table ALLOWED). Lower layers never
   include a higher layer's header; drivers include only the driver
   interface (src/include) and their own folder; the tools only the public
   header.
2. Symbols (with --objects DIR, the build's object files): no object of a
   lower layer references a function defined in a higher layer, save the
   registry array `fq_drivers` (the one list through which the core finds
   drivers without naming one), and within the qcow2 driver the metadata
   cache never calls the refcount module.

Exit 0 when every rule holds, 1 with one line per violation otherwise.
Usage: scripts/check-layers.py [--objects BUILD_DIR]
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# tier of a source or header file, by its path relative to ROOT
def tier_of(path):
    p = path.replace(os.sep, "/")
    if p.startswith("include/"):
        return "public"
    if p.startswith("src/include/"):
        return "interface"
    m = re.match(r"src/(engine|core|api|testdev|crypto)/", p)
    if m:
        return m.group(1)
    m = re.match(r"src/drivers/([^/]+)/", p)
    if m:
        return "driver:" + m.group(1)
    if p.startswith("src/drivers/"):
        return "registry"
    if p.startswith("tools/"):
        return "tools"
    if p.startswith("examples/"):
        return "examples"
    return None

# what each tier may include ("driver:self" = its own driver folder)
ALLOWED = {
    "public": {"public"},
    "interface": {"public", "interface", "build"},
    "engine": {"public", "interface", "engine", "build"},
    "crypto": {"public", "interface", "crypto", "build"},
    "core": {"public", "interface", "engine", "core", "build"},
    "driver": {"public", "interface", "driver:self", "build"},
    "registry": {"public", "interface"},
    "testdev": {"public", "interface", "testdev"},
    "api": {"public", "interface", "core", "api", "build"},
    "tools": {"public", "tools", "build"},
    "examples": {"public"},
}

# rank of each tier for symbol references (a lower rank never calls a higher)
RANK = {"util": 0, "crypto": 0, "engine": 1, "core": 2, "driver": 3, "registry": 3, "testdev": 3, "api": 4}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def resolve(src, name):
    """The tier of header `name` included from `src` (relative path)."""
    here = os.path.dirname(src)
    if os.path.exists(os.path.join(ROOT, here, name)):
        return tier_of(os.path.normpath(os.path.join(here, name)))
    if name == "fastqcow.h":
        return "public"
    if name == "config.h":
        return "build"
    if os.path.exists(os.path.join(ROOT, "src/include", name)):
        return "interface"
    if os.path.exists(os.path.join(ROOT, "src", name)):
        return tier_of(os.path.join("src", name))
    return "unknown"


def check_includes():
    bad = []
    for top in ("include", "src", "tools", "examples"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if not f.endswith((".c", ".h")):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
                t = tier_of(rel)
                if t is None:
                    continue
                base = t.split(":")[0]
                allowed = ALLOWED[base]
                with open(os.path.join(ROOT, rel), errors="replace") as fh:
                    text = fh.read()
                for name in INCLUDE.findall(text):
                    tt = resolve(rel, name)
                    ok = tt in allowed or (tt == t and "driver:self" in allowed)
                    if not ok:
                        bad.append(f"{rel}: includes \"{name}\" ({tt}), not allowed for {t}")
    return bad


def obj_tier(objname):
    # meson names objects after their source: src_core_ctx.c.o
    m = re.match(r"src_(engine|core|api|testdev|crypto)_(.*)\.c\.o$", objname)
    if m:
        return "util" if m.group(1) == "core" and m.group(2) == "util" else m.group(1)
    if re.match(r"src_drivers_registry\.c\.o$", objname):
        return "registry"
    m = re.match(r"src_drivers_([^_]+)_(.*)\.c\.o$", objname)
    if m:
        return "driver:" + m.group(1) + ":" + m.group(2)
    return None


def nm(path):
    out = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
    defined, undef = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDRB":
            defined.add(parts[2])
        elif len(parts) == 2 and parts[0] == "U":
            undef.add(parts[1])
    return defined, undef


def check_symbols(build):
    objs = {}
    for dirpath, _, files in os.walk(build):
        if "libfastqcow_internal.a.p" not in dirpath and "libfastqcow_testdev.a.p" not in dirpath:
            continue
        for f in files:
            t = obj_tier(f)
            if t:
                objs[f] = (t, *nm(os.path.join(dirpath, f)))
    if not objs:
        return ["no object files found under " + build]
    owner = {}
    for f, (t, defined, _) in objs.items():
        for s in defined:
            owner[s] = (f, t)
    bad = []
    for f, (t, _, undef) in objs.items():
        for s in sorted(undef):
            if s not in owner:
                continue
            of, ot = owner[s]
            if of == f:
                continue
            rank_t, rank_o = RANK[t.split(":")[0]], RANK[ot.split(":")[0]]
            if rank_o > rank_t and s != "fq_drivers":
                bad.append(f"{f} ({t}) calls {s} of {of} ({ot}): a lower layer calls a higher one")
            if t.startswith("driver:") and ot.startswith("driver:") and \
                    t.split(":")[1] != ot.split(":")[1]:
                bad.append(f"{f} ({t}) calls {s} of another driver ({of})")
            if t == "driver:qcow2:cache" and ot == "driver:qcow2:refcount":
                bad.append(f"{f} calls {s} of {of}: the cache must not call the refcount module")
    return bad


def main():
    bad = check_includes()
    if len(sys.argv) == 3 and sys.argv[1] == "--objects":
        bad += check_symbols(sys.argv[2])
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
