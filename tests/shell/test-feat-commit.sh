#!/bin/bash
# test-feat-commit.sh: `fastqcow commit` against `qemu-img commit` on
# copies of the same chains: the base afterwards holds the same guest data
# (qemu-img compare), the top is emptied (reads through, allocates
# nothing) unless -d or -b names a deeper base, everything stays clean;
# output and errors as qemu-img's.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/feat-commit.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }
# bytes the image itself allocates
own() { qemu-img map --output=json "$1" | awk -F'"length": ' '/"depth": 0, "present": true/ { n += $2 + 0 } END { print n + 0 }'; }

# make DIR OPTS: a chain l0 <- l1 <- l2 in DIR (made once per OPTS in
# tmpl.OPTS, then copied: the backing names are relative)
make() {
    rm -rf "$1"
    local t="tmpl.${2:-default}"
    if [ ! -d "$t" ]; then mkchain "$t" "$2"; fi
    cp -a "$t" "$1"
}
mkchain() {
    mkdir "$1"
    local o=${2:+-o $2}
    qemu-img create -q -f qcow2 $o "$1/l0.qcow2" 4M
    qemu-io -c 'write -P 1 0 4M' -c 'write -z 3M 64k' "$1/l0.qcow2" >/dev/null
    qemu-img create -q -f qcow2 $o -b l0.qcow2 -F qcow2 "$1/l1.qcow2"
    qemu-io -c 'write -P 2 0 64k' -c 'write -P 3 2M 4k' -c 'write -z 1M 64k' "$1/l1.qcow2" >/dev/null
    qemu-img create -q -f qcow2 $o -b l1.qcow2 -F qcow2 "$1/l2.qcow2" 5M
    qemu-io -c 'write -P 4 32k 64k' -c 'write -c -P 5 128k 64k' -c 'write -z 2M 64k' \
        -c 'write -P 6 4608k 4k' -c 'discard 0 64k' "$1/l2.qcow2" >/dev/null
}

# both ARGS... IMG: commit with both tools on copies of the chain
both() {
    local img=${*: -1} args=("${@:1:$#-1}")
    qemu-img convert -O raw "f/$img" view.raw
    (cd q && qemu-img commit "${args[@]}" "$img" >../q.out 2>/dev/null); qrc=$?
    (cd f && "$FASTQCOW" commit "${args[@]}" "$img" >../f.out 2>../f.err); frc=$?
    [ $qrc = $frc ] || { bad "commit $*: exit $frc, qemu-img $qrc"; cat f.err; }
    cmp -s q.out f.out || { bad "commit $*: output"; diff q.out f.out; }
    [ $qrc = 0 ] || return
    local base=l1
    case "$*" in *"-b l0"*|l1.qcow2) base=l0;; esac
    for l in l0 l1 l2; do
        qemu-img compare -q "q/$l.qcow2" "f/$l.qcow2" || bad "commit $*: $l differs from qemu-img's"
        F compare -q "q/$l.qcow2" "f/$l.qcow2" || bad "commit $*: fastqcow reads $l differently"
        qemu-img check -q "f/$l.qcow2" || bad "commit $*: $l not clean"
        # the base may allocate differently (zeros), the others not at all
        [ $l = $base ] || [ "$(own f/$l.qcow2)" = "$(own q/$l.qcow2)" ] ||
            bad "commit $*: $l allocates $(own f/$l.qcow2) bytes, qemu-img's $(own q/$l.qcow2)"
    done
    qemu-img compare -q -F raw "f/$img" view.raw || bad "commit $*: $img reads differently"
}

for opts in "" "extended_l2=on" "compat=0.10"; do
    all=("l2.qcow2" "-d l2.qcow2" "-b l0.qcow2 l2.qcow2")
    [ -z "$opts" ] && all+=("-b l1.qcow2 l2.qcow2" "l1.qcow2" "-q l2.qcow2" "l0.qcow2" \
                            "-b nosuch.qcow2 l2.qcow2" "-b l2.qcow2 l2.qcow2")
    for args in "${all[@]}"; do
        make q "$opts"; make f "$opts"
        both $args
    done
done

# a top with a snapshot: emptied, the snapshot keeps its data
make f ""
cp f/l2.qcow2 keep.qcow2
qemu-img snapshot -c s f/l2.qcow2
(cd f && "$FASTQCOW" commit -q l2.qcow2) || bad "commit of a top with a snapshot"
qemu-img check -q f/l2.qcow2 || bad "top with a snapshot: check"
[ "$(own f/l2.qcow2)" = 0 ] || bad "top with a snapshot: not emptied"
qemu-img snapshot -a s f/l2.qcow2
qemu-img compare -q f/l2.qcow2 keep.qcow2 2>/dev/null ||
    qemu-io -c 'read -P 4 64k 32k' f/l2.qcow2 | grep -q '^read' || bad "top with a snapshot: snapshot lost data"

# progress
make f ""
(cd f && "$FASTQCOW" commit -p l2.qcow2) | grep -q '(100.00/100%)' || bad "commit -p"

[ $fail = 0 ] && echo "PASS: commit"
exit $fail
