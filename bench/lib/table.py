#!/usr/bin/env python3
"""bench/lib/table.py: medians, ratios, tables, CSV and gnuplot PNG from the
raw CSV that bench/seed-table, bench/random-table and bench/workers-sweep
write (one line per timed run; see bench/lib/common.sh).

    table.py seed    RAW OUTDIR [--size S --count N --runs N --medium disk|memory]
    table.py random  RAW OUTDIR [--medium disk|memory]
    table.py large   RAW OUTDIR [--size S --small S --runs N]
    table.py workers RAW OUTDIR
    table.py feature RAW OUTDIR [--size S --count N --runs N --csize S
                                 --cbytes B --zlib BYTES --zstd BYTES --strict 0|1]
    table.py mount   RAW OUTDIR [--nbd SERVER --time S --runs N]
      (--strict 1: exit 1 if any timed run failed)

Ratios are ratios of medians. Times: lower is better, so a ratio
fastqcow/qemu-img below 1 means fastqcow is faster. IOPS: higher is better.
SPDX-License-Identifier: MIT
"""
import csv
import os
import statistics
import subprocess
import sys
from collections import defaultdict


def load(path):
    """(table,row,mode,tool) -> field -> {run: value}; fields: seconds,
    user_s, sys_s, rss_kb, ops, cpu_s (user+sys), failed."""
    cells = defaultdict(lambda: defaultdict(dict))
    with open(path) as f:
        for r in csv.DictReader(f):
            key = (r["table"], r["row"], r["mode"], r["tool"])
            run = int(r["run"])
            for k in ("seconds", "user_s", "sys_s", "rss_kb", "ops"):
                if r[k] not in ("", "NA"):
                    cells[key][k][run] = float(r[k])
            if r["user_s"] not in ("", "NA") and r["sys_s"] not in ("", "NA"):
                cells[key]["cpu_s"][run] = float(r["user_s"]) + float(r["sys_s"])
            if r["seconds"] in ("", "NA"):
                cells[key]["failed"][run] = 1.0
            elif r["ops"] not in ("", "NA") and float(r["seconds"]) > 0:
                cells[key]["iops"][run] = float(r["ops"]) / float(r["seconds"])
    return cells


def med(cells, key, field="seconds"):
    v = list(cells.get(key, {}).get(field, {}).values())
    return statistics.median(v) if v else None


def mean(cells, key, field="cpu_s"):
    """Mean over runs: CPU times from /usr/bin/time have 10 ms steps, so
    their mean is finer than their median."""
    v = list(cells.get(key, {}).get(field, {}).values())
    return sum(v) / len(v) if v else None


def paired(cells, num, dens, field="seconds"):
    """Median over runs of num / min(dens) taken in the same run: the
    tools of one run ran seconds apart, so slow drifts of the machine
    cancel out. None when no run has all of them."""
    a = cells.get(num, {}).get(field, {})
    ds = [cells.get(d, {}).get(field, {}) for d in dens]
    v = []
    for run, x in a.items():
        den = [d[run] for d in ds if run in d and d[run] > 0]
        if den:
            v.append(x / min(den))
    return statistics.median(v) if v else None


def paired_list(cells, num, dens, field="seconds"):
    """The per-run ratios behind paired()."""
    a = cells.get(num, {}).get(field, {})
    ds = [cells.get(d, {}).get(field, {}) for d in dens]
    v = []
    for run, x in a.items():
        den = [d[run] for d in ds if run in d and d[run] > 0]
        if den:
            v.append(x / min(den))
    return v


def median_iqr(v):
    if not v:
        return None, None, None
    if len(v) < 2:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4)
    return statistics.median(v), q[0], q[2]


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt(v, nd=3):
    if v is None:
        return "-"
    return "%.*f" % (nd, v)


