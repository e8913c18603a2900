#!/bin/bash
# test-probe-truncated.sh: a qcow2 file cut short at every length of its
# header (fixed fields, extensions, backing name) is probed as qemu-img
# probes it: shorter than magic + version it is raw; with qcow2's magic
# and a version it is qcow2, and a header cut inside its fixed fields is
# refused ("qcow2 header too short"), never read or written as raw. The
# verdict (raw, qcow2, refused) of `fastqcow info` must equal qemu-img's
# at every length; the one deliberate difference (docs/COMPATIBILITY.md):
# a version 2 header cut inside its last fields (60..71 bytes), which
# qemu-img reads as zeros, is refused.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/probe-trunc.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# verdict TOOL FILE: raw, qcow2 or err (refused, with a message)
verdict() {
    local out
    if [ "$1" = q ]; then out=$(qemu-img info "$2" 2>&1); else out=$("$FASTQCOW" info "$2" 2>&1); fi
    case "$out" in
    *"file format: raw"*) echo raw ;;
    *"file format: qcow2"*) echo qcow2 ;;
    *) [ -n "$out" ] && echo err || echo "err-without-message" ;;
    esac
}

qemu-img create -q -f qcow2 v3.qcow2 1M
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
qemu-img create -q -f qcow2 -b v3.qcow2 -F qcow2 over.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 -b v2.qcow2 -F qcow2 over2.qcow2

# the end of the header: the last non-zero byte of cluster 0 (at least the
# version 3 header), plus a margin
header_end() {
    head -c 65536 "$1" | od -A d -v -t x1 |
        awk '{ for (i = 2; i <= NF; i++) if ($i != "00") last = $1 + i - 2 }
             END { e = last + 9; print (e < 120 ? 120 : e) }'
}

# Every length is cut into a file of its own; qemu's verdicts come from one
# qemu-io process opening each in turn (as qemu-img info opens: probed,
# read-only, no backing file), fastqcow's from one probe-verdict process
# (fq_open as fastqcow info opens).
for img in v3.qcow2 v2.qcow2 over.qcow2 over2.qcow2; do
    end=$(header_end "$img")
    rm -rf cuts && mkdir cuts
    lens="$(seq 0 "$end") 65535 65536 65537"
    python3 -c 'import sys
d = open(sys.argv[1], "rb").read()
for n in sys.argv[2:]:
    open("cuts/" + n, "wb").write(d[:int(n)])' "$img" $lens
    for n in $lens; do printf 'open -r -o backing= cuts/%s\ninfo\nclose\n' "$n"; done |
        qemu-io 2>&1 | awk '
            /can.t open device/ { print "err"; next }
            /^(qemu-io> )*format name:/ { print $NF }' >q.v
    "$TEST_HELPERS/probe-verdict" $(for n in $lens; do echo "cuts/$n"; done) |
        awk '{ print $2 }' >f.v
    echo "$lens" | tr ' ' '\n' | paste -d ' ' - q.v f.v >"$img.verdicts"
    n=$(wc -l <"$img.verdicts")
    [ "$n" -gt 110 ] && [ "$(wc -l <q.v)" = "$n" ] && [ "$(wc -l <f.v)" = "$n" ] ||
        bad "$img: $n lengths, $(wc -l <q.v) verdicts of qemu-io, $(wc -l <f.v) of fastqcow"
    v2=0
    case $img in v2.qcow2|over2.qcow2) v2=1 ;; esac
    while read -r len q f; do
        if [ "$v2" = 1 ] && [ "$len" -ge 60 ] && [ "$len" -lt 72 ] && [ "$q" = qcow2 ]; then
            [ "$f" = err ] || bad "$img cut at $len: fastqcow says $f, expected a refusal"
            continue
        fi
        [ "$q" = "$f" ] || bad "$img cut at $len: qemu says $q, fastqcow $f"
        [ "$len" -lt 8 ] && [ "$f" != raw ] && bad "$img cut at $len: $f, expected raw"
    done <"$img.verdicts"
    echo "$img: $n lengths (0..$end and around cluster 1):" \
        "$(awk '{print $3}' "$img.verdicts" | sort | uniq -c | tr -s ' \n' ' ')"
done
# the tools agree with the library on a few lengths
for n in 7 8 60 104 300; do
    head -c $n over.qcow2 >tool.img
    q=$(verdict q tool.img) f=$(verdict f tool.img)
    [ "$q" = "$f" ] || bad "info of over.qcow2 cut at $n: qemu-img says $q, fastqcow $f"
done

# the message of a header cut short names it
head -c 50 v3.qcow2 >short.img
"$FASTQCOW" info short.img >/dev/null 2>f.err && bad "a 50-byte qcow2 header opened"
grep -q "qcow2 header too short" f.err || { bad "no 'qcow2 header too short' message"; cat f.err; }
# and it is never written as raw
"$FASTQCOW" io -c 'write 0 512' short.img >/dev/null 2>&1 && bad "io wrote to a truncated qcow2 header"
cmp -s short.img <(head -c 50 v3.qcow2) || bad "the truncated header changed"

# the version decides: 0 is no qcow2 (raw, as qemu-img), 1 (qcow's first
# format) and 4 are refused, 2 and 3 are qcow2
for v in 0 1 2 3 4; do
    cp v3.qcow2 ver$v.img
    printf "\\x0$v" | dd of=ver$v.img bs=1 seek=7 conv=notrunc 2>/dev/null
    q=$(verdict q ver$v.img) f=$(verdict f ver$v.img)
    [ "$q" = "$f" ] || bad "version $v: qemu-img says $q, fastqcow $f"
done

[ $fail = 0 ] && echo "PASS: probing at every truncation length matches qemu-img"
exit $fail
