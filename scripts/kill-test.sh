#!/usr/bin/env bash
# kill-test.sh: kill -9 every command that writes metadata at random
# moments and judge the image it leaves, as a user would see it.
#
#   scripts/kill-test.sh [options] DIR
#     -t TOOL      the tool to kill: a fastqcow binary (default: build/fastqcow)
#                  or qemu-img, which runs the same commands for comparison
#     -k KILLS     kills per command (default 3)
#     -s SIZE      virtual size of the image (default 1G)
#     -n CLUSTERS  scattered clusters qemu-io writes into it (default 1500)
#     -c CLUSTER   cluster size (default 4096)
#     -o LIST      commands to run, comma separated (default: all of
#                  snap-create snap-delete snap-apply amend-refbits-up
#                  amend-refbits-down amend-compat amend-lazy resize-grow
#                  resize-shrink commit rebase rebase-unsafe convert-n check-r)
#     -S SEED      seed of the offsets and the kill moments
#     -K           keep DIR (default: removed when it was created here)
#
# The image is made by qemu-img and qemu-io: CLUSTERS clusters at random
# offsets, an internal snapshot "s0" taken half way, the rest written
# after it (so the active state and s0 share some clusters and not
# others). For commit and rebase, an overlay over a copy of it holds a
# quarter as many clusters; check -r gets a copy with leaked clusters
# (refcounts one too high, COPIED flags cleared, as interrupted snapshot
# operations of other tools leave them).
#
# Each command is first timed once; then each kill runs it on a fresh
# copy and sends SIGKILL after a random fraction (5% to 110%) of that time.
# The image left is judged:
#   corrupt     `qemu-img check` reports errors (exit 2); for check -r,
#               whose interrupted repairs may leave COPIED flags to fix,
#               those are counted apart (copied_only) and must be repaired
#   unopenable  `qemu-img check` cannot open it (exit 1 or other)
#   content     the active state or a snapshot reads differently from what
#               it was before (or, for the snapshot being created, from the
#               active state), for commands that must not change them
#   unrepaired  `fastqcow check -r all` does not leave it clean
# Leaks (exit 3) are allowed. Prints one line per command and a RESULT
# line; exits 1 if a fastqcow run had any of the above.
# SPDX-License-Identifier: MIT
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
TOOL=$ROOT/build/fastqcow KILLS=3 SIZE=1G NCL=1500 CS=4096 SEED=$$ KEEP=0
OPS=snap-create,snap-delete,snap-apply,amend-refbits-up,amend-refbits-down,amend-compat,amend-lazy,resize-grow,resize-shrink,commit,rebase,rebase-unsafe,convert-n,check-r
while getopts "t:k:s:n:c:o:S:K" opt; do
    case $opt in
    t) TOOL=$OPTARG ;; k) KILLS=$OPTARG ;; s) SIZE=$OPTARG ;; n) NCL=$OPTARG ;;
    c) CS=$OPTARG ;; o) OPS=$OPTARG ;; S) SEED=$OPTARG ;; K) KEEP=1 ;;
    *) sed -n '2,40p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
