#!/bin/bash
# test-img-check.sh: `fastqcow check` against qemu-img 7.2 check on the same
# images: clean, leaked clusters, a refcount too low (corruption), both,
# fragmented and compressed; human and json output, -q, exit codes
# (0/2/3/63), and -r leaks|all leaving an image qemu-img finds clean.
# Then damage the refcounts alone do not show: clusters past the end of a
# truncated file, metadata referenced as data or as an L2 table, an
# incomplete snapshot table entry, a compressed entry with a subcluster
# bitmap; the dirty and corrupt bits after a repair; leak repairs that
# leave COPIED flags to set; fragmentation counted per L2 table.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && command -v python3 >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io/python3 not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/img-check.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
mkdir q f
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# Run qemu-img on a copy of the image (checks may repair) and ours on
# another, under the same name; compare stdout, stderr (modulo the program
# name) and the exit code. Our copy stays in f/img for further checks.
same() {
    local img=${*: -1}
    cp "$img" q/img && cp "$img" f/img
    set -- "${@:1:$#-1}"
    (cd q && qemu-img check "$@" img >../q.out 2>../q.err; echo $? >../q.rc)
    (cd f && "$FASTQCOW" check "$@" img >../f.out 2>../f.err; echo $? >../f.rc)
    sed -i 's/qemu-img/fastqcow/g' q.err
    cmp -s q.rc f.rc || bad "check $* $img: exit $(cat f.rc), qemu-img $(cat q.rc)"
    cmp -s q.out f.out || { bad "check $* $img (stdout)"; diff q.out f.out; }
    cmp -s q.err f.err || { bad "check $* $img (stderr)"; diff q.err f.err; }
}

