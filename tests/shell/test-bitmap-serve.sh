#!/bin/bash
# test-bitmap-serve.sh: `fastqcow serve -B NAME` offers qemu:dirty-bitmap:NAME
# as qemu-nbd -B does: nbdinfo --map reads the same extents from both, with
# base:allocation beside it; a writable export adds what its clients write
# (seen while serving and stored at exit); a missing or inconsistent bitmap
# is refused with qemu-nbd's message.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
for t in qemu-img qemu-io qemu-nbd nbdinfo; do
    command -v $t >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/bitmap-serve.XXXXXX") || exit 1
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

qemu-img create -q -f qcow2 a.qcow2 32M
qemu-img bitmap --add a.qcow2 b0
qemu-img bitmap --add -g 512 a.qcow2 fine
qemu-io -c 'write 1M 4k' -c 'write 7M 1' -c 'write -z 20M 1M' -c 'write 32767k 1k' a.qcow2 >/dev/null
qemu-img bitmap --disable a.qcow2 fine

for b in b0 fine; do
    nbdinfo --map=qemu:dirty-bitmap:$b -- [ qemu-nbd -r -B $b -f qcow2 a.qcow2 ] >q.map
    nbdinfo --map=qemu:dirty-bitmap:$b -- [ "$FASTQCOW" serve -r -B $b -f qcow2 a.qcow2 ] >f.map
    [ -s q.map ] && cmp -s q.map f.map || { bad "bitmap $b"; diff q.map f.map; }
done
# both bitmaps and base:allocation on one export
nbdinfo --list -- [ "$FASTQCOW" serve -r -B b0 -B fine a.qcow2 ] >list.out
for c in base:allocation qemu:dirty-bitmap:b0 qemu:dirty-bitmap:fine; do
    grep -q "$c" list.out || bad "context $c not offered"
done
nbdinfo --map=base:allocation -- [ qemu-nbd -r -B b0 -f qcow2 a.qcow2 ] >q.map
nbdinfo --map=base:allocation -- [ "$FASTQCOW" serve -r -B b0 -f qcow2 a.qcow2 ] >f.map
cmp -s q.map f.map || { bad "base:allocation beside a bitmap"; diff q.map f.map; }

# a writable export: client writes show at once, and are stored at exit
"$FASTQCOW" serve -t -k "$T/s.sock" -B b0 -B fine --pid-file "$T/pid" a.qcow2 &
pid=$!
for _ in $(seq 100); do [ -e "$T/pid" ] && break; sleep 0.1; done
U="nbd+unix:///?socket=$T/s.sock"
qemu-io -f raw -c 'write 10M 64k' -c 'write -z 12M 128k' "$U" >/dev/null || bad "qemu-io over NBD"
nbdinfo --map=qemu:dirty-bitmap:b0 "$U" >live.map
nbdinfo --map=qemu:dirty-bitmap:fine "$U" >fine.map
kill $pid; wait $pid; pid=
for want in "10485760 65536" "12582912 131072"; do
    grep -q "^ *${want// /  *} *1" live.map || { bad "live: $want not dirty"; cat live.map; }
done
grep -q "10485760" fine.map && bad "the disabled bitmap changed while served"
nbdinfo --map=qemu:dirty-bitmap:b0 -- [ qemu-nbd -r -B b0 -f qcow2 a.qcow2 ] >q.map
cmp -s live.map q.map || { bad "stored bitmap differs from the live one"; diff live.map q.map; }
qemu-img check -q a.qcow2 || bad "qemu-img check after serving"

# refused as qemu-nbd refuses them
qemu-nbd -r -B nope a.qcow2 2>q.err; qrc=$?
"$FASTQCOW" serve -r -B nope a.qcow2 2>f.err; frc=$?
sed -i 's/^qemu-nbd: //' q.err; sed -i 's/^fastqcow: //' f.err
[ $qrc = $frc ] && cmp -s q.err f.err || { bad "missing bitmap: $frc $(cat f.err) / $qrc $(cat q.err)"; }
bash -c "qemu-io -c 'write 0 4k' -c 'sigraise 9' a.qcow2; :" >/dev/null 2>&1
qemu-nbd -r -B b0 a.qcow2 2>q.err; qrc=$?
"$FASTQCOW" serve -r -B b0 a.qcow2 2>f.err; frc=$?
sed -i 's/^qemu-nbd: //' q.err; sed -i 's/^fastqcow: //' f.err
[ $qrc = $frc ] && cmp -s q.err f.err || { bad "inconsistent bitmap: $frc $(cat f.err) / $qrc $(cat q.err)"; }
exit $fail
