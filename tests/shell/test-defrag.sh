#!/bin/bash
# test-defrag.sh: `fastqcow defrag` against qemu's own tools. Images made
# by `fastqcow gen` (seq, reverse, rand, part-rand) and by qemu-img/qemu-io
# with position-dependent content (every write its own pattern) and every
# feature: compressed clusters (zlib, zstd), zero clusters, discards,
# extended L2, compat 0.10, 1- and 64-bit refcounts, 512-byte to 64 KiB
# clusters, internal snapshots, a backing file, persistent bitmaps. After
# each defragmentation: `qemu-img check` is clean and reports 0%
# fragmented (compressed clusters aside, which it counts as fragmented),
# `qemu-img compare` with a copy taken before finds them identical, each
# snapshot reads the same (`qemu-img convert -l`), the bitmaps are still
# listed, and a second run has nothing to do; `info --fragmentation`
# reports what qemu-img check reports (plain `info` stays qemu-img's
# byte for byte). Then --compact-only (the file
# shrinks to its last used cluster), the progress line, the refusals
# (read-only file, raw image, a budget too small for the L1 table) and the
# messages; a smoke run of bench/defrag-table (figures present, no timing
# judged).
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/defrag.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }

# defrag IMG TAG [args]: defragment and check everything against a copy
defrag() {
    local img=$1 tag=$2 s snaps fr co; shift 2
    cp "$img" before.qcow2
    snaps=$(qemu-img snapshot -l "$img" | awk 'NR > 2 { print $2 }')
    for s in $snaps; do qemu-img convert -l snapshot.name="$s" -O raw "$img" "snap-$s.raw"; done
    F defrag -q "$@" "$img" || { bad "$tag: defrag failed"; return; }
    qemu-img check "$img" >check.out 2>&1 || { bad "$tag: qemu-img check"; head -5 check.out; }
    qemu-img compare -q -f qcow2 -F qcow2 before.qcow2 "$img" || bad "$tag: content changed"
    read -r fr co <<<"$(sed -n 's/.*, \([0-9.]*\)% fragmented, \([0-9.]*\)% compressed.*/\1 \2/p' check.out)"
    [ -n "$fr" ] && [ "$fr" = "$co" ] || bad "$tag: ${fr:-?}% fragmented but ${co:-?}% compressed"
    for s in $snaps; do
        qemu-img convert -l snapshot.name="$s" -O raw "$img" after.raw
        cmp -s "snap-$s.raw" after.raw || bad "$tag: snapshot $s reads differently"
        rm -f "snap-$s.raw" after.raw
    done
    F defrag "$@" "$img" >again.out || bad "$tag: second run"
    grep -q "in order already" again.out || { bad "$tag: second run moved something"; cat again.out; }
}

# mk IMG OPTS SIZE FEATURES: scattered writes, each with its own pattern
mk() {
    local img=$1 opts=$2 size=$3 feat=$4 cmds=() i j n
    qemu-img create -q -f qcow2 -o "$opts" "$img" "$size"
    n=$(( $(numfmt --from=iec "$size") / 65536 ))
    for ((i = 0; i < n; i += 3)); do j=$(( (i * 7919) % n )); cmds+=(-c "write -P $(( j % 250 + 1 )) $((j * 65536)) 65536"); done
    for ((i = 1; i < n; i += 5)); do j=$(( (i * 104729) % n )); cmds+=(-c "write -P $(( j % 200 + 3 )) $((j * 65536 + 512)) 3000"); done
    [[ $feat == *c* ]] && for ((i = 2; i < n; i += 9)); do cmds+=(-c "write -c -P $(( i % 100 + 7 )) $((i * 65536)) 65536"); done
    [[ $feat == *z* ]] && for ((i = 4; i < n; i += 11)); do cmds+=(-c "write -z $((i * 65536)) 65536" -c "write -z -u $(( (i + 2) % n * 65536 )) 65536"); done
    [[ $feat == *d* ]] && for ((i = 5; i < n; i += 7)); do cmds+=(-c "discard $((i * 65536)) 65536"); done
    qemu-io -f qcow2 "${cmds[@]}" "$img" >/dev/null
}

# the seed's layouts; fastqcow's check reports what qemu-img's does
for l in seq reverse rand part-rand; do
    F gen -q --layout $l --size 8M g.qcow2 || bad "gen $l"
    defrag g.qcow2 "gen $l"
done
for cs in 4k 512; do
    F gen -q --layout rand --size 4M --cluster-size $cs g.qcow2 && defrag g.qcow2 "gen rand $cs"
done
F check g.qcow2 | grep -q "0.00% fragmented" || bad "fastqcow check does not report 0% fragmented"

# info --fragmentation: check's figures, before and after; plain info as qemu-img's
F gen -q --layout rand --size 8M f.qcow2
want=$(qemu-img check f.qcow2 | grep "% fragmented")
F info --fragmentation f.qcow2 | grep -qxF "fragmentation: $want" || bad "info --fragmentation before: not '$want'"
F info --output=json --fragmentation f.qcow2 | grep -q '"fragmented-clusters": 12[0-9]' ||
    bad "info --output=json --fragmentation: no fragmented-clusters"
F defrag -q f.qcow2
want=$(qemu-img check f.qcow2 | grep "% fragmented")
F info --fragmentation f.qcow2 | grep -qxF "fragmentation: $want" || bad "info --fragmentation after: not '$want'"
case $want in *" 0.00% fragmented"*) ;; *) bad "info: not 0% fragmented after defrag: $want" ;; esac
for o in human json; do
    cmp -s <(F info --output=$o f.qcow2) <(qemu-img info --output=$o f.qcow2) || bad "plain info --output=$o differs from qemu-img"