D=${1:?usage: kill-test.sh [options] DIR}
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
case $TOOL in */*) [ -x "$TOOL" ] || { echo "no tool $TOOL"; exit 2; } ;; esac
FQ=$ROOT/build/fastqcow
[ "${FASTQCOW:-}" ] && FQ=$FASTQCOW
[[ $TOOL == */fastqcow || $TOOL == fastqcow ]] && FQ=$TOOL
QEMU=0
[ "$(basename "$TOOL")" = qemu-img ] && QEMU=1
made=0
[ -d "$D" ] || { mkdir -p "$D" && made=1; }
D=$(cd "$D" && pwd)
[ $made = 1 ] && [ $KEEP = 0 ] && trap 'rm -rf "$D"' EXIT
RANDOM=$SEED
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ---- the images ----
vsize() { qemu-img info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }
# qemu-io commands writing $2 clusters at random offsets of a disk of $3
# bytes ($1: pattern base)
scatter() {
    python3 - "$1" "$2" "$SEED" "$CS" "$3" <<'EOF'
import random, sys
base, n, seed, cs, size = (int(a) for a in sys.argv[1:])
r = random.Random(seed * 7 + base)
for i in range(n):
    print("write -P %d %d %d" % ((base + i) % 250 + 1, r.randrange(size // cs) * cs, cs))
EOF
}
if [ ! -f "$D/base.qcow2" ]; then
    qemu-img create -q -f qcow2 -o cluster_size=$CS "$D/base.qcow2" "$SIZE" || exit 1
    VS=$(vsize "$D/base.qcow2")
    scatter 1 $((NCL / 2)) $VS | qemu-io -t unsafe -f qcow2 "$D/base.qcow2" >/dev/null
    qemu-img snapshot -c s0 "$D/base.qcow2" || exit 1
    scatter 2 $((NCL - NCL / 2)) $VS | qemu-io -t unsafe -f qcow2 "$D/base.qcow2" >/dev/null
    qemu-img check -q "$D/base.qcow2" || { echo "the base image is not clean"; exit 1; }
    qemu-img convert -l snapshot.name=s0 -O qcow2 "$D/base.qcow2" "$D/ref-s0.qcow2"
    # commit and rebase: an overlay
    mkdir -p "$D/pair"
    cp --sparse=always "$D/base.qcow2" "$D/pair/base.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=$CS -b base.qcow2 -F qcow2 "$D/pair/top.qcow2"
    scatter 3 $((NCL / 4)) $VS | qemu-io -t unsafe -f qcow2 "$D/pair/top.qcow2" >/dev/null
    # convert -n: an empty target
    qemu-img create -q -f qcow2 -o cluster_size=$CS "$D/target.qcow2" "$SIZE"
    # check -r: leaked clusters
    cp --sparse=always "$D/base.qcow2" "$D/leaky.qcow2"
    python3 - "$D/leaky.qcow2" <<'EOF' || exit 1
import struct, sys
f = open(sys.argv[1], "r+b")
def rd(off, n): f.seek(off); return f.read(n)
def be(off, n): return int.from_bytes(rd(off, n), "big")
cs = 1 << be(20, 4); l1n = be(36, 4); l1 = be(40, 8); rt = be(48, 8)
order = be(96, 4) if be(4, 4) >= 3 else 4
assert order == 4, "16-bit refcounts expected"
per = cs // 2; done = 0
for i in range(l1n):
    l2 = be(l1 + 8 * i, 8) & 0x00fffffffffffe00
    if not l2: continue
    for j in range(0, cs // 8, 5):
        e = be(l2 + 8 * j, 8)
        c = (e & 0x00fffffffffffe00) // cs
        if not (e >> 63) or (e >> 62) & 1 or not c or done >= 50: continue
        rb = be(rt + 8 * (c // per), 8)
        v = be(rb + 2 * (c % per), 2)
        f.seek(rb + 2 * (c % per)); f.write((v + 1).to_bytes(2, "big"))
        f.seek(l2 + 8 * j); f.write((e & ~(1 << 63)).to_bytes(8, "big"))
        done += 1
assert done, "no cluster to leak"
EOF
    rc=0; qemu-img check -q "$D/leaky.qcow2" >/dev/null 2>&1 || rc=$?
    [ $rc = 3 ] || { echo "the leaky image should only leak (qemu-img check exit $rc)"; exit 1; }
fi
S0=$D/ref-s0.qcow2

# ---- the commands ----
# Set up $W for command $1 and print the command line (the image to
# judge is $W/$IMG).
W=$D/work
prepare() {
    rm -rf "$W"; mkdir -p "$W"
    IMG=img.qcow2
    case $1 in
    commit|rebase|rebase-unsafe)
        cp --sparse=always "$D/pair/base.qcow2" "$D/pair/top.qcow2" "$W/"
        IMG=top.qcow2 ;;
    convert-n) cp --sparse=always "$D/target.qcow2" "$W/img.qcow2" ;;
    check-r) cp --sparse=always "$D/leaky.qcow2" "$W/img.qcow2" ;;
    *) cp --sparse=always "$D/base.qcow2" "$W/img.qcow2" ;;
    esac
    ln -sf "$S0" "$W/new.qcow2"
    local i="$W/img.qcow2" t="$W/top.qcow2" discard=--discard-data
    [ $QEMU = 1 ] && discard=
    case $1 in
    snap-create) CMD=("$TOOL" snapshot -c new "$i") ;;
    snap-delete) CMD=("$TOOL" snapshot -d s0 "$i") ;;
    snap-apply) CMD=("$TOOL" snapshot -a s0 "$i") ;;
    amend-refbits-up) CMD=("$TOOL" amend -o refcount_bits=64 "$i") ;;
    amend-refbits-down) CMD=("$TOOL" amend -o refcount_bits=4 "$i") ;;
    amend-compat) CMD=("$TOOL" amend -o compat=0.10 "$i") ;;
    amend-lazy) CMD=("$TOOL" amend -o lazy_refcounts=on "$i") ;;
    resize-grow) CMD=("$TOOL" resize "$i" +1G) ;;
    resize-shrink) CMD=("$TOOL" resize --shrink $discard "$i" -$(( $(vsize "$i") / 2 ))) ;;
    commit) CMD=("$TOOL" commit "$t") ;;
    rebase) CMD=("$TOOL" rebase -b new.qcow2 -F qcow2 "$t") ;;
    rebase-unsafe) CMD=("$TOOL" rebase -u -b new.qcow2 -F qcow2 "$t") ;;
    convert-n) CMD=("$TOOL" convert -n -O qcow2 "$D/base.qcow2" "$i") ;;
    check-r) CMD=("$TOOL" check -r all "$i") ;;
    *) echo "unknown command $1"; exit 2 ;;
    esac
}

