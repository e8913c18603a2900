#!/bin/bash
# test-bitmap-cli.sh: `fastqcow bitmap` against `qemu-img bitmap`: the same
# command lines on twin images give the same messages (the program name
# aside), the same exit codes and images that qemu-img info describes the
# same way, with the same dirty bits (read back by both tools: `bitmap
# --dump` and qemu-nbd -B + nbdinfo), and qemu-img check stays clean.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
for t in qemu-img qemu-io qemu-nbd nbdinfo; do
    command -v $t >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/bitmap-cli.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

qemu-img create -q -f qcow2 q.qcow2 64M
qemu-io -c 'write -P 1 0 1M' q.qcow2 >/dev/null
qemu-img create -q -f qcow2 src.qcow2 64M
qemu-img bitmap --add -g 4k src.qcow2 s
qemu-io -c 'write -P 2 8M 12k' -c 'write -P 2 40M 1' src.qcow2 >/dev/null
cp q.qcow2 f.qcow2

# run ARGS... (IMG is replaced by each tool's image)
run() {
    local qa=() fa=() a
    for a in "$@"; do
        qa+=("${a//IMG/q.qcow2}")
        fa+=("${a//IMG/f.qcow2}")
    done
    qemu-img bitmap "${qa[@]}" >q.out 2>q.err; qrc=$?
    "$FASTQCOW" bitmap "${fa[@]}" >f.out 2>f.err; frc=$?
    sed -i 's/qemu-img/fastqcow/g; s/q\.qcow2/IMG/g' q.out q.err
    sed -i 's/f\.qcow2/IMG/g' f.out f.err
    [ $qrc = $frc ] || bad "bitmap $*: exit $frc, qemu-img $qrc"
    cmp -s q.err f.err || { bad "bitmap $*: messages differ"; diff q.err f.err; }
    cmp -s q.out f.out || { bad "bitmap $*: output differs"; diff q.out f.out; }
    qemu-img info q.qcow2 | sed 1,/^Format/d >qi.out
    qemu-img info f.qcow2 | sed 1,/^Format/d >fi.out
    cmp -s qi.out fi.out || { bad "bitmap $*: the images differ"; diff qi.out fi.out; }
}

run --add IMG b0
run --add IMG b0
run --add -g 512 IMG fine
run --add -g 1000 IMG x
run --add -g 4G IMG x
run --add -g abc IMG x
run --add -g 0 IMG dflt
run --add -g 2M --disable IMG off
run --remove IMG nope
run --clear IMG nope
run --disable IMG fine
run --enable --disable --enable IMG fine
run --add --remove IMG tmp
run --remove --add IMG tmp2
run -g 4k --remove IMG b0
run -b src.qcow2 --add IMG b0
run -F qcow2 --merge s IMG b0
run IMG b0
run --add IMG
run --add
run --bogus IMG b0
run -g
run --merge nope IMG b0
run --merge b0 IMG nope
run --merge s -b src.qcow2 -F qcow2 IMG b0
run --merge s -b src.qcow2 IMG off
run --merge b0 IMG fine
run --merge s -b nosuch.qcow2 IMG b0
run --clear IMG fine
run --add -g 64k IMG xname --disable --merge b0

# the bits, read by qemu-nbd and by fastqcow's dump, from both images
for b in b0 fine off xname dflt; do
    for i in q f; do
        nbdinfo --map=qemu:dirty-bitmap:$b -- [ qemu-nbd -r -B $b -f qcow2 $i.qcow2 ] >$i.map ||
            bad "nbdinfo $b $i"
        "$FASTQCOW" bitmap --dump --all --output=json $i.qcow2 $b >$i.json || bad "dump $b $i"
    done
    cmp -s q.map f.map || { bad "bitmap $b: the bits differ"; diff q.map f.map; }
    cmp -s q.json f.json || { bad "bitmap $b: the dumps differ"; diff q.json f.json; }
    # the dump says what qemu-nbd says
    python3 - q.map q.json <<'PY' || bad "bitmap $b: dump and qemu-nbd disagree"
import json, sys
m = [tuple(map(int, l.split()[:3])) for l in open(sys.argv[1])]
d = [(e["start"], e["length"], int(e["dirty"])) for e in json.load(open(sys.argv[2]))]
sys.exit(m != d)
PY
done
qemu-img check -q f.qcow2 || bad "qemu-img check after the changes"
grep -q '8388608' <("$FASTQCOW" bitmap --dump --output=json f.qcow2 b0) || bad "merged bits missing"

# an inconsistent bitmap: only --remove works, with qemu-img's hint (the
# disabled ones go first: qemu flags those in use too, fastqcow not)
run --remove IMG off
run --remove IMG xname
bash -c "qemu-io -c 'write 0 4k' -c 'sigraise 9' q.qcow2; :" >/dev/null 2>&1
bash -c "\"\$1\" io -c 'write 0 4k' -c 'sigraise 9' f.qcow2; :" sh "$FASTQCOW" >/dev/null 2>&1
run --clear IMG b0
run --merge fine IMG b0
run --remove IMG b0
# the dump of an inconsistent one is refused
"$FASTQCOW" bitmap --dump f.qcow2 fine >/dev/null 2>f.err && bad "dump of an inconsistent bitmap"
grep -q "inconsistent" f.err || bad "dump message: $(cat f.err)"
qemu-img check -q f.qcow2; rc=$?
[ $rc = 0 ] || [ $rc = 3 ] || bad "qemu-img check after the kill: exit $rc"

# images a bitmap cannot live in
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 8M
"$FASTQCOW" bitmap --add v2.qcow2 x 2>f.err && bad "v2 image took a bitmap"
grep -q "Cannot store dirty bitmaps in qcow2 v2 files" f.err || bad "v2 message: $(cat f.err)"
qemu-img create -q -f raw r.img 8M
"$FASTQCOW" bitmap --add -f raw r.img x 2>f.err && bad "raw image took a bitmap"
grep -q "Operation not supported" f.err || bad "raw message: $(cat f.err)"
exit $fail
