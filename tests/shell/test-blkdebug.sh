#!/bin/bash
# test-blkdebug.sh: fault injection in qemu's syntax (the blkdebug filter):
# blkdebug:CONFIG:IMAGE with qemu's config files ([inject-error] event,
# errno, once, sector, state; [set-state]), the json: form with
# inject-error and set-state arrays, and qemu-io's break, wait_break,
# resume, remove_break; each run with qemu-io and `fastqcow io` on copies
# of the same image: same output (timings filtered) and exit code, then
# `qemu-img check` of both results (a failed metadata write leaves a
# consistent image). Bad configs get qemu's messages.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed"; exit 77; }
command -v qemu-io >/dev/null || { echo "SKIP: qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/blkdebug.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
F=$FASTQCOW
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# run CONFIG-NAME-TEMPLATE ARGS...: @IMG@ in the arguments is the image
# (q.qcow2 for qemu-io, f.qcow2 for fastqcow, both fresh copies of base)
run() {
    cp base.qcow2 q.qcow2
    cp base.qcow2 f.qcow2
    timeout 20 qemu-io "${@//@IMG@/q.qcow2}" >q.out 2>&1; qrc=$?
    timeout 20 "$F" io "${@//@IMG@/f.qcow2}" >f.out 2>&1; frc=$?
    sed -i -e 's/^qemu-io: //' -e 's/ops; .*/ops/' -e 's/q\.qcow2/IMG/g' q.out
    sed -i -e 's/^fastqcow: //' -e 's/ops; .*/ops/' -e 's/f\.qcow2/IMG/g' f.out
    [ $qrc = $frc ] || { bad "io $*: exit $frc, qemu-io $qrc"; cat f.out; return; }
    cmp -s q.out f.out || { bad "io $*"; diff q.out f.out; }
    qemu-img check -q f.qcow2 || bad "io $*: check of fastqcow's image"
}

qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 1 0 64k' base.qcow2 >/dev/null

conf() { printf '%s\n' "$@" >"$CONF"; }
CONF=l2.conf conf '[inject-error]' 'event = "l2_update"' 'errno = "28"' 'once = "on"'
CONF=l1.conf conf '[inject-error]' 'event = "l1_update"' 'errno = "5"'
CONF=data.conf conf '# a comment' '[inject-error]' 'event = "write_aio"' 'errno = "5"' \
    'sector = "896"' 'once = "on"'
CONF=rd.conf conf '[inject-error]' 'event = "read_aio"' 'errno = "5"' 'state = "2"' \
    '[set-state]' 'event = "write_aio"' 'state = "1"' 'new_state = "2"'
CONF=flush.conf conf '[inject-error]' 'event = "flush_to_os"' 'errno = "5"' 'once = "on"'
CONF=bad1.conf conf '[inject-error]' 'event = "bogus"'
CONF=bad2.conf conf '[nonsense]' 'event = "l2_update"'

# a failing L2 update (allocation of a new L2 table at 2M), once; the next
# write goes through, reads see the data
run -c 'write -P 2 2M 4k' -c 'write -P 3 64k 4k' -c 'read -P 3 64k 4k' -c 'read -P 1 0 4k' \
    blkdebug:l2.conf:@IMG@
# data writes failing at one sector only (host 0x70000: the second data cluster)
run -c 'write -P 4 1M 4k' -c 'write -P 5 3M 4k' -c 'read -P 5 3M 4k' blkdebug:data.conf:@IMG@
# reads fail only in state 2, which the first data write enters
run -c 'read -P 1 0 4k' -c 'write -P 6 128k 4k' -c 'read 0 4k' blkdebug:rd.conf:@IMG@
run -c 'write -P 7 0 4k' -c 'flush' -c 'flush' blkdebug:flush.conf:@IMG@
# the same through json: (arrays of rules, numbers and strings)
run -c 'write -P 8 1M 4k' -c 'read -P 1 0 4k' \
    'json:{"driver": "qcow2", "file": {"driver": "blkdebug", "inject-error": [{"event": "write_aio", "errno": 28, "once": true}], "image": {"driver": "file", "filename": "@IMG@"}}}'
run -c 'read -P 1 0 4k' -c 'write -P 9 64k 4k' -c 'read 0 4k' \
    'json:{"driver": "qcow2", "file": {"driver": "blkdebug", "set-state": [{"event": "write_aio", "state": 1, "new_state": 2}], "inject-error": [{"event": "read_aio", "state": 2}], "image": {"filename": "@IMG@"}}}'
# break points
run -c 'break write_aio A' -c 'aio_write -P 10 0 4k' -c 'wait_break A' -c 'resume A' \
    -c 'aio_flush' -c 'read -P 10 0 4k' blkdebug::@IMG@
run -c 'break l2_update A' -c 'remove_break A' -c 'write 3M 4k' blkdebug::@IMG@
run -c 'resume B' -c 'remove_break C' -c 'break bogus A' blkdebug::@IMG@
run -c 'break l2_update A' @IMG@
# bad configurations
run -c 'read 0 4k' blkdebug:bad1.conf:@IMG@
run -c 'read 0 4k' blkdebug:missing.conf:@IMG@
run -c 'read 0 4k' 'json:{"driver":"qcow2","file":{"driver":"blkdebug","inject-error":[{"event":"l2_update","errno":"x"}],"image":{"filename":"@IMG@"}}}'
# repaired as qemu-img repairs: an image left by failed metadata writes
cp base.qcow2 f.qcow2
"$F" io -c 'write -P 2 2M 64k' blkdebug:l1.conf:f.qcow2 >/dev/null 2>&1
qemu-img check -q f.qcow2 >/dev/null 2>&1; qrc=$?
"$F" check f.qcow2 >/dev/null 2>&1; frc=$?
[ $qrc = $frc ] || bad "check after a failed L1 update: fastqcow $frc, qemu-img $qrc"

exit $fail
