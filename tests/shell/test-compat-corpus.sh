#!/bin/bash
# test-compat-corpus.sh: scripts written for qemu-img and qemu-io
# (tests/compat/*.sh) run unchanged with fastqcow in their place. Each runs
# twice in an empty directory (the runs of all scripts a few at a time): with QEMU's tools, then with a directory on
# PATH whose qemu-img is `fastqcow` and whose qemu-io is `fastqcow io`;
# stdout and stderr together, and the exit status, must be the same byte
# for byte once what varies from run to run is filtered (timings and rates,
# program names, snapshot dates, PIDs and command lines in the shell's
# "Killed" lines, `info`'s disk size). Where fastqcow differs on purpose
# (docs/COMPATIBILITY.md, "The command lines of qemu-img and qemu-io"),
# the scripts do not print it.
# Usage: test-compat-corpus.sh [NAME...] (default: every script).
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
: "${TEST_SRCDIR:?TEST_SRCDIR must point at the tests}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
CORPUS=$(cd "$TEST_SRCDIR/compat" && pwd) || exit 1
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/compat.XXXXXX") || exit 1
[ -n "${KEEP:-}" ] && echo "keeping $T" || trap 'rm -rf "$T"' EXIT
# the shims exec the tool from another directory: an absolute path
case $FASTQCOW in
/*) FQ=$FASTQCOW ;;
*/*) FQ=$(cd "$(dirname "$FASTQCOW")" && pwd)/$(basename "$FASTQCOW") || exit 1 ;;
*) FQ=$(command -v "$FASTQCOW") || { echo "FAIL: no tool $FASTQCOW"; exit 1; } ;;
esac
[ -x "$FQ" ] || { echo "FAIL: $FQ is not executable"; exit 1; }
mkdir "$T/shim"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$FQ" >"$T/shim/qemu-img"
printf '#!/bin/sh\nexec "%s" io "$@"\n' "$FQ" >"$T/shim/qemu-io"
chmod +x "$T/shim/qemu-img" "$T/shim/qemu-io"
fail=0

norm() {
    sed -E -e 's/^([0-9.]+ (bytes|KiB|MiB|GiB|TiB)), [0-9]+ ops; .*/\1, N ops; TIMING/' \
        -e 's/^([0-9]+),([0-9]+),[0-9:.]+,[0-9.]+,[0-9.]+$/\1,\2,TIMING/' \
        -e 's/(qemu-io|qemu-img|fastqcow): /PROG: /g' \
        -e "s/Try '(qemu-img|fastqcow) --help'/Try 'PROG --help'/" \
        -e 's/line [0-9]+: +[0-9]+ ([A-Z][a-z]+( [a-z]+)*( \(core dumped\))?) .*/line N: PID \1/' \
        -e 's/^Run completed in [0-9.]+ seconds\./Run completed in TIMING seconds./' \
        -e 's/^disk size: .*/disk size: X/' -e 's/"actual-size": [0-9]+/"actual-size": X/' \
        -e 's/"date-(sec|nsec)": [0-9]+/"date-\1": X/' \
        -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}/DATE/' "$1"
}

names=("$@")
if [ ${#names[@]} = 0 ]; then
    k=0
    # a sanitizer run (FQ_TEST_QUICK) takes every other script, which half
    # alternating with FQ_TEST_SEED (default: the day number, printed)
    if [ -n "${FQ_TEST_QUICK:-}" ]; then
        seed=${FQ_TEST_SEED:-$(( $(date +%s) / 86400 ))}
        echo "sanitizer sample: FQ_TEST_SEED=$seed"
    fi
    for s in "$CORPUS"/*.sh; do
        k=$((k + 1))
        [ -n "${FQ_TEST_QUICK:-}" ] && [ $(((k + seed) % 2)) = 0 ] && continue
        names+=("$(basename "$s" .sh)")
    done
fi
# run NAME MODE: one run of a script, in a directory of its own
run() {
    local d=$T/$1.$2 p=$PATH
    mkdir -p "$d/tmp"
    [ "$2" = fastqcow ] && p=$T/shim:$PATH
    (cd "$d" && PATH=$p TMPDIR=$d/tmp bash "$CORPUS/$1.sh" >"$d.out" 2>&1; echo "exit=$?" >>"$d.out")
}
# every run, JOBS at a time (the machine's cores, at most 4): the runs are
# independent, and process start-up is most of their cost
jobs=$(nproc 2>/dev/null || echo 2)
[ "$jobs" -gt 4 ] && jobs=4
running=0
for n in "${names[@]}"; do
    [ -e "$CORPUS/$n.sh" ] || continue
    for mode in qemu fastqcow; do
        if [ $running -ge "$jobs" ]; then
            wait -n
            running=$((running - 1))
        fi
        run "$n" $mode &
        running=$((running + 1))
    done
done
wait
for n in "${names[@]}"; do
    [ -e "$CORPUS/$n.sh" ] || { echo "FAIL: no script $n"; fail=1; continue; }
    for mode in qemu fastqcow; do
        norm "$T/$n.$mode.out" >"$T/$n.$mode.norm"
    done
    if cmp -s "$T/$n.qemu.norm" "$T/$n.fastqcow.norm"; then
        echo "ok: $n"
    else
        echo "FAIL: $n: the output differs from qemu's tools' (< qemu, > fastqcow)"
        diff "$T/$n.qemu.norm" "$T/$n.fastqcow.norm" | head -40
        fail=1
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$T/$n.qemu" "$T/$n.fastqcow"
done
[ $fail = 0 ] && echo "PASS: compat corpus"
exit $fail