# set_refcount FILE CLUSTER VALUE: poke a 16-bit refcount entry.
set_refcount() {
    python3 - "$@" <<'EOF'
import struct, sys
f = open(sys.argv[1], 'r+b')
hdr = f.read(104)
cbits = struct.unpack('>I', hdr[20:24])[0]
rt = struct.unpack('>Q', hdr[48:56])[0]
cl, val = int(sys.argv[2]), int(sys.argv[3])
per_block = (1 << cbits) // 2
f.seek(rt + 8 * (cl // per_block))
rb = struct.unpack('>Q', f.read(8))[0]
f.seek(rb + 2 * (cl % per_block))
f.write(struct.pack('>H', val))
EOF
}

qemu-img create -q -f qcow2 clean.qcow2 4M
qemu-io -c 'write -P 1 0 128k' -c 'write -P 2 1M 64k' -c 'write -z 2M 64k' clean.qcow2 >/dev/null
qemu-img create -q -f qcow2 empty.qcow2 1M
cp clean.qcow2 leak.qcow2
truncate -s $((10 * 65536)) leak.qcow2
set_refcount leak.qcow2 8 1
set_refcount leak.qcow2 9 1
cp clean.qcow2 corrupt.qcow2
set_refcount corrupt.qcow2 3 0         # the L1 table's cluster
cp leak.qcow2 both.qcow2
set_refcount both.qcow2 3 0
qemu-img create -q -f qcow2 rev.qcow2 1M
for i in 3 2 1 0; do qemu-io -c "write -P $i $((i * 64))k 64k" rev.qcow2 >/dev/null; done
qemu-img convert -c -O qcow2 rev.qcow2 comp.qcow2
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=16 c512.qcow2 256k
qemu-io -c 'write -P 1 0 20k' c512.qcow2 >/dev/null
qemu-img create -q -f raw r.raw 1M

for img in clean.qcow2 empty.qcow2 leak.qcow2 corrupt.qcow2 both.qcow2 rev.qcow2 comp.qcow2 c512.qcow2; do
    same "$img"
    same --output=json "$img"
    same -q "$img"
done
same r.raw
same --output=json -f raw r.raw
same -r foo clean.qcow2
same --output=yaml clean.qcow2

# repairs: same report as qemu-img, and qemu-img agrees the result is clean
same -r leaks leak.qcow2
qemu-img check f/img >/dev/null || bad "qemu-img check after check -r leaks"
same -r leaks --output=json leak.qcow2
same -r all leak.qcow2
for img in corrupt.qcow2 both.qcow2; do
    cp "$img" f.img
    "$FASTQCOW" check -r all f.img >f.out 2>&1; rc=$?
    [ $rc = 0 ] || { bad "check -r all $img: exit $rc"; cat f.out; }
    qemu-img check f.img >q.out 2>&1 || { bad "qemu-img check after check -r all $img"; cat q.out; }
    qemu-io -c 'read -P 1 0 128k' -c 'read -P 2 1M 64k' -c 'read -P 0 2M 64k' f.img >/dev/null ||
        bad "data changed by check -r all $img"
done

# ---- the cases of the check fixes: exit codes (and reports, where they
# are qemu-img's word for word) as qemu-img's; a repair leaves an image
# qemu-img finds clean, with the data that could be kept

# qemu_clean IMG WHAT: qemu-img check must find IMG clean.
qemu_clean() {
    qemu-img check "$1" >q.out 2>&1 || { bad "qemu-img check after $2"; head -5 q.out; }
}
# repaired MODE IMG [QEMU-IO-COMMAND...]: check -r MODE on a copy exits 0,
# qemu-img agrees, and the commands (reads) succeed on the result.
repaired() {
    local mode=$1 img=$2 rc c
    shift 2
    cp "$img" r.img
    "$FASTQCOW" check -r "$mode" r.img >r.out 2>&1; rc=$?
    [ $rc = 0 ] || { bad "check -r $mode $img: exit $rc"; tail -5 r.out; }
    qemu_clean r.img "check -r $mode $img"
    for c in "$@"; do
        qemu-io -c "$c" r.img >/dev/null || bad "$img after check -r $mode: $c"
    done
}
# same_rc IMG: the exit code of a plain check only.
same_rc() {
    local q f
    qemu-img check "$1" >/dev/null 2>&1; q=$?
    "$FASTQCOW" check "$1" >/dev/null 2>&1; f=$?
    [ $q = $f ] || bad "check $1: exit $f, qemu-img $q"
}
# poke IMG CODE: run python CODE on the image's bytes `b` (helpers u32,
# u64, p32, p64; l1 and rt are the table offsets).
poke() {
    python3 -c '
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
u64 = lambda o: struct.unpack_from(">Q", b, o)[0]
u32 = lambda o: struct.unpack_from(">I", b, o)[0]
def p64(o, v): struct.pack_into(">Q", b, o, v)
def p32(o, v): struct.pack_into(">I", b, o, v)
l1, rt = u64(40), u64(48)
exec(sys.argv[2])
open(sys.argv[1], "wb").write(b)' "$1" "$2"
}
bits() { od -An -tx1 -j79 -N1 "$1" | tr -d ' '; }

# 1. a truncated image: data clusters past the end of the file
qemu-img create -q -f qcow2 tr.qcow2 16M
qemu-io -c 'write -P 1 0 4M' tr.qcow2 >/dev/null
truncate -s 3473408 tr.qcow2
same tr.qcow2
same --output=json tr.qcow2
same -r leaks tr.qcow2
repaired all tr.qcow2 'read -P 1 0 3M' 'read -P 0 3520k 64k'
# a refcount block past the end of the file reads as zeros; -r all grows the file
cp clean.qcow2 rbout.qcow2
poke rbout.qcow2 '
n = len(b) // 65536
p64(rt, n * 65536)'
same rbout.qcow2
repaired all rbout.qcow2 'read -P 1 0 128k' 'read -P 2 1M 64k'

# 2. leaks whose repair lowers refcounts to 1: -r leaks sets COPIED too
qemu-img create -q -f qcow2 lk.qcow2 16M
qemu-io -c 'write -P 1 0 1M' lk.qcow2 >/dev/null
qemu-img snapshot -c s1 lk.qcow2
poke lk.qcow2 'p32(60, 0)'
same lk.qcow2
same -r leaks lk.qcow2
qemu_clean f/img "check -r leaks lk.qcow2"
same -r all lk.qcow2

# 3. the corrupt and dirty bits are cleared by a repair that leaves nothing
qemu-img create -q -f qcow2 cb.qcow2 4M
poke cb.qcow2 'b[79] = 0x02'
same cb.qcow2
same -r all cb.qcow2
[ "$(bits f/img)" = 00 ] || bad "check -r all left the corrupt bit"
same -r leaks cb.qcow2
[ "$(bits f/img)" = 00 ] || bad "check -r leaks left the corrupt bit"
# 0x1b: dirty and corrupt on an image with extended L2 and zstd (0x18)
qemu-img create -q -f qcow2 -o compression_type=zstd,extended_l2=on db.qcow2 4M
poke db.qcow2 'b[79] |= 0x03'
same db.qcow2
same -r all db.qcow2
[ "$(bits f/img)" = 18 ] || bad "check -r all: incompatible bits $(bits f/img), not 18"
# a dirty image with lazy refcounts, left by a crash: refcounts missing
qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 4M
sh -c "qemu-io -c 'write -P 5 0 256k' -c abort lazy.qcow2" >/dev/null 2>&1
same lazy.qcow2
repaired all lazy.qcow2 'read -P 5 0 256k'   # (qemu-img rebuilds the refcounts)
[ "$(bits r.img)" = 00 ] || bad "check -r all left the dirty bit"

# 4. metadata referenced as data or as an L2 table: the reference is dropped
qemu-img create -q -f qcow2 -o compression_type=zstd,extended_l2=on rbd.qcow2 16M
qemu-io -c 'write -P 0x11 0 200k' rbd.qcow2 >/dev/null
poke rbd.qcow2 'p64(u64(l1) & 0xfffffffffffe00, u64(rt) | 1 << 63)'
same_rc rbd.qcow2
repaired all rbd.qcow2 'read -P 0x11 64k 136k' 'read -P 0 0 64k'
cp rbd.qcow2 rbd2.qcow2          # with a refcount that agrees: still shared
poke rbd2.qcow2 'rb = u64(rt); struct.pack_into(">H", b, rb + 2 * (rb >> 16), 2)'
"$FASTQCOW" check rbd2.qcow2 >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || bad "check rbd2.qcow2 (a refcount block shared with data): exit $rc"
repaired all rbd2.qcow2 'read -P 0x11 64k 136k'
qemu-img create -q -f qcow2 sn.qcow2 16M
qemu-io -c 'write -P 1 0 1M' sn.qcow2 >/dev/null
qemu-img snapshot -c s1 sn.qcow2
qemu-io -c 'write -P 2 0 64k' sn.qcow2 >/dev/null
cp sn.qcow2 snrt.qcow2           # a snapshot's L1 entry names the refcount table
poke snrt.qcow2 'p64(u64(u64(64)), rt)'
same_rc snrt.qcow2
repaired all snrt.qcow2 'read -P 2 0 64k' 'read -P 1 64k 960k'
cp lk.qcow2 l1rt.qcow2           # an L1 entry past the virtual size does
poke l1rt.qcow2 'p32(36, u32(36) + 1); p64(l1 + 8 * (u32(36) - 1), rt | 1 << 63)'
same_rc l1rt.qcow2
repaired all l1rt.qcow2 'read -P 1 0 1M'
cp clean.qcow2 l2self.qcow2      # a data entry names its own L2 table
poke l2self.qcow2 'l2 = u64(l1) & 0xfffffffffffe00; p64(l2 + 8, l2 | 1 << 63)'
same_rc l2self.qcow2
repaired all l2self.qcow2 'read -P 1 0 64k' 'read -P 0 64k 64k' 'read -P 2 1M 64k'

# 5. a version 3 snapshot table entry without the extra data it needs
poke sn.qcow2 '
so = u64(64); x = u32(so + 36); h = bytearray(b[so:so + 40])
il, nl = struct.unpack(">HH", h[12:16]); struct.pack_into(">I", h, 36, 8)
e = h + b[so + 40:so + 48] + b[so + 40 + x:so + 40 + x + il + nl]
e += bytes(-len(e) % 8); b[so:so + len(e)] = e'
same sn.qcow2
same -r leaks sn.qcow2
same -r all sn.qcow2
qemu_clean f/img "check -r all sn.qcow2"
{ qemu-img snapshot -a s1 f/img && qemu-io -c 'read -P 1 0 1M' f/img >/dev/null; } ||
    bad "snapshot lost by check -r all sn.qcow2"

# 6. extended L2: a compressed entry with a subcluster bitmap
qemu-img create -q -f qcow2 -o extended_l2=on cbm.qcow2 4M
qemu-io -c 'write -c -P 3 0 64k' -c 'write -c -P 4 64k 64k' cbm.qcow2 >/dev/null
poke cbm.qcow2 'p64((u64(l1) & 0xfffffffffffe00) + 8, 3)'
same_rc cbm.qcow2
repaired all cbm.qcow2 'read -P 3 0 64k' 'read -P 4 64k 64k'

# 7. fragmentation is counted within each L2 table, as qemu-img does
qemu-img create -q -f qcow2 -o cluster_size=4k frag.qcow2 64M
for i in $(seq 0 199); do echo "write -P 1 $((i * 16))k 4k"; done | qemu-io frag.qcow2 >/dev/null
same frag.qcow2
same --output=json frag.qcow2

[ $fail = 0 ] && echo "PASS: check"
exit $fail