def print_table(headers, rows, title=None):
    w = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            w[i] = max(w[i], len(c))
    if title:
        print(title)
    line = "+" + "+".join("-" * (x + 2) for x in w) + "+"
    print(line)
    print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(headers)) + " |")
    print(line)
    for r in rows:
        print("| " + " | ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(r)) + " |")
    print(line)


def write_csv(path, headers, rows):
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(headers)
        for r in rows:
            wr.writerow(["" if c is None else (("%.6g" % c) if isinstance(c, float) else c) for c in r])


def gnuplot(script):
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return True
    except (OSError, subprocess.CalledProcessError) as e:
        print("gnuplot failed: %s" % getattr(e, "stderr", e), file=sys.stderr)
        return False


def verdict(ok):
    return "met" if ok else "NOT met"


# ---------------------------------------------------------------- seed table

LAYOUTS = ["seq", "reverse", "rand", "part-rand"]
SEED_TOOLS = [("serial", "fastqcow serial (--workers 1)"), ("fastqcow", "fastqcow"),
              ("qemu-n", "qemu-img -n"), ("qemu-uring", "qemu-img -i io_uring"),
              ("fio", "fio limit"), ("fio-b16", "fio b16")]


def seed(raw, out, opts):
    c = load(raw)
    rows, csvrows, checks = [], [], []
    data = {}
    for l in LAYOUTS:
        for mode in ("read", "write"):
            K = {tool: ("seed", l, mode, tool) for tool in ("serial", "fastqcow", "qemu-n", "qemu-uring")}
            lim = "seq" if l == "seq" else "frag"
            K["fio"] = ("seed", lim, mode, "fio")
            K["fio-b16"] = ("seed", "frag", mode, "fio-b16") if l != "seq" else None
            t = {tool: med(c, k) if k else None for tool, k in K.items()}
            cpu = {tool: mean(c, K[tool]) for tool in ("serial", "fastqcow", "qemu-n", "qemu-uring")}
            rss = {tool: med(c, K[tool], "rss_kb") for tool in ("serial", "fastqcow", "qemu-n", "qemu-uring")}
            qs = [(t[q], q) for q in ("qemu-n", "qemu-uring") if t[q] is not None]
            best_q, best_qn = min(qs) if qs else (None, None)
            # ratios: medians of the per-run ratios (see paired())
            r_q = paired(c, K["fastqcow"], [K["qemu-n"], K["qemu-uring"]])
            r_fio = paired(c, K["fastqcow"], [K["fio"]])
            r_b16 = paired(c, K["fastqcow"], [K["fio-b16"]]) if K["fio-b16"] else None
            r_sa = paired(c, K["serial"], [K["fastqcow"]])
            name = "t-%s%s" % (l, " -w" if mode == "write" else "")
            data[(l, mode)] = dict(t=t, cpu=cpu, rss=rss, r_q=r_q, r_fio=r_fio, r_sa=r_sa, best_qn=best_qn)
            rows.append([name] + [fmt(t[k]) for k, _ in SEED_TOOLS] +
                        [fmt(r_q, 2), fmt(r_fio, 2), fmt(r_b16, 2), fmt(r_sa, 2)])
            nfail = sum(len(c.get(k, {}).get("failed", {})) for k in K.values() if k)
            csvrows.append([l, mode] + [t[k] for k, _ in SEED_TOOLS] +
                           [best_qn, r_q, r_fio, r_b16, r_sa] +
                           [cpu[k] for k in ("serial", "fastqcow", "qemu-n", "qemu-uring")] +
                           [rss[k] for k in ("serial", "fastqcow", "qemu-n", "qemu-uring")] + [nfail])
    headers = ["file", "serial", "fastqcow", "qemu -n", "qemu uring", "fio", "fio b16",
               "fq/qemu", "fq/fio", "fq/b16", "serial/fq"]
    print_table(headers, rows,
                "Seed table: seconds for %s x 1 MiB requests, -d 1 -t none, %s images, median of %s runs"
                % (opts.get("count", "?"), opts.get("size", "?"), opts.get("runs", "?")))
    print("  serial = fastqcow --workers 1 (the seed's master); fastqcow = default workers (async);\n"
          "  qemu -n = qemu-img bench -n (linux-aio); qemu uring = -i io_uring;\n"
          "  fio = raw file, seq: 1 MiB depth 1; fragmented: 64 KiB random at 16 in flight;\n"
          "  fio b16 = the same, 16 submitted at once and all 16 reaped before the next batch;\n"
          "  fq/qemu = fastqcow / the faster qemu-img (lower is better); serial/fq = speed-up of async;\n"
          "  ratios are medians of per-run ratios (tools of one run ran seconds apart).")
    print()
    rrows = []
    for l in LAYOUTS:
        for mode in ("read", "write"):
            d = data[(l, mode)]
            rrows.append(["t-%s%s" % (l, " -w" if mode == "write" else "")] +
                         [fmt(d["cpu"][k], 2) for k in ("serial", "fastqcow", "qemu-n", "qemu-uring")] +
                         [fmt(d["rss"][k] / 1024 if d["rss"][k] else None, 1) for k in ("serial", "fastqcow", "qemu-n", "qemu-uring")])
    print_table(["file", "cpu serial", "cpu fq", "cpu qemu -n", "cpu qemu uring",
                 "rss serial", "rss fq", "rss qemu -n", "rss qemu uring"], rrows,
                "CPU (user+sys seconds, whole process, mean of runs) and peak RSS (MiB, median)")
    print()

    # gen vs qemu-io
    gen_fq = med(c, ("gen", "rand", "write", "fastqcow-gen"))
    gen_q = med(c, ("gen", "rand", "write", "qemu-io"))
    gens = {l: med(c, ("gen", l, "write", "fastqcow-gen")) for l in LAYOUTS}
    print("gen (incl. fsync): " + ", ".join("%s %s s" % (l, fmt(v, 2)) for l, v in gens.items()))
    if gen_q is not None:
        print("gen --layout rand: fastqcow %s s, qemu-img create + qemu-io (the seed's method) %s s: %sx faster"
              % (fmt(gen_fq, 2), fmt(gen_q, 2), fmt(ratio(gen_q, gen_fq), 1)))
    print()

    # pooled: every per-run ratio of the three fragmented images together
    # (3 x runs pairs), with the interquartile range: one image and five
    # runs cannot separate 20% on a noisy machine, fifteen pairs do better
    pooled = {}
    prow = []
    for mode in ("read", "write"):
        for name, num, dens, lims in (
                ("fastqcow / qemu-img", "fastqcow", ("qemu-n", "qemu-uring"), None),
                ("fastqcow / fio", "fastqcow", ("fio",), "frag"),
                ("fastqcow / fio b16", "fastqcow", ("fio-b16",), "frag"),
                ("qemu-img / fio b16", "qemu", ("fio-b16",), "frag"),
                ("serial / fastqcow", "serial", ("fastqcow",), None)):
            v = []
            for l in ("reverse", "rand", "part-rand"):
                if num == "qemu":
                    # the faster qemu-img of each run over the limit
                    qa = c.get(("seed", l, mode, "qemu-n"), {}).get("seconds", {})
                    qb = c.get(("seed", l, mode, "qemu-uring"), {}).get("seconds", {})
                    lim = c.get(("seed", lims, mode, dens[0]), {}).get("seconds", {})
                    v += [min(qa[r], qb[r]) / lim[r] for r in qa if r in qb and lim.get(r)]
                    continue
                dk = [("seed", lims, mode, d) if lims else ("seed", l, mode, d) for d in dens]
                v += paired_list(c, ("seed", l, mode, num), dk)
            m, lo, hi = median_iqr(v)
            pooled[(mode, name)] = m
            prow.append(["fragmented %s: %s" % (mode, name), fmt(m, 2),
                         "%s-%s" % (fmt(lo, 2), fmt(hi, 2)), str(len(v))])
    print_table(["pooled over reverse, rand, part-rand", "median", "IQR", "pairs"], prow,
                "Fragmented images pooled (per-run ratios of all three images together)")
    print()

    # the targets
    def chk(label, value, op, limit, note=""):
        if value is None:
            checks.append([label, "-", "%s %s" % (op, limit), "no data"])
            return
        ok = value <= limit if op == "<=" else value >= limit
        checks.append([label, fmt(value, 2), "%s %s" % (op, limit), verdict(ok) + note])

    for l in ("reverse", "rand", "part-rand"):
        d = data[(l, "read")]
        chk("t-%s read: fastqcow / qemu-img" % l, d["r_q"], "<=", 0.8)
        chk("t-%s read: fastqcow / fio" % l, d["r_fio"], "<=", 1.15)
    chk("fragmented reads pooled: fastqcow / qemu-img", pooled[("read", "fastqcow / qemu-img")], "<=", 0.8)
    chk("fragmented reads pooled: fastqcow / fio", pooled[("read", "fastqcow / fio")], "<=", 1.15)
    for mode in ("read", "write"):
        d = data[("seq", mode)]
        chk("t-seq %s: fastqcow / qemu-img" % mode, d["r_q"], "<=", 1.0)
        chk("t-seq %s: fastqcow / fio" % mode, d["r_fio"], "<=", 1.1)
    for l in LAYOUTS:
        chk("t-%s -w: fastqcow / qemu-img" % l, data[(l, "write")]["r_q"], "<=", 0.9)
    chk("fragmented writes pooled: fastqcow / qemu-img", pooled[("write", "fastqcow / qemu-img")], "<=", 0.9)
    chk("t-rand read: serial / async", data[("rand", "read")]["r_sa"], ">=", 1.8)
    if gen_q is not None:
        chk("gen rand: qemu-io / fastqcow gen", ratio(gen_q, gen_fq), ">=", 5)
    for l in LAYOUTS:
        for mode in ("read", "write"):
            d = data[(l, mode)]
            qc = [d["cpu"][q] for q in ("qemu-n", "qemu-uring") if d["cpu"][q] is not None]
            qr = [d["rss"][q] for q in ("qemu-n", "qemu-uring") if d["rss"][q] is not None]
            chk("t-%s%s: CPU fastqcow / qemu-img" % (l, " -w" if mode == "write" else ""),
                ratio(d["cpu"]["fastqcow"], min(qc) if qc else None), "<=", 1.0)
            chk("t-%s%s: RSS fastqcow / qemu-img" % (l, " -w" if mode == "write" else ""),
                ratio(d["rss"]["fastqcow"], min(qr) if qr else None), "<=", 1.0)
    print_table(["target", "measured", "goal", "verdict"], checks, "Targets of the issue (seed table)")

    hdr = ["image", "mode"] + ["%s_s" % k for k, _ in SEED_TOOLS] + \
          ["best_qemu", "fq_over_qemu", "fq_over_fio", "fq_over_fio_b16", "serial_over_fq"] + \
          ["cpu_s_%s" % k for k in ("serial", "fastqcow", "qemu-n", "qemu-uring")] + \
          ["rss_kb_%s" % k for k in ("serial", "fastqcow", "qemu-n", "qemu-uring")] + ["failed_runs"]
    csvp = os.path.join(out, "seed-table.csv")
    write_csv(csvp, hdr, csvrows)
    write_csv(os.path.join(out, "seed-targets.csv"), ["target", "measured", "goal", "verdict"], checks)
    write_csv(os.path.join(out, "seed-pooled.csv"), ["ratio", "median", "iqr", "pairs"], prow)
    if gen_q is not None:
        write_csv(os.path.join(out, "gen.csv"), ["layout", "tool", "seconds"],
                  [[l, "fastqcow gen", gens[l]] for l in LAYOUTS] + [["rand", "qemu-img create + qemu-io", gen_q]])

    # the PNG: clustered bars, seconds per file and tool
    dat = os.path.join(out, "seed-table.dat")
    with open(dat, "w") as f:
        f.write("file " + " ".join('"%s"' % n for _, n in SEED_TOOLS) + "\n")
        for l in LAYOUTS:
            for mode in ("read", "write"):
                t = data[(l, mode)]["t"]
                f.write('"%s" ' % ("t-%s%s" % (l, " -w" if mode == "write" else "")) +
                        " ".join(fmt(t[k]) if t[k] is not None else "0" for k, _ in SEED_TOOLS) + "\n")
    png = os.path.join(out, "seed-table.png")
    ok = gnuplot("""
set terminal pngcairo noenhanced size 1280,640 font ',10'
set output '%s'
set title 'Seed table: %s x 1 MiB requests, -d 1 -t none, %s images, median of %s runs (lower is better)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel 'seconds'
set xtics rotate by -30
set key top left
set grid ytics
plot for [i=2:7] '%s' using i:xtic(1) title columnheader(i)
""" % (png, opts.get("count", "?"), opts.get("size", "?"), opts.get("runs", "?"), dat))
    print("\nCSV: %s\nPNG: %s" % (csvp, png if ok else "(gnuplot failed)"))


# -------------------------------------------------------------- random table

def random_table(raw, out, opts):
    c = load(raw)
    keys = sorted({(k[1], k[2]) for k in c if k[0] == "random"},
                  key=lambda x: (int(x[0].split("-")[0].rstrip("k")), int(x[0].split("-d")[1]), x[1]))
    rows, csvrows, checks = [], [], []
    for row, mode in keys:
        iops, cpu_us = {}, {}
        for tool in ("fastqcow", "fio", "qemu-strided"):
            k = ("random", row, mode, tool)
            iops[tool] = med(c, k, "iops")
            ops, cs = med(c, k, "ops"), mean(c, k, "cpu_s")
            cpu_us[tool] = cs / ops * 1e6 if cs is not None and ops else None
        # IOPS ratios: medians of the per-run ratios
        r_fio = paired(c, ("random", row, mode, "fastqcow"), [("random", row, mode, "fio")], "iops")
        r_q = paired(c, ("random", row, mode, "fastqcow"), [("random", row, mode, "qemu-strided")], "iops")
        bs, depth = row.split("-d")
        rows.append(["%s %s d%s" % ("rand" + mode, bs, depth)] +
                    [fmt(iops[t], 0) for t in ("fastqcow", "fio", "qemu-strided")] +
                    [fmt(r_fio, 2), fmt(r_q, 2)] +
                    [fmt(cpu_us[t], 1) for t in ("fastqcow", "fio", "qemu-strided")])
        csvrows.append([mode, bs, int(depth)] + [iops[t] for t in ("fastqcow", "fio", "qemu-strided")] +
                       [r_fio, r_q] + [cpu_us[t] for t in ("fastqcow", "fio", "qemu-strided")])
        if bs == "4k" and depth == "32":
            checks.append(["rand%s 4k d32: fastqcow / fio IOPS" % mode, fmt(r_fio, 2), ">= 0.95",
                           verdict(r_fio is not None and r_fio >= 0.95)])
            checks.append(["rand%s 4k d32: fastqcow / qemu-img strided IOPS" % mode, fmt(r_q, 2), ">= 1.0",
                           verdict(r_q is not None and r_q >= 1.0)])
    print_table(["workload", "fastqcow", "fio", "qemu strided", "fq/fio", "fq/qemu",
                 "cpu us/req fq", "fio", "qemu"], rows,
                "Random I/O on a fully allocated image (IOPS, median of runs; higher is better)")
    print("  fastqcow = fastqcow bench --random -n -t none; fio = raw file, io_uring, direct, norandommap;\n"
          "  qemu strided = qemu-img bench -n -t none -S <golden-ratio step> (its closest mode to random);\n"
          "  cpu us/req = (user+sys) of the whole process (mean of runs) / requests;\n"
          "  ratios are medians of per-run ratios.")
    print()
    if checks:
        print_table(["target", "measured", "goal", "verdict"], checks, "Targets of the issue (random table)")
    csvp = os.path.join(out, "random-table.csv")
    write_csv(csvp, ["mode", "bs", "depth", "iops_fastqcow", "iops_fio", "iops_qemu_strided",
                     "fq_over_fio", "fq_over_qemu", "cpu_us_fastqcow", "cpu_us_fio", "cpu_us_qemu"], csvrows)
    write_csv(os.path.join(out, "random-targets.csv"), ["target", "measured", "goal", "verdict"], checks)
    dat = os.path.join(out, "random-table.dat")
    with open(dat, "w") as f:
        f.write('workload "fastqcow" "fio" "qemu-img strided"\n')
        for r in csvrows:
            f.write('"%s %s d%d" %s\n' % ("rand" + r[0], r[1], r[2],
                                          " ".join(fmt(v, 0) if v else "0" for v in r[3:6])))
    png = os.path.join(out, "random-table.png")
    ok = gnuplot("""
set terminal pngcairo noenhanced size 1100,560 font ',10'
set output '%s'
set title 'Random I/O, fully allocated image, -t none (IOPS, higher is better)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set ylabel 'IOPS'
set xtics rotate by -30
set key top right
set grid ytics
plot for [i=2:4] '%s' using i:xtic(1) title columnheader(i)
""" % (png, dat))
    print("\nCSV: %s\nPNG: %s" % (csvp, png if ok else "(gnuplot failed)"))


# -------------------------------------------------------------- large table

LARGE_TOOLS = (("fastqcow", "fastqcow"), ("qemu", "qemu-img"), ("fastqcow-full", "fastqcow full"),
               ("qemu-full", "qemu-img full"), ("fastqcow-warm", "fastqcow warm"),
               ("small", "small image"))


def large(raw, out, opts):
    c = load(raw)
    rows_k = sorted({(k[1], k[2]) for k in c if k[0] == "large"},
                    key=lambda x: (x[0].split("-")[0], int(x[0].split("-")[1].rstrip("k")),
                                   int(x[0].split("-d")[1]), x[1]))
    rows, csvrows, checks = [], [], []
    for row, mode in rows_k:
        K = {t: ("large", row, mode, t) for t, _ in LARGE_TOOLS}
        iops = {t: med(c, K[t], "iops") for t, _ in LARGE_TOOLS}
        # time ratios = inverse IOPS ratios, medians of per-run ratios
        r_q = paired(c, K["fastqcow"], [K["qemu"]])
        r_qf = paired(c, K["fastqcow-full"], [K["qemu-full"]])
        r_small = paired(c, K["small"], [K["fastqcow-warm"]])   # time small / time warm
        pat, bs, d = row.split("-")
        name = "%s %s%s %s" % (pat, "read" if mode == "read" else "write", "", bs + " " + d)
        rows.append([name] + [fmt(iops[t], 0) for t, _ in LARGE_TOOLS] +
                    [fmt(r_q, 2), fmt(r_qf, 2), fmt(r_small, 2)])
        csvrows.append([pat, mode, bs, d] + [iops[t] for t, _ in LARGE_TOOLS] + [r_q, r_qf, r_small])
        if bs == "4k" and d == "d32":
            if mode == "read":
                checks.append(["%s reads 4k d32, cold cache: fastqcow / qemu-img time" % pat,
                               fmt(r_q, 2), "<= 0.8", verdict(r_q is not None and r_q <= 0.8)])
            else:
                checks.append(["%s writes 4k d32, cold cache: fastqcow / qemu-img time" % pat,
                               fmt(r_q, 2), "<= 1.0", verdict(r_q is not None and r_q <= 1.0)])
        if d == "d32" and r_small is not None:
            checks.append(["%s %s %s d32, a warm cache holding all: IOPS / small image's" % (pat, mode, bs),
                           fmt(r_small, 2), ">= 0.9", verdict(r_small >= 0.9)])
    print_table(["workload"] + [n for _, n in LARGE_TOOLS] + ["fq/qemu time", "full: fq/qemu", "warm/small IOPS"],
                rows, "Image larger than the cache (%s; small %s): IOPS, median of %s runs, cold cache"
                % (opts.get("size", "?"), opts.get("small", "?"), opts.get("runs", "?")))
    print("  fastqcow / qemu-img: default caches (L2 32 MiB); full: an L2 cache holding every table,\n"
          "  cold; warm: full, every table read before timing (small image: the same);\n"
          "  scattered: a golden-ratio step (bench/random-table), strided: evenly spread;\n"
          "  time ratios and warm/small are medians of per-run ratios (lower time is better).")
    print()
    if checks:
        print_table(["target", "measured", "goal", "verdict"], checks, "Targets of the issue (large table)")
    csvp = os.path.join(out, "large-table.csv")
    write_csv(csvp, ["pattern", "mode", "bs", "depth"] + ["iops_" + t for t, _ in LARGE_TOOLS] +
              ["fq_over_qemu", "full_fq_over_qemu", "warm_iops_over_small"], csvrows)
    write_csv(os.path.join(out, "large-targets.csv"), ["target", "measured", "goal", "verdict"], checks)
    print("\nCSV: %s" % csvp)


# ------------------------------------------------------------ workers sweep

def workers(raw, out, opts):
    c = load(raw)
    keys = sorted({(k[1], k[2], k[3]) for k in c if k[0] == "workers"})
    rows, csvrows = [], []
    order = lambda t: (0, int(t[1:])) if t.startswith("w") and t[1:].isdigit() else (1, t)
    for row, mode in sorted({(k[0], k[1]) for k in keys}):
        tools = sorted({k[2] for k in keys if k[0] == row and k[1] == mode}, key=order)
        base = med(c, ("workers", row, mode, "w1"))
        # the fastest fixed depth (by median): what the adaptive one is held to
        fixed = [t for t in tools if t.startswith("w") and t[1:].isdigit()
                 and med(c, ("workers", row, mode, t)) is not None]
        best = min(fixed, key=lambda t: med(c, ("workers", row, mode, t))) if fixed else None
        for tool in tools:
            k = ("workers", row, mode, tool)
            s, cpu, rss = med(c, k), mean(c, k, "cpu_s"), med(c, k, "rss_kb")
            b16 = paired(c, k, [("workers", row, mode, "fio-b16")])
            vb = paired(c, k, [("workers", row, mode, best)]) if best else None
            rows.append(["%s %s" % (row, mode), tool, fmt(s), fmt(ratio(base, s), 2), fmt(b16, 2),
                         fmt(vb, 2), fmt(cpu, 3), fmt(rss / 1024 if rss else None, 1)])
            csvrows.append([row, mode, tool, s, ratio(base, s), b16, vb, cpu, rss])
        if best:
            print("%s %s: the fastest fixed depth is %s" % (row, mode, best))
    print_table(["image", "config", "seconds", "x vs w1", "/ fio-b16", "/ best fixed", "cpu s",
                 "rss MiB"], rows,
                "Workers and engines (1 MiB requests, -d 1 -t none; median of runs;\n"
                "/ fio-b16 = median of per-run ratios to the disk's limit for 16 pieces at once;\n"
                "/ best fixed = the same against the fastest --workers N; auto = no --workers,\n"
                "the depth the controller measures)")
    csvp = os.path.join(out, "workers.csv")
    write_csv(csvp, ["image", "mode", "config", "seconds", "speedup_vs_w1", "over_fio_b16",
                     "over_best_fixed", "cpu_s", "rss_kb"], csvrows)
    print("\nCSV: %s" % csvp)

# ------------------------------------------------- overlay and compressed

FEATURE_ROWS = [("overlay", "read"), ("overlay", "write"), ("zlib", "read"), ("zstd", "read")]
FEATURE_TOOLS = [("serial", "fastqcow serial (--workers 1)"), ("fastqcow", "fastqcow"),
                 ("qemu-n", "qemu-img -n"), ("qemu-uring", "qemu-img -i io_uring"),
                 ("fio", "fio limit"), ("fio-b16", "fio b16"),
                 ("cpu1", "decompress 1 thread"), ("cpu2", "decompress 2 threads")]
FQ_TOOLS = ("serial", "fastqcow", "qemu-n", "qemu-uring")


def feature(raw, out, opts):
    c = load(raw)
    rows, csvrows, rrows, each = [], [], [], []
    present = [(r, m) for r, m in FEATURE_ROWS if ("feature", r, m, "fastqcow") in c]
    for r, m in present:
        K = {t: ("feature", r, m, t) for t, _ in FEATURE_TOOLS}
        t = {k: med(c, K[k]) for k, _ in FEATURE_TOOLS}
        cpu = {k: mean(c, K[k]) for k in FQ_TOOLS}
        rss = {k: med(c, K[k], "rss_kb") for k in FQ_TOOLS}
        r_q = paired(c, K["fastqcow"], [K["qemu-n"], K["qemu-uring"]])
        r_b16 = paired(c, K["fastqcow"], [K["fio-b16"]])
        r_c2 = paired(c, K["fastqcow"], [K["cpu2"]])
        r_sa = paired(c, K["serial"], [K["fastqcow"]])
        r_qn = paired(c, K["fastqcow"], [K["qemu-n"]])
        r_qu = paired(c, K["fastqcow"], [K["qemu-uring"]])
        r_nu = paired(c, K["qemu-n"], [K["qemu-uring"]])
        name = "t-%s%s" % (r, " -w" if m == "write" else "")
        each.append([name, fmt(r_qn, 2), fmt(r_qu, 2), fmt(r_nu, 2)])
        nfail = sum(len(c.get(k, {}).get("failed", {})) for k in K.values())
        rows.append([name] + [fmt(t[k]) for k, _ in FEATURE_TOOLS] +
                    [fmt(r_q, 2), fmt(r_b16, 2), fmt(r_c2, 2), fmt(r_sa, 2)])
        rrows.append([name] + [fmt(cpu[k], 2) for k in FQ_TOOLS] +
                     [fmt(rss[k] / 1024 if rss[k] else None, 1) for k in FQ_TOOLS])
        csvrows.append([r, m] + [t[k] for k, _ in FEATURE_TOOLS] + [r_q, r_b16, r_c2, r_sa, r_qn, r_qu, r_nu] +
                       [cpu[k] for k in FQ_TOOLS] + [rss[k] for k in FQ_TOOLS] + [nfail])
    print_table(["file", "serial", "fastqcow", "qemu -n", "qemu uring", "fio", "fio b16",
                 "decomp 1t", "decomp 2t", "fq/qemu", "fq/b16", "fq/decomp2t", "serial/fq"], rows,
                "Overlay and compressed images: seconds for %s x 1 MiB requests, -d 1 -t none, "
                "median of %s runs" % (opts.get("count", "?"), opts.get("runs", "?")))
    cb = float(opts.get("cbytes", 0) or 0)
    comp = ", ".join("%s %.0f%%" % (k, 100.0 * float(opts[k]) / cb)
                     for k in ("zlib", "zstd") if cb and float(opts.get(k, 0) or 0))
    print("  t-overlay = %s overlay, a shuffled half of its clusters written, over the rand image;\n"
          "  t-zlib / t-zstd = qemu-img convert -c of %s of mixed data (file size / data: %s);\n"
          "  fio / fio b16 = the disk's limit for 16 scattered 64 KiB pieces (as in the seed table);\n"
          "  decomp 1t / 2t = the same compressed clusters decompressed from memory by 1 / 2 threads;\n"
          "  fq/qemu = fastqcow / the faster qemu-img; ratios are medians of per-run ratios."
          % (opts.get("size", "?"), opts.get("csize", "?"), comp or "-"))
    print()
    print_table(["file", "fq / qemu-img -n", "fq / qemu-img io_uring", "qemu -n / qemu io_uring"], each,
                "fastqcow against each qemu-img engine (medians of per-run ratios; the last column,\n"
                "two engines of one program, shows how far apart two runs of alike tools fall here)")
    print()
    print_table(["file", "cpu serial", "cpu fq", "cpu qemu -n", "cpu qemu uring",
                 "rss serial", "rss fq", "rss qemu -n", "rss qemu uring"], rrows,
                "CPU (user+sys seconds, whole process, mean of runs) and peak RSS (MiB, median)")
    hdr = ["image", "mode"] + ["%s_s" % k for k, _ in FEATURE_TOOLS] + \
          ["fq_over_qemu", "fq_over_fio_b16", "fq_over_decomp2", "serial_over_fq",
           "fq_over_qemu_n", "fq_over_qemu_uring", "qemu_n_over_qemu_uring"] + \
          ["cpu_s_%s" % k for k in FQ_TOOLS] + ["rss_kb_%s" % k for k in FQ_TOOLS] + ["failed_runs"]
    csvp = os.path.join(out, "feature-table.csv")
    write_csv(csvp, hdr, csvrows)
    dat = os.path.join(out, "feature-table.dat")
    with open(dat, "w") as f:
        f.write("file " + " ".join('"%s"' % n for _, n in FEATURE_TOOLS) + "\n")
        for row, cr in zip(rows, csvrows):
            f.write('"%s" ' % row[0] + " ".join(fmt(v) if v is not None else "0"
                                                 for v in cr[2:2 + len(FEATURE_TOOLS)]) + "\n")
    png = os.path.join(out, "feature-table.png")
    ok = gnuplot("""
set terminal pngcairo noenhanced size 1100,560 font ',10'
set output '%s'
set title 'Overlay and compressed images: %s x 1 MiB requests, -d 1 -t none (seconds, lower is better)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set ylabel 'seconds'
set key top left
set grid ytics
plot for [i=2:%d] '%s' using i:xtic(1) title columnheader(i)
""" % (png, opts.get("count", "?"), len(FEATURE_TOOLS) + 1, dat))
    print("\nCSV: %s\nPNG: %s" % (csvp, png if ok else "(gnuplot failed)"))
    return sum(r[-1] for r in csvrows)


# ------------------------------------------------------------ mount table

MOUNT_TOOLS = [("fastqcow", "fastqcow mount"), ("qsd", "qemu-storage-daemon"),
               ("nbdfuse", "nbdfuse"), ("disk", "disk (raw file)")]


def mount_table(raw, out, opts):
    """bench/mount-table: IOPS (4 KiB) or MiB/s (1 MiB) per tool, ratios of
    fastqcow to the other exports (medians of per-run ratios), and the
    server's CPU per request (mean of runs; user_s holds it)."""
    c = load(raw)
    order = ["randread-4k-d1", "randread-4k-d32", "randwrite-4k-d1", "randwrite-4k-d32",
             "read-1M-d1", "write-1M-d1"]
    rows_seen = {k[1] for k in c if k[0] == "mount"}
    rows, csvrows, checks = [], [], []
    for row in [r for r in order if r in rows_seen] + sorted(rows_seen - set(order)):
        mode = row.split("-")[0]
        big = "-1M-" in row
        scale = (1.0 / 1.0) if not big else 1.0   # 1 MiB requests: IOPS = MiB/s
        k = {t: ("mount", row, mode, t) for t, _ in MOUNT_TOOLS}
        iops = {t: med(c, k[t], "iops") for t, _ in MOUNT_TOOLS}
        cpu_us = {}
        for t, _ in MOUNT_TOOLS:
            cs, ops = mean(c, k[t], "cpu_s"), med(c, k[t], "ops")
            cpu_us[t] = cs / ops * 1e6 if cs is not None and ops and t != "disk" else None
        r_q = paired(c, k["fastqcow"], [k["qsd"]], "iops")
        r_n = paired(c, k["fastqcow"], [k["nbdfuse"]], "iops")
        r_d = paired(c, k["fastqcow"], [k["disk"]], "iops")
        unit = "MiB/s" if big else "IOPS"
        rows.append(["%s (%s)" % (row, unit)] + [fmt(iops[t] and iops[t] * scale, 0) for t, _ in MOUNT_TOOLS] +
                    [fmt(r_q, 2), fmt(r_n, 2), fmt(r_d, 2)] +
                    [fmt(cpu_us[t], 1) for t, _ in MOUNT_TOOLS[:3]])
        csvrows.append([row, unit] + [iops[t] for t, _ in MOUNT_TOOLS] + [r_q, r_n, r_d] +
                       [cpu_us[t] for t, _ in MOUNT_TOOLS[:3]])
        if row.endswith("-4k-d32"):
            checks.append(["%s: fastqcow / qsd IOPS" % row, fmt(r_q, 2), ">= 2.0",
                           verdict(r_q is not None and r_q >= 2.0)])
        if big:
            checks.append(["%s: fastqcow / qsd MiB/s" % row, fmt(r_q, 2), ">= 1.0",
                           verdict(r_q is not None and r_q >= 1.0)])
    print_table(["workload", "fastqcow", "qsd", "nbdfuse", "disk", "fq/qsd", "fq/nbdfuse", "fq/disk",
                 "cpu us/req fq", "qsd", "nbdfuse"], rows,
                "FUSE export, fio libaio O_DIRECT on the served file (median of %s runs of %s s)"
                % (opts.get("runs", "?"), opts.get("time", "?")))
    print("  fastqcow = fastqcow mount -t none; qsd = qemu-storage-daemon --export type=fuse\n"
          "  (cache.direct=on, aio=io_uring); nbdfuse = nbdfuse over %s on a Unix socket;\n"
          "  disk = fio on a raw file of the same size. Ratios: medians of per-run ratios.\n"
          "  cpu us/req = the server's user+sys (all threads; nbdfuse: with its NBD server)\n"
          "  per request, mean of runs." % opts.get("nbd", "an NBD server"))
    print()
    if checks:
        print_table(["target", "measured", "goal", "verdict"], checks, "Targets of the issue (mount table)")
    csvp = os.path.join(out, "mount-table.csv")
    write_csv(csvp, ["workload", "unit"] + ["%s" % t for t, _ in MOUNT_TOOLS] +
              ["fq_over_qsd", "fq_over_nbdfuse", "fq_over_disk", "cpu_us_fastqcow", "cpu_us_qsd",
               "cpu_us_nbdfuse"], csvrows)
    write_csv(os.path.join(out, "mount-targets.csv"), ["target", "measured", "goal", "verdict"], checks)
    print("\nCSV: %s" % csvp)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    kind, raw, out = sys.argv[1:4]
    opts = {}
    a = sys.argv[4:]
    for i in range(0, len(a) - 1, 2):
        opts[a[i].lstrip("-")] = a[i + 1]
    failed = {"seed": seed, "random": random_table, "workers": workers, "feature": feature,
              "mount": mount_table, "large": large}[kind](raw, out, opts)
    if kind == "feature" and failed and opts.get("strict") == "1":
        sys.exit("%d timed runs failed (see the FAILED lines above)" % failed)


if __name__ == "__main__":
    main()
