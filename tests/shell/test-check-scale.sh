#!/bin/bash
# test-check-scale.sh: `fastqcow check` on an image with thousands of L2
# tables, allocated in shuffled order (host order differs from L1 order,
# so the walk, which reads the tables in host order, must still report
# in L1 order), damaged in hundreds of places: leaked clusters, refcounts
# too low, two entries naming one cluster, entries past the end of the
# file, wrong COPIED flags in L1 and L2 entries. The report, its json form
# and the exit code must be qemu-img check's byte for byte; -r leaks and
# -r all report as qemu-img does and leave an image qemu-img finds clean.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v python3 >/dev/null ||
    { echo "SKIP: qemu-img/python3 not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/check-scale.XXXXXX") || exit 1
trap "${KEEP:+:} rm -rf \"$T\"" EXIT
cd "$T" || exit 1
mkdir q f
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# 2500 L2 tables of 4 KiB clusters (2 MiB each), one cluster written in
# each, a few more in every seventh, in shuffled order
TABLES=2500
"$FASTQCOW" create -q -f qcow2 -o cluster_size=4k img.qcow2 $((TABLES * 2))M || exit 1
python3 -c '
import random, sys
n = int(sys.argv[1]); r = random.Random(7)
t = list(range(n)); r.shuffle(t)
for i in t:
    print("write -q -P %d %d 4k" % (i % 250 + 1, i * 2097152 + (i % 512) * 4096))
    if i % 7 == 0:
        print("write -q -P 9 %d 12k" % (i * 2097152 + 1048576))
' $TABLES | "$FASTQCOW" io -t unsafe img.qcow2 >/dev/null || exit 1
qemu-img check -q img.qcow2 || { echo "FAIL: the image is not clean before the damage"; exit 1; }

# damage IMG FULL: damage at random places (seeded); FULL=0 leaves out
# what makes qemu-img's repairs rebuild the refcounts (refcounts of 0 for
# clusters in use, entries past the end of the file), for the images
# repaired here
damage() {
python3 - "$@" <<'EOF'
import random, struct, sys
p, full = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, "rb").read())
u64 = lambda o: struct.unpack_from(">Q", b, o)[0]
u32 = lambda o: struct.unpack_from(">I", b, o)[0]
cb = u32(20); cs = 1 << cb
l1, l1n, rt = u64(40), u32(36), u64(48)
rbe = cs // 2                                   # 16-bit refcounts
M = 0x00fffffffffffe00
def rc_off(c):
    return (u64(rt + 8 * (c // rbe)) & M) + 2 * (c % rbe)
def rc(c): return struct.unpack_from(">H", b, rc_off(c))[0]
def set_rc(c, v): struct.pack_into(">H", b, rc_off(c), v)
r = random.Random(11)
entries = []                                    # (offset of the L2 entry, its value)
for i in range(l1n):
    t = u64(l1 + 8 * i) & M
    for j in range(cs // 8):
        e = u64(t + 8 * j) if t else 0
        if e & M:
            entries.append((t + 8 * j, e))
r.shuffle(entries)
it = iter(entries)
for _ in range(200):                            # leaks
    _, e = next(it); c = (e & M) >> cb; set_rc(c, rc(c) + 1)
for _ in range(100 * full):                     # refcounts too low (COPIED then wrong)
    _, e = next(it); set_rc((e & M) >> cb, 0)
for _ in range(60):                             # two entries, one cluster
    (o, _), (_, e2) = next(it), next(it)
    struct.pack_into(">Q", b, o, e2)
for _ in range(40 * full):                      # past the end of the file
    o, e = next(it)
    struct.pack_into(">Q", b, o, (e & ~M) | (len(b) + r.randrange(1, 1000) * cs))
for _ in range(50):                             # COPIED cleared
    o, e = next(it); struct.pack_into(">Q", b, o, e & ~(1 << 63))
for i in r.sample(range(l1n), 20):              # L1 entries: COPIED cleared
    struct.pack_into(">Q", b, l1 + 8 * i, u64(l1 + 8 * i) & ~(1 << 63))
open(p, "wb").write(b)
EOF
}
cp img.qcow2 rep.qcow2
damage img.qcow2 1
damage rep.qcow2 0

# same ARGS... IMG: outputs and exit codes of qemu-img's and ours on copies
same() {
    local img=${*: -1}
    cp "$img" q/img && cp "$img" f/img
    set -- "${@:1:$#-1}"
    (cd q && qemu-img check "$@" img >../q.out 2>../q.err; echo $? >../q.rc)
    (cd f && "$FASTQCOW" check "$@" img >../f.out 2>../f.err; echo $? >../f.rc)
    sed -i 's/qemu-img/fastqcow/g' q.err
    cmp -s q.rc f.rc || bad "check $*: exit $(cat f.rc), qemu-img $(cat q.rc)"
    cmp -s q.out f.out || { bad "check $* (stdout)"; diff q.out f.out | head -20; }
    cmp -s q.err f.err || { bad "check $* (stderr)"; diff q.err f.err | head -20; }
}

same img.qcow2
[ "$(wc -l <f.err)" -gt 500 ] || bad "only $(wc -l <f.err) lines of findings"
same --output=json img.qcow2
same rep.qcow2
same -r leaks rep.qcow2
same -r all rep.qcow2
qemu-img check f/img >q.out 2>&1 || { bad "qemu-img check after check -r all"; head -5 q.out; }

[ $fail = 0 ] && echo "PASS: check at scale"
exit $fail