# The snapshot names of an image.
snaps() { qemu-img snapshot -l "$1" 2>/dev/null | awk 'NR > 2 { print $2 }'; }

# Judge $W after command $1; sets the verdict variables.
judge() {
    local op=$1 img=$W/$IMG rc=0 qrc out
    out=$(qemu-img check "$img" 2>&1) || rc=$?
    qrc=$rc
    if [ $rc = 2 ]; then
        if [ "$op" = check-r ] && ! grep ERROR <<<"$out" | grep -qv OFLAG_COPIED; then
            copied=$((copied + 1))
        else
            corrupt=$((corrupt + 1))
            [ "${VERBOSE:-}" ] && grep -m3 ERROR <<<"$out"
        fi
    elif [ $rc != 0 ] && [ $rc != 3 ]; then
        unopen=$((unopen + 1))
        [ "${VERBOSE:-}" ] && head -3 <<<"$out"
        return
    fi
    # what may not change
    local bad=0 n
    case $op in
    snap-*|amend-*|check-r)
        if ! qemu-img compare -q "$D/base.qcow2" "$img" 2>/dev/null; then
            # apply: the snapshot's state is the other allowed one
            [ "$op" = snap-apply ] && qemu-img compare -q "$S0" "$img" 2>/dev/null || bad=1
        fi
        for n in $(snaps "$img"); do
            rm -f "$W/snap.qcow2"
            qemu-img convert -l snapshot.name="$n" -O qcow2 "$img" "$W/snap.qcow2" 2>/dev/null || { bad=1; continue; }
            case $n in
            s0) qemu-img compare -q "$S0" "$W/snap.qcow2" 2>/dev/null || bad=1 ;;
            new) qemu-img compare -q "$D/base.qcow2" "$W/snap.qcow2" 2>/dev/null || bad=1 ;;
            esac
        done ;;
    resize-grow) qemu-img compare -q "$D/base.qcow2" "$img" 2>/dev/null || bad=1 ;;
    commit|rebase|rebase-unsafe)
        # the overlay reads the same through whichever backing file
        [ "$op" = rebase-unsafe ] || qemu-img compare -q "$D/pair/top.qcow2" "$img" 2>/dev/null || bad=1 ;;
    esac
    [ $bad = 1 ] && content=$((content + 1)) && [ "${VERBOSE:-}" ] && echo "  content differs"
    # what is not clean is repaired clean by fastqcow
    if [ $qrc != 0 ]; then
        "$FQ" check -r all "$img" >/dev/null 2>&1
        qemu-img check -q "$img" >/dev/null 2>&1 || unrep=$((unrep + 1))
    fi
    if [ "$op" = commit ]; then
        # the base took the data: errors there count too
        rc=0; qemu-img check -q "$W/base.qcow2" >/dev/null 2>&1 || rc=$?
        [ $rc = 0 ] || [ $rc = 3 ] || corrupt=$((corrupt + 1))
    fi
}

