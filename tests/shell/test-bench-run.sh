#!/bin/bash
# test-bench-run.sh: `fastqcow bench` runs with every I/O engine and cache
# mode on raw and qcow2, prints qemu-img bench's two lines (the first one
# byte for byte as qemu-img prints it for the same options), writes the
# --pattern byte where the offsets say (wrapping at the image end), runs
# the seed's command line, --flush-interval with and without draining,
# --workers and --random; errors match qemu-img bench's and exit 1. Then
# smoke runs of the benchmark scripts on tiny images, for correctness only
# (no timing is judged): bench/seed-table --features --verify, which runs
# bench/feature-table --verify (fastqcow reads the overlay and the
# compressed images as qemu-img does, written overlays stay clean, every
# timed run succeeds), bench/scale-table --quick, whose CSVs must hold
# every row with a figure for every tool, and bench/convert-table --quick
# (every whole-image row timed for both tools).
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
FASTQCOW=$(realpath "$FASTQCOW")
REPO=$(cd "${TEST_SRCDIR:-$(dirname "${BASH_SOURCE[0]}")/..}/.." && pwd)
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/bench-run.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
RUN='^Run completed in [0-9]+\.[0-9]{3} seconds\.$'

# bench_ok ARGS: exit 0, qemu-img's first line, then "Run completed".
bench_ok() {
    "$FASTQCOW" bench "$@" >f.out 2>f.err || { bad "bench $*: exit $?"; cat f.err; return; }
    qemu-img bench "$@" >q.out 2>/dev/null || { bad "qemu-img bench $* failed"; return; }
    [ "$(head -n -1 f.out)" = "$(head -n -1 q.out)" ] || { bad "bench $*: header"; diff q.out f.out; }
    tail -1 f.out | grep -Eq "$RUN" || { bad "bench $*: last line"; cat f.out; }
}

