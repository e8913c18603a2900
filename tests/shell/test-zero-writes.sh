#!/bin/bash
# test-zero-writes.sh: zero writes and discards leave the image as qemu-io
# leaves it. Each case builds the same image twice (qemu-img create, then
# qemu-io for the starting state: building rather than copying keeps the
# host file's holes identical), runs the same command sequence with
# qemu-io on one and `fastqcow io` on the other, and compares, byte for
# byte: exit codes, command output (timings and program names filtered),
# `qemu-img map --output=json` and `qemu-img check` of both images.
#
# Covered: write -z with and without -u; partial zero writes whose rest of
# the cluster (subcluster) reads as zeros (unallocated, zero flag, over an
# empty, zeroed or short backing file) or not (data here or in the backing
# file); whole zeroed clusters over data (host kept without -u); discard
# (whole clusters only, L2 tables made writable); compat 0.10 with and
# without a backing file; extended L2 (2 MiB and 64 KiB clusters: zero
# subclusters keep their host cluster, compressed clusters written as
# zeros); preallocated images; a shared (snapshot) cluster; partial last
# clusters; writes into zero clusters that kept their host cluster.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/zero-writes.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
n=0

norm() {
    sed -E -e 's/^([0-9.]+ (bytes|KiB|MiB|GiB)), ([0-9]+) ops; .*/\1, \3 ops; TIMING/' \
        -e 's/^(qemu-io|fastqcow): //' -e 's/[qf]\.img/IMG/g' "$1"
}

# args CMDS: "a; b; c" as -c a -c b -c c in the array A.
args() {
    local IFS=';' c
    A=()
    for c in $1; do
        c=${c# }
        [ -n "$c" ] && A+=(-c "$c")
    done
}

# zc NAME SIZE CREATE-OPTS BACKING SETUP CMDS
# BACKING: "" none, "-" an empty one, else the qemu-io commands that fill
# it. SETUP may end with "; SNAP" to take a snapshot of the start state.
zc() {
    local name=$1 size=$2 opts=$3 back=$4 setup=$5 cmds=$6 i snap=0 bopt=()
    n=$((n + 1))
    rm -f b.img q.img f.img
    if [ -n "$back" ]; then
        qemu-img create -q -f qcow2 b.img "$size" || { echo "FAIL: $name: backing"; fail=1; return; }
        if [ "$back" != - ]; then
            args "$back"
            qemu-io "${A[@]}" b.img >/dev/null || { echo "FAIL: $name: backing setup"; fail=1; return; }
        fi
        bopt=(-b b.img -F qcow2)
    fi
    case $setup in *"; SNAP") snap=1; setup=${setup%; SNAP} ;; esac
    for i in q f; do
        qemu-img create -q -f qcow2 -o "$opts" "${bopt[@]}" $i.img "$size" ||
            { echo "FAIL: $name: create"; fail=1; return; }
        if [ -n "$setup" ]; then
            args "$setup"
            qemu-io "${A[@]}" $i.img >/dev/null || { echo "FAIL: $name: setup"; fail=1; return; }
        fi
        [ $snap = 0 ] || qemu-img snapshot -c s1 $i.img || { echo "FAIL: $name: snapshot"; fail=1; return; }
    done
    args "$cmds"
    qemu-io "${A[@]}" q.img >q.out 2>&1; qrc=$?
    "$FASTQCOW" io "${A[@]}" f.img >f.out 2>&1; frc=$?
    local ok=1
    [ $qrc = $frc ] || { echo "  exit: fastqcow $frc, qemu-io $qrc"; ok=0; }
    cmp -s <(norm q.out) <(norm f.out) || { diff <(norm q.out) <(norm f.out) | head -10; ok=0; }
    qemu-img map --output=json q.img >q.map 2>&1
    qemu-img map --output=json f.img >f.map 2>&1
    cmp -s q.map f.map || { echo "  map (< qemu-io, > fastqcow):"; diff q.map f.map | head -20; ok=0; }
    qemu-img check q.img >q.chk 2>&1; qc=$?
    qemu-img check f.img >f.chk 2>&1; fc=$?
    [ $qc = $fc ] || { echo "  check exit: fastqcow's image $fc, qemu-io's $qc"; ok=0; }
    cmp -s <(norm q.chk) <(norm f.chk) || { echo "  check:"; diff <(norm q.chk) <(norm f.chk) | head -10; ok=0; }
    if [ $ok = 0 ]; then
        echo "FAIL: $name [$opts] backing [$back] setup [$setup] commands [$cmds]"
        fail=1
    fi
}