tot_k=0 tot_i=0 tot_c=0 tot_cp=0 tot_u=0 tot_x=0 tot_r=0 t0=$(now_ms)
IFS=, read -ra oplist <<<"$OPS"
for op in "${oplist[@]}"; do
    # its run time: the shorter of two runs
    dur=
    for t in 1 2; do
        prepare "$op"
        s=$(now_ms)
        "${CMD[@]}" >/dev/null 2>&1 || { echo "kill: $op: the command fails when not killed: ${CMD[*]}"; "${CMD[@]}" 2>&1 | head -3; tot_x=$((tot_x + 1)); continue 2; }
        e=$(( $(now_ms) - s ))
        [ -z "$dur" ] || [ $e -lt $dur ] && dur=$e
    done
    kills=0 intr=0 corrupt=0 copied=0 unopen=0 content=0 unrep=0
    for ((k = 0; k < KILLS; k++)); do
        prepare "$op"
        # 5% to 110% of the run time
        d=$(( dur * (5 + RANDOM % 106) / 100 ))
        "${CMD[@]}" >/dev/null 2>&1 &
        pid=$!
        sleep "$(printf '%d.%03d' $((d / 1000)) $((d % 1000)))"
        kill -9 $pid 2>/dev/null
        wait $pid 2>/dev/null
        st=$?
        [ $st = 137 ] && intr=$((intr + 1))
        [ "${VERBOSE:-}" ] && echo "  $op: killed after ${d} ms of ${dur}: exit $st"
        kills=$((kills + 1))
        judge "$op"
    done
    printf 'kill: tool=%s cmd=%s ms=%d kills=%d interrupted=%d corrupt=%d copied_only=%d unopenable=%d content=%d unrepaired=%d\n' \
        "$(basename "$TOOL")" "$op" "$dur" $kills $intr $corrupt $copied $unopen $content $unrep
    tot_k=$((tot_k + kills)) tot_i=$((tot_i + intr)) tot_c=$((tot_c + corrupt)) tot_cp=$((tot_cp + copied))
    tot_u=$((tot_u + unopen)) tot_x=$((tot_x + content)) tot_r=$((tot_r + unrep))
done
printf 'RESULT kill: tool=%s seed=%s size=%s clusters=%s kills=%d interrupted=%d corrupt=%d copied_only=%d unopenable=%d content=%d unrepaired=%d seconds=%d\n' \
    "$(basename "$TOOL")" "$SEED" "$SIZE" "$NCL" $tot_k $tot_i $tot_c $tot_cp $tot_u $tot_x $tot_r \
    $(( ($(now_ms) - t0) / 1000 ))
[ $QEMU = 1 ] && exit 0
[ $((tot_c + tot_u + tot_x + tot_r)) = 0 ]
