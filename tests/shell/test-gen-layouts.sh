#!/bin/bash
# test-gen-layouts.sh: `fastqcow gen` makes the seed's four images. Each
# must pass `qemu-img check`, read back as the pattern everywhere through
# qemu-io, and its `qemu-img map --output=json` must show the layout's
# fragmentation: sorting guest blocks by host offset must give exactly the
# write order (seq ascending, reverse descending, rand a seeded
# Fisher-Yates shuffle, part-rand shuffled within each 1 MiB chunk) --
# checked against an independent model of the PRNG and the shuffle.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/gen-layouts.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# layout IMG LAYOUT SIZE BLOCK SEED [CHUNK]: host order == write order
cat >layout.py <<'EOF'
import json, subprocess, sys
M = (1 << 64) - 1
def mix(x):  # splitmix64 finaliser
    x ^= x >> 30; x = (x * 0xbf58476d1ce4e5b9) & M
    x ^= x >> 27; x = (x * 0x94d049bb133111eb) & M
    return x ^ (x >> 31)
class Rng:
    def __init__(s, seed): s.s = seed & M
    def below(s, n):  # uniform in [0, n), rejecting the biased low values
        lim = ((1 << 64) - n) % n
        while True:
            s.s = (s.s + 0x9e3779b97f4a7c15) & M
            r = mix(s.s)
            if r >= lim: return r % n
def shuffle(v, lo, n, rng):
    for i in range(n, 1, -1):
        j = rng.below(i); v[lo + i - 1], v[lo + j] = v[lo + j], v[lo + i - 1]
img, layout, size, block, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
chunk = int(sys.argv[6]) if len(sys.argv) > 6 else 1 << 20
nb = (size + block - 1) // block
want = list(range(nb))
rng = Rng(seed)
if layout == 'reverse': want.reverse()
if layout == 'rand': shuffle(want, 0, nb, rng)
if layout == 'part-rand':
    cb = max(1, chunk // block)
    for c in range(0, nb, cb): shuffle(want, c, min(cb, nb - c), rng)
host = {}
for e in json.loads(subprocess.check_output(['qemu-img', 'map', '--output=json', img])):
    if not e.get('data') or e['depth'] != 0:
        sys.exit('%s: not a data extent: %r' % (img, e))
    for k in range((e['length'] + block - 1) // block):
        host[e['start'] // block + k] = e['offset'] + k * block
if len(host) != nb:
    sys.exit('%s: %d data blocks mapped, expected %d' % (img, len(host), nb))
got = sorted(host, key=host.get)
if got != want:
    i = next(i for i in range(nb) if got[i] != want[i])
    sys.exit('%s: host order differs from the %s order at position %d: block %d, expected %d'
             % (img, layout, i, got[i], want[i]))
EOF
have_py=1
command -v python3 >/dev/null || { have_py=0; echo "NOTE: python3 missing, layout order not checked"; }

# gen_ok IMG LAYOUT SIZE BLOCK SEED PATTERN [gen options]
gen_ok() {
    local img=$1 layout=$2 size=$3 block=$4 seed=$5 pat=$6
    shift 6
    "$FASTQCOW" gen --layout "$layout" --size "$size" --cluster-size "$block" --seed "$seed" \
        --pattern "$pat" "$@" "$img" >out 2>&1 || { bad "gen $layout $*"; cat out; return; }
    case " $* " in *" -q "*) [ -s out ] && bad "gen -q printed something" ;;
    *) grep -q "^Wrote $img: " out || { bad "gen $layout: summary line"; cat out; } ;; esac
    qemu-img check -q "$img" || bad "gen $layout $*: qemu-img check"
    qemu-io -c "read -q -P $pat 0 $size" "$img" >out 2>&1 || { bad "gen $layout $*: data"; cat out; }
    qemu-img info "$img" | grep -q "^cluster_size: $block\$" || bad "gen $layout $*: cluster size"
    [ $have_py = 0 ] || python3 layout.py "$img" "$layout" "$size" "$block" "$seed" "${CHUNK:-1048576}" ||
        bad "gen $layout $*: layout"
}

M16=$((16 << 20))
for l in seq reverse rand part-rand; do
    gen_ok t-$l.qcow2 $l $M16 65536 1 0xff
done
# the images really differ in fragmentation, as qemu-img check counts it
frag() { qemu-img check "$1" | sed -n 's/.* allocated, \([0-9.]*\)% fragmented.*/\1/p'; }
awk -v s="$(frag t-seq.qcow2)" -v r="$(frag t-reverse.qcow2)" -v x="$(frag t-rand.qcow2)" \
    -v p="$(frag t-part-rand.qcow2)" 'BEGIN { exit !(s < 1 && r > 99 && x > 99 && p > 80 && p < 99) }' ||
    bad "fragmentation: seq $(frag t-seq.qcow2) reverse $(frag t-reverse.qcow2) rand $(frag t-rand.qcow2) part-rand $(frag t-part-rand.qcow2)"
# writes in flight do not change the order (checked by layout.py); another
# seed gives another layout
gen_ok u.qcow2 rand $M16 65536 1 0xff -q --depth 1
gen_ok u.qcow2 rand $M16 65536 2 0xff -q
[ "$(qemu-img map --output=json u.qcow2)" != "$(qemu-img map --output=json t-rand.qcow2)" ] ||
    bad "rand: seeds 1 and 2 give the same layout"

# other cluster sizes, a partial last block, patterns, engines, cache modes
gen_ok c4k.qcow2 part-rand $((4 << 20)) 4096 7 0x5a -i threads -t none
CHUNK=65536 gen_ok c4k.qcow2 part-rand $((4 << 20)) 4096 7 0x5a --chunk-size 64k -i sync
gen_ok c512.qcow2 rand $((1 << 20)) 512 3 1 -n -t none --depth 64
gen_ok c2m.qcow2 reverse $((9 << 20)) $((2 << 20)) 1 0xff --workers 2
gen_ok odd.qcow2 reverse 1000448 65536 1 0x11 -t unsafe
# a size that is not a whole number of sectors is rounded up, as qemu-img does
"$FASTQCOW" gen -q --layout seq --size 1000000 odd2.qcow2 || bad "gen --size 1000000"
qemu-img info odd2.qcow2 | grep -q '(1000448 bytes)' || bad "gen --size 1000000: not rounded up to 1000448"
gen_ok t-seq.qcow2 seq $((2 << 20)) 65536 1 0 # overwrites an existing image

# errors
for a in "--size 1M" "--layout foo" "--layout seq --cluster-size 3000" "--layout seq --size 0" \
    "--layout seq --depth 0" "--layout seq --pattern 256" "--layout seq --size x"; do
    "$FASTQCOW" gen $a e.qcow2 >out 2>&1 && bad "gen $a accepted"
    grep -q '^fastqcow: ' out || bad "gen $a: no error message"
done
"$FASTQCOW" gen --layout seq >/dev/null 2>&1 && bad "gen without file accepted"
"$FASTQCOW" gen --layout seq --size 1M /nonexistent/dir/x.qcow2 >/dev/null 2>&1 && bad "gen into a missing dir"
"$FASTQCOW" gen --help | grep -q 'part-rand' || bad "gen --help"

[ $fail = 0 ] && echo "PASS: gen layouts"
exit $fail