done

# qemu's images, every feature
while read -r tag opts size feat; do
    mk a.qcow2 "$opts" "$size" "$feat"
    defrag a.qcow2 "$tag"
done <<'EOF'
comp-zero-discard cluster_size=64k 8M czd
zstd cluster_size=64k,compression_type=zstd 4M czd
c4k cluster_size=4k 4M czd
extl2 cluster_size=16k,extended_l2=on 4M czd
v2 cluster_size=64k,compat=0.10 4M cd
rb1 cluster_size=4k,refcount_bits=1 2M czd
rb64 cluster_size=512,refcount_bits=64 1M czd
EOF

# snapshots: overwritten, discarded, one deleted
mk s.qcow2 cluster_size=4k 4M cz
qemu-img snapshot -c one s.qcow2
qemu-io -c "write -P 0x99 0 1M" -c "discard 2M 512k" -c "write -c -P 0x77 3M 64k" s.qcow2 >/dev/null
qemu-img snapshot -c two s.qcow2
qemu-io -c "write -P 0x55 1M 1M" -c "write -z 3M 256k" s.qcow2 >/dev/null
qemu-img snapshot -c three s.qcow2
qemu-img snapshot -d two s.qcow2
defrag s.qcow2 "snapshots"
F snapshot -a one s.qcow2 && qemu-img check -q s.qcow2 || bad "snapshots: apply after defrag"

# a backing file: only the overlay's clusters move, the backing file stays
mk base.qcow2 cluster_size=64k 8M c
cp base.qcow2 base.orig
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2
for i in $(seq 120 -13 0) $(seq 3 29 120); do qemu-io -c "write -P $((i % 200 + 9)) $((i * 65536 + 1024)) 70000" ov.qcow2 >/dev/null; done
defrag ov.qcow2 "overlay"
cmp -s base.qcow2 base.orig || bad "overlay: the backing file changed"
qemu-img info ov.qcow2 | grep -q "backing file: base.qcow2" || bad "overlay: backing file lost"

# persistent bitmaps: their tables move with the rest and stay listed
mk b.qcow2 cluster_size=64k 8M cd
qemu-img bitmap --add b.qcow2 b0 && qemu-img bitmap --add -g 4096 b.qcow2 b1 || bad "bitmap --add"
defrag b.qcow2 "bitmaps"
for n in b0 b1; do qemu-img info b.qcow2 | grep -q "name: $n" || bad "bitmaps: $n is gone"; done

# --compact-only: the file ends at its last used cluster
mk k.qcow2 cluster_size=64k 8M c
for ((i = 0; i < 128; i += 2)); do echo "discard $((i * 65536)) 65536"; done | qemu-io k.qcow2 >/dev/null
cp k.qcow2 k.before
F defrag --compact-only k.qcow2 >k.out || bad "compact-only failed"
qemu-img check -q k.qcow2 || bad "compact-only: qemu-img check"
qemu-img compare -q k.before k.qcow2 || bad "compact-only: content changed"
end=$(qemu-img check k.qcow2 | sed -n 's/Image end offset: //p')
[ "$(stat -c %s k.qcow2)" = "$end" ] || bad "compact-only: file $(stat -c %s k.qcow2) bytes, image ends at $end"
[ "$(stat -c %s k.qcow2)" -lt "$(stat -c %s k.before)" ] || bad "compact-only: the file did not shrink"
grep -q "Image defragmented" k.out || { bad "compact-only: message"; cat k.out; }

# progress as convert shows it
F gen -q --layout rand --size 4M p.qcow2
F defrag -p p.qcow2 >p.out || bad "defrag -p"
grep -q "(100.00/100%)" p.out || { bad "defrag -p: no progress line"; cat p.out; }

# refusals leave the image untouched, with a message and exit 1
F gen -q --layout reverse --size 4M --cluster-size 512 r.qcow2
F resize r.qcow2 64M >/dev/null                      # a new, larger L1 table at the end
cp r.qcow2 r.before
F defrag --budget 4k r.qcow2 2>r.err && bad "a budget below the L1 table was accepted"
grep -q "budget" r.err || { bad "small budget: message"; cat r.err; }
cmp -s r.qcow2 r.before || bad "small budget: the image changed"
chmod a-w r.qcow2
if [ "$(id -u)" != 0 ]; then
    F defrag r.qcow2 2>r.err && bad "a read-only file was accepted"
fi
chmod u+w r.qcow2
qemu-img create -q -f raw raw.img 1M
F defrag raw.img 2>r.err && bad "a raw image was accepted"
grep -q "qcow2" r.err || { bad "raw: message"; cat r.err; }
F defrag 2>/dev/null && bad "no file name accepted"
F defrag --budget 0 r.qcow2 2>/dev/null && bad "a zero budget accepted"

# bench/defrag-table on tiny images: a row with figures for each layout
REPO=$(cd "${TEST_SRCDIR:-$(dirname "${BASH_SOURCE[0]}")/..}/.." && pwd)
FASTQCOW=$FASTQCOW "$REPO/bench/defrag-table" --size 16M --runs 1 --count 4 >bench.out 2>&1 ||
    { bad "bench/defrag-table failed"; tail -5 bench.out; }
for l in seq reverse rand part-rand; do
    grep -Eq "^$l +([0-9.]+ +){11}[0-9.]+$" bench.out || { bad "bench/defrag-table: no figures for $l"; cat bench.out; }
done

exit $fail