qemu-img create -q -f qcow2 b.qcow2 16M
truncate -s 16M b.raw
for img in b.raw b.qcow2; do
    fmt=${img#b.}
    for eng in io_uring threads; do
        for cache in writeback none; do
            bench_ok -f $fmt -i $eng -t $cache -c 300 -d 8 -w $img
            bench_ok -f $fmt -i $eng -t $cache -c 300 -d 8 $img
        done
    done
    # -n is native AIO: the default engine (qemu-img needs cache none for it)
    bench_ok -f $fmt -n -t none -c 100 -s 64k -w $img
    bench_ok -f $fmt -n -t none -c 100 -s 1m -d 1 $img
    # sync engine: no qemu counterpart, check the lines only
    "$FASTQCOW" bench -f $fmt -i sync -c 100 $img >f.out || bad "bench -i sync $img"
    grep -Eq "$RUN" f.out || bad "bench -i sync $img: output"
    bench_ok -f $fmt -c 200 -d 4 -w --flush-interval=10 $img
    bench_ok -f $fmt -c 200 -d 4 -w --flush-interval=10 --no-drain $img
    bench_ok -f $fmt -c 50 -s 1536 -o 5000 -S 3k $img
    bench_ok -f $fmt -c 0 $img
    bench_ok -f $fmt -c 10 -s 0 $img
    bench_ok -f $fmt -c 10 -q -t writethrough -w $img
    bench_ok -f $fmt -c 10 -q -U $img
    bench_ok -f $fmt -c 10 -t directsync -w $img
    bench_ok -f $fmt -c 10 -t unsafe -w $img
done
qemu-img check -q b.qcow2 || bad "check after benchmarks"

# the seed's command line
bench_ok -c 64 -d 1 -f qcow2 -n -s 1m -t none b.qcow2
bench_ok -c 64 -d 1 -f qcow2 -n -s 1m -t none -w b.qcow2

# written data: --pattern at -o, stepping by -S, wrapping at the end
qemu-img create -q -f qcow2 p.qcow2 1M
"$FASTQCOW" bench -w -c 6 -d 2 -s 4k -S 256k -o 64k --pattern=0x5a p.qcow2 >/dev/null || bad "pattern run"
# offsets 64k, 320k, 576k, 832k, then wrapped: 64k, 320k
qemu-io -c 'read -P 0x5a 64k 4k' -c 'read -P 0x5a 320k 4k' -c 'read -P 0x5a 576k 4k' \
    -c 'read -P 0x5a 832k 4k' -c 'read -P 0 0 64k' -c 'read -P 0 68k 252k' -c 'map' p.qcow2 >out ||
    { bad "pattern/offsets written by bench"; cat out; }
grep -c 'allocated at' out | grep -qx 9 || { bad "bench wrote outside its offsets"; cat out; }

# --workers and --random
"$FASTQCOW" bench -c 200 -s 64k --workers 1 b.qcow2 | grep -Eq "$RUN" || bad "--workers 1"
"$FASTQCOW" bench -c 200 -s 64k --workers 16 -w b.qcow2 | grep -Eq "$RUN" || bad "--workers 16"
"$FASTQCOW" bench -c 200 -s 64k --random b.qcow2 >out || bad "--random"
grep -q '^Sending 200 read requests, 65536 bytes each, 64 in parallel (random offsets from offset 0, step size 65536, seed 1)$' out ||
    { bad "--random header"; cat out; }
qemu-img create -q -f qcow2 r.qcow2 1M
"$FASTQCOW" bench -w -c 64 -s 4k -S 64k --random=5 --pattern=7 r.qcow2 >/dev/null || bad "--random=5 -w"
# 16 possible offsets (k * 64k): each holds the pattern or zeros, the rest
# zeros (read once by qemu-img, then compared piece by piece)
qemu-img convert -O raw r.qcow2 r.raw || bad "--random=5: qemu-img convert"
printf '\7%.0s' $(seq 4096) >p7 && head -c 4096 /dev/zero >z4 && head -c 61440 /dev/zero >z60
hits=0
for i in $(seq 0 15); do
    if dd if=r.raw bs=4k skip=$((i * 16)) count=1 status=none | cmp -s - p7; then
        hits=$((hits + 1))
    else
        dd if=r.raw bs=4k skip=$((i * 16)) count=1 status=none | cmp -s - z4 || bad "--random: junk at $((i * 64))k"
    fi
    dd if=r.raw bs=4k skip=$((i * 16 + 1)) count=15 status=none | cmp -s - z60 ||
        bad "--random: wrote off-step at $((i * 64 + 4))k"
done
[ $hits -ge 4 ] || bad "--random=5: only $hits of 16 offsets written by 64 requests"
"$FASTQCOW" bench -c 5 --random -s 2M r.qcow2 >out 2>&1 && bad "--random larger than the image accepted"

# errors: same message as qemu-img bench (after the program name), exit 1
err_same() {
    "$FASTQCOW" bench "$@" >f.out 2>f.err && bad "bench $* succeeded"
    qemu-img bench "$@" >q.out 2>q.err
    f=$(sed -n 's/^fastqcow: //p' f.err | head -1)
    q=$(sed -n 's/^qemu-img: //p' q.err | head -1)
    [ "$f" = "$q" ] || bad "bench $*: error '$f', qemu-img '$q'"
    cmp -s q.out f.out || { bad "bench $*: stdout"; diff q.out f.out; }
}
err_same -c abc b.qcow2
err_same -c -1 b.qcow2
err_same -d abc b.qcow2
err_same -d 1k b.qcow2
err_same -s 3G b.qcow2
err_same -S 3G b.qcow2
err_same -t foo b.qcow2
err_same -i foo b.qcow2
err_same --pattern=300 b.qcow2
err_same --flush-interval=abc -w b.qcow2
err_same --flush-interval=10 b.qcow2
err_same --flush-interval=10 -w b.qcow2
err_same b.qcow2 b.raw
err_same -U -w -c 1 b.qcow2
err_same
err_same -c 10 -s 1m -o 15m -S 512k b.qcow2
err_same -c 10 -s 1m -o 16m b.qcow2
err_same -c 10 -s 17m b.qcow2
"$FASTQCOW" bench -d 0 b.qcow2 >/dev/null 2>&1 && bad "-d 0 accepted (qemu-img hangs on it)"
"$FASTQCOW" bench nonexist >/dev/null 2>&1 && bad "missing file accepted"
"$FASTQCOW" bench --help | grep -q -- '--workers' || bad "--help"

# ---- the benchmark scripts, smoke mode (tiny images, one run) ----
# raw_complete CSV ROW,MODE,TOOL...: every cell has a line with seconds
raw_complete() {
    local csv=$1 cell; shift
    for cell in "$@"; do
        grep -Eq "^[a-z]+,$cell,1,[0-9.]+," "$csv" || bad "$csv: no figure for $cell"
    done
    ! grep -q ',NA,' "$csv" || { bad "$csv: failed runs"; grep ',NA,' "$csv"; }
}
# (the plain run does them; a sanitizer run, FQ_TEST_QUICK, leaves them out)
if [ -z "${FQ_TEST_QUICK:-}" ] && command -v fio >/dev/null && command -v python3 >/dev/null &&
    [ -x /usr/bin/time ]; then
    bash "$REPO/bench/feature-table" --help | grep -q -- '--verify' || bad "feature-table --help"
    bash "$REPO/bench/seed-table" --help | grep -q -- '--features' || bad "seed-table --help: --features"
    # features_complete DIR LOG: feature-table's rows, all filled, and printed
    features_complete() {
        raw_complete "$1/feature-raw.csv" \
            overlay,read,{serial,fastqcow,qemu-n,qemu-uring,fio,fio-b16} \
            overlay,write,{serial,fastqcow,qemu-n,qemu-uring,fio,fio-b16} \
            {zlib,zstd},read,{serial,fastqcow,qemu-n,qemu-uring,cpu1,cpu2}
        [ "$(grep -c '^[a-z]*,\(read\|write\),' "$1/feature-table.csv")" = 4 ] ||
            { bad "feature-table.csv: not 4 rows"; cat "$1/feature-table.csv"; }
        grep -q '^| t-overlay -w ' "$2" || { bad "feature table not printed"; cat "$2"; }
    }
    # the images go to a scratch dir the script picks (never tmpfs: O_DIRECT);
    # 4M images, the smallest that fill every row (the time goes into the
    # many tool starts, not the bytes)
    # bench/scale-table: every subcommand of every layout measured for both
    if bash "$REPO/bench/scale-table" --quick --sizes 16M --out "$T/scale" >scale.log 2>&1; then
        rows=$(tail -n +2 "$T/scale/scale-table.csv" | awk -F, '$6 != "" && $7 != ""' | wc -l)
        [ "$rows" = 24 ] || { bad "scale-table: $rows complete rows, 24 expected"; cat scale.log; }
        ! grep -q FAILED scale.log || { bad "scale-table: failed runs"; grep -A3 FAILED scale.log; }
    else
        bad "bench/scale-table --quick failed"; cat scale.log
    fi
    # bench/convert-table: every row of both places measured for both
    # tools, the result checked (a tool's failure leaves NA and FAILED)
    if bash "$REPO/bench/convert-table" --quick --out "$T/convert" >convert.log 2>&1; then
        rows=$(tail -n +2 "$T/convert/convert-raw.csv" | awk -F, '$6 ~ /^[0-9.]+$/' | wc -l)
        want=20
        [ -d /dev/shm ] && want=30
        [ "$rows" = "$want" ] || { bad "convert-table: $rows timed runs, $want expected"; cat convert.log; }
        ! grep -q FAILED convert.log || { bad "convert-table: failed runs"; grep -A3 FAILED convert.log; }
    else
        bad "bench/convert-table --quick failed"; cat convert.log
    fi
    # bench/seed-table --features runs bench/feature-table (with --verify:
    # fastqcow reads every image as qemu-img does, written overlays stay
    # clean) on its own rand image; without gnuplot, feature-table alone
    if command -v gnuplot >/dev/null; then
        if bash "$REPO/bench/seed-table" --size 4M --runs 1 --no-gen-cmp --no-random --features \
                --verify --out "$T/seed" >seed.log 2>&1; then
            raw_complete "$T/seed/raw.csv" \
                {seq,reverse,rand,part-rand},{read,write},{serial,fastqcow,qemu-n,qemu-uring}
            [ -s "$T/seed/seed-table.csv" ] || bad "seed-table --features: seed-table.csv"
            features_complete "$T/seed" seed.log
        else
            bad "bench/seed-table --features --verify failed"; cat seed.log
        fi
    else
        echo "note: gnuplot not installed, bench/seed-table smoke run skipped"
        if bash "$REPO/bench/feature-table" --size 4M --runs 1 --count all --verify \
                --out "$T/feat" >feat.log 2>&1; then
            features_complete "$T/feat" feat.log
        else
            bad "bench/feature-table --verify failed"; cat feat.log
        fi
    fi
else
    echo "note: fio, python3 or /usr/bin/time missing, benchmark scripts' smoke runs skipped"
fi

[ $fail = 0 ] && echo "PASS: bench run"
exit $fail
