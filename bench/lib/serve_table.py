#!/usr/bin/env python3
"""bench/lib/serve_table.py: the table of bench/serve-table from its raw
CSV (one line per cell and run, see bench/lib/common.sh; user_s holds the
server's CPU seconds over the workload, ops the I/Os done, or MiB copied
for nbdcopy rows).

    serve_table.py RAW OUTDIR

Per row: the median IOPS (fio) or seconds (nbdcopy) of each server, the
server's CPU per request in microseconds (per MiB for nbdcopy), and the
medians over runs of the per-run ratios fastqcow / qemu-uring and
fastqcow / qemu-native (IOPS: higher is better; time and CPU: lower is
better). Writes OUTDIR/serve-table.csv as well.
SPDX-License-Identifier: MIT
"""
import csv
import os
import statistics
import sys
from collections import defaultdict

TOOLS = ("fastqcow", "qemu-uring", "qemu-native")


def load(path):
    """row -> tool -> run -> (seconds, cpu_s, ops); failed runs left out."""
    cells = defaultdict(lambda: defaultdict(dict))
    modes = set()
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["seconds"] in ("", "NA"):
                continue
            modes.add(r["mode"])
            cells[r["row"]][r["tool"]][int(r["run"])] = (
                float(r["seconds"]), float(r["user_s"]), float(r["ops"]))
    return cells, modes


def metric(row, v):
    """(main figure, cpu per unit): IOPS and us/request for fio rows,
    seconds and ms/GiB for nbdcopy rows."""
    secs, cpu, ops = v
    if "nbdcopy" in row:
        return secs, cpu * 1000.0 / (ops / 1024.0)
    return ops / secs, cpu * 1e6 / ops


def fmt(x, nd=0):
    return "-" if x is None else ("%.*f" % (nd, x))


def main():
    raw, out = sys.argv[1], sys.argv[2]
    cells, modes = load(raw)
    lines = []
    mode = "/".join(sorted(modes)) or "?"
    lines.append("Images %s. fio rows: IOPS (higher is better) and server CPU per request (us);"
                 " nbdcopy rows: seconds and server CPU per GiB (ms). Ratios: medians of per-run"
                 " ratios fastqcow/qemu (IOPS: >1 is better; time, CPU: <1 is better)." % mode)
    lines.append("")
    lines.append("| row | fastqcow | qemu-uring | qemu-native | fq/q-uring | fq/q-native |"
                 " cpu fq | cpu q-uring | cpu q-native | cpu fq/q-uring |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    rows_csv = []
    for row in sorted(cells, key=lambda r: (r.split("-")[0], "nbdcopy" in r, r)):
        per = cells[row]
        med, cpu = {}, {}
        for t in TOOLS:
            vals = [metric(row, v) for v in per.get(t, {}).values()]
            med[t] = statistics.median(m for m, _ in vals) if vals else None
            cpu[t] = statistics.median(c for _, c in vals) if vals else None
        ratios, cpu_ratio = {}, None
        for q in ("qemu-uring", "qemu-native"):
            rr = []
            for run, v in per.get("fastqcow", {}).items():
                if run in per.get(q, {}):
                    rr.append(metric(row, v)[0] / metric(row, per[q][run])[0])
            ratios[q] = statistics.median(rr) if rr else None
        cr = []
        for run, v in per.get("fastqcow", {}).items():
            if run in per.get("qemu-uring", {}):
                q = metric(row, per["qemu-uring"][run])[1]
                if q > 0:
                    cr.append(metric(row, v)[1] / q)
        cpu_ratio = statistics.median(cr) if cr else None
        nd = 1 if "nbdcopy" in row else 0
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row, fmt(med["fastqcow"], nd), fmt(med["qemu-uring"], nd), fmt(med["qemu-native"], nd),
            fmt(ratios["qemu-uring"], 2), fmt(ratios["qemu-native"], 2),
            fmt(cpu["fastqcow"], 1), fmt(cpu["qemu-uring"], 1), fmt(cpu["qemu-native"], 1),
            fmt(cpu_ratio, 2)))
        rows_csv.append([row, med["fastqcow"], med["qemu-uring"], med["qemu-native"],
                         ratios["qemu-uring"], ratios["qemu-native"], cpu["fastqcow"],
                         cpu["qemu-uring"], cpu["qemu-native"], cpu_ratio])
    print("\n".join(lines))
    with open(os.path.join(out, "serve-table.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "fastqcow", "qemu_uring", "qemu_native", "ratio_uring", "ratio_native",
                    "cpu_fastqcow", "cpu_qemu_uring", "cpu_qemu_native", "cpu_ratio_uring"])
        w.writerows(rows_csv)


if __name__ == "__main__":
    main()
