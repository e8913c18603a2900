#!/bin/bash
# test-feat-rebase.sh: `fastqcow rebase` (safe and -u) against
# `qemu-img rebase` on copies of the same overlays: the guest view after a
# safe rebase is unchanged (qemu-img compare with the view before), the
# header names the new backing file and format as qemu-img's does, the
# image is clean; -b "" makes an image standalone; errors as qemu-img's.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/feat-rebase.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }
backing() { qemu-img info "$1" | grep '^backing file' ; }

# both OVERLAY-OPTS ARGS...: rebase copies of ov.qcow2 (whose guest view is
# saved as view.raw) with both tools
both() {
    cp ov.qcow2 q.qcow2; cp ov.qcow2 f.qcow2
    qemu-img rebase "$@" q.qcow2 >/dev/null 2>&1; qrc=$?
    F rebase "$@" f.qcow2 >/dev/null 2>f.err; frc=$?
    [ $qrc = $frc ] || { bad "rebase $*: exit $frc, qemu-img $qrc"; cat f.err; }
    [ $qrc = 0 ] || return
    [ "$(backing q.qcow2)" = "$(backing f.qcow2)" ] || bad "rebase $*: header: $(backing f.qcow2)"
    qemu-img check -q f.qcow2 || bad "rebase $*: check"
    case " $* " in
        *" -u "*) qemu-img compare -q q.qcow2 f.qcow2 || bad "rebase $*: differs from qemu-img's";;
        *) qemu-img compare -q -F raw f.qcow2 view.raw || bad "rebase $*: guest view changed"
           qemu-img compare -q q.qcow2 f.qcow2 || bad "rebase $*: differs from qemu-img's"
           F compare -q q.qcow2 f.qcow2 || bad "rebase $*: fastqcow reads them differently";;
    esac
}

for opts in "" "cluster_size=4k" "extended_l2=on" "compat=0.10"; do
    o=${opts:+-o $opts}
    qemu-img create -q -f qcow2 $o b1.qcow2 4M
    qemu-io -c 'write -P 1 0 4M' b1.qcow2 >/dev/null
    qemu-img create -q -f qcow2 $o b2.qcow2 3M
    qemu-io -c 'write -P 1 0 2M' -c 'write -P 2 2M 512k' b2.qcow2 >/dev/null
    qemu-img create -q -f raw r.raw 4M
    qemu-io -f raw -c 'write -P 1 0 1M' -c 'write -P 3 3M 4k' r.raw >/dev/null
    qemu-img create -q -f qcow2 $o -b b1.qcow2 -F qcow2 mid.qcow2
    qemu-io -c 'write -P 4 1M 64k' mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 $o -b mid.qcow2 -F qcow2 ov.qcow2 5M
    qemu-io -c 'write -P 5 1M 32k' -c 'write -P 6 3M 4k' -c 'write -z 3200k 64k' -c 'write -P 7 4500k 4k' \
        ov.qcow2 >/dev/null
    qemu-img convert -O raw ov.qcow2 view.raw
    both -b b2.qcow2 -F qcow2
    both -b b1.qcow2 -F qcow2
    both -b r.raw -F raw
    both -b "" 
    both -u -b b2.qcow2 -F qcow2
    both -u -b "" 
    both -b b2.qcow2
done

# a relative name is relative to the image's directory; safe mode opens it there
mkdir -p sub
qemu-img create -q -f qcow2 sub/base.qcow2 1M
qemu-io -c 'write -P 8 0 1M' sub/base.qcow2 >/dev/null
qemu-img create -q -f qcow2 sub/other.qcow2 1M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 sub/ov.qcow2
qemu-img convert -O raw sub/ov.qcow2 sub.raw
F rebase -b other.qcow2 -F qcow2 sub/ov.qcow2 || bad "rebase in a subdirectory"
qemu-img info sub/ov.qcow2 | grep -q '^backing file: other.qcow2' || bad "subdirectory: header"
qemu-img compare -q -F raw sub/ov.qcow2 sub.raw || bad "subdirectory: guest view changed"
# progress
F rebase -p -b base.qcow2 -F qcow2 sub/ov.qcow2 | grep -q '100.00/100%' || bad "rebase -p"

# errors
F rebase ov.qcow2 2>/dev/null && bad "rebase without -b succeeded"
F rebase -b nosuch.qcow2 -F qcow2 ov.qcow2 2>/dev/null && bad "rebase onto a missing file succeeded"
F rebase -b b1.qcow2 -F qcow2 nosuch.qcow2 2>/dev/null && bad "rebase of a missing file succeeded"
qemu-img check -q ov.qcow2 || bad "errors left the image unclean"

[ $fail = 0 ] && echo "PASS: rebase"
exit $fail