c64=cluster_size=64k
# v3: the rest of the cluster reads as zeros -> a zero cluster, no data
zc part-unalloc 1M $c64 "" "" "write -z 1k 2k; write -z 3k 300k; read -P 0 0 512k"
zc part-zero 1M $c64 "" "write -P 1 0 256k; write -z 0 256k" \
    "write -z -u 3k 2k; write -z 65k 1k; write -P 3 129k 4k; discard 192k 64k; alloc 0 1M"
zc part-data 1M $c64 "" "write -P 1 0 256k" \
    "write -z 1k 2k; write -z 64k 64k; write -z -u 128k 64k; write -z 190k 70k; map"
zc small-clusters 1M cluster_size=512 "" "write -P 1 0 8k" "write -z 100 300; write -z 1k 9k; discard 64k 900k"
# over a backing file: its range must read as zeros too
zc back-empty 1M $c64 - "" "write -z 1k 2k; write -z 100k 64k"
zc back-data 1M $c64 "write -P 2 0 4k; write -P 2 68k 4k; write -z 128k 64k" "" \
    "write -z 8k 2k; write -z 1k 2k; write -z 64k 2k; write -z 130k 3k; discard 192k 128k; map"
zc back-short 4M $c64 "write -P 2 0 64k" "" "write -z 3M 1k; write -z 1M 3k"
# compat 0.10: zeroing is a discard without a backing file, zeros with one
zc v2 1M compat=0.10,$c64 "" "write -P 1 128k 128k" \
    "write -z 0 64k; write -z 70k 2k; write -z 130k 1k; write -z 192k 64k; discard 300k 300k"
zc v2-back 1M compat=0.10,$c64 "write -P 2 0 64k" "write -P 1 128k 64k" \
    "write -z 0 128k; write -z 129k 1k; discard 128k 64k"
# extended L2: zero subclusters keep the host cluster; discard is per cluster
zc extl2-2m 4M cluster_size=2M,extended_l2=on "" "write -P 1 0 1M" \
    "write -z 0 2k; write -z 1M 100k; write -z -u 0 512k; discard 0 1M; write -z 2M 2k"
zc extl2-64k 1M $c64,extended_l2=on "" "write -P 1 0 512k" \
    "write -z 1k 2k; write -z 2k 4k; write -z -u 64k 62k; write -z -u 126k 2k; discard 3k 300k; discard 384k 64k; write -z 600k 1k"
zc extl2-comp 1M $c64,extended_l2=on "" "write -c -P 1 64k 64k; write -P 2 0 64k; write -c -P 1 256k 64k" \
    "write -z -u 4k 100k; write -z 260k 8k; write -z 2k 1k"
zc extl2-back 1M $c64,extended_l2=on "write -P 2 0 4k" "" "write -z 1k 2k; write -z 5k 2k; write -z 8k 2k"
# preallocated images keep their clusters unless unmapping is allowed
zc prealloc-falloc 1M preallocation=falloc "" "" \
    "write -z 0 512k; write -z -u 512k 256k; discard 768k 64k; write -P 1 0 64k; write -P 1 64k 4k"
zc prealloc-meta 1M preallocation=metadata,compat=0.10 "" "" "write -z 0 128k; write -z 130k 2k"
zc prealloc-extl2 1M preallocation=metadata,extended_l2=on "" "" "write -z 3k 300k; write -z -u 400k 200k"
# a cluster shared with a snapshot, and a partial last cluster
zc snapshot 1M $c64 "" "write -P 1 0 256k; SNAP" "write -z 0 64k; write -z -u 64k 64k; discard 128k 64k"
zc odd-end $((1024 * 1024 + 6144)) $c64 "" "write -P 1 1M 6k" "write -z 1M 2k; write -z -u 1M 6k; discard 1M 6k"
zc odd-end-extl2 $((1024 * 1024 + 6144)) $c64,extended_l2=on "" "write -P 1 1M 6k" \
    "write -z 1028k 1k; write -z 1M 6k"

[ $fail = 0 ] && echo "PASS: zero writes ($n sequences)"
exit $fail
