#!/bin/bash
# test-io-stdin.sh: `fastqcow io` without -c reads commands from stdin like
# qemu-io: a "qemu-io> " prompt before each line, blank lines ignored, q or
# quit ends the run, a last line without newline still runs, the exit
# status is 1 if any command failed. Also the seed's generator pattern:
# a long script of writes piped in. Output is compared with qemu-io's.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/io-stdin.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
norm() { sed -E -e 's/[0-9.]+ (bytes|KiB|MiB|GiB), 1 ops; .*/STATS/' -e 's/^(qemu-io|fastqcow): //' "$1"; }

# same IMG SCRIPT [io options]: feed SCRIPT to both tools on copies of IMG
same() {
    local img=$1 script=$2
    shift 2
    cp "$img" q.img && cp "$img" f.img
    printf '%b' "$script" | qemu-io "$@" q.img >q.out 2>q.err; qrc=$?
    printf '%b' "$script" | "$FASTQCOW" io "$@" f.img >f.out 2>f.err; frc=$?
    [ $qrc = $frc ] || bad "script '$script': exit $frc, qemu-io $qrc"
    cmp -s <(norm q.out) <(norm f.out) || { bad "script '$script': stdout"; diff <(norm q.out) <(norm f.out) | head; }
    cmp -s <(norm q.err) <(norm f.err) || { bad "script '$script': stderr"; diff <(norm q.err) <(norm f.err) | head; }
}

qemu-img create -q -f qcow2 a.qcow2 1M
same a.qcow2 'write -P 1 0 4k\nread -P 1 0 4k\n\nread -P 2 0 4k\nq\nread 0 1\n'
same a.qcow2 'write -P 1 0 4k\nread -P 1 0 4k\n'
same a.qcow2 'read 0 1'
same a.qcow2 ''
same a.qcow2 '\n\n'
same a.qcow2 'foo\nread 0 1\nquit\n'
same a.qcow2 'read 0 2M\nlength\n'
same a.qcow2 'aio_write -P 3 0 4k\naio_flush\nread -P 3 0 4k\n'
same a.qcow2 'write -P 5 0 64k\n  read   -P 5  0  64k  \nalloc 0 1M\nmap\n' -t none
same a.qcow2 'write -z 0 4k\r\nread\t0 1\nread -P 0 0 4k\n'

# the seed's generator: one write per 64k block, piped in, then q
qemu-img create -q -f qcow2 g.qcow2 4M
for i in $(seq 63 -1 0); do echo "write -P 0xff $((i * 65536)) 65536"; done >script
echo q >>script
"$FASTQCOW" io g.qcow2 <script >f.out 2>&1 || bad "generator script"
[ "$(grep -c 'wrote 65536/65536 bytes at offset' f.out)" = 64 ] || bad "generator script: 64 writes expected"
qemu-io -c 'read -P 0xff 0 4M' g.qcow2 >/dev/null || bad "generator script: data"
qemu-img check -q g.qcow2 || bad "generator script: check"

# aio completions are delivered while waiting for stdin
qemu-img create -q -f qcow2 s.qcow2 1M
{ echo 'aio_write -P 7 0 64k'; sleep 1; echo 'read -P 7 0 64k'; } | "$FASTQCOW" io s.qcow2 >f.out 2>&1 ||
    bad "aio while waiting"
# delivered late (by the next command), the completion would report ~1 s
grep -A1 'qemu-io> wrote 65536/65536 bytes at offset 0' f.out | grep -q '^64 KiB, 1 ops; 00\.' ||
    { bad "aio_write completion not delivered while waiting for input"; cat f.out; }

[ $fail = 0 ] && echo "PASS: io stdin"
exit $fail
